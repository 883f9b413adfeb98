"""The shared core's equations against hand-computed values."""

import copy
import math

import pytest
import torch
from helpers import random_batch
from modebench.algorithms.critics import (
    ExpectileCritic,
    TDCritic,
    awr_weight,
    expectile_loss,
    polyak_update,
)
from modebench.algorithms.gem import per_candidate
from modebench.algorithms.nets import (
    DiagonalGMM,
    EnsembleCritic,
    GMMPolicy,
    euler_integrate,
    sample_ball,
)
from modebench.algorithms.optim import FusedAdam


def test_expectile_loss_by_hand():
    diff = torch.tensor([2.0, -1.0, 0.0, -3.0])
    # |tau - 1(u<0)| u^2 with tau = 0.7: 0.7*4, 0.3*1, 0, 0.3*9
    expected = torch.tensor([2.8, 0.3, 0.0, 2.7])
    assert torch.allclose(expectile_loss(diff, 0.7), expected)
    # tau = 0.5 is half the squared error
    assert torch.allclose(expectile_loss(diff, 0.5), 0.5 * diff**2)


def test_awr_weight_by_hand_and_clip():
    adv = torch.tensor([0.0, 0.5, -1.0, 10.0], requires_grad=True)
    w = awr_weight(adv, beta=3.0, max_weight=100.0)
    expected = torch.tensor([1.0, math.exp(1.5), math.exp(-3.0), 100.0])
    assert torch.allclose(w, expected)
    assert not w.requires_grad  # the advantage is detached


def test_gmm_log_prob_matches_mixture_same_family():
    torch.manual_seed(0)
    b, k, d = 5, 3, 2
    logits = torch.randn(b, k)
    means = torch.randn(b, k, d)
    log_stds = torch.randn(b, k, d) * 0.3
    gmm = DiagonalGMM(torch.log_softmax(logits, -1), means, log_stds)
    reference = torch.distributions.MixtureSameFamily(
        torch.distributions.Categorical(logits=logits),
        torch.distributions.Independent(torch.distributions.Normal(means, log_stds.exp()), 1),
    )
    actions = torch.randn(b, d)
    assert torch.allclose(gmm.log_prob(actions), reference.log_prob(actions), atol=1e-5)
    # batch of candidates per state: [B, N, d] against the state's mixture (GEM's support term)
    cands = torch.randn(b, 4, d)
    assert torch.allclose(per_candidate(gmm).log_prob(cands), reference.log_prob(cands.transpose(0, 1)).transpose(0, 1), atol=1e-5)


def test_gmm_sampling_follows_weights():
    gmm = DiagonalGMM(
        torch.log(torch.tensor([[0.8, 0.2]])),
        torch.tensor([[[-5.0], [5.0]]]),
        torch.full((1, 2, 1), -3.0),
    )
    gen = torch.Generator().manual_seed(0)
    samples = gmm.sample(4000, generator=gen)
    frac_right = (samples > 0).float().mean().item()
    assert abs(frac_right - 0.2) < 4 * math.sqrt(0.2 * 0.8 / 4000)


def test_gmm_policy_state_independent_std_is_clamped():
    policy = GMMPolicy(3, 2, 4, (16,), log_std_min=-2.0, log_std_max=1.0)
    with torch.no_grad():
        policy.log_std.fill_(5.0)
    dist = policy(torch.randn(7, 3))
    assert dist.means.shape == (7, 4, 2) and dist.log_weights.shape == (7, 4)
    assert torch.all(dist.log_stds == 1.0)
    assert torch.allclose(dist.log_weights.exp().sum(-1), torch.ones(7))


def test_ensemble_critic_shapes_and_heads_differ():
    torch.manual_seed(0)
    critic = EnsembleCritic(5, 2, (32, 32), num_members=4)
    obs, act = torch.randn(10, 5), torch.randn(10, 2)
    q = critic(obs, act)
    assert q.shape == (4, 10)
    assert not torch.allclose(q[0], q[1])
    # leading batch dims are kept: candidates [B, N, d]
    q2 = critic(obs.unsqueeze(1).expand(10, 3, 5), act.unsqueeze(1).expand(10, 3, 2))
    assert q2.shape == (4, 10, 3)
    assert torch.allclose(q2[:, :, 0], q, atol=1e-6)


def test_ensemble_member_equals_its_own_mlp():
    """One batched forward computes exactly what each head would compute alone."""
    torch.manual_seed(1)
    critic = EnsembleCritic(3, 1, (8,), num_members=2)
    x = torch.randn(6, 4)
    out = critic(x[:, :3], x[:, 3:])
    w0, b0 = critic.net.layers[0].weight[1], critic.net.layers[0].bias[1]
    w1, b1 = critic.net.layers[2].weight[1], critic.net.layers[2].bias[1]
    manual = (torch.relu(x @ w0 + b0) @ w1 + b1).squeeze(-1)
    assert torch.allclose(out[1], manual, atol=1e-6)


def test_expectile_critic_losses_by_hand():
    torch.manual_seed(0)
    critic = ExpectileCritic(3, 2, (16,), num_q=2, expectile=0.8)
    batch = random_batch(8, done_rate=0.3)
    loss, metrics = critic.losses(batch, discount=0.9)
    with torch.no_grad():
        q_tgt = critic.q_target(batch.observations, batch.actions).min(0).values
        v = critic.v(batch.observations).squeeze(-1)
        u = q_tgt - v
        value_loss = (torch.where(u < 0, 0.2, 0.8) * u**2).mean()
        target = batch.rewards + 0.9 * (1 - batch.dones) * critic.v(batch.next_observations).squeeze(-1)
        q = critic.q(batch.observations, batch.actions)
        q_loss = ((q[0] - target) ** 2).mean() + ((q[1] - target) ** 2).mean()
    assert torch.allclose(loss, value_loss + q_loss, atol=1e-6)
    assert torch.allclose(metrics["training/value_loss"], value_loss, atol=1e-6)


def test_td_critic_uses_the_given_next_actions_and_aggregation():
    torch.manual_seed(0)
    critic = TDCritic(3, 2, (16,), num_q=2, q_agg="min", layer_norm=False)
    batch = random_batch(8, done_rate=0.3)
    loss, _ = critic.losses(batch, 0.99, next_actions=batch.next_actions)
    with torch.no_grad():
        next_q = critic.q_target(batch.next_observations, batch.next_actions).min(0).values
        target = batch.rewards + 0.99 * (1 - batch.dones) * next_q
        q = critic.q(batch.observations, batch.actions)
        expected = ((q - target) ** 2).mean(1).sum()
    assert torch.allclose(loss, expected, atol=1e-6)


def test_polyak_update():
    a, b = torch.nn.Linear(2, 2), torch.nn.Linear(2, 2)
    before = a.weight.detach().clone()
    polyak_update(a, b, 0.25)
    assert torch.allclose(a.weight, 0.75 * before + 0.25 * b.weight)


def test_euler_integration_of_a_constant_field():
    x0 = torch.zeros(3, 2)
    calls = []

    def velocity(x, t):
        calls.append(t[0].item())
        return torch.ones_like(x) * 2.0

    out = euler_integrate(velocity, x0, steps=4)
    assert torch.allclose(out, torch.full((3, 2), 2.0))
    assert calls == pytest.approx([0.0, 0.25, 0.5, 0.75])


def test_ball_samples_radius_and_volume_fraction():
    d, radius, n = 3, math.sqrt(3), 20000
    z = sample_ball((n,), d, radius, generator=torch.Generator().manual_seed(0))
    norms = z.norm(dim=-1)
    assert norms.max() <= radius + 1e-6
    inside_half = (norms < radius / 2).float().mean().item()
    p = 0.5**d
    assert abs(inside_half - p) < 4 * math.sqrt(p * (1 - p) / n)


def test_gaussian_policy_log_prob_matches_torch_normal():
    from modebench.algorithms.nets import GaussianPolicy

    torch.manual_seed(0)
    policy = GaussianPolicy(3, 2, (8,))
    with torch.no_grad():
        policy.log_std.copy_(torch.tensor([-0.5, 0.3]))
    obs, act = torch.randn(5, 3), torch.rand(5, 2) * 2 - 1
    assert torch.allclose(policy.log_prob(obs, act), policy(obs).log_prob(act).sum(-1), atol=1e-6)
    with torch.no_grad():  # outside [log_std_min, log_std_max] = [-20, 2]: both clamp to the same std
        policy.log_std.copy_(torch.tensor([-30.0, 5.0]))
    clamped = torch.distributions.Normal(policy.mean(obs), torch.tensor([-20.0, 2.0]).exp())
    torch.testing.assert_close(policy.log_prob(obs, act), clamped.log_prob(act).sum(-1))


def test_expectile_critic_returned_advantage_equals_a_fresh_one():
    torch.manual_seed(0)
    critic = ExpectileCritic(3, 2, (16,), num_q=2)
    batch = random_batch(8, done_rate=0.3)
    _, _, adv = critic.losses(batch, 0.99, return_advantage=True)
    assert torch.allclose(adv, critic.advantage(batch.observations, batch.actions))
    assert not adv.requires_grad


def test_cpu_mish_matches_aten_mish_with_and_without_a_graph():
    from modebench.algorithms.nets import Mish

    x = torch.cat([torch.linspace(-40.0, 40.0, 20001), torch.tensor([0.0, 1e-6, -1e-6, 88.0, -88.0])])
    with torch.no_grad():
        fast = Mish()(x)
    assert torch.isfinite(fast).all()
    assert torch.allclose(fast, torch.nn.functional.mish(x), atol=2e-6, rtol=1e-6)
    ours, aten = x.clone().requires_grad_(True), x.clone().requires_grad_(True)
    out = Mish()(ours)
    assert torch.allclose(out, torch.nn.functional.mish(aten), atol=2e-6, rtol=1e-6)
    out.sum().backward()
    torch.nn.functional.mish(aten).sum().backward()
    assert torch.isfinite(ours.grad).all()
    assert torch.allclose(ours.grad, aten.grad, atol=3e-6, rtol=1e-6)


def _two_group_problem(seed: int):
    torch.manual_seed(seed)
    nets = [torch.nn.Linear(5, 4), torch.nn.Linear(4, 3), torch.nn.Linear(3, 2)]
    return nets, [{"params": list(nets[0].parameters()) + list(nets[1].parameters())},
                  {"params": list(nets[2].parameters())}]


def test_fused_adam_is_bitwise_torch_fused_adam_with_schedules_and_missing_grads():
    """Same kernel, same arguments: equal to the last bit over steps where the second group's LR
    is scheduled, one network gets no gradient for a while, and state is saved and reloaded."""
    ours_nets, ours_groups = _two_group_problem(0)
    ref_nets, ref_groups = _two_group_problem(0)
    ours = FusedAdam(ours_groups, lr=1e-2)
    ref = torch.optim.Adam(ref_groups, lr=1e-2, fused=True)
    schedules = [torch.optim.lr_scheduler.LambdaLR(o, [lambda s: 1.0, lambda s: 1.0 / (1 + s)]) for o in (ours, ref)]
    data = torch.Generator().manual_seed(1)
    for step in range(12):
        x = torch.randn(8, 5, generator=data)
        for nets, opt, schedule in ((ours_nets, ours, schedules[0]), (ref_nets, ref, schedules[1])):
            opt.zero_grad(set_to_none=True)
            frozen_tail = 3 <= step < 6  # the last layer gets no gradient these steps (a phase switch)
            hidden = nets[1](nets[0](x))
            loss = hidden.square().mean() if frozen_tail else nets[2](hidden).square().mean()
            loss.backward()
            opt.step()
            schedule.step()
        if step == 7:  # a checkpoint round trip mid-run must not leave stale cached state
            ours.load_state_dict(copy.deepcopy(ours.state_dict()))
        for a, b in zip((p for n in ours_nets for p in n.parameters()), (p for n in ref_nets for p in n.parameters())):
            assert torch.equal(a, b), f"step {step}: parameters differ from torch's fused Adam"
    assert ours.state_dict()["state"].keys() == ref.state_dict()["state"].keys()
    for key, state in ours.state_dict()["state"].items():
        for name, value in state.items():
            assert torch.equal(value, ref.state_dict()["state"][key][name]), f"param {key} {name}"
