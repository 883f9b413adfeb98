"""Probes of one trained checkpoint for quantities that are not an evaluation score: the
behaviour policy's own return, how a method's sampled actions spread over the data's modes,
and the critic ensemble's disagreement at the actions a selection rule picks.

A probe loads the checkpoint the way `modebench eval` does (`rebuild`), draws its states from
the task's dataset with the seed it is given (its own generator and a forked torch RNG: nothing
else's random stream moves), and returns plain floats.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import torch
from modebench.algorithms.config import from_dict, to_dict
from modebench.benchmarks.run.checkpoints import load_checkpoint
from modebench.benchmarks.run.train import rebuild


class Probe:
    def __init__(self, checkpoint: str | Path, seed: int = 0, device: str = "cpu"):
        self.algorithm, self.task, self.normalizer, self.method = rebuild(load_checkpoint(checkpoint), device)
        self.dataset = self.task.load_dataset()
        self.seed = seed

    def knobs(self, **overrides: Any):
        """The run's knobs with these overrides, as the method's knob dataclass."""
        return from_dict(self.algorithm.knobs_class, {**to_dict(self.method.knobs), **overrides}, what="probe knob")

    def batch(self, n: int) -> tuple[torch.Tensor, torch.Tensor]:
        """n dataset rows drawn with the probe's seed: (observations normalised and actions mapped
        into the [-1, 1] box, as the method sees them)."""
        rows = np.random.default_rng(self.seed).integers(0, len(self.dataset), n)
        actions = self.dataset.actions[rows]
        if self.dataset.action_low is not None:
            low, high = self.dataset.action_low, self.dataset.action_high
            actions = 2.0 * (actions - low) / (high - low) - 1.0
        device = self.algorithm.device
        obs = torch.as_tensor(self.normalizer(self.dataset.observations[rows]), dtype=torch.float32, device=device)
        return obs, torch.as_tensor(actions, dtype=torch.float32, device=device)

    @contextmanager
    def _seeded(self) -> Iterator[None]:
        devices = [self.algorithm.device] if self.algorithm.device.type == "cuda" else []
        with torch.random.fork_rng(devices=devices), torch.no_grad():
            torch.manual_seed(self.seed)
            yield

    def act(self, obs: torch.Tensor, **knobs: Any) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """The method's `act` at episode step 0 under the probe's seed: (actions, audits)."""
        with self._seeded():
            t = torch.zeros(obs.shape[0], dtype=torch.long, device=obs.device)
            out = self.algorithm.act(obs, t, self.knobs(**knobs))
        return out.actions, out.audits

    def propose(self, obs: torch.Tensor, n: int) -> torch.Tensor:
        """n of the method's own action samples per state, [B, n, d], under the probe's seed."""
        with self._seeded():
            return self.algorithm.propose(obs, n)

    def behavior_score(self) -> float:
        """The behaviour policy's normalised score: the mean over the dataset's episodes."""
        return float(np.mean(self.task.normalize(self.dataset.episode_returns(), dataset=self.dataset)))


def mode_shares(actions: torch.Tensor, centers: np.ndarray, radius: float) -> np.ndarray:
    """Per mode centre, the share of actions [..., d] within `radius` of it."""
    flat = actions.reshape(-1, actions.shape[-1]).detach().cpu().numpy()
    dist = np.linalg.norm(flat[:, None, :] - np.asarray(centers)[None], axis=-1)
    return (dist < radius).mean(0)


def coverage(candidate_sets: torch.Tensor, centers: np.ndarray, radius: float) -> float:
    """Share of candidate sets [S, K, d] with at least one candidate within `radius` of every centre."""
    sets = candidate_sets.detach().cpu().numpy()
    dist = np.linalg.norm(sets[:, :, None, :] - np.asarray(centers)[None, None], axis=-1)  # [S, K, M]
    return float((dist < radius).any(1).all(-1).mean())


def coverage_bound(shares: np.ndarray, k: int) -> float:
    """DROL Prop. 4.4: P(every mode has one of K iid candidates) >= 1 - sum_m (1 - p_m)^K
    (vacuous below 0)."""
    return float(1.0 - np.sum((1.0 - np.asarray(shares)) ** k))
