"""Fit phases: stretches of a run that a method's config fixes in absolute updates (LOM's MDN fit,
GEM's behaviour-GMM fit), the check that a run covers them, and the record of how each fit ended.

A method declares its phases once, in `Algorithm.phases(config)` (algorithms/base.py); everything
here works from that declaration, for every method:

- `check_phases` refuses at start a run whose updates cannot cover a phase, in one line that names
  the field, a recommended length (`recommended_steps`) and why;
- `FitRecorder` follows each phase's loss (its NLL, the training metric `Phase.loss`) while it
  trains and, at the update where the phase ends (the fitted model is frozen from then on), reduces
  the curve to its final NLL and recent slope (`FitSummary`), adds them to that update's metrics
  (`fit/<field>/...`), prints ONE warning line when the loss had not levelled off, and keeps the
  summary in the model's state (checkpointed, per seed when seed-batched) so every evaluation
  record of the run carries it (`Algorithm.fit_report`: the record field `fit_phases`, whose
  entries say `converged: false` for a fit that had not levelled off).

The levelled-off rule (`levelled_off`), over windows of W = max(1, steps // 4) updates:
    rate = (mean loss over the W updates before the last W - mean loss over the last W) / W,
    the loss's fall per update over the second half of the fit (negative if it rose);
    levelled off  <=>  rate * steps <= LEVELLED_NATS * d_a,
i.e. were the fit to run as long again at its final rate, its NLL (nats per sample, summed over
the d_a action dimensions) would fall by at most 0.1 nats per action dimension: a likelihood
10% higher per dimension, the size of change a support score or a mode weight can still feel.
The rule is absolute on purpose: a share of the fall so far is fooled by a fit with two time
scales (GEM's behaviour GMM finds the modes in a few hundred updates, then its log-std shrinks
at Adam's steady pace for thousands more: on toy four-goal the NLL still fell 0.5 nats per
1000 updates after the first 1000, 8% of the fall so far). Windows of a quarter of the phase
keep the minibatch noise of the rate below the threshold (a tenth made a levelled toy fit at
lr 1e-2 read as 0.4 nats still to gain); the price is a rate read a little earlier than the end,
so an exponential approach a + b exp(-t / tau) with b = 2 nats (d_a = 2) passes once the phase
lasts about 5.5 tau. A phase shorter than 2 updates cannot show a level and counts as not
levelled off.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

import torch
from modebench.algorithms.config import ConfigError
from torch import nn

if TYPE_CHECKING:  # annotations only: base.py imports this module
    from modebench.algorithms.base import AlgoConfig, Algorithm

WINDOW_SHARE = 4  # the window is a quarter of the phase
LEVELLED_NATS = 0.1  # per action dimension: what running the fit as long again may still gain


@dataclass(frozen=True)
class PublishedLength:
    """A phase's length where its paper or its authors' code gives one: `steps` updates in a run of
    `of_steps` (the run length that protocol trains for), said by `source`."""

    steps: int
    of_steps: int
    source: str


@dataclass(frozen=True)
class Phase:
    """A stretch of a run that a method's config fixes in absolute updates, declared by the
    method's `phases(config)` so the core can check it and record how its fit ended.

    `blocking`: the method's other losses wait for this phase to end (LOM trains Q, hyper-Q and the
    policy only after the MDN), so it must end BEFORE the run does or they never train.
    Otherwise it runs alongside the main training and must end no later than the run (GEM's
    behaviour GMM would otherwise never be frozen, silently a different method)."""

    name: str  # what the phase does, for the message
    field: str  # the config field that sets its length (the fix names it)
    steps: int  # its length in updates
    blocking: bool
    loss: str = ""  # the training metric holding the fit's loss (its NLL); "" = not followed
    published: PublishedLength | None = None  # the length its paper or code uses, where one is given
    instead: str | None = None  # another fix than a length ("gmm_freeze_after_pretrain=false")


def fit_window(steps: int) -> int:
    return max(1, steps // WINDOW_SHARE)


def windows(steps: int) -> tuple[tuple[int, int], tuple[int, int]]:
    """The update ranges [start, end) of the previous and the last window of a phase."""
    w = fit_window(steps)
    return (max(steps - 2 * w, 0), steps - w), (steps - w, steps)


def levelled_off(previous: float, last: float, window: int, steps: int, act_dim: int) -> bool:
    """The rule (module docstring): as long again at the final rate gains at most LEVELLED_NATS per dimension."""
    return (previous - last) / window * steps <= LEVELLED_NATS * act_dim


@dataclass(frozen=True)
class FitSummary:
    """How one seed's fit phase ended: its record entry (the `fit_phases` record field)."""

    name: str
    field: str
    steps: int
    final_nll: float | None  # the mean loss over the last window
    slope: float | None  # (last - previous window mean) / window: loss change per update at the end
    window: int
    converged: bool

    def record(self) -> dict[str, Any]:
        return asdict(self)


def summarise(phase: Phase, sums: Sequence[float], act_dim: int) -> FitSummary:
    """A phase's summary from its loss summed over the two windows (`windows`)."""
    w = fit_window(phase.steps)
    if phase.steps < 2:
        final = sums[1] / w if phase.steps == 1 else None
        return FitSummary(phase.name, phase.field, phase.steps, final, None, w, False)
    previous, last = (s / w for s in sums)
    return FitSummary(phase.name, phase.field, phase.steps, last, (last - previous) / w, w,
                      levelled_off(previous, last, w, phase.steps, act_dim))


def summarise_curve(phase: Phase, losses: Sequence[float], act_dim: int) -> FitSummary:
    """The summary of a whole loss curve (one value per update of the phase), as FitRecorder sums it."""
    sums = [math.fsum(losses[start:end]) for start, end in windows(phase.steps)]
    return summarise(phase, sums, act_dim)


def recommended_steps(phase: Phase, total_steps: int) -> int:
    """The length to use in a run of `total_steps` updates. A phase that runs alongside the method
    costs it nothing but a later freeze: its published length, capped by the run (the whole run
    where none is published). A blocking phase takes its updates from the rest of the method: its
    published share of the run (the rest keeps its share), capped by its published length, or half
    the run where none is published."""
    limit = total_steps - 1 if phase.blocking else total_steps
    pub = phase.published
    if not phase.blocking:
        wanted = total_steps if pub is None else pub.steps
    elif pub is None:
        wanted = total_steps // 2
    else:
        wanted = min(pub.steps, round(total_steps * pub.steps / pub.of_steps))
    return max(min(wanted, limit), min(1, limit))


def recommendation_reason(phase: Phase, total_steps: int) -> str:
    """Why `recommended_steps` says what it says, in a clause."""
    pub = phase.published
    if not phase.blocking:
        if pub is None:
            return ("no length is published for this fit, and one that runs beside the rest of the method only "
                    "freezes later: the longest the run allows")
        return f"{pub.source} fits it for {pub.steps} of {pub.of_steps} updates, capped by the run"
    if pub is None:
        return "no length is published for this fit: half the run, the other half for the rest of the method"
    share = pub.steps / pub.of_steps
    return (f"{pub.source} fits it for {pub.steps} of {pub.of_steps} updates, {share:.0%} of the run and "
            f"{1 - share:.0%} for the rest of the method: the same share of {total_steps}")


def fix_text(phase: Phase, value: int) -> str:
    text = f"--set {phase.field}={value}"
    return text + (f" or --set {phase.instead}" if phase.instead else "")


def check_phases(algorithm_class: type[Algorithm], config: AlgoConfig, total_steps: int, method: str | None = None) -> None:
    """The one rule for every method: a run whose updates do not cover a declared phase is
    refused at start (ConfigError, one line naming the phase, a recommended length and why). Phases
    never scale with the run, so a config value means the same in every run. `method` names the
    run's method or preset in the message (default: the class's name)."""
    method = method or algorithm_class.name
    for phase in algorithm_class.phases(config):
        if phase.blocking and phase.steps >= total_steps:
            why, limit, need = "must end before the run does, or the rest of the method never trains", total_steps - 1, phase.steps + 1
        elif not phase.blocking and phase.steps > total_steps:
            why, limit, need = "must end within the run", total_steps, phase.steps
        else:
            continue
        recommended = recommended_steps(phase, total_steps)
        raise ConfigError(
            f"{method}: the {phase.name} phase ({phase.field}={phase.steps}) {why} ({total_steps} updates): "
            f"use {fix_text(phase, recommended)} ({recommendation_reason(phase, total_steps)}); "
            f"any N <= {max(limit, 0)} is accepted, or --steps {need} or more"
        )


def longer_value(phase: Phase, total_steps: int) -> int | None:
    """A longer length for a fit that ended unconverged: the recommended one if longer, else twice
    the phase where the run allows more; None when the phase already takes all the run allows."""
    limit = total_steps - 1 if phase.blocking else total_steps
    recommended = recommended_steps(phase, total_steps)
    if recommended > phase.steps:
        return recommended
    return min(limit, max(2 * phase.steps, phase.steps + 1)) if limit > phase.steps else None


def unconverged_warning(phase: Phase, method: str, total_steps: int, summaries: Sequence[FitSummary]) -> str:
    """The one line printed when a fit phase ends before its loss levelled off."""
    bad = [s for s in summaries if not s.converged]
    seeds = "" if len(summaries) == 1 else f" in {len(bad)} of {len(summaries)} seeds trained together"
    s = bad[0]
    if s.final_nll is None or s.slope is None:
        how = f"{phase.steps} updates cannot show a level"
    else:
        how = (f"its NLL still fell {-s.slope * s.window:.3g} over its last {s.window} updates (final {s.final_nll:.4g}), "
               f"{-s.slope * phase.steps:.2g} more if it ran as long again (levelled off: at most {LEVELLED_NATS:g} per action dimension)")
    longer = longer_value(phase, total_steps)
    if longer is not None:
        fix = f"use {fix_text(phase, longer)}"
    else:  # the phase already takes all the run allows
        fix = f"use --steps {2 * total_steps} or more and a longer {phase.field}" + (f", or --set {phase.instead}" if phase.instead else "")
    return (f"warning: {method}: the {phase.name} ({phase.field}={phase.steps}) ended before its loss levelled off{seeds}: "
            f"{how}; what reads it from here on reads an under-fit model: {fix}. This run's records carry converged: false")


class FitRecorder(nn.Module):
    """The loss of each declared fit phase while it trains, summed over the two windows of the
    rule ([2] per phase, [S, 2] when seed-batched), as buffers: they are checkpointed with the
    model and stacked / unstacked per seed like any buffer (algorithms/seeds.py). Summing on the
    device costs one small add per update inside a window and no host sync until the phase ends."""

    def __init__(self, phases: Sequence[Phase], method: str, total_steps: int, act_dim: int):
        super().__init__()
        self.phases = [p for p in phases if p.loss]
        self.method, self.total_steps, self.act_dim = method, total_steps, act_dim
        for phase in self.phases:
            self.register_buffer(phase.field, torch.zeros(2, dtype=torch.float64))
        self.windows = {phase.field: windows(phase.steps) for phase in self.phases}

    def observe(self, step: int, metrics: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Add this update's loss of every phase still training; at a phase's last update, its
        summary as metrics (and the warning line when it had not levelled off)."""
        ended: dict[str, torch.Tensor] = {}
        for phase in self.phases:
            if step >= phase.steps:
                continue
            sums = getattr(self, phase.field)
            value = metrics[phase.loss].detach()
            for slot, (start, end) in enumerate(self.windows[phase.field]):
                if start <= step < end:
                    sums[..., slot] += value
            if step == phase.steps - 1:
                ended.update(self.end(phase))
        return ended

    def summaries(self, phase: Phase) -> list[FitSummary]:
        """One summary per seed (one for a single-seed model)."""
        sums = getattr(self, phase.field).detach().cpu().double().reshape(-1, 2).tolist()
        return [summarise(phase, row, self.act_dim) for row in sums]

    def end(self, phase: Phase) -> dict[str, torch.Tensor]:
        summaries = self.summaries(phase)
        if not all(s.converged for s in summaries):
            print(unconverged_warning(phase, self.method, self.total_steps, summaries), file=sys.stderr, flush=True)
        device = getattr(self, phase.field).device

        def metric(values: list[float]) -> torch.Tensor:
            out = torch.tensor(values, dtype=torch.float32, device=device)
            return out if getattr(self, "seeds", None) else out[0]

        prefix = f"fit/{phase.field}"
        out = {f"{prefix}/converged": metric([float(s.converged) for s in summaries])}
        if all(s.final_nll is not None for s in summaries):
            out[f"{prefix}/final_nll"] = metric([s.final_nll for s in summaries])
        if all(s.slope is not None for s in summaries):
            out[f"{prefix}/slope"] = metric([s.slope for s in summaries])
        return out

    def record(self, step: int) -> list[dict[str, Any]]:
        """The `fit_phases` record entries at evaluation step `step` of a single-seed model: every
        phase that had ended by then."""
        return [self.summaries(phase)[0].record() for phase in self.phases if phase.steps <= step]
