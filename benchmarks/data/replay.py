"""Replay: the whole dataset as one table of tensors on the training device."""

from __future__ import annotations

import numpy as np
import torch
from modebench.algorithms.base import Batch
from modebench.benchmarks.data.dataset import (
    DataConfig,
    Normalizer,
    TransitionDataset,
    transform_rewards,
)


class DeviceReplay:
    """The whole dataset as tensors on the training device; uniform minibatches by index.

    The six fields live side by side in one [N, 2 d_s + 2 d_a + 2] table, so a minibatch is one
    row gather (the fields are column views of it) instead of six."""

    FIELDS = ("observations", "actions", "rewards", "next_observations", "dones", "next_actions")
    SCALAR_FIELDS = ("rewards", "dones")

    def __init__(self, dataset: TransitionDataset, cfg: DataConfig, normalizer: Normalizer, device: torch.device, seed: int):
        clip = cfg.clip_actions
        columns = {
            "observations": normalizer(dataset.observations),
            "actions": np.clip(dataset.actions, -clip, clip),
            "rewards": transform_rewards(dataset, cfg)[:, None],
            "next_observations": normalizer(dataset.next_observations),
            "dones": dataset.terminals.astype(np.float32)[:, None],
            "next_actions": np.clip(dataset.next_actions, -clip, clip),
        }
        self._widths = [columns[name].shape[1] for name in self.FIELDS]
        table = np.concatenate([np.asarray(columns[name], dtype=np.float32) for name in self.FIELDS], axis=1)
        self.table = torch.as_tensor(table, device=device)
        self.size = len(dataset)
        self.device = device
        self.generator = torch.Generator(device=device)
        self.generator.manual_seed(seed)

    def _split(self, rows: torch.Tensor) -> dict[str, torch.Tensor]:
        """The fields of table rows [..., W] as column views; rewards and dones as [...]."""
        parts = dict(zip(self.FIELDS, torch.split(rows, self._widths, dim=-1)))
        for name in self.SCALAR_FIELDS:
            parts[name] = parts[name].squeeze(-1)
        return parts

    def indices(self, batch_size: int) -> torch.Tensor:
        """`batch_size` uniform row indices from this replay's own generator."""
        return torch.randint(0, self.size, (batch_size,), generator=self.generator, device=self.device)

    def sample(self, batch_size: int) -> Batch:
        return self.batch(self.indices(batch_size))

    def batch(self, idx: torch.Tensor) -> Batch:
        return Batch(**self._split(self.table.index_select(0, idx)))


class SeedReplays:
    """The minibatches of S seeds trained as one model (algorithms/seeds.py): one table, each
    seed's indices from its own generator (the one `DeviceReplay(..., seed)` has alone), one
    gather for all; fields [S, B, ...]."""

    def __init__(self, replays: list[DeviceReplay]):
        self.replays = replays
        self.first = replays[0]

    def sample(self, batch_size: int) -> Batch:
        idx = torch.stack([replay.indices(batch_size) for replay in self.replays])
        rows = self.first.table.index_select(0, idx.reshape(-1)).reshape(len(self.replays), batch_size, -1)
        return Batch(**self.first._split(rows))
