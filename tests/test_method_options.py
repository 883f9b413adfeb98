"""Options that let a method run as its authors' code does (issue 15, item 4): the hidden-layer
LayerNorm placement, IQL's actor dropout, LOM's clipping to the action box, and what GEM's
ensemble size M = 2 means for its LCB. Defaults keep ModeBench's original behaviour."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from helpers import random_batch
from modebench.algorithms.base import EnvSpec
from modebench.algorithms.config import ConfigError, from_dict
from modebench.algorithms.drol import DROL, DROLConfig
from modebench.algorithms.fql import FQL, FQLConfig
from modebench.algorithms.gem import GEM, GEMConfig, GEMKnobs
from modebench.algorithms.iql import IQL, IQLConfig
from modebench.algorithms.isep import ISEP, ISEPFM, ISEPConfig, ISEPFMConfig
from modebench.algorithms.lom import LOM, LOMConfig, sample_each_mode
from modebench.algorithms.nets import MLP, EnsembleLayerNorm, EnsembleMLP
from modebench.algorithms.registry import get_method
from modebench.algorithms.selection import lcb, rerank

SPEC = EnvSpec(obs_dim=3, act_dim=2, horizon=10, total_steps=1000)


def kinds(layers) -> list[str]:
    return [type(m).__name__ for m in layers]


# --------------------------------------------------------------------------- LayerNorm placement


def test_pre_act_default_is_the_original_layout():
    """Default: Linear -> LayerNorm -> act; the MLP's LayerNorm is affine, the ensemble's is not."""
    mlp = MLP(4, (8, 8), 1, "gelu", layer_norm=True)
    assert kinds(mlp) == ["Linear", "LayerNorm", "GELU", "Linear", "LayerNorm", "GELU", "Linear"]
    assert mlp[1].elementwise_affine and mlp[1].eps == 1e-5
    ens = EnsembleMLP(3, 4, (8, 8), 1, "gelu", layer_norm=True)
    assert kinds(ens.layers) == ["EnsembleLinear", "LayerNorm", "GELU"] * 2 + ["EnsembleLinear"]
    assert not ens.layers[1].elementwise_affine and not list(ens.layers[1].parameters())


def test_post_act_mlp_is_dense_act_layernorm_with_learned_scale_and_bias():
    mlp = MLP(4, (8, 6), 2, "gelu", layer_norm=True, layer_norm_placement="post_act")
    assert kinds(mlp) == ["Linear", "GELU", "LayerNorm", "Linear", "GELU", "LayerNorm", "Linear"]
    for norm, width in ((mlp[2], 8), (mlp[5], 6)):
        assert norm.elementwise_affine and norm.weight.shape == (width,) and norm.bias.shape == (width,)
        assert norm.weight.requires_grad and norm.bias.requires_grad
        assert norm.eps == 1e-6  # flax nn.LayerNorm's default
    # the forward pass is exactly the flax MLP's: Dense -> act -> LayerNorm(scale, bias) per hidden layer
    with torch.no_grad():
        for norm in (mlp[2], mlp[5]):
            norm.weight.uniform_(0.5, 1.5)
            norm.bias.uniform_(-0.5, 0.5)
    x = torch.randn(5, 4)
    h = x
    for dense, norm in ((mlp[0], mlp[2]), (mlp[3], mlp[5])):
        h = F.gelu(dense(h))
        h = (h - h.mean(-1, keepdim=True)) / torch.sqrt(h.var(-1, unbiased=False, keepdim=True) + 1e-6)
        h = h * norm.weight + norm.bias
    torch.testing.assert_close(mlp(x), mlp[6](h))


def test_post_act_ensemble_has_a_scale_and_bias_per_member():
    ens = EnsembleMLP(3, 4, (8,), 1, "relu", layer_norm=True, layer_norm_placement="post_act")
    assert kinds(ens.layers) == ["EnsembleLinear", "ReLU", "EnsembleLayerNorm", "EnsembleLinear"]
    norm = ens.layers[2]
    assert norm.weight.shape == (3, 1, 8) and norm.bias.shape == (3, 1, 8)
    torch.testing.assert_close(norm.weight, torch.ones(3, 1, 8))
    torch.testing.assert_close(norm.bias, torch.zeros(3, 1, 8))
    x = torch.randn(5, 4)
    before = ens(x).detach()
    with torch.no_grad():
        norm.weight[1].mul_(2.0)
        norm.bias[1].add_(0.3)
    after = ens(x).detach()
    torch.testing.assert_close(after[[0, 2]], before[[0, 2]])  # other members untouched
    assert not torch.allclose(after[1], before[1])
    # each member's normalisation equals torch's LayerNorm with that member's parameters
    h = torch.randn(3, 5, 8)
    for m in range(3):
        ref = F.layer_norm(h[m], (8,), norm.weight[m, 0], norm.bias[m, 0], eps=1e-6)
        torch.testing.assert_close(EnsembleLayerNorm.forward(norm, h)[m], ref)


def test_unknown_placement_is_rejected():
    with pytest.raises(ValueError, match="layer_norm_placement"):
        MLP(4, (8,), 1, layer_norm=True, layer_norm_placement="after")
    with pytest.raises(ConfigError, match="layer_norm_placement"):
        from_dict(FQLConfig, {"layer_norm_placement": "after"})


@pytest.mark.parametrize("cls, config", [
    (FQL, FQLConfig(hidden_dims=(8, 8))),
    (DROL, DROLConfig(hidden_dims=(8, 8))),
    (ISEPFM, ISEPFMConfig(flow_hidden_dims=(8, 8), critic_hidden_dims=(8, 8), critic_layer_norm=True)),
    (IQL, IQLConfig(hidden_dims=(8, 8), critic_layer_norm=True)),
])
def test_methods_build_their_critic_with_the_configured_placement(cls, config):
    """FQL / DROL / CFGRL (ISEP-FM) / FQL's IQL: `layer_norm_placement: post_act` reaches every
    critic network (Q ensemble, and V where there is one); the default keeps pre_act."""
    for placement, q_norm, at in (("pre_act", "LayerNorm", 1), ("post_act", "EnsembleLayerNorm", 2)):
        algo = cls(from_dict(type(config), {"layer_norm_placement": placement}, base=config), SPEC)
        q_layers = kinds(algo.critic.q.net.layers)
        assert q_layers[0] == "EnsembleLinear" and q_layers[at] == q_norm
        assert q_layers.count(q_norm) == 2  # every hidden layer, never the output layer
        if hasattr(algo.critic, "v"):
            assert kinds(algo.critic.v)[at] == "LayerNorm"
    assert type(config)().layer_norm_placement == "pre_act"


def test_cfgrl_preset_critic_is_post_act_under_the_option():
    entry = get_method("cfgrl")
    config = from_dict(ISEPFMConfig, {**entry.config, "flow_hidden_dims": (8,), "critic_hidden_dims": (8,),
                                      "layer_norm_placement": "post_act"})
    algo = ISEPFM(config, SPEC)
    assert kinds(algo.critic.v) == ["Linear", "ReLU", "LayerNorm", "Linear"]
    assert kinds(algo.flow.net) == ["Linear", "GELU", "Linear"]  # CFGRL's velocity net: no LayerNorm


# --------------------------------------------------------------------------- IQL actor dropout


def test_iql_actor_dropout_sits_after_each_hidden_activation():
    algo = IQL(IQLConfig(hidden_dims=(16, 16), actor_dropout=0.1), SPEC)
    assert kinds(algo.actor.net) == ["Linear", "ReLU", "Dropout", "Linear", "ReLU", "Dropout", "Linear"]
    assert algo.actor.net[2].p == 0.1
    assert "Dropout" not in kinds(IQL(IQLConfig(hidden_dims=(16, 16)), SPEC).actor.net)  # default: none


def test_iql_actor_dropout_is_active_in_training_and_off_at_evaluation():
    torch.manual_seed(0)
    algo = IQL(IQLConfig(hidden_dims=(32, 32), actor_dropout=0.5), SPEC)
    obs = torch.randn(64, 3)
    batch = random_batch(64, 3, 2)
    algo.train()
    assert not torch.equal(algo.actor.mean(obs), algo.actor.mean(obs))  # a fresh mask per forward
    loss_a, _ = algo.losses(batch, 0)
    loss_b, _ = algo.losses(batch, 0)
    assert not torch.equal(loss_a, loss_b)
    algo.eval()  # what evaluation does (benchmarks/run/evaluation.py)
    first = algo.act(obs, torch.zeros(64), None).actions
    torch.testing.assert_close(algo.act(obs, torch.zeros(64), None).actions, first, rtol=0, atol=0)
    # at evaluation the actor is the same network without its dropout layers
    without = torch.nn.Sequential(*[m for m in algo.actor.net if not isinstance(m, torch.nn.Dropout)])
    torch.testing.assert_close(torch.tanh(without(obs)).clamp(-1.0, 1.0), first)


def test_isep_inherits_the_iql_actor_options():
    algo = ISEP(ISEPConfig(hidden_dims=(8, 8), actor_dropout=0.1, critic_layer_norm=True,
                           layer_norm_placement="post_act"), SPEC)
    assert "Dropout" in kinds(algo.actor.net)
    assert "EnsembleLayerNorm" in kinds(algo.critic.q.net.layers)


def test_actor_dropout_bounds():
    for bad in (-0.1, 1.0):
        with pytest.raises(ConfigError, match="actor_dropout"):
            IQLConfig(actor_dropout=bad)


# --------------------------------------------------------------------------- LOM


def make_lom(**cfg) -> LOM:
    torch.manual_seed(0)
    base = {"hidden_dims": (16, 16), "mdn_hidden_dims": (16, 16), "mdn_steps": 0, "num_modes": 3,
            "mdn_init_log_std": 1.0}  # wide modes (std ~ 2.7): samples leave the box often
    return LOM(from_dict(LOMConfig, {**base, **cfg}), SPEC)


def test_lom_clipping_defaults_are_the_original_behaviour():
    config = LOMConfig()
    assert config.clip_hyper_q_samples is True and config.imitation_target_clip == "after_noise"


def test_lom_hyper_q_samples_are_clipped_only_when_asked():
    algo = make_lom()
    gmm = algo.mdn(torch.randn(32, 3))
    torch.manual_seed(1)
    clipped = sample_each_mode(gmm, 8, clip=True)
    torch.manual_seed(1)
    raw = sample_each_mode(gmm, 8, clip=False)
    assert clipped.abs().max() <= 1.0 and raw.abs().max() > 1.0
    torch.testing.assert_close(raw.clamp(-1.0, 1.0), clipped)
    # the hyper-Q target reads the raw samples when clip_hyper_q_samples is off
    for flag in (True, False):
        algo = make_lom(clip_hyper_q_samples=flag)
        read = []
        q_value = algo.q_value

        def spy(obs, actions, q_value=q_value, read=read):
            read.append(actions)
            return q_value(obs, actions)

        algo.q_value = spy
        algo.hyper_q_targets(torch.randn(16, 3))
        assert (read[0].abs().max() <= 1.0) == flag


def imitation_targets(algo: LOM) -> torch.Tensor:
    """The a_hat the policy loss imitates on one batch."""
    captured = []
    log_prob = algo.actor.log_prob

    def spy(obs, actions):
        captured.append(actions.detach().clone())
        return log_prob(obs, actions)

    algo.actor.log_prob = spy
    algo.losses(random_batch(256, 3, 2), step=0)
    return captured[-1]


@pytest.mark.parametrize("clip, noise, inside_box", [
    ("after_noise", 0.5, True),    # ModeBench's default: clip after the imitation noise
    ("before_noise", 0.0, True),   # the code: clip the mode's sample ...
    ("before_noise", 0.5, False),  # ... then add ac_rand noise, unclipped
    ("none", 0.0, False),          # the paper: no clip at all
])
def test_lom_imitation_target_clip(clip, noise, inside_box):
    a_hat = imitation_targets(make_lom(imitation_target_clip=clip, imitation_noise=noise))
    assert (a_hat.abs().max() <= 1.0) == inside_box


def test_lom_before_noise_is_clip_then_noise():
    """'before_noise' targets stay within the noise's reach of the box; 'none' ones do not."""
    noisy = imitation_targets(make_lom(imitation_target_clip="before_noise", imitation_noise=0.05))
    assert noisy.abs().max() <= 1.0 + 0.05 * 6  # a 6-sigma bound on 512 draws
    unclipped = imitation_targets(make_lom(imitation_target_clip="none"))
    assert unclipped.abs().max() > 1.3


def test_lom_code_weight_is_clip_exp_beta_a():
    """The authors' code: w = clip(exp(beta A), 0, C) with per-dataset beta in {5, 0.1}, C in {100, 50}."""
    advantage = torch.tensor([-1.0, 0.0, 0.3, 1.0, 50.0])
    for beta, cap in ((5.0, 100.0), (0.1, 50.0)):
        algo = make_lom(weight_form="beta_times", beta=beta, max_weight=cap)
        torch.testing.assert_close(algo.advantage_weight(advantage), torch.exp(beta * advantage).clamp(0.0, cap))
    paper = make_lom(beta=5.0, max_weight=50.0)  # Eq. 18: exp(A / beta)
    torch.testing.assert_close(paper.advantage_weight(advantage), torch.exp(advantage / 5.0).clamp(max=50.0))


# --------------------------------------------------------------------------- GEM: M = 2 and the LCB


def test_lcb_at_lambda_one_is_the_min_for_two_critics_only():
    """With M = 2 the population std is |Q1 - Q2| / 2, so mean - 1 * std = min(Q1, Q2) exactly."""
    q = torch.randn(2, 1000, dtype=torch.float64)
    torch.testing.assert_close(q.std(0, correction=0), (q[0] - q[1]).abs() / 2)
    torch.testing.assert_close(lcb(q, 1.0), q.min(0).values)
    q3 = torch.tensor([[0.0], [0.0], [3.0]])  # M = 3: mean 1, std sqrt(2), LCB 1 - 1.414 != min 0
    assert not torch.allclose(lcb(q3, 1.0), q3.min(0).values)


def test_gem_with_two_critics_selects_by_the_min_at_lambda_one():
    torch.manual_seed(0)
    gem = GEM(GEMConfig(hidden_dims=(16, 16), num_q=2), SPEC).eval()
    with torch.no_grad():  # make the two members disagree, so mean and min rank differently
        for p in gem.critic.q.parameters():
            p.add_(torch.randn_like(p))
    obs = torch.randn(8, 3)
    candidates = torch.rand(8, 50, 2) * 2 - 1
    sel = rerank(obs, candidates, gem.critic.q, lambda _o, a: torch.zeros(a.shape[:-1]), lcb_lambda=1.0, w_p=0.0)
    with torch.no_grad():
        q = gem.critic.q(obs.unsqueeze(1).expand(-1, 50, -1), candidates)
    assert torch.equal(sel.top1_index, q.min(0).values.argmax(-1))
    assert GEMKnobs().lcb_lambda == 1.0 and GEMConfig().num_q == 2


def test_gem_phase_is_declared_only_while_the_behaviour_gmm_freezes():
    assert [p.field for p in GEM.phases(GEMConfig())] == ["gmm_pretrain_steps"]
    assert GEM.phases(GEMConfig(gmm_freeze_after_pretrain=False)) == []

