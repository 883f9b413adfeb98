"""Helpers shared by the test files (pytest puts tests/ on sys.path, so `from helpers import ...`)."""

from __future__ import annotations

import torch

from algorithms.base import Batch


def random_batch(
    n: int = 16, obs_dim: int = 3, act_dim: int = 2, seed: int = 0, action_bound: float = 1.0,
    done_rate: float | None = 0.2,
) -> Batch:
    """A seeded minibatch: standard-normal states and rewards, actions uniform in
    [-action_bound, action_bound]^d, next actions uniform in [-1, 1]^d, and terminal flags
    drawn at `done_rate` (None: no terminals, and no draw for them)."""
    g = torch.Generator().manual_seed(seed)
    observations = torch.randn(n, obs_dim, generator=g)
    actions = torch.rand(n, act_dim, generator=g) * (2 * action_bound) - action_bound
    rewards = torch.randn(n, generator=g)
    next_observations = torch.randn(n, obs_dim, generator=g)
    dones = torch.zeros(n) if done_rate is None else (torch.rand(n, generator=g) < done_rate).float()
    next_actions = torch.rand(n, act_dim, generator=g) * 2 - 1
    return Batch(observations, actions, rewards, next_observations, dones, next_actions)
