"""DROL: Dynamic Routing for Offline RL (Mu et al., 2026, arXiv 2604.22229), Algorithm 1.

A one-step latent actor a_hat = f_theta(s, z) (an MLP on [s, z], clipped to the action box)
with a bounded latent prior, trained with top-1 dynamic routing over K candidates:

  z_1..z_K ~ Unif(B_R^{d_z}), R = sqrt(d_a), d_z = d_a          (Eq. 4; sampled exactly)
  a_hat^k = clip(f_theta(s, z_k))        K candidates in ONE batched forward  (Eq. 4-5)
  k* = argmin_k |a_hat^k - a|^2          no gradient through the argmin      (Eq. 7)
  actor loss on the winner only (non-winners get exactly zero gradient, Prop. 4.2):
    "code" (default, authors' agents/drol.py, what produced Table 1):
        L = alpha E|a_hat^{k*} - a|^2 / d_a - q_coef E[Q_min(s, a_hat^{k*})] / sg(E|Q_min|)
    "eq8" (the paper's Eq. 8 / Algorithm 1 line 5):
        L = E|a_hat^{k*} - a|^2 - alpha q_coef E[Q(s, a_hat^{k*})]   (normalize_q_loss off in
        the "drol-eq8" preset, so alpha weighs the raw Q as printed)
  critic (Eq. 9, Algorithm 1 lines 6-7): core TDCritic, 2 heads, target
    r + gamma (1 - d) Qtgt_agg(s', clip(f_theta(s', z'))), z' ~ Unif(B_R), agg = q_agg.
  inference (Eq. 6): ONE latent sample, one forward pass; K is training-time only.

The paper's alpha is the BC coefficient in the code form (Table 3's values 0.03-10 are the
code's bc_coef, per the authors' run script) and the Q weight in the Eq. 8 form.
The Q term holds the critic's parameters fixed (`policy_q_loss` of the shared critics, as FQL's). As in the
authors' code, critic and actor losses are summed and stepped ONCE per update with one Adam
(their own update order, not an approximation). Candidates are clipped before routing, as the
code does, so the distance and BC act on in-box actions.

Training metrics (Sec. 5.3): candidate pairwise distance mean_{i!=j} |a_i - a_j|^2 / d_a,
centroid divergence mean_k |a_k - a_bar|^2 / d_a (per state they are tied exactly:
pairwise = 2K/(K-1) * divergence), routed BC loss E|a_hat^{k*} - a|^2 / d_a, and winner usage
per candidate index: its entropy and max share per step, the [K] count accumulated over
training in the `winner_counts` buffer, and the shares on a given batch (`diagnostics(batch)`).
Seed-batched training (algorithms/seeds.py): the latents of the updates (the K routed ones and
the TD target's) come from each seed's own generator (`self.rng`), in the order a single seed
draws them from torch's global stream; routing, losses and metrics are per seed, and
`winner_counts` is [S, K]. act / propose / diagnostics draw from the global generator.
Defaults (Tables 2-3): 4 x 512 GELU MLPs (critic with LayerNorm), Adam 3e-4, batch 256,
tau 0.005, gamma 0.99, K = 16, alpha 1 (code default; per family 0.03-10 in
benchmarks/tasks/suites/drol_overrides.yaml). The authors also clip dataset actions to
+-(1 - 1e-5): DataConfig.clip_actions in the suite's `data:` block.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch
from modebench.algorithms.base import ActOutput, AlgoConfig, Algorithm, Batch, EnvSpec
from modebench.algorithms.config import MAX_ENSEMBLE, MAX_WIDTH, field
from modebench.algorithms.critics import TDCritic, policy_q_loss
from modebench.algorithms.nets import (
    ACTIVATIONS,
    MLP,
    LayerNormPlacement,
    sample_ball,
)
from modebench.algorithms.optim import make_adam
from modebench.algorithms.seeds import SeedRandom, seed_mean


def route(candidates: torch.Tensor, actions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Eq. 7: (k* [*lead, B], squared distances [*lead, B, K]) for candidates [*lead, B, K, d] and
    data actions [*lead, B, d] (lead = (S,) when seed-batched).

    The distances keep their graph; the argmin is taken on detached values (no gradient
    through the discrete choice).
    """
    d2 = (candidates - actions.unsqueeze(-2)).pow(2).sum(-1)
    return d2.detach().argmin(-1), d2


def gather_winner(values: torch.Tensor, k_star: torch.Tensor) -> torch.Tensor:
    """values[..., b, k*_b]: [*lead, B, K, ...] -> [*lead, B, ...] for k* [*lead, B]."""
    dim = k_star.dim()  # the candidate axis follows k*'s own axes
    index = k_star.reshape(*k_star.shape, 1, *([1] * (values.dim() - dim - 1))).expand(*k_star.shape, 1, *values.shape[dim + 1:])
    return values.gather(dim, index).squeeze(dim)


@torch.no_grad()
def candidate_geometry(candidates: torch.Tensor, seeds: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Sec. 5.3: (mean off-diagonal pairwise |a_i - a_j|^2 / d_a, centroid divergence) of
    candidates [*lead, B, K, d]: scalars, or [S] each for S seeds.

    Uses sum_{i != j} |a_i - a_j|^2 = 2K sum_k |a_k - a_bar|^2, so no [B, K, K] tensor is built.
    K = 1 gives 0 for both.
    """
    k, d = candidates.shape[-2], candidates.shape[-1]
    spread = (candidates - candidates.mean(-2, keepdim=True)).pow(2).sum(-1)  # [*lead, B, K]
    divergence = seed_mean(spread, seeds) / d
    pairwise = divergence * (2.0 * k / (k - 1)) if k > 1 else torch.zeros_like(divergence)
    return pairwise, divergence


@dataclass
class DROLConfig(AlgoConfig):
    hidden_dims: tuple[int, ...] = field((512, 512, 512, 512), help="actor and critic MLP widths (Table 2)", ge=1, le=MAX_WIDTH)
    activation: str = field("gelu", help="hidden activation of every MLP (authors' code: GELU)", choices=sorted(ACTIVATIONS))
    num_q: int = field(2, help="critic ensemble size (Table 2)", ge=1, le=MAX_ENSEMBLE)
    lr: float = field(3e-4, help="Adam learning rate (Table 2)", gt=0.0)
    target_tau: float = field(0.005, help="Polyak rate of the target critic (Table 2)", gt=0.0, le=1.0)
    num_candidates: int = field(16, help="K, latent draws routed per state in training (Table 2; Fig. 3-4 sweep 1 to 64)", ge=1, le=4096)
    alpha: float = field(1.0, help="code form: BC coefficient (Table 3: 0.03-10 per family); eq8 form: Q weight", ge=0.0)
    q_coef: float = field(1.0, help="extra weight of the Q term (authors' q_coef; 0 = routed BC only)", ge=0.0)
    loss_form: Literal["code", "eq8"] = field("code", help="actor loss: authors' code (default) or paper Eq. 8")
    normalize_q_loss: bool = field(True, help="divide the Q term by sg(mean |Q|) of the winners (code: True)")
    actor_q_agg: Literal["min", "mean"] = field("min", help="ensemble aggregation in the actor's Q term (code: min)")
    q_agg: Literal["mean", "min"] = field("mean", help="ensemble aggregation in the TD target (Table 3 flag)")
    latent_dim: int | None = field(None, help="d_z; None = d_a (paper)", ge=1, le=MAX_WIDTH)
    latent_radius: float | None = field(None, help="R of the latent ball; None = sqrt(d_a) (paper)", gt=0.0)
    actor_layer_norm: bool = field(False, help="LayerNorm in the actor MLP (code: False)")
    critic_layer_norm: bool = field(True, help="LayerNorm in the critic MLP (code: True)")
    layer_norm_placement: LayerNormPlacement = field("pre_act", help='hidden LayerNorms: "pre_act" Linear->LN->act (ModeBench\'s), "post_act" Linear->act->LN, learned scale+bias (DROL code)')


class DROL(Algorithm):
    name = "drol"
    config_class = DROLConfig
    can_propose = True

    def __init__(self, config: DROLConfig, spec: EnvSpec, device="cpu"):
        super().__init__(config, spec, device)
        cfg, o, d = config, spec.obs_dim, spec.act_dim
        self.latent_dim = cfg.latent_dim or d
        self.latent_radius = cfg.latent_radius or math.sqrt(d)
        self.actor = MLP(o + self.latent_dim, cfg.hidden_dims, d, cfg.activation, cfg.actor_layer_norm,
                         cfg.layer_norm_placement)  # f_theta(s, z)
        self.critic = TDCritic(o, d, cfg.hidden_dims, cfg.num_q, cfg.target_tau, cfg.q_agg, cfg.activation, cfg.critic_layer_norm,
                               cfg.layer_norm_placement)
        # Winner usage per candidate index, accumulated over training (a buffer: saved, no host sync).
        self.register_buffer("winner_counts", torch.zeros(cfg.num_candidates, dtype=torch.long))
        self.to(self.device)
        self.optimizer = make_adam(
            [{"params": self.critic.q.parameters()}, {"params": self.actor.parameters()}], cfg.lr, self.device
        )

    # ------------------------------------------------------------------ the actor

    def sample_latents(
        self, shape: tuple[int, ...], device: torch.device | None = None, rng: SeedRandom | None = None
    ) -> torch.Tensor:
        """z ~ Unif(B_R^{d_z}), exact; used by training, the TD target and inference.

        Without `rng` (inference, analysis): core sample_ball on torch's global generator, [*shape, d_z].
        With `rng` (the updates: `self.rng`): the same draws (N(0, I) direction, then U(0, 1)
        radius) from each seed's own generator, [*lead, *shape, d_z]."""
        device = device or self.device
        if rng is None:
            return sample_ball(shape, self.latent_dim, self.latent_radius, device=device)
        g = rng.randn(*shape, self.latent_dim, device=device)
        u = rng.rand(*shape, 1, device=device)
        return self.latent_radius * u.pow(1.0 / self.latent_dim) * g / g.norm(dim=-1, keepdim=True).clamp_min(1e-12)

    def policy(self, obs: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        """a_hat = clip(f_theta(s, z)) for any leading dims (Eq. 4 / Eq. 6)."""
        return self.actor(torch.cat([obs, z], dim=-1)).clamp(-1.0, 1.0)

    def candidates(self, obs: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        """The candidate set A_theta(s) (Eq. 5): obs [*lead, B, o], z [*lead, B, K, d_z] ->
        [*lead, B, K, d_a], one forward."""
        return self.policy(obs.unsqueeze(-2).expand(*z.shape[:-1], obs.shape[-1]), z)

    # ------------------------------------------------------------------ losses

    def actor_loss(
        self, obs: torch.Tensor, actions: torch.Tensor, z: torch.Tensor
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor], torch.Tensor]:
        """(loss, metrics, k* [*lead, B]): the routed actor loss for given latents z [*lead, B, K, d_z]
        (Alg. 1 l. 3-5); loss and metrics are [S] when seed-batched."""
        cfg, seeds = self.config, self.seeds
        d_a = actions.shape[-1]
        with torch.no_grad():
            cands = self.candidates(obs, z)  # Eq. 4-5
            k_star, _ = route(cands, actions)  # Eq. 7
        # a_hat^{k*} is the only candidate in the loss and every other one gets exactly zero
        # gradient (Prop. 4.2), so the K-candidate pass runs without a graph and only the winner's
        # forward is recomputed with one: the same gradient for 1/K of the backward.
        winner = self.policy(obs, gather_winner(z, k_star))
        bc = (winner - actions).pow(2).sum(-1)  # |a_hat^{k*} - a|^2, [*lead, B]
        q_loss, q = policy_q_loss(self.critic, obs, winner, cfg.actor_q_agg, cfg.normalize_q_loss)
        if cfg.loss_form == "code":
            loss = cfg.alpha * seed_mean(bc / d_a, seeds) + cfg.q_coef * q_loss
        else:  # Eq. 8
            loss = seed_mean(bc, seeds) + cfg.alpha * cfg.q_coef * q_loss

        with torch.no_grad():
            usage = torch.zeros(*k_star.shape[:-1], cands.shape[-2], device=cands.device).scatter_add_(
                -1, k_star, torch.ones_like(k_star, dtype=torch.float32))  # [*lead, K]
            share = usage / k_star.shape[-1]
            pairwise, divergence = candidate_geometry(cands, seeds)
            metrics = {
                "training/actor_loss": loss.detach(),
                "training/bc_loss": seed_mean(bc.detach() / d_a, seeds),  # routed BC, per action dimension
                "training/actor_q_loss": q_loss.detach(),
                "training/q_pi": seed_mean(q.detach(), seeds),
                "training/candidate_pairwise_dist": pairwise,
                "training/candidate_divergence": divergence,
                "training/winner_usage_entropy": -(share * share.clamp_min(1e-12).log()).sum(-1),
                "training/winner_usage_max": share.amax(-1),
            }
        return loss, metrics, k_star

    def losses(self, batch: Batch, step: int) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        cfg = self.config
        obs = batch.observations
        b = obs.shape[-2]  # [*lead, B, o]
        # Every draw from self.rng: one stream per seed when seed-batched (algorithms/seeds.py).
        z = self.sample_latents((b, cfg.num_candidates), obs.device, self.rng)  # Algorithm 1 line 3
        actor_loss, metrics, k_star = self.actor_loss(obs, batch.actions, z)
        self.winner_counts.scatter_add_(-1, k_star, torch.ones_like(k_star))  # [*lead, K]: per seed
        with torch.no_grad():  # line 6: the TD target uses the actor's own single-sample action
            next_actions = self.policy(batch.next_observations, self.sample_latents((b,), obs.device, self.rng))
        critic_loss, critic_metrics = self.critic.losses(batch, cfg.discount, next_actions)  # line 7, Eq. 9
        metrics.update(critic_metrics)
        return critic_loss + actor_loss, metrics

    def after_step(self, step: int) -> None:
        self.critic.update_target()

    # ------------------------------------------------------------------ inference

    @torch.no_grad()
    def act(self, obs: torch.Tensor, t: torch.Tensor, knobs) -> ActOutput:
        """Eq. 6: ONE latent sample per state, one forward pass."""
        return ActOutput(self.policy(obs, self.sample_latents(obs.shape[:-1], obs.device)))

    @torch.no_grad()
    def propose(self, obs: torch.Tensor, n: int) -> torch.Tensor:
        """n latent samples per state, [B, n, d_a] (the candidate set with K = n)."""
        return self.candidates(obs, self.sample_latents((obs.shape[0], n), obs.device))

    # ------------------------------------------------------------------ routing analysis

    @torch.no_grad()
    def diagnostics(self, batch: Batch) -> dict[str, float]:
        """Sec. 5.3 metrics on a batch with fresh latents, plus the per-index winner shares."""
        z = self.sample_latents((len(batch), self.config.num_candidates), batch.observations.device)
        cands = self.candidates(batch.observations, z)
        k_star, d2 = route(cands, batch.actions)
        pairwise, divergence = candidate_geometry(cands)
        out = {
            "diagnostics/bc_loss": float(gather_winner(d2, k_star).mean() / cands.shape[-1]),
            "diagnostics/candidate_pairwise_dist": float(pairwise),
            "diagnostics/candidate_divergence": float(divergence),
        }
        share = torch.bincount(k_star, minlength=cands.shape[1]).double() / k_star.numel()
        out.update({f"diagnostics/winner_usage_{k}": float(p) for k, p in enumerate(share.tolist())})
        return out
