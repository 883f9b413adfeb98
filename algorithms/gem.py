"""GEM: Guided Expectation-Maximization with behaviour-normalised candidate selection.

Wang et al. 2026 (arXiv 2603.23232). Equation numbers below are the paper's.

Phase I, training (Algorithm 2). Three models with disjoint parameters, one optimizer and ONE
backward per update: each loss sees the other models' outputs detached, so summing them gives
each model its own gradient. Algorithm 2 steps V, then Q, then the actor in sequence; here all
three step simultaneously from the same batch (Q's target uses V before this step's update, as
in the repository's IQL), the documented difference that saves two backward passes:
  1. Behaviour GMM mu_phi(a|s), K_b components, state-independent clamped log-std (Eq. 48-49),
     fit by MLE:  L_mu = E[-log mu_phi(a|s)]  (Eq. 52-54). It is trained during the first
     `gmm_pretrain_steps` updates and then frozen (`gmm_freeze_after_pretrain`), or always.
     Algorithm 2 fits it before the main loop; nothing in the main loop reads mu_phi, so
     training it alongside is the same model (the documented difference: the actor and critic
     also learn during those first steps, which saves a separate phase).
  2. Critic ensemble + expectile V, the shared IQL critic with Q_min in training (Eq. 60-68):
     L_V = E[|tau - 1(u<0)| u^2], u = Qtgt_min(s,a) - V(s);  L_Q = E[mean_i (Q_i - r - g(1-d)V(s'))^2]
     (the core sums over the M members instead of averaging: a constant factor on parameters
     only Q owns, which Adam's update is invariant to).
  3. Actor GMM pi_theta, K components, state-independent log-std (Eq. 24), guided EM-style:
     u_k = log w_k(s) + log N(a; mu_k(s), Sigma_k)                          (Eq. 26)
     gamma = softmax_k(u_k), detached by default (`detach_gamma`)            (Eq. 28, 37)
     ELBO_loose = sum_k gamma_k u_k                                         (Eq. 36)
     omega = min(exp(beta (Qtgt_min(s,a) - V(s))), omega_max), A detached    (Eq. 68-69)
     L_pi = E[omega * (-ELBO_loose)] - alpha_H E_s[H(w(s))],
            H(w) = -sum_k w_k log(w_k + 1e-6)                                (Eq. 43-44, 70-71)

Seed-batched training (algorithms/seeds.py): the losses are written over [*lead, B] with
per-seed means, so S stacked seeds train as one model; an update draws no random numbers
beyond its minibatch indices, and the behaviour-GMM freeze depends on the step only, so it
falls on the same update for every seed.

Phase II, inference (Algorithm 1) in `act`, batched over states and candidates (one forward
of the actor, the behaviour GMM and the critic ensemble per call; rule in algorithms/selection.py):
  anchor a_0 = mu_{k*}(s), k* = argmax_k w_k(s) (Eq. 6, 77); `anchor=bary`: sum_k w_k mu_k;
  `anchor=off`: no anchor. a_1..a_N from ONE source, actor or behaviour (Eq. 7); candidates
  are clipped to the action box [-1, 1] before scoring (so the scored action is the executed one);
  Score = LCB_lambda + w_p z(log mu_phi)  (Eq. 3, 4, 11); mean of the top-k_smooth (Eq. 15);
  w_p(t) cosine-annealed from 1 to w_end over the episode horizon (Sec. 4.2).
Audits per step (Sec. 4.1): violation (z(log mu_phi(a*|s)) < -2), collapse_dist (|a* - nearest
behaviour component mean|), support_z (z of a*), with a* the top-1 before smoothing.
Diagnostic: NLL gap = NLL_top1 - NLL_gmm on dataset actions (Eq. 72-75), `nll_gap`.

Values the paper does not give (our documented choices, all config fields): ensemble size M,
K, beta, omega_max, alpha_H, log-std range and initial value, pretrain length. They follow the IQL backbone the
paper builds on (CORL: 2 x 256, twin Q, expectile 0.7, beta 3, exp-advantage clip 100).

The ensemble size M (`num_q`, default 2). The paper writes the critics only as {Q_i}_{i=1}^M
(Sec. 3, App. B.2, E.2) and never gives M; there is no public code. M = 2 is IQL's twin Q, the
smallest ensemble with a spread. Its consequence for the LCB: with M = 2 the population std is
|Q1 - Q2| / 2, so LCB_lambda = mean - lambda std = min(Q1, Q2) - (lambda - 1) |Q1 - Q2| / 2, and at
lambda = 1 (the Locomotion / Maze2D knob) the "conservative ensemble LCB" is EXACTLY the min
reducer training already uses (tests/test_method_options.py); only lambda != 1 (antmaze 3.5:
min - 1.25 |Q1 - Q2|) makes it something else. M > 2 makes the LCB differ from the min at any
lambda. Evidence for keeping 2 (perf/gem_ensemble_size.py; README "GEM's critic ensemble size M"):
M in {2, 5, 10} on the toy suite (4 tasks x 3 seeds, 2000 updates: mean 86.0 for each M) and
maze2d-local/umaze (2 seeds, 3000 updates: 3.1 / 2.2 / 4.1) score within seed noise of one
another, while M = 10 costs 1.6x the update time (toy) and 2.3x the evaluation time (N = 1024).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar, Literal

import torch
from modebench.algorithms.base import (
    ActOutput,
    AlgoConfig,
    Algorithm,
    Batch,
    EnvSpec,
    Phase,
)
from modebench.algorithms.config import (
    MAX_CANDIDATES,
    MAX_COMPONENTS,
    MAX_ENSEMBLE,
    MAX_WIDTH,
    Checked,
    ConfigError,
    field,
    require,
)
from modebench.algorithms.critics import ExpectileCritic, awr_weight
from modebench.algorithms.nets import DiagonalGMM, GMMPolicy
from modebench.algorithms.optim import make_adam
from modebench.algorithms.seeds import seed_mean
from modebench.algorithms.selection import rerank, support_weight


@dataclass
class GEMConfig(AlgoConfig):
    hidden_dims: tuple[int, ...] = field((256, 256), help="width of every MLP (actor, behaviour GMM, Q, V)", ge=1, le=MAX_WIDTH)
    lr: float = field(3e-4, help="Adam learning rate for every network", gt=0.0)
    # critic (shared IQL critic, App. E)
    num_q: int = field(2, help="M, critic ensemble size (paper silent; IQL's twin Q). Q_min in training, LCB at inference", ge=1, le=MAX_ENSEMBLE)
    expectile: float = field(0.7, help="tau of the expectile value loss (Eq. 65); 0.9 on antmaze (IQL)", gt=0.0, lt=1.0)
    target_tau: float = field(0.005, help="Polyak rate of the target Q (Eq. 62)", gt=0.0, le=1.0)
    # actor (App. C)
    num_components: int = field(5, help="K, actor mixture components (paper silent)", ge=1, le=MAX_COMPONENTS)
    beta: float = field(3.0, help="guidance inverse temperature in omega = exp(beta A) (Eq. 69); 10 on antmaze (IQL)", ge=0.0)
    omega_max: float = field(100.0, help="cap of omega (EXP_ADV_MAX, Eq. 69)", gt=0.0)
    gate_entropy_coef: float = field(0.01, help="alpha_H, gating-entropy bonus (Eq. 43-44, 71)", ge=0.0)
    detach_gamma: bool = field(True, help="stop-gradient on responsibilities: the EM M-step (Eq. 37)")
    # behaviour density (App. D)
    behavior_components: int = field(5, help='K of mu_phi (paper: "K-component", same symbol as the actor)', ge=1, le=MAX_COMPONENTS)
    gmm_pretrain_steps: int = field(100_000, help="updates that fit mu_phi by MLE (Eq. 54)", ge=0)
    gmm_freeze_after_pretrain: bool = field(True, help="freeze mu_phi after gmm_pretrain_steps")
    # both GMMs
    log_std_min: float = field(-5.0, help="clamp of the state-independent log-std (Eq. 49)")
    log_std_max: float = field(2.0, help="upper clamp of the state-independent log-std (Eq. 49)")
    init_log_std: float = field(-1.0, help="initial log-std of every component (paper silent; why not 0: the comment below)")
    # std 1 on the [-1, 1] box every component covers every mode and MLE by SGD merges modes and
    # starves components (toy four-goal: 2 of 5 components alive, 3/3 seeds); -1 finds all 4.

    def check(self) -> None:
        require(self.log_std_min < self.log_std_max,
                f"log_std_min must be < log_std_max, got {self.log_std_min} >= {self.log_std_max}")
        require(self.log_std_min <= self.init_log_std <= self.log_std_max,
                f"init_log_std must be in [log_std_min, log_std_max], got {self.init_log_std}")


@dataclass
class GEMKnobs(Checked):
    """Inference-only knobs (Algorithm 1): sweepable from one checkpoint, no retraining."""

    ALIASES: ClassVar[dict[str, str]] = {"lambda": "lcb_lambda"}  # the paper's name (a Python keyword)
    N: int = field(1024, help="candidate budget: sampled candidates besides the anchor (Table 7: 0..2048)", ge=0, le=MAX_CANDIDATES)
    lcb_lambda: float = field(1.0, help="lambda, pessimism of LCB = mean - lambda std (Eq. 3); antmaze 3.5", ge=0.0)
    w_end: float = field(0.4, help="terminal support weight of the cosine w_p schedule (Sec. 4.2); antmaze 0.2", ge=0.0)
    use_pw: bool = field(True, help="support term on; False is the no-pw ablation (w_p = 0, Table 5)")
    k_smooth: int = field(1, help="output the mean of the top-k candidates (Eq. 15); 1 = top-1", ge=1, le=MAX_CANDIDATES)
    candidate_source: Literal["actor", "behavior"] = field("actor", help="single source of a_1..a_N (Eq. 7)")
    support_mode: Literal["zscore", "raw"] = field("zscore", help="candidate-set z-score (Eq. 11) or raw log mu_phi")
    anchor: Literal["mode", "off", "bary"] = field("mode", help="a_0 = mu_{k*} (Eq. 6), none, or sum_k w_k mu_k")

    def check(self) -> None:
        require(self.N >= 1 or self.anchor != "off", "N must be >= 1 when anchor='off' (the candidate set would be empty)")


def nll_gap(gmm: DiagonalGMM, actions: torch.Tensor) -> dict[str, torch.Tensor]:
    """NLL-gap diagnostic on dataset actions (App. F, Eq. 72-75).

    NLL_gmm  = E[-log sum_k w_k N(a; mu_k, Sigma_k)]                    (Eq. 72)
    NLL_top1 = E[-log N(a; mu_{k*}, Sigma_{k*})], k* = argmax_k w_k(s)   (Eq. 73-74; no weight)
    gap      = NLL_top1 - NLL_gmm                                       (Eq. 75)"""
    nll_gmm = -gmm.log_prob(actions).mean()
    k_star = gmm.log_weights.argmax(-1, keepdim=True)
    nll_top1 = -gmm.component_log_probs(actions).gather(-1, k_star).squeeze(-1).mean()
    return {"nll_gmm": nll_gmm, "nll_top1": nll_top1, "gap": nll_top1 - nll_gmm}


def per_candidate(gmm: DiagonalGMM) -> DiagonalGMM:
    """The state's mixture broadcast over a candidate axis: log_prob([B, C, d]) -> [B, C].

    Parameters get a singleton candidate axis (a view, not an expanded copy), so the
    per-component work is done once per state and only the [B, C, K] log-densities scale with C."""
    return DiagonalGMM(gmm.log_weights.unsqueeze(-2), gmm.means.unsqueeze(-3), gmm.log_stds.unsqueeze(-3))


class GEM(Algorithm):
    name = "gem"
    config_class = GEMConfig
    knobs_class = GEMKnobs
    can_propose = True
    can_select = True

    def __init__(self, config: GEMConfig, spec: EnvSpec, device="cpu"):
        super().__init__(config, spec, device)
        gmm_kwargs = dict(
            hidden_dims=config.hidden_dims,
            log_std_min=config.log_std_min,
            log_std_max=config.log_std_max,
            init_log_std=config.init_log_std,
        )
        self.behavior = GMMPolicy(spec.obs_dim, spec.act_dim, config.behavior_components, **gmm_kwargs)
        self.critic = ExpectileCritic(
            spec.obs_dim, spec.act_dim, config.hidden_dims, config.num_q, config.expectile, config.target_tau
        )
        self.actor = GMMPolicy(spec.obs_dim, spec.act_dim, config.num_components, **gmm_kwargs)
        self.to(self.device)
        self.optimizer = make_adam(
            [{"params": self.behavior.parameters()}, {"params": self.critic.parameters()}, {"params": self.actor.parameters()}],
            config.lr,
            self.device,
        )

    # ------------------------------------------------------------------ Phase I (Algorithm 2)

    def behavior_loss(self, batch: Batch) -> torch.Tensor:
        """L_mu = E[-log mu_phi(a|s)] (Eq. 54), log mu_phi by log-sum-exp (Eq. 52-53); per seed."""
        return -seed_mean(self.behavior(batch.observations).log_prob(batch.actions), self.seeds)

    def actor_loss(self, batch: Batch, advantage: torch.Tensor | None = None) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """L_pi = E[omega (-ELBO_loose)] - alpha_H E[H(w(s))] (Eq. 26-28, 36, 69-71), one value per
        seed (expectations over each seed's own minibatch [*lead, B]).
        `advantage`: Qtgt_min(s, a) - V(s) when the critic's loss pass already computed it."""
        seeds = self.seeds
        cfg = self.config
        gmm = self.actor(batch.observations)
        u = gmm.joint_log_probs(batch.actions)  # u_k = log w_k + log N_k        (Eq. 26)
        # responsibilities (Eq. 28), detached by default: gamma held fixed gives the M-step
        # gradient (Eq. 37). exp(u - logsumexp u) rather than ATen's softmax, whose CPU kernel
        # over a short last axis (K = 5) costs 2-3x as much, and more so on [S, B, K].
        u_gamma = u.detach() if cfg.detach_gamma else u
        gamma = torch.exp(u_gamma - torch.logsumexp(u_gamma, dim=-1, keepdim=True))
        elbo_loose = (gamma * u).sum(-1)  #                                        (Eq. 36)
        if advantage is None:
            advantage = self.critic.advantage(batch.observations, batch.actions)  # Qtgt_min - V (Eq. 68)
        omega = awr_weight(advantage, cfg.beta, cfg.omega_max)  #                  (Eq. 69)
        gate_entropy = gmm.gating_entropy()  # -sum_k w_k log(w_k + 1e-6)          (Eq. 43)
        gate_entropy_mean = seed_mean(gate_entropy, seeds)
        loss = seed_mean(omega * -elbo_loose, seeds) - cfg.gate_entropy_coef * gate_entropy_mean  # (Eq. 71)
        return loss, {
            "training/actor_loss": loss.detach(),
            "training/elbo_loose": seed_mean(elbo_loose.detach(), seeds),
            "training/omega_mean": seed_mean(omega, seeds),
            "training/gating_entropy": gate_entropy_mean.detach(),
        }

    @classmethod
    def phases(cls, config: GEMConfig) -> list[Phase]:
        """The behaviour-GMM fit runs alongside the critic and actor; its end matters only when
        mu_phi is frozen after it."""
        if not config.gmm_freeze_after_pretrain:
            return []
        # the paper gives no length (App. D.3: "gmm pretrain steps iterations"): none published
        return [Phase("behaviour-GMM fit", "gmm_pretrain_steps", config.gmm_pretrain_steps, blocking=False,
                      loss="training/behavior_nll", instead="gmm_freeze_after_pretrain=false")]

    def training_behavior(self, step: int) -> bool:
        return step < self.config.gmm_pretrain_steps or not self.config.gmm_freeze_after_pretrain

    def losses(self, batch: Batch, step: int) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        critic_loss, metrics, advantage = self.critic.losses(batch, self.config.discount, return_advantage=True)  # Eq. 60-68
        actor_loss, actor_metrics = self.actor_loss(batch, advantage)
        loss = critic_loss + actor_loss
        metrics.update(actor_metrics)
        if self.training_behavior(step):
            behavior_loss = self.behavior_loss(batch)
            loss = loss + behavior_loss
            metrics["training/behavior_nll"] = behavior_loss.detach()
        return loss, metrics

    def after_step(self, step: int) -> None:
        self.critic.update_target()  # Polyak (Eq. 62)

    # ------------------------------------------------------------------ Phase II (Algorithm 1)

    @staticmethod
    def anchor_action(gmm: DiagonalGMM, kind: str) -> torch.Tensor:
        """a_0 = mu_{k*}(s), k* = argmax_k w_k(s) (Eq. 6, 77); 'bary': sum_k w_k mu_k. [B, d]."""
        if kind == "bary":
            return (gmm.weights.unsqueeze(-1) * gmm.means).sum(-2)
        k_star = gmm.log_weights.argmax(-1)
        return gmm.means.gather(-2, k_star.view(-1, 1, 1).expand(-1, 1, gmm.means.shape[-1])).squeeze(-2)

    def candidates(self, obs: torch.Tensor, knobs: GEMKnobs) -> tuple[torch.Tensor, DiagonalGMM]:
        """C(s) = {a_0, a_1..a_N}: anchor + N samples from ONE source (Eq. 1, 5-7), [B, |C|, d].

        Also returns the behaviour GMM at obs (its single forward serves sampling and support)."""
        actor = self.actor(obs)
        behavior = self.behavior(obs)
        parts = []
        if knobs.anchor != "off":
            parts.append(self.anchor_action(actor, knobs.anchor).unsqueeze(1))
        if knobs.N > 0:
            source = actor if knobs.candidate_source == "actor" else behavior
            parts.append(source.sample(knobs.N))  # z ~ Cat(w), a ~ N(mu_z, Sigma_z) (Eq. 76)
        return torch.cat(parts, dim=1).clamp(-1.0, 1.0), behavior

    @torch.no_grad()
    def act(self, obs: torch.Tensor, t: torch.Tensor, knobs: GEMKnobs | None = None) -> ActOutput:
        knobs = knobs if knobs is not None else self.default_knobs()
        cands, behavior = self.candidates(obs, knobs)
        return self.select(obs, t, cands, knobs, behavior)

    @torch.no_grad()
    def selection_candidates(self, proposer: Algorithm, obs: torch.Tensor, t: torch.Tensor, proposer_knobs: Any,
                             knobs: GEMKnobs) -> torch.Tensor:
        """C(s) = {a_0} + {a_1..a_N} from another method (benchmarks/run/compose.py): a_0 = the
        proposer's own action (`own_action`: its `act`, or GEM's anchor mu_{k*}(s) for a GEM
        proposer; left out with anchor='off'), a_i ~ proposer.propose(s, N); clipped to the box.
        With this checkpoint as its own proposer the set is `candidates`' (same draws), so the
        composition is GEM's `act`, bitwise; N = 0 is the proposer alone."""
        parts = []
        if knobs.anchor != "off":
            parts.append(proposer.own_action(obs, t, proposer_knobs).unsqueeze(1))
        if knobs.N > 0:
            parts.append(proposer.propose(obs, knobs.N))
        return torch.cat(parts, dim=1).clamp(-1.0, 1.0)

    def check_selection_knobs(self, knobs: GEMKnobs) -> None:
        """The knobs that mean something else when another method proposes."""
        if knobs.candidate_source != "actor":
            raise ConfigError("candidate_source=behavior samples the selector's behaviour density, not the proposer; with "
                              "--select-with the candidates are the proposer's: leave candidate_source at actor")
        if knobs.anchor == "bary":
            raise ConfigError("anchor=bary is GEM's barycentre of its own actor; with --select-with the anchor is the "
                              "proposer's own action: use anchor=mode (the default) or anchor=off")

    @torch.no_grad()
    def select(self, obs: torch.Tensor, t: torch.Tensor, candidates: torch.Tensor, knobs: GEMKnobs,
               behavior: DiagonalGMM | None = None) -> ActOutput:
        """Algorithm 1, lines 6-18, on a candidate set [B, |C|, d] from any source: GEM's own
        (`act`) or another method's proposals (`selection_candidates`). This checkpoint's critic
        ensemble and behaviour density score them; w_p follows the schedule over this task's horizon.
        `behavior`: mu_phi at obs when the caller already has it (one forward serves both)."""
        behavior = behavior if behavior is not None else self.behavior(obs)
        if knobs.use_pw:
            w_p = support_weight(t.to(obs.device), self.spec.horizon, knobs.w_end)  # [B]
        else:
            w_p = 0.0  # no-pw ablation
        # Support is ALWAYS log mu_phi(a|s) under the behaviour GMM, never the actor (App. D.5).
        sel = rerank(
            obs,
            candidates,
            q_ensemble=self.critic.q,  # one forward: [M, B, |C|]
            support_log_prob=lambda _obs, a: per_candidate(behavior).log_prob(a),  # [B, |C|]
            lcb_lambda=knobs.lcb_lambda,
            w_p=w_p,
            support_mode=knobs.support_mode,
            k_smooth=knobs.k_smooth,
        )
        collapse = (sel.top1.unsqueeze(1) - behavior.means).norm(dim=-1).min(-1).values
        audits = {"violation": sel.violation, "collapse_dist": collapse, "support_z": sel.support_z}
        return ActOutput(sel.actions.clamp(-1.0, 1.0), audits)

    @torch.no_grad()
    def own_action(self, obs: torch.Tensor, t: torch.Tensor, knobs: GEMKnobs | None = None) -> torch.Tensor:
        """GEM's action before selection: its anchor a_0 = mu_{k*}(s) (Eq. 6), or sum_k w_k mu_k
        with anchor='bary', in the action box [B, d]."""
        kind = "bary" if knobs is not None and knobs.anchor == "bary" else "mode"
        return self.anchor_action(self.actor(obs), kind).clamp(-1.0, 1.0)

    @torch.no_grad()
    def propose(self, obs: torch.Tensor, n: int) -> torch.Tensor:
        """n actor samples per state, clipped to the action box: [B, n, d]."""
        return self.actor(obs).sample(n).clamp(-1.0, 1.0)

    # ------------------------------------------------------------------ diagnostics (App. F)

    @torch.no_grad()
    def diagnostics(self, batch: Batch) -> dict[str, float]:
        """NLL gap (Eq. 72-75) of the actor and of the behaviour GMM on the batch's actions."""
        out: dict[str, float] = {}
        for name, model in (("actor", self.actor), ("behavior", self.behavior)):
            for key, value in nll_gap(model(batch.observations), batch.actions).items():
                out[f"diagnostics/{name}_{key}"] = float(value)
        return out
