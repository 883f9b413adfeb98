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
import platform
import time
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cache
from typing import Any

import torch
from modebench.algorithms.base import Algorithm, check_phases
from modebench.algorithms.config import ConfigError, config_hash, from_dict, to_dict
from modebench.algorithms.registry import base_method, get_method
from modebench.benchmarks.data.dataset import DataConfig
from modebench.benchmarks.run import protocols
from modebench.benchmarks.run.legacy_identity import (
    CONFIG_FIELDS,
    DATASET_CONTENT,
    TASK_INPUTS,
)
from modebench.benchmarks.run.protocols import PROTOCOLS, check_protocol  # noqa: F401 (the names callers import from here)
from modebench.benchmarks.store import git_revision, provenance, stable_hash
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
    group_id: str  # the same for the seeds of one run (its identity without the seed, and how it runs)

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

    def info(self, dataset_name: str, obs_dim: int, act_dim: int, dataset: Any = None) -> dict[str, Any]:
        """The run's config.json: the resolved spec as plain data (every checkpoint keeps it too;
        `record_fields` and `rebuild` read it back). With the `dataset`, the score's normaliser
        with its reference numbers (a Minari dataset's are in its metadata)."""
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
            "observation_layout": self.task.layout().as_record(obs_dim),
            "normaliser": self.task.normaliser(dataset) if dataset is not None else None,
            "seed": self.seed,
            "steps": self.steps,
            "config": to_dict(self.config),
            "config_hash": self.config_hash,
            "data": to_dict(self.data),
            "knobs": to_dict(self.knobs),
            "eval_episodes": self.eval_episodes,
            "eval_every": self.eval_every,
            "suite_default": self.suite_default,
            "default_knobs": self.default_knobs,
            "default_run": self.default_run,
            "device": self.device,
            "compiled": self.compiled,
        }


# Entries of the run info (RunSpec.info, config.json) that every record of the run carries as they
# are: the task's score normaliser and observation layout (the comparability helpers add them to
# `info`; docs/results-store.md). A run info without them writes records without them.
RECORD_FROM_INFO = ("normaliser", "observation_layout")


@cache
def device_name(device: str) -> str:
    """The accelerator's or the CPU's name, for a record's provenance."""
    torch_device = torch.device(device)
    if torch_device.type == "cuda" and torch.cuda.is_available():
        return torch.cuda.get_device_name(torch_device)
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or torch_device.type


def record_fields(info: dict[str, Any], step: int, knobs: dict[str, Any]) -> dict[str, Any]:
    """What every record of a run carries besides its scores, from the run's config.json: enough
    for tables to decide membership (protocol, suite default, default task, task order, steps)
    from records alone, and the provenance of the process writing it. Runs stored before a field
    existed read as the default protocol and unknown."""
    return {
        **{key: info[key] for key in RECORD_FROM_INFO if info.get(key) is not None},
        "provenance": provenance(device_name(info["device"])),
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


# keys of a task's `score:` block that describe the normalisation (for tables and reports) and
# do not change a number: left out of the identity, so documenting a task keeps its run ids
DESCRIPTIVE_SCORE_KEYS = ("normaliser", "source", "description", "note")


def task_inputs(task: Task) -> dict[str, Any]:
    """What of a task decides a run's result besides its dataset's name: the evaluation env (id
    and kwargs), the score normalisation (reference returns), evaluation episodes and horizon."""
    score = {k: v for k, v in task.score.items() if k not in DESCRIPTIVE_SCORE_KEYS}
    return {"env": task.env, "score": score, "eval_episodes": task.eval_episodes, "horizon": task.horizon}


def run_identity(method: str, task: Task, protocol: str, seed: int, steps: int, config: Any, data: DataConfig,
                 compiled: bool, evaluation: dict[str, Any]) -> dict[str, Any]:
    """Everything that decides a run's result, as the dict its id hashes: method, seed, steps,
    config, data settings, task and dataset (a published id carries its version), the dataset's
    content where its name does not fix it (Source.fingerprint: a user's file, a local folder,
    generated data), the task's evaluation inputs (task_inputs), and the run's own evaluation
    episodes, schedule and knobs where they differ from the protocol's (`evaluation`).

    Runs stored before an entry existed keep their ids (legacy_identity.py): the default protocol,
    an eager run, task inputs and generated content equal to what 7d1dc42 had, and the protocol's
    evaluation settings add nothing to the hash; anything else does."""
    identity: dict[str, Any] = {
        "method": method, "seed": seed, "steps": steps, "config": _hashed_fields(config), "data": _hashed_fields(data),
        "task": task.id, "dataset": task.dataset,
    }
    if compiled:  # torch.compile draws other random numbers than eager
        identity["compiled"] = True
    if protocol != DEFAULT_PROTOCOL:
        identity["protocol"] = protocol
    inputs = task_inputs(task)
    if stable_hash(inputs) != TASK_INPUTS.get(task.id):
        identity["task_inputs"] = inputs
    content = dataset_content(task)
    if content is not None and content != DATASET_CONTENT.get(task.id):
        identity["dataset_content"] = content
    if evaluation:
        identity["evaluation"] = evaluation
    return identity


def _hashed_fields(config: Any) -> dict[str, Any]:
    """A config dataclass as its identity hashes it: every field, except one added since 7d1dc42
    (legacy_identity.CONFIG_FIELDS) that still holds its default."""
    values = to_dict(config)
    known = CONFIG_FIELDS.get(type(config).__name__)
    if known is None:
        return values
    defaults = {f.name: f.default if f.default is not dataclasses.MISSING else f.default_factory()  # type: ignore[misc]
                for f in dataclasses.fields(config) if f.default is not dataclasses.MISSING
                or f.default_factory is not dataclasses.MISSING}
    return {k: v for k, v in values.items()
            if k in known or k not in defaults or to_dict_value(defaults[k]) != v}


def to_dict_value(value: Any) -> Any:
    """A default as to_dict writes it (tuples as lists), for comparing with a config's values."""
    return [to_dict_value(v) for v in value] if isinstance(value, (tuple, list)) else value


def dataset_content(task: Task) -> str | None:
    """The task's dataset content digest where its name does not fix it (sources.dataset_fingerprint)."""
    from modebench.benchmarks.tasks.sources import dataset_fingerprint

    return dataset_fingerprint(task.dataset)


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
    every = settings.run["eval_every"].value or steps
    episodes = settings.run["eval_episodes"].value
    # the protocol's own evaluation for a run of this length: what stored runs were evaluated with
    protocol_run = protocols.resolve(method, task_obj, protocol, {"run": {"steps": steps}}).run
    evaluation = {key: value for key, value, default in (
        ("eval_episodes", episodes, protocol_run["eval_episodes"].value),
        ("eval_every", every, protocol_run["eval_every"].value or steps),
        ("knobs", to_dict(resolved.knobs), to_dict(default.knobs)),
    ) if value != default}
    # the task as this run sees it: its data and env cut to the layout, scored as the protocol compares it
    if data_cfg.observation_layout:
        task_obj = task_obj.with_layout(data_cfg.observation_layout)
    task_obj = task_obj.for_protocol(protocol)
    identity = run_identity(method, task_obj, protocol, seed, steps, resolved.config, data_cfg, compile, evaluation)
    digest = config_hash(identity)
    run_id = f"{method}__{task_obj.id.replace('/', '-')}__seed{seed}__{digest}"
    device_str = str(resolve_device(device))
    # the seeds of one run: the same identity but the seed, run the same way
    group_id = stable_hash({**{k: v for k, v in identity.items() if k != "seed"}, "eval_every": every,
                            "eval_episodes": episodes, "checkpoint_every": checkpoint_every or every,
                            "log_every": log_every, "device": device_str, "method": method})
    return RunSpec(
        method=method, task=task_obj, protocol=protocol, algorithm_class=resolved.cls,
        config=resolved.config, knobs=resolved.knobs, data=data_cfg, seed=seed, steps=steps,
        eval_every=every, eval_episodes=episodes,
        checkpoint_every=checkpoint_every or every, log_every=log_every, device=device_str,
        compiled=compile,
        suite_default=to_dict(resolved.config) == to_dict(default.config) and data_cfg == default_data,
        default_knobs=to_dict(default.knobs),
        default_run={"steps": own_run["steps"].value, "eval_episodes": own_run["eval_episodes"].value},
        run_id=run_id, config_hash=digest, group_id=group_id,
    )


@dataclass(frozen=True)
class RunGroup:
    """The seeds of one run: RunSpecs equal in everything but their seed (one `group_id`), trained
    together as one seed-batched model (benchmarks/run/train.py: train_seeds). `modebench train
    --seeds`, each `bench` job and each sweep trial is one group."""

    specs: tuple[RunSpec, ...]

    def __post_init__(self) -> None:
        if not self.specs:
            raise ConfigError("a run group needs at least one seed")
        if len({spec.group_id for spec in self.specs}) != 1:
            raise ConfigError("the seeds of one run are one run but for the seed; these specs differ in more than their seed")
        seeds = [spec.seed for spec in self.specs]
        if len(set(seeds)) != len(seeds):
            raise ConfigError(f"a seed is given twice: {seeds}")

    @classmethod
    def of(cls, specs: RunGroup | list[RunSpec] | tuple[RunSpec, ...]) -> RunGroup:
        return specs if isinstance(specs, RunGroup) else cls(tuple(specs))

    @property
    def lead(self) -> RunSpec:
        """The first seed's spec: what every seed shares (method, task, steps, schedule) is read here."""
        return self.specs[0]

    @property
    def seeds(self) -> list[int]:
        return [spec.seed for spec in self.specs]

    def __iter__(self) -> Iterator[RunSpec]:
        return iter(self.specs)

    def __len__(self) -> int:
        return len(self.specs)


def task_fields(task: Task) -> dict[str, Any]:
    """A task as plain data (what a checkpoint and config.json keep; `Task(**fields)` rebuilds it)."""
    return dataclasses.asdict(task)
