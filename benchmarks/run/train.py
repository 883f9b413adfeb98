"""Train / evaluate entry points shared by the CLI, `make bench` and the sweeps.

`train(...)` resolves a method (registry name or preset) and a task (suite task or a dataset
given by id/path), merges configs in this order -- the class's paper defaults, the suite's
overrides for the base method, the preset's fixed values, the suite's overrides for the
preset, the caller's values -- trains with periodic evaluation, writes one record per
evaluation and a checkpoint, and resumes an interrupted run from its checkpoint.
`evaluate_checkpoint(...)` evaluates a checkpoint over a grid of inference-only knobs.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import math
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from algorithms.base import Algorithm, EnvSpec
from algorithms.config import (
    ConfigError,
    config_hash,
    from_dict,
    resolve_aliases,
    to_dict,
)
from algorithms.registry import base_method, get_method
from benchmarks.data.dataset import DataConfig, Normalizer
from benchmarks.data.replay import DeviceReplay
from benchmarks.run.checkpoints import load_checkpoint, restore, save_checkpoint
from benchmarks.run.evaluation import evaluate
from benchmarks.store import (
    DEFAULT_ROOT,
    RunStore,
    git_revision,
    record_key,
)
from benchmarks.tasks.suites import Task, get_task


def resolve_device(name: str = "auto") -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError("--device cuda was asked for but no CUDA device is available; use --device auto or cpu")
    return device


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


@dataclass
class ResolvedMethod:
    name: str
    cls: type[Algorithm]
    config: Any
    knobs: Any


def resolve_method(name: str, task: Task, config: dict | None = None, knobs: dict | None = None) -> ResolvedMethod:
    entry = get_method(name)
    cls = entry.load()
    base = base_method(name)
    merged_config: dict[str, Any] = {}
    merged_knobs: dict[str, Any] = {}
    layers = [task.method_overrides(base), {"config": entry.config, "knobs": entry.knobs}]
    if name != base:
        layers.append(task.method_overrides(name))
    layers.append({"config": config or {}, "knobs": knobs or {}})
    for layer in layers:
        merged_config.update(layer["config"])
        merged_knobs.update(layer["knobs"])
    return ResolvedMethod(
        name=name,
        cls=cls,
        config=from_dict(cls.config_class, merged_config, what=f"{name} config"),
        knobs=from_dict(cls.knobs_class, merged_knobs, what=f"{name} knob"),
    )


def run_identity(
    method: str, task: Task, seed: int, steps: int, config: Any, data: DataConfig, compiled: bool = False
) -> tuple[str, str]:
    """(run id, config hash) of a training run: the same inputs always name the same run folder,
    which is how an interrupted run, a re-run of `bench` or a sweep trial finds its earlier work.
    A compiled run (torch.compile) draws other random numbers than an eager one, so it is its own run."""
    identity = {
        "method": method, "seed": seed, "steps": steps, "config": to_dict(config), "data": to_dict(data),
        "task": task.id, "dataset": task.dataset,
    }
    if compiled:
        identity["compiled"] = True
    digest = config_hash(identity)
    return f"{method}__{task.id.replace('/', '-')}__seed{seed}__{digest}", digest


@dataclass
class RunResult:
    score: float
    records: list[dict[str, Any]]
    algorithm: Algorithm
    checkpoint: Path
    run_dir: Path
    updates_per_second: float = math.nan
    metrics: dict[str, float] = field(default_factory=dict)


def _record(run: dict[str, Any], step: int, knobs: Any, result, extra: dict[str, Any]) -> dict[str, Any]:
    return {
        "method": run["method"],
        "base_method": run["base_method"],
        "task": run["task"]["id"],
        "suite": run["task"]["suite"],
        "dataset": run["dataset_name"],
        "seed": run["seed"],
        "step": step,
        "total_steps": run["steps"],
        "knobs": to_dict(knobs),
        "config": run["config"],
        "config_hash": run["config_hash"],
        "git_revision": git_revision(),
        "device": run["device"],
        "compiled": run.get("compiled", False),
        "timestamp": time.time(),
        **result.summary(),
        **extra,
    }


def train(
    algo: str,
    task: str | Task | None = None,
    steps: int = 1000,
    seed: int = 0,
    out: str | Path | None = None,
    config: dict | None = None,
    knobs: dict | None = None,
    data: dict | None = None,
    eval_every: int | None = None,
    eval_episodes: int | None = None,
    device: str = "auto",
    log_every: int = 1000,
    checkpoint_every: int | None = None,
    progress: bool = False,
    resume: bool = True,
    on_evaluation: Callable[[dict[str, Any]], None] | None = None,
    compile: bool = False,
) -> RunResult:
    """Train `algo` on `task` for `steps` updates; evaluate every `eval_every` steps and at the end.
    `compile`: torch.compile the method's loss pass (worth it for long runs; see Algorithm.compile_losses)."""
    if steps < 1:
        raise ConfigError(f"steps must be >= 1, got {steps}")
    task_obj = get_task(task) if isinstance(task, str) else task
    if task_obj is None:
        raise ConfigError("give a task (SUITE/TASK) or a dataset")
    method = resolve_method(algo, task_obj, config, knobs)
    data_cfg = from_dict(DataConfig, {**task_obj.data, **(data or {})}, what="data")
    torch_device = resolve_device(device)
    dataset = task_obj.load_dataset()
    run = {
        "method": algo,
        "base_method": base_method(algo),
        "task": {k: v for k, v in dataclasses.asdict(task_obj).items()} | {"id": task_obj.id},
        "dataset_name": dataset.name,
        "obs_dim": dataset.obs_dim,
        "act_dim": dataset.act_dim,
        "seed": seed,
        "steps": steps,
        "config": to_dict(method.config),
        "data": to_dict(data_cfg),
        "knobs": to_dict(method.knobs),
        "device": str(torch_device),
        "compiled": compile,
    }
    run_id, run["config_hash"] = run_identity(algo, task_obj, seed, steps, method.config, data_cfg, compile)
    store = RunStore(out or DEFAULT_ROOT, run_id)
    store.write_config(run)

    seed_everything(seed)
    normalizer = Normalizer.fit(dataset.observations, data_cfg.normalize_obs)
    replay = DeviceReplay(dataset, data_cfg, normalizer, torch_device, seed)
    spec = EnvSpec(dataset.obs_dim, dataset.act_dim, task_obj.horizon, steps)
    algorithm = method.cls(method.config, spec, torch_device)
    if compile:
        algorithm.compile_losses()
    start_step = 0
    if resume and store.checkpoint_path.exists():
        payload = load_checkpoint(store.checkpoint_path)
        restore(algorithm, payload, replay)
        start_step = int(payload["step"])

    eval_every = eval_every or steps
    checkpoint_every = checkpoint_every or eval_every
    episodes = eval_episodes or task_obj.eval_episodes
    records: list[dict[str, Any]] = []
    sums: dict[str, torch.Tensor] = {}
    counts: dict[str, int] = {}
    count = 0
    last_metrics: dict[str, float] = {}
    train_time = 0.0
    timed_updates = 0
    bar = tqdm(total=steps, initial=start_step, desc=f"{algo} {task_obj.id} seed {seed}", disable=not progress)
    algorithm.train()
    tick = time.perf_counter()
    for step in range(start_step, steps):
        metrics = algorithm.update(replay.sample(method.config.batch_size), step)
        for key, value in metrics.items():  # per-key counts: phase-specific metrics are not diluted
            sums[key] = sums[key] + value if key in sums else value
            counts[key] = counts.get(key, 0) + 1
        count += 1
        done = step + 1
        if done % log_every == 0 or done == steps or done % eval_every == 0:
            last_metrics = {k: float(v) / counts[k] for k, v in sums.items()}  # the one host sync per interval
            train_time += time.perf_counter() - tick
            timed_updates += count
            last_metrics["time/updates_per_second"] = timed_updates / max(train_time, 1e-9)
            bad = [k for k, v in last_metrics.items() if not math.isfinite(v)]
            if bad:
                raise FloatingPointError(f"{run_id}: non-finite training metric(s) {bad} at step {done}; the run diverged")
            store.append_metrics({"step": done, **last_metrics})
            bar.set_postfix({k.split("/")[-1]: f"{v:.3g}" for k, v in list(last_metrics.items())[:4]})
            sums, counts, count = {}, {}, 0
            evaluating = done % eval_every == 0 or done == steps
            if evaluating and not store.has_record(done, to_dict(method.knobs)):
                result = evaluate(algorithm, task_obj, method.knobs, episodes, seed, normalizer,
                                  dataset.action_low, dataset.action_high, dataset=dataset)
                record = _record(run, done, method.knobs, result, {
                    "source": "train",
                    "updates_per_second": last_metrics["time/updates_per_second"],
                    "train_wall_time": train_time,
                    "training_metrics": last_metrics,
                })
                # record first: a crash before the checkpoint re-trains to this step and skips the evaluation
                store.write_record(record)
                save_checkpoint(store.checkpoint_path, algorithm, run, done, normalizer, dataset, replay)
                records.append(record)
                if on_evaluation is not None:
                    on_evaluation(record)
                if progress:
                    bar.write(f"step {done}: normalized_score {record['normalized_score']:.2f}")
            tick = time.perf_counter()
        if done % checkpoint_every == 0 and done % eval_every != 0:
            save_checkpoint(store.checkpoint_path, algorithm, run, done, normalizer, dataset, replay)
        bar.update(1)
    bar.close()
    if not records:  # the run had already finished: read its final record back
        final = store.records_dir / f"{record_key(run_id, steps, to_dict(method.knobs))}.json"
        if final.exists():
            records.append(json.loads(final.read_text()))
        else:
            result = evaluate(algorithm, task_obj, method.knobs, episodes, seed, normalizer,
                              dataset.action_low, dataset.action_high, dataset=dataset)
            record = _record(run, steps, method.knobs, result, {"source": "train"})
            store.write_record(record)
            records.append(record)
    return RunResult(
        score=float(records[-1]["normalized_score"]),
        records=records,
        algorithm=algorithm,
        checkpoint=store.checkpoint_path,
        run_dir=store.path,
        updates_per_second=last_metrics.get("time/updates_per_second", math.nan),
        metrics=last_metrics,
    )


def expand_grid(grid: dict[str, list[Any]]) -> list[dict[str, Any]]:
    """The Cartesian product of knob values, in the given order."""
    if not grid:
        return [{}]
    names = list(grid)
    return [dict(zip(names, values)) for values in itertools.product(*(grid[n] for n in names))]


def rebuild(payload: dict[str, Any], device: str = "auto") -> tuple[Algorithm, Task, Normalizer, Any]:
    """The algorithm, task, normaliser and trained knobs of a loaded checkpoint."""
    run = payload["run"]
    task_fields = {k: v for k, v in run["task"].items() if k != "id"}
    task = Task(**task_fields)
    method = resolve_method(run["method"], task, run["config"], run["knobs"])
    normalizer = Normalizer.from_state_dict(payload["normalizer"])
    spec = EnvSpec(run["obs_dim"], run["act_dim"], task.horizon, run["steps"])
    algorithm = method.cls(method.config, spec, resolve_device(device))
    algorithm.load_state_dict(payload["model"])
    algorithm.eval()
    return algorithm, task, normalizer, method


def evaluate_checkpoint(
    checkpoint: str | Path,
    knob_grid: dict[str, list[Any]] | None = None,
    episodes: int | None = None,
    seed: int | None = None,
    out: str | Path | None = None,
    device: str = "auto",
    progress: bool = False,
) -> list[dict[str, Any]]:
    """Evaluate a checkpoint at every knob setting of the grid (no retraining); one record each."""
    payload = load_checkpoint(checkpoint)
    run = payload["run"]
    algorithm, task, normalizer, method = rebuild(payload, device)
    knobs_cls = method.cls.knobs_class
    base_knobs = to_dict(method.knobs)
    grid = resolve_aliases(knobs_cls, knob_grid or {})
    unknown = sorted(set(grid) - set(base_knobs))
    if unknown:
        raise ConfigError(
            f"unknown knob(s) {unknown} for {run['method']}; inference-only knobs: {sorted(base_knobs) or 'none'}"
        )
    action_low = None if payload["action_low"] is None else payload["action_low"].numpy()
    action_high = None if payload["action_high"] is None else payload["action_high"].numpy()
    store = RunStore(Path(out) if out else Path(checkpoint).resolve().parents[2], run_id_of(checkpoint))
    settings = [from_dict(knobs_cls, {**base_knobs, **combo}, what=f"{run['method']} knob") for combo in expand_grid(grid)]
    records = []
    for knobs in tqdm(settings, desc="knob grid", disable=not progress or len(settings) == 1):
        result = evaluate(algorithm, task, knobs, episodes or task.eval_episodes, run["seed"] if seed is None else seed,
                          normalizer, action_low, action_high)
        record = _record(run, int(payload["step"]), knobs, result, {"source": "eval", "eval_seed": run["seed"] if seed is None else seed})
        store.write_record(record)
        records.append(record)
    return records


def run_id_of(checkpoint: str | Path) -> str:
    return Path(checkpoint).resolve().parent.name
