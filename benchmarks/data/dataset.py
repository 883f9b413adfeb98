"""The one transition store every method trains from, its validation, normalisation and replay.

Layout (numpy, N transitions): observations [N, o], actions [N, a], rewards [N],
next_observations [N, o], terminals [N] (true environment termination), timeouts [N]
(truncation), next_actions [N, a] (the next DATASET action, for SARSA-style critics; at an
episode's last step it repeats the action, which only matters after a timeout since terminals
are masked by (1 - d)), episode_ids [N].

Actions are stored in [-1, 1]: a dataset whose action box is another box is rescaled on load
and the box is kept (`action_low`, `action_high`) so evaluation maps actions back.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from modebench.algorithms.config import Checked, field
from modebench.benchmarks.data.validate import (
    EPISODE_FIELDS,
    FLAT_FIELDS,
    MIN_TRANSITIONS,
    DatasetError,
    check_action_box,
    check_arrays,
    check_finite,
)

FIELDS = ("observations", "actions", "rewards", "next_observations", "terminals", "timeouts", "next_actions", "episode_ids")
__all__ = ["FIELDS", "DataConfig", "DatasetError", "Normalizer", "TransitionDataset", "array_digest", "content_digest",
           "transform_rewards"]


@dataclass
class TransitionDataset:
    observations: np.ndarray
    actions: np.ndarray
    rewards: np.ndarray
    next_observations: np.ndarray
    terminals: np.ndarray
    timeouts: np.ndarray
    next_actions: np.ndarray
    episode_ids: np.ndarray
    name: str = "unnamed"
    action_low: np.ndarray | None = None  # original action box (None: already [-1, 1])
    action_high: np.ndarray | None = None
    metadata: dict[str, Any] = dataclasses.field(default_factory=dict)

    def __len__(self) -> int:
        return int(self.observations.shape[0])

    @property
    def obs_dim(self) -> int:
        return int(self.observations.shape[1])

    @property
    def act_dim(self) -> int:
        return int(self.actions.shape[1])

    @property
    def num_episodes(self) -> int:
        return len(np.unique(self.episode_ids))

    @property
    def source(self) -> str:
        """Where the data came from, for messages: its file or folder, else its name."""
        return str(self.metadata.get("path") or self.name)

    def episode_returns(self) -> np.ndarray:
        return np.bincount(self.episode_ids - self.episode_ids.min(), weights=self.rewards)[
            np.unique(self.episode_ids - self.episode_ids.min())
        ]

    def validate(self) -> TransitionDataset:
        """Refuse malformed data with the field, the index and what to do about it. The loaders have
        checked the arrays as stored (benchmarks.data.validate); this is the last check of the
        derived layout, and the only one of datasets built in memory (the toy generators)."""
        n = len(self)
        where = self.source
        if self.observations.ndim != 2:
            raise DatasetError(f"{where}: observations must be [N, obs_dim], got shape {self.observations.shape}")
        if self.actions.ndim != 2:
            raise DatasetError(f"{where}: actions must be [N, act_dim], got shape {self.actions.shape}")
        expected = {
            "observations": (n, self.obs_dim),
            "actions": (n, self.act_dim),
            "rewards": (n,),
            "next_observations": (n, self.obs_dim),
            "terminals": (n,),
            "timeouts": (n,),
            "next_actions": (n, self.act_dim),
            "episode_ids": (n,),
        }
        for name, shape in expected.items():
            arr = getattr(self, name)
            if not isinstance(arr, np.ndarray):
                raise DatasetError(f"{where}: field '{name}' must be a numpy array, got {type(arr).__name__}")
            if arr.shape != shape:
                raise DatasetError(f"{where}: field '{name}' has shape {arr.shape}, expected {shape}")
        for name in ("observations", "actions", "rewards", "next_observations", "next_actions"):
            arr = getattr(self, name)
            if not np.issubdtype(arr.dtype, np.floating):
                raise DatasetError(f"{where}: field '{name}' must be floating point, got {arr.dtype}")
            check_finite(arr, name, where)
        for name in ("actions", "next_actions"):  # stored in [-1, 1] (the loaders rescale the data's own box)
            check_action_box(getattr(self, name), name, where, -1.0, 1.0, owner="stored datasets (give the data's own box as action_low/high so it is rescaled)")
        if n < MIN_TRANSITIONS:
            raise DatasetError(f"{where}: the dataset has {n} transition(s); training needs at least {MIN_TRANSITIONS}")
        if np.any(np.diff(self.episode_ids) < 0):
            index = int(np.argwhere(np.diff(self.episode_ids) < 0)[0][0]) + 1
            raise DatasetError(f"{where}: episode_ids decrease at index {index}; transitions must be stored episode by episode")
        ends = np.append(self.episode_ids[1:] != self.episode_ids[:-1], True)
        inner_terminal = self.terminals.astype(bool) & ~ends
        if inner_terminal.any():
            index = int(np.argwhere(inner_terminal)[0][0])
            raise DatasetError(f"{where}: field 'terminals' is set at index {index} in the middle of an episode")
        return self

    @classmethod
    def from_episodes(
        cls,
        episodes: Iterable[Mapping[str, np.ndarray]],
        name: str,
        action_low: np.ndarray | None = None,
        action_high: np.ndarray | None = None,
        metadata: dict[str, Any] | None = None,
    ) -> TransitionDataset:
        """Episodes with observations [T+1, o] (Minari layout), actions [T, a], rewards,
        terminations and truncations [T]; an episode may carry its own `id` (for messages).
        Each is checked as stored (benchmarks.data.validate) against the action box given."""
        where = str((metadata or {}).get("path") or name)
        box = None if action_low is None or action_high is None else (action_low, action_high)
        parts: dict[str, list[np.ndarray]] = {f: [] for f in FIELDS}
        for ep_id, ep in enumerate(episodes):
            label = f"{where}: episode {ep.get('id', ep_id)}"
            steps = check_arrays({k: v for k, v in ep.items() if k != "id"}, EPISODE_FIELDS, label,
                                 action_box=box, box_owner="the dataset's action space",
                                 extra_rows={"observations": 1}, min_rows=1)
            term = np.asarray(ep["terminations"], dtype=bool).reshape(steps)
            trunc = np.asarray(ep["truncations"], dtype=bool).reshape(steps).copy()
            early = np.flatnonzero((term | trunc)[:-1])
            if early.size:
                flag = "terminations" if term[early[0]] else "truncations"
                raise DatasetError(f"{label}: field '{flag}' is set at index {early[0]}, before the episode's last step "
                                   f"{steps - 1}; an episode ends at its first termination or truncation: split it there")
            if not (term[-1] or trunc[-1]):
                trunc[-1] = True  # an episode cut by the recorder counts as a timeout
            obs = np.asarray(ep["observations"], dtype=np.float32)
            acts = np.asarray(ep["actions"], dtype=np.float32)
            parts["observations"].append(obs[:-1])
            parts["next_observations"].append(obs[1:])
            parts["actions"].append(acts)
            parts["next_actions"].append(np.concatenate([acts[1:], acts[-1:]], axis=0))
            parts["rewards"].append(np.asarray(ep["rewards"], dtype=np.float32).reshape(steps))
            parts["terminals"].append(term)
            parts["timeouts"].append(trunc)
            parts["episode_ids"].append(np.full(steps, ep_id, dtype=np.int64))
        if not parts["actions"]:
            raise DatasetError(f"{where}: the dataset holds no episodes; it is empty or its episode files are missing")
        arrays = {f: np.concatenate(v, axis=0) for f, v in parts.items()}
        return cls(**arrays, name=name, metadata=metadata or {}).rescale_actions(action_low, action_high)

    @classmethod
    def from_flat(
        cls,
        data: Mapping[str, np.ndarray],
        name: str,
        action_low: np.ndarray | None = None,
        action_high: np.ndarray | None = None,
        metadata: dict[str, Any] | None = None,
        box_owner: str = "D4RL-style data (pass --env to hold it against that env's box)",
    ) -> TransitionDataset:
        """D4RL-style flat arrays: observations, actions, rewards, terminals, timeouts and
        optionally next_observations, checked as stored (benchmarks.data.validate); actions in
        [action_low, action_high] (default [-1, 1], D4RL's envs), whose owner messages name.
        Without next_observations, the next observation is the following row and each episode's
        last transition is dropped (d4rl.qlearning_dataset)."""
        where = str((metadata or {}).get("path") or name)
        box = (-1.0, 1.0) if action_low is None or action_high is None else (action_low, action_high)
        n = check_arrays(data, FLAT_FIELDS, where, unknown_keys=True, episode_ends=("terminals", "timeouts"),
                         action_box=box, box_owner=box_owner)
        obs = np.asarray(data["observations"], dtype=np.float32)
        acts = np.asarray(data["actions"], dtype=np.float32)
        rewards = np.asarray(data["rewards"], dtype=np.float32).reshape(-1)
        terminals = np.asarray(data["terminals"], dtype=bool).reshape(-1)
        timeouts = np.asarray(data.get("timeouts", np.zeros(n, dtype=bool)), dtype=bool).reshape(-1)
        timeouts = timeouts & ~terminals
        timeouts[-1] = timeouts[-1] or not terminals[-1]
        ends = terminals | timeouts
        episode_ids = np.concatenate([[0], np.cumsum(ends[:-1])]).astype(np.int64)
        same_episode_next = np.append(episode_ids[1:] == episode_ids[:-1], False)
        if "next_observations" in data:
            next_obs = np.asarray(data["next_observations"], dtype=np.float32)
            keep = np.ones(n, dtype=bool)
        else:
            next_obs = np.concatenate([obs[1:], obs[-1:]], axis=0)
            keep = ~timeouts  # the observation after a timeout is not recorded: drop it
            # and the transition before a dropped one becomes its episode's (truncated) last
            timeouts = (np.append(timeouts[1:], False) & same_episode_next) | (timeouts & ~keep)
        next_acts = np.where(same_episode_next[:, None], np.concatenate([acts[1:], acts[-1:]], axis=0), acts)
        arrays = dict(
            observations=obs, actions=acts, rewards=rewards, next_observations=next_obs, terminals=terminals,
            timeouts=timeouts, next_actions=next_acts, episode_ids=episode_ids,
        )
        arrays = {k: v[keep] for k, v in arrays.items()}
        return cls(**arrays, name=name, metadata=metadata or {}).rescale_actions(action_low, action_high)

    def rescale_actions(self, low: np.ndarray | None, high: np.ndarray | None) -> TransitionDataset:
        """Map actions from the box [low, high] to [-1, 1] (no-op for the unit box or None)."""
        if low is None or high is None:
            return self
        low = np.asarray(low, dtype=np.float32).reshape(-1)
        high = np.asarray(high, dtype=np.float32).reshape(-1)
        if not (np.all(np.isfinite(low)) and np.all(np.isfinite(high))):
            raise DatasetError(f"{self.name}: the action box must be finite, got low={low}, high={high}")
        if np.allclose(low, -1.0) and np.allclose(high, 1.0):
            return self
        scale = (high - low) / 2.0
        center = (high + low) / 2.0
        self.actions = ((self.actions - center) / scale).astype(np.float32)
        self.next_actions = ((self.next_actions - center) / scale).astype(np.float32)
        self.action_low, self.action_high = low, high
        return self


@dataclass
class DataConfig(Checked):
    """Data preprocessing, recorded in every run's config."""

    normalize_obs: bool = field(True, help="standardise observations with the dataset's mean/std")
    reward_transform: Literal["none", "locomotion", "antmaze", "affine"] = field(
        "none", help="locomotion: r * 1000 / (max_return - min_return) (IQL); antmaze: r - 1 (IQL); "
                     "affine: r * reward_scale + reward_shift")
    reward_scale: float = field(1.0, help="the affine transform's factor")
    reward_shift: float = field(0.0, help="the affine transform's offset")
    clip_actions: float = field(1.0, gt=0.0, le=1.0, help="clip dataset actions to +-clip (FQL, DROL: 1 - 1e-5)")
    observation_layout: str = field(
        "", help="the task's named observation layout: which keys of a dict observation the policy sees "
                 "(suite file `observation:`; '' for a task that declares none: its observation as given)")


@dataclass
class Normalizer:
    """Observation standardisation, saved in every checkpoint so evaluation applies the same map."""

    mean: np.ndarray
    std: np.ndarray

    @classmethod
    def fit(cls, observations: np.ndarray, enabled: bool = True) -> Normalizer:
        dim = observations.shape[1]
        if not enabled:
            return cls(np.zeros(dim, np.float32), np.ones(dim, np.float32))
        std = observations.std(0)
        std = np.where(std < 1e-6, 1.0, std)  # a constant feature stays as it is
        return cls(observations.mean(0).astype(np.float32), std.astype(np.float32) + 1e-3 * (std >= 1e-6))

    def __call__(self, obs: np.ndarray) -> np.ndarray:
        return ((obs - self.mean) / self.std).astype(np.float32)

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {"mean": torch.as_tensor(self.mean), "std": torch.as_tensor(self.std)}

    @classmethod
    def from_state_dict(cls, state: Mapping[str, torch.Tensor]) -> Normalizer:
        return cls(state["mean"].numpy(), state["std"].numpy())


def transform_rewards(dataset: TransitionDataset, cfg: DataConfig) -> np.ndarray:
    r = dataset.rewards
    if cfg.reward_transform == "none":
        return r
    if cfg.reward_transform == "locomotion":
        returns = dataset.episode_returns()
        spread = float(returns.max() - returns.min())
        if spread <= 0:
            raise DatasetError(f"{dataset.name}: all episode returns are equal; the locomotion reward scale is undefined")
        return (r * 1000.0 / spread).astype(np.float32)
    if cfg.reward_transform == "antmaze":
        return (r - 1.0).astype(np.float32)
    return (r * cfg.reward_scale + cfg.reward_shift).astype(np.float32)


# ---------------------------------------------------------------------- content digests
# A run's identity holds its data's content (benchmarks/run/spec.py): a file given with --dataset,
# a Minari folder, locally generated data. Hashing a multi-GB file on every `train` would cost
# seconds, so a file's digest is kept in a small per-user cache under its (path, size, mtime):
# any write to the file changes its mtime (or size) and the file is hashed again.
DIGEST_CACHE_ENV = "MODEBENCH_DIGEST_CACHE"


def digest_cache_path() -> Path:
    """$MODEBENCH_DIGEST_CACHE, else $XDG_CACHE_HOME/modebench/digests.json (~/.cache by default)."""
    if os.environ.get(DIGEST_CACHE_ENV):
        return Path(os.environ[DIGEST_CACHE_ENV])
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "modebench" / "digests.json"


def _read_digest_cache(path: Path) -> dict[str, str]:
    try:
        cache = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return cache if isinstance(cache, dict) else {}


def _file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def content_digest(path: str | Path) -> str:
    """sha256 of a file's bytes, or of a folder's files (their relative paths and bytes, in path
    order), each file's digest cached under (path, size, mtime). A missing path: DatasetError."""
    root = Path(path).expanduser().resolve()
    if not root.exists():
        raise DatasetError(f"{path}: no such file or folder; give the dataset's path")
    files = sorted(p for p in root.rglob("*") if p.is_file()) if root.is_dir() else [root]
    cache_path = digest_cache_path()
    cache = _read_digest_cache(cache_path)
    total = hashlib.sha256()
    changed = False
    for file in files:
        stat = file.stat()
        key = f"{file}|{stat.st_size}|{stat.st_mtime_ns}"
        if key not in cache:
            cache[key] = _file_sha256(file)
            changed = True
        total.update(f"{file.relative_to(root) if root.is_dir() else file.name}\0{cache[key]}\n".encode())
    if changed:
        try:
            from modebench.benchmarks.store import atomic_write_json

            atomic_write_json(cache_path, cache)
        except OSError:
            pass  # an unwritable cache only costs the hashing next time
    return total.hexdigest()


def array_digest(dataset: TransitionDataset) -> str:
    """sha256 of a dataset's arrays (data built in memory, e.g. the toy generators)."""
    digest = hashlib.sha256()
    for name in FIELDS:
        array = np.ascontiguousarray(getattr(dataset, name))
        digest.update(f"{name}{array.dtype.str}{array.shape}".encode())
        digest.update(array.tobytes())
    return digest.hexdigest()
