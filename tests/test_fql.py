"""FQL: flow BC and distillation losses by hand, the 10-step Euler teacher, the Q term that
never trains the critic, the actor's own TD target, and the plugin contract."""

from __future__ import annotations

import io
from functools import partial

import helpers
import pytest
import torch
from modebench.algorithms.base import EnvSpec
from modebench.algorithms.config import ConfigError, from_dict
from modebench.algorithms.critics import aggregate
from modebench.algorithms.fql import FQL, FQLConfig, policy_q_loss
from modebench.algorithms.registry import get_method

SMALL = {"hidden_dims": (32, 32)}


@pytest.fixture(autouse=True)
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def make(act_dim: int = 2, obs_dim: int = 3, seed: int = 0, **over) -> FQL:
    torch.manual_seed(seed)
    return FQL(FQLConfig(**{**SMALL, **over}), EnvSpec(obs_dim, act_dim, horizon=10, total_steps=100))


random_batch = partial(helpers.random_batch, action_bound=0.8, done_rate=0.1)  # in-box actions, few terminals


def set_constant_output(mlp: torch.nn.Sequential, value: torch.Tensor) -> None:
    """Make an MLP output `value` everywhere (zero last-layer weights, bias = value)."""
    with torch.no_grad():
        mlp[-1].weight.zero_()
        mlp[-1].bias.copy_(value)


def test_flow_bc_loss_by_hand():
    """v == c: L_flow = mean over batch and dims of (c - (a - x0))^2, whatever t is."""
    algo = make(act_dim=2)
    c = torch.tensor([0.5, -0.25])
    set_constant_output(algo.flow.net, c)
    obs = torch.zeros(2, 3)
    actions = torch.tensor([[0.2, -0.4], [1.0, 0.0]])
    x0 = torch.tensor([[0.0, 1.0], [-1.0, 0.5]])
    t = torch.tensor([[0.3], [0.9]])
    # a - x0 = [[0.2, -1.4], [2.0, -0.5]]; c - (a - x0) = [[0.3, 1.15], [-1.5, 0.25]]
    expected = (0.3**2 + 1.15**2 + 1.5**2 + 0.25**2) / 4
    assert float(algo.flow_bc_loss(obs, actions, x0, t).detach()) == pytest.approx(expected, rel=1e-6)


def test_flow_bc_loss_uses_the_linear_path():
    """A general net: the loss evaluates v at x_t = (1 - t) x0 + t a and regresses on a - x0."""
    algo = make(act_dim=3)
    batch = random_batch(8, 3, 3)
    g = torch.Generator().manual_seed(1)
    x0, t = torch.randn(8, 3, generator=g), torch.rand(8, 1, generator=g)
    x_t = (1 - t) * x0 + t * batch.actions
    v = algo.flow.net(torch.cat([batch.observations, x_t, t], -1))
    expected = ((v - (batch.actions - x0)) ** 2).mean()
    assert torch.allclose(algo.flow_bc_loss(batch.observations, batch.actions, x0, t), expected, atol=1e-7)


def test_euler_teacher_calls_the_net_flow_steps_times_on_the_time_grid():
    algo = make(act_dim=2)
    times = []
    algo.flow.register_forward_hook(lambda m, inp, out: times.append(inp[1].flatten()[0].item()))
    obs, z = torch.randn(4, 3), torch.randn(4, 2)
    out = algo.flow_actions(obs, z)
    assert len(times) == 10
    assert times == pytest.approx([i / 10 for i in range(10)])
    # The same 10 Euler steps written out.
    x = z.clone()
    for i in range(10):
        x = x + 0.1 * algo.flow(x, torch.full((4,), i / 10), obs)
    assert torch.allclose(out, x.clamp(-1, 1), atol=1e-6)
    algo3 = make(act_dim=2, flow_steps=3)  # the step count follows the config
    calls = []
    algo3.flow.register_forward_hook(lambda m, i, o: calls.append(0))
    algo3.flow_actions(obs, z)
    assert len(calls) == 3


def test_distillation_loss_by_hand():
    """v == c, mu == b: the 10-step teacher lands at clip(z + c); L = mean (b - clip(z + c))^2."""
    algo = make(act_dim=2)
    c, b = torch.tensor([0.5, -0.25]), torch.tensor([0.1, 0.2])
    set_constant_output(algo.flow.net, c)
    set_constant_output(algo.onestep, b)
    obs = torch.zeros(2, 3)
    z = torch.tensor([[0.0, 0.0], [0.8, -1.0]])
    # z + c = [[0.5, -0.25], [1.3, -1.25]] -> clipped [[0.5, -0.25], [1.0, -1.0]]
    expected = ((0.1 - 0.5) ** 2 + (0.2 + 0.25) ** 2 + (0.1 - 1.0) ** 2 + (0.2 + 1.0) ** 2) / 4
    loss, actions = algo.distill_loss(obs, z)
    assert float(loss.detach()) == pytest.approx(expected, rel=1e-6)
    assert torch.allclose(actions, b.expand(2, -1))
    loss.backward()
    assert all(p.grad is None for p in algo.flow.parameters())  # the teacher's endpoint is a fixed target
    # ... and the one-step policy is pulled toward it: d L / d b_j = 2 / (B d) sum_rows (b_j - target_j)
    torch.testing.assert_close(algo.onestep[-1].bias.grad, torch.tensor([(0.1 - 0.5 + 0.1 - 1.0) / 2, (0.2 + 0.25 + 0.2 + 1.0) / 2]))


@pytest.mark.parametrize("normalize", [False, True])
def test_actor_loss_is_flow_plus_alpha_distill_minus_q(normalize):
    algo = make(act_dim=2, alpha=3.0, normalize_q_loss=normalize)
    batch = random_batch(16, 3, 2)
    g = torch.Generator().manual_seed(2)
    x0, t, z = torch.randn(16, 2, generator=g), torch.rand(16, 1, generator=g), torch.randn(16, 2, generator=g)
    loss, metrics = algo.actor_loss(batch.observations, batch.actions, x0, t, z)
    flow = algo.flow_bc_loss(batch.observations, batch.actions, x0, t)
    distill, mu = algo.distill_loss(batch.observations, z)
    q = algo.critic.q(batch.observations, mu.clamp(-1, 1)).mean(0)  # FQL's actor: ensemble mean
    q_term = -q.mean() / (q.detach().abs().mean() if normalize else 1.0)
    assert torch.allclose(loss, flow + 3.0 * distill + q_term, atol=1e-6)
    assert float(metrics["training/distill_loss"]) == pytest.approx(float(distill.detach()), rel=1e-6)


def test_q_term_reads_the_online_critic_at_the_clipped_one_step_action():
    """The one-step policy's raw output leaves the box here: the distillation sees it raw, the Q
    term (ensemble mean of the online critic, target made different) sees it clipped."""
    algo = make(act_dim=2, alpha=2.0)
    helpers.perturb_target(algo.critic)
    with torch.no_grad():
        algo.onestep[-1].weight.mul_(30.0)
    batch = random_batch(32, 3, 2)
    g = torch.Generator().manual_seed(2)
    x0, t, z = torch.randn(32, 2, generator=g), torch.rand(32, 1, generator=g), torch.randn(32, 2, generator=g)
    _, metrics = algo.actor_loss(batch.observations, batch.actions, x0, t, z)
    with torch.no_grad():
        raw = algo.onestep(torch.cat([batch.observations, z], -1))
        q = algo.critic.q(batch.observations, raw.clamp(-1, 1)).mean(0)
        unclipped = algo.critic.q(batch.observations, raw).mean(0)
    assert raw.abs().max() > 1.5, "the clip must matter"
    helpers.online_and_target_q(algo.critic, batch.observations, raw.clamp(-1, 1))
    assert float(metrics["training/q_pi"]) == pytest.approx(float(q.mean()), rel=1e-5)
    assert float(metrics["training/actor_q_loss"]) == pytest.approx(float(-q.mean()), rel=1e-5)
    assert float(unclipped.mean()) != pytest.approx(float(q.mean()), rel=1e-3)


def test_act_is_the_clipped_one_step_policy_at_one_noise():
    algo = make(act_dim=2)
    with torch.no_grad():
        algo.onestep[-1].weight.mul_(30.0)
    obs = torch.randn(16, 3)
    torch.manual_seed(6)
    z = torch.randn(16, 2)
    raw = algo.onestep(torch.cat([obs, z], -1)).detach()
    assert raw.abs().max() > 1.5
    torch.manual_seed(6)
    torch.testing.assert_close(algo.act(obs, None, None).actions, raw.clamp(-1, 1))


def test_q_term_moves_the_action_not_the_critic():
    algo = make(act_dim=2)
    obs = torch.randn(8, 3)
    actions = torch.zeros(8, 2, requires_grad=True)
    loss, q = policy_q_loss(algo.critic, obs, actions, "min", normalize=True)
    loss.backward()
    assert actions.grad is not None and float(actions.grad.abs().sum()) > 0
    assert all(p.grad is None for p in algo.critic.parameters())
    expected_q = aggregate(algo.critic.q(obs, actions), "min")
    assert torch.allclose(q, expected_q)
    assert float(loss.detach()) == pytest.approx(float((-expected_q.mean() / expected_q.abs().mean()).detach()), rel=1e-5)


def test_critic_targets_use_the_one_step_policy():
    algo = make(act_dim=2, q_agg="min")
    helpers.perturb_target(algo.critic)
    batch = random_batch(16, 3, 2)
    torch.manual_seed(5)
    torch.randn(16, 2), torch.rand(16, 1), torch.randn(16, 2)  # the actor loss's draws (x0, t, z)
    z_next = torch.randn(16, 2)
    with torch.no_grad():
        a_next = algo.onestep(torch.cat([batch.next_observations, z_next], -1)).clamp(-1, 1)
        target = batch.rewards + 0.99 * (1 - batch.dones) * aggregate(algo.critic.q_target(batch.next_observations, a_next), "min")
        expected = (algo.critic.q(batch.observations, batch.actions) - target).pow(2).mean(1).sum()
    torch.manual_seed(5)
    metrics = algo.update(batch, 0)
    assert float(metrics["training/q_loss"]) == pytest.approx(float(expected), rel=1e-5)


def test_act_is_one_noise_and_one_forward():
    algo = make(act_dim=2)
    calls = []
    algo.onestep.register_forward_hook(lambda m, inp, out: calls.append(tuple(inp[0].shape)))
    algo.flow.register_forward_hook(lambda m, inp, out: calls.append("flow"))
    out = algo.act(torch.randn(7, 3), torch.zeros(7, dtype=torch.long), None)
    assert calls == [(7, 5)] and out.actions.shape == (7, 2) and float(out.actions.abs().max()) <= 1
    assert algo.propose(torch.randn(7, 3), 4).shape == (7, 4, 2)


def test_config_validation_and_registry():
    for bad in ({"alpha": -1.0}, {"flow_steps": 0}, {"q_agg": "max"}, {"num_q": 0}):
        with pytest.raises(ConfigError, match=next(iter(bad))):
            from_dict(FQLConfig, bad)
    assert get_method("fql").load() is FQL
    defaults = FQLConfig()
    assert defaults.hidden_dims == (512, 512, 512, 512) and defaults.alpha == 10.0 and defaults.flow_steps == 10
    assert defaults.batch_size == 256 and defaults.lr == 3e-4 and defaults.q_agg == "mean"


def test_update_metrics_checkpoint_and_determinism():
    algo = make(act_dim=2)
    batch = random_batch(32, 3, 2)
    metrics = algo.update(batch, 0)
    for name, value in metrics.items():
        assert name.startswith("training/") and value.dim() == 0 and not value.requires_grad
    buffer = io.BytesIO()
    torch.save(algo.state_dict(), buffer)
    buffer.seek(0)
    clone = make(act_dim=2, seed=1)
    clone.load_state_dict(torch.load(buffer, weights_only=True))
    torch.manual_seed(3)
    a = algo.act(batch.observations, None, None).actions
    torch.manual_seed(3)
    assert torch.equal(a, clone.act(batch.observations, None, None).actions)
    runs = []
    for _ in range(2):
        fresh = make(act_dim=2)
        torch.manual_seed(11)
        runs.append([float(fresh.update(batch, s)["training/actor_loss"]) for s in range(3)])
    assert runs[0] == runs[1]
