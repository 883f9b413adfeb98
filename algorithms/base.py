"""The plugin interface every method implements.

The core (replay, training loop, evaluation, results, sweeps) only talks to this interface,
so it never branches on a method's name:

- ``Algorithm(config, spec, device)`` builds the method from its typed config;
- ``update(batch, step) -> metrics`` does one gradient step (metrics stay tensors so the hot
  loop never synchronises with the host). A method writes ``losses(batch, step)``: its
  losses summed into one scalar (each loss sees the others' outputs detached, so one backward
  gives every network its own gradient) and its metrics; the base class runs the shared step
  (zero_grad, backward, ``self.optimizer``, ``self.scheduler`` if set, then ``after_step``
  for Polyak targets);
- ``act(obs, t, knobs) -> ActOutput`` picks actions for a batch of states (``t`` is each
  environment's time step, for schedules over the episode) and may return per-step audits;
- ``propose(obs, n) -> [B, n, d_a]`` (methods with ``can_propose = True``) samples several
  candidate actions per state, so candidate selection can run on any method's proposals;
- ``select(obs, t, candidates, knobs)`` (methods with ``can_select = True``) scores a candidate
  set from any source and picks one action per state; ``selection_candidates`` builds that set
  from another method's proposals (benchmarks/run/compose.py composes the two);
- ``state_dict`` / ``load_state_dict`` save and restore everything (tensors only, so
  checkpoints load with ``torch.load(weights_only=True)``).

Inference-only knobs (GEM's N and lambda, ISEP-FM's guidance w, ...) live in a separate
``Knobs`` dataclass: they are read at evaluation time, so one checkpoint serves a whole grid.
"""

from __future__ import annotations

import abc
import dataclasses
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from modebench.algorithms.config import MAX_BATCH, Checked, field
from modebench.algorithms.phases import FitRecorder, Phase, check_phases  # noqa: F401 (check_phases: the run resolver imports it from here)
from modebench.algorithms.seeds import SeedRandom
from torch import nn


@dataclass(frozen=True)
class EnvSpec:
    """What a method needs to know about the task: sizes, episode horizon, run length."""

    obs_dim: int
    act_dim: int
    horizon: int = 1000
    total_steps: int = 1_000_000


@dataclass
class Batch:
    """A minibatch of transitions on the training device. Actions are in [-1, 1]^d_a."""

    observations: torch.Tensor
    actions: torch.Tensor
    rewards: torch.Tensor
    next_observations: torch.Tensor
    dones: torch.Tensor
    next_actions: torch.Tensor

    def __len__(self) -> int:
        return self.observations.shape[0]


@dataclass
class ActOutput:
    """Actions [B, d_a] in [-1, 1] and optional per-step audits {name: [B]}."""

    actions: torch.Tensor
    audits: dict[str, torch.Tensor] = dataclasses.field(default_factory=dict)


@dataclass
class AlgoConfig(Checked):
    """Fields every method has. Subclasses override the defaults with their paper's values."""

    batch_size: int = field(256, help="minibatch size per update", ge=1, le=MAX_BATCH)
    discount: float = field(0.99, help="discount factor gamma", ge=0.0, le=1.0)


@dataclass
class NoKnobs(Checked):
    """Methods without inference-only knobs."""


class Algorithm(nn.Module, abc.ABC):
    """Base class of every method. Subclasses set the class attributes and the abstract methods."""

    name: ClassVar[str] = ""
    config_class: ClassVar[type[AlgoConfig]] = AlgoConfig
    knobs_class: ClassVar[type] = NoKnobs
    can_propose: ClassVar[bool] = False
    can_select: ClassVar[bool] = False  # scores candidate sets from any method (select, selection_candidates)
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler | None = None
    _compiled_losses: Any = None  # set by compile_losses()
    # None for one seed; S for S seeds trained as one model (algorithms/seeds.py: stack_algorithms)
    seeds: int | None = None
    _rng: SeedRandom | None = None

    def __init__(self, config: AlgoConfig, spec: EnvSpec, device: torch.device | str = "cpu"):
        super().__init__()
        self.config = config
        self.spec = spec
        self.device = torch.device(device)
        # the loss curve of every fit phase the config declares (algorithms/phases.py): its summary at
        # the phase's end goes into the metrics and into every record of the run (`fit_report`)
        phases = [phase for phase in self.phases(config) if phase.loss]
        self.fits = FitRecorder(phases, self.name, spec.total_steps, spec.act_dim) if phases else None

    @property
    def rng(self) -> SeedRandom:
        """Where every random draw of `losses` comes from: one generator per seed. Created on first
        use from torch's global stream (as seeded and then advanced by the networks' initialisation),
        so a single-seed run draws what it would from the global generator; seed stacking gives
        each seed its own."""
        if self._rng is None:
            self._rng = SeedRandom.from_global(self.device)
        return self._rng

    @rng.setter
    def rng(self, value: SeedRandom) -> None:
        self._rng = value

    @abc.abstractmethod
    def losses(self, batch: Batch, step: int) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """(summed loss, metrics) for one batch; metrics are detached scalars named `training/...`.
        Seed-batched (`self.seeds` = S, tensors [S, ...]): the loss and every metric are [S], one
        per seed (algorithms/seeds.py: `seed_mean`)."""

    def after_step(self, step: int) -> None:
        """Work after the optimizer step (Polyak targets); nothing by default."""

    def compile_losses(self) -> None:
        """Run `losses` through torch.compile (Inductor): its forward and backward become fused
        graphs, cutting the per-operator overhead that dominates small-network updates. The first
        updates pay the compilation (seconds to a minute; cached on disk across processes); the
        optimizer step stays the fused eager kernel. Numbers match eager up to float rounding,
        and random draws inside `losses` come from Inductor's generator (seeded, but a different
        stream than eager), so a compiled run is its own run."""
        self._compiled_losses = torch.compile(self.losses)

    def update(self, batch: Batch, step: int) -> dict[str, torch.Tensor]:
        """One training step on one batch; returns the metrics of `losses`."""
        loss, metrics = (self._compiled_losses or self.losses)(batch, step)
        self.optimizer.zero_grad(set_to_none=True)
        # S seeds: the sum of their losses, whose gradient for each seed's parameters is that seed's own
        (loss.sum() if loss.dim() else loss).backward()
        self.optimizer.step()
        if self.scheduler is not None:
            self.scheduler.step()
        self.after_step(step)
        if self.fits is not None:
            metrics.update(self.fits.observe(step, metrics))
        return metrics

    @abc.abstractmethod
    def act(self, obs: torch.Tensor, t: torch.Tensor, knobs: Any) -> ActOutput:
        """Actions for a batch of (normalised) observations at episode steps `t`."""

    def propose(self, obs: torch.Tensor, n: int) -> torch.Tensor:
        """n candidate actions per state, [B, n, d_a]."""
        raise NotImplementedError(f"{self.name} does not propose candidate actions")

    def own_action(self, obs: torch.Tensor, t: torch.Tensor, knobs: Any) -> torch.Tensor:
        """The method's own action before any candidate selection, [B, d_a]: the anchor a_0 when
        a selector scores this method's proposals (benchmarks/run/compose.py). `act`'s by default."""
        return self.act(obs, t, knobs).actions

    def selection_candidates(self, proposer: Algorithm, obs: torch.Tensor, t: torch.Tensor, proposer_knobs: Any,
                             knobs: Any) -> torch.Tensor:
        """The candidate set [B, |C|, d_a] this selector scores for `proposer` at its selection `knobs`
        (from the proposer's `own_action` and `propose`)."""
        raise NotImplementedError(f"{self.name} does not score candidate actions")

    def select(self, obs: torch.Tensor, t: torch.Tensor, candidates: torch.Tensor, knobs: Any) -> ActOutput:
        """One action per state among `candidates` [B, |C|, d_a], by this method's scoring rule."""
        raise NotImplementedError(f"{self.name} does not score candidate actions")

    def check_selection_knobs(self, knobs: Any) -> None:
        """Refuse (ConfigError, one line) selection knobs that mean something else when another
        method proposes; every setting is fine by default."""

    @classmethod
    def phases(cls, config: AlgoConfig) -> list[Phase]:
        """The phases `config` fixes in absolute updates, none by default: `check_phases` refuses a
        run that cannot cover them, and a phase naming its `loss` metric has its fit recorded when
        it ends (algorithms/phases.py)."""
        return []

    def fit_report(self, step: int) -> dict[str, Any]:
        """The record field of the fit phases that had ended by update `step`: `fit_phases`, a list
        of {name, field, steps, final_nll, slope, window, converged} (empty without any)."""
        return {"fit_phases": self.fits.record(step) if self.fits is not None else []}

    def default_knobs(self) -> Any:
        return self.knobs_class()

    def diagnostics(self, batch: Batch) -> dict[str, float]:
        """Optional dataset-level diagnostics (e.g. GEM's NLL gap); empty by default."""
        return {}
