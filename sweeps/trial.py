"""One sweep trial: plan it (run id, the records it must leave), run it, evaluate its knob grid.

The results store is the source of truth. A trial is finished when every record of its final
step exists (one per inference setting; record files are named by hash(run_id, step, knobs),
so a record written twice is stored once); it has diverged when `runs/<run_id>/diverged.json`
exists. Everything else is (re)run, and a rerun never repeats work:

- training resumes from `runs/<run_id>/checkpoint.pt` (the core's `train(resume=True)`), or from
  the trial's last Tune checkpoint when that one is newer (a copy of the same file, kept by
  Tune in the sweep's storage, which may be an object store);
- a knob setting whose record exists is not evaluated again.

Each start, skip and end of a trial is appended to `runs/<run_id>/sweep_attempts.jsonl`.
"""

from __future__ import annotations

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

from algorithms.config import config_hash, from_dict, to_dict
from sweeps.grid import TrialSpec

if TYPE_CHECKING:  # annotations only: the core is imported where a trial runs
    from benchmarks.run.spec import RunSpec

ReportFn = Callable[[dict[str, Any], Path | None], None]


@dataclass
class PlannedTrial:
    spec: TrialSpec
    run: RunSpec  # the trial's run, resolved once; train() gets this spec and its run id
    train_knobs: dict[str, Any]  # the configured knobs, used by the in-training evaluations
    settings: list[dict[str, Any]]  # the configured knobs, then every other inference setting (resolved)
    eval_steps: list[int]

    @property
    def run_id(self) -> str:
        return self.run.run_id

    @property
    def root(self) -> Path:
        return Path(self.spec.out)

    @property
    def run_dir(self) -> Path:
        return self.root / "runs" / self.run_id

    def final_keys(self) -> list[str]:
        from benchmarks.store import record_key

        return [record_key(self.run_id, self.spec.steps, s) for s in self.settings]

    def missing(self, step: int | None = None) -> list[dict[str, Any]]:
        """The inference settings without a record at `step` (default: the final step)."""
        from benchmarks.store import record_key

        step = self.spec.steps if step is None else step
        records = self.run_dir / "records"
        return [s for s in self.settings if not (records / f"{record_key(self.run_id, step, s)}.json").exists()]

    @property
    def diverged_path(self) -> Path:
        return self.run_dir / "diverged.json"

    def status(self) -> str:
        """finished | diverged | todo, read from the results store."""
        if not self.missing():
            return "finished"
        if self.diverged_path.exists():
            return "diverged"
        return "todo"


def resolve_task_fields(task_id: str) -> dict[str, Any]:
    """The task as plain data, with relative dataset/env paths made absolute (trials chdir)."""
    from benchmarks.tasks.suites import get_task

    fields = dataclasses.asdict(get_task(task_id))
    for part in ("dataset", "env"):
        spec = dict(fields[part])
        if isinstance(spec.get("path"), str) and "://" not in spec["path"]:
            spec["path"] = str(Path(spec["path"]).expanduser().resolve())
        fields[part] = spec
    return fields


def plan(spec: TrialSpec) -> PlannedTrial:
    """The trial's resolved run (benchmarks.run.spec.resolve_run, the resolver `modebench train`
    uses) and the records it must write."""
    from benchmarks.run.spec import resolve_run
    from benchmarks.tasks.suites import Task

    if spec.task_fields is None or spec.out is None:
        raise ValueError("plan() needs spec.task_fields and spec.out (filled by the sweep planner)")
    run = resolve_run(
        spec.method, Task(**spec.task_fields), protocol=spec.protocol, config=spec.config, knobs=spec.knobs,
        data=spec.data, seed=spec.seed, steps=spec.steps, eval_every=spec.eval_every,
        eval_episodes=spec.eval_episodes, checkpoint_every=spec.checkpoint_every, device=spec.device or "auto",
    )
    base = to_dict(run.knobs)
    settings, seen = [], set()
    for setting in [{}, *spec.inference]:
        knobs = to_dict(from_dict(run.algorithm_class.knobs_class, {**base, **setting}, what=f"{spec.method} knob"))
        key = config_hash(knobs)
        if key not in seen:
            seen.add(key)
            settings.append(knobs)
    eval_steps = sorted({*range(run.eval_every, spec.steps + 1, run.eval_every), spec.steps})
    return PlannedTrial(spec=spec, run=run, train_knobs=base, settings=settings, eval_steps=eval_steps)


def _log(trial: PlannedTrial, event: str, **extra: Any) -> None:
    trial.run_dir.mkdir(parents=True, exist_ok=True)
    line = {"event": event, "time": time.time(), "pid": os.getpid(), "host": socket.gethostname(), **extra}
    with open(trial.run_dir / "sweep_attempts.jsonl", "a") as fh:
        fh.write(json.dumps(line, sort_keys=True, default=str) + "\n")
        fh.flush()
        os.fsync(fh.fileno())


def _checkpoint_step(path: Path) -> int:
    if not path.exists():
        return 0
    from benchmarks.run.checkpoints import load_checkpoint

    try:
        return int(load_checkpoint(path)["step"])
    except (OSError, RuntimeError, ValueError, KeyError, EOFError, pickle.UnpicklingError):  # damaged: start over
        return -1


def restore_from_tune(trial: PlannedTrial, checkpoint: Any) -> int | None:
    """Copy the trial's Tune checkpoint (a `tune.Checkpoint` or a folder) into the store when it
    is newer than the store's own checkpoint; returns its step, or None when not used."""
    if checkpoint is None:
        return None
    if isinstance(checkpoint, (str, Path)):
        return _restore_from_dir(trial, Path(checkpoint))
    with checkpoint.as_directory() as directory:  # downloads from an object store when needed
        return _restore_from_dir(trial, Path(directory))


def _restore_from_dir(trial: PlannedTrial, directory: Path) -> int | None:
    source = directory / "checkpoint.pt"
    if not source.exists():
        return None
    from benchmarks.store import atomic_write_bytes

    tune_step = _checkpoint_step(source)
    if tune_step > _checkpoint_step(trial.run_dir / "checkpoint.pt"):
        atomic_write_bytes(trial.run_dir / "checkpoint.pt", source.read_bytes())
        return tune_step
    return None


def evaluate_settings(trial: PlannedTrial, step: int, device: str) -> list[dict[str, Any]]:
    """Evaluate the settings that have no record at `step` from the run's checkpoint (which
    must be at `step`), one record each, through the core's `evaluate_checkpoint`."""
    from benchmarks.run.train import evaluate_checkpoint

    records = []
    for setting in trial.missing(step):
        grid = {name: [value] for name, value in setting.items()}
        records += evaluate_checkpoint(trial.run_dir / "checkpoint.pt", grid, trial.spec.eval_episodes, None,
                                       trial.root, device)
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


TRIAL_LOCK_WAIT_S = 60.0  # how long a trial waits for its run folder's writer lock


def execute(spec_dict: dict[str, Any], report: ReportFn, tune_checkpoint: Any = None,
            cpus: float = 1.0, gpus: float = 0.0) -> dict[str, Any]:
    """Run one trial to completion (or divergence); returns the final status line."""
    import torch

    from benchmarks.store import RunStore

    torch.set_num_threads(max(1, int(cpus)))
    spec = TrialSpec.from_dict(spec_dict)
    spec.device = _device(spec, gpus)
    trial = plan(spec)
    # The whole trial (checkpoint restore, training, knob evaluations) under the run folder's
    # writer lock. A restarted trial may find its previous attempt still ending (a lost node's
    # worker, a shared file system's lock lease): it waits for it, then fails for Tune to retry.
    with RunStore(trial.root, trial.run_id).writing(wait=TRIAL_LOCK_WAIT_S):
        return _execute(trial, report, tune_checkpoint)


def _execute(trial: PlannedTrial, report: ReportFn, tune_checkpoint: Any) -> dict[str, Any]:
    from benchmarks.run.train import train

    spec = trial.spec
    device = spec.device
    status = trial.status()
    if status != "todo":
        _log(trial, "skip", status=status)
        out = {"status": status, "run_id": trial.run_id, "skipped": True}
        report(out, None)
        return out
    restored = restore_from_tune(trial, tune_checkpoint)
    start_step = _checkpoint_step(trial.run_dir / "checkpoint.pt")
    _log(trial, "start", start_step=start_step, restored_from_tune=restored, label=spec.label)

    # A trial that died while evaluating its knob grid at an intermediate step finishes it first.
    if spec.knobs_at == "all" and start_step in trial.eval_steps and start_step < spec.steps:
        evaluate_settings(trial, start_step, device)

    def on_evaluation(record: dict[str, Any]) -> None:
        step = int(record["step"])
        if spec.knobs_at == "all" and step < spec.steps:
            evaluate_settings(trial, step, device)
        report({"status": "training", "run_id": trial.run_id, **_summary(record)}, trial.run_dir / "checkpoint.pt")

    from benchmarks.cli import user_errors

    try:
        result = train(trial.run, out=trial.root, resume=True, on_evaluation=on_evaluation)
    except FloatingPointError as err:
        from benchmarks.store import atomic_write_json

        reason = str(err)
        atomic_write_json(trial.diverged_path, {"run_id": trial.run_id, "reason": reason, "time": time.time(),
                                                "method": spec.method, "task": spec.task, "seed": spec.seed,
                                                "config": spec.config})
        _log(trial, "diverged", reason=reason)
        out = {"status": "diverged", "run_id": trial.run_id, "reason": reason}
        report(out, None)
        return out
    except user_errors() as err:  # missing data, a bad value: retrying cannot help; the sweep reports it
        reason = f"{type(err).__name__}: {err}"
        _log(trial, "failed", reason=reason)
        out = {"status": "failed", "run_id": trial.run_id, "reason": reason}
        report(out, None)
        return out
    evaluate_settings(trial, spec.steps, device)
    missing = trial.missing()
    if missing:
        raise RuntimeError(f"{trial.run_id}: knob settings {missing} still have no record after evaluation")
    _log(trial, "finished", records=len(trial.settings))
    out = {"status": "finished", "run_id": trial.run_id, "records": len(trial.settings), **_summary(result.records[-1])}
    report(out, None)
    return out


# ------------------------------------------------------------------ the Ray Tune trainable
def _tune_report(metrics: dict[str, Any], checkpoint_file: Path | None) -> None:
    from ray import tune

    if checkpoint_file is None:
        tune.report(metrics)
        return
    with tempfile.TemporaryDirectory(prefix="modebench-ckpt-") as tmp:
        target = Path(tmp) / "checkpoint.pt"
        try:
            os.link(checkpoint_file, target)  # same file system: no copy
        except OSError:
            shutil.copy2(checkpoint_file, target)
        (Path(tmp) / "meta.json").write_text(json.dumps({"run_id": metrics.get("run_id"), "step": metrics.get("step")}))
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
