"""One sweep trial: plan it (a run id per seed, the records each run must leave), train all its
seeds as one seed-batched model, evaluate each run's knob grid.

A trial is one method, training combination and task with every seed of the grid: one run (run
folder, records, checkpoint) per seed, each the run `modebench train` makes with that seed, and
all of them trained together by the core's `train_seeds` (one update loop for all seeds; each
seed gets the numbers it gets alone).

The results store is the source of truth. A run is finished when every record of its final step
exists (one per inference setting; record files are named by hash(run_id, step, knobs), so a
record written twice is stored once); it has diverged when `runs/<run_id>/diverged.json` exists.
A trial is finished when all its runs are; the runs that are neither finished nor diverged are
(re)run, and a rerun never repeats work:

- training resumes each seed from `runs/<run_id>/checkpoint.pt` (`train_seeds(resume=True)`),
  or from the trial's last Tune checkpoint when that one is newer (a copy of the same files, one
  per run, kept by Tune in the sweep's storage, which may be an object store);
- a knob setting whose record exists is not evaluated again;
- a seed that diverges is marked diverged; the trial's other seeds go on.

Each start, skip and end of a run is appended to `runs/<run_id>/sweep_attempts.jsonl`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import pickle
import shutil
import socket
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from modebench.algorithms.config import config_hash, from_dict, to_dict
from modebench.sweeps.grid import TrialSpec

if TYPE_CHECKING:  # annotations only: the core is imported where a trial runs
    from modebench.benchmarks.run.spec import RunSpec
    from modebench.benchmarks.store import RunStore

# report(metrics, checkpoints): checkpoints maps run id -> its checkpoint.pt, for Tune to keep
ReportFn = Callable[[dict[str, Any], "dict[str, Path] | None"], None]


@dataclass
class PlannedRun:
    """One seed of a trial: its run (resolved once; train_seeds gets this spec and its run id)
    and the records it must leave."""

    run: RunSpec
    root: Path
    settings: list[dict[str, Any]]  # the trial's settings (the same for every seed)

    @property
    def seed(self) -> int:
        return self.run.seed

    @property
    def steps(self) -> int:
        return self.run.steps

    @property
    def run_id(self) -> str:
        return self.run.run_id

    @property
    def store(self) -> RunStore:
        """The run's folder in the results store (the store alone knows its layout)."""
        from modebench.benchmarks.store import RunStore

        return RunStore(self.root, self.run_id)

    @property
    def run_dir(self) -> Path:
        return self.store.path

    @property
    def checkpoint_path(self) -> Path:
        return self.store.checkpoint_path

    def final_keys(self) -> list[str]:
        from modebench.benchmarks.store import record_key

        return [record_key(self.run_id, self.steps, s) for s in self.settings]

    def missing(self, step: int | None = None) -> list[dict[str, Any]]:
        """The inference settings without a valid record at `step` (default: the final step); a
        damaged record counts as missing (it is evaluated again)."""
        step = self.steps if step is None else step
        store = self.store
        return [s for s in self.settings if not store.has_record(step, s)]

    @property
    def diverged_path(self) -> Path:
        return self.store.diverged_path

    def status(self) -> str:
        """finished | diverged | todo, read from the results store. A run whose final records are
        all there but whose checkpoint is not (lost when a run was stopped between the two) is todo:
        training it again restores the checkpoint with the same numbers."""
        if not self.missing() and self.checkpoint_path.exists():
            return "finished"
        if self.diverged_path.exists():
            return "diverged"
        return "todo"


@dataclass
class PlannedTrial:
    spec: TrialSpec
    runs: list[PlannedRun]  # one per seed, in the order of spec.seeds
    train_knobs: dict[str, Any]  # the configured knobs, used by the in-training evaluations
    settings: list[dict[str, Any]]  # the configured knobs, then every other inference setting (resolved)
    eval_steps: list[int]

    @property
    def label(self) -> str:
        return self.spec.label

    @property
    def run_ids(self) -> list[str]:
        return [r.run_id for r in self.runs]

    @property
    def root(self) -> Path:
        return Path(self.spec.out)

    def statuses(self) -> dict[str, str]:
        """run id -> finished | diverged | todo, read from the results store."""
        return {r.run_id: r.status() for r in self.runs}

    def status(self) -> str:
        """todo while any run is; else diverged when any run diverged; else finished."""
        found = set(self.statuses().values())
        return "todo" if "todo" in found else "diverged" if "diverged" in found else "finished"


def resolve_task_fields(task_id: str) -> dict[str, Any]:
    """The task as plain data, with relative dataset/env paths made absolute (trials chdir)."""
    from modebench.benchmarks.tasks.suites import get_task

    fields = dataclasses.asdict(get_task(task_id))
    for part in ("dataset", "env"):
        spec = dict(fields[part])
        if isinstance(spec.get("path"), str) and "://" not in spec["path"]:
            spec["path"] = str(Path(spec["path"]).expanduser().resolve())
        fields[part] = spec
    return fields


def plan(spec: TrialSpec) -> PlannedTrial:
    """The trial's resolved runs, one per seed (benchmarks.run.spec.resolve_run, the resolver
    `modebench train` uses) and the records each must write."""
    from modebench.benchmarks.run.workers import resolve_watched
    from modebench.benchmarks.tasks.suites import Task

    if spec.task_fields is None or spec.out is None:
        raise ValueError("plan() needs spec.task_fields and spec.out (filled by the sweep planner)")
    if not spec.seeds or len(set(spec.seeds)) != len(spec.seeds):
        raise ValueError(f"a trial needs distinct seeds, got {spec.seeds}")
    task = Task(**spec.task_fields)
    specs = [resolve_watched(  # resolve_run, logging often enough for the sweep driver's progress lines
        spec.method, task, protocol=spec.protocol, config=spec.config, knobs=spec.knobs,
        data=spec.data, seed=int(seed), steps=spec.steps, eval_every=spec.eval_every,
        eval_episodes=spec.eval_episodes, checkpoint_every=spec.checkpoint_every, device=spec.device or "auto",
    ) for seed in spec.seeds]
    run = specs[0]
    base = to_dict(run.knobs)
    settings, seen = [], set()
    for setting in [{}, *spec.inference]:
        knobs = to_dict(from_dict(run.algorithm_class.knobs_class, {**base, **setting}, what=f"{spec.method} knob"))
        key = config_hash(knobs)
        if key not in seen:
            seen.add(key)
            settings.append(knobs)
    eval_steps = sorted({*range(run.eval_every, spec.steps + 1, run.eval_every), spec.steps})
    root = Path(spec.out)
    runs = [PlannedRun(run=r, root=root, settings=settings) for r in specs]
    return PlannedTrial(spec=spec, runs=runs, train_knobs=base, settings=settings, eval_steps=eval_steps)


def _log(run: PlannedRun, event: str, **extra: Any) -> None:
    run.store.log_attempt({"event": event, "time": time.time(), "pid": os.getpid(), "host": socket.gethostname(), **extra})


def _checkpoint_step(path: Path) -> int:
    if not path.exists():
        return 0
    from modebench.benchmarks.run.checkpoints import load_checkpoint

    try:
        return int(load_checkpoint(path)["step"])
    except (OSError, RuntimeError, ValueError, KeyError, EOFError, pickle.UnpicklingError):  # damaged: start over
        return -1


def restore_from_tune(trial: PlannedTrial, checkpoint: Any, runs: list[PlannedRun] | None = None) -> dict[str, int]:
    """Copy each run's checkpoint from the trial's Tune checkpoint (a `tune.Checkpoint` or a
    folder holding `<run_id>/checkpoint.pt` per seed) into the store when it is newer than the
    store's own; returns run id -> step of the copies made. `runs`: only these (default: all)."""
    if checkpoint is None:
        return {}
    runs = trial.runs if runs is None else runs
    if isinstance(checkpoint, (str, Path)):
        return _restore_from_dir(runs, Path(checkpoint))
    with checkpoint.as_directory() as directory:  # downloads from an object store when needed
        return _restore_from_dir(runs, Path(directory))


def _restore_from_dir(runs: list[PlannedRun], directory: Path) -> dict[str, int]:
    from modebench.benchmarks.store import atomic_write_bytes

    restored = {}
    for run in runs:
        source = directory / run.run_id / "checkpoint.pt"
        if not source.exists():
            continue
        tune_step = _checkpoint_step(source)
        if tune_step > _checkpoint_step(run.checkpoint_path):
            atomic_write_bytes(run.checkpoint_path, source.read_bytes())
            restored[run.run_id] = tune_step
    return restored


def evaluate_settings(trial: PlannedTrial, run: PlannedRun, step: int, device: str) -> list[dict[str, Any]]:
    """Evaluate the settings that have no record at `step` from the run's checkpoint (which
    must be at `step`), one record each, through the core's `evaluate_checkpoint`."""
    from modebench.benchmarks.run.train import evaluate_checkpoint

    records = []
    for setting in run.missing(step):
        grid = {name: [value] for name, value in setting.items()}
        records += evaluate_checkpoint(run.checkpoint_path, grid, trial.spec.eval_episodes, None, trial.root, device)
    return records


def _device(spec: TrialSpec, gpus: float) -> str:
    if spec.device:
        return spec.device
    return "cuda" if gpus > 0 else "cpu"


def _summary(record: dict[str, Any]) -> dict[str, Any]:
    return {
        "step": record["step"],
        "normalized_score": record["normalized_score"],
        "return_mean": record["return_mean"],
        "success_rate": record["success_rate"],
        **{f"audit/{k}": v for k, v in record.get("audits", {}).items()},
    }


def _mean_summary(records: list[dict[str, Any]]) -> dict[str, Any]:
    """The seeds' final records as one line for Tune's tables: the mean of each number."""
    out: dict[str, Any] = {"seeds_finished": len(records)}
    if not records:
        return out
    out["step"] = records[0]["step"]
    for key in ("normalized_score", "return_mean", "success_rate"):
        values = [r[key] for r in records if isinstance(r.get(key), (int, float))]
        out[key] = sum(values) / len(values) if values else None
    return out


TRIAL_LOCK_WAIT_S = 60.0  # how long a trial waits for each run folder's writer lock


def execute(spec_dict: dict[str, Any], report: ReportFn, tune_checkpoint: Any = None,
            cpus: float = 1.0, gpus: float = 0.0) -> dict[str, Any]:
    """Run one trial (all its seeds) to completion or divergence; returns the final status line."""
    import torch
    from modebench.benchmarks.run.workers import keep_freed_memory
    from modebench.benchmarks.store import RunStore

    torch.set_num_threads(max(1, int(cpus)))
    keep_freed_memory()  # a Ray worker is its own process: the allocator settings of every command
    spec = TrialSpec.from_dict(spec_dict)
    spec.device = _device(spec, gpus)
    trial = plan(spec)
    # The whole trial (checkpoint restore, training, knob evaluations) under every run folder's
    # writer lock. A restarted trial may find its previous attempt still ending (a lost node's
    # worker, a shared file system's lock lease): it waits for it, then fails for Tune to retry.
    with contextlib.ExitStack() as held:
        for run in trial.runs:
            held.enter_context(RunStore(trial.root, run.run_id).writing(wait=TRIAL_LOCK_WAIT_S))
        return _execute(trial, report, tune_checkpoint)


def _mark_diverged(trial: PlannedTrial, run: PlannedRun, reason: str) -> None:
    spec = trial.spec
    run.store.mark_diverged({"reason": reason, "time": time.time(), "method": spec.method, "task": spec.task,
                             "seed": run.seed, "config": spec.config, "trial": spec.label})
    _log(run, "diverged", reason=reason)


def _execute(trial: PlannedTrial, report: ReportFn, tune_checkpoint: Any) -> dict[str, Any]:
    from modebench.benchmarks.cli import user_errors
    from modebench.benchmarks.run.spec import RunGroup
    from modebench.benchmarks.run.train import train_seeds

    spec = trial.spec
    device = spec.device
    before = trial.statuses()
    todo = [run for run in trial.runs if before[run.run_id] == "todo"]
    for run in trial.runs:
        if before[run.run_id] != "todo":
            _log(run, "skip", status=before[run.run_id], label=spec.label)
    if not todo:
        out = {"status": trial.status(), "run_ids": trial.run_ids, "statuses": before, "skipped": True}
        report(out, None)
        return out
    restored = restore_from_tune(trial, tune_checkpoint, todo)
    for run in todo:
        start_step = _checkpoint_step(run.checkpoint_path)
        _log(run, "start", start_step=start_step, restored_from_tune=restored.get(run.run_id), label=spec.label,
             seeds=[r.seed for r in todo])
        # a run that died while evaluating its knob grid at an intermediate step finishes it first
        if spec.knobs_at == "all" and start_step in trial.eval_steps and start_step < spec.steps:
            evaluate_settings(trial, run, start_step, device)

    by_id = {run.run_id: run for run in todo}
    by_seed = {run.seed: run for run in todo}  # a record names its run by its seed
    live = list(todo)  # the seeds the current train_seeds call trains
    starts: dict[str, int] = {}  # their checkpoint steps when it began
    seen: dict[int, set[str]] = {}  # step -> the runs that stored their record at that step

    def due(run: PlannedRun, step: int) -> set[str]:
        """The runs that store a record at `step` along with `run`: those of its batch (same
        start) that stored the batch's previous evaluation (a seed that diverged did not)."""
        batch = [r.run_id for r in live if starts[r.run_id] == starts[run.run_id]]
        earlier = [k for k in seen if starts[run.run_id] < k < step]
        return set(batch) & seen[max(earlier)] if earlier else set(batch)

    def on_evaluation(record: dict[str, Any]) -> None:
        run = by_seed[int(record["seed"])]
        step = int(record["step"])
        if spec.knobs_at == "all" and step < spec.steps:
            evaluate_settings(trial, run, step, device)
        seen.setdefault(step, set()).add(run.run_id)
        # the last seed of the batch to store this evaluation: one Tune checkpoint with every seed's
        checkpoints = None
        if due(run, step) <= seen[step]:
            checkpoints = {r.run_id: r.checkpoint_path for r in live if r.checkpoint_path.exists()}
        report({"status": "training", "run_id": run.run_id, "seed": run.seed, **_summary(record)}, checkpoints)

    results: dict[str, Any] = {}
    while live:
        starts = {run.run_id: max(0, _checkpoint_step(run.checkpoint_path)) for run in live}
        try:
            done = train_seeds(RunGroup.of([run.run for run in live]), out=trial.root, resume=True,
                               on_evaluation=on_evaluation)
        except FloatingPointError as err:
            # train_seeds returns a diverged seed's error in its place; one raised instead names its
            # run (`<run_id>: non-finite ...`): that seed is marked and the others train on from
            # their own checkpoints; a nameless one ends every live seed
            reason = str(err)
            culprits = [run for run in live if reason.startswith(f"{run.run_id}:")] or list(live)
            for run in culprits:
                _mark_diverged(trial, run, reason)
            live = [run for run in live if run not in culprits]
            continue
        except user_errors() as err:  # missing data, a bad value: retrying cannot help; the sweep reports it
            reason = f"{type(err).__name__}: {err}"
            for run in live:
                _log(run, "failed", reason=reason)
            out = {"status": "failed", "run_ids": [run.run_id for run in live], "reason": reason,
                   "statuses": trial.statuses()}
            report(out, None)
            return out
        for run, result in zip(live, done):
            if isinstance(result, FloatingPointError):  # this seed diverged; the others trained on
                _mark_diverged(trial, run, str(result))
            else:
                results[run.run_id] = result
        live = [run for run in live if run.run_id in results]
        break
    for run in live:
        evaluate_settings(trial, run, spec.steps, device)
        missing = run.missing()
        if missing:
            raise RuntimeError(f"{run.run_id}: knob settings {missing} still have no record after evaluation")
        _log(run, "finished", records=len(trial.settings))
    statuses = trial.statuses()
    status = "diverged" if "diverged" in statuses.values() else "finished"
    out = {"status": status, "run_ids": trial.run_ids, "statuses": statuses, "records": len(trial.settings),
           **_mean_summary([result.records[-1] for result in results.values()])}
    diverged = {run_id: json.loads(by_id[run_id].diverged_path.read_text())["reason"]
                for run_id, s in statuses.items() if s == "diverged" and run_id in by_id}
    if diverged:
        out["reason"] = "; ".join(diverged.values())
    report(out, None)
    return out


# ------------------------------------------------------------------ the Ray Tune trainable
def _tune_report(metrics: dict[str, Any], checkpoints: dict[str, Path] | None) -> None:
    from ray import tune

    if not checkpoints:
        tune.report(metrics)
        return
    with tempfile.TemporaryDirectory(prefix="modebench-ckpt-") as tmp:
        for run_id, checkpoint_file in checkpoints.items():
            target = Path(tmp) / run_id / "checkpoint.pt"
            target.parent.mkdir()
            try:
                os.link(checkpoint_file, target)  # same file system: no copy
            except OSError:
                shutil.copy2(checkpoint_file, target)
        (Path(tmp) / "meta.json").write_text(json.dumps({"run_ids": sorted(checkpoints), "step": metrics.get("step")}))
        tune.report(metrics, checkpoint=tune.Checkpoint.from_directory(tmp))


def run_trial(config: dict[str, Any], jobs: dict[str, dict[str, Any]] | None = None) -> None:
    """Ray Tune function trainable. config = {"job": label}; `jobs` (bound with
    `tune.with_parameters`) maps each label to {"trial": TrialSpec dict, "resources": {...}}."""
    from ray import tune

    job = (jobs or {}).get(config["job"])
    if job is None:  # a restored experiment's trial that the current plan no longer contains
        tune.report({"status": "not-in-plan", "run_id": None})
        return
    resources = job.get("resources", {})
    execute(job["trial"], _tune_report, tune.get_checkpoint(), resources.get("cpu", 1.0), resources.get("gpu", 0.0))
