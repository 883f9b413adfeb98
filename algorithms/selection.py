"""Candidate-based action selection (GEM Phase II, Algorithm 1), usable on any method's proposals.

Given a candidate set C(s) = {a_0, a_1, ..., a_N} per state (Eq. 1 / Eq. 5), a critic ensemble
{Q_i} and a behaviour density mu_phi used ONLY for support, the executed action is

    LCB_lambda(s, a) = mean_i Q_i(s, a) - lambda * Std_i Q_i(s, a)     (Eq. 3, 8-9; population std)
    l~(a)           = zscore_{C(s)}(log mu_phi(a | s))                   (Eq. 2, 10-11; clamp 1e-6)
    Score(s, a)     = LCB_lambda(s, a) + w_p * l~(a)                     (Eq. 4, 14)
    a^(s)           = mean of the top-k_smooth candidates by Score        (Eq. 15, 78)

with the support weight annealed over the episode (Sec. 4.2):
    w_p(t) = w_end + 0.5 (w_start - w_end) (1 + cos(pi t / T)),  w_start = 1 in the paper.

Everything is batched over states AND candidates: tensors are [B, C] (scores) and [B, C, d_a]
(candidates), critics return [M, B, C]; no Python loop over either axis. `rerank` runs the
whole rule for any candidate source, e.g. another method's `propose(obs, n)` (methods with
`can_propose = True`), with whatever critic ensemble and behaviour density the caller supplies.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import torch

SupportMode = Literal["zscore", "raw"]
VIOLATION_Z = -2.0  # Violation audit: z(log mu_phi(a* | s)) < -2 (Sec. 4.1)
ZSCORE_EPS = 1e-6  # max(sigma, 1e-6) clamp of Eq. 11


def lcb(q: torch.Tensor, lcb_lambda: float) -> torch.Tensor:
    """LCB_lambda = mean_i Q_i - lambda * Std_i Q_i over the ensemble axis 0 (Eq. 3, 9).

    Std is the POPULATION standard deviation (1/M, Eq. 8), matching `unbiased=False`."""
    mean = q.mean(0)
    if lcb_lambda == 0.0:
        return mean
    return mean - lcb_lambda * q.std(0, correction=0)


def zscore(x: torch.Tensor, dim: int = -1, eps: float = ZSCORE_EPS) -> torch.Tensor:
    """(x - mean) / max(std, eps) within the candidate set along `dim` (Eq. 2, 11).

    Population std (unbiased=False); invariant to x -> x + c and x -> alpha x, alpha > 0
    (Eq. 12-13) as long as the std is above the clamp."""
    mean = x.mean(dim, keepdim=True)
    std = x.std(dim, correction=0, keepdim=True).clamp_min(eps)
    return (x - mean) / std


def support_weight(t: torch.Tensor, horizon: int, w_end: float, w_start: float = 1.0) -> torch.Tensor:
    """Cosine schedule w_p(t) = w_end + 0.5 (w_start - w_end)(1 + cos(pi t / T)) (Sec. 4.2).

    Starts at w_start (1 in the paper) at t = 0 and reaches w_end at t = T; t beyond T stays
    at w_end. Returns a float tensor shaped like t."""
    frac = t.to(torch.get_default_dtype()).clamp(0, horizon) / max(int(horizon), 1)
    return w_end + 0.5 * (w_start - w_end) * (1.0 + torch.cos(math.pi * frac))


def select_top_k(candidates: torch.Tensor, scores: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean of the top-k candidates by score (Eq. 15, 78), k = min(k_smooth, |C(s)|).

    candidates [B, C, d], scores [B, C] -> (actions [B, d], top-k indices [B, k], best first)."""
    k = min(int(k), scores.shape[-1])
    top = scores.topk(k, dim=-1).indices
    chosen = candidates.gather(1, top.unsqueeze(-1).expand(-1, -1, candidates.shape[-1]))
    return chosen.mean(1), top


@dataclass
class Selection:
    """The outcome of Eq. 4 on one batch of candidate sets."""

    actions: torch.Tensor  # [B, d] executed action (top-k_smooth mean)
    top1: torch.Tensor  # [B, d] a*, the top-1 candidate before smoothing (audits use it)
    top1_index: torch.Tensor  # [B] index of a* in the candidate set
    scores: torch.Tensor  # [B, C] Score(s, a) of every candidate
    support_z: torch.Tensor  # [B] z(log mu_phi(a* | s)) within the candidate set (always z-scored)

    @property
    def violation(self) -> torch.Tensor:
        """[B] 1.0 where a* is low-support: z(log mu_phi(a* | s)) < -2 (Sec. 4.1)."""
        return (self.support_z < VIOLATION_Z).to(self.support_z.dtype)


def score_and_select(
    candidates: torch.Tensor,
    q: torch.Tensor,
    log_likelihood: torch.Tensor,
    lcb_lambda: float,
    w_p: torch.Tensor | float,
    support_mode: SupportMode = "zscore",
    k_smooth: int = 1,
) -> Selection:
    """Eq. 4 + top-k on precomputed critic values q [M, B, C] and support log mu_phi [B, C].

    `w_p` is a scalar or a [B] tensor (the schedule at each state's episode step).
    support_mode 'zscore' standardises log mu_phi within each state's candidate set (Eq. 11);
    'raw' adds it unnormalised (the Table 8 ablation). The SupportZ / Violation audits use the
    z-score in both modes, as in the paper."""
    if support_mode not in ("zscore", "raw"):
        raise ValueError(f"support_mode must be 'zscore' or 'raw', got {support_mode!r}")
    z = zscore(log_likelihood)
    support = z if support_mode == "zscore" else log_likelihood
    if isinstance(w_p, torch.Tensor) and w_p.dim() == 1:
        w_p = w_p.unsqueeze(-1)
    scores = lcb(q, lcb_lambda) + w_p * support
    actions, top = select_top_k(candidates, scores, k_smooth)
    top1_index = top[:, 0]
    top1 = candidates.gather(1, top1_index.view(-1, 1, 1).expand(-1, 1, candidates.shape[-1])).squeeze(1)
    support_z = z.gather(1, top1_index.unsqueeze(-1)).squeeze(-1)
    return Selection(actions, top1, top1_index, scores, support_z)


def rerank(
    obs: torch.Tensor,
    candidates: torch.Tensor,
    q_ensemble: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    support_log_prob: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    lcb_lambda: float,
    w_p: torch.Tensor | float,
    support_mode: SupportMode = "zscore",
    k_smooth: int = 1,
) -> Selection:
    """The whole selection rule on a candidate set from any source (Algorithm 1, lines 6-18).

    obs [B, o]; candidates [B, C, d] (e.g. `method.propose(obs, n)`, optionally with an anchor
    prepended); q_ensemble(obs [B, C, o], actions [B, C, d]) -> [M, B, C] in ONE forward;
    support_log_prob(obs [B, o], actions [B, C, d]) -> log mu_phi [B, C] in one forward, always
    the behaviour density, never the proposer (no self-certification, App. D.5)."""
    obs_rep = obs.unsqueeze(1).expand(-1, candidates.shape[1], -1)
    q = q_ensemble(obs_rep, candidates)
    log_likelihood = support_log_prob(obs, candidates)
    return score_and_select(candidates, q, log_likelihood, lcb_lambda, w_p, support_mode, k_smooth)
