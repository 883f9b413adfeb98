"""What every offline generator shares: where local datasets live, locking, Minari writing,
reference-return measurement.

Local datasets are NAMED as local everywhere: Minari ids start with `modebench-local/`, OGBench
npz files live under `$MODEBENCH_DATA/ogbench/` with `--<preset>-s<seed>` in the file name,
and each dataset carries a `modebench.json` beside it (generator, recipe, sizes, seed, the
measured random / expert reference returns and success rates, wall time). They are never
passed off as the published datasets: their reference returns are measured here, with the
recipe's own scripted expert, and suites score them with those numbers.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
from tqdm.auto import tqdm

LOCAL_NAMESPACE = "modebench-local"
MARKER = "modebench.json"


def import_robotics():
    """gymnasium_robotics, registered, without the version notice it prints to stderr on import
    (its Adroit reward-change notice: documented in benchmarks/tasks/suites/adroit.yaml). Here,
    below both the generators (maze2d's envs) and the sources (every env by id), so neither imports the other."""
    import io

    with contextlib.redirect_stderr(io.StringIO()):
        import gymnasium_robotics
    gym.register_envs(gymnasium_robotics)
    return gymnasium_robotics


def local_root() -> Path:
    """Root of locally generated non-Minari files (OGBench npz): $MODEBENCH_DATA or ~/.modebench/datasets."""
    return Path(os.environ.get("MODEBENCH_DATA", "~/.modebench/datasets")).expanduser()


def minari_root() -> Path:
    """Minari's datasets root ($MINARI_DATASETS_PATH or ~/.minari/datasets), read at call time."""
    return Path(os.environ.get("MINARI_DATASETS_PATH", "~/.minari/datasets")).expanduser()


def minari_dataset_dir(dataset_id: str) -> Path:
    return minari_root() / dataset_id


@contextlib.contextmanager
def file_lock(path: Path) -> Iterator[None]:
    """An exclusive lock on `path` (created if needed): one process generates, the others wait."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def read_marker(directory: Path) -> dict[str, Any] | None:
    file = directory / MARKER
    if not file.exists():
        return None
    return json.loads(file.read_text())


def write_json_atomic(path: Path, payload: dict[str, Any]) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(payload, indent=2, sort_keys=True, default=_jsonable))
    os.replace(tmp, path)


def _jsonable(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    return str(value)


def seed_global(seed: int) -> None:
    """The recipes (and OGBench's oracles and task sampling) draw from numpy's global RNG."""
    np.random.seed(seed % (2**32))


# ---------------------------------------------------------------- episodes and Minari


@dataclass
class Episode:
    """One episode in Minari's layout: observations [T+1] (array, or dict of arrays), the rest [T]."""

    observations: Any
    actions: np.ndarray
    rewards: np.ndarray
    terminations: np.ndarray
    truncations: np.ndarray
    infos: dict[str, np.ndarray] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.rewards)


def stack_observations(obs_list: list[Any]) -> Any:
    if isinstance(obs_list[0], dict):
        return {k: np.stack([np.asarray(o[k]) for o in obs_list]).astype(np.float64) for k in obs_list[0]}
    return np.stack([np.asarray(o) for o in obs_list]).astype(np.float32)


def write_minari(
    dataset_id: str,
    episodes: list[Episode],
    env_spec: gym.envs.registration.EnvSpec,
    eval_env_spec: gym.envs.registration.EnvSpec,
    ref_min_score: float | None,
    ref_max_score: float | None,
    num_reference_episodes: int,
    description: str,
    algorithm_name: str,
    marker: dict[str, Any],
    observation_space: gym.Space | None = None,
    action_space: gym.Space | None = None,
) -> Path:
    """Write a standard Minari dataset (minari.create_dataset_from_buffers; no JAX needed) and
    its `modebench.json` marker. The marker is written last: a dataset without it is partial."""
    import minari
    from minari.data_collector import EpisodeBuffer

    target = minari_dataset_dir(dataset_id)
    if target.exists():
        shutil.rmtree(target)
    buffers = [
        EpisodeBuffer(
            id=i,
            observations=ep.observations,
            actions=np.asarray(ep.actions, np.float32),
            rewards=np.asarray(ep.rewards, np.float64),
            terminations=np.asarray(ep.terminations, bool),
            truncations=np.asarray(ep.truncations, bool),
            infos=ep.infos or None,
        )
        for i, ep in enumerate(episodes)
    ]
    scores: dict[str, Any] = {}
    if ref_max_score is not None and ref_min_score is not None:
        scores = {"ref_min_score": float(ref_min_score), "ref_max_score": float(ref_max_score),
                  "num_episodes_average_score": int(num_reference_episodes)}
    try:
        minari.create_dataset_from_buffers(
            dataset_id=dataset_id,
            buffer=buffers,
            env=env_spec,
            eval_env=eval_env_spec,
            algorithm_name=algorithm_name,
            author="ModeBench local generator",
            code_permalink="benchmarks/tasks/generators (ModeBench)",
            description=description,
            observation_space=observation_space,
            action_space=action_space,
            **scores,
        )
    except BaseException:
        shutil.rmtree(target, ignore_errors=True)
        raise
    write_json_atomic(target / MARKER, marker)
    return target


def complete_minari(dataset_id: str) -> bool:
    """True when the local Minari dataset exists and its generator finished writing it."""
    directory = minari_dataset_dir(dataset_id)
    return (directory / "data").exists() and (directory / MARKER).exists()


# ---------------------------------------------------------------- reference returns


@dataclass
class RolloutStats:
    returns: np.ndarray
    successes: np.ndarray
    lengths: np.ndarray

    def summary(self) -> dict[str, float]:
        return {
            "return_mean": float(self.returns.mean()),
            "return_std": float(self.returns.std()),
            "success_rate": float(self.successes.mean()),
            "length_mean": float(self.lengths.mean()),
            "episodes": len(self.returns),
        }


Policy = Callable[[Any, dict, gym.Env], np.ndarray]


def rollouts(
    make_env: Callable[[], gym.Env],
    make_policy: Callable[[gym.Env], Policy],
    episodes: int,
    seed: int,
    horizon: int,
    desc: str,
    progress: bool = True,
) -> RolloutStats:
    """Undiscounted returns of `episodes` episodes of at most `horizon` steps; success = the env's
    info['success'] at any step. Episode i resets with seed `seed + i` and numpy's global RNG
    (used by the recipes' noise and OGBench's oracles) is seeded the same way."""
    env = make_env()
    returns, successes, lengths = [], [], []
    try:
        for i in tqdm(range(episodes), desc=desc, disable=not progress, leave=False):
            seed_global(seed + i)
            obs, info = env.reset(seed=seed + i)
            policy = make_policy(env)
            total, success, t = 0.0, False, 0
            for t in range(1, horizon + 1):
                action = policy(obs, info, env)
                obs, reward, terminated, truncated, info = env.step(action)
                total += float(reward)
                success |= bool(info.get("success", False))
                if terminated or truncated:
                    break
            returns.append(total)
            successes.append(success)
            lengths.append(t)
    finally:
        env.close()
    return RolloutStats(np.asarray(returns), np.asarray(successes, bool), np.asarray(lengths))


def random_policy(env: gym.Env) -> Policy:
    space = env.action_space
    rng = np.random.default_rng(np.random.randint(2**31))

    def act(obs, info, env_):
        return rng.uniform(space.low, space.high).astype(np.float32)

    return act


@dataclass
class GenerationResult:
    name: str
    paths: dict[str, str]
    stats: dict[str, Any]
    seconds: float
    generated: bool = True


class Timer:
    def __enter__(self) -> Timer:  # noqa: PYI034
        self.start = time.perf_counter()
        return self

    def __exit__(self, *exc) -> None:
        self.seconds = time.perf_counter() - self.start
