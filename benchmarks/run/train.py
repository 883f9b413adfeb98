"""Training and checkpoint evaluation, for a resolved run (benchmarks/run/spec.py).

`train(spec)` trains `spec.method` on `spec.task` for `spec.steps` updates: a short loop over
updates that hands each step, each logging interval and each stored record to the callbacks
(benchmarks/run/callbacks.py: divergence guard, metrics writer, evaluator, checkpointer,
progress bar, a caller's hook). It resumes an interrupted run from its checkpoint and never
evaluates a stored record again. `evaluate_checkpoint(...)` evaluates a checkpoint over a grid
of inference-only knobs.
"""

from __future__ import annotations

import contextlib
import itertools
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from modebench.algorithms.base import Algorithm, EnvSpec
from modebench.algorithms.config import ConfigError, from_dict, resolve_aliases, to_dict
from modebench.algorithms.seeds import (
    SeedBatchingError,
    SeedRandom,
    stack_algorithms,
    unstack_into,
)
from modebench.benchmarks.data.dataset import Normalizer, TransitionDataset
from modebench.benchmarks.data.replay import DeviceReplay, SeedReplays
from modebench.benchmarks.data.validate import check_task_data
from modebench.benchmarks.run.callbacks import (
    Callback,
    Checkpointer,
    DivergenceGuard,
    Evaluator,
    MetricsWriter,
    ProgressBar,
    RecordHook,
    TrainingRun,
)
from modebench.benchmarks.run.checkpoints import load_checkpoint, load_weights, restore
from modebench.benchmarks.run.evaluation import evaluate
from modebench.benchmarks.run.spec import (
    RunGroup,
    RunSpec,
    record_fields,
    resolve_device,
    resolve_method,
    resolve_run,
)
from modebench.benchmarks.store import RunBusyError, RunStore, results_root
from modebench.benchmarks.tasks.suites import Task
from tqdm.auto import tqdm


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def load_checked_data(spec: RunSpec) -> TransitionDataset:
    dataset = spec.task.load_dataset()
    check_task_data(spec.task, dataset)  # env spaces and reference returns, before the run folder exists
    return dataset


def prepare(spec: RunSpec, store: RunStore, dataset: TransitionDataset, resume: bool = True,
            callbacks: list[Callback] | None = None) -> TrainingRun:
    """Replay, the method (restored from the run's checkpoint when resuming) and the run's config,
    for a caller that holds the store's writer lock (`store.writing()`)."""
    info = spec.info(dataset.name, dataset.obs_dim, dataset.act_dim, dataset)
    store.write_config(info)
    seed_everything(spec.seed)
    device = torch.device(spec.device)
    normalizer = Normalizer.fit(dataset.observations, spec.data.normalize_obs)
    replay = DeviceReplay(dataset, spec.data, normalizer, device, spec.seed)
    algorithm = spec.algorithm_class(spec.config, EnvSpec(dataset.obs_dim, dataset.act_dim, spec.task.horizon, spec.steps), device)
    if spec.compiled:
        algorithm.compile_losses()
    run = TrainingRun(spec, store, info, dataset, normalizer, replay, algorithm, callbacks or [])
    restored_losses_rng = False
    if resume and store.checkpoint_path.exists():
        payload = load_checkpoint(store.checkpoint_path)
        restore(algorithm, payload, replay)
        run.start_step = run.step = int(payload["step"])
        restored_losses_rng = "losses" in payload["rng"]
    elif resume and any(store.records_dir.glob("*.json")):
        tqdm.write(f"{spec.run_id}: has records but no checkpoint (an earlier run was stopped between the two, or "
                   "the checkpoint was deleted); training it again to restore the checkpoint, same numbers")
    if not restored_losses_rng:
        # the losses' generator, taken now from the stream this seed's initialisation (or its
        # restored pre-generator checkpoint) left, as the method would take it on first use
        algorithm.rng = SeedRandom.from_global(device)
    run.already_finished = run.start_step >= spec.steps and store.has_record(spec.steps, to_dict(spec.knobs))
    store.rewind_metrics(run.start_step)  # lines past the checkpoint are written again as the run retrains
    return run


def default_callbacks(progress: bool = False, log: tuple[str, ...] = (),
                      on_evaluation: Callable[[dict[str, Any]], None] | None = None) -> list[Callback]:
    """Guard before the metrics are written; the checkpoint after the record and before the caller's hook."""
    callbacks: list[Callback] = [DivergenceGuard(), MetricsWriter(log), ProgressBar(progress), Evaluator(), Checkpointer()]
    if on_evaluation is not None:
        callbacks.append(RecordHook(on_evaluation))
    return callbacks


def train(
    spec: RunSpec | str,
    task: str | Task | None = None,
    *,
    out: str | Path | None = None,
    progress: bool = False,
    resume: bool = True,
    log: tuple[str, ...] = (),
    on_evaluation: Callable[[dict[str, Any]], None] | None = None,
    lock_wait: float = 0.0,
    **settings: Any,
) -> TrainingRun:
    """Train a resolved run, evaluating every `spec.eval_every` updates and at the end.
    `train(METHOD, TASK, steps=..., seed=..., ...)` is shorthand for
    `train(resolve_run(METHOD, TASK, steps=..., seed=..., ...))`.
    `log`: extra metric sinks ("tensorboard", "wandb"); metrics.jsonl is always written.
    `lock_wait`: seconds to wait for the run folder's writer lock held by another process (a
    harness whose workers read one finished run at once); 0 refuses at once.
    `resume=False` trains the run again from scratch (`--rerun`), replacing its records."""
    if isinstance(spec, str):
        if task is None:
            raise ConfigError("give a task (SUITE/TASK) or a dataset")
        spec = resolve_run(spec, task, **settings)
    elif task is not None or settings:
        raise TypeError("train(spec) takes a resolved RunSpec alone; resolve settings with resolve_run")
    (result,) = train_seeds(RunGroup((spec,)), out=out, progress=progress, resume=resume, log=log,
                            on_evaluation=on_evaluation, lock_wait=lock_wait)
    if isinstance(result, FloatingPointError):  # alone, a diverged run is an error
        raise result
    return result


def _seed_batch(runs: list[TrainingRun]) -> tuple[Algorithm, DeviceReplay | SeedReplays]:
    """The model and minibatch source that train `runs` together: a run's own for one run, else
    one seed-batched model (algorithms/seeds.py) stacked from the runs' current algorithms."""
    if len(runs) == 1:
        return runs[0].algorithm, runs[0].replay
    model = stack_algorithms([run.algorithm for run in runs])
    if runs[0].spec.compiled:
        model.compile_losses()
    return model, SeedReplays([run.replay for run in runs])


def _train_together(runs: list[TrainingRun]) -> list[TrainingRun | FloatingPointError]:
    """The update loop for one run, or for the seeds of one run as one seed-batched model
    (algorithms/seeds.py) when several runs at the same step are given: each update serves all
    of them; before any callback reads a run's model (logging, evaluation, checkpoint) its seed
    is copied back into that run's own single-seed algorithm, so records, checkpoints and resumes
    stay per seed, exactly as for a run trained alone. A seed whose metrics stop being finite
    (the divergence guard's FloatingPointError) leaves the batch and the others train on; its
    error takes its place in the results."""
    for run in runs:
        for callback in run.callbacks:
            callback.on_start(run)
    return _update_loop(runs)


def _update_loop(runs: list[TrainingRun]) -> list[TrainingRun | FloatingPointError]:
    spec = runs[0].spec
    active = list(runs)
    diverged: dict[int, FloatingPointError] = {}
    try:
        model, replay = _seed_batch(active)
    except SeedBatchingError as err:  # e.g. dropout's global-generator masks: each seed alone, same numbers
        tqdm.write(f"{spec.method}: seeds trained one after another, not as one model ({err})")
        results = []
        for run in runs:
            if run.global_rng is not None:  # the global stream this seed's own prepare left
                torch.set_rng_state(run.global_rng[0])
                if run.global_rng[1]:
                    torch.cuda.set_rng_state_all(run.global_rng[1])
            results += _update_loop([run])
        return results
    sums: dict[str, torch.Tensor] = {}
    counts: dict[str, int] = {}
    updates = timed_updates = 0
    train_time = 0.0
    model.train()
    tick = time.perf_counter()
    for step in range(runs[0].start_step, spec.steps):
        metrics = model.update(replay.sample(spec.config.batch_size), step)
        for key, value in metrics.items():  # per-key counts: phase-specific metrics are not diluted
            sums[key] = sums[key] + value if key in sums else value
            counts[key] = counts.get(key, 0) + 1
        updates += 1
        done = step + 1
        logging = done % spec.log_every == 0 or done == spec.steps or done % spec.eval_every == 0
        if logging:
            train_time += time.perf_counter() - tick
            timed_updates += updates
            rate = timed_updates / max(train_time, 1e-9)
            per_run = {k: v.tolist() if v.dim() else [float(v)] for k, v in sums.items()}  # one host sync per interval
        if len(active) > 1 and (logging or done % spec.checkpoint_every == 0):
            for index, run in enumerate(active):
                unstack_into(model, index, run.algorithm)
        for index, run in enumerate(active):
            run.step = done
            try:
                if logging:
                    run.metrics = {k: v[index] / counts[k] for k, v in per_run.items()}
                    run.metrics["time/updates_per_second"] = rate
                    run.train_time = train_time
                    for callback in run.callbacks:
                        callback.on_log(run, done, run.metrics)
                for callback in run.callbacks:
                    callback.on_step(run, done)
            except FloatingPointError as err:
                diverged[id(run)] = err
        if diverged and any(id(run) in diverged for run in active):
            active = [run for run in active if id(run) not in diverged]
            if not active:
                break
            model, replay = _seed_batch(active)  # the survivors were just copied back: restack them
            model.train()
        if logging:
            sums, counts, updates = {}, {}, 0
            tick = time.perf_counter()
    return [diverged[id(run)] if id(run) in diverged else _finish(run) for run in runs]


def _finish(run: TrainingRun) -> TrainingRun:
    for callback in run.callbacks:
        callback.on_end(run)
    return run


def train_seeds(
    specs: RunGroup | list[RunSpec],
    *,
    out: str | Path | None = None,
    progress: bool = False,
    resume: bool = True,
    log: tuple[str, ...] = (),
    on_evaluation: Callable[[dict[str, Any]], None] | None = None,
    lock_wait: float = 0.0,
    skip_busy: bool = False,
) -> list[TrainingRun | FloatingPointError | RunBusyError]:
    """Train the seeds of one run (specs that differ in their seed alone) as one seed-batched
    model: one forward and one backward per update for all of them, each seed with its own
    initialisation, minibatches and random draws (seed s gives the numbers `train` gives it
    alone, up to float rounding). Each seed keeps its own run folder, records and checkpoint,
    under its own writer lock; a seed resumes from its own checkpoint, seeds at the same step
    train together (normally all: they checkpoint together), finished seeds are read back. A seed
    that diverges is its FloatingPointError in the returned list; the other seeds train on.
    `skip_busy`: a seed whose run folder another process holds is its RunBusyError in the list
    and the others train (else that error ends the call). A seed the store holds finished is read
    back (`already_finished`); `resume=False` trains every seed again from scratch."""
    if not specs:
        return []
    group = RunGroup.of(specs)
    specs = list(group)
    dataset = load_checked_data(group.lead)
    results: dict[int, TrainingRun | FloatingPointError | RunBusyError] = {}
    # each run's lifetime under its folder's writer lock: a second process (another driver, an
    # orphaned worker) refuses with a RunBusyError line instead of writing the same files
    with contextlib.ExitStack() as held:
        runs: dict[int, TrainingRun] = {}
        for index, spec in enumerate(specs):
            try:
                store = held.enter_context(RunStore(results_root(out), spec.run_id).writing(wait=lock_wait))
            except RunBusyError as err:
                if not skip_busy:
                    raise
                results[index] = err
                continue
            run = prepare(spec, store, dataset, resume, default_callbacks(progress and not runs, log, on_evaluation))
            run.global_rng = (torch.get_rng_state(), torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [])
            runs[index] = run
        for start in sorted({run.start_step for run in runs.values()}):
            batch = [i for i, run in runs.items() if run.start_step == start]
            done = _train_together([runs[i] for i in batch]) if start < group.lead.steps else [_finish(runs[i]) for i in batch]
            results.update(zip(batch, done))
    return [results[i] for i in range(len(specs))]


def expand_grid(grid: dict[str, list[Any]]) -> list[dict[str, Any]]:
    """The Cartesian product of knob values, in the given order."""
    if not grid:
        return [{}]
    names = list(grid)
    return [dict(zip(names, values)) for values in itertools.product(*(grid[n] for n in names))]


def rebuild(payload: dict[str, Any], device: str = "auto") -> tuple[Algorithm, Task, Normalizer, Any]:
    """The algorithm, task, normaliser and trained knobs of a loaded checkpoint."""
    run = payload["run"]
    task = Task(**{k: v for k, v in run["task"].items() if k != "id"})
    method = resolve_method(run["method"], task, run["config"], run["knobs"])
    normalizer = Normalizer.from_state_dict(payload["normalizer"])
    spec = EnvSpec(run["obs_dim"], run["act_dim"], task.horizon, run["steps"])
    algorithm = method.cls(method.config, spec, resolve_device(device))
    load_weights(algorithm, payload)  # weights that do not fit the method: a CheckpointError line
    algorithm.eval()
    return algorithm, task, normalizer, method


@dataclass
class LoadedRun:
    """A checkpoint rebuilt for evaluation, with what the compatibility check compares."""

    path: Path
    run: dict[str, Any]
    step: int
    algorithm: Algorithm
    task: Task
    normalizer: Normalizer
    knobs: Any  # the run's own knobs
    action_low: np.ndarray | None
    action_high: np.ndarray | None

    @property
    def run_id(self) -> str:
        """The run's own id, from the checkpoint's run description (wherever the file lies); a
        checkpoint whose description lacks it (none ModeBench wrote) is named by its folder."""
        return self.run.get("run_id") or self.path.resolve().parent.name


def load_run(checkpoint: str | Path, device: str = "auto") -> LoadedRun:
    payload = load_checkpoint(checkpoint)
    algorithm, task, normalizer, method = rebuild(payload, device)
    bound = {k: None if payload[k] is None else payload[k].numpy() for k in ("action_low", "action_high")}
    return LoadedRun(Path(checkpoint), payload["run"], int(payload["step"]), algorithm, task, normalizer, method.knobs,
                     bound["action_low"], bound["action_high"])


def knob_settings(knobs_cls: type, base: dict[str, Any], knob_grid: dict[str, list[Any]] | None, what: str,
                  unknown_message: Callable[[list[str]], str]) -> list[Any]:
    """Every knob setting of a grid (`--knob N=1,64 --knob lambda=0,1`, aliases resolved) over the
    run's own knobs, typed and checked; a knob the class lacks is one ConfigError line."""
    grid = resolve_aliases(knobs_cls, knob_grid or {})
    unknown = sorted(set(grid) - set(base))
    if unknown:
        raise ConfigError(unknown_message(unknown))
    return [from_dict(knobs_cls, {**base, **combo}, what=what) for combo in expand_grid(grid)]


def evaluate_checkpoint(
    checkpoint: str | Path,
    knob_grid: dict[str, list[Any]] | None = None,
    episodes: int | None = None,
    seed: int | None = None,
    out: str | Path | None = None,
    device: str = "auto",
    progress: bool = False,
    lock_wait: float = 0.0,
) -> list[dict[str, Any]]:
    """Evaluate a checkpoint at every knob setting of the grid (no retraining); one record each,
    stored under the results root (`out`, else $MODEBENCH_RESULTS, else results/) in the folder of
    the checkpoint's own run id, wherever the checkpoint file lies (nothing is written beside it).

    `lock_wait`: seconds to wait for the run's writer lock when another process holds it (a
    harness that evaluates one checkpoint from several workers); 0 refuses at once."""
    loaded = load_run(checkpoint, device)
    run = loaded.run
    base_knobs = to_dict(loaded.knobs)
    settings = knob_settings(
        type(loaded.algorithm).knobs_class, base_knobs, knob_grid, f"{run['method']} knob",
        lambda unknown: f"unknown knob(s) {unknown} for {run['method']}; inference-only knobs: {sorted(base_knobs) or 'none'}")
    store = RunStore(results_root(out), loaded.run_id)
    own = {"eval_seed": run["seed"], "eval_episodes": run.get("eval_episodes") or loaded.task.eval_episodes}
    asked = {"eval_seed": own["eval_seed"] if seed is None else seed, "eval_episodes": episodes or own["eval_episodes"]}
    # another seed or number of episodes than the run's own is another evaluation: its own record
    # key, so it never replaces the run's record (a table cell holds runs of the protocol's episodes)
    other = {k: v for k, v in asked.items() if v != own[k]}
    records = []
    with store.writing(wait=lock_wait):
        if store.read_config() is None:  # a checkpoint from elsewhere: its run's description goes with its records
            store.write_config(run)
        for knobs in tqdm(settings, desc="knob grid", disable=not progress or len(settings) == 1):
            stored = None if other else store.read_record(loaded.step, to_dict(knobs))
            if stored is not None and stored.get("eval_seed", own["eval_seed"]) == asked["eval_seed"] \
                    and stored.get("eval_episodes") == asked["eval_episodes"]:
                records.append(stored)  # this very evaluation is stored (e.g. the run's own final record)
                continue
            result = evaluate(loaded.algorithm, loaded.task, knobs, asked["eval_episodes"], asked["eval_seed"],
                              loaded.normalizer, loaded.action_low, loaded.action_high)
            record = {**record_fields(run, loaded.step, to_dict(knobs)), "source": "eval",
                      "eval_seed": asked["eval_seed"], **result.summary(),
                      **loaded.algorithm.fit_report(loaded.step)}
            store.write_record(record, key_extra=other)
            records.append(record)
    return records
