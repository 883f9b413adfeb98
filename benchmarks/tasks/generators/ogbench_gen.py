"""OGBench datasets generated offline with the package's own recipes, in OGBench's npz layout.

The npz files are exactly what OGBench's data-generation scripts write (observations, actions,
terminals, qpos, qvel, and button_states where the env has buttons; a `-val.npz` with a tenth
as many episodes beside each), so `ogbench.make_env_and_datasets(name, dataset_path=FILE)`
loads them, and single-task rewards come from OGBench's own relabelling. Each generator also
writes a standard Minari dataset of its default single task (`modebench-local/ogbench-...`).

Recipes (OGBench data_gen_scripts, numbers from the paper / its generation commands):
- navigate (pointmaze): per episode a start cell from all free cells and a goal from the
  "vertex" cells (not corridor cells); every step the action is the unit vector toward the
  BFS oracle subgoal (`env.get_oracle_subgoal`) plus N(0, 0.5^2), clipped; on success a new
  vertex goal is set; 1001-step episodes (1000 transitions each), env with
  terminate_at_goal=False.
- play (cube, scene, puzzle): the package's plan oracles (CubePlanOracle, ButtonPlanOracle,
  DrawerPlanOracle, WindowPlanOracle) with noise 0.1 and noise smoothing 0.5 on the env in
  `mode='data_collection'`; when the oracle's subtask is done, `env.set_new_target` picks the
  next one (cube stacking probability 0 single, U(0, 0.25) double); scene episodes that push
  the cube out of view are re-collected (OGBench's health check); puzzle keeps the gripper
  closed. 1001-step episodes.
Published sizes: 1000 training episodes (1M transitions) + 100 validation episodes.

Reference returns, measured on the default single-task env (`<env>-singletask-v0`): a uniform
random policy, and the recipe's noiseless expert where one exists without a learned policy
(pointmaze: the unit step toward the BFS subgoal; cube-single: the plan oracle fed the task's
target through the same privileged fields it reads in data collection). Scene, puzzle and
cube-double have no scripted single-task expert here (their tasks chain several subtasks);
their expert reference is recorded as unmeasured. Scores on these tasks are success x 100.
"""

from __future__ import annotations

import contextlib
import re
import warnings
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
from modebench.benchmarks.tasks.generators.common import (
    LOCAL_NAMESPACE,
    Episode,
    GenerationResult,
    Timer,
    file_lock,
    local_root,
    minari_dataset_dir,
    random_policy,
    rollouts,
    seed_global,
    write_json_atomic,
    write_minari,
)
from tqdm.auto import tqdm

EPISODE_STEPS = 1001
_QUIET = (  # noise OGBench prints on every import / env build: no display for GLFW, float64 box bounds
    r".*DISPLAY.*|.*precision lowered by casting to float32.*"
)


@contextlib.contextmanager
def quiet_ogbench():
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=_QUIET)
        yield


def import_ogbench():
    """`import ogbench` (registers its envs) without its import-time GLFW warning."""
    with quiet_ogbench():
        import ogbench
    return ogbench


def make_env(env_id: str, **kwargs) -> gym.Env:
    """gym.make for an OGBench env, without the float32-bounds warnings it prints on each build.
    OGBench's manipulation envs also build a fresh float64 Box at every `action_space` access
    (in reset and step), so that one warning is filtered for the process, not just here."""
    import_ogbench()
    warnings.filterwarnings("ignore", message=r".*precision lowered by casting to float32.*")
    with quiet_ogbench():
        return gym.make(env_id, **kwargs)  # OGBench generation: max_episode_steps=1001 -> 1000 transitions per episode


@dataclass(frozen=True)
class OGBenchRecipe:
    dataset: str  # OGBench dataset name, e.g. "pointmaze-medium-navigate-v0"
    kind: str  # "navigate" | "play"
    noise: float
    default_task: int  # the task `<env>-singletask-v0` stands for
    published_episodes: int = 1000

    @property
    def env_name(self) -> str:  # "pointmaze-medium-v0"
        parts = self.dataset.split("-")
        return "-".join(parts[:-2] + parts[-1:])

    @property
    def singletask_env(self) -> str:  # "pointmaze-medium-singletask-v0"
        return self.env_name[: -len("-v0")] + "-singletask-v0"

    @property
    def singletask_dataset(self) -> str:  # "pointmaze-medium-navigate-singletask-v0"
        return self.dataset[: -len("-v0")] + "-singletask-v0"


RECIPES: dict[str, OGBenchRecipe] = {
    "ogbench-pointmaze-medium-navigate": OGBenchRecipe("pointmaze-medium-navigate-v0", "navigate", 0.5, 1),
    "ogbench-pointmaze-large-navigate": OGBenchRecipe("pointmaze-large-navigate-v0", "navigate", 0.5, 1),
    "ogbench-pointmaze-giant-navigate": OGBenchRecipe("pointmaze-giant-navigate-v0", "navigate", 0.5, 1),
    "ogbench-cube-single-play": OGBenchRecipe("cube-single-play-v0", "play", 0.1, 2),
    "ogbench-cube-double-play": OGBenchRecipe("cube-double-play-v0", "play", 0.1, 2),
    "ogbench-scene-play": OGBenchRecipe("scene-play-v0", "play", 0.1, 2),
    "ogbench-puzzle-3x3-play": OGBenchRecipe("puzzle-3x3-play-v0", "play", 0.1, 4),
}
NOISE_SMOOTHING = 0.5


def recipe_for_dataset(dataset: str) -> tuple[str, OGBenchRecipe] | None:
    """The generator of an OGBench dataset name (singletask suffixes allowed), if there is one."""
    base = parse_name(dataset)["dataset"]
    for name, recipe in RECIPES.items():
        if recipe.dataset == base:
            return name, recipe
    return None


def parse_name(name: str) -> dict[str, Any]:
    """OGBench's name parsing (ogbench.utils.make_env_and_datasets): env id, dataset file name, task."""
    splits = name.split("-")
    if "singletask" in splits:
        pos = splits.index("singletask")
        env_name = "-".join(splits[: pos - 1] + splits[pos:])
        dataset = "-".join(splits[:pos] + splits[-1:])
        match = re.fullmatch(r"task(\d+)", splits[pos + 1]) if pos + 1 < len(splits) else None
        return {"env": env_name, "dataset": dataset, "task": int(match.group(1)) if match else None, "singletask": True}
    return {"env": "-".join(splits[:-2] + splits[-1:]), "dataset": name, "task": None, "singletask": False}


def npz_path(generator: str, preset: str, seed: int) -> Path:
    recipe = RECIPES[generator]
    return local_root() / "ogbench" / f"{recipe.dataset[: -len('-v0')]}--{preset}-s{seed}.npz"


def minari_id(generator: str, preset: str, seed: int) -> str:
    return f"{LOCAL_NAMESPACE}/{generator}/{preset}-s{seed}-v0"


# ---------------------------------------------------------------- oracles


def _navigate_direction(env: gym.Env) -> np.ndarray:
    base = env.unwrapped
    xy = base.get_xy()
    subgoal, _ = base.get_oracle_subgoal(xy, base.cur_goal_xy)
    direction = subgoal - xy
    return direction / (np.linalg.norm(direction) + 1e-6)


def _vertex_cells(maze_map: np.ndarray) -> tuple[list, list]:
    """All free cells, and the free cells that are not straight corridor cells (OGBench)."""
    all_cells, vertex = [], []
    for i in range(maze_map.shape[0]):
        for j in range(maze_map.shape[1]):
            if maze_map[i, j] != 0:
                continue
            all_cells.append((i, j))
            if maze_map[i - 1, j] == 0 and maze_map[i + 1, j] == 0 and maze_map[i, j - 1] == 1 and maze_map[i, j + 1] == 1:
                continue
            if maze_map[i, j - 1] == 0 and maze_map[i, j + 1] == 0 and maze_map[i - 1, j] == 1 and maze_map[i + 1, j] == 1:
                continue
            vertex.append((i, j))
    return all_cells, vertex


def _play_agents(env: gym.Env, env_name: str, noise: float) -> dict[str, Any]:
    from ogbench.manipspace.oracles.plan.button_plan import ButtonPlanOracle
    from ogbench.manipspace.oracles.plan.cube_plan import CubePlanOracle
    from ogbench.manipspace.oracles.plan.drawer_plan import DrawerPlanOracle
    from ogbench.manipspace.oracles.plan.window_plan import WindowPlanOracle

    kw = {"env": env, "noise": noise, "noise_smoothing": NOISE_SMOOTHING}
    if "cube" in env_name:
        return {"cube": CubePlanOracle(**kw)}
    if "scene" in env_name:
        return {"cube": CubePlanOracle(**kw), "button": ButtonPlanOracle(**kw),
                "drawer": DrawerPlanOracle(**kw), "window": WindowPlanOracle(**kw)}
    if "puzzle" in env_name:
        return {"button": ButtonPlanOracle(**kw, gripper_always_closed=True)}
    raise ValueError(f"no play oracle for {env_name}")


def _p_stack(env_name: str) -> float:
    if "single" in env_name:
        return 0.0
    if "double" in env_name:
        return float(np.random.uniform(0.0, 0.25))
    if "triple" in env_name:
        return float(np.random.uniform(0.05, 0.35))
    return 0.5


def pointmaze_expert(env: gym.Env):
    """Noiseless navigate oracle toward the task goal: the unit step toward the BFS subgoal."""

    def act(obs, info, env_):
        return np.clip(_navigate_direction(env_), -1.0, 1.0).astype(np.float32)

    return act


def cube_single_expert(env: gym.Env):
    """CubePlanOracle (noise 0) in a task-mode env: the target block's goal is read from the
    target mocap, as data collection exposes it in `privileged/target_block_pos`."""
    from ogbench.manipspace.oracles.plan.cube_plan import CubePlanOracle

    oracle = CubePlanOracle(env=env, noise=0.0, noise_smoothing=NOISE_SMOOTHING)
    base = env.unwrapped
    state = {"reset": False}

    def privileged(info):
        info = dict(info)
        mocap = base._cube_target_mocap_ids[0]
        info["privileged/target_block"] = 0
        info["privileged/target_block_pos"] = base._data.mocap_pos[mocap].copy()
        info["privileged/target_block_yaw"] = np.zeros(1)
        return info

    def act(obs, info, env_):
        info = privileged(info)
        if not state["reset"]:
            oracle.reset(obs, info)
            state["reset"] = True
        return np.clip(oracle.select_action(obs, info), -1.0, 1.0).astype(np.float32)

    return act


EXPERTS = {"ogbench-pointmaze-medium-navigate": pointmaze_expert, "ogbench-pointmaze-large-navigate": pointmaze_expert,
           "ogbench-pointmaze-giant-navigate": pointmaze_expert, "ogbench-cube-single-play": cube_single_expert}


# ---------------------------------------------------------------- collection


def collect(generator: str, episodes: int, seed: int, progress: bool = True, episode_steps: int = EPISODE_STEPS
            ) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """Episodes of the recipe in OGBench's flat layout (one row per step; the last row of each
    episode carries terminals=1 and is not a transition of its own)."""
    recipe = RECIPES[generator]
    seed_global(seed)
    if recipe.kind == "navigate":
        env = make_env(recipe.env_name, terminate_at_goal=False, max_episode_steps=episode_steps)
    else:
        env = make_env(recipe.env_name, terminate_at_goal=False, mode="data_collection", max_episode_steps=episode_steps)
    data: dict[str, list] = defaultdict(list)
    subtasks = successes = retries = 0
    bar = tqdm(total=episodes, desc=f"{generator} data", disable=not progress, unit="episode")
    try:
        env.reset(seed=seed)  # seeds the env's own RNG once; later resets continue its stream
        if recipe.kind == "navigate":
            all_cells, vertex = _vertex_cells(env.unwrapped.maze_map)
        else:
            agents = _play_agents(env, recipe.env_name, recipe.noise)
            has_buttons = hasattr(env.unwrapped, "_cur_button_states")
        for _ in range(episodes):
            while True:
                rows: dict[str, list] = defaultdict(list)
                if recipe.kind == "navigate":
                    init_ij = all_cells[np.random.randint(len(all_cells))]
                    goal_ij = vertex[np.random.randint(len(vertex))]
                    ob, info = env.reset(options={"task_info": {"init_ij": init_ij, "goal_ij": goal_ij}})
                    subtasks += 1
                else:
                    ob, info = env.reset()
                    p_stack = _p_stack(recipe.env_name)
                    agent = agents[info["privileged/target_task"]]
                    agent.reset(ob, info)
                    subtasks += 1
                done = False
                while not done:
                    if recipe.kind == "navigate":
                        action = _navigate_direction(env) + np.random.normal(0, recipe.noise, 2)
                    else:
                        action = np.asarray(agent.select_action(ob, info))
                    action = np.clip(action, -1, 1)
                    next_ob, _, terminated, truncated, info = env.step(action)
                    done = terminated or truncated
                    if recipe.kind == "navigate":
                        if info["success"]:
                            successes += 1
                            goal_ij = vertex[np.random.randint(len(vertex))]
                            env.unwrapped.set_goal(goal_ij)
                            subtasks += 1
                    elif agent.done:
                        successes += int(bool(info.get("success", False)))
                        agent_ob, agent_info = env.unwrapped.set_new_target(p_stack=p_stack) if "cube" in recipe.env_name \
                            else env.unwrapped.set_new_target()
                        agent = agents[agent_info["privileged/target_task"]]
                        agent.reset(agent_ob, agent_info)
                        subtasks += 1
                    rows["observations"].append(ob)
                    rows["actions"].append(action)
                    rows["terminals"].append(done)
                    rows["qpos"].append(info["prev_qpos"])
                    rows["qvel"].append(info["prev_qvel"])
                    if recipe.kind == "play" and has_buttons:
                        rows["button_states"].append(info["prev_button_states"])
                    ob = next_ob
                if "scene" in recipe.env_name and not _scene_healthy(np.asarray(rows["qpos"])):
                    retries += 1
                    continue
                break
            for key, values in rows.items():
                data[key].extend(values)
            bar.update(1)
    finally:
        bar.close()
        env.close()
    arrays = {}
    for key, values in data.items():
        dtype = bool if key == "terminals" else (np.int64 if key == "button_states" else np.float32)
        arrays[key] = np.asarray(values, dtype=dtype)
    stats = {"subtasks": subtasks, "subtask_success_rate": successes / max(subtasks - episodes, 1),
             "unhealthy_episodes_recollected": retries}
    return arrays, stats


def _scene_healthy(qpos: np.ndarray) -> bool:
    """OGBench's scene health check: the cube stays in view unless it is in the drawer."""
    block = qpos[:, 14:17]
    if (block[:, 1] >= 0.29).any():
        return False
    return not ((block[:, 1] <= -0.3) & ((block[:, 2] < 0.06) | (block[:, 2] > 0.08))).any()


# ---------------------------------------------------------------- loading (OGBench's own code)


def load_singletask(name: str, path: Path | str) -> tuple[dict[str, np.ndarray], gym.Env]:
    """OGBench's singletask loading (what make_env_and_datasets does for the training file):
    read the npz with its qpos/qvel/button_states, relabel rewards and masks for the task."""
    ogbench = import_ogbench()
    from ogbench.relabel_utils import relabel_dataset

    info = parse_name(name)
    if not info["singletask"]:
        raise ValueError(f"{name}: ModeBench trains on OGBench's single-task versions: use '<dataset>-singletask[-taskN]-v0'")
    env = make_env(info["env"])
    dataset = ogbench.load_dataset(str(path), add_info=True)
    relabel_dataset(info["env"], env, dataset)
    return dataset, env


def to_flat(dataset: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """OGBench singletask arrays -> the core's D4RL-style fields: success transitions (mask 0)
    are terminals; OGBench's episode ends (terminals) that are not successes are timeouts."""
    terminal = dataset["masks"] == 0
    end = dataset["terminals"] > 0
    return {
        "observations": dataset["observations"],
        "actions": dataset["actions"],
        "rewards": dataset["rewards"],
        "next_observations": dataset["next_observations"],
        "terminals": terminal,
        "timeouts": end & ~terminal,
    }


def flat_to_episodes(flat: dict[str, np.ndarray]) -> list[Episode]:
    ends = np.flatnonzero(flat["terminals"] | flat["timeouts"])
    if len(ends) == 0 or ends[-1] != len(flat["rewards"]) - 1:
        ends = np.append(ends, len(flat["rewards"]) - 1)
    episodes, start = [], 0
    for end in ends:
        sl = slice(start, end + 1)
        obs = np.concatenate([flat["observations"][sl], flat["next_observations"][end: end + 1]], axis=0)
        terms = flat["terminals"][sl].astype(bool)
        truncs = np.zeros_like(terms)
        truncs[-1] = not terms[-1]
        episodes.append(Episode(obs.astype(np.float32), flat["actions"][sl], flat["rewards"][sl], terms, truncs))
        start = end + 1
    return episodes


# ---------------------------------------------------------------- generation


def generate(generator: str, episodes: int, seed: int, preset: str, reference_episodes: int = 50,
             progress: bool = True, force: bool = False, write_minari_copy: bool = True) -> GenerationResult:
    """Write `<npz_path>` (+ `-val.npz`, + `.json`) and the Minari copy of the default single task."""
    recipe = RECIPES[generator]
    path = npz_path(generator, preset, seed)
    marker_path = path.with_suffix(".json")
    mid = minari_id(generator, preset, seed)
    with file_lock(local_root() / "locks" / (path.stem + ".lock")):
        if marker_path.exists() and path.exists() and not force:
            return GenerationResult(generator, {"npz": str(path), "minari": str(minari_dataset_dir(mid))},
                                    local_npz_marker(generator, preset, seed) or {}, 0.0, generated=False)
        with Timer() as timer:
            train, data_stats = collect(generator, episodes, seed, progress)
            val, _ = collect(generator, max(episodes // 10, 1), seed + 7_919, progress)
            path.parent.mkdir(parents=True, exist_ok=True)
            for file, arrays in ((path, train), (Path(str(path).replace(".npz", "-val.npz")), val)):
                tmp = file.with_name(file.name + ".tmp.npz")
                np.savez_compressed(tmp, **arrays)
                tmp.replace(file)
            horizon = gym.spec(recipe.singletask_env).max_episode_steps
            ref_seed = 20_000_000 + seed * 1000
            make = lambda: make_env(recipe.singletask_env)
            rand = rollouts(make, random_policy, reference_episodes, ref_seed, horizon, f"{generator} random reference", progress)
            expert = None
            if generator in EXPERTS:
                expert = rollouts(make, EXPERTS[generator], reference_episodes, ref_seed, horizon,
                                  f"{generator} expert reference", progress)
        stats = {
            "generator": generator,
            "ogbench_dataset": recipe.dataset,
            "local": True,
            "published_counterpart": f"OGBench {recipe.dataset} (NOT this data)",
            "recipe": (f"OGBench {recipe.kind} recipe, noise {recipe.noise}"
                       + (f", noise smoothing {NOISE_SMOOTHING}, plan oracles, mode='data_collection'" if recipe.kind == "play" else
                          ", unit step toward the BFS oracle subgoal")),
            "preset": preset,
            "seed": seed,
            "episodes": episodes,
            "val_episodes": max(episodes // 10, 1),
            "transitions": int(len(train["terminals"]) - train["terminals"].sum()),
            "reference_task": f"{recipe.singletask_env} (task {recipe.default_task})",
            "random_reference": rand.summary(),
            "expert_reference": expert.summary() if expert is not None else None,
            "ref_min_score": float(rand.returns.mean()),
            "ref_max_score": float(expert.returns.mean()) if expert is not None else None,
            "generation_seconds": timer.seconds,
            "npz": str(path),
            "minari_id": mid if write_minari_copy else None,
            **data_stats,
        }
        if write_minari_copy:
            flat = to_flat(load_singletask(recipe.singletask_dataset, path)[0])
            spec = gym.spec(recipe.singletask_env)
            write_minari(
                mid, flat_to_episodes(flat), env_spec=spec, eval_env_spec=spec,
                ref_min_score=stats["ref_min_score"], ref_max_score=stats["ref_max_score"],
                num_reference_episodes=reference_episodes,
                description=(f"LOCAL dataset generated by ModeBench with OGBench's recipe (not OGBench's published data): "
                             f"{stats['recipe']}; rewards of {recipe.singletask_env}, episodes cut at task successes."),
                algorithm_name=stats["recipe"], marker=stats,
            )
        write_json_atomic(marker_path, stats)  # last: the npz pair is complete
        return GenerationResult(generator, {"npz": str(path), "minari": str(minari_dataset_dir(mid))}, stats, timer.seconds)


def local_npz_marker(generator: str, preset: str, seed: int) -> dict[str, Any] | None:
    """The generation record of a finished local npz, or None."""
    import json

    marker = npz_path(generator, preset, seed).with_suffix(".json")
    return json.loads(marker.read_text()) if marker.exists() else None
