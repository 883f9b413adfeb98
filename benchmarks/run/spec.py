"""One run, resolved once: `resolve_run(...) -> RunSpec`.

The command line (`train`, `bench`) and the sweeps (sweeps/trial.py) call `resolve_run` and
pass the frozen `RunSpec` along; training, records and checkpoints read it and nothing else
re-resolves a method or recomputes a run id.

A method's config, knobs, data preprocessing and run settings (steps, evaluation episodes and
schedule) come from `benchmarks.run.protocols.resolve` (its docstring gives the layer order and
the two protocols, and `modebench config` prints each value's source): "controlled" (one
protocol for every method on a suite) or "published" (each method as its authors ran it). The
protocol is part of the run's identity and is written into every record and the run's
config.json, so the two never share a folder.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass
from typing import Any

import torch
from modebench.algorithms.base import Algorithm, check_phases
from modebench.algorithms.config import ConfigError, config_hash, from_dict, to_dict
from modebench.algorithms.registry import base_method, get_method
from modebench.benchmarks.data.dataset import DataConfig
from modebench.benchmarks.run import protocols
from modebench.benchmarks.run.protocols import PROTOCOLS, check_protocol  # noqa: F401 (the names callers import from here)
from modebench.benchmarks.store import git_revision
from modebench.benchmarks.tasks.suites import Task, get_task, load_suite, suite_names

DEFAULT_PROTOCOL = "controlled"


def resolve_device(name: str = "auto") -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError("--device cuda was asked for but no CUDA device is available; use --device auto or cpu")
    return device


@dataclass(frozen=True)
class ResolvedMethod:
    name: str
    cls: type[Algorithm]
    config: Any
    knobs: Any


def _built(name: str, resolved: protocols.Resolved) -> ResolvedMethod:
    cls = get_method(name).load()
    return ResolvedMethod(
        name=name, cls=cls,
        config=from_dict(cls.config_class, resolved.values("config"), what=f"{name} config"),
        knobs=from_dict(cls.knobs_class, resolved.values("knobs"), what=f"{name} knob"),
    )


def resolve_method(name: str, task: Task, config: dict | None = None, knobs: dict | None = None,
                   protocol: str = DEFAULT_PROTOCOL) -> ResolvedMethod:
    """The method's class with its config and knobs under `protocol` (protocols.resolve)."""
    return _built(name, protocols.resolve(name, task, protocol, {"config": config or {}, "knobs": knobs or {}}))


@dataclass(frozen=True)
class RunSpec:
    """Everything that defines one training run, resolved; `run_id` names its folder in the store."""

    method: str
    task: Task
    protocol: str
    algorithm_class: type[Algorithm]
    config: Any  # the method's config dataclass
    knobs: Any  # the method's knobs dataclass: the run's in-training evaluations use them
    data: DataConfig
    seed: int
    steps: int
    eval_every: int
    eval_episodes: int
    checkpoint_every: int
    log_every: int
    device: str
    compiled: bool
    suite_default: bool  # config and data are the suite's resolved default for this method and protocol
    default_knobs: dict[str, Any]  # the suite's resolved default knobs for this method and protocol
    # the protocol's own steps and evaluation episodes for this method and task, whatever --steps /
    # --eval-episodes asked: a table cell holds only runs of this length (analysis/records.py)
    default_run: dict[str, Any]
    run_id: str
    config_hash: str

    @property
    def base_method(self) -> str:
        return base_method(self.method)

    @property
    def task_order(self) -> int | None:
        """The task's position in its suite file (None for an ad-hoc dataset task)."""
        if self.task.suite not in suite_names():
            return None
        names = list(load_suite(self.task.suite))
        return names.index(self.task.name) if self.task.name in names else None

    def info(self, dataset_name: str, obs_dim: int, act_dim: int) -> dict[str, Any]:
        """The run's config.json: the resolved spec as plain data (every checkpoint keeps it too;
        `record_fields` and `rebuild` read it back)."""
        return {
            "run_id": self.run_id,
            "method": self.method,
            "base_method": self.base_method,
            "protocol": self.protocol,
            "task": task_fields(self.task) | {"id": self.task.id},
            "task_order": self.task_order,
            "dataset_name": dataset_name,
            "obs_dim": obs_dim,
            "act_dim": act_dim,
            "seed": self.seed,
            "steps": self.steps,
            "config": to_dict(self.config),
            "config_hash": self.config_hash,
            "data": to_dict(self.data),
            "knobs": to_dict(self.knobs),
            "suite_default": self.suite_default,
            "default_knobs": self.default_knobs,
            "default_run": self.default_run,
            "device": self.device,
            "compiled": self.compiled,
        }


def record_fields(info: dict[str, Any], step: int, knobs: dict[str, Any]) -> dict[str, Any]:
    """What every record of a run carries besides its scores, from the run's config.json: enough
    for tables to decide membership (protocol, suite default, default task, task order) from
    records alone. Runs stored before a field existed read as the default protocol and unknown."""
    return {
        "method": info["method"],
        "base_method": info["base_method"],
        "protocol": info.get("protocol", DEFAULT_PROTOCOL),
        "task": info["task"]["id"],
        "suite": info["task"]["suite"],
        "task_default": bool(info["task"].get("default", False)),
        "task_order": info.get("task_order"),
        "dataset": info["dataset_name"],
        "seed": info["seed"],
        "step": step,
        "total_steps": info["steps"],
        "knobs": knobs,
        "config": info["config"],
        "config_hash": info["config_hash"],
        "data": info.get("data"),
        "suite_default": info.get("suite_default"),
        "default_knobs": info.get("default_knobs"),
        "default_run": info.get("default_run"),
        "git_revision": git_revision(),
        "device": info["device"],
        "compiled": info.get("compiled", False),
        "timestamp": time.time(),
    }


def _identity(method: str, task: Task, protocol: str, seed: int, steps: int, config: Any, data: DataConfig,
              compiled: bool) -> tuple[str, str]:
    """(run id, config hash): the same inputs always name the same run folder, which is how an
    interrupted run, a re-run of `bench` or a sweep trial finds its earlier work. A compiled run
    (torch.compile) draws other random numbers than an eager one, so it is its own run; the
    default protocol is left out of the hash so runs stored before protocols existed keep their ids."""
    identity = {
        "method": method, "seed": seed, "steps": steps, "config": to_dict(config), "data": to_dict(data),
        "task": task.id, "dataset": task.dataset,
    }
    if compiled:
        identity["compiled"] = True
    if protocol != DEFAULT_PROTOCOL:
        identity["protocol"] = protocol
    digest = config_hash(identity)
    return f"{method}__{task.id.replace('/', '-')}__seed{seed}__{digest}", digest


def _positive(name: str, value: int) -> int:
    if value < 1:
        raise ConfigError(f"{name} must be >= 1, got {value}")
    return value


def resolve_run(
    method: str,
    task: str | Task,
    *,
    protocol: str = DEFAULT_PROTOCOL,
    config: dict | None = None,
    knobs: dict | None = None,
    data: dict | None = None,
    seed: int = 0,
    steps: int | None = None,
    eval_every: int | None = None,
    eval_episodes: int | None = None,
    checkpoint_every: int | None = None,
    log_every: int = 1000,
    device: str = "auto",
    compile: bool = False,
) -> RunSpec:
    """The one resolver of a run: method x task x protocol x overrides -> a RunSpec with its id.
    `steps`, `eval_every` and `eval_episodes` default to the protocol's (protocols.resolve; an
    `eval_every` of None there means the end of the run), `checkpoint_every` to `eval_every`."""
    for name, value in (("steps", steps), ("eval_every", eval_every), ("eval_episodes", eval_episodes),
                        ("checkpoint_every", checkpoint_every), ("log_every", log_every)):
        if value is not None:
            _positive(name, value)
    task_obj = get_task(task) if isinstance(task, str) else task
    run = {"steps": steps, "eval_every": eval_every, "eval_episodes": eval_episodes}
    settings = protocols.resolve(method, task_obj, protocol, {
        "config": config or {}, "knobs": knobs or {}, "data": data or {}, "run": run,
    })
    resolved = _built(method, settings)
    # the defaults keep the run settings: a dataset outside the suites has no length of its own
    default_settings = protocols.resolve(method, task_obj, protocol, {"run": run}) if (config or knobs or data) else settings
    default = _built(method, default_settings)
    data_cfg = from_dict(DataConfig, settings.values("data"), what="data")
    default_data = from_dict(DataConfig, default_settings.values("data"), what="data")
    steps = settings.run["steps"].value
    own_run = protocols.resolve(method, task_obj, protocol).run if any(v is not None for v in run.values()) else settings.run
    check_phases(resolved.cls, resolved.config, steps, method)  # a run that cannot cover a phase is refused here
    run_id, digest = _identity(method, task_obj, protocol, seed, steps, resolved.config, data_cfg, compile)
    every = settings.run["eval_every"].value or steps
    return RunSpec(
        method=method, task=task_obj, protocol=protocol, algorithm_class=resolved.cls,
        config=resolved.config, knobs=resolved.knobs, data=data_cfg, seed=seed, steps=steps,
        eval_every=every, eval_episodes=settings.run["eval_episodes"].value,
        checkpoint_every=checkpoint_every or every, log_every=log_every, device=str(resolve_device(device)),
        compiled=compile,
        suite_default=to_dict(resolved.config) == to_dict(default.config) and data_cfg == default_data,
        default_knobs=to_dict(default.knobs),
        default_run={"steps": own_run["steps"].value, "eval_episodes": own_run["eval_episodes"].value},
        run_id=run_id, config_hash=digest,
    )


def task_fields(task: Task) -> dict[str, Any]:
    """A task as plain data (what a checkpoint and config.json keep; `Task(**fields)` rebuilds it)."""
    return dataclasses.asdict(task)
