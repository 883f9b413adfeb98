"""Critics shared by the methods: expectile (IQL) value learning and bootstrapped TD ensembles.

- `ExpectileCritic`: Q-ensemble + V. L_V = E[|tau - 1(u<0)| u^2], u = Qtgt_agg(s,a) - V(s);
  Q regresses to r + gamma (1 - d) V(s') (IQL; GEM Sec. 3 / App.; ISEP Eq. 2 with
  `value_actions` replacing the dataset actions where its Bernoulli gate picks policy samples).
- `TDCritic`: Q-ensemble regressed to r + gamma (1 - d) agg_j Qtgt_j(s', a') for next actions a'
  chosen by the caller: the next DATASET action (LOM's SARSA, Eq. 16) or the actor's own
  (DROL / FQL).

Both return losses (the caller owns the optimizer and steps once per update) and keep a Polyak
target network.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from typing import Literal

import torch
from modebench.algorithms.base import Batch
from modebench.algorithms.nets import MLP, EnsembleCritic, LayerNormPlacement
from modebench.algorithms.seeds import seed_mean
from torch import nn


def expectile_loss(diff: torch.Tensor, expectile: float) -> torch.Tensor:
    """Elementwise |tau - 1(u < 0)| u^2 (IQL's asymmetric L2)."""
    weight = torch.where(diff < 0, 1.0 - expectile, expectile)
    return weight * diff.pow(2)


def awr_weight(advantage: torch.Tensor, beta: float, max_weight: float) -> torch.Tensor:
    """min(exp(beta * A), w_max) with A detached (AWR / IQL / GEM Eq. 69)."""
    return torch.exp(beta * advantage.detach()).clamp(max=max_weight)


@torch.no_grad()
def polyak_update(target: nn.Module | list[torch.Tensor], source: nn.Module | list[torch.Tensor], tau: float) -> None:
    """target <- (1 - tau) target + tau source, for all parameters in one fused call."""
    t_params = target if isinstance(target, list) else list(target.parameters())
    s_params = source if isinstance(source, list) else list(source.parameters())
    torch._foreach_lerp_(t_params, s_params, tau)


def aggregate(q: torch.Tensor, how: Literal["min", "mean"]) -> torch.Tensor:
    """Aggregate an [M, ...] ensemble output over members."""
    if how == "min":
        return q.min(0).values
    if how == "mean":
        return q.mean(0)
    raise ValueError(f"unknown ensemble aggregation {how!r}; valid: min, mean")


def frozen_copy(module: nn.Module) -> nn.Module:
    target = copy.deepcopy(module)
    target.requires_grad_(False)
    return target


class TargetedQEnsemble(nn.Module):
    """A Q-ensemble `q` and its frozen Polyak copy `q_target`: what both critics share.
    Losses are per seed when seed-batched (algorithms/seeds.py): [S] instead of a scalar."""

    seeds: int | None = None

    def __init__(self, obs_dim: int, act_dim: int, hidden_dims: Sequence[int], num_q: int, target_tau: float,
                 act: str, layer_norm: bool, layer_norm_placement: LayerNormPlacement = "pre_act"):
        super().__init__()
        self.q = EnsembleCritic(obs_dim, act_dim, hidden_dims, num_q, act, layer_norm, layer_norm_placement)
        self.q_target = frozen_copy(self.q)
        self.target_tau = target_tau
        self.reset_caches()

    def reset_caches(self) -> None:
        # Built once: walking the modules every update costs more than the fused lerp itself on
        # small nets. `.to()` and load_state_dict update parameters in place, so they stay valid;
        # seed stacking builds new parameters and calls this again.
        self._polyak_lists = (list(self.q_target.parameters()), list(self.q.parameters()))

    def update_target(self) -> None:
        polyak_update(*self._polyak_lists, self.target_tau)


class ExpectileCritic(TargetedQEnsemble):
    """IQL critic: Q-ensemble (min aggregation in training) + expectile state value V."""

    def __init__(
        self,
        obs_dim: int,
        act_dim: int,
        hidden_dims: Sequence[int] = (256, 256),
        num_q: int = 2,
        expectile: float = 0.7,
        target_tau: float = 0.005,
        act: str = "relu",
        layer_norm: bool = False,
        layer_norm_placement: LayerNormPlacement = "pre_act",
    ):
        super().__init__(obs_dim, act_dim, hidden_dims, num_q, target_tau, act, layer_norm, layer_norm_placement)
        self.v = MLP(obs_dim, hidden_dims, 1, act, layer_norm, layer_norm_placement)
        self.expectile = expectile

    def value(self, obs: torch.Tensor) -> torch.Tensor:
        return self.v(obs).squeeze(-1)

    @torch.no_grad()
    def target_q(self, obs: torch.Tensor, actions: torch.Tensor, how: str = "min") -> torch.Tensor:
        return aggregate(self.q_target(obs, actions), how)

    def losses(
        self, batch: Batch, discount: float, value_actions: torch.Tensor | None = None, return_advantage: bool = False
    ):
        """Q + V losses for one batch. `value_actions` replaces a in the expectile term.

        With `return_advantage`, also returns Qtgt_min(s, a) - V(s) (detached) for the actions of
        the expectile term, reusing this forward pass instead of a second one."""
        actions_for_v = batch.actions if value_actions is None else value_actions
        q_tgt = self.target_q(batch.observations, actions_for_v)
        v = self.value(batch.observations)
        value_loss = seed_mean(expectile_loss(q_tgt - v, self.expectile), self.seeds)
        with torch.no_grad():
            next_v = self.value(batch.next_observations)
            td_target = batch.rewards + discount * (1.0 - batch.dones) * next_v
        q = self.q(batch.observations, batch.actions)
        q_loss = (q - td_target.unsqueeze(0)).pow(2).mean(-1).sum(0)
        metrics = {
            "training/value_loss": value_loss.detach(),
            "training/q_loss": q_loss.detach(),
            "training/q_mean": seed_mean(q.detach().mean(0), self.seeds),
            "training/v_mean": seed_mean(v.detach(), self.seeds),
        }
        if return_advantage:
            return value_loss + q_loss, metrics, (q_tgt - v).detach()
        return value_loss + q_loss, metrics

    @torch.no_grad()
    def advantage(self, obs: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        """A = Qtgt_min(s, a) - V(s), detached."""
        return self.target_q(obs, actions) - self.value(obs)


class TDCritic(TargetedQEnsemble):
    """Q-ensemble regressed to r + gamma (1 - d) agg Qtgt(s', a') with caller-chosen a'."""

    def __init__(
        self,
        obs_dim: int,
        act_dim: int,
        hidden_dims: Sequence[int] = (512, 512, 512, 512),
        num_q: int = 2,
        target_tau: float = 0.005,
        q_agg: Literal["min", "mean"] = "mean",
        act: str = "gelu",
        layer_norm: bool = True,
        layer_norm_placement: LayerNormPlacement = "pre_act",
    ):
        super().__init__(obs_dim, act_dim, hidden_dims, num_q, target_tau, act, layer_norm, layer_norm_placement)
        self.q_agg = q_agg

    def losses(
        self, batch: Batch, discount: float, next_actions: torch.Tensor
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        with torch.no_grad():
            next_q = aggregate(self.q_target(batch.next_observations, next_actions), self.q_agg)
            td_target = batch.rewards + discount * (1.0 - batch.dones) * next_q
        q = self.q(batch.observations, batch.actions)
        q_loss = (q - td_target.unsqueeze(0)).pow(2).mean(-1).sum(0)
        return q_loss, {"training/q_loss": q_loss.detach(), "training/q_mean": seed_mean(q.detach().mean(0), self.seeds)}


def policy_q_loss(
    critic: TDCritic, obs: torch.Tensor, actions: torch.Tensor, agg: str, normalize: bool
) -> tuple[torch.Tensor, torch.Tensor]:
    """(-E[Q_agg(s, a)] [/ sg(E|Q_agg|)], Q_agg [*lead, B]) with the critic's parameters held fixed
    (the expectations per seed when seed-batched).

    The gradient reaches `actions` (hence the actor) but never the critic's weights: they are
    passed detached through torch.func.functional_call, so one combined backward per update
    stays correct. `normalize` is FQL's / DROL's normalize_q_loss (lam = 1 / sg(mean |Q|)).
    """
    frozen = {name: p.detach() for name, p in critic.q.named_parameters()}
    q = aggregate(torch.func.functional_call(critic.q, frozen, (obs, actions)), agg)
    loss = -seed_mean(q, critic.seeds)
    if normalize:
        loss = loss / seed_mean(q.detach().abs(), critic.seeds).clamp_min(1e-6)
    return loss, q
