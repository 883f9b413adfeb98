"""Suites and tasks: data files in `benchmarks/tasks/suites/<suite>.yaml`, resolved into `Task`s.

Method overrides also come from `suites/<name>_overrides.yaml` files (a paper's per-suite or
per-task hyperparameter table, e.g. DROL Table 3): `{SUITE or SUITE/TASK: {method: {config: {..},
knobs: {..}}}}`. Precedence, lowest first: the suite file's `methods`, override files by suite,
override files by task, the task's own `methods` in the suite file.

A suite file names its tasks, and for each the dataset source, the evaluation environment,
the episode horizon, the score normalisation, the number of evaluation episodes, data
preprocessing, per-method overrides (config: training hyperparameters, knobs: inference
knobs) and, for dict observations, the observation layouts the policy may see.

Observation layouts (`observation: {use: NAME, layouts: {NAME: {keys, dim, source, label}}}`):
which keys of a dict observation the policy sees, in which order. `use` is the layout of the
data the papers trained on (D4RL antmaze: the ant's 29-d state, no goal); any other layout
(a goal-conditioned one) is chosen by name (`--data observation_layout=NAME`) and carries a
`label` saying what it changes. `dim` is the papers' number with its `source`; the dimension
the policy gets is read from the env's spaces (`observation_dims`, no data needed). A task
without the block sees its env's observation as it is (every key of a dict, in space order).

Score normalisers: `score: {kind, ..., normaliser, source}` names the reference a score is
normalised with (d4rl | minari | ogbench-success | toy | user) and where its numbers come
from; `d4rl_reference: {random, expert, source}` beside a task's own reference is D4RL's,
which the published protocol uses (`Task.for_protocol`). Keys are checked: an unknown key is an error. Suite-level `defaults` and `methods`
apply to every task; a task's own entries win.

Dataset, environment and score kinds are classes listed in benchmarks/tasks/sources.py (one
explicit list each), so the core never branches on a suite's name or a source's kind.
"""

from __future__ import annotations

import copy
import dataclasses
import warnings
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import yaml
from modebench.algorithms.config import (
    ConfigError,
    check_keys,
    close_matches,
    load_mapping,
)
from modebench.benchmarks.data.dataset import TransitionDataset
from modebench.benchmarks.tasks import sources

SUITES_DIR = Path(__file__).parent / "suites"
TASK_KEYS = {"dataset", "env", "horizon", "score", "eval_episodes", "data", "methods", "description", "default",
             "observation"}
OBSERVATION_KEYS = {"use", "layouts"}
LAYOUT_KEYS = {"keys", "dim", "source", "label"}
# The layout of a task that declares none: its env's observation as given.
AS_GIVEN = "as-given"
AS_GIVEN_SOURCE = "the env's observation as it is (every key of a dict observation, in the space's order)"
SUITE_KEYS = {"name", "description", "defaults", "methods", "tasks", "controlled"}  # controlled: benchmarks/run/protocols.py


class UnknownNameError(KeyError):
    def __str__(self) -> str:
        return str(self.args[0])


@dataclass(frozen=True)
class ObservationLayout:
    """Which keys of a dict observation the policy sees, in order (None: the observation as the
    env gives it), the dimension the papers' data had (`dim`, from `source`), and a `label` for
    a layout that is a choice beyond the papers' (shown wherever the layout is)."""

    name: str
    keys: tuple[str, ...] | None
    source: str
    dim: int | None = None
    label: str = ""

    def as_record(self, dim: int) -> dict[str, Any]:
        """What a record keeps: {name, keys, dim (what the policy saw), source}."""
        out = {"name": self.name, "keys": list(self.keys) if self.keys is not None else None, "dim": int(dim),
               "source": self.source}
        if self.label:
            out["label"] = self.label
        return out


@dataclass
class Task:
    suite: str
    name: str
    dataset: dict[str, Any]
    env: dict[str, Any]
    horizon: int
    score: dict[str, Any]
    eval_episodes: int = 10
    data: dict[str, Any] = field(default_factory=dict)
    methods: dict[str, dict[str, dict[str, Any]]] = field(default_factory=dict)
    description: str = ""
    default: bool = False
    observation: dict[str, Any] = field(default_factory=dict)

    @property
    def id(self) -> str:
        return f"{self.suite}/{self.name}"

    @property
    def layout_names(self) -> list[str]:
        return list(self.observation.get("layouts") or {}) or [AS_GIVEN]

    def layout(self, name: str | None = None) -> ObservationLayout:
        """The named observation layout (default: the one the task uses)."""
        layouts = self.observation.get("layouts") or {}
        if not layouts:
            if name not in (None, AS_GIVEN):
                raise ConfigError(f"task {self.id} declares no observation layouts; {name!r} is not one "
                                  f"(its observation is used as the env gives it)")
            return ObservationLayout(AS_GIVEN, None, AS_GIVEN_SOURCE)
        name = self.observation.get("use") if name is None else name
        if name not in layouts:
            raise ConfigError(f"task {self.id}: unknown observation layout {name!r}; valid: {', '.join(layouts)}")
        spec = layouts[name]
        return ObservationLayout(name, tuple(spec["keys"]), spec["source"], spec.get("dim"), spec.get("label", ""))

    def with_layout(self, name: str) -> Task:
        """This task with the policy seeing layout `name` (its data and env cut to it)."""
        self.layout(name)  # checked
        if not self.observation:
            return self
        return dataclasses.replace(self, observation={**self.observation, "use": name})

    def observation_dims(self, name: str | None = None) -> list[tuple[str, int]]:
        """(key, size) of each part of the policy's observation under the layout, read from the
        evaluation env's spaces (built without the dataset; nothing is downloaded)."""
        from modebench.benchmarks.data.loaders import layout_dims

        layout = self.layout(name)
        with warnings.catch_warnings():  # gymnasium-robotics' "-v4 is out of date" notice: the suite names the version
            warnings.simplefilter("ignore", DeprecationWarning)
            env = sources.declared_env(self, raw=True)
        try:
            return layout_dims(env.observation_space, layout.keys, f"task {self.id}")
        finally:
            env.close()

    def load_dataset(self) -> TransitionDataset:
        keys = self.layout().keys
        return sources.load_dataset(self.dataset, list(keys) if keys is not None else None)

    def make_env(self) -> gym.Env:
        keys = self.layout().keys
        return sources.make_env(self.env, list(keys) if keys is not None else None)

    def for_protocol(self, protocol: str) -> Task:
        """This task scored as `protocol` compares it: under `published`, with D4RL's reference
        returns where the task lists them (`score.d4rl_reference`), as the papers' tables are."""
        reference = self.score.get("d4rl_reference")
        if protocol != "published" or not reference:
            return self
        return dataclasses.replace(self, score={
            "kind": "reference", "random": reference["random"], "expert": reference["expert"], "normaliser": "d4rl",
            "source": reference["source"]})

    def normaliser(self, dataset: TransitionDataset | None = None) -> dict[str, Any]:
        """{kind, ref_min, ref_max, source} of the score normalisation (what records keep)."""
        return sources.score(self.score).normaliser(self.id, self.score, lambda: dataset if dataset is not None else self.load_dataset())

    def reference_returns(self, dataset: TransitionDataset | None = None) -> tuple[float, float]:
        """(random, expert) returns for the normalised score 100 (R - random) / (expert - random)."""
        return sources.score(self.score).reference_returns(self.id, self.score, lambda: dataset if dataset is not None else self.load_dataset())

    def normalize(self, returns: np.ndarray | float, successes=None, dataset: TransitionDataset | None = None):
        return sources.score(self.score).normalize(self.id, self.score, returns, successes,
                                                   lambda: dataset if dataset is not None else self.load_dataset())


CONFLICT_KEYS = ("other", "source", "why")


def _merge_methods(*blocks: dict, where: str = "suite") -> dict:
    """{method: {config, knobs}} merged in order (later blocks win per key). A method entry may
    also hold `conflicts: {KEY: {other, source, why}}`: the value a second primary source gives
    for a setting the entry (or the published table) sets, read by benchmarks/run/protocols.py;
    it sets nothing, so it is checked here and left out of the merge."""
    out: dict[str, dict[str, dict]] = {}
    for block in blocks:
        for method, entry in (block or {}).items():
            check_keys(entry or {}, ("config", "knobs", "conflicts"), where=f"{where}: method {method!r} overrides")
            for key, conflict in ((entry or {}).get("conflicts") or {}).items():
                check_keys(conflict or {}, CONFLICT_KEYS, f"conflict {key}", where=f"{where}: method {method!r}")
                if set(conflict or {}) != set(CONFLICT_KEYS):
                    raise ConfigError(f"{where}: method {method!r} conflict {key!r} needs {', '.join(CONFLICT_KEYS)}")
            slot = out.setdefault(method, {})
            for part, values in (entry or {}).items():
                if part != "conflicts":
                    slot.setdefault(part, {}).update(values or {})
    return out


def suite_names() -> list[str]:
    return sorted(p.stem for p in SUITES_DIR.glob("*.yaml") if not p.stem.endswith("_overrides"))


@cache
def override_tables() -> dict[str, dict[str, dict]]:
    """Every `*_overrides.yaml` file: {file name: {SUITE or SUITE/TASK: {method: {config, knobs}}}}."""
    return {p.name: yaml.safe_load(p.read_text()) or {} for p in sorted(SUITES_DIR.glob("*_overrides.yaml"))}


@cache
def _read_suite(name: str) -> dict:
    if name not in suite_names():  # a name never leaves SUITES_DIR ('../x' is not a name)
        raise UnknownNameError(f"unknown suite {name!r}{close_matches(name, suite_names())}; valid suites: "
                               f"{', '.join(suite_names())}; your own suite file is passed as a path ending in .yaml")
    return load_mapping(SUITES_DIR / f"{name}.yaml", SUITE_KEYS, "suite file")


def _suite_file(path_text: str) -> tuple[str, dict]:
    """(suite name, contents) of a user's own suite file: the file's stem names the suite."""
    path = Path(path_text).expanduser()
    if not path.is_file():
        raise UnknownNameError(f"suite file {path_text} does not exist")
    if path.stem in suite_names() and path.resolve() != (SUITES_DIR / f"{path.stem}.yaml").resolve():
        raise ConfigError(f"suite file {path_text}: its name {path.stem!r} is a built-in suite's; rename the file")
    return path.stem, load_mapping(path, SUITE_KEYS, "suite file")


def load_suite(name: str) -> dict[str, Task]:
    """All tasks of a suite, in file order: a suite name (`suite_names()`) or the path of a
    user's own suite file (ending in .yaml or .yml; its stem names the suite)."""
    if name.endswith((".yaml", ".yml")):
        name, raw = _suite_file(name)
    else:
        raw = _read_suite(name)
    defaults = raw.get("defaults", {}) or {}
    check_keys(defaults, TASK_KEYS, "default", where=f"suite {name}")
    tasks: dict[str, Task] = {}
    for task_name, spec in (raw.get("tasks") or {}).items():
        spec = spec or {}
        check_keys(spec, TASK_KEYS, where=f"suite {name}, task {task_name}")
        merged = copy.deepcopy(defaults)
        for key, value in spec.items():
            if key in ("data",) and isinstance(value, dict):
                merged.setdefault(key, {}).update(value)
            elif key != "methods":
                merged[key] = value
        overrides = override_tables()
        merged["methods"] = _merge_methods(
            raw.get("methods", {}), defaults.get("methods", {}),
            *(table.get(name, {}) for table in overrides.values()),
            *(table.get(f"{name}/{task_name}", {}) for table in overrides.values()),
            spec.get("methods", {}),
            where=f"suite {name}, task {task_name}",
        )
        missing = {"dataset", "env", "horizon", "score"} - set(merged)
        if missing:
            raise ConfigError(f"suite {name}, task {task_name}: missing key(s) {sorted(missing)}")
        _check_observation(merged.get("observation") or {}, f"suites/{name}.yaml task {task_name}")
        for key in ("id", "env_id"):  # a suite file is a file: its env ids never import a module
            if isinstance(merged["env"], dict) and key in merged["env"]:
                sources.check_env_id(merged["env"][key])
        tasks[task_name] = Task(suite=name, name=task_name, **merged)
    return tasks


def _check_observation(block: dict, where: str) -> None:
    """An `observation:` block: `use` names one of its `layouts`, each with keys, dim and source."""
    if not block:
        return
    check_keys(block, OBSERVATION_KEYS, "observation", where=where)
    layouts = block.get("layouts") or {}
    if block.get("use") not in layouts:
        raise ConfigError(f"{where}: observation.use {block.get('use')!r} must name one of its layouts ({', '.join(layouts)})")
    for name, spec in layouts.items():
        check_keys(spec or {}, LAYOUT_KEYS, f"observation layout {name}", where=where)
        if not spec.get("keys") or not spec.get("source"):
            raise ConfigError(f"{where}: observation layout {name!r} needs `keys` (a list) and `source`")


def get_task(task_id: str) -> Task:
    """`suite/task` (e.g. `toy/four-goal`)."""
    if "/" not in task_id:
        raise UnknownNameError(f"task {task_id!r} must be written SUITE/TASK; suites: {', '.join(suite_names())}")
    suite, name = task_id.split("/", 1)
    tasks = load_suite(suite)
    if name not in tasks:
        raise UnknownNameError(f"unknown task {name!r} in suite {suite!r}{close_matches(name, tasks)}; valid tasks: {', '.join(tasks)}")
    return tasks[name]
