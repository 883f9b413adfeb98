"""Loading Minari datasets (by id or local path) and D4RL-style .npz/.hdf5 files.

Minari keeps datasets under MINARI_DATASETS_PATH (default ~/.minari/datasets); a local path
to a dataset folder (the one holding `data/`) works too. Dict observations (goal-conditioned
datasets) are cut to the keys of the task's observation layout, in the layout's order (all keys
in the space's order when the task names none), and evaluation applies the same selection to the
environment's observations (`LayoutObservation`), so the two always agree.

Every loader reads its container inside `reading` (a damaged, truncated or foreign file is one
DatasetError line naming it) and checks the arrays as stored with benchmarks.data.validate
before anything is derived from them.
"""

from __future__ import annotations

import json
import os
import zipfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
from modebench.benchmarks.data.dataset import DatasetError, TransitionDataset
from modebench.benchmarks.data.validate import OGBENCH_FIELDS, check_arrays, one_line

# What h5py, zipfile, numpy and json raise on a damaged, truncated or foreign file (and minari,
# which asserts on the types in a malformed metadata.json).
CONTAINER_ERRORS = (OSError, ValueError, EOFError, KeyError, AssertionError, zipfile.BadZipFile, json.JSONDecodeError)
REWRITE = "download or write it again"


class MissingDatasetError(FileNotFoundError):
    """A dataset is not on this machine; the message says how to get it or what to use instead."""


@contextmanager
def reading(where: str | Path, what: str, fix: str = REWRITE) -> Iterator[None]:
    """Turn the low-level error of a damaged container into one DatasetError line naming it
    (a file that is not there stays a FileNotFoundError: the callers say how to get it)."""
    try:
        yield
    except (DatasetError, FileNotFoundError):
        raise
    except CONTAINER_ERRORS as err:
        raise DatasetError(f"{where}: cannot read {what} ({_reason(err)}); it is damaged, truncated or of another "
                           f"format: {fix}") from None


def _reason(err: BaseException) -> str:
    if isinstance(err, KeyError):
        return f"no entry {err.args[0]!r}" if err.args else "an entry is missing"
    return one_line(err)


def read_arrays(file: Path) -> dict[str, np.ndarray]:
    """The named arrays of an .npz or .hdf5 file. In HDF5 only top-level datasets are fields:
    groups (D4RL's `infos/`, `metadata/`) hold side information, not transitions."""
    if file.suffix == ".npz":
        with reading(file, "the .npz archive"):
            archive = np.load(file, allow_pickle=False)
        if not isinstance(archive, np.lib.npyio.NpzFile):
            raise DatasetError(f"{file}: holds one bare array, not named fields; save it with "
                               "np.savez(FILE, observations=..., actions=..., rewards=..., terminals=..., timeouts=...)")
        with archive:
            return {key: _read_field(file, key, lambda key=key: archive[key]) for key in archive.files}
    import h5py

    with reading(file, "the HDF5 file"), h5py.File(file, "r") as h5:
        return {key: _read_field(file, key, lambda item=item: item[()])
                for key, item in h5.items() if isinstance(item, h5py.Dataset)}


def _read_field(file: Path, key: str, read) -> np.ndarray:
    with reading(file, f"field {key!r}"):
        return np.asarray(read())


def layout_keys(space: gym.Space, keys: Sequence[str] | None, where: str) -> list[str] | None:
    """The keys of a dict observation the policy sees, in order: `keys` (each checked against the
    space), or every key in the space's order when `keys` is None. None for a non-dict space,
    which has nothing to select (a layout that names keys there is an error)."""
    if not isinstance(space, gym.spaces.Dict):
        if keys is not None:
            raise DatasetError(f"{where}: the observation layout names keys {list(keys)}, but the observations are "
                               f"{type(space).__name__}, not a dict; drop the task's `observation:` block")
        return None
    if keys is None:
        return list(space.spaces)
    unknown = [k for k in keys if k not in space.spaces]
    if unknown or not keys:
        raise DatasetError(f"{where}: observation layout keys {list(keys)}: {unknown or 'none given'} not in the "
                           f"dict observation (its keys: {list(space.spaces)}); fix the task's `observation:` block")
    return list(keys)


def layout_dims(space: gym.Space, keys: Sequence[str] | None, where: str = "observation space") -> list[tuple[str, int]]:
    """(key, flat size) of each part of the policy's observation ([("", size)] for a non-dict space)."""
    selected = layout_keys(space, keys, where)
    if selected is None:
        return [("", gym.spaces.flatdim(space))]
    return [(key, gym.spaces.flatdim(space.spaces[key])) for key in selected]


def _flatten(space: gym.Space, obs, keys: Sequence[str] | None = None, where: str = "dataset") -> np.ndarray:
    """Flatten a batch of observations [T, ...]: a dict observation to the layout's keys in its
    order (nested dicts, e.g. Franka Kitchen's goals, in their space's order)."""
    if isinstance(space, gym.spaces.Dict):
        selected = layout_keys(space, keys, where)
        return np.concatenate([_flatten(space.spaces[key], obs[key]) for key in selected], axis=1)
    layout_keys(space, keys, where)
    arr = np.asarray(obs, dtype=np.float32)
    return arr.reshape(arr.shape[0], -1)


class LayoutObservation(gym.ObservationWrapper):
    """The env's observation as the policy sees it: a dict observation cut to the layout's keys,
    in the layout's order, each flattened and concatenated (what `_flatten` does to the data;
    gymnasium's FilterObservation re-sorts a sorted Dict's keys, so it cannot keep the order)."""

    def __init__(self, env: gym.Env, keys: Sequence[str] | None):
        super().__init__(env)
        space = env.observation_space
        self.keys = layout_keys(space, keys, f"env {env.spec.id if env.spec else type(env.unwrapped).__name__}")
        parts = [gym.spaces.flatten_space(space.spaces[key]) for key in self.keys]
        self.observation_space = gym.spaces.Box(
            np.concatenate([p.low for p in parts]), np.concatenate([p.high for p in parts]),
            dtype=np.result_type(*[p.dtype for p in parts]))

    def observation(self, observation):
        space = self.env.observation_space
        return np.concatenate([gym.spaces.flatten(space.spaces[key], observation[key]) for key in self.keys])


def observation_view(env: gym.Env, keys: Sequence[str] | None = None) -> gym.Env:
    """`env` with its dict observations cut to the layout (every key when `keys` is None); a
    non-dict observation is returned as it is (a layout naming keys there is an error)."""
    if isinstance(env.observation_space, gym.spaces.Dict):
        return LayoutObservation(env, keys)
    layout_keys(env.observation_space, keys, f"env {env.spec.id if env.spec else type(env.unwrapped).__name__}")
    return env


def resolve_minari(id_or_path: str):
    """The MinariDataset for an id or a local folder, or a MissingDatasetError saying what to do."""
    import minari

    path = Path(id_or_path).expanduser()
    fix = "a Minari dataset folder holds data/metadata.json and the episode files minari writes: download or generate it again"
    if path.exists():
        data = path / "data" if (path / "data").exists() else path
        with reading(data, "the Minari dataset", fix):
            return minari.MinariDataset(data)
    try:
        with reading(id_or_path, "the Minari dataset", fix):
            return minari.load_dataset(id_or_path, download=False)
    except FileNotFoundError:
        root = os.environ.get("MINARI_DATASETS_PATH", "~/.minari/datasets")
        raise MissingDatasetError(
            f"Minari dataset {id_or_path!r} is not on this machine (looked in {root}). "
            f"Download it with `modebench datasets download {id_or_path}` (needs network), "
            "or train on a dataset built offline: `modebench datasets list` shows the local suites "
            "(toy, maze2d-local, ogbench-local)."
        ) from None


def load_minari(id_or_path: str, keys: Sequence[str] | None = None) -> TransitionDataset:
    """A Minari dataset as transitions; a dict observation cut to `keys` (the task's observation
    layout; every key in the space's order when None)."""
    dataset = resolve_minari(id_or_path)
    where = str(dataset.storage.data_path)
    with reading(where, "the Minari dataset's spaces and episodes"):
        obs_space = dataset.observation_space
        act_space = dataset.action_space
        if not isinstance(act_space, gym.spaces.Box):
            raise DatasetError(f"{where}: the action space is {act_space}; the methods need a continuous (Box) action space")
        episodes = [
            dict(
                id=ep.id,
                observations=_flatten(obs_space, ep.observations, keys, where),
                actions=np.asarray(ep.actions).reshape(len(ep.rewards), -1),  # dtype kept: integer actions are refused
                rewards=ep.rewards,
                terminations=ep.terminations,
                truncations=ep.truncations,
            )
            for ep in dataset.iterate_episodes()
        ]
        meta = dict(dataset.storage.metadata)
    metadata = {
        "source": "minari",
        "minari_id": meta.get("dataset_id", str(id_or_path)),
        "path": where,
        "ref_min_score": meta.get("ref_min_score"),
        "ref_max_score": meta.get("ref_max_score"),
        "observation_keys": layout_keys(obs_space, keys, where),  # None: not a dict observation
    }
    return TransitionDataset.from_episodes(
        episodes, name=str(metadata["minari_id"]), action_low=act_space.low, action_high=act_space.high, metadata=metadata
    )


def recover_env(id_or_path: str, eval_env: bool = True, keys: Sequence[str] | None = None) -> gym.Env:
    """The environment a Minari dataset records, its dict observations cut to `keys` like the data."""
    return observation_view(recorded_env(id_or_path, eval_env), keys)


def max_episode_steps(id_or_path: str) -> int | None:
    env = recorded_env(id_or_path, eval_env=True)
    try:
        return env.spec.max_episode_steps if env.spec is not None else None
    finally:
        env.close()


def recorded_env(id_or_path: str, eval_env: bool) -> gym.Env:
    """minari's recover_environment, or one line when the recorded env cannot be made here (its
    package is not installed, or the id is not registered)."""
    dataset = resolve_minari(id_or_path)
    try:
        return dataset.recover_environment(eval_env=eval_env)
    except (gym.error.Error, ImportError, AttributeError) as err:
        spec = dataset.env_spec
        recorded = spec.id if spec is not None else "(none recorded)"
        raise DatasetError(
            f"{dataset.storage.data_path}: the dataset records the env {recorded}, which cannot be made here "
            f"({one_line(err)}); install the package that registers it, or evaluate in another env with --env GYM_ID"
        ) from None


def load_d4rl_file(path: str, name: str | None = None, action_box: dict[str, Any] | None = None) -> TransitionDataset:
    """A D4RL-style file: .npz or .hdf5 with observations, actions, rewards, terminals, timeouts
    (next_observations optional). Actions are in `action_box` ({env, low, high}: the box of the
    env the data is evaluated in, rescaled to [-1, 1]), by default in [-1, 1] (D4RL's envs)."""
    file = Path(path).expanduser()
    if not file.exists():
        raise MissingDatasetError(
            f"D4RL-style file {path!r} does not exist. Give the path of a downloaded D4RL .hdf5 "
            "(`modebench datasets download` fetches the suite's files when online) or an .npz with the same fields."
        )
    if file.suffix not in (".npz", ".hdf5", ".h5"):
        raise DatasetError(f"{path}: unknown file type {file.suffix!r}; expected .npz, .hdf5 or .h5")
    data = read_arrays(file)
    metadata = {"source": "d4rl-file", "path": str(file)}
    if action_box is None:
        return TransitionDataset.from_flat(data, name=name or file.stem, metadata=metadata)
    return TransitionDataset.from_flat(
        data, name=name or file.stem, metadata=metadata, action_low=np.asarray(action_box["low"], np.float32),
        action_high=np.asarray(action_box["high"], np.float32), box_owner=f"the env {action_box['env']}",
    )


def check_ogbench_file(file: Path) -> None:
    """OGBench's npz as stored, before OGBench's loader casts its dtypes and derives next
    observations from it: fields, dtypes, ranks, NaN at the stored index, 0/1 episode ends."""
    check_arrays(read_arrays(file), OGBENCH_FIELDS, str(file), episode_ends=("terminals",),
                 action_box=(-1.0, 1.0), box_owner="OGBench's envs")
