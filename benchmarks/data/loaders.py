"""Loading Minari datasets (by id or local path) and D4RL-style .npz/.hdf5 files.

Minari keeps datasets under MINARI_DATASETS_PATH (default ~/.minari/datasets); a local path
to a dataset folder (the one holding `data/`) works too. Dict observations (goal-conditioned
datasets) are flattened in the observation space's key order, and evaluation applies the same
flattening to the environment's observations (`FlattenObservation`), so the two always agree.
"""

from __future__ import annotations

import os
from pathlib import Path

import gymnasium as gym
import numpy as np

from benchmarks.data.dataset import DatasetError, TransitionDataset


class MissingDatasetError(FileNotFoundError):
    """A dataset is not on this machine; the message says how to get it or what to use instead."""


def _flatten(space: gym.Space, obs) -> np.ndarray:
    """Flatten a batch of observations [T, ...] (dict observations in space order)."""
    if isinstance(space, gym.spaces.Dict):
        return np.concatenate([_flatten(sub, obs[key]) for key, sub in space.spaces.items()], axis=1)
    arr = np.asarray(obs, dtype=np.float32)
    return arr.reshape(arr.shape[0], -1)


def resolve_minari(id_or_path: str):
    """The MinariDataset for an id or a local folder, or a MissingDatasetError saying what to do."""
    import minari

    path = Path(id_or_path).expanduser()
    if path.exists():
        data = path / "data" if (path / "data").exists() else path
        return minari.MinariDataset(data)
    try:
        return minari.load_dataset(id_or_path, download=False)
    except FileNotFoundError:
        root = os.environ.get("MINARI_DATASETS_PATH", "~/.minari/datasets")
        raise MissingDatasetError(
            f"Minari dataset {id_or_path!r} is not on this machine (looked in {root}). "
            f"Download it with `modebench datasets download {id_or_path}` (needs network), "
            "or train on a dataset built offline: `modebench datasets list` shows the local suites "
            "(toy, maze2d-local, ogbench-local)."
        ) from None


def load_minari(id_or_path: str) -> TransitionDataset:
    dataset = resolve_minari(id_or_path)
    obs_space = dataset.observation_space
    act_space = dataset.action_space
    if not isinstance(act_space, gym.spaces.Box):
        raise DatasetError(f"{id_or_path}: only continuous (Box) action spaces are supported, got {act_space}")
    episodes = []
    for ep in dataset.iterate_episodes():
        episodes.append(
            dict(
                observations=_flatten(obs_space, ep.observations),
                actions=np.asarray(ep.actions, np.float32).reshape(len(ep.rewards), -1),
                rewards=ep.rewards,
                terminations=ep.terminations,
                truncations=ep.truncations,
            )
        )
    meta = dict(dataset.storage.metadata)
    metadata = {
        "source": "minari",
        "minari_id": meta.get("dataset_id", str(id_or_path)),
        "path": str(dataset.storage.data_path),
        "ref_min_score": meta.get("ref_min_score"),
        "ref_max_score": meta.get("ref_max_score"),
    }
    return TransitionDataset.from_episodes(
        episodes, name=str(metadata["minari_id"]), action_low=act_space.low, action_high=act_space.high, metadata=metadata
    )


def recover_env(id_or_path: str, eval_env: bool = True) -> gym.Env:
    """The environment a Minari dataset records, with dict observations flattened like the data."""
    dataset = resolve_minari(id_or_path)
    env = dataset.recover_environment(eval_env=eval_env)
    if isinstance(env.observation_space, gym.spaces.Dict):
        env = gym.wrappers.FlattenObservation(env)
    return env


def max_episode_steps(id_or_path: str) -> int | None:
    dataset = resolve_minari(id_or_path)
    env = dataset.recover_environment(eval_env=True)
    try:
        return env.spec.max_episode_steps if env.spec is not None else None
    finally:
        env.close()


def load_d4rl_file(path: str, name: str | None = None) -> TransitionDataset:
    """A D4RL-style file: .npz or .hdf5 with observations, actions, rewards, terminals, timeouts
    (next_observations optional). Actions are taken as already in [-1, 1] (D4RL's envs)."""
    file = Path(path).expanduser()
    if not file.exists():
        raise MissingDatasetError(
            f"D4RL-style file {path!r} does not exist. Give the path of a downloaded D4RL .hdf5 "
            "(`modebench datasets download` fetches the suite's files when online) or an .npz with the same fields."
        )
    if file.suffix == ".npz":
        with np.load(file) as npz:
            data = {k: npz[k] for k in npz.files}
    elif file.suffix in (".hdf5", ".h5"):
        import h5py

        with h5py.File(file, "r") as h5:
            data = {k: h5[k][()] for k in h5 if isinstance(h5[k], h5py.Dataset)}
    else:
        raise DatasetError(f"{path}: unknown file type {file.suffix!r}; expected .npz, .hdf5 or .h5")
    return TransitionDataset.from_flat(data, name=name or file.stem, metadata={"source": "d4rl-file", "path": str(file)})
