"""IQL: Implicit Q-Learning (Kostrikov et al., 2022), at CORL's fidelity.

Losses, top to bottom (one combined backward per update: each loss only sees the others'
outputs detached, so summing them is the same gradient as separate backward passes):
  L_V  = E[ |tau - 1(u<0)| u^2 ],  u = min_j Qtgt_j(s, a) - V(s)           (expectile value)
  L_Q  = sum_j E[ (Q_j(s, a) - r - gamma (1 - d) V(s'))^2 ]               (TD on the value)
  L_pi = -E[ min(exp(beta (Qtgt_min(s, a) - V(s))), 100) log pi(a | s) ]  (AWR extraction)
Parameters are updated simultaneously from the same batch (CORL updates V, then Q, then pi
in sequence; the simultaneous step is the documented difference and saves two backward passes).
Defaults: 2 x 256 ReLU nets, twin Q, expectile 0.7, beta 3 (antmaze: 0.9 / 10 via the suite
file), Gaussian actor with tanh mean and state-independent log-std in [-20, 2], cosine LR on the
actor, evaluation at the mean. Each published code's network is a set of config fields
(`activation`, `actor_tanh_mean`, `actor_std`, `log_std_min/max`, `advantage_q`, `actor_cosine_lr`,
`actor_dropout`, `critic_layer_norm`), set per suite by benchmarks/tasks/published_settings.csv:
the IQL authors' (ReLU, tanh mean, learned log-std clamped at -5, cosine actor LR) and FQL's IQL
agent (GELU, plain mean, constant std 1, constant Adam, post-activation LayerNorm in Q and V,
the online critic in the advantage), and their initialisations (`init`, `actor_head_init_scale`:
orthogonal gain sqrt 2 / fan_avg variance scaling with a 1e-2 mean head, zero biases). Not
matched: the update order (the authors update V, then pi with the new V, then Q; here all from
one batch at once) and flax's tanh-approximate GELU (exact here, <= 4.7e-4 apart).

Actor dropout (`actor_dropout`, default 0 = CORL's effective behaviour): the IQL paper (App. B)
and its code (configs/kitchen_config.py, which the README also runs on Adroit) put dropout 0.1 on
the actor's hidden layers (common.py MLP: Dense -> act -> Dropout), active while training only;
evaluation and proposals run the module in eval mode, so the deterministic mean is used. CORL's
Adroit configs set actor_dropout 0.1 too, but its GaussianPolicy never passes it to its MLP.
`critic_layer_norm` / `layer_norm_placement`: FQL's IQL agent (seohongpark/fql agents/iql.py) puts
a post-activation LayerNorm in Q and V; off by default (the IQL authors and CORL have none).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch
from modebench.algorithms.base import ActOutput, AlgoConfig, Algorithm, Batch, EnvSpec
from modebench.algorithms.config import MAX_ENSEMBLE, MAX_WIDTH, ConfigError, field
from modebench.algorithms.critics import ExpectileCritic, aggregate, awr_weight
from modebench.algorithms.nets import (
    GaussianPolicy,
    LayerNormPlacement,
    init_linear_layers,
)
from modebench.algorithms.optim import make_adam
from modebench.algorithms.seeds import seed_mean


@dataclass
class IQLConfig(AlgoConfig):
    hidden_dims: tuple[int, ...] = field((256, 256), help="width of every MLP (actor, Q, V)", ge=1, le=MAX_WIDTH)
    num_q: int = field(2, help="critic ensemble size (min over members in the value target)", ge=1, le=MAX_ENSEMBLE)
    lr: float = field(3e-4, help="Adam learning rate for every network", gt=0.0)
    expectile: float = field(0.7, help="tau of the value's asymmetric L2 (0.9 on antmaze)", gt=0.0, lt=1.0)
    beta: float = field(3.0, help="inverse temperature of the advantage weight (10 on antmaze)", ge=0.0)
    max_weight: float = field(100.0, help="clip of exp(beta * A)", gt=0.0)
    target_tau: float = field(0.005, help="Polyak rate of the target Q", gt=0.0, le=1.0)
    actor_cosine_lr: bool = field(True, help="cosine-decay the actor's LR over the run (CORL)")
    actor_dropout: float = field(0.0, help="dropout after each hidden activation of the actor, training only (IQL App. B: 0.1 kitchen/adroit)", ge=0.0, lt=1.0)
    critic_layer_norm: bool = field(False, help="LayerNorm in Q and V (FQL's IQL agent: on; IQL authors, CORL: off)")
    # The network and parameterisation of each published code (tests/test_protocols.py checks the rows):
    activation: Literal["relu", "gelu"] = field(
        "relu", help="hidden activation of actor, Q and V (IQL authors common.py MLP, CORL: relu; FQL utils/networks.py MLP: gelu)")
    actor_tanh_mean: bool = field(
        True, help="tanh on the actor's mean (IQL authors policy.py tanh_squash_distribution=False -> tanh(means), CORL; "
                   "FQL utils/networks.py Actor tanh_squash=False: a plain mean)")
    actor_std: Literal["learned", "constant"] = field(
        "learned", help='"learned": a state-independent log-std parameter (IQL authors, CORL); '
                        '"constant": std 1, nothing learned (FQL agents/iql.py const_std=True)')
    log_std_min: float = field(-20.0, help="lower clamp of the actor's log-std (CORL -20; IQL authors learner.py log_std_min=-5.0)")
    log_std_max: float = field(2.0, help="upper clamp of the actor's log-std (CORL, IQL authors policy.py LOG_STD_MAX, FQL: 2)")
    init: Literal["torch", "orthogonal", "fan_avg"] = field(
        "torch", help="weight initialisation of every layer (PyTorch's default, CORL; orthogonal gain sqrt 2: IQL authors "
                      "common.py default_init; fan_avg: FQL utils/networks.py default_init); biases 0 in both JAX codes")
    actor_head_init_scale: float = field(
        1.0, gt=0.0, help="the actor mean head's init scale under `init` (FQL Actor final_fc_init_scale=1e-2; IQL authors 1)")
    advantage_q: Literal["target", "online"] = field(
        "target", help="Q of the AWR advantage: the target critic (IQL authors learner.py/actor.py, CORL) or the online "
                       "one (FQL agents/iql.py actor_loss: network.select('critic'))")
    layer_norm_placement: LayerNormPlacement = field("pre_act", help='hidden LayerNorms: "pre_act" Linear->LN->act, "post_act" Linear->act->LN, learned scale+bias (FQL code)')


def cosine_schedule(total_steps: int):
    return lambda step: 0.5 * (1.0 + math.cos(math.pi * min(step, total_steps) / max(total_steps, 1)))


class IQL(Algorithm):
    name = "iql"
    config_class = IQLConfig
    can_propose = True

    def __init__(self, config: IQLConfig, spec: EnvSpec, device="cpu"):
        super().__init__(config, spec, device)
        if config.log_std_min >= config.log_std_max:
            raise ConfigError(f"iql: log_std_min ({config.log_std_min}) must be below log_std_max ({config.log_std_max})")
        self.critic = ExpectileCritic(
            spec.obs_dim, spec.act_dim, config.hidden_dims, config.num_q, config.expectile, config.target_tau,
            act=config.activation, layer_norm=config.critic_layer_norm, layer_norm_placement=config.layer_norm_placement,
        )
        self.actor = GaussianPolicy(spec.obs_dim, spec.act_dim, config.hidden_dims, act=config.activation,
                                    log_std_min=config.log_std_min, log_std_max=config.log_std_max,
                                    tanh_mean=config.actor_tanh_mean, dropout=config.actor_dropout,
                                    learn_std=config.actor_std == "learned")
        init_linear_layers(self.actor, config.init, output=self.actor.net[-1], output_scale=config.actor_head_init_scale)
        init_linear_layers(self.critic, config.init)
        self.critic.q_target.load_state_dict(self.critic.q.state_dict())  # the target starts as the critic
        self.to(self.device)
        self.optimizer = make_adam(
            [{"params": self.critic.parameters()}, {"params": self.actor.parameters()}],
            config.lr,
            self.device,
        )
        actor_lr = cosine_schedule(spec.total_steps) if config.actor_cosine_lr else (lambda step: 1.0)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, [lambda step: 1.0, actor_lr])

    def losses(self, batch: Batch, step: int) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        cfg = self.config
        critic_loss, metrics, advantage = self.critic.losses(batch, cfg.discount, return_advantage=True)
        if cfg.advantage_q == "online":  # FQL's IQL: the online critic's min over members, this step's V
            with torch.no_grad():
                q = aggregate(self.critic.q(batch.observations, batch.actions), "min")
                advantage = q - self.critic.value(batch.observations)
        weight = awr_weight(advantage, cfg.beta, cfg.max_weight)
        actor_loss = -seed_mean(weight * self.actor.log_prob(batch.observations, batch.actions), self.seeds)
        metrics["training/actor_loss"] = actor_loss.detach()
        metrics["training/adv_weight_mean"] = seed_mean(weight, self.seeds)
        return critic_loss + actor_loss, metrics

    def after_step(self, step: int) -> None:
        self.critic.update_target()

    @torch.no_grad()
    def act(self, obs: torch.Tensor, t: torch.Tensor, knobs) -> ActOutput:
        return ActOutput(self.actor(obs).mean.clamp(-1.0, 1.0))

    @torch.no_grad()
    def propose(self, obs: torch.Tensor, n: int) -> torch.Tensor:
        return self.actor(obs).sample((n,)).transpose(0, 1).clamp(-1.0, 1.0)
