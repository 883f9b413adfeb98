"""BC (algorithms/bc.py): the negative log-likelihood by hand, training lowers it, and the
evaluated action is the clipped mean."""

from __future__ import annotations

import pytest
import torch
from helpers import random_batch
from modebench.algorithms.base import EnvSpec
from modebench.algorithms.bc import BC, BCConfig


def make(seed: int = 0) -> BC:
    torch.manual_seed(seed)
    return BC(BCConfig(hidden_dims=(16, 16), lr=1e-2), EnvSpec(3, 2))


def test_loss_is_the_gaussian_negative_log_likelihood_and_training_lowers_it():
    algo = make()
    batch = random_batch(32)
    with torch.no_grad():
        expected = -algo.actor(batch.observations).log_prob(batch.actions).sum(-1).mean()
    loss, metrics = algo.losses(batch, 0)
    assert float(loss.detach()) == pytest.approx(float(expected), rel=1e-6)
    assert float(metrics["training/actor_loss"]) == pytest.approx(float(expected), rel=1e-6)
    for step in range(30):
        algo.update(batch, step)
    assert float(algo.losses(batch, 30)[0].detach()) < float(expected) - 0.1


def test_act_is_the_clipped_mean_never_a_sample():
    algo = make()
    with torch.no_grad():
        algo.actor.log_std.fill_(1.5)
    obs = torch.randn(32, 3)
    out = algo.act(obs, torch.zeros(32, dtype=torch.long), None).actions
    torch.testing.assert_close(out, torch.tanh(algo.actor.net(obs)).detach())
    assert torch.equal(out, algo.act(obs, torch.zeros(32, dtype=torch.long), None).actions)
