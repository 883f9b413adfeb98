"""FQL: Flow Q-Learning (Park, Li and Levine, 2025), DROL's reference point (DROL Sec. 2.1, Eq. 3).

Three networks: a flow-matching BC velocity field v_psi(x_t, t, s), a one-step policy
mu_theta(s, z) and the TD critic ensemble Q_phi (core TDCritic, 2 heads, LayerNorm).
Losses, top to bottom (numbers from the authors' code, github seohongpark/fql, agents/fql.py):

  L_flow    = E_{x0~N(0,I), t~U(0,1)} || v_psi((1-t) x0 + t a, t, s) - (a - x0) ||^2 / d_a
  L_distill = E_{z~N(0,I)} || mu_theta(s, z) - sg(clip(Euler_10[v_psi](s, z))) ||^2 / d_a
  L_Q       = -E[ Q_mean(s, clip(mu_theta(s, z))) ]   (/ sg(E|Q|) when normalize_q_loss)
  L_actor   = L_flow + alpha L_distill + L_Q           (DROL Eq. 3 with the flow teacher)
  L_critic  = sum_j E[(Q_j(s, a) - r - gamma (1 - d) Qtgt_agg(s', clip(mu_theta(s', z'))))^2]

The Q term differentiates through the action only: the critic's parameters are held fixed
in it (`policy_q_loss`), exactly as the JAX code evaluates the critic with non-gradient
parameters. Everything is summed and stepped ONCE per update with one Adam (the authors' code
also takes a single gradient step on critic_loss + actor_loss, so this is their update order,
not an approximation). The core TDCritic sums its loss over the 2 heads where the code
averages; the critic and actor share no parameters and Adam is invariant to a per-parameter
loss scale (up to eps), so the trajectories agree.

Inference: ONE Gaussian noise, one forward of mu_theta, clipped to the box (no flow steps).
Seed-batched training (algorithms/seeds.py): the losses' draws (x0, t, z, z') come from
`self.rng`, one generator per seed, and every loss and metric is one value per seed; a single
seed draws exactly what it drew from torch's global generator before. Acting keeps the global one.
Data: the authors clip dataset actions to +-(1 - 1e-5) (DataConfig.clip_actions = 1 - 1e-5,
set in the suite's `data:` block, not here). Defaults: 4 x 512 GELU MLPs, actor without and
critic with LayerNorm, Adam 3e-4, batch 256, alpha 10, 10 Euler steps, q_agg mean.
Differences from the JAX code: PyTorch's default Linear initialisation (the code uses
variance scaling, fan_avg uniform).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from modebench.algorithms.base import ActOutput, AlgoConfig, Algorithm, Batch, EnvSpec
from modebench.algorithms.config import MAX_ENSEMBLE, MAX_WIDTH, field
from modebench.algorithms.critics import TDCritic, policy_q_loss
from modebench.algorithms.nets import (
    ACTIVATIONS,
    MLP,
    FlowVelocityNet,
    LayerNormPlacement,
    euler_integrate,
)
from modebench.algorithms.optim import make_adam
from modebench.algorithms.seeds import seed_mean


@dataclass
class FQLConfig(AlgoConfig):
    hidden_dims: tuple[int, ...] = field((512, 512, 512, 512), help="widths of the flow, one-step and critic MLPs", ge=1, le=MAX_WIDTH)
    activation: str = field("gelu", help="hidden activation of every MLP (FQL: GELU)", choices=sorted(ACTIVATIONS))
    num_q: int = field(2, help="critic ensemble size", ge=1, le=MAX_ENSEMBLE)
    lr: float = field(3e-4, help="Adam learning rate of every network", gt=0.0)
    target_tau: float = field(0.005, help="Polyak rate of the target critic", gt=0.0, le=1.0)
    alpha: float = field(10.0, help="distillation weight (10 antmaze, 300 cube/scene, 1000 puzzle, 3e3-3e4 adroit)", ge=0.0)
    flow_steps: int = field(10, help="Euler steps of the BC flow teacher", ge=1)
    q_agg: Literal["mean", "min"] = field("mean", help="ensemble aggregation in the TD target (min on antmaze-large/giant)")
    normalize_q_loss: bool = field(False, help="divide the actor's Q term by sg(mean |Q|)")
    actor_layer_norm: bool = field(False, help="LayerNorm in the flow and one-step MLPs")
    critic_layer_norm: bool = field(True, help="LayerNorm in the critic MLP")
    layer_norm_placement: LayerNormPlacement = field("pre_act", help='hidden LayerNorms: "pre_act" Linear->LN->act (ModeBench\'s), "post_act" Linear->act->LN, learned scale+bias (FQL code)')


class FQL(Algorithm):
    name = "fql"
    config_class = FQLConfig
    can_propose = True

    def __init__(self, config: FQLConfig, spec: EnvSpec, device="cpu"):
        super().__init__(config, spec, device)
        cfg, o, d = config, spec.obs_dim, spec.act_dim
        self.flow = FlowVelocityNet(o, d, cfg.hidden_dims, cfg.activation, layer_norm=cfg.actor_layer_norm,
                                    layer_norm_placement=cfg.layer_norm_placement)
        self.onestep = MLP(o + d, cfg.hidden_dims, d, cfg.activation, cfg.actor_layer_norm, cfg.layer_norm_placement)  # mu_theta(s, z)
        self.critic = TDCritic(o, d, cfg.hidden_dims, cfg.num_q, cfg.target_tau, cfg.q_agg, cfg.activation, cfg.critic_layer_norm,
                               cfg.layer_norm_placement)
        self.to(self.device)
        self.optimizer = make_adam(
            [{"params": self.critic.q.parameters()}, {"params": self.flow.parameters()}, {"params": self.onestep.parameters()}],
            cfg.lr,
            self.device,
        )

    # ------------------------------------------------------------------ policies

    def noise(self, shape: tuple[int, ...], device: torch.device | None = None) -> torch.Tensor:
        """z ~ N(0, I) in R^{d_a} from torch's global generator: the acting noise (`act`, `propose`)."""
        return torch.randn(*shape, self.spec.act_dim, device=device or self.device)

    def loss_noise(self, b: int, device: torch.device) -> torch.Tensor:
        """z ~ N(0, I) in R^{d_a} for each of b rows, [*lead, b, d_a]: the training draws (flow
        source x0, one-step latents), from each seed's own generator (`self.rng`)."""
        return self.rng.randn(b, self.spec.act_dim, device=device)

    def onestep_actions(self, obs: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        """mu_theta(s, z), unclipped (the distillation loss sees the raw output, as in the code)."""
        return self.onestep(torch.cat([obs, z], dim=-1))

    def flow_actions(self, obs: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        """clip(Euler_K[v_psi](s, z)): the BC flow teacher's action, K = flow_steps velocity calls."""
        x1 = euler_integrate(lambda x, t: self.flow(x, t, obs), z, self.config.flow_steps)
        return x1.clamp(-1.0, 1.0)

    # ------------------------------------------------------------------ losses

    def flow_bc_loss(self, obs: torch.Tensor, actions: torch.Tensor, x0: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """L_flow = mean || v_psi(x_t, t, s) - (a - x0) ||^2 / d_a, x_t = (1 - t) x0 + t a; t is [*lead, B, 1]."""
        x_t = (1.0 - t) * x0 + t * actions
        return seed_mean((self.flow(x_t, t, obs) - (actions - x0)).pow(2), self.seeds)

    def distill_loss(self, obs: torch.Tensor, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(L_distill, mu_theta(s, z)): the one-step output regressed on the frozen teacher's endpoint."""
        with torch.no_grad():
            target = self.flow_actions(obs, z)
        actions = self.onestep_actions(obs, z)
        return seed_mean((actions - target).pow(2), self.seeds), actions

    def actor_loss(
        self, obs: torch.Tensor, actions: torch.Tensor, x0: torch.Tensor, t: torch.Tensor, z: torch.Tensor
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """L_actor = L_flow + alpha L_distill + L_Q for given flow noise x0, times t and latents z."""
        cfg = self.config
        flow_loss = self.flow_bc_loss(obs, actions, x0, t)
        distill, pi_actions = self.distill_loss(obs, z)
        q_loss, q = policy_q_loss(self.critic, obs, pi_actions.clamp(-1.0, 1.0), "mean", cfg.normalize_q_loss)
        loss = flow_loss + cfg.alpha * distill + q_loss
        metrics = {
            "training/actor_loss": loss.detach(),
            "training/flow_bc_loss": flow_loss.detach(),
            "training/distill_loss": distill.detach(),
            "training/actor_q_loss": q_loss.detach(),
            "training/q_pi": seed_mean(q.detach(), self.seeds),
        }
        return loss, metrics

    def losses(self, batch: Batch, step: int) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        cfg = self.config
        obs, actions = batch.observations, batch.actions
        b, device = obs.shape[-2], obs.device
        # Drawn in this order (x0, t, z, z') from each seed's generator: a seed in a batch takes
        # exactly the draws it takes alone.
        x0 = self.loss_noise(b, device)
        t = self.rng.rand(b, 1, device=device)
        actor_loss, metrics = self.actor_loss(obs, actions, x0, t, self.loss_noise(b, device))
        with torch.no_grad():  # the TD target's next action is the one-step policy's own
            next_actions = self.onestep_actions(batch.next_observations, self.loss_noise(b, device)).clamp(-1.0, 1.0)
        critic_loss, critic_metrics = self.critic.losses(batch, cfg.discount, next_actions)
        metrics.update(critic_metrics)
        return critic_loss + actor_loss, metrics

    def after_step(self, step: int) -> None:
        self.critic.update_target()

    # ------------------------------------------------------------------ inference

    @torch.no_grad()
    def act(self, obs: torch.Tensor, t: torch.Tensor, knobs) -> ActOutput:
        """One noise sample, one forward of the one-step policy."""
        z = self.noise(obs.shape[:-1], obs.device)
        return ActOutput(self.onestep_actions(obs, z).clamp(-1.0, 1.0))

    @torch.no_grad()
    def propose(self, obs: torch.Tensor, n: int) -> torch.Tensor:
        """n one-step samples per state (n noises), [B, n, d_a]."""
        z = self.noise((obs.shape[0], n), obs.device)
        return self.onestep_actions(obs.unsqueeze(1).expand(-1, n, -1), z).clamp(-1.0, 1.0)


__all__ = ["FQL", "FQLConfig"]
