"""GEM: the selection rule's equations, the actor loss by hand, knobs, checkpoints, mechanism.

Equation numbers are those of the GEM paper (arXiv 2603.23232).
"""

from __future__ import annotations

import dataclasses
import io
import math
from functools import partial
from pathlib import Path

import helpers
import pytest
import torch
import yaml
from modebench.algorithms.base import Batch, EnvSpec
from modebench.algorithms.config import ConfigError, from_dict
from modebench.algorithms.gem import GEM, GEMConfig, GEMKnobs, nll_gap
from modebench.algorithms.nets import DiagonalGMM
from modebench.algorithms.registry import METHODS
from modebench.algorithms.seeds import stack_algorithms
from modebench.algorithms.selection import (
    lcb,
    score_and_select,
    select_top_k,
    support_weight,
    zscore,
)

TINY = dict(hidden_dims=(32, 32), num_q=3, num_components=3, behavior_components=2)


def make_gem(seed: int = 0, obs_dim: int = 3, act_dim: int = 2, horizon: int = 100, total_steps: int = 1_000_000,
             **overrides) -> GEM:
    torch.manual_seed(seed)
    return GEM(GEMConfig(**{**TINY, **overrides}), EnvSpec(obs_dim, act_dim, horizon=horizon, total_steps=total_steps))


random_batch = partial(helpers.random_batch, done_rate=None)


def set_gmm_head(policy, log_weight_logits, means, log_std) -> None:
    """Make a GMMPolicy state-independent: zero output weights, biases = the wanted parameters."""
    k, d = policy.k, policy.d
    with torch.no_grad():
        last = policy.net[-1]
        last.weight.zero_()
        last.bias[:k] = torch.as_tensor(log_weight_logits, dtype=torch.float32)
        last.bias[k : k + k * d] = torch.atanh(torch.as_tensor(means, dtype=torch.float32)).reshape(-1)
        policy.log_std.fill_(log_std)


def zero_critic(gem: GEM) -> None:
    with torch.no_grad():
        last = gem.critic.q.net.layers[-1]
        last.weight.zero_()
        last.bias.zero_()


# ---------------------------------------------------------------- selection rule (Eq. 2-4, 8-15)


def test_zscore_invariant_to_shift_and_positive_scale():
    x = torch.randn(4, 33, generator=torch.Generator().manual_seed(0))
    z = zscore(x)
    torch.testing.assert_close(zscore(x + 7.5), z, rtol=1e-5, atol=1e-5)  # Eq. 12
    torch.testing.assert_close(zscore(3.0 * x), z, rtol=1e-5, atol=1e-5)  # Eq. 13
    torch.testing.assert_close(zscore(0.5 * x - 20.0), z, rtol=1e-4, atol=1e-4)
    assert not torch.allclose(zscore(-x), z)  # a negative scale flips the order: not invariant
    # population std (1/|C|), and the max(sigma, 1e-6) clamp on a constant set (Eq. 11)
    v = torch.tensor([[1.0, 2.0, 4.0]])
    mean, pop_std = 7.0 / 3.0, math.sqrt(((1 - 7 / 3) ** 2 + (2 - 7 / 3) ** 2 + (4 - 7 / 3) ** 2) / 3)
    torch.testing.assert_close(zscore(v), (v - mean) / pop_std)
    torch.testing.assert_close(zscore(torch.full((2, 5), 3.0)), torch.zeros(2, 5))


def test_lcb_is_mean_minus_lambda_population_std():
    q = torch.tensor([[1.0, 0.0], [2.0, 0.0], [6.0, 3.0]])  # [M=3, C=2]
    # candidate 0: mean 3, population std sqrt((4 + 1 + 9) / 3); candidate 1: mean 1, std sqrt(6/3)
    expected = torch.tensor([3.0 - 2.0 * math.sqrt(14.0 / 3.0), 1.0 - 2.0 * math.sqrt(2.0)])
    torch.testing.assert_close(lcb(q, 2.0), expected)
    torch.testing.assert_close(lcb(q, 0.0), torch.tensor([3.0, 1.0]))


def test_schedule_starts_at_one_and_ends_at_w_end():
    t = torch.tensor([0, 50, 100, 150])
    w = support_weight(t, horizon=100, w_end=0.4)
    torch.testing.assert_close(w, torch.tensor([1.0, 0.7, 0.4, 0.4]))  # midpoint: w_end + (1 - w_end)/2
    assert torch.all(w[1:] <= w[:-1])
    torch.testing.assert_close(support_weight(torch.tensor([0]), 1, 0.2), torch.tensor([1.0]))


def test_k_smooth_averages_the_top_k():
    cands = torch.tensor([[[0.0, 0.0], [1.0, 0.0], [0.0, 1.0], [1.0, 1.0]]])
    scores = torch.tensor([[0.1, 0.9, 0.5, 0.7]])
    a1, _top1 = select_top_k(cands, scores, 1)
    torch.testing.assert_close(a1, torch.tensor([[1.0, 0.0]]))
    a2, top2 = select_top_k(cands, scores, 2)
    torch.testing.assert_close(a2, torch.tensor([[1.0, 0.5]]))  # mean of (1, 0) and (1, 1)
    assert top2.tolist() == [[1, 3]]
    a_all, _ = select_top_k(cands, scores, 10)  # k = min(k_smooth, |C|) (Eq. 15)
    torch.testing.assert_close(a_all, cands.mean(1))


def test_score_is_lcb_plus_weighted_zscore_and_audits_use_top1():
    g = torch.Generator().manual_seed(1)
    cands = torch.rand(2, 6, 2, generator=g)
    q = torch.randn(4, 2, 6, generator=g)
    ll = torch.randn(2, 6, generator=g) * 10
    w_p = torch.tensor([1.0, 0.3])
    sel = score_and_select(cands, q, ll, lcb_lambda=1.5, w_p=w_p, k_smooth=2)
    expected = q.mean(0) - 1.5 * q.std(0, correction=0) + w_p[:, None] * zscore(ll)
    torch.testing.assert_close(sel.scores, expected)
    best = expected.argmax(-1)
    assert torch.equal(sel.top1_index, best)
    torch.testing.assert_close(sel.top1, cands[torch.arange(2), best])
    torch.testing.assert_close(sel.support_z, zscore(ll)[torch.arange(2), best])
    raw = score_and_select(cands, q, ll, lcb_lambda=1.5, w_p=w_p, support_mode="raw")
    torch.testing.assert_close(raw.scores, q.mean(0) - 1.5 * q.std(0, correction=0) + w_p[:, None] * ll)
    torch.testing.assert_close(raw.support_z, zscore(ll)[torch.arange(2), raw.top1_index])  # audit stays z


# ---------------------------------------------------------------- GEM.act (Algorithm 1)


def test_anchor_is_mean_of_most_probable_component():
    gem = make_gem(num_components=3)
    set_gmm_head(gem.actor, [0.0, 2.0, 1.0], [[0.1, 0.2], [-0.6, 0.5], [0.7, -0.3]], -1.0)
    obs = torch.randn(5, 3)
    out = gem.act(obs, torch.zeros(5, dtype=torch.long), GEMKnobs(N=0, anchor="mode"))
    torch.testing.assert_close(out.actions, torch.tensor([[-0.6, 0.5]]).expand(5, 2))
    w = torch.softmax(torch.tensor([0.0, 2.0, 1.0]), 0)
    bary = (w[:, None] * torch.tensor([[0.1, 0.2], [-0.6, 0.5], [0.7, -0.3]])).sum(0)
    out = gem.act(obs, torch.zeros(5, dtype=torch.long), GEMKnobs(N=0, anchor="bary"))
    torch.testing.assert_close(out.actions, bary.expand(5, 2))


def test_no_lcb_no_support_is_argmax_of_mean_q():
    gem = make_gem()
    obs, t = torch.randn(7, 3), torch.arange(7)
    knobs = GEMKnobs(N=32, lcb_lambda=0.0, use_pw=False)
    torch.manual_seed(5)
    cands, _ = gem.candidates(obs, knobs)
    torch.manual_seed(5)
    out = gem.act(obs, t, knobs)
    q_mean = gem.critic.q(obs.unsqueeze(1).expand(-1, cands.shape[1], -1), cands).mean(0)
    expected = cands[torch.arange(7), q_mean.argmax(-1)]
    torch.testing.assert_close(out.actions, expected)
    assert cands.shape == (7, 33, 2)  # anchor + N


def test_support_is_scored_under_the_behavior_model_never_the_actor():
    gem = make_gem(behavior_components=1, num_components=1)
    zero_critic(gem)  # Q = 0: the score is w_p * z(log mu_phi), selection follows support alone
    set_gmm_head(gem.behavior, [0.0], [[0.5, 0.5]], -1.0)
    set_gmm_head(gem.actor, [0.0], [[-0.5, -0.5]], -0.3)  # the actor prefers the opposite corner
    obs, t = torch.randn(4, 3), torch.zeros(4, dtype=torch.long)
    knobs = GEMKnobs(N=64, anchor="off")
    torch.manual_seed(2)
    cands, behavior = gem.candidates(obs, knobs)
    torch.manual_seed(2)
    out = gem.act(obs, t, knobs)
    behavior_ll = helpers.expand_samples(behavior, cands.shape[1]).log_prob(cands)
    actor_ll = helpers.expand_samples(gem.actor(obs), cands.shape[1]).log_prob(cands)
    rows = torch.arange(4)
    torch.testing.assert_close(out.actions, cands[rows, behavior_ll.argmax(-1)])
    torch.testing.assert_close(out.audits["support_z"], zscore(behavior_ll)[rows, behavior_ll.argmax(-1)])
    assert not torch.allclose(out.actions, cands[rows, actor_ll.argmax(-1)])
    # perturbing the actor changes the proposals, never how they are scored
    set_gmm_head(gem.actor, [0.0], [[0.9, -0.9]], 0.0)
    torch.manual_seed(3)
    cands, behavior = gem.candidates(obs, knobs)
    torch.manual_seed(3)
    out = gem.act(obs, t, knobs)
    behavior_ll = helpers.expand_samples(behavior, cands.shape[1]).log_prob(cands)
    torch.testing.assert_close(out.actions, cands[rows, behavior_ll.argmax(-1)])


def test_candidates_come_from_one_source():
    gem = make_gem(num_components=1, behavior_components=1)
    set_gmm_head(gem.actor, [0.0], [[-0.8, -0.8]], -4.0)  # std 0.018: samples sit on the mean
    set_gmm_head(gem.behavior, [0.0], [[0.8, 0.8]], -4.0)
    obs = torch.randn(3, 3)
    for source, centre in (("actor", -0.8), ("behavior", 0.8)):
        cands, _ = gem.candidates(obs, GEMKnobs(N=50, anchor="off", candidate_source=source))
        assert torch.allclose(cands, torch.full_like(cands, centre), atol=0.1)
    cands, _ = gem.candidates(obs, GEMKnobs(N=50, anchor="mode", candidate_source="behavior"))
    torch.testing.assert_close(cands[:, 0], torch.full((3, 2), -0.8))  # the anchor is the actor's mode


def test_act_is_one_forward_per_network_and_returns_audits():
    gem = make_gem()
    calls = {"actor": 0, "behavior": 0, "critic": 0}
    for name, module in (("actor", gem.actor), ("behavior", gem.behavior), ("critic", gem.critic.q)):
        module.register_forward_hook(lambda *_, name=name: calls.__setitem__(name, calls[name] + 1))
    out = gem.act(torch.randn(9, 3), torch.arange(9), GEMKnobs(N=128, k_smooth=4))
    assert calls == {"actor": 1, "behavior": 1, "critic": 1}
    assert out.actions.shape == (9, 2) and out.actions.abs().max() <= 1.0
    assert set(out.audits) == {"violation", "collapse_dist", "support_z"}
    assert all(v.shape == (9,) for v in out.audits.values())
    assert set(out.audits["violation"].unique().tolist()) <= {0.0, 1.0}


def test_collapse_dist_is_distance_to_nearest_behavior_mean():
    gem = make_gem(num_components=1, behavior_components=2)
    set_gmm_head(gem.actor, [0.0], [[0.3, 0.1]], -1.0)
    set_gmm_head(gem.behavior, [0.0, 0.0], [[0.5, 0.5], [-0.5, 0.0]], -1.0)
    out = gem.act(torch.randn(2, 3), torch.zeros(2, dtype=torch.long), GEMKnobs(N=0))
    torch.testing.assert_close(out.audits["collapse_dist"], torch.full((2,), math.hypot(0.2, 0.4)))


def test_selection_runs_on_another_methods_proposals():
    """algorithms.selection.rerank on IQL's propose(obs, n), scored by GEM's critic and behaviour GMM."""
    from modebench.algorithms.gem import per_candidate
    from modebench.algorithms.iql import IQL, IQLConfig
    from modebench.algorithms.selection import rerank

    gem = make_gem()
    iql = IQL(IQLConfig(hidden_dims=(16, 16)), EnvSpec(3, 2))
    obs = torch.randn(4, 3)
    cands = iql.propose(obs, 16)
    sel = rerank(obs, cands, gem.critic.q, lambda o, a: per_candidate(gem.behavior(o)).log_prob(a),
                 lcb_lambda=1.0, w_p=support_weight(torch.zeros(4), 10, 0.4), k_smooth=1)
    q = gem.critic.q(obs.unsqueeze(1).expand(-1, 16, -1), cands)
    ll = helpers.expand_samples(gem.behavior(obs), 16).log_prob(cands)
    expected = q.mean(0) - q.std(0, correction=0) + zscore(ll)
    torch.testing.assert_close(sel.scores, expected)
    torch.testing.assert_close(sel.actions, cands[torch.arange(4), expected.argmax(-1)])


# ---------------------------------------------------------------- GEM.act end to end, rule written out by hand


def cosine_w_p(t: torch.Tensor, horizon: int, w_end: float) -> torch.Tensor:
    """Sec. 4.2 written out: w_end + 0.5 (1 - w_end)(1 + cos(pi min(t, T) / T))."""
    frac = t.clamp(max=horizon).double() / horizon
    return (w_end + 0.5 * (1.0 - w_end) * (1.0 + torch.cos(math.pi * frac))).float()


def act_by_hand(gem: GEM, obs: torch.Tensor, t: torch.Tensor, knobs: GEMKnobs, seed: int) -> torch.Tensor:
    """Algorithm 1 from the networks' raw outputs: the anchor from the actor's mixture, N draws
    of the chosen source (the same draws `act` makes after the same seed), clip, LCB on the
    trained (online) ensemble, z-scored support under the behaviour GMM, w_p on the TASK's
    horizon, mean of the top k_smooth."""
    with torch.no_grad():
        actor, behavior = gem.actor(obs), gem.behavior(obs)
        parts = []
        if knobs.anchor == "mode":
            k_star = actor.weights.argmax(-1)
            parts.append(actor.means[torch.arange(len(obs)), k_star].unsqueeze(1))
        elif knobs.anchor == "bary":
            parts.append((actor.weights.unsqueeze(-1) * actor.means).sum(1, keepdim=True))
        if knobs.N:
            torch.manual_seed(seed)
            parts.append((actor if knobs.candidate_source == "actor" else behavior).sample(knobs.N))
        cands = torch.cat(parts, 1).clamp(-1.0, 1.0)
        c = cands.shape[1]
        q = gem.critic.q(obs.unsqueeze(1).expand(-1, c, -1), cands)  # [M, B, C]
        score = q.mean(0) - knobs.lcb_lambda * q.std(0, correction=0)
        if knobs.use_pw:
            ll = helpers.expand_samples(behavior, c).log_prob(cands)
            z = (ll - ll.mean(-1, keepdim=True)) / ll.std(-1, correction=0, keepdim=True)
            score = score + cosine_w_p(t, gem.spec.horizon, knobs.w_end)[:, None] * z
        top = score.topk(min(knobs.k_smooth, c), -1).indices
        return cands[torch.arange(len(obs))[:, None], top].mean(1)


def gem_for_act(horizon: int = 50) -> GEM:
    """A GEM whose critic values vary on the scale of the z-scored support (so w_p decides many
    argmaxes), and whose target critic differs from the online one."""
    gem = make_gem(seed=4, horizon=horizon, total_steps=10_000)
    with torch.no_grad():
        gem.critic.q.net.layers[-1].weight.mul_(15.0)
    helpers.perturb_target(gem.critic)
    return gem


def run_act(gem: GEM, obs, t, knobs: GEMKnobs, seed: int = 7) -> torch.Tensor:
    torch.manual_seed(seed)
    return gem.act(obs, t, knobs).actions


@pytest.mark.parametrize("k_smooth", [1, 3])
@pytest.mark.parametrize("use_pw", [True, False])
def test_act_is_algorithm_1_by_hand_with_the_schedule_on_the_task_horizon(k_smooth, use_pw):
    horizon = 50
    gem = gem_for_act(horizon)
    obs = torch.randn(64, 3, generator=torch.Generator().manual_seed(0))
    t = torch.arange(64) * 2  # 0 .. 126: before, at and past the horizon
    knobs = GEMKnobs(N=16, k_smooth=k_smooth, use_pw=use_pw, w_end=0.0)
    expected = act_by_hand(gem, obs, t, knobs, seed=7)
    torch.testing.assert_close(run_act(gem, obs, t, knobs), expected)
    # The comparison can tell the rule's pieces apart: w_p = 1 throughout, a schedule over the run
    # length instead of the episode, and top-1 instead of top-k all give other actions.
    if use_pw:
        flat = act_by_hand(gem, obs, torch.zeros_like(t), knobs, seed=7)
        assert (flat - expected).abs().sum(-1).gt(1e-4).sum() >= 5
    if k_smooth > 1:
        top1 = act_by_hand(gem, obs, t, dataclasses.replace(knobs, k_smooth=1), seed=7)
        assert (top1 - expected).abs().sum(-1).gt(1e-4).all()


def test_act_scores_with_the_trained_critic_not_the_target():
    gem = gem_for_act()
    obs, t = torch.randn(64, 3), torch.zeros(64, dtype=torch.long)
    knobs = GEMKnobs(N=16, use_pw=False)
    expected = act_by_hand(gem, obs, t, knobs, seed=3)
    torch.testing.assert_close(run_act(gem, obs, t, knobs, seed=3), expected)
    gem.critic.q, gem.critic.q_target = gem.critic.q_target, gem.critic.q
    assert (act_by_hand(gem, obs, t, knobs, seed=3) - expected).abs().sum(-1).gt(1e-4).sum() >= 5


@pytest.mark.parametrize("anchor", ["mode", "off", "bary"])
@pytest.mark.parametrize("source", ["actor", "behavior"])
def test_act_with_k_smooth_over_the_whole_set_is_the_mean_of_the_clipped_candidates(anchor, source):
    """k_smooth >= |C| makes the executed action the mean of the candidate set, whatever the
    scores: act's output then shows the anchor (none, the argmax component's mean, or the
    barycentre), the source of a_1..a_N and the clip to the box."""
    gem = make_gem(seed=1, num_components=2, behavior_components=2)
    set_gmm_head(gem.actor, [2.0, 0.0], [[0.6, 0.6], [-0.2, 0.4]], 1.0)  # std e: many samples leave the box
    set_gmm_head(gem.behavior, [0.0, 0.0], [[-0.6, -0.6], [0.5, -0.5]], 1.0)
    obs, t = torch.randn(5, 3), torch.zeros(5, dtype=torch.long)
    knobs = GEMKnobs(N=6, k_smooth=64, anchor=anchor, candidate_source=source)
    got = run_act(gem, obs, t, knobs, seed=11)
    torch.testing.assert_close(got, act_by_hand(gem, obs, t, knobs, seed=11))
    with torch.no_grad():
        torch.manual_seed(11)
        samples = (gem.actor if source == "actor" else gem.behavior)(obs).sample(6)
    assert (samples.abs() > 1).any(), "the clip must matter"
    w = torch.softmax(torch.tensor([2.0, 0.0]), 0)
    anchors = {"mode": [torch.tensor([0.6, 0.6])], "bary": [w[0] * torch.tensor([0.6, 0.6]) + w[1] * torch.tensor([-0.2, 0.4])],
               "off": []}[anchor]
    cands = torch.cat([a.expand(5, 1, 2) for a in anchors] + [samples.clamp(-1, 1)], 1)
    torch.testing.assert_close(got, cands.mean(1))


def test_value_target_and_actor_weight_read_the_target_critic():
    """L_V regresses V to min_j Qtgt_j(s, a), and the actor's omega uses Qtgt_min(s, a) - V(s),
    both from the TARGET ensemble (made different from the online one here)."""
    gem = make_gem(beta=2.0, omega_max=50.0)
    helpers.perturb_target(gem.critic)
    batch = random_batch(64)
    online, target = helpers.online_and_target_q(gem.critic, batch.observations, batch.actions)
    with torch.no_grad():
        v = gem.critic.value(batch.observations)
        u = target.min(0).values - v
        value_loss = (torch.where(u < 0, 0.3, 0.7) * u**2).mean()
        omega = torch.exp(2.0 * u).clamp(max=50.0)
        omega_online = torch.exp(2.0 * (online.min(0).values - v)).clamp(max=50.0)
    assert not torch.allclose(omega.mean(), omega_online.mean(), rtol=1e-2)
    _, metrics = gem.losses(batch, 0)
    assert float(metrics["training/value_loss"]) == pytest.approx(float(value_loss), rel=1e-5)
    assert float(metrics["training/omega_mean"]) == pytest.approx(float(omega.mean()), rel=1e-5)
    _, alone = gem.actor_loss(batch)  # the advantage recomputed outside the critic's pass: same target
    assert float(alone["training/omega_mean"]) == pytest.approx(float(omega.mean()), rel=1e-5)


# ---------------------------------------------------------------- Phase I (Algorithm 2)


def test_gmm_log_prob_matches_mixture_same_family():
    gem = make_gem(num_components=3)
    obs, acts = torch.randn(6, 3), torch.rand(6, 2) * 2 - 1
    for policy in (gem.actor, gem.behavior):
        gmm = policy(obs)
        ref = torch.distributions.MixtureSameFamily(
            torch.distributions.Categorical(logits=gmm.log_weights),
            torch.distributions.Independent(torch.distributions.Normal(gmm.means, gmm.log_stds.exp()), 1),
        )
        torch.testing.assert_close(gmm.log_prob(acts), ref.log_prob(acts))


def test_actor_loss_matches_hand_computation():
    """K = 2, d = 1, two samples: Eq. 26, 28, 36, 43, 69, 71 with plain floats."""
    beta, omega_max, alpha = 2.0, 3.0, 0.1
    gem = make_gem(obs_dim=1, act_dim=1, num_components=2, beta=beta, omega_max=omega_max, gate_entropy_coef=alpha)
    set_gmm_head(gem.actor, [0.3, -0.2], [[0.4], [-0.5]], 0.0)
    with torch.no_grad():
        gem.actor.log_std.copy_(torch.tensor([[-0.5], [0.2]]))
    batch = random_batch(2, obs_dim=1, act_dim=1, seed=3)
    batch.actions = torch.tensor([[0.1], [-0.7]])
    adv = gem.critic.advantage(batch.observations, batch.actions).tolist()
    logw = [0.3 - math.log(math.exp(0.3) + math.exp(-0.2)), -0.2 - math.log(math.exp(0.3) + math.exp(-0.2))]
    mus, log_sig = [0.4, -0.5], [-0.5, 0.2]
    loss, entropy_term = 0.0, 0.0
    for a, adv_i in zip([0.1, -0.7], adv):
        u = [logw[k] - 0.5 * ((a - mus[k]) / math.exp(log_sig[k])) ** 2 - log_sig[k] - 0.5 * math.log(2 * math.pi)
             for k in range(2)]  # Eq. 26, 38
        gam = [math.exp(u[k] - max(u)) for k in range(2)]
        gam = [g / sum(gam) for g in gam]  # Eq. 28
        elbo = sum(gam[k] * u[k] for k in range(2))  # Eq. 36
        omega = min(math.exp(beta * adv_i), omega_max)  # Eq. 69
        loss += omega * -elbo / 2
        w = [math.exp(x) for x in logw]
        entropy_term += -sum(wk * math.log(wk + 1e-6) for wk in w) / 2  # Eq. 43
    expected = loss - alpha * entropy_term  # Eq. 71
    got, metrics = gem.actor_loss(batch)
    assert got.item() == pytest.approx(expected, rel=1e-5)
    assert metrics["training/gating_entropy"].item() == pytest.approx(entropy_term, rel=1e-5)


def test_detached_responsibilities_give_the_m_step_gradient():
    """With gamma detached, d loss / d log sigma_k = mean_b[-omega gamma_k ((a - mu_k)^2 / sigma_k^2 - 1)] (Eq. 37, 58)."""
    gem = make_gem(obs_dim=1, act_dim=1, num_components=2, gate_entropy_coef=0.0)
    set_gmm_head(gem.actor, [0.3, -0.2], [[0.4], [-0.5]], -0.4)
    batch = random_batch(5, obs_dim=1, act_dim=1, seed=4)
    gmm = gem.actor(batch.observations)
    with torch.no_grad():
        u = gmm.joint_log_probs(batch.actions)
        gamma = torch.softmax(u, -1)
        omega = torch.exp(gem.config.beta * gem.critic.advantage(batch.observations, batch.actions)).clamp(max=gem.config.omega_max)
        sq = ((batch.actions - gmm.means.squeeze(-1)) / gmm.log_stds.squeeze(-1).exp()) ** 2
        expected = (-omega[:, None] * gamma * (sq - 1.0)).mean(0)
    loss, _ = gem.actor_loss(batch)
    (grad,) = torch.autograd.grad(loss, gem.actor.log_std)
    torch.testing.assert_close(grad.squeeze(-1), expected, rtol=1e-4, atol=1e-6)
    gem.config.detach_gamma = False  # differentiating through gamma is a different gradient
    loss, _ = gem.actor_loss(batch)
    (grad_through,) = torch.autograd.grad(loss, gem.actor.log_std)
    assert not torch.allclose(grad_through.squeeze(-1), expected, rtol=1e-3)


def test_behavior_trains_during_pretraining_then_freezes():
    gem = make_gem(gmm_pretrain_steps=2)
    batch = random_batch()
    snapshot = [p.detach().clone() for p in gem.behavior.parameters()]
    metrics = gem.update(batch, 0)
    assert "training/behavior_nll" in metrics
    assert any(not torch.equal(a, b) for a, b in zip(snapshot, gem.behavior.parameters()))
    gem.update(batch, 1)
    frozen = [p.detach().clone() for p in gem.behavior.parameters()]
    actor_before = [p.detach().clone() for p in gem.actor.parameters()]
    metrics = gem.update(batch, 2)
    assert "training/behavior_nll" not in metrics
    assert all(torch.equal(a, b) for a, b in zip(frozen, gem.behavior.parameters()))
    assert any(not torch.equal(a, b) for a, b in zip(actor_before, gem.actor.parameters()))
    assert all(v.dim() == 0 and not v.requires_grad for v in metrics.values())


def test_seed_batched_losses_are_each_seeds_own():
    """S stacked seeds (algorithms/seeds.py): the actor and behaviour losses and every metric are
    [S], seed s's equal to the seed alone on its own minibatch, and so are its log-std gradients
    (the state-independent log-std stays compact, [S, 1, K, d], in the stacked mixture)."""
    singles = [make_gem(seed=s) for s in range(3)]
    batches = [random_batch(seed=10 + s) for s in range(3)]
    alone = [(g.actor_loss(b), g.behavior_loss(b)) for g, b in zip(singles, batches)]
    grads = [torch.autograd.grad(a[0] + bl, (g.actor.log_std, g.behavior.log_std)) for g, (a, bl) in zip(singles, alone)]
    stacked = stack_algorithms([make_gem(seed=s) for s in range(3)])
    batch = Batch(*(torch.stack([getattr(b, f.name) for b in batches]) for f in dataclasses.fields(Batch)))
    gmm = stacked.actor(batch.observations)
    assert gmm.compact_log_stds.shape == (3, 1, 3, 2) and gmm.log_stds.shape == (3, 16, 3, 2)
    (loss, metrics), behavior_loss = stacked.actor_loss(batch), stacked.behavior_loss(batch)
    assert loss.shape == behavior_loss.shape == (3,) and all(v.shape == (3,) for v in metrics.values())
    stacked_grads = torch.autograd.grad((loss + behavior_loss).sum(), (stacked.actor.log_std, stacked.behavior.log_std))
    for s, ((single_loss, single_metrics), single_behavior) in enumerate(alone):
        torch.testing.assert_close(loss[s], single_loss)
        torch.testing.assert_close(behavior_loss[s], single_behavior)
        for key, value in single_metrics.items():
            torch.testing.assert_close(metrics[key][s], value)
        for got, want in zip(stacked_grads, grads[s]):
            torch.testing.assert_close(got[s], want)


def test_target_critic_follows_the_online_one_by_polyak_after_each_update():
    gem = make_gem(target_tau=0.25)
    helpers.perturb_target(gem.critic)
    before = [p.detach().clone() for p in gem.critic.q_target.parameters()]
    gem.update(random_batch(), 0)
    for old, tgt, online in zip(before, gem.critic.q_target.parameters(), gem.critic.q.parameters()):
        torch.testing.assert_close(tgt, 0.75 * old + 0.25 * online)


def test_training_is_deterministic_given_the_seed():
    def run():
        gem = make_gem(seed=3)
        for step in range(3):
            gem.update(random_batch(seed=step), step)
        torch.manual_seed(9)
        return gem.act(torch.randn(4, 3), torch.zeros(4, dtype=torch.long), GEMKnobs(N=16)).actions

    torch.testing.assert_close(run(), run(), rtol=0, atol=0)


def test_nll_gap_by_hand():
    """Eq. 72-75 on one state, K = 2, d = 1."""
    logw = torch.log(torch.tensor([[0.7, 0.3]]))
    gmm = DiagonalGMM(logw, torch.tensor([[[0.0], [1.0]]]), torch.tensor([[[0.0], [math.log(0.5)]]]))
    a = torch.tensor([[0.9]])
    n0 = math.exp(-0.5 * 0.81) / math.sqrt(2 * math.pi)
    n1 = math.exp(-0.5 * (0.1 / 0.5) ** 2) / (0.5 * math.sqrt(2 * math.pi))
    out = nll_gap(gmm, a)
    assert out["nll_gmm"].item() == pytest.approx(-math.log(0.7 * n0 + 0.3 * n1), rel=1e-5)
    assert out["nll_top1"].item() == pytest.approx(-math.log(n0), rel=1e-5)  # k* = 0, no weight
    assert out["gap"].item() == pytest.approx(-math.log(n0) + math.log(0.7 * n0 + 0.3 * n1), rel=1e-5)
    diag = make_gem().diagnostics(random_batch())
    assert set(diag) >= {"diagnostics/actor_gap", "diagnostics/behavior_gap"}


# ---------------------------------------------------------------- knobs, config, checkpoints, presets


@pytest.mark.parametrize(
    "values, field",
    [
        ({"N": -1}, "N"),
        ({"N": 0, "anchor": "off"}, "N"),
        ({"lcb_lambda": -0.5}, "lcb_lambda"),
        ({"w_end": -0.1}, "w_end"),
        ({"k_smooth": 0}, "k_smooth"),
        ({"candidate_source": "mixed"}, "candidate_source"),
        ({"support_mode": "softmax"}, "support_mode"),
        ({"anchor": "first"}, "anchor"),
        ({"N": "many"}, "N"),
        ({"lambda": -1.0}, "lcb_lambda"),  # the paper's name is an alias; its value is still checked
        ({"lamda": 1.0}, "lamda"),
    ],
)
def test_knob_validation_names_the_field(values, field):
    with pytest.raises(ConfigError, match=field):
        from_dict(GEMKnobs, values, what="knob")


def test_paper_knob_name_lambda_is_an_alias():
    assert from_dict(GEMKnobs, {"lambda": "3.5"}, what="knob").lcb_lambda == 3.5


@pytest.mark.parametrize(
    "values, field",
    [
        ({"num_components": 0}, "num_components"),
        ({"num_q": 0}, "num_q"),
        ({"expectile": 1.0}, "expectile"),
        ({"omega_max": 0.0}, "omega_max"),
        ({"gate_entropy_coef": -1.0}, "gate_entropy_coef"),
        ({"log_std_min": 3.0}, "log_std_min"),
        ({"gmm_pretrain_steps": -1}, "gmm_pretrain_steps"),
    ],
)
def test_config_validation_names_the_field(values, field):
    with pytest.raises(ConfigError, match=field):
        from_dict(GEMConfig, values)


def test_knobs_from_command_line_strings():
    knobs = from_dict(GEMKnobs, {"N": "64", "lcb_lambda": "3.5", "use_pw": "false", "anchor": "bary"}, what="knob")
    assert (knobs.N, knobs.lcb_lambda, knobs.use_pw, knobs.anchor) == (64, 3.5, False, "bary")


def test_state_dict_round_trip_weights_only():
    gem = make_gem(seed=1)
    for step in range(2):
        gem.update(random_batch(seed=step), step)
    buffer = io.BytesIO()
    torch.save(gem.state_dict(), buffer)
    buffer.seek(0)
    state = torch.load(buffer, weights_only=True)
    fresh = make_gem(seed=2)
    fresh.load_state_dict(state)
    obs, t = torch.randn(5, 3), torch.arange(5)
    outs = []
    for model in (gem, fresh):
        torch.manual_seed(0)
        outs.append(model.act(obs, t, GEMKnobs(N=32)))
    torch.testing.assert_close(outs[0].actions, outs[1].actions, rtol=0, atol=0)
    torch.testing.assert_close(outs[0].audits["support_z"], outs[1].audits["support_z"], rtol=0, atol=0)


def test_registry_presets_build_valid_variants():
    expected = {
        "gem": ({}, {}),
        "gem-no-pw": ({}, {"use_pw": False}),
        "gem-no-lcb": ({}, {"lcb_lambda": 0.0}),
        "gem-no-anchor": ({}, {"anchor": "off"}),
        "gem-anchor-bary": ({}, {"anchor": "bary"}),
        "gem-unimodal-actor": ({"num_components": 1}, {}),
        "gem-behavior-candidates": ({}, {"candidate_source": "behavior"}),
        "gem-raw-support": ({}, {"support_mode": "raw"}),
    }
    for name, (config, knobs) in expected.items():
        entry = METHODS[name]
        assert entry.load() is GEM
        assert (entry.config, entry.knobs) == (config, knobs), name
        from_dict(GEMConfig, entry.config)
        from_dict(GEMKnobs, entry.knobs, what="knob")


def test_suite_defaults_file_is_valid():
    path = Path(__file__).resolve().parents[1] / "benchmarks" / "tasks" / "suites" / "gem_overrides.yaml"
    data = {suite: block["gem"] for suite, block in yaml.safe_load(path.read_text()).items()}
    for suite, block in data.items():
        assert set(block) <= {"config", "knobs"}, suite
        from_dict(GEMConfig, block.get("config", {}))
        from_dict(GEMKnobs, block.get("knobs", {}), what="knob")
    assert (data["locomotion"]["knobs"]["lcb_lambda"], data["locomotion"]["knobs"]["w_end"]) == (1.0, 0.4)
    assert (data["maze2d"]["knobs"]["lcb_lambda"], data["maze2d"]["knobs"]["w_end"]) == (1.0, 0.4)
    assert (data["antmaze"]["knobs"]["lcb_lambda"], data["antmaze"]["knobs"]["w_end"]) == (3.5, 0.2)
    assert all(data[s]["knobs"]["N"] == 1024 for s in ("locomotion", "maze2d", "antmaze"))


# ---------------------------------------------------------------- mechanism tier (CI): the cheapest run of the same claim

MECHANISM_TIER_STEPS = 600


@pytest.mark.mechanism
def test_mechanism_tier_gem_selects_the_best_four_goal_mode_where_bc_averages():
    """Sec. 4 on the toy four-goal bandit (goals at (+-1, +-1), (1, 1) pays most), small nets,
    fixed seed: GEM's selected actions land in the best goal's disc, BC's mean does not."""
    from modebench.algorithms.bc import BC, BCConfig
    from modebench.benchmarks.tasks.toy import FourGoalBandit

    gem = helpers.train_on_toy(GEM, GEMConfig(hidden_dims=(64, 64)), "four-goal", MECHANISM_TIER_STEPS)
    bc = helpers.train_on_toy(BC, BCConfig(hidden_dims=(64, 64)), "four-goal", MECHANISM_TIER_STEPS)
    best = FourGoalBandit.GOALS[0]
    gem_rate = helpers.fraction_in_disc(helpers.bandit_actions(gem, GEMKnobs(N=64), n=500), best)
    bc_rate = helpers.fraction_in_disc(helpers.bandit_actions(bc, n=500), best)
    print(f"four-goal, {MECHANISM_TIER_STEPS} updates: in the best disc GEM {gem_rate:.2f}, BC {bc_rate:.2f}")
    assert gem_rate >= 0.9
    assert bc_rate < 0.9


# ---------------------------------------------------------------- mechanism on the toy four-goal bandit (slow)

MECHANISM_STEPS = 3000
MECHANISM_CONFIG = {"hidden_dims": (64, 64)}  # narrow nets for every method: the mechanism, at a quarter of the cost


@pytest.fixture(scope="module")
def four_goal_runs(tmp_path_factory):
    from modebench.benchmarks.run.train import evaluate_checkpoint, train

    out = tmp_path_factory.mktemp("gem_four_goal")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # small nets: one thread is fastest, and robust on a busy machine
    runs = {
        name: train(name, "toy/four-goal", steps=MECHANISM_STEPS, seed=0, out=out, config=MECHANISM_CONFIG, knobs=knobs,
                    eval_episodes=500, device="cpu")
        for name, knobs in (("gem", {"N": 64}), ("bc", {}), ("iql", {}))
    }
    # the same GEM checkpoint with and without the support term (the gem-no-pw preset's knob)
    on, off = evaluate_checkpoint(runs["gem"].checkpoint, {"use_pw": [True, False]}, episodes=2000, out=out, device="cpu")
    torch.set_num_threads(threads)
    print({name: round(run.score, 1) for name, run in runs.items()}, "pw on", on["audits"], "pw off", off["audits"])
    return runs, on, off


@pytest.mark.slow
def test_four_goal_gem_selects_the_best_mode_where_bc_and_iql_do_not(four_goal_runs):
    runs, on, _ = four_goal_runs
    assert on["knobs"]["N"] == 64 and on["knobs"]["use_pw"] is True
    assert runs["gem"].score >= 90.0
    assert runs["bc"].score < 90.0  # the Gaussian mean falls between the four modes
    assert runs["iql"].score < 90.0  # the AWR-weighted mean is pulled toward (1, 1) but not into its disc


@pytest.mark.slow
def test_four_goal_no_pw_selects_lower_support_actions(four_goal_runs):
    """Table 5's direction for no-pw on SupportZ and CollapseDist, same checkpoint."""
    _, on, off = four_goal_runs
    assert off["audits"]["support_z"] < on["audits"]["support_z"]
    assert off["audits"]["collapse_dist"] > on["audits"]["collapse_dist"]


@pytest.mark.slow
@pytest.mark.xfail(strict=True, reason=(
    "issue 3 / Table 5 claim not reproduced on toy four-goal: measured Violation 0.0 with and without "
    "the support term (N = 64 and 1024, 3000 updates): the one-step critic does not overestimate "
    "off-support actions, so LCB alone already picks on-support candidates"))
def test_four_goal_no_pw_has_higher_violation(four_goal_runs):
    _, on, off = four_goal_runs
    assert off["audits"]["violation"] > on["audits"]["violation"]
