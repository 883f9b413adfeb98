"""ISEP and ISEP-FM: Implicit Support Expansion via stochastic Policy optimization.

Paper: arXiv 2605.18320 (no public code). Its text extraction lost every formula; the equations
below are reconstructed from the text and from CFGRL (Frans et al. 2025), which ISEP-FM builds on. Each reconstructed choice is a
config value.

Shared by both variants (Sec. 4.1):
  L_Q = sum_j E_D[(Q_j(s, a) - r - gamma (1 - d) V(s'))^2]                        (Eq. 3)
  L_V = (1 - lam) E_D[L_tau(Qtgt(s, a) - V(s))] + lam E_{s~D, a~pi}[L_tau(Qtgt(s, a) - V(s))]
                                                                                    (Eq. 2)
  Eq. 2 is implemented as a per-sample gate b ~ Bernoulli(lam): the action in the expectile
  term is a detached policy sample where b = 1, the dataset action where b = 0, so lam = 0 is
  IQL's value objective exactly (same numbers: `ExpectileCritic.losses` with value_actions
  equal to the dataset actions). Qtgt = min over the target ensemble. Policy samples are
  clipped to the action box [-1, 1] before the critic sees them.
  The value gate and the actor / flow-target gate (Eq. 5, Eq. 6) are independent draws; one
  set of policy samples a~ per update serves both. ISEP-FM draws a~ only on the rows one of
  the gates picked (a fraction 1 - (1 - lam)^2 of the batch): the other rows never read it, and
  its T-step sampler is most of an update's arithmetic.

Seed batching (algorithms/seeds.py): every tensor of the losses is [*lead, B, ...] with lead =
() for one seed and (S,) for S seeds trained as one model. Each seed draws its gates, policy
samples and flow noise from its own generator (`self.rng`), in the order and the shapes it
draws them alone, so seed s of a batch is seed s trained alone. ISEP-FM samples its policy on
the gated rows only; the kit's `PickedRows` takes them per seed (padded to the largest count of
the batch; one seed costs what it did before). `training/policy_q_mean` (ISEP-FM) is logged on the
updates where every seed of the batch sampled a row: a seed alone logs it when it sampled, and
the trainer averages each metric over the updates that report it, so a batched seed's figure
is its own mean over a subset of its updates, never a zero or NaN stand-in.

ISEP (Gaussian actor, Sec. 4.2), `selection`:
  "stochastic" (the method, Eq. 5 / Eq. 30): per sample, b ~ Bernoulli(lam);
      target = a~ (detached policy sample) if b else a (dataset action);
      L_pi = E[w(s, target) (-log pi(target | s))],  w = min(exp(beta (Qtgt_min - V)), w_max).
  "deterministic" (Sec. 5.3.3 baseline the paper argues against, App. B Eq. 29): regress on
      the weighted arithmetic mean of the two targets,
      c_D = (1 - lam) w(s, a), c_pi = lam w(s, a~), abar = (c_D a + c_pi a~) / (c_D + c_pi),
      L_pi = E[(c_D + c_pi) (-log pi(abar | s))]  (for a fixed-std Gaussian this has the same
      gradient in the mean as Eq. 26; the target itself is the "mode-collapsed" average).
  "weighted-sum" (App. B Eq. 26, literal): L_pi = E[c_D (-log pi(a|s)) + c_pi (-log pi(a~|s))].
  `gate` = "sample" draws b per minibatch element (SPEC; App. B "Remark on batch dynamics");
  "batch" draws one b per update (App. B Remark: "b fixed per optimization step").
  The actor is IQL's (tanh mean, state-independent log-std in [-20, 2], cosine LR, evaluated
  at its mean), so ISEP with lam = 0 is the core IQL, update for update.

ISEP-FM (conditional flow matching with classifier-free guidance, Sec. 4.4, Eq. 6-7):
  x_0 ~ N(0, I), t ~ U(0, 1), x_t = (1 - t) x_0 + t x_1, target velocity x_1 - x_0;
  x_1 = a~ (detached sample of the current guided policy) with prob. lam, else a   (Eq. 6)
  o = POS if A(s, x_1) > adv_threshold else NEG  (A = Qtgt_min(s, x_1) - V(s), detached),
  o <- NULL with probability p_uncond (CFG dropout);
  L_flow = E[|v_theta(x_t, t, s, o) - (x_1 - x_0)|^2].
  Inference (Eq. 7): Euler over T steps from x_0 ~ N(0, I) with
  v = v(null) + w (v(pos) - v(null)), then clip to [-1, 1]. Both branches are evaluated in ONE
  batched forward per Euler step (null and pos rows concatenated); w = 0 and w = 1 need only
  one branch (exactly v(null) / v(pos)) and are evaluated as such. w and T are inference-only
  knobs (`ISEPFMKnobs`); the self-samples used in training come from the same sampler with
  the training-time config values `sample_guidance` and `sample_steps`.

CFGRL variants as config values (its code: github kvfrans/cfgrl_submit, ogbench/agents/
flowiql.py; numbers only, no code copied):
  - token_scheme "three" (default): tokens NULL, NEG, POS (both ISEP's o in {0, 1} + null and
    CFGRL's code: labels 0 = null, 1 = negative, 2 = positive advantage);
    "two": tokens NULL and POS only, p(a|s, POS) proportional to p(a|s) 1[A > 0] -- a
    non-positive sample trains only the null branch (it is masked out of the loss unless its
    token was dropped to NULL).
  - token_rule "gt" (ISEP text: A > 0) or "ge" (CFGRL code: adv >= adv_threshold).
  - token_critic "target" (Qtgt_min - V, as in the AWR weight) or "online" (CFGRL code:
    min of the online critics - V).
  - CFGRL code's sizes: flow 4 x 512 GELU, critics 4 x 512 with LayerNorm, token embedding
    32, expectile 0.9, 16 Euler steps, batch 1024, guidance 1 (registry preset "cfgrl"
    sets these with lam = 0). ISEP's defaults: Mish flow MLP (Sec. 5.1.2), IQL critics
    2 x 256, batch 256, T = 10.

Update order: all losses are computed from the same batch and parameters and summed; ONE
backward and one Adam step per update. Every cross-term is detached (policy samples, AWR
weights, optimality tokens), so this equals separate V / Q / actor steps from the same
parameters (the paper's Algorithm 1 order is not recoverable from the extraction; CFGRL's
code also takes one joint step).

Divergence: the paper reports (Sec. 5.3.1) that lam >= 0.5-0.7 diverges on D4RL. Nothing here
guards against it; `training/policy_q_mean` (Q of the policy samples) shows it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from modebench.algorithms.base import ActOutput, AlgoConfig, Algorithm, Batch, EnvSpec
from modebench.algorithms.config import MAX_ENSEMBLE, MAX_WIDTH, Checked, field
from modebench.algorithms.critics import ExpectileCritic, aggregate, awr_weight
from modebench.algorithms.iql import IQL, IQLConfig
from modebench.algorithms.nets import (
    ACTIVATIONS,
    FlowVelocityNet,
    LayerNormPlacement,
    euler_integrate,
)
from modebench.algorithms.optim import make_adam
from modebench.algorithms.seeds import PickedRows, SeedRandom, seed_mean

# --------------------------------------------------------------------------- shared pieces


def bernoulli_gate(
    n: int, lam: float, device: torch.device | None = None, per_sample: bool = True, rng: SeedRandom | None = None
) -> torch.Tensor:
    """b ~ Bernoulli(lam), [*lead, n] bools: per minibatch element, or one draw shared by the
    batch. lam = 0 gives all False and lam = 1 all True exactly (rand is in [0, 1)). Drawn on the
    host, from `rng`'s host generators (one per seed: [S, n] for a seed-batched rng) or torch's
    global one, then moved to `device` (kept on the host if None), so a caller can read which
    rows are gated without waiting for an accelerator."""
    shape = n if per_sample else 1
    draw = torch.rand(shape) if rng is None else rng.rand(shape)
    gate = (draw < lam).expand(*draw.shape[:-1], n)
    return gate if device is None else gate.to(device, non_blocking=True)


def interpolated_value_loss(
    critic: ExpectileCritic, batch: Batch, discount: float, policy_actions: torch.Tensor, gate: torch.Tensor
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Eq. 2 (+ Eq. 3): the expectile term sees the policy sample where gate = 1, the dataset
    action elsewhere; the Q regression (Eq. 3) always uses dataset transitions."""
    value_actions = torch.where(gate.unsqueeze(-1), policy_actions.detach(), batch.actions)
    loss, metrics = critic.losses(batch, discount, value_actions=value_actions)
    metrics["training/value_gate_rate"] = seed_mean(gate.float(), critic.seeds)
    return loss, metrics


# --------------------------------------------------------------------------- ISEP (Gaussian)


@dataclass
class ISEPConfig(IQLConfig):
    """IQL's fields and defaults (2 x 256 nets, twin Q, expectile 0.7 / beta 3, clip 100, cosine
    actor LR; Tables 3-4 set expectile 0.7 / 0.8 and beta 0.05-5 per task) plus ISEP's own."""

    lam: float = field(0.3, help="interpolation lambda of Eq. 2 / Eq. 5 (Tables 3-4: 0.2-0.5; 0 = IQL)", ge=0.0, le=1.0)
    selection: Literal["stochastic", "deterministic", "weighted-sum"] = field("stochastic", help="Eq. 5 / Eq. 29 / Eq. 26")
    gate: Literal["sample", "batch"] = field("sample", help="Bernoulli gate per minibatch element or per update")


class ISEP(IQL):
    """Gaussian ISEP: interpolated expectile value (Eq. 2) + stochastic action selection (Eq. 5).

    IQL's networks, optimizer and cosine actor LR, built in the same order (so lam = 0 starts
    from IQL's weights for a seed); only the losses and the act audit differ."""

    name = "isep"
    config_class = ISEPConfig
    can_propose = True

    def gate(self, n: int) -> torch.Tensor:
        return bernoulli_gate(n, self.config.lam, self.device, self.config.gate == "sample", self.rng)

    def weight(self, obs: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        """w(s, a) = min(exp(beta (Qtgt_min(s, a) - V(s))), w_max), detached."""
        return awr_weight(self.critic.advantage(obs, actions), self.config.beta, self.config.max_weight)

    def actor_loss(
        self, obs: torch.Tensor, actions: torch.Tensor, policy_actions: torch.Tensor, gate: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        cfg = self.config
        if cfg.selection == "stochastic":  # Eq. 5 / Eq. 30: pick one target per sample
            target = torch.where(gate.unsqueeze(-1), policy_actions, actions)
            weight = self.weight(obs, target)
            return seed_mean(weight * -self.actor.log_prob(obs, target), self.seeds), seed_mean(weight, self.seeds)
        c_data = (1.0 - cfg.lam) * self.weight(obs, actions)
        c_pi = cfg.lam * self.weight(obs, policy_actions)
        if cfg.selection == "deterministic":  # Eq. 29: the weighted mean of the two targets
            total = (c_data + c_pi).clamp_min(1e-12)
            target = (c_data.unsqueeze(-1) * actions + c_pi.unsqueeze(-1) * policy_actions) / total.unsqueeze(-1)
            return seed_mean((c_data + c_pi) * -self.actor.log_prob(obs, target), self.seeds), seed_mean(c_data + c_pi, self.seeds)
        # weighted-sum, Eq. 26
        loss = c_data * -self.actor.log_prob(obs, actions) + c_pi * -self.actor.log_prob(obs, policy_actions)
        return seed_mean(loss, self.seeds), seed_mean(c_data + c_pi, self.seeds)

    def losses(self, batch: Batch, step: int) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        cfg = self.config
        obs = batch.observations
        n = obs.shape[-2]
        with torch.no_grad():  # a~ ~ pi(.|s), detached, in the action box (what Normal.sample() draws, from self.rng)
            pi = self.actor(obs)
            policy_actions = (pi.loc + pi.scale * self.rng.randn_like(pi.loc)).clamp(-1.0, 1.0)
        critic_loss, metrics = interpolated_value_loss(self.critic, batch, cfg.discount, policy_actions, self.gate(n))  # Eq. 2-3
        actor_gate = self.gate(n)
        actor_loss, weight_mean = self.actor_loss(obs, batch.actions, policy_actions, actor_gate)  # Eq. 5
        metrics["training/actor_loss"] = actor_loss.detach()
        metrics["training/adv_weight_mean"] = weight_mean
        metrics["training/actor_gate_rate"] = seed_mean(actor_gate.float(), self.seeds)
        metrics["training/policy_q_mean"] = seed_mean(self.critic.target_q(obs, policy_actions), self.seeds)
        return critic_loss + actor_loss, metrics

    @torch.no_grad()
    def act(self, obs: torch.Tensor, t: torch.Tensor, knobs) -> ActOutput:
        actions = self.actor(obs).mean.clamp(-1.0, 1.0)
        return ActOutput(actions, {"advantage": self.critic.advantage(obs, actions)})


# --------------------------------------------------------------------------- ISEP-FM


@dataclass
class ISEPFMConfig(AlgoConfig):
    lam: float = field(0.3, help="interpolation lambda of Eq. 2 and of the flow target x_1 (Eq. 6); 0 = CFGRL", ge=0.0, le=1.0)
    expectile: float = field(0.7, help="tau of the expectile value (Table 4: 0.7 / 0.8; CFGRL code 0.9)", gt=0.0, lt=1.0)
    p_uncond: float = field(0.1, help="probability the optimality token is replaced by NULL (CFG dropout)", ge=0.0, lt=1.0)
    token_scheme: Literal["three", "two"] = field("three", help="NULL/NEG/POS tokens, or NULL/POS with masking")
    token_rule: Literal["gt", "ge"] = field("gt", help="POS iff A > thr (ISEP) or A >= thr (CFGRL code)")
    adv_threshold: float = field(0.0, help="advantage threshold of the optimality token")
    token_critic: Literal["target", "online"] = field("target", help="Q used in the token's advantage")
    sample_guidance: float = field(1.0, help="guidance w of the self-samples a~ used in training")
    sample_steps: int = field(10, help="Euler steps of the self-samples used in training", ge=1)
    gate: Literal["sample", "batch"] = field("sample", help="Bernoulli gate per minibatch element or per update")
    flow_hidden_dims: tuple[int, ...] = field((512, 512, 512, 512), help="velocity MLP widths (CFGRL code 4 x 512)", ge=1, le=MAX_WIDTH)
    flow_activation: str = field("mish", help="velocity MLP activation (ISEP Sec. 5.1.2: Mish; CFGRL: gelu)", choices=sorted(ACTIVATIONS))
    flow_layer_norm: bool = field(False, help="LayerNorm in the velocity MLP (CFGRL code: off)")
    token_dim: int = field(16, help="optimality-token embedding size (CFGRL code: 32)", ge=1, le=MAX_WIDTH)
    critic_hidden_dims: tuple[int, ...] = field((256, 256), help="Q and V widths (IQL; CFGRL code 4 x 512)", ge=1, le=MAX_WIDTH)
    critic_layer_norm: bool = field(False, help="LayerNorm in Q and V (CFGRL code: on)")
    num_q: int = field(2, help="critic ensemble size (min over members)", ge=1, le=MAX_ENSEMBLE)
    lr: float = field(3e-4, help="Adam learning rate for every network", gt=0.0)
    target_tau: float = field(0.005, help="Polyak rate of the target Q", gt=0.0, le=1.0)
    layer_norm_placement: LayerNormPlacement = field("pre_act", help='hidden LayerNorms: "pre_act" Linear->LN->act (ModeBench\'s), "post_act" Linear->act->LN, learned scale+bias (CFGRL code)')


@dataclass
class ISEPFMKnobs(Checked):
    w: float = field(1.0, help="guidance weight of Eq. 7 (0: unconditional, 1: conditional; Table 4: 0.2-3)", ge=0.0)
    T: int = field(10, help="Euler steps of the guided flow at inference", ge=1)


class ISEPFM(Algorithm):
    """ISEP-FM: interpolated value (Eq. 2) + token-conditioned flow matching on the
    Bernoulli-gated target (Eq. 6) + guided Euler sampling (Eq. 7)."""

    name = "isep-fm"
    config_class = ISEPFMConfig
    knobs_class = ISEPFMKnobs
    can_propose = True

    NULL, NEG = 0, 1  # token ids; POS is the last one (2 for "three", 1 for "two")

    def __init__(self, config: ISEPFMConfig, spec: EnvSpec, device="cpu"):
        super().__init__(config, spec, device)
        self.critic = ExpectileCritic(
            spec.obs_dim, spec.act_dim, config.critic_hidden_dims, config.num_q, config.expectile,
            config.target_tau, layer_norm=config.critic_layer_norm, layer_norm_placement=config.layer_norm_placement,
        )
        num_tokens = 3 if config.token_scheme == "three" else 2
        self.POS = num_tokens - 1
        self.flow = FlowVelocityNet(
            spec.obs_dim, spec.act_dim, config.flow_hidden_dims, config.flow_activation, num_tokens,
            config.token_dim, config.flow_layer_norm, config.layer_norm_placement,
        )
        self.to(self.device)
        self.optimizer = make_adam(list(self.critic.parameters()) + list(self.flow.parameters()), config.lr, self.device)

    # ---- Eq. 7: guided Euler sampling
    def sample(self, obs: torch.Tensor, w: float, steps: int, x0: torch.Tensor | None = None) -> torch.Tensor:
        """Integrate v = v(null) + w (v(pos) - v(null)) from x_0 ~ N(0, I) over `steps` Euler
        steps and clip to [-1, 1]. One forward per step: both branches batched, or the single
        branch w = 0 (null) / w = 1 (pos) needs. obs: [*lead, B, obs_dim]; without `x0` (act,
        propose: one seed) x_0 comes from torch's global generator."""
        lead = obs.shape[:-1]
        if x0 is None:
            x0 = torch.randn(*lead, self.spec.act_dim, device=obs.device, dtype=obs.dtype)
        if w == 0.0 or w == 1.0:
            token = torch.full(lead, self.NULL if w == 0.0 else self.POS, device=obs.device, dtype=torch.long)
            x1 = euler_integrate(lambda x, t: self.flow(x, t, obs, token), x0, steps)
        else:
            obs2 = torch.cat([obs, obs], -2)
            tokens = torch.cat([
                torch.full(lead, self.NULL, device=obs.device, dtype=torch.long),
                torch.full(lead, self.POS, device=obs.device, dtype=torch.long),
            ], -1)

            def guided(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
                v_null, v_pos = self.flow(torch.cat([x, x], -2), torch.cat([t, t], -1), obs2, tokens).chunk(2, -2)
                return v_null + w * (v_pos - v_null)

            x1 = euler_integrate(guided, x0, steps)
        return x1.clamp(-1.0, 1.0)

    # ---- optimality token of Eq. 6
    @torch.no_grad()
    def optimality_tokens(self, obs: torch.Tensor, actions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(token before dropout, positive mask): POS iff A(s, a) > thr ('gt') or >= thr ('ge')."""
        cfg = self.config
        if cfg.token_critic == "target":
            adv = self.critic.advantage(obs, actions)
        else:
            adv = aggregate(self.critic.q(obs, actions), "min") - self.critic.value(obs)
        positive = adv > cfg.adv_threshold if cfg.token_rule == "gt" else adv >= cfg.adv_threshold
        neg = self.NEG if cfg.token_scheme == "three" else self.NULL
        return torch.where(positive, self.POS, neg), positive

    def flow_loss(
        self, obs: torch.Tensor, actions: torch.Tensor, policy_actions: torch.Tensor, gate: torch.Tensor
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        cfg = self.config
        b, d = actions.shape[-2:]
        x1 = torch.where(gate.unsqueeze(-1), policy_actions, actions)  # Eq. 6: Bernoulli-gated target
        token, positive = self.optimality_tokens(obs, x1)
        dropped = self.rng.rand(b, device=obs.device) < cfg.p_uncond
        token = torch.where(dropped, self.NULL, token)
        x0 = self.rng.randn(b, d, device=obs.device, dtype=actions.dtype)
        t = self.rng.rand(b, 1, device=obs.device, dtype=actions.dtype)
        x_t = (1.0 - t) * x0 + t * x1
        err = (self.flow(x_t, t, obs, token) - (x1 - x0)).pow(2).mean(-1)
        if cfg.token_scheme == "three":
            loss = seed_mean(err, self.seeds)
        else:  # "two": a non-positive, non-dropped sample has no token to train
            keep = (dropped | positive).to(err.dtype)
            loss = (err * keep).sum(-1) / keep.sum(-1).clamp_min(1.0)
        return loss, {"training/positive_token_rate": seed_mean(positive.float(), self.seeds),
                      "training/actor_gate_rate": seed_mean(gate.float(), self.seeds)}

    @torch.no_grad()
    def self_samples(
        self, obs: torch.Tensor, actions: torch.Tensor, picked: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """a~ from the current guided policy, detached, on the `picked` rows (a host bool mask
        [*lead, B]); the other rows keep the dataset action, and no gate reads them. Also returns
        Qtgt_min of the samples averaged over the picked rows (None unless every seed picked a row:
        a seed alone logs it only then)."""
        rows = PickedRows(picked, obs.device)  # per seed when seed-batched (algorithms/seeds.py)
        if rows.k == 0:
            return actions, None
        cfg = self.config
        obs_rows = rows.take(obs)
        samples = self.sample(obs_rows, cfg.sample_guidance, cfg.sample_steps, rows.randn(self.rng, self.spec.act_dim, actions))
        policy_actions = rows.put(actions, samples)
        if not rows.every_seed_picked:
            return policy_actions, None
        return policy_actions, rows.mean(self.critic.target_q(obs_rows, samples))

    def losses(self, batch: Batch, step: int) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        cfg = self.config
        obs = batch.observations
        n = obs.shape[-2]
        per_sample = cfg.gate == "sample"
        value_gate = bernoulli_gate(n, cfg.lam, per_sample=per_sample, rng=self.rng)  # Eq. 2
        target_gate = bernoulli_gate(n, cfg.lam, per_sample=per_sample, rng=self.rng)  # Eq. 6
        policy_actions, policy_q = self.self_samples(obs, batch.actions, value_gate | target_gate)
        critic_loss, metrics = interpolated_value_loss(
            self.critic, batch, cfg.discount, policy_actions, value_gate.to(obs.device, non_blocking=True)
        )  # Eq. 2-3
        flow_loss, flow_metrics = self.flow_loss(
            obs, batch.actions, policy_actions, target_gate.to(obs.device, non_blocking=True)
        )  # Eq. 6
        metrics.update(flow_metrics)
        metrics["training/flow_loss"] = flow_loss.detach()
        if policy_q is not None:
            metrics["training/policy_q_mean"] = policy_q
        return critic_loss + flow_loss, metrics

    def after_step(self, step: int) -> None:
        self.critic.update_target()

    @torch.no_grad()
    def act(self, obs: torch.Tensor, t: torch.Tensor, knobs: ISEPFMKnobs) -> ActOutput:
        actions = self.sample(obs, knobs.w, knobs.T)
        return ActOutput(actions, {"advantage": self.critic.advantage(obs, actions)})

    @torch.no_grad()
    def propose(self, obs: torch.Tensor, n: int) -> torch.Tensor:
        knobs = self.default_knobs()
        flat = obs.repeat_interleave(n, 0)
        return self.sample(flat, knobs.w, knobs.T).reshape(obs.shape[0], n, self.spec.act_dim)
