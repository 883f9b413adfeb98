"""LOM: weighted imitation Learning on One Mode (Wang, Jin & Montana, ICLR 2025).

Losses, top to bottom, as Algorithm 1 schedules them:

Phase 1, steps 0 .. mdn_steps - 1 (Algorithm 1 lines 1-4; "I_M" in the paper):
  MDN behaviour policy pi_rho(a|s) = sum_i alpha_i(s) phi^i(a|s),
  phi^i(a|s) = N(a; mu_i(s), sigma_i(s)^2 I),  sigma_i(s) = exp(z_i^sigma),
  alpha_i(s) = softmax_i(z^alpha)                                                   (Eq. 14)
  L_rho = -E_D[ log pi_rho(a|s) ]   (log-sum-exp over the M modes)                  (Eq. 15)
  Eq. 14 prints the 1-D normaliser 1/(sqrt(2 pi) sigma); in d_a dimensions the isotropic
  Gaussian's is (2 pi sigma^2)^(-d_a/2), which is what is used (a proper density, equal to
  torch's MixtureSameFamily of isotropic Normals).
  After phase 1 the MDN is FROZEN: it is only ever evaluated under no_grad.

Phase 2, steps >= mdn_steps (Algorithm 1 lines 5-22; "I_G"), from ONE minibatch per step:
  L_psi = E[(Q_psi(s,a) - r - gamma (1 - d) Q_psi-(s', a'))^2], a' = the NEXT DATASET
          action (SARSA: the behaviour Q, not an optimal Q)                          (Eq. 16)
  L_phi = E_{s, u}[(Q_phi(s,u) - (1/n) sum_{j<=n} Q_psi(s, a_j^u))^2], a_j^u ~ phi^u(.|s),
          n = hyper_q_samples; all M modes at once (default) or u ~ Uniform         (Eq. 17)
  u* = argmax_u Q_phi(s, u)   (greedy hyper-policy zeta_g)                          (Eq. 7)
  a_hat ~ phi^{u*}(.|s),  a_bar = mu_{u*}(s),  A = Q_psi(s, a_hat) - Q_psi(s, a_bar)
  L_theta = -E[ clip(exp(A / beta), 0, C) log pi_theta(a_hat|s) ]                   (Eq. 18)
  Every `target_update_delay` phase-2 steps: psi- <- rho psi- + (1 - rho) psi, rho = 0.995.
  (Algorithm 1 also keeps a slow copy phi- of the hyper Q, but no loss reads it, so it is
  not kept here.)

Scheduling inside `update(batch, step)` (`step` is the 0-based global training step):
- step < mdn_steps: only L_rho (plus L_psi when `q_during_mdn` is set: the SARSA critic does
  not depend on the MDN, so it can train from step 0 at no loss of faithfulness to the
  losses; Algorithm 1 trains it after the MDN, which is the default).
- step >= mdn_steps: L_psi + L_phi + L_theta, summed, ONE backward, one optimizer with a
  parameter group (and learning rate) per network. Each loss sees the others' outputs
  detached (targets, weights and the greedy mode are computed under no_grad), so the sum has
  the same gradients as three separate backward passes. Algorithm 1 updates psi, then phi,
  then theta in sequence, each seeing the previous update; the simultaneous step reads the
  pre-update psi and phi, a one-step lag that is the documented difference.
- The run's step budget includes the MDN phase: a 1M-step run with mdn_steps = 200k gives
  800k steps to Q/hyper-Q/policy.

Temperature convention (`weight_form`): Eq. 18 (and Eq. 11) write exp(A / beta); Algorithm 1
line 16 writes exp(A) (no beta); the authors' public code uses exp(beta * A). Table 3 lists
beta = 5, C = 50 with the Eq. 18 wording ("advantage weights"), so the default is
weight_form = "eq18": w = min(exp(A / 5), 50). "algorithm1" and "beta_times" are the others.
The paper form and the code form weigh very differently: the code's w = clip(exp(beta A), 0, C)
(agents/lom.py train_policy) takes beta per dataset, 5 on medium / medium-replay / full-replay and
0.1 on expert / medium-expert, and C = 100 on halfcheetah-medium, -medium-replay, -full-replay, 50
elsewhere (its `hyperparams` table), on RAW rewards (base_agent.py preprocess leaves them
unchanged). With exp(A / 5) on IQL-rescaled locomotion rewards the weights are nearly uniform.
The three are config fields (`weight_form`, `beta`, `max_weight` = C); the reward handling is the
data block's `reward_transform` ("none" = raw), not a method field; the per-dataset values are
applied by the `published` protocol.

Clipping to the action box [-1, 1] (`clip_hyper_q_samples`, `imitation_target_clip`): neither
Eq. 17-18 nor the code clips the Monte-Carlo samples a_j^u of the hyper-Q target (the code's
`sample_actions_for_components` returns raw Normal samples). For the imitation target the code
clips the greedy mode's sample and THEN adds its N(0, ac_rand^2) noise, unclipped
(`get_mode_actions` ends in torch.clip; `train_policy` adds the noise after): "before_noise".
The paper clips nothing: "none" (the advantage baseline a_bar = mu_{u*} is then unclipped too).
ModeBench's defaults clip both after any noise ("after_noise", baseline clipped), which keeps
every action a Q net reads inside the box the data occupy; they stay the defaults so existing
runs do not move, and the `published` protocol sets the paper's / code's values.

Defaults (Table 3): all MLPs 2 x 512 (MDN head M means + M scales + M logits; the table
prints 2 * ac_dim + M), a single Q_psi, Polyak 0.995 with update delay 2, beta 5, C 50,
M from the sweep {2, 5, 10, 15, 20} (Fig. 3; default 5, the public code's default).
The paper gives no learning rates, batch sizes, clamps or sample counts: those defaults are
the public code's where it has them and are marked as such.

The authors' public code (github MianchuWang/LOM, agents/lom.py) differs in places; the
preset "lom-code" (algorithms/methods.yaml) sets its choices: tanh MDN means, per-dim
log-std clamped to [-15, 0], an ensemble of 2 x 256 Q nets with a min SARSA target and
TD3-style smoothing noise on a', Q_psi read from the first member, a one-hot-input hyper-Q
with one sample per mode, imitation targets perturbed by N(0, 0.2^2), advantage against the
policy's own action, w = min(exp(beta A), C) and an MSE loss on a deterministic tanh policy.
Not reproduced by the preset: the code draws separate minibatches (256 Q / 1024 hyper-Q /
256 policy / 512 MDN); here every loss of a step shares one batch of `batch_size`. The code's MDN
loss (train_GMM at MianchuWang/LOM@e7cf8a3) is the mixture NLL, logsumexp(log N_k(a) +
log(alpha_k + 1e-8)), i.e. Eq. 15 up to the 1e-8; both presets use Eq. 15. The code also clamps
the MDN means to +-0.9999 after the tanh and samples the greedy mode with an unclamped std.

`min_mode_weight` (default 0 = the paper's argmax over all M modes) restricts u* to modes
with alpha_u(s) >= the threshold; the authors' code has this (0.05) in a disabled branch of
its action selection. Measured on toy/obstacle (seed 0, 4000 steps, 64-wide nets): the paper's
rule scores 0 -- at states on the left path it picks modes with alpha ~ 0 whose means lie off
the data, where the SARSA Q_psi extrapolates upward, and the policy steers into the
obstacle -- while thresholds 0.05 / 0.1 score 76 / 90 (BC: 88).

Seed-batched training (algorithms/seeds.py): the losses run on [*lead, B, ...] tensors (lead = (S,)
for S seeds trained as one model), every expectation and metric is per seed, and every draw (the
hyper-Q samples a_j^u, a_hat, the SARSA and imitation noise, the uniform mode u) comes from
`self.rng`, so seed s in a batch draws what it draws alone. Most of a phase-2 update is the
critic over the B x M x n Monte-Carlo samples of Eq. 17, work that grows with S, so batching
saves less there than in the MDN phase.

Not in the paper, in both presets: the MDN's mean-head biases start spread uniformly over
the action box (`mdn_init_mean_spread`). With every mode starting near the data mean, NLL
training sits for thousands of steps at the symmetric saddle where all modes equal the
global Gaussian fit (measured on toy four-goal: still collapsed after 1000 steps with the
torch default init, all four corners found within 50 steps with the spread init).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from modebench.algorithms.base import (
    ActOutput,
    AlgoConfig,
    Algorithm,
    Batch,
    EnvSpec,
)
from modebench.algorithms.config import (
    MAX_CANDIDATES,
    MAX_COMPONENTS,
    MAX_ENSEMBLE,
    MAX_WIDTH,
    Checked,
    field,
    require,
)
from modebench.algorithms.critics import TDCritic, aggregate
from modebench.algorithms.nets import MLP, DiagonalGMM, GaussianPolicy
from modebench.algorithms.optim import make_adam
from modebench.algorithms.phases import Phase, PublishedLength
from modebench.algorithms.seeds import SeedRandom, seed_mean
from torch import nn

M_SWEEP = (2, 5, 10, 15, 20)  # the paper's sweep of the number of modes M (Table 3, Fig. 3)


@dataclass
class LOMConfig(AlgoConfig):
    # --- MDN behaviour policy (Eq. 14-15) ---
    num_modes: int = field(5, help="M, Gaussian modes of the MDN; paper sweeps {2, 5, 10, 15, 20}", ge=1, le=MAX_COMPONENTS)
    mdn_hidden_dims: tuple[int, ...] = field((512, 512), help="MDN trunk widths (Table 3)", ge=1, le=MAX_WIDTH)
    mdn_steps: int = field(200_000, help='I_M: NLL steps before the MDN is frozen ("until convergence"; code 200k)', ge=0)
    mdn_lr: float = field(1e-3, help="MDN Adam learning rate (paper silent; code 1e-3)", gt=0.0)
    mdn_scale: Literal["isotropic", "diagonal"] = field("isotropic", help="sigma_i(s) scalar per mode (Eq. 14) or per dim (code)")
    mdn_tanh_means: bool = field(False, help="squash mu_i(s) with tanh (code); Eq. 14 has mu_i = z_i^mu")
    mdn_log_std_min: float = field(-10.0, help="clamp of log sigma_i (numerical guard, not in the paper; code -15)")
    mdn_log_std_max: float = field(2.0, help="clamp of log sigma_i (numerical guard, not in the paper; code 0)")
    mdn_init_mean_spread: float = field(1.0, help="mean-head biases ~ U(-spread, spread) at init (not in the paper; 0 = torch default)", ge=0.0)
    mdn_init_log_std: float | None = field(None, help="scale-head bias at init (not in the paper; None = torch default, ~0)")
    # --- phase schedule ---
    q_during_mdn: bool = field(False, help="also train Q_psi during the MDN phase (Algorithm 1: after it)")
    # --- behaviour Q_psi, SARSA (Eq. 16) ---
    hidden_dims: tuple[int, ...] = field((512, 512), help="widths of Q_psi, Q_phi and pi_theta (Table 3)", ge=1, le=MAX_WIDTH)
    num_q: int = field(1, help="members of the Q_psi ensemble (paper: one Q net; code 2, per-env up to 3)", ge=1, le=MAX_ENSEMBLE)
    q_lr: float = field(3e-4, help="Q_psi learning rate (paper silent; code 3e-4)", gt=0.0)
    q_target_agg: Literal["min", "mean"] = field("min", help="ensemble aggregation in the SARSA target (code: min)")
    q_eval: Literal["mean", "min", "first"] = field("mean", help="how Q_psi is read in Eq. 17-18 (code: first member)")
    sarsa_noise: float = field(0.0, help="std of TD3-style smoothing noise on the next dataset action a' (code 0.2)", ge=0.0)
    sarsa_noise_clip: float = field(0.5, help="clip of that noise (code 0.5)", ge=0.0)
    polyak: float = field(0.995, help="rho of the slow target psi- (Table 3)", ge=0.0, lt=1.0)
    target_update_delay: int = field(2, help="Polyak update every this many steps (Table 3, Algorithm 1 line 18)", ge=1)
    # --- hyper Q_phi(s, u) (Eq. 17) ---
    hyper_q_input: Literal["state", "onehot"] = field("state", help="s -> M values, or (s, onehot(u)) -> 1 value (code)")
    hyper_q_samples: int = field(10, help="n: samples of each mode in the Monte-Carlo target (paper silent; code 1)", ge=1, le=MAX_CANDIDATES)
    hyper_q_modes: Literal["all", "uniform"] = field("all", help="regress all M modes per state, or one u ~ Uniform (Eq. 17)")
    hyper_q_lr: float = field(1e-3, help="Q_phi learning rate (paper silent; code 1e-3)", gt=0.0)
    min_mode_weight: float = field(0.0, help="modes with alpha_u(s) below this are not eligible for u* (paper: 0, all modes)")
    # --- policy pi_theta, weighted imitation on one mode (Eq. 18) ---
    actor_lr: float = field(1e-3, help="pi_theta learning rate (paper silent; code 1e-3)", gt=0.0)
    beta: float = field(5.0, help="temperature beta (Table 3)", gt=0.0)
    max_weight: float = field(50.0, help="C, clip of the exponential weight (Table 3)", gt=0.0)
    weight_form: Literal["eq18", "algorithm1", "beta_times"] = field("eq18", help="exp(A/beta) | exp(A) | exp(beta A) (code)")
    advantage_baseline: Literal["mode_mean", "policy"] = field("mode_mean", help="Q(s, mu_u*) (paper) or Q(s, pi(s)) (code)")
    imitation_noise: float = field(0.0, help="std of Gaussian noise added to a_hat before weighting/imitation (code 0.2)", ge=0.0)
    policy_loss: Literal["nll", "mse"] = field("nll", help="-w log pi(a_hat|s) (Eq. 18) or w |mean_pi(s) - a_hat|^2 (code)")
    # --- clipping to the action box (not in the paper; see the module docstring) ---
    clip_hyper_q_samples: bool = field(True, help="clip Eq. 17's samples a_j^u to [-1, 1] (paper and code: no)")
    imitation_target_clip: Literal["after_noise", "before_noise", "none"] = field("after_noise", help="a_hat's clip (code: before_noise, paper: none)")

    def check(self) -> None:
        require(
            self.mdn_log_std_min < self.mdn_log_std_max,
            f"mdn_log_std_min must be < mdn_log_std_max, got {self.mdn_log_std_min} >= {self.mdn_log_std_max}",
        )
        require(
            0.0 <= self.min_mode_weight <= 1.0 / self.num_modes,
            f"min_mode_weight must be in [0, 1/num_modes] = [0, {1.0 / self.num_modes:.4g}] (some mode must stay "
            f"eligible), got {self.min_mode_weight}",
        )


@dataclass
class LOMKnobs(Checked):
    actor: Literal["policy", "greedy_mode"] = field("policy", help="which policy acts: pi_theta's mean (LOM) or the greedy one-mode policy at mu_{u*}(s) (Theorem 1's intermediate policy)")


class MDN(nn.Module):
    """s -> the M-mode mixture pi_rho(.|s) as a DiagonalGMM (Eq. 14). Head: M means, M scales, M logits."""

    def __init__(
        self,
        obs_dim: int,
        act_dim: int,
        num_modes: int,
        hidden_dims: tuple[int, ...],
        scale: str = "isotropic",
        tanh_means: bool = False,
        log_std_min: float = -10.0,
        log_std_max: float = 2.0,
        init_mean_spread: float = 0.0,
        init_log_std: float | None = None,
    ):
        super().__init__()
        self.m, self.d = num_modes, act_dim
        self.isotropic = scale == "isotropic"
        self.tanh_means = tanh_means
        self.log_std_min, self.log_std_max = log_std_min, log_std_max
        num_scales = num_modes if self.isotropic else num_modes * act_dim
        self.net = MLP(obs_dim, hidden_dims, num_modes * act_dim + num_scales + num_modes, "relu")
        head = self.net[-1]
        with torch.no_grad():
            # Spread the modes over the action box so NLL training leaves the symmetric saddle
            # where every mode sits on the data mean (slow to escape for symmetric data).
            if init_mean_spread > 0:
                head.bias[: num_modes * act_dim].uniform_(-init_mean_spread, init_mean_spread)
            if init_log_std is not None:
                head.bias[num_modes * act_dim : -num_modes].fill_(init_log_std)

    def forward(self, obs: torch.Tensor) -> DiagonalGMM:
        m, d = self.m, self.d
        out = self.net(obs)
        means = out[..., : m * d].unflatten(-1, (m, d))  # z_i^mu
        if self.tanh_means:
            means = torch.tanh(means)
        z_sigma = out[..., m * d : -m]  # z_i^sigma: log sigma_i(s)
        if self.isotropic:
            log_std = z_sigma.unsqueeze(-1).expand(*z_sigma.shape, d)
        else:
            log_std = z_sigma.unflatten(-1, (m, d))
        log_std = log_std.clamp(self.log_std_min, self.log_std_max)
        log_alpha = F.log_softmax(out[..., -m:], dim=-1)  # alpha_i(s) = softmax(z^alpha)_i
        return DiagonalGMM(log_alpha, means, log_std)


def sample_each_mode(gmm: DiagonalGMM, n: int, clip: bool = True, rng: SeedRandom | None = None) -> torch.Tensor:
    """n samples of EVERY mode: a ~ phi^u(.|s) for all u, [*lead, B, M, n, d]; clipped to the action
    box when `clip`. The noise comes from `rng` (a method's per-seed generators; the mixture then
    carries its seed axis when `rng` is stacked) or, without one, torch's global generator."""
    mu = gmm.means.unsqueeze(-2)
    std = gmm.log_stds.exp().unsqueeze(-2)
    each = mu.expand(*mu.shape[:-2], n, mu.shape[-1])  # [*lead, B, M, n, d], a view
    noise = torch.randn_like(each) if rng is None else rng.randn_like(each)
    samples = mu + std * noise
    return samples.clamp(-1.0, 1.0) if clip else samples


def greedy_modes(hyper_q: torch.Tensor, gmm: DiagonalGMM, min_weight: float = 0.0) -> torch.Tensor:
    """u*(s) = argmax_u Q_phi(s, u) (Eq. 7) over the modes with alpha_u(s) >= min_weight, [*lead, B]."""
    if min_weight > 0:
        hyper_q = hyper_q.masked_fill(gmm.weights < min_weight, float("-inf"))
    return hyper_q.argmax(-1)


def select_mode(x: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    """x[..., b, u[..., b], ...] for x [*lead, B, M, ...] and mode indices u [*lead, B]: [*lead, B, ...]."""
    k = u.dim()  # the mode axis of x
    idx = u.reshape(*u.shape, 1, *([1] * (x.dim() - k - 1))).expand(*u.shape, 1, *x.shape[k + 1 :])
    return x.gather(k, idx).squeeze(k)


class HyperQ(nn.Module):
    """Q_phi(s, u) for all M modes at once, [*lead, B, M]: a state net with M outputs, or a net over (s, onehot(u))."""

    def __init__(self, obs_dim: int, num_modes: int, hidden_dims: tuple[int, ...], mode_input: str = "state"):
        super().__init__()
        self.m = num_modes
        self.onehot = mode_input == "onehot"
        if self.onehot:
            self.net = MLP(obs_dim + num_modes, hidden_dims, 1, "relu")
        else:
            self.net = MLP(obs_dim, hidden_dims, num_modes, "relu")

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        if not self.onehot:
            return self.net(obs)
        lead, m = obs.shape[:-1], self.m
        eye = torch.eye(m, device=obs.device, dtype=obs.dtype).expand(*lead, m, m)
        x = torch.cat([obs.unsqueeze(-2).expand(*lead, m, obs.shape[-1]), eye], dim=-1)
        return self.net(x).squeeze(-1)


class LOM(Algorithm):
    name = "lom"
    config_class = LOMConfig
    knobs_class = LOMKnobs
    can_propose = True

    def __init__(self, config: LOMConfig, spec: EnvSpec, device="cpu"):
        super().__init__(config, spec, device)
        cfg = config
        self.mdn = MDN(
            spec.obs_dim, spec.act_dim, cfg.num_modes, cfg.mdn_hidden_dims,
            cfg.mdn_scale, cfg.mdn_tanh_means, cfg.mdn_log_std_min, cfg.mdn_log_std_max,
            cfg.mdn_init_mean_spread, cfg.mdn_init_log_std,
        )
        self.critic = TDCritic(
            spec.obs_dim, spec.act_dim, cfg.hidden_dims, cfg.num_q,
            target_tau=1.0 - cfg.polyak, q_agg=cfg.q_target_agg, act="relu", layer_norm=False,
        )
        self.hyper_q = HyperQ(spec.obs_dim, cfg.num_modes, cfg.hidden_dims, cfg.hyper_q_input)
        self.actor = GaussianPolicy(spec.obs_dim, spec.act_dim, cfg.hidden_dims)
        self.to(self.device)
        self.optimizer = make_adam(
            [
                {"params": self.mdn.parameters(), "lr": cfg.mdn_lr},
                {"params": self.critic.q.parameters(), "lr": cfg.q_lr},
                {"params": self.hyper_q.parameters(), "lr": cfg.hyper_q_lr},
                {"params": self.actor.parameters(), "lr": cfg.actor_lr},
            ],
            cfg.actor_lr,
            self.device,
        )

    @classmethod
    def phases(cls, config: LOMConfig) -> list[Phase]:
        """Q_psi (by default), the hyper-Q and the policy wait for the MDN: a blocking phase."""
        if not config.mdn_steps:
            return []
        return [Phase("MDN fit", "mdn_steps", config.mdn_steps, blocking=True, loss="training/mdn_nll",
                      published=PublishedLength(200_000, 1_000_000, "the authors' code"))]

    # ----- pieces of the losses, each usable on its own (tests, analysis) -----

    def q_value(self, obs: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        """Q_psi(s, a) as Eq. 17-18 read it (ensemble reduced by `q_eval`); obs broadcast to actions."""
        obs = obs.expand(*actions.shape[:-1], obs.shape[-1])
        q = self.critic.q(obs, actions)
        return q[0] if self.config.q_eval == "first" else aggregate(q, self.config.q_eval)

    @torch.no_grad()
    def hyper_q_targets(self, obs: torch.Tensor, gmm: DiagonalGMM | None = None) -> torch.Tensor:
        """Eq. 17 target for every mode: (1/n) sum_j Q_psi(s, a_j^u), a_j^u ~ phi^u(.|s); [*lead, B, M]."""
        gmm = self.mdn(obs) if gmm is None else gmm
        cfg = self.config
        samples = sample_each_mode(gmm, cfg.hyper_q_samples, cfg.clip_hyper_q_samples, self.rng)  # [*lead, B, M, n, d]
        return self.q_value(obs[..., None, None, :], samples).mean(-1)

    def sarsa_next_actions(self, batch: Batch) -> torch.Tensor:
        """a' of Eq. 16: the next DATASET action (+ TD3-style smoothing noise when sarsa_noise > 0)."""
        a_next = batch.next_actions
        if self.config.sarsa_noise > 0:
            noise = (self.rng.randn_like(a_next) * self.config.sarsa_noise).clamp(
                -self.config.sarsa_noise_clip, self.config.sarsa_noise_clip
            )
            a_next = (a_next + noise).clamp(-1.0, 1.0)
        return a_next

    def advantage_weight(self, advantage: torch.Tensor) -> torch.Tensor:
        """clip(exp(A / beta), 0, C) (Eq. 18), exp(A) (Algorithm 1) or exp(beta A) (code)."""
        cfg = self.config
        if cfg.weight_form == "eq18":
            scaled = advantage / cfg.beta
        elif cfg.weight_form == "algorithm1":
            scaled = advantage
        else:
            scaled = advantage * cfg.beta
        return torch.exp(scaled).clamp(max=cfg.max_weight)

    def in_mdn_phase(self, step: int) -> bool:
        return step < self.config.mdn_steps

    # ----- one training step -----

    def losses(self, batch: Batch, step: int) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        cfg = self.config
        obs = batch.observations
        metrics: dict[str, torch.Tensor] = {}
        losses: list[torch.Tensor] = []
        mdn_phase = self.in_mdn_phase(step)

        if mdn_phase:
            # Eq. 15: MDN negative log-likelihood (Algorithm 1 lines 1-4).
            gmm = self.mdn(obs)
            mdn_loss = -seed_mean(gmm.log_prob(batch.actions), self.seeds)
            losses.append(mdn_loss)
            metrics["training/mdn_nll"] = mdn_loss.detach()
            metrics["training/mdn_log_std_mean"] = seed_mean(gmm.log_stds.detach(), self.seeds)

        if not mdn_phase or cfg.q_during_mdn:
            # Eq. 16: SARSA TD on (s, a, r, s', a') with the next dataset action, slow target psi-.
            q_loss, q_metrics = self.critic.losses(batch, cfg.discount, self.sarsa_next_actions(batch))
            losses.append(q_loss)
            metrics.update(q_metrics)

        if not mdn_phase:
            losses += self._mode_losses(batch, metrics)

        return sum(losses), metrics

    def after_step(self, step: int) -> None:
        cfg = self.config
        q_step = step + 1 if cfg.q_during_mdn else step - cfg.mdn_steps + 1  # Algorithm 1's i (1-based)
        if (not self.in_mdn_phase(step) or cfg.q_during_mdn) and q_step % cfg.target_update_delay == 0:
            self.critic.update_target()  # psi- <- rho psi- + (1 - rho) psi

    def _mode_losses(self, batch: Batch, metrics: dict[str, torch.Tensor]) -> list[torch.Tensor]:
        """Eq. 17 (hyper Q) and Eq. 18 (weighted imitation on the greedy mode); the MDN is frozen.
        Tensors are [*lead, B, ...] (lead = (S,) when seed-batched); expectations are per seed."""
        cfg = self.config
        obs = batch.observations
        b, m, seeds = obs.shape[-2], cfg.num_modes, self.seeds
        with torch.no_grad():
            gmm = self.mdn(obs)  # frozen behaviour modes

        # Eq. 17: regress Q_phi(s, u) to the Monte-Carlo mean of Q_psi over samples of mode u.
        hq = self.hyper_q(obs)  # [*lead, B, M]
        if cfg.hyper_q_modes == "all":
            target = self.hyper_q_targets(obs, gmm)
            hyper_loss = seed_mean((hq - target).pow(2), seeds)
        else:
            u = self.rng.randint(0, m, (b,), device=obs.device)  # [*lead, B]
            with torch.no_grad():
                mode_gmm = DiagonalGMM(select_mode(gmm.log_weights, u).unsqueeze(-1), select_mode(gmm.means, u).unsqueeze(-2),
                                       select_mode(gmm.log_stds, u).unsqueeze(-2))
                target = self.hyper_q_targets(obs, mode_gmm).squeeze(-1)  # [*lead, B]
            hyper_loss = seed_mean((select_mode(hq, u) - target).pow(2), seeds)

        with torch.no_grad():
            # Eq. 7 / Algorithm 1 line 12: greedy mode u* = argmax_u Q_phi(s, u).
            u_star = greedy_modes(hq.detach(), gmm, cfg.min_mode_weight)
            mu = select_mode(gmm.means, u_star)  # a_bar = mu_{u*}(s)
            std = select_mode(gmm.log_stds, u_star).exp()
            a_hat = mu + std * self.rng.randn_like(mu)  # a_hat ~ phi^{u*}(.|s)
            if cfg.imitation_target_clip == "before_noise":  # the code: clip the mode's sample, then add noise
                a_hat = a_hat.clamp(-1.0, 1.0)
            if cfg.imitation_noise > 0:
                a_hat = a_hat + cfg.imitation_noise * self.rng.randn_like(a_hat)
            if cfg.imitation_target_clip == "after_noise":
                a_hat = a_hat.clamp(-1.0, 1.0)
            # A = Q_psi(s, a_hat) - Q_psi(s, a_bar)  (code: - Q_psi(s, pi_theta(s)))
            if cfg.advantage_baseline == "mode_mean":
                baseline = mu if cfg.imitation_target_clip == "none" else mu.clamp(-1.0, 1.0)
            else:
                baseline = self.actor(obs).mean
            advantage = self.q_value(obs, a_hat) - self.q_value(obs, baseline)
            weight = self.advantage_weight(advantage)

        # Eq. 18: weighted imitation of the greedy mode's samples only.
        if cfg.policy_loss == "nll":
            actor_loss = -seed_mean(weight * self.actor.log_prob(obs, a_hat), seeds)
        else:
            actor_loss = seed_mean(weight * (self.actor(obs).mean - a_hat).pow(2).mean(-1), seeds)

        metrics["training/hyper_q_loss"] = hyper_loss.detach()
        metrics["training/actor_loss"] = actor_loss.detach()
        metrics["training/advantage_mean"] = seed_mean(advantage, seeds)
        metrics["training/adv_weight_mean"] = seed_mean(weight, seeds)
        metrics["training/adv_weight_clip_frac"] = seed_mean((weight >= cfg.max_weight).float(), seeds)
        metrics["training/greedy_mode_alpha"] = seed_mean(select_mode(gmm.weights, u_star), seeds)  # behaviour weight of u*
        metrics["training/greedy_mode_std"] = seed_mean(std, seeds)
        selected = F.one_hot(u_star, m).float().mean(-2)  # which modes the batch's states choose, [*lead, M]
        per_mode_q = hq.detach().mean(-2)
        for i in range(m):
            metrics[f"training/selected_mode_frac/{i}"] = selected[..., i]
            metrics[f"training/hyper_q/{i}"] = per_mode_q[..., i]
        return [hyper_loss, actor_loss]

    # ----- inference -----

    @torch.no_grad()
    def greedy_mode(self, obs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, DiagonalGMM]:
        """u*(s) = argmax_u Q_phi(s, u), the hyper-Q values [B, M] and the MDN's mixture."""
        hq, gmm = self.hyper_q(obs), self.mdn(obs)
        return greedy_modes(hq, gmm, self.config.min_mode_weight), hq, gmm

    @torch.no_grad()
    def act(self, obs: torch.Tensor, t: torch.Tensor, knobs: LOMKnobs) -> ActOutput:
        u_star, hq, gmm = self.greedy_mode(obs)
        mode_mean = select_mode(gmm.means, u_star).clamp(-1.0, 1.0)
        if knobs.actor == "policy":
            actions = self.actor(obs).mean.clamp(-1.0, 1.0)
        else:
            actions = mode_mean
        audits = {
            "greedy_mode": u_star.float(),
            "greedy_mode_alpha": select_mode(gmm.weights, u_star),
            "dist_to_greedy_mode_mean": (actions - mode_mean).norm(dim=-1),
        }
        onehot = F.one_hot(u_star, self.config.num_modes).float()
        for i in range(self.config.num_modes):
            audits[f"greedy_mode_is/{i}"] = onehot[:, i]
            audits[f"hyper_q/{i}"] = hq[:, i]
        return ActOutput(actions, audits)

    @torch.no_grad()
    def propose(self, obs: torch.Tensor, n: int) -> torch.Tensor:
        return self.actor(obs).sample((n,)).transpose(0, 1).clamp(-1.0, 1.0)

    @torch.no_grad()
    def diagnostics(self, batch: Batch) -> dict[str, float]:
        """MDN NLL on the batch, mixture weight and hyper-Q value of the greedy mode, mode usage."""
        u_star, hq, gmm = self.greedy_mode(batch.observations)
        selected = F.one_hot(u_star, self.config.num_modes).float().mean(0)
        return {
            "diagnostics/mdn_nll": float(-gmm.log_prob(batch.actions).mean()),
            "diagnostics/greedy_mode_alpha": float(select_mode(gmm.weights, u_star).mean()),
            "diagnostics/greedy_hyper_q": float(hq.max(-1).values.mean()),
            **{f"diagnostics/selected_mode_frac/{i}": float(selected[i]) for i in range(self.config.num_modes)},
        }
