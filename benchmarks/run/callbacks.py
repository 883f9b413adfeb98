"""The training loop's callbacks: divergence guard, metrics writer, evaluator, checkpointer,
progress bar, and a caller's hook on each record.

The loop (benchmarks/run/train.py) calls, in list order,

    on_start(run)                  once, before the first update of this process (after a resume too)
    on_step(run, step)             after every update (cheap: no host sync)
    on_log(run, step, metrics)     every logging interval, with the interval's mean metrics
                                   (the one host sync per interval)
    before_record(run, record)     an evaluation is done, its record not yet stored (the checkpoint
                                   goes to disk here: a stored record always has its checkpoint)
    on_record(run, record)         after the evaluator stored a record
    on_end(run)                    once, after the last update

`TrainingRun` (below) is what they see of the run; training returns it when the run is done.

Metrics always go to `runs/<run_id>/metrics.jsonl`, named by what they measure: `training/...`
(the method's losses), `time/...`, `eval/...` (the evaluation's scores), `diagnostics/...` (the
method's dataset diagnostics on the fixed evaluation batch). `--log tensorboard` / `--log wandb`
also send them to TensorBoard or Weights & Biases (optional extras; off by default).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from modebench.algorithms.base import Algorithm
from modebench.algorithms.config import ConfigError, to_dict
from modebench.benchmarks.data.dataset import Normalizer, TransitionDataset
from modebench.benchmarks.data.replay import DeviceReplay
from modebench.benchmarks.run.checkpoints import save_checkpoint
from modebench.benchmarks.run.evaluation import evaluate
from modebench.benchmarks.run.spec import RunSpec, record_fields
from modebench.benchmarks.store import DISTRIBUTION, RunStore
from tqdm.auto import tqdm

DIAGNOSTIC_ROWS = 10_000  # rows of the fixed evaluation batch the method's diagnostics() sees
LOGGERS = ("tensorboard", "wandb")


@dataclass
class TrainingRun:
    """One run: what the callbacks see of it in progress, and what training returns when it is done
    (its records, its score, where its checkpoint is)."""

    spec: RunSpec
    store: RunStore
    info: dict[str, Any]  # config.json (also kept in every checkpoint)
    dataset: TransitionDataset
    normalizer: Normalizer
    replay: DeviceReplay
    algorithm: Algorithm
    callbacks: list[Callback]
    start_step: int = 0  # the step this process started from (its checkpoint's; 0 for a fresh run)
    step: int = 0  # updates done so far
    train_time: float = 0.0  # seconds spent in updates (evaluations excluded)
    metrics: dict[str, float] = field(default_factory=dict)  # the last interval's mean metrics
    records: list[dict[str, Any]] = field(default_factory=list)
    already_finished: bool = False  # the store held the finished run: nothing was trained or evaluated
    # torch's global generator states just after prepare: what a run trained alone continues from
    global_rng: tuple[torch.Tensor, list[torch.Tensor]] | None = None

    def emit(self, record: dict[str, Any]) -> None:
        """Hand a new record to `before_record` (the checkpoint is saved there), store it, then hand
        it to every `on_record`."""
        for callback in self.callbacks:
            callback.before_record(self, record)
        self.store.write_record(record)
        self.records.append(record)
        for callback in self.callbacks:
            callback.on_record(self, record)

    @property
    def score(self) -> float:
        """The final record's normalised score."""
        return float(self.records[-1]["normalized_score"])

    @property
    def checkpoint(self) -> Path:
        return self.store.checkpoint_path

    @property
    def run_dir(self) -> Path:
        return self.store.path

    @property
    def updates_per_second(self) -> float:
        return self.metrics.get("time/updates_per_second", math.nan)


class Callback:
    def on_start(self, run: TrainingRun) -> None: ...

    def on_step(self, run: TrainingRun, step: int) -> None: ...

    def on_log(self, run: TrainingRun, step: int, metrics: dict[str, float]) -> None: ...

    def before_record(self, run: TrainingRun, record: dict[str, Any]) -> None: ...

    def on_record(self, run: TrainingRun, record: dict[str, Any]) -> None: ...

    def on_end(self, run: TrainingRun) -> None: ...


class DivergenceGuard(Callback):
    """Stops a run whose training metrics are no longer finite (a sweep marks it diverged)."""

    def on_log(self, run, step, metrics):
        bad = [k for k, v in metrics.items() if not math.isfinite(v)]
        if bad:
            raise FloatingPointError(f"{run.spec.run_id}: non-finite training metric(s) {bad} at step {step}; the run diverged")


class MetricsWriter(Callback):
    """Training metrics every interval and each record's eval/ and diagnostics/ numbers, to the
    run's metrics.jsonl and to the optional TensorBoard / W&B sinks."""

    def __init__(self, loggers: tuple[str, ...] = ()):
        unknown = sorted(set(loggers) - set(LOGGERS))
        if unknown:
            raise ConfigError(f"unknown --log {unknown}; valid: {', '.join(LOGGERS)} (metrics.jsonl is always written)")
        self.loggers = tuple(dict.fromkeys(loggers))
        for name in self.loggers:  # fail before training, not at the first interval
            _import_logger(name)
        self.sinks: list[Any] = []

    def _open(self, run: TrainingRun) -> None:
        if self.sinks or not self.loggers:
            return
        for name in self.loggers:
            module = _import_logger(name)
            if name == "tensorboard":
                self.sinks.append(_TensorBoardSink(module, run))
            else:
                self.sinks.append(_WandbSink(module, run))

    def write(self, run: TrainingRun, step: int, values: dict[str, float]) -> None:
        run.store.append_metrics({"step": step, **values})
        self._open(run)
        for sink in self.sinks:
            sink.write(step, values)

    def on_log(self, run, step, metrics):
        self.write(run, step, metrics)

    def on_record(self, run, record):
        values = {f"eval/{k}": record[k] for k in ("normalized_score", "return_mean", "success_rate", "episode_length_mean")}
        values.update({f"eval/audit/{k}": v for k, v in record.get("audits", {}).items()})
        values.update({k: v for k, v in record.items() if k.startswith("diagnostics/")})
        self.write(run, int(record["step"]), values)

    def on_end(self, run):
        for sink in self.sinks:
            sink.close()
        self.sinks = []


def _import_logger(name: str):
    try:
        if name == "tensorboard":
            from torch.utils import tensorboard

            return tensorboard
        import wandb

        return wandb
    except ImportError:
        raise ConfigError(f"--log {name} needs the {name} package: pip install '{DISTRIBUTION}[{name}]'") from None


class _TensorBoardSink:
    """One TensorBoard run per seed: event files in the seed's own run folder (runs/<run id>/tensorboard),
    so `tensorboard --logdir RESULTS/runs` lists each seed apart."""

    def __init__(self, module, run: TrainingRun):
        self.writer = module.SummaryWriter(log_dir=str(run.store.path / "tensorboard"))

    def write(self, step: int, values: dict[str, float]) -> None:
        for key, value in values.items():
            self.writer.add_scalar(key, value, step)

    def close(self) -> None:
        self.writer.close()


class _WandbSink:
    """One W&B run per seed, named and keyed by the seed's run id and grouped with the other seeds of
    its method x task. The seeds of a seed-batched `train --seeds 4,5` log at once from one process,
    so each init creates a new run (`reinit="create_new"`) instead of returning or finishing the
    previous one; a resumed seed continues its own run (`resume="allow"` on the same id)."""

    def __init__(self, module, run: TrainingRun):
        spec = run.spec
        self.run = module.init(project="modebench", name=spec.run_id, id=spec.run_id, resume="allow",
                               group=f"{spec.method} {spec.task.id}", dir=str(run.store.path), config=run.info,
                               reinit="create_new")

    def write(self, step: int, values: dict[str, float]) -> None:
        self.run.log(values, step=step)

    def close(self) -> None:
        self.run.finish()


class Evaluator(Callback):
    """Evaluates at every `eval_every` updates and at the end, adds the method's diagnostics on the
    fixed evaluation batch, stores the record and hands it to the `on_record` callbacks. This is
    the one caller of `evaluate` in training.

    Each evaluation of a step the run trains past in this process is made and stored, even where a
    record exists: a record is stored only after its checkpoint (Checkpointer.before_record), so one
    ahead of the checkpoint the run resumed from lost its checkpoint (or was written by a version
    that stored the record first); training to its step again and evaluating gives the same numbers
    and restores the checkpoint. A resumed run whose checkpoint is at an evaluation step without a
    valid record (stopped between the two, or the record damaged) evaluates that step first."""

    @staticmethod
    def evaluates(run: TrainingRun, step: int) -> bool:
        return step % run.spec.eval_every == 0 or step == run.spec.steps

    def on_start(self, run):
        step = run.start_step
        if 0 < step < run.spec.steps and self.evaluates(run, step) and not run.store.has_record(step, to_dict(run.spec.knobs)):
            run.emit(self.record(run, step, {}))

    def on_log(self, run, step, metrics):
        if self.evaluates(run, step):
            run.emit(self.record(run, step, {
                "updates_per_second": metrics["time/updates_per_second"],
                "train_wall_time": run.train_time,
                "training_metrics": metrics,
            }))

    def on_end(self, run):
        if not run.records:  # the run had already finished: read its final record back (or make it)
            final = run.store.read_record(run.spec.steps, to_dict(run.spec.knobs))
            if final is not None:
                run.records.append(final)
            else:
                run.emit(self.record(run, run.spec.steps, {}))

    @staticmethod
    def record(run: TrainingRun, step: int, extra: dict[str, Any]) -> dict[str, Any]:
        spec, dataset = run.spec, run.dataset
        result = evaluate(run.algorithm, spec.task, spec.knobs, spec.eval_episodes, spec.seed, run.normalizer,
                          dataset.action_low, dataset.action_high, dataset=dataset)
        return {
            **record_fields(run.info, step, to_dict(spec.knobs)),
            "source": "train",
            **result.summary(),
            **run.algorithm.fit_report(step),  # how each fit phase ended (algorithms/phases.py)
            **diagnostics(run),
            **extra,
        }


def diagnostic_rows(size: int, seed: int) -> np.ndarray:
    """The fixed evaluation batch: up to DIAGNOSTIC_ROWS dataset rows drawn with the run's seed
    (its own generator: the training streams are untouched)."""
    rows = np.random.default_rng(seed).permutation(size)[:DIAGNOSTIC_ROWS]
    return np.sort(rows)


def diagnostics(run: TrainingRun) -> dict[str, float]:
    """`algorithm.diagnostics` on the fixed evaluation batch (GEM's NLL gap, Eq. 72-75; DROL's and
    LOM's routing and mode statistics), under the evaluation seed's RNG and without gradients."""
    algorithm = run.algorithm
    idx = torch.as_tensor(diagnostic_rows(run.replay.size, run.spec.seed), device=run.replay.device)
    was_training = algorithm.training
    algorithm.eval()
    devices = [algorithm.device] if algorithm.device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices), torch.no_grad():
        torch.manual_seed(run.spec.seed)
        try:
            return {k: float(v) for k, v in algorithm.diagnostics(run.replay.batch(idx)).items()}
        finally:
            algorithm.train(was_training)


class Checkpointer(Callback):
    """A checkpoint before every stored evaluation of the current step (on disk before the record:
    a stop in between leaves a checkpoint whose record the resumed run makes first; never a record
    without its checkpoint) and every `checkpoint_every` updates in between."""

    def on_step(self, run, step):
        if step % run.spec.checkpoint_every == 0 and step % run.spec.eval_every != 0 and step != run.spec.steps:
            self.save(run, step)

    def before_record(self, run, record):
        if run.step == record["step"]:
            self.save(run, record["step"])

    @staticmethod
    def save(run: TrainingRun, step: int) -> None:
        save_checkpoint(run.store.checkpoint_path, run.algorithm, run.info, step, run.normalizer, run.dataset, run.replay)


class ProgressBar(Callback):
    def __init__(self, enabled: bool):
        self.enabled = enabled
        self.bar: tqdm | None = None

    def _bar(self, run: TrainingRun) -> tqdm:
        if self.bar is None:
            spec = run.spec
            self.bar = tqdm(total=spec.steps, initial=run.start_step, desc=f"{spec.method} {spec.task.id} seed {spec.seed}",
                            disable=not self.enabled)
        return self.bar

    def on_step(self, run, step):
        self._bar(run).update(1)

    def on_log(self, run, step, metrics):
        self._bar(run).set_postfix({k.split("/")[-1]: f"{v:.3g}" for k, v in list(metrics.items())[:4]})

    def on_record(self, run, record):
        if self.enabled:
            self._bar(run).write(f"step {record['step']}: normalized_score {record['normalized_score']:.2f}")

    def on_end(self, run):
        if self.bar is not None:
            self.bar.close()


class RecordHook(Callback):
    """A caller's function on each new record (the sweeps report to Ray Tune and evaluate knob grids)."""

    def __init__(self, fn: Callable[[dict[str, Any]], None]):
        self.fn = fn

    def on_record(self, run, record):
        self.fn(record)
