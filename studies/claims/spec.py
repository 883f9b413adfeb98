"""What a claim is: the paper's statement, the runs its experiment needs, and a measurement
that turns one seed's runs into one number, with the direction the paper says it goes.

A claim's experiment runs through the core's public API only: `resolve_run` + `train` for each
run it declares (trained once per seed and shared by every claim that declares the same run;
the store's run ids make a re-run resume or skip), `evaluate_checkpoint` for knob settings read
from one checkpoint, and `Probe` (studies/claims/probes.py) for quantities that are not an
evaluation score (candidate sets, critic disagreement, dataset returns).

The verdict is not decided here: a measurement record carries the number and the expectation,
and studies/claims/render.py applies the one rule to the interval over seeds.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from modebench.algorithms.config import ConfigError, to_dict

RELATIONS = (">", ">=", "<", "<=", "between")
CHECKPOINT_LOCK_WAIT_S = 600.0  # the longest a measurement waits for another worker reading or evaluating the same run


@dataclass(frozen=True)
class Run:
    """One training run of a claim's experiment (per seed)."""

    method: str  # registry name or preset (`modebench methods`)
    task: str  # SUITE/TASK
    steps: int  # updates at full scale
    config: dict[str, Any] = field(default_factory=dict)  # training overrides on top of the suite's
    knobs: dict[str, Any] = field(default_factory=dict)  # the run's own inference knobs
    episodes: int = 100  # evaluation episodes per knob setting (scaled like the steps)

    def key(self) -> str:
        return json.dumps([self.method, self.task, self.steps, self.config, self.knobs, self.episodes], sort_keys=True)


@dataclass(frozen=True)
class Expect:
    """The direction the paper gives for the measured number: `value op threshold`, or for
    "between", `low <= value <= high`."""

    op: str
    threshold: float = 0.0
    high: float | None = None

    def __post_init__(self) -> None:
        if self.op not in RELATIONS:
            raise ConfigError(f"expectation {self.op!r}: use one of {RELATIONS}")
        if (self.op == "between") != (self.high is not None):
            raise ConfigError("an expectation has an upper bound exactly when it is 'between'")

    def to_dict(self) -> dict[str, Any]:
        return {"op": self.op, "threshold": self.threshold, "high": self.high}


@dataclass
class Measurement:
    """One seed's number, plus the numbers it was computed from (shown beside the row)."""

    value: float
    details: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class Claim:
    id: str  # kebab-case, stable: names the records and `modebench claims --claims ID`
    method: str  # the paper's method the claim is about (GEM, LOM, ISEP, DROL)
    statement: str  # the claim, in one sentence
    paper: str  # which paper
    where: str  # table / figure / proposition / section
    paper_says: str  # the paper's number or statement
    quantity: str  # what our number is, precisely (task, arms, knobs, units)
    expect: Expect
    runs: dict[str, Run]
    measure: Callable[[Trial], Measurement]
    finding: str = ""  # set when the row reports a known finding of earlier sessions
    could_fail: str = ""  # whether the quantity can go against the paper at this scale (not saturated), and why
    deviation: str = ""  # where the experiment's settings differ from the paper's, and why
    ours: bool = False  # a statement the paper does not make (an extrapolation of ours), kept as a probe

    def __post_init__(self) -> None:
        if not self.could_fail.startswith(("yes", "no")):
            raise ConfigError(f"claim {self.id}: could_fail must start with 'yes' or 'no' and say why")

    def metadata(self) -> dict[str, Any]:
        return {
            "claim": self.id, "method": self.method, "statement": self.statement, "paper": self.paper,
            "where": self.where, "paper_says": self.paper_says, "quantity": self.quantity,
            "expect": self.expect.to_dict(), "finding": self.finding, "could_fail": self.could_fail,
            "deviation": self.deviation, "ours": self.ours,
        }


@dataclass(frozen=True)
class Scale:
    """How much of a claim's declared budget a run of the report spends."""

    name: str
    step_fraction: float
    episode_fraction: float
    min_steps: int = 20
    min_episodes: int = 10

    def steps(self, steps: int) -> int:
        return max(self.min_steps, round(steps * self.step_fraction))

    def episodes(self, episodes: int) -> int:
        return max(self.min_episodes, round(episodes * self.episode_fraction))


FULL = Scale("full", 1.0, 1.0)
QUICK = Scale("quick", 0.02, 0.05)  # the harness end to end in seconds (CI, smoke runs): numbers mean nothing


class Trial:
    """One seed of one claim: its runs, trained through the core, and what a measurement reads
    (final records, evaluations at other knobs, probes of a checkpoint), each computed once."""

    def __init__(self, claim: Claim, seed: int, root: Path, scale: Scale, device: str = "cpu",
                 diverged: dict[str, str] | None = None):
        self.claim, self.seed, self.root, self.scale, self.device = claim, seed, Path(root), scale, device
        self.diverged = diverged or {}  # run id -> why, for runs the divergence guard stopped
        self._results: dict[str, Any] = {}
        self._evaluations: dict[tuple[str, str], dict[str, Any]] = {}
        self._probes: dict[str, Any] = {}

    def spec(self, name: str):
        return resolve_spec(self.claim.runs[name], self.seed, self.scale, self.device)

    def episodes(self, name: str) -> int:
        return self.spec(name).eval_episodes

    def result(self, name: str):
        """The run's RunResult (trained now unless the store already holds it). A diverged run
        raises FloatingPointError, as `train` does."""
        if name not in self._results:
            from modebench.benchmarks.run.train import train

            spec = self.spec(name)
            if spec.run_id in self.diverged:
                raise FloatingPointError(self.diverged[spec.run_id])
            # another worker may be reading the same finished run for another claim: wait for it
            self._results[name] = train(spec, out=self.root, lock_wait=CHECKPOINT_LOCK_WAIT_S)
        return self._results[name]

    def record(self, name: str) -> dict[str, Any]:
        """The run's final evaluation record (its own knobs, with the method's diagnostics)."""
        return self.result(name).records[-1]

    def evaluate(self, name: str, **knobs: Any) -> dict[str, Any]:
        """One evaluation record of the run's checkpoint at these knobs (others: the run's own)."""
        key = (name, json.dumps(knobs, sort_keys=True, default=str))
        own = to_dict(self.spec(name).knobs)
        if {**own, **knobs} == own:  # the run's own setting: its final record is this evaluation
            return self.record(name)  # (re-evaluating would replace that record and its diagnostics)
        if key not in self._evaluations:
            from modebench.benchmarks.run.train import evaluate_checkpoint

            grid = {k: [v] for k, v in knobs.items()}
            # Workers measure several claims of one run at once: an evaluation takes seconds, so wait.
            (record,) = evaluate_checkpoint(self.result(name).checkpoint, grid, episodes=self.episodes(name),
                                            out=self.root, device=self.device, lock_wait=CHECKPOINT_LOCK_WAIT_S)
            self._evaluations[key] = record
        return self._evaluations[key]

    def score(self, name: str, **knobs: Any) -> float:
        return float(self.evaluate(name, **knobs)["normalized_score"])

    def probe(self, name: str):
        if name not in self._probes:
            from modebench.studies.claims.probes import Probe

            self._probes[name] = Probe(self.result(name).checkpoint, seed=self.seed, device=self.device)
        return self._probes[name]

    def samples(self, n: int) -> int:
        """A probe's sample count at this scale."""
        return self.scale.episodes(n)


def resolve_spec(run: Run, seed: int, scale: Scale, device: str = "cpu"):
    from modebench.benchmarks.run.spec import resolve_run

    return resolve_run(run.method, run.task, config=dict(run.config), knobs=dict(run.knobs), seed=seed,
                       steps=scale.steps(run.steps), eval_episodes=scale.episodes(run.episodes), device=device)
