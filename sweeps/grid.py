"""Sweep grids: YAML data files that name a study's trials and its inference-only evaluations.

A grid file (sweeps/grids/<name>.yaml, or any path) looks like

    name: lom-m-sweep                     # the sweep's name (its folder under <out>/sweeps/)
    description: LOM Figure 3, score vs the number of MDN modes M
    tasks: [locomotion/hopper-medium-replay-v2, ...]   # SUITE/TASK ids; SUITE/* = every task
    seeds: 3                              # a count (0..n-1) or a list of seeds: all of them in every trial
    steps: 1000000                        # updates per run, or per suite: {locomotion: 2000000, default: 1000000}
    eval: {every: 100000, episodes: 10, knobs_at: final}
    checkpoint_every: 50000               # periodic checkpoints (resume point of a dead trial)
    resources: {cpu: 1, gpu: 0.25}        # per trial (all its seeds); fractional GPUs share a device
    max_failures: 2                       # restarts of a trial whose process died
    protocol: controlled                  # controlled (default) | published: part of every trial's run id
    methods:
      lom:
        config: {beta: 5.0}               # fixed training config (the method's config dataclass)
        train: {num_modes: [2, 5, 10, 15, 20]}     # training grid: ONE TRIAL per combination (and task)
        knobs: {}                         # fixed inference knobs
        inference: {actor: [policy, greedy_mode]}  # inference-only grid: ONE RECORD per setting,
                                          # evaluated from the trial's checkpoint, no retraining

`config`, `train`, `knobs`, `inference` and `data` may also sit at the top level, where they
apply to every method (a method's own entry wins). `methods` may be a plain list of names.
`inference` is a mapping (the Cartesian product of its lists) or a list of such mappings
(their union, for settings that are not a product, e.g. one ablation at a time).

Trials = sum over methods of |train combinations| x |tasks|; runs = trials x |seeds|. A trial
holds every seed of the grid: its runs (one per seed) are trained together as one seed-batched
model (benchmarks.run.train.train_seeds: one update loop for all seeds, each seed with the
numbers it gets trained alone). A run's in-training evaluations use the method's configured
knobs (paper defaults < suite overrides < preset < the grid's `knobs`); after training each run
evaluates every inference setting from its final checkpoint (`knobs_at: all`: from the
checkpoint of every evaluation step), so a run ends with one record per distinct setting in
{configured knobs} + inference settings at its final step.

Each run of a trial is the same run `modebench train` would make with the same method, task,
seed, steps and config (the run id does not depend on knobs), so an inference-only grid over a
method that another grid (or a single run) already trained evaluates its checkpoints without
retraining: e.g. gem_budget.yaml after gem_table1.yaml.
"""

from __future__ import annotations

import dataclasses
import itertools
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from modebench.algorithms.config import (
    ConfigError,
    check_keys,
    config_hash,
    from_dict,
    load_mapping,
    to_dict,
)

GRIDS_DIR = Path(__file__).parent / "grids"
GRID_KEYS = {
    "name", "description", "study", "reference", "tasks", "seeds", "steps", "eval", "checkpoint_every",
    "resources", "max_failures", "max_concurrent", "device", "data", "config", "train", "knobs",
    "inference", "methods", "protocol", "select_with",
}
METHOD_KEYS = {"config", "train", "knobs", "inference", "data"}
EVAL_KEYS = {"every", "episodes", "knobs_at"}
RESOURCE_KEYS = {"cpu", "gpu"}


def grid_names() -> list[str]:
    return sorted(p.stem for p in GRIDS_DIR.glob("*.yaml"))


def grid_path(name_or_path: str | Path) -> Path:
    """A grid file given by path, or by name in sweeps/grids/ (with or without .yaml)."""
    path = Path(name_or_path)
    if path.is_file():
        return path
    for candidate in (GRIDS_DIR / f"{name_or_path}.yaml", GRIDS_DIR / str(name_or_path)):
        if candidate.is_file():
            return candidate
    raise FileNotFoundError(f"no grid file {str(name_or_path)!r}; give a path or one of: {', '.join(grid_names())}")


def product(space: dict[str, list[Any]]) -> list[dict[str, Any]]:
    """The Cartesian product of a {name: [values]} mapping, in file order ([{}] when empty)."""
    if not space:
        return [{}]
    names = list(space)
    return [dict(zip(names, values)) for values in itertools.product(*(space[n] for n in names))]


def _values(where: str, name: str, value: Any) -> list[Any]:
    if not isinstance(value, list) or not value:
        raise ConfigError(f"{where}: {name} must be a non-empty list of values, got {value!r}")
    return value


def _space(where: str, raw: Any) -> dict[str, list[Any]]:
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{where} must be a mapping name -> [values], got {raw!r}")
    return {str(k): _values(where, k, v) for k, v in raw.items()}


def _settings(where: str, raw: Any) -> list[dict[str, Any]]:
    """An inference grid: a mapping (product) or a list of mappings (union of products)."""
    if raw is None:
        return [{}]
    blocks = raw if isinstance(raw, list) else [raw]
    out: list[dict[str, Any]] = []
    for i, block in enumerate(blocks):
        if not isinstance(block, dict):
            raise ConfigError(f"{where}[{i}] must be a mapping knob -> [values], got {block!r}")
        out.extend(product(_space(f"{where}[{i}]" if isinstance(raw, list) else where, block)))
    return out


def _mapping(where: str, raw: Any) -> dict[str, Any]:
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{where} must be a mapping, got {raw!r}")
    return dict(raw)


@dataclass
class MethodGrid:
    """One method's part of a grid (top-level values merged in)."""

    name: str
    config: dict[str, Any] = field(default_factory=dict)
    train: dict[str, list[Any]] = field(default_factory=dict)
    knobs: dict[str, Any] = field(default_factory=dict)
    inference: list[dict[str, Any]] = field(default_factory=lambda: [{}])
    data: dict[str, Any] = field(default_factory=dict)

    def train_combinations(self) -> list[dict[str, Any]]:
        return product(self.train)


@dataclass
class Grid:
    name: str
    path: Path
    tasks: list[str]
    seeds: list[int]
    steps: int | dict[str, int]
    methods: list[MethodGrid]
    eval_every: int | None = None
    eval_episodes: int | None = None
    knobs_at: str = "final"
    checkpoint_every: int | None = None
    resources: dict[str, float] = field(default_factory=lambda: {"cpu": 1.0, "gpu": 0.0})
    max_failures: int = 2
    max_concurrent: int | None = None
    device: str | None = None
    description: str = ""
    protocol: str = "controlled"
    select_with: dict[str, list[Any]] = field(default_factory=dict)  # GEM's selection over the proposers' checkpoints

    def expand_tasks(self) -> list[str]:
        """Task ids with `SUITE/*` wildcards replaced by the suite's tasks (reads suite files)."""
        out: list[str] = []
        for task in self.tasks:
            if task.endswith("/*"):
                from modebench.benchmarks.tasks.suites import load_suite

                suite = task[:-2]
                out.extend(f"{suite}/{name}" for name in load_suite(suite))
            else:
                out.append(task)
        return out

    def steps_for(self, task: str) -> int:
        if isinstance(self.steps, int):
            return self.steps
        suite = task.split("/", 1)[0]
        if suite in self.steps:
            return self.steps[suite]
        if "default" in self.steps:
            return self.steps["default"]
        raise ConfigError(f"grid {self.name}: steps gives no value for suite {suite!r} (and no 'default')")

    def trials(self, seeds: list[int] | None = None, steps: int | None = None) -> list[TrialSpec]:
        """Every trial: method x training combination x task (in that nesting order), each with
        all the seeds (the grid's, or `seeds`)."""
        seeds = [int(s) for s in (seeds if seeds is not None else self.seeds)]
        out = []
        for m in self.methods:
            for combo in m.train_combinations():
                for task in self.expand_tasks():
                    out.append(TrialSpec(
                        method=m.name, task=task, seeds=list(seeds), steps=int(steps or self.steps_for(task)),
                        config={**m.config, **combo}, knobs=dict(m.knobs), inference=[dict(s) for s in m.inference],
                        data=dict(m.data), eval_every=self.eval_every, eval_episodes=self.eval_episodes,
                        knobs_at=self.knobs_at, checkpoint_every=self.checkpoint_every, device=self.device,
                        train_combo=combo, protocol=self.protocol,
                    ))
        return out

    def count_trials(self) -> int:
        """Trials: methods x training combinations x tasks (each holds every seed)."""
        return sum(len(m.train_combinations()) for m in self.methods) * len(self.expand_tasks())

    def count_runs(self) -> int:
        """Runs (run folders): trials x seeds."""
        return self.count_trials() * len(self.seeds)

    def count_records(self) -> int:
        """Records at the final step of all runs: per run (trial x seed), the distinct settings
        among the configured knobs and the inference settings (resolves methods and suite overrides)."""
        from modebench.benchmarks.run.spec import resolve_method
        from modebench.benchmarks.tasks.suites import get_task

        total = 0
        for m in self.methods:
            for task_id in self.expand_tasks():
                for combo in m.train_combinations():
                    method = resolve_method(m.name, get_task(task_id), {**m.config, **combo}, m.knobs, self.protocol)
                    base = to_dict(method.knobs)
                    keys = {config_hash(to_dict(from_dict(method.cls.knobs_class, {**base, **s}))) for s in [{}, *m.inference]}
                    total += len(keys)
        return total * len(self.seeds)

    def validate(self, check_tasks: bool = True) -> None:
        """Check every method name, config key/value and knob key/value against the registry's
        dataclasses (and, with `check_tasks`, that every task exists in its suite file)."""
        for m in self.methods:
            self.validate_method(m)
        if check_tasks:
            from modebench.benchmarks.tasks.suites import get_task

            for task in self.expand_tasks():
                get_task(task)

    def validate_method(self, m: MethodGrid) -> None:
        from modebench.algorithms.registry import get_method
        from modebench.benchmarks.data.dataset import DataConfig

        entry = get_method(m.name)
        cls = entry.load()
        for combo in m.train_combinations():
            from_dict(cls.config_class, {**entry.config, **m.config, **combo}, what=f"grid {self.name}: {m.name} config")
        seen = set()
        for setting in m.inference:
            knobs = from_dict(cls.knobs_class, {**entry.knobs, **m.knobs, **setting}, what=f"grid {self.name}: {m.name} knob")
            key = config_hash(to_dict(knobs))
            if key in seen:
                raise ConfigError(f"grid {self.name}: {m.name} inference setting {setting} repeats another setting")
            seen.add(key)
        from_dict(DataConfig, m.data, what=f"grid {self.name}: data")


@dataclass
class TrialSpec:
    """Everything one trial needs (plain data: it travels to a Ray worker as the trial config):
    one method, training combination and task, with all its seeds (one run each)."""

    method: str
    task: str
    seeds: list[int]
    steps: int
    config: dict[str, Any]
    knobs: dict[str, Any]
    inference: list[dict[str, Any]]
    data: dict[str, Any] = field(default_factory=dict)
    eval_every: int | None = None
    eval_episodes: int | None = None
    knobs_at: str = "final"
    checkpoint_every: int | None = None
    device: str | None = None
    train_combo: dict[str, Any] = field(default_factory=dict)
    protocol: str = "controlled"
    task_fields: dict[str, Any] | None = None  # the resolved Task (absolute paths), filled by the planner
    out: str | None = None  # absolute results root, filled by the planner

    @property
    def label(self) -> str:
        """A short, file-name-safe trial name for Tune's tables and folders."""
        combo = ",".join(f"{k}={v}" for k, v in self.train_combo.items())
        text = f"{self.method}_{self.task.replace('/', '-')}" + (f"_{combo}" if combo else "")  # seeds: all in it
        safe = "".join(c if c.isalnum() or c in "-_.=," else "-" for c in text)
        return safe if len(safe) <= 80 else f"{safe[:67]}_{config_hash({'t': text})}"

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> TrialSpec:
        return cls(**raw)


def parse_seeds(text: str | int | list | None) -> list[int] | None:
    """`3` -> [0, 1, 2] (a count, as `modebench bench --seeds`); `0,4,7` -> [0, 4, 7]; `7,` -> [7]."""
    if text is None or text == "":
        return None
    if isinstance(text, int) and not isinstance(text, bool):
        values: list[Any] = list(range(text))
    elif isinstance(text, list):
        values = text
    else:
        text = str(text).strip()
        if "," not in text:
            try:
                count = int(text)
            except ValueError:
                raise ConfigError(f"seeds: {text!r} is neither a count nor a comma-separated list of seeds") from None
            values = list(range(count))
        else:
            values = [v.strip() for v in text.split(",") if v.strip()]
    try:
        seeds = [int(v) for v in values]
    except (TypeError, ValueError):
        raise ConfigError(f"seeds must be integers, got {values!r}") from None
    if not seeds or any(s < 0 for s in seeds) or len(set(seeds)) != len(seeds):
        raise ConfigError(f"seeds must be a non-empty list of distinct integers >= 0, got {seeds}")
    return seeds


def load_grid(name_or_path: str | Path) -> Grid:
    """Read and check a grid file's structure (method/config/knob names: `Grid.validate`)."""
    path = grid_path(name_or_path)
    raw = load_mapping(path, GRID_KEYS, "grid file")
    where = f"grid file {path}"
    for key in ("tasks", "steps", "methods"):
        if key not in raw:
            raise ConfigError(f"{where}: missing key {key!r}")
    tasks = raw["tasks"]
    if isinstance(tasks, str):
        tasks = [tasks]
    if not isinstance(tasks, list) or not tasks or not all(isinstance(t, str) and "/" in t for t in tasks):
        raise ConfigError(f"{where}: tasks must be a non-empty list of SUITE/TASK ids, got {tasks!r}")
    if len(set(tasks)) != len(tasks):
        raise ConfigError(f"{where}: tasks repeat: {tasks}")
    seeds = parse_seeds(raw.get("seeds", 3))
    steps = raw["steps"]
    for value in (steps.values() if isinstance(steps, dict) else [steps]):
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise ConfigError(f"{where}: steps must be an integer >= 1 or a mapping suite -> integer, got {steps!r}")

    ev = _mapping(f"{where}: eval", raw.get("eval"))
    check_keys(ev, EVAL_KEYS, "eval", where)
    knobs_at = ev.get("knobs_at", "final")
    if knobs_at not in ("final", "all"):
        raise ConfigError(f"{where}: eval.knobs_at must be 'final' or 'all', got {knobs_at!r}")
    for name, value in (("eval.every", ev.get("every")), ("eval.episodes", ev.get("episodes")),
                        ("checkpoint_every", raw.get("checkpoint_every")), ("max_concurrent", raw.get("max_concurrent"))):
        if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < 1):
            raise ConfigError(f"{where}: {name} must be an integer >= 1, got {value!r}")

    res = _mapping(f"{where}: resources", raw.get("resources"))
    check_keys(res, RESOURCE_KEYS, "resources", where)
    resources = {"cpu": float(res.get("cpu", 1)), "gpu": float(res.get("gpu", 0))}
    if resources["cpu"] <= 0 or resources["gpu"] < 0:
        raise ConfigError(f"{where}: resources need cpu > 0 and gpu >= 0, got {resources}")
    if resources["gpu"] > 1 and not float(resources["gpu"]).is_integer():
        raise ConfigError(f"{where}: a fractional gpu share must be <= 1, got {resources['gpu']}")
    max_failures = raw.get("max_failures", 2)
    if not isinstance(max_failures, int) or max_failures < -1:
        raise ConfigError(f"{where}: max_failures must be an integer >= -1 (-1: retry forever), got {max_failures!r}")

    top = {
        "config": _mapping(f"{where}: config", raw.get("config")),
        "train": _space(f"{where}: train", raw.get("train")),
        "knobs": _mapping(f"{where}: knobs", raw.get("knobs")),
        "inference": raw.get("inference"),
        "data": _mapping(f"{where}: data", raw.get("data")),
    }
    methods_raw = raw["methods"]
    if isinstance(methods_raw, list):
        methods_raw = {str(name): {} for name in methods_raw}
    if not isinstance(methods_raw, dict) or not methods_raw:
        raise ConfigError(f"{where}: methods must be a non-empty list of names or a mapping name -> settings")
    methods = []
    for name, entry in methods_raw.items():
        entry = _mapping(f"{where}: methods.{name}", entry)
        check_keys(entry, METHOD_KEYS, where=f"{where}: methods.{name}")
        mw = f"{where}: methods.{name}"
        train = {**top["train"], **_space(f"{mw}.train", entry.get("train"))}
        config = {**top["config"], **_mapping(f"{mw}.config", entry.get("config"))}
        clash = sorted(set(train) & set(config))
        if clash:
            raise ConfigError(f"{mw}: {clash} is both a fixed config value and a training grid axis")
        knobs = {**top["knobs"], **_mapping(f"{mw}.knobs", entry.get("knobs"))}
        inference = _settings(f"{mw}.inference", entry["inference"] if "inference" in entry else top["inference"])
        methods.append(MethodGrid(
            name=str(name), config=config, train=train, knobs=knobs, inference=inference,
            data={**top["data"], **_mapping(f"{mw}.data", entry.get("data"))},
        ))
    return Grid(
        name=str(raw.get("name", path.stem)), path=path, tasks=tasks, seeds=seeds, steps=steps, methods=methods,
        eval_every=ev.get("every"), eval_episodes=ev.get("episodes"), knobs_at=knobs_at,
        checkpoint_every=raw.get("checkpoint_every"), resources=resources, max_failures=max_failures,
        max_concurrent=raw.get("max_concurrent"), device=raw.get("device"), description=str(raw.get("description", "")),
        protocol=_protocol(where, raw.get("protocol", "controlled")),
        select_with=_select_with(where, raw.get("select_with"), [m.name for m in methods]),
    )


def _select_with(where: str, raw: Any, methods: list[str]) -> dict[str, list[Any]]:
    """`select_with: {N: [0, 16], lambda: [1]}`: after the trials, every method's checkpoint has its
    proposals scored by the grid's GEM run of the same task and seed (benchmarks/run/compose.py)."""
    space = _space(f"{where}: select_with", raw)
    if space and "gem" not in methods:
        raise ConfigError(f"{where}: select_with needs gem among the methods (its runs select for the others)")
    return space


def _protocol(where: str, value: Any) -> str:
    from modebench.benchmarks.run.spec import check_protocol

    try:
        return check_protocol(value)
    except ConfigError as err:
        raise ConfigError(f"{where}: {err}") from None
