"""PointMaze (gymnasium-robotics) datasets with D4RL's maze2d recipe, written as Minari datasets.

The recipe (D4RL scripts/generation/generate_maze2d_datasets.py + its waypoint controller):
a planner gives the cell path from the point's cell to a random target cell; a PD controller
follows the path's waypoints, a = 10 (waypoint - xy) - 1 * velocity (D4RL's gains), switching
to the next waypoint within 0.1 of the current one; Gaussian action noise N(0, 0.5^2) is added
and the action clipped to [-1, 1]; on reaching the target (within 0.1) the controller picks a
new random target (D4RL's `set_target`: a free cell centre +- U(0.1)). The reward is D4RL's
sparse maze2d reward relabelled to the task's FIXED evaluation goal (D4RL's relabelling step):
the data is collected in the evaluation environment itself (goal cell 'g' fixed at D4RL's
maze2d goal, continuing task, goal kept when reached), so every reward is the one the
evaluation pays, and the controller's own random targets stay private to it.

Differences from D4RL, on purpose and recorded in each dataset's metadata: gymnasium-robotics'
PointMaze (MuJoCo 3+ bindings, maze_size_scaling 1, goal jitter +-0.25 per reset) instead of
D4RL's mujoco-py maze2d; the observation is gymnasium-robotics' dict (observation, achieved
goal, desired goal), flattened by the loader; the data is cut into `horizon`-step episodes
with an environment reset each (D4RL keeps one continuing trajectory), so the goal jitter and
the start cells vary across the data as they do at evaluation. Planner: BFS on the cell grid
(D4RL and Minari use Q-iteration; both return a shortest cell path).

Reference returns (stored as ref_min_score / ref_max_score): the mean return of a uniform
random policy and of the noiseless controller heading for the evaluation goal, each over
`reference_episodes` evaluation episodes.
"""

from __future__ import annotations

import copy
from collections import deque
from dataclasses import dataclass
from typing import Any

import gymnasium as gym
import numpy as np
from modebench.benchmarks.tasks.generators.common import (
    LOCAL_NAMESPACE,
    Episode,
    GenerationResult,
    Timer,
    file_lock,
    import_robotics,
    local_root,
    minari_dataset_dir,
    random_policy,
    rollouts,
    seed_global,
    stack_observations,
    write_minari,
)
from tqdm.auto import tqdm

P_GAIN = 10.0  # D4RL waypoint controller
D_GAIN = -1.0
WAYPOINT_THRESHOLD = 0.1  # D4RL solve_thresh
ACTION_NOISE = 0.5  # D4RL maze2d `--noisy`
TARGET_JITTER = 0.1  # D4RL set_target: cell centre + U(-0.1, 0.1)


@dataclass(frozen=True)
class MazeSpec:
    env_id: str
    goal_cell: tuple[int, int]  # D4RL maze2d's fixed evaluation goal ('G' in its maze string)
    horizon: int  # D4RL maze2d max_episode_steps
    published_steps: int  # D4RL maze2d-*-v1 dataset size


MAZES: dict[str, MazeSpec] = {
    "umaze": MazeSpec("PointMaze_UMaze-v3", (1, 1), 300, 1_000_000),
    "medium": MazeSpec("PointMaze_Medium-v3", (6, 6), 600, 2_000_000),
    "large": MazeSpec("PointMaze_Large-v3", (7, 9), 800, 4_000_000),
}


def _register() -> None:
    import_robotics()


def eval_maze_map(maze: str) -> list[list[Any]]:
    """gymnasium-robotics' map with the goal cell marked 'g' (D4RL's fixed maze2d goal)."""
    _register()
    spec = MAZES[maze]
    base = gym.spec(spec.env_id).kwargs["maze_map"]
    grid: list[list[Any]] = [list(row) for row in base]
    i, j = spec.goal_cell
    if grid[i][j] == 1:
        raise ValueError(f"{maze}: goal cell {spec.goal_cell} is a wall")
    grid[i][j] = "g"
    return grid


def eval_env_spec(maze: str) -> gym.envs.registration.EnvSpec:
    """The evaluation environment: sparse reward, fixed goal, continuing task (the goal stays
    when reached, so the return counts the steps spent at the goal, like D4RL's maze2d)."""
    _register()
    spec = copy.deepcopy(gym.spec(MAZES[maze].env_id))
    spec.kwargs = dict(spec.kwargs, maze_map=eval_maze_map(maze), continuing_task=True, reset_target=False,
                       reward_type="sparse")
    spec.max_episode_steps = MAZES[maze].horizon
    return spec


def make_eval_env(maze: str) -> gym.Env:
    return gym.make(eval_env_spec(maze))


# ---------------------------------------------------------------- planner + PD controller


def free_cells(maze_map: list[list[Any]]) -> list[tuple[int, int]]:
    return [(i, j) for i, row in enumerate(maze_map) for j, c in enumerate(row) if c != 1]


def bfs_path(maze_map: list[list[Any]], start: tuple[int, int], goal: tuple[int, int]) -> list[tuple[int, int]]:
    """Shortest 4-connected cell path start -> goal (inclusive)."""
    parents: dict[tuple[int, int], tuple[int, int] | None] = {start: None}
    queue = deque([start])
    while queue:
        cell = queue.popleft()
        if cell == goal:
            break
        for di, dj in ((-1, 0), (1, 0), (0, -1), (0, 1)):
            nxt = (cell[0] + di, cell[1] + dj)
            if 0 <= nxt[0] < len(maze_map) and 0 <= nxt[1] < len(maze_map[0]) and maze_map[nxt[0]][nxt[1]] != 1 and nxt not in parents:
                parents[nxt] = cell
                queue.append(nxt)
    if goal not in parents:
        raise ValueError(f"no path from {start} to {goal}")
    path = [goal]
    while parents[path[-1]] is not None:
        path.append(parents[path[-1]])
    return path[::-1]


class WaypointController:
    """D4RL's maze2d waypoint controller: follow the planner's cell centres, then the target."""

    def __init__(self, maze, threshold: float = WAYPOINT_THRESHOLD):
        self.maze = maze  # gymnasium_robotics Maze (cell <-> xy maps)
        self.map = maze.maze_map
        self.threshold = threshold
        self.target: np.ndarray | None = None
        self.waypoints: list[np.ndarray] = []
        self.index = 0

    def cell(self, xy: np.ndarray) -> tuple[int, int]:
        i, j = self.maze.cell_xy_to_rowcol(np.asarray(xy))
        i = int(np.clip(i, 0, len(self.map) - 1))
        j = int(np.clip(j, 0, len(self.map[0]) - 1))
        if self.map[i][j] == 1:  # numerical edge case at a wall: nearest free cell
            cells = free_cells(self.map)
            centres = np.array([self.maze.cell_rowcol_to_xy(np.array(c)) for c in cells])
            i, j = cells[int(np.argmin(np.linalg.norm(centres - xy, axis=1)))]
        return i, j

    def set_target(self, xy: np.ndarray, target: np.ndarray) -> None:
        self.target = np.asarray(target, np.float64)
        path = bfs_path(self.map, self.cell(xy), self.cell(self.target))
        self.waypoints = [np.asarray(self.maze.cell_rowcol_to_xy(np.array(c)), np.float64) for c in path[1:-1]]
        self.waypoints.append(self.target)
        self.index = 0

    def reached(self, xy: np.ndarray) -> bool:
        return self.target is not None and float(np.linalg.norm(xy - self.target)) <= self.threshold

    def act(self, xy: np.ndarray, velocity: np.ndarray) -> np.ndarray:
        while self.index < len(self.waypoints) - 1 and np.linalg.norm(self.waypoints[self.index] - xy) <= self.threshold:
            self.index += 1
        waypoint = self.waypoints[self.index]
        return P_GAIN * (waypoint - xy) + D_GAIN * velocity


def random_target(maze, rng: np.random.Generator) -> np.ndarray:
    cells = free_cells(maze.maze_map)
    i, j = cells[int(rng.integers(len(cells)))]
    return np.asarray(maze.cell_rowcol_to_xy(np.array([i, j])), np.float64) + rng.uniform(-TARGET_JITTER, TARGET_JITTER, 2)


def expert_policy(env: gym.Env):
    """The noiseless controller heading for the evaluation goal (the expert reference)."""
    controller = WaypointController(env.unwrapped.maze)
    state: dict[str, bool] = {"planned": False}

    def act(obs, info, env_):
        xy = obs["achieved_goal"]
        if not state["planned"]:
            controller.set_target(xy, obs["desired_goal"])
            state["planned"] = True
        return np.clip(controller.act(xy, obs["observation"][2:]), -1.0, 1.0).astype(np.float32)

    return act


# ---------------------------------------------------------------- generation


def dataset_id(maze: str, preset: str, seed: int) -> str:
    return f"{LOCAL_NAMESPACE}/pointmaze-{maze}/{preset}-s{seed}-v0"


def collect(maze: str, steps: int, seed: int, noise: float = ACTION_NOISE, progress: bool = True) -> tuple[list[Episode], dict[str, Any]]:
    """`steps` transitions of the noisy waypoint controller in `horizon`-step episodes."""
    horizon = MAZES[maze].horizon
    env = make_eval_env(maze)
    rng = np.random.default_rng(seed)
    controller = WaypointController(env.unwrapped.maze)
    episodes: list[Episode] = []
    targets_set = targets_reached = 0
    bar = tqdm(total=steps, desc=f"pointmaze-{maze} data", disable=not progress, unit="step")
    done_steps = 0
    ep_index = 0
    try:
        while done_steps < steps:
            length = min(horizon, steps - done_steps)
            obs, _ = env.reset(seed=seed * 1_000_003 + ep_index)
            controller.set_target(obs["achieved_goal"], random_target(controller.maze, rng))
            targets_set += 1
            observations, actions, rewards, terms, truncs = [obs], [], [], [], []
            goals = [controller.target.copy()]
            for t in range(length):
                xy, vel = obs["achieved_goal"], obs["observation"][2:]
                action = controller.act(xy, vel) + rng.normal(0.0, noise, 2)
                action = np.clip(action, -1.0, 1.0).astype(np.float32)
                obs, reward, terminated, truncated, _ = env.step(action)
                if controller.reached(obs["achieved_goal"]):
                    targets_reached += 1
                    controller.set_target(obs["achieved_goal"], random_target(controller.maze, rng))
                    targets_set += 1
                observations.append(obs)
                actions.append(action)
                rewards.append(float(reward))
                terms.append(bool(terminated))
                truncs.append(bool(truncated) or t == length - 1)
                goals.append(controller.target.copy())
                if terminated:
                    break
            episodes.append(Episode(
                observations=stack_observations(observations),
                actions=np.asarray(actions, np.float32),
                rewards=np.asarray(rewards),
                terminations=np.asarray(terms),
                truncations=np.asarray(truncs),
                infos={"controller_target": np.asarray(goals, np.float64)},
            ))
            done_steps += len(actions)
            bar.update(len(actions))
            ep_index += 1
    finally:
        bar.close()
        env.close()
    stats = {
        "controller_targets": targets_set,
        # targets reached / targets that had a full chance (the last one of each episode is cut)
        "controller_target_reach_rate": targets_reached / max(targets_set - len(episodes), 1),
        "data_return_mean": float(np.mean([ep.rewards.sum() for ep in episodes])),
        "data_goal_visit_rate": float(np.mean([ep.rewards.max() > 0 for ep in episodes])),
    }
    return episodes, stats


def generate(maze: str, steps: int, seed: int, preset: str, reference_episodes: int = 100,
             noise: float = ACTION_NOISE, progress: bool = True, force: bool = False) -> GenerationResult:
    """Generate (or find) the Minari dataset `modebench-local/pointmaze-<maze>/<preset>-s<seed>-v0`."""
    from modebench.benchmarks.tasks.generators.common import (
        complete_minari,
        read_marker,
    )

    name = dataset_id(maze, preset, seed)
    directory = minari_dataset_dir(name)
    with file_lock(local_root() / "locks" / (name.replace("/", "__") + ".lock")):
        if complete_minari(name) and not force:
            return GenerationResult(name, {"minari": str(directory)}, read_marker(directory) or {}, 0.0, generated=False)
        with Timer() as timer:
            seed_global(seed)
            episodes, data_stats = collect(maze, steps, seed, noise, progress)
            horizon = MAZES[maze].horizon
            ref_seed = 10_000_000 + seed * 1000
            rand = rollouts(lambda: make_eval_env(maze), random_policy, reference_episodes, ref_seed, horizon,
                            f"pointmaze-{maze} random reference", progress)
            expert = rollouts(lambda: make_eval_env(maze), expert_policy, reference_episodes, ref_seed, horizon,
                              f"pointmaze-{maze} expert reference", progress)
        stats = {
            "dataset_id": name,
            "generator": f"pointmaze-{maze}",
            "recipe": "D4RL maze2d: BFS cell path + PD waypoint controller (p=10, d=-1), action noise N(0, 0.5^2), "
                      "random targets, sparse reward at the fixed evaluation goal",
            "local": True,
            "published_counterpart": f"D4RL maze2d-{maze}-v1 / Minari D4RL/pointmaze/{maze}-v2 (NOT this data)",
            "preset": preset,
            "seed": seed,
            "steps": int(sum(len(ep) for ep in episodes)),
            "episodes": len(episodes),
            "noise": noise,
            "horizon": horizon,
            "random_reference": rand.summary(),
            "expert_reference": expert.summary(),
            "ref_min_score": float(rand.returns.mean()),
            "ref_max_score": float(expert.returns.mean()),
            "generation_seconds": timer.seconds,
            **data_stats,
        }
        collection_spec = copy.deepcopy(eval_env_spec(maze))
        write_minari(
            name, episodes, env_spec=collection_spec, eval_env_spec=eval_env_spec(maze),
            ref_min_score=stats["ref_min_score"], ref_max_score=stats["ref_max_score"],
            num_reference_episodes=reference_episodes,
            description=(f"LOCAL dataset generated by ModeBench (not D4RL's or Minari's published data). "
                         f"{stats['recipe']}. {stats['steps']} steps, seed {seed}."),
            algorithm_name="BFS planner + PD waypoint controller + N(0, 0.5^2) action noise (D4RL maze2d recipe)",
            marker=stats,
        )
        return GenerationResult(name, {"minari": str(directory)}, stats, timer.seconds)
