"""IQL (algorithms/iql.py): every loss term by hand with the target critic made different from
the online one, the weight clip, the actor's cosine learning rate, the Polyak target, and the
mean action at evaluation."""

from __future__ import annotations

import math

import pytest
import torch
from helpers import online_and_target_q, perturb_target, random_batch
from modebench.algorithms.base import EnvSpec
from modebench.algorithms.iql import IQL, IQLConfig

SMALL = {"hidden_dims": (16, 16)}


def make(seed: int = 0, total_steps: int = 1000, **over) -> IQL:
    torch.manual_seed(seed)
    algo = IQL(IQLConfig(**{**SMALL, **over}), EnvSpec(3, 2, horizon=10, total_steps=total_steps))
    perturb_target(algo.critic)
    return algo


def by_hand(algo: IQL, batch, discount: float):
    """(value loss, Q loss, actor loss) of IQL's docstring, from the networks' raw outputs."""
    cfg = algo.config
    obs, act = batch.observations, batch.actions
    online, target = online_and_target_q(algo.critic, obs, act)
    with torch.no_grad():
        q_tgt_min = target.min(0).values
        v = algo.critic.v(obs).squeeze(-1)
        u = q_tgt_min - v
        assert (u > 0).any() and (u < 0).any(), "both branches of the expectile must be exercised"
        value_loss = (torch.where(u < 0, 1 - cfg.expectile, cfg.expectile) * u**2).mean()
        y = batch.rewards + discount * (1 - batch.dones) * algo.critic.v(batch.next_observations).squeeze(-1)
        q_loss = sum(((online[j] - y) ** 2).mean() for j in range(online.shape[0]))
        weight = torch.exp(cfg.beta * u).clamp(max=cfg.max_weight)
        actor_loss = -(weight * algo.actor(obs).log_prob(act).sum(-1)).mean()
    return value_loss, q_loss, actor_loss, weight


def test_losses_by_hand_read_the_target_q_for_v_and_v_for_the_q_target():
    """L_V on min_j Qtgt_j (not the online Q, not the mean), L_Q on r + gamma (1 - d) V(s'),
    L_pi = -E[min(exp(beta A), w_max) log pi(a|s)]; beta and the clip chosen so both matter."""
    algo = make(expectile=0.8, beta=2.5, max_weight=3.0, discount=0.9)
    batch = random_batch(64, done_rate=0.3)
    value_loss, q_loss, actor_loss, weight = by_hand(algo, batch, 0.9)
    assert (weight == 3.0).any() and (weight < 3.0).any(), "the clip must bind on some samples only"
    loss, metrics = algo.losses(batch, 0)
    assert float(metrics["training/value_loss"]) == pytest.approx(float(value_loss), rel=1e-5)
    assert float(metrics["training/q_loss"]) == pytest.approx(float(q_loss), rel=1e-5)
    assert float(metrics["training/actor_loss"]) == pytest.approx(float(actor_loss), rel=1e-5)
    assert float(metrics["training/adv_weight_mean"]) == pytest.approx(float(weight.mean()), rel=1e-5)
    assert float(loss.detach()) == pytest.approx(float(value_loss + q_loss + actor_loss), rel=1e-5)


def test_actor_loss_sends_no_gradient_to_the_critic():
    """The weight is a constant for the actor: the summed loss gives the critic exactly the
    gradient of its own losses."""
    algo = make()
    batch = random_batch(32, done_rate=0.3)
    trained = [p for p in algo.critic.parameters() if p.requires_grad]  # Q and V (the target is frozen)
    loss, _ = algo.losses(batch, 0)
    full = torch.autograd.grad(loss, trained)
    critic_only, _ = algo.critic.losses(batch, algo.config.discount)
    for a, b in zip(full, torch.autograd.grad(critic_only, trained)):
        torch.testing.assert_close(a, b)


def test_actor_learning_rate_is_cosine_decayed_and_the_critics_is_not():
    lr, total = 1e-3, 8
    algo = make(lr=lr, total_steps=total)
    batch = random_batch(16)
    for step in range(total + 2):
        critic_lr, actor_lr = (g["lr"] for g in algo.optimizer.param_groups)
        expected = lr * 0.5 * (1 + math.cos(math.pi * min(step, total) / total))
        assert actor_lr == pytest.approx(expected, abs=1e-12), step
        assert critic_lr == pytest.approx(lr), step
        algo.update(batch, step)
    flat = make(lr=lr, total_steps=total, actor_cosine_lr=False)
    for step in range(3):
        flat.update(batch, step)
    assert [g["lr"] for g in flat.optimizer.param_groups] == pytest.approx([lr, lr])


def test_target_critic_follows_the_online_one_by_polyak_after_each_update():
    algo = make(target_tau=0.25)
    before = [p.detach().clone() for p in algo.critic.q_target.parameters()]
    algo.update(random_batch(16), 0)
    for old, tgt, online in zip(before, algo.critic.q_target.parameters(), algo.critic.q.parameters()):
        torch.testing.assert_close(tgt, 0.75 * old + 0.25 * online)


def test_act_is_the_clipped_mean_of_the_actor_never_a_sample():
    algo = make()
    with torch.no_grad():
        algo.actor.log_std.fill_(1.5)  # std 4.5: any sample would be far from the mean
    obs = torch.randn(64, 3)
    first = algo.act(obs, torch.zeros(64, dtype=torch.long), None).actions
    second = algo.act(obs, torch.zeros(64, dtype=torch.long), None).actions
    torch.testing.assert_close(first, torch.tanh(algo.actor.net(obs)).clamp(-1, 1).detach())
    assert torch.equal(first, second)
    proposals = algo.propose(obs, 5)
    assert proposals.shape == (64, 5, 2) and not torch.allclose(proposals[:, 0], first, atol=0.1)
