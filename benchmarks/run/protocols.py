"""Protocols: how one method x task run is configured, with the source of every value.

Two protocols (issue 15):

- `published`: the method as its authors ran it on that task. Every row of
  `benchmarks/tasks/published_settings.csv` (`method,scope,key,value,source`, transcribed from the
  papers and the authors' code) for the method and task applies: hyperparameters, network layout,
  steps, evaluation episodes, and the method's own data preprocessing (`data.*` rows: FQL/DROL
  raw observations and actions clipped to 1 - 1e-5, IQL's reward transforms, LOM's raw rewards).
  A method with no published row for a task has no published protocol there: refused, never
  filled in silently.
- `controlled`: one protocol for every method on a suite. Data preprocessing, training steps,
  evaluation episodes, evaluation schedule and seeds are the suite's (its yaml file states them in
  its `controlled:` block, the `data` defaults and each task's `eval_episodes`); the method's
  hyperparameters are the published ones where a row exists, else the method's defaults plus the
  suite's overrides, with that source stated.

Config and knob layers, lowest first, each value keeping the source of the layer that set it:
the config class default (`default:<Class>`), the suite file's and override files' entries for
the base method (`suite:<file> ...`), the published rows of the base method, the preset's fixed
values (`preset:<name>`), the suite's entries for the preset, the published rows of the preset,
the caller's values (`user:--set` / `user:--knob`). Published rows always sit above the suite
files, so a suite override cannot undo a published value (e.g. FQL humanoidmaze alpha 30);
a preset sits above its base method's published values (an ablation changes what it ablates),
and a preset with its own rows (`drol-eq8`, `lom-code`) gets them last.

`resolve(method, task, protocol, overrides) -> Resolved` is a pure function of the files;
benchmarks/run/spec.py builds a run from it and `modebench config` prints it.
`python -m modebench.benchmarks.run.protocols --write-docs` regenerates docs/run-settings.md.
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import json
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

from modebench.algorithms.config import ConfigError, check_keys, from_dict, to_dict
from modebench.algorithms.registry import METHODS, base_method, get_method
from modebench.benchmarks.data.dataset import DataConfig
from modebench.benchmarks.tasks.sources import score as score_kind
from modebench.benchmarks.tasks.suites import (
    Task,
    _read_suite,
    get_task,
    load_suite,
    override_tables,
    suite_names,
)

PROTOCOLS = ("controlled", "published")
PUBLISHED_TABLE = Path(__file__).resolve().parents[1] / "tasks" / "published_settings.csv"
DOCS_PAGE = Path(__file__).resolve().parents[2] / "docs" / "run-settings.md"
DOCS_COMMAND = "python -m modebench.benchmarks.run.protocols --write-docs"
TABLE_HEADER = ["method", "scope", "key", "value", "source"]

# Run settings a protocol fixes: updates, episodes per evaluation, evaluation period (None: once,
# at the end), and how many seeds a table averages.
RUN_KEYS = ("steps", "eval_episodes", "eval_every", "seeds")
CONTROLLED_KEYS = {"steps", "seeds", "eval_every", "note"}
AT_THE_END = "ours: evaluate once, at the end (scores are the final policy's)"

# Published rows ModeBench cannot apply, each with its reason: a row matching one is kept in the
# table (the fact stays recorded) but applies nothing. Keys no method applies are here; a method's
# own are its `published_not_applicable` in algorithms/methods.yaml (`not_applicable`). The table
# test checks each entry is still needed: once the field exists, the entry must go and the row
# then applies and is checked like any other. A preset whose published protocol is its own rows
# only, never its base method's, says why in its `own_protocol` there (CFGRL's authors ran no ISEP-FM task).
INFORMATIONAL_KEYS: dict[str, str] = {
    "data.dataset_version": (
        "informational: the dataset ids the authors trained on; each task's `dataset` says what ModeBench "
        "loads, and where the two differ (Minari re-releases, D4RL -v2 for -v0) scores compare only approximately"),
}

# Suites no published run exists for, and why (the docs page states it; `published` is refused there).
NO_PUBLISHED_RUN = {
    "toy": "generated locally for this project",
    "maze2d-local": "generated locally for this project",
    "minari-mujoco": "new SAC data on MuJoCo v5 envs, no paper ran it",
}


@dataclass(frozen=True)
class Conflict:
    """The value a second primary source gives for a setting, where it and the source used disagree
    (an override file's `conflicts:` entry: DROL's Table 3 vs its run script, LOM's paper vs code)."""

    other: Any
    source: str
    why: str

    def as_json(self) -> dict[str, Any]:
        return {"value": self.other, "source": self.source, "why": self.why}


def not_applicable(method: str, key: str) -> str | None:
    """Why a published row (method, key) applies nothing, or None when it applies."""
    return INFORMATIONAL_KEYS.get(key) or get_method(method).published_not_applicable.get(key)


@dataclass(frozen=True)
class Setting:
    value: Any
    source: str
    other: Conflict | None = None  # the other source's value, where two primary sources disagree

    def as_json(self) -> dict[str, Any]:
        value = list(self.value) if isinstance(self.value, tuple) else self.value
        out = {"value": value, "source": self.source}
        if self.other is not None:
            out["other"] = self.other.as_json()
        return out


@dataclass(frozen=True)
class Resolved:
    """One method on one task under one protocol: every value with its source."""

    method: str
    task_id: str
    protocol: str
    config: dict[str, Setting]
    knobs: dict[str, Setting]
    data: dict[str, Setting]
    run: dict[str, Setting]
    not_applied: tuple[tuple[str, str, str], ...] = ()  # (key, published value, reason) of rows not applicable

    def values(self, part: str) -> dict[str, Any]:
        return {k: s.value for k, s in getattr(self, part).items()}

    def as_json(self) -> dict[str, Any]:
        """`{"config": {key: {"value", "source"}}, "knobs": .., "data": .., "run": .., "protocol": P}`."""
        out: dict[str, Any] = {part: {k: s.as_json() for k, s in getattr(self, part).items()}
                               for part in ("config", "knobs", "data", "run")}
        out["protocol"] = self.protocol
        return out


# ----------------------------------------------------------------------------------------------
# The published table


@dataclass(frozen=True)
class Row:
    method: str
    scope: str
    key: str
    value: Any
    source: str
    line: int


def _where(row: Row) -> str:
    return f"{PUBLISHED_TABLE.name}:{row.line}"


@cache
def published_rows() -> tuple[Row, ...]:
    """Every row of the published table, checked: a known method, a scope that names an existing
    suite or task, a key the method can take (or one `not_applicable` names), a value its field
    accepts. One bad row is a one-line error naming the line and the fix."""
    with PUBLISHED_TABLE.open(newline="") as handle:
        reader = csv.DictReader(handle)
        if reader.fieldnames != TABLE_HEADER:
            raise ConfigError(f"{PUBLISHED_TABLE}: header must be {','.join(TABLE_HEADER)}, got {reader.fieldnames}")
        rows = []
        for line, raw in enumerate(reader, start=2):
            try:
                value = json.loads(raw["value"])
            except json.JSONDecodeError:
                raise ConfigError(f"{PUBLISHED_TABLE.name}:{line}: value {raw['value']!r} is not JSON (quote strings: \"\"\"min\"\"\")") from None
            rows.append(Row(raw["method"], raw["scope"], raw["key"], value, raw["source"], line))
    seen: dict[tuple[str, str, str], int] = {}
    for row in rows:
        _check_row(row)
        ident = (row.method, row.scope, row.key)
        if ident in seen:
            raise ConfigError(f"{_where(row)}: duplicate of line {seen[ident]} ({row.method}, {row.scope}, {row.key}); keep one")
        seen[ident] = row.line
    return tuple(rows)


def _check_row(row: Row) -> None:
    if row.method not in METHODS:
        raise ConfigError(f"{_where(row)}: unknown method {row.method!r}; use a registry name ({', '.join(sorted(METHODS))})")
    suite, _, task = row.scope.partition("/")
    if suite not in suite_names():
        raise ConfigError(f"{_where(row)}: scope {row.scope!r} names no suite; valid suites: {', '.join(suite_names())}")
    if task and task not in load_suite(suite):
        raise ConfigError(f"{_where(row)}: scope {row.scope!r}: suite {suite!r} has no task {task!r}; "
                          f"fix the scope or add the task to suites/{suite}.yaml")
    if not_applicable(row.method, row.key):
        return
    part, name = _split_key(row.method, row.key)
    if part is None:
        raise ConfigError(f"{_where(row)}: {row.method} has no setting {row.key!r}; use a config field, a knob, "
                          f"data.<{'|'.join(f.name for f in dataclasses.fields(DataConfig))}>, run.<{'|'.join(RUN_KEYS)}>, "
                          "or list it in the method's published_not_applicable (algorithms/methods.yaml) with the reason")
    if part in ("config", "knobs", "data"):
        cls = _part_class(row.method, part)
        from_dict(cls, {name: row.value}, what=f"{_where(row)} {row.method}")


def _part_class(method: str, part: str) -> type:
    if part == "data":
        return DataConfig
    cls = get_method(method).load()
    return cls.config_class if part == "config" else cls.knobs_class


def _split_key(method: str, key: str) -> tuple[str | None, str]:
    """A table key -> (part, name): config field, knob, `data.<DataConfig field>` or `run.<RUN_KEYS>`."""
    if key.startswith("data."):
        name = key[5:]
        return ("data" if name in {f.name for f in dataclasses.fields(DataConfig)} else None), name
    if key.startswith("run."):
        name = key[4:]
        return ("run" if name in RUN_KEYS else None), name
    cls = get_method(method).load()
    aliases = getattr(cls.config_class, "ALIASES", {})
    if aliases.get(key, key) in {f.name for f in dataclasses.fields(cls.config_class)}:
        return "config", aliases.get(key, key)
    knob_aliases = getattr(cls.knobs_class, "ALIASES", {})
    if knob_aliases.get(key, key) in {f.name for f in dataclasses.fields(cls.knobs_class)}:
        return "knobs", knob_aliases.get(key, key)
    return None, key


def rows_for(method: str, task: Task) -> list[Row]:
    """The method's own rows (not its base method's) that apply to `task`: suite rows, then task
    rows (a task row wins over the suite row of the same key)."""
    rows = [r for r in published_rows() if r.method == method]
    return [r for r in rows if r.scope == task.suite] + [r for r in rows if r.scope == task.id]


def has_published(method: str, task: Task) -> bool:
    """Whether the method (or the base method of a preset) has a published protocol on the task."""
    return bool(rows_for(method, task) or (not get_method(method).own_protocol and rows_for(base_method(method), task)))


# ----------------------------------------------------------------------------------------------
# Suite files, layer by layer, with their sources


def suite_method_layers(task: Task) -> list[tuple[str, dict]]:
    """(source, methods block) for `task`, lowest first, in suites.load_suite's order: the suite
    file's `methods`, override files by suite, override files by task, the task's own `methods`.
    tests/test_protocols.py checks that merging these gives `Task.methods` exactly."""
    if task.suite not in suite_names():
        return []
    raw = _read_suite(task.suite)
    file = f"{task.suite}.yaml"
    layers = [(f"suite:{file} methods", raw.get("methods") or {}),
              (f"suite:{file} defaults.methods", (raw.get("defaults") or {}).get("methods") or {})]
    tables = override_tables()
    layers += [(f"suite:{name}[{task.suite}]", table.get(task.suite) or {}) for name, table in tables.items()]
    layers += [(f"suite:{name}[{task.id}]", table.get(task.id) or {}) for name, table in tables.items()]
    spec = (raw.get("tasks") or {}).get(task.name) or {}
    layers.append((f"suite:{file} tasks.{task.name}.methods", spec.get("methods") or {}))
    return layers


def conflicts_for(method: str, task: Task) -> dict[str, tuple[Conflict, str]]:
    """{setting: (the other source's value, the file entry that records it)} for the method (and
    its base method) on `task`, from the suite and override files' `conflicts:` entries."""
    names = [base_method(method)] + ([method] if method != base_method(method) else [])
    out: dict[str, tuple[Conflict, str]] = {}
    for where, methods in suite_method_layers(task):
        for name in names:
            for key, entry in ((methods.get(name) or {}).get("conflicts") or {}).items():
                out[key] = (Conflict(entry["other"], entry["source"], entry["why"]), f"{where} {name} conflicts.{key}")
    return out


def controlled_block(suite: str) -> dict[str, Any]:
    """The suite file's `controlled:` block: steps and seeds (required), eval_every, note."""
    raw = _read_suite(suite)
    block = raw.get("controlled")
    if not isinstance(block, dict):
        raise ConfigError(f"suites/{suite}.yaml has no controlled: block; add one with steps and seeds "
                          "(see docs/run-settings.md)")
    check_keys(block, CONTROLLED_KEYS, "controlled:", f"suites/{suite}.yaml")
    missing = {"steps", "seeds"} - set(block)
    if missing:
        raise ConfigError(f"suites/{suite}.yaml controlled: missing {sorted(missing)}")
    return block


def _task_data_sources(task: Task) -> dict[str, str]:
    """For each key of the task's `data`, where it is written (the task entry or the suite defaults)."""
    raw = _read_suite(task.suite)
    file = f"{task.suite}.yaml"
    own = ((raw.get("tasks") or {}).get(task.name) or {}).get("data") or {}
    return {k: f"suite:{file} tasks.{task.name}.data" if k in own else f"suite:{file} defaults.data" for k in task.data}


def _task_episodes_source(task: Task) -> str:
    raw = _read_suite(task.suite)
    own = ((raw.get("tasks") or {}).get(task.name) or {})
    where = f"tasks.{task.name}.eval_episodes" if "eval_episodes" in own else "defaults.eval_episodes"
    if "eval_episodes" not in own and "eval_episodes" not in (raw.get("defaults") or {}):
        return "default:Task.eval_episodes"
    return f"suite:{task.suite}.yaml {where}"


# ----------------------------------------------------------------------------------------------
# Resolution


def _field_source(cls: type, name: str) -> str:
    """`default:<Class>`, with the field's declared help (its meaning and the paper it follows)."""
    for f in dataclasses.fields(cls):
        if f.name == name:
            cite = next((f.metadata[k] for k in ("source", "cite", "help") if f.metadata.get(k)), None)
            return f"default:{cls.__name__}" + (f" ({cite})" if cite else "")
    return f"default:{cls.__name__}"


def _defaults(cls: type) -> dict[str, Setting]:
    instance = cls()
    return {k: Setting(v, _field_source(cls, k)) for k, v in to_dict(instance).items()}


def _apply(target: dict[str, Setting], values: Mapping[str, Any], source: str, cls: type) -> None:
    aliases = getattr(cls, "ALIASES", {})
    for key, value in values.items():
        target[aliases.get(key, key)] = Setting(value, source)


def _typed(part: dict[str, Setting], cls: type, what: str) -> dict[str, Setting]:
    """Validate the merged values as `cls` (unknown keys, types, bounds) and keep the typed values."""
    built = to_dict(from_dict(cls, {k: s.value for k, s in part.items()}, what=what))
    return {k: Setting(built[k], part[k].source) for k in built}


def check_protocol(protocol: str) -> str:
    if protocol not in PROTOCOLS:
        raise ConfigError(f"unknown protocol {protocol!r}; valid: {', '.join(PROTOCOLS)}")
    return protocol


def resolve(method: str, task: str | Task, protocol: str = "controlled", overrides: Mapping[str, Mapping[str, Any]] | None = None) -> Resolved:
    """Method x task x protocol (+ the caller's `overrides`: {"config"|"knobs"|"data"|"run": {...}})
    -> every config field, knob, data setting and run setting, each with its source."""
    check_protocol(protocol)
    overrides = overrides or {}
    unknown = set(overrides) - {"config", "knobs", "data", "run"}
    if unknown:
        raise ConfigError(f"unknown override part(s) {sorted(unknown)}; use config, knobs, data, run")
    task_obj = get_task(task) if isinstance(task, str) else task
    entry = get_method(method)
    cls = entry.load()
    base = base_method(method)
    in_suite = task_obj.suite in suite_names()
    if protocol == "published":
        if not in_suite:
            raise ConfigError(f"{task_obj.id} is an ad-hoc dataset: no published protocol exists for it; use --protocol controlled")
        if not has_published(method, task_obj):
            why = NO_PUBLISHED_RUN.get(task_obj.suite, "no row in benchmarks/tasks/published_settings.csv")
            raise ConfigError(f"{method} has no published protocol on {task_obj.id} ({why}); use --protocol controlled")

    parts = {"config": _defaults(cls.config_class), "knobs": _defaults(cls.knobs_class), "data": _defaults(DataConfig)}
    classes = {"config": cls.config_class, "knobs": cls.knobs_class, "data": DataConfig}
    run: dict[str, Setting] = {}
    not_applied: list[tuple[str, str, str]] = []

    # the suite's shared preprocessing and run settings (controlled; the fallback under published)
    if in_suite:
        for key, source in _task_data_sources(task_obj).items():
            parts["data"][key] = Setting(task_obj.data[key], source)
        block = controlled_block(task_obj.suite)
        where = f"controlled:{task_obj.suite}.yaml"
        note = f" ({block['note']})" if block.get("note") else ""
        run["steps"] = Setting(int(block["steps"]), f"{where} steps{note}")
        run["eval_episodes"] = Setting(task_obj.eval_episodes, _task_episodes_source(task_obj))
        run["eval_every"] = Setting(block.get("eval_every"), f"{where} eval_every" if "eval_every" in block else AT_THE_END)
        run["seeds"] = Setting(int(block["seeds"]), f"{where} seeds")
    else:
        for key, value in task_obj.data.items():
            parts["data"][key] = Setting(value, f"ad-hoc dataset {task_obj.id}")
        run["steps"] = Setting(10_000, "ours: a quick run on an ad-hoc dataset, which has no suite protocol; --steps sets it")
        run["eval_episodes"] = Setting(task_obj.eval_episodes, f"ad-hoc dataset {task_obj.id}")
        run["eval_every"] = Setting(None, AT_THE_END)
        run["seeds"] = Setting(1, "ours: one run per command on an ad-hoc dataset")
    if protocol == "published":
        # where a run setting or a data setting has no published row, it is the suite's: say so
        for key, setting in list(run.items()):
            run[key] = Setting(setting.value, f"{setting.source}; no published value")
        for key, setting in parts["data"].items():
            parts["data"][key] = Setting(setting.value, f"{setting.source}; no published value")
    if task_obj.observation:  # the task's layout: the papers' data layout where the suite file says so
        layout = task_obj.layout()
        label = f"; {layout.label}" if layout.label else ""
        parts["data"]["observation_layout"] = Setting(layout.name, f"suite:{task_obj.suite}.yaml observation.use "
                                                                   f"({layout.dim}-d: {layout.source}{label})")
    scored = task_obj.for_protocol(protocol)
    kind, source = score_kind(scored.score).declared(task_obj.id, scored.score)
    where = "score.d4rl_reference (the papers' normaliser, used under published)" if scored is not task_obj else "score"
    run["normaliser"] = Setting(kind, f"suite:{task_obj.suite}.yaml {where}: {source}")

    layers = suite_method_layers(task_obj)

    def suite_layer(name: str) -> None:
        for source, methods in layers:
            block = methods.get(name) or {}
            for part in ("config", "knobs"):
                _apply(parts[part], block.get(part) or {}, source, classes[part])

    def published_layer(name: str) -> None:
        for row in rows_for(name, task_obj):
            why = not_applicable(name, row.key)
            if why:
                not_applied.append((row.key, json.dumps(row.value), why))
                continue
            part, key = _split_key(name, row.key)
            if part in ("config", "knobs"):
                parts[part][key] = Setting(row.value, row.source)
            elif protocol == "published":  # data and run rows are the method's own protocol only
                target = run if part == "run" else parts["data"]
                target[key] = Setting(row.value, row.source)

    suite_layer(base)
    if not entry.own_protocol:
        published_layer(base)
    if method != base:
        _apply(parts["config"], entry.config, f"preset:{method} (algorithms/methods.yaml)", classes["config"])
        _apply(parts["knobs"], entry.knobs, f"preset:{method} (algorithms/methods.yaml)", classes["knobs"])
        suite_layer(method)
        published_layer(method)

    for part in ("config", "knobs", "data"):
        flag = {"config": "--set", "knobs": "--knob", "data": "--data"}[part]
        _apply(parts[part], overrides.get(part) or {}, f"user:{flag}", classes[part])
    for key, value in (overrides.get("run") or {}).items():
        if key not in RUN_KEYS:
            raise ConfigError(f"unknown run setting {key!r}; valid: {', '.join(RUN_KEYS)}")
        if value is not None:
            run[key] = Setting(value, f"user:--{key.replace('_', '-')}")
    data = _typed(parts["data"], DataConfig, "data")
    if data["observation_layout"].value:
        task_obj.layout(data["observation_layout"].value)  # a name the task declares
    typed = {"config": _typed(parts["config"], cls.config_class, f"{method} config"),
             "knobs": _typed(parts["knobs"], cls.knobs_class, f"{method} knob")}
    for key, (conflict, where) in conflicts_for(method, task_obj).items():
        part = next((p for p in ("config", "knobs") if key in typed[p]), None)
        if part is None:
            raise ConfigError(f"{where}: {method} has no config field or knob {key!r}")
        setting = typed[part][key]
        typed[part][key] = Setting(setting.value, setting.source, conflict)
    return Resolved(
        method=method, task_id=task_obj.id, protocol=protocol, config=typed["config"], knobs=typed["knobs"],
        data=data, run=run, not_applied=tuple(not_applied),
    )


# ----------------------------------------------------------------------------------------------
# `modebench config`


def cmd_config(args: argparse.Namespace) -> int:
    """`modebench config` (its options: benchmarks/cli.py)."""
    from modebench.algorithms.config import parse_assignments

    resolved = resolve(args.algo, args.task, args.protocol, {
        "config": parse_assignments(args.set), "knobs": parse_assignments(args.knob, "--knob"),
        "data": parse_assignments(args.data, "--data"),
    })
    observation = policy_observation(args.task, resolved)
    if args.json:
        print(json.dumps({**resolved.as_json(), "observation": observation}, indent=2))
        return 0
    print(f"{resolved.method} on {resolved.task_id}, protocol {resolved.protocol}")
    parts = " + ".join(f"{key} {size}" if key else str(size) for key, size in observation["parts"])
    print(f"observation: {observation['layout']}, {parts} = {observation['dim']} ({observation['source']})")
    for part in ("config", "knobs", "data", "run"):
        settings = getattr(resolved, part)
        if not settings:
            continue
        print(f"{part}:")
        width = max(len(k) for k in settings)
        for key, setting in settings.items():
            print(f"  {key:<{width}} = {_fmt(setting.value):<24} {setting.source}")
            if setting.other is not None:  # two primary sources disagree: the other one beside it
                other = setting.other
                print(f"  {'':<{width}}   other source: {_fmt(other.other)} ({other.source}); used: the value above, "
                      f"because {other.why}")
    for key, value, reason in resolved.not_applied:
        print(f"published, not applied: {key} = {value} ({reason})")
    return 0


def policy_observation(task: str | Task, resolved: Resolved) -> dict[str, Any]:
    """What the policy of a resolved run sees: {layout, keys, parts: [[key, size]], dim, source},
    read from the task's evaluation env's spaces (no data needed; nothing is downloaded)."""
    task_obj = get_task(task) if isinstance(task, str) else task
    layout = task_obj.layout(resolved.data["observation_layout"].value or None)
    parts = task_obj.observation_dims(layout.name)
    source = f"{resolved.data['observation_layout'].source}" if task_obj.observation else layout.source
    return {"layout": layout.name, "keys": list(layout.keys) if layout.keys is not None else None,
            "parts": [list(part) for part in parts], "dim": sum(size for _, size in parts), "source": source}


# ----------------------------------------------------------------------------------------------
# docs/run-settings.md


def _fmt(value: Any) -> str:
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_fmt(v) for v in value) + "]"
    if isinstance(value, float):
        return repr(value)
    return "end only" if value is None else str(value)


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _resolutions(method: str, tasks: list[Task]) -> dict[str, dict[str, Resolved]]:
    """{protocol: {task name: Resolved}}; a task without a published protocol is left out of `published`."""
    out: dict[str, dict[str, Resolved]] = {p: {} for p in PROTOCOLS}
    for protocol in PROTOCOLS:
        for task in tasks:
            if protocol == "published" and not has_published(method, task):
                continue
            out[protocol][task.name] = resolve(method, task, protocol)
    return out


def _settings_rows(resolved: dict[str, dict[str, Resolved]], skip: dict[str, dict[str, Resolved]] | None) -> list[str]:
    """Table rows: per setting and protocol its value and source, one row when every task agrees,
    else one row per group of tasks; a setting equal under both protocols is one `both` row.
    With `skip` (the base method's resolutions), settings equal to the base's are left out."""
    lines = []
    first = next(iter(resolved["controlled"].values()))
    for part in ("config", "knobs", "data", "run"):
        for key in getattr(first, part):
            cells: dict[str, list[tuple[str, str, list[str]]]] = {}
            for protocol in PROTOCOLS:
                groups: dict[tuple[str, str], list[str]] = {}
                for name, res in resolved[protocol].items():
                    setting = getattr(res, part)[key]
                    if skip is not None:
                        other = skip[protocol].get(name)
                        if other is not None and getattr(other, part).get(key) == setting:
                            continue
                    groups.setdefault((_fmt(setting.value), setting.source), []).append(name)
                cells[protocol] = [(v, s, names) for (v, s), names in groups.items()]
            same = cells["controlled"] == cells["published"] and len(resolved["controlled"]) == len(resolved["published"])
            for protocol in (("both",) if same else PROTOCOLS):
                groups_ = cells["controlled" if protocol == "both" else protocol]
                for value, source, names in groups_:
                    everywhere = len(names) == len(resolved["controlled" if protocol == "both" else protocol])
                    where = "" if everywhere else f" ({', '.join(names)})"
                    lines.append(f"| {part} | {key} | {protocol} | {_cell(value)}{where} | {_cell(source)} |")
    return lines


def _pair_section(method: str, suite: str, base_resolved: dict[str, dict[str, Resolved]] | None) -> list[str]:
    """One (method, suite) pair. A preset lists only the settings that differ from its base method's."""
    tasks = list(load_suite(suite).values())
    resolved = _resolutions(method, tasks)
    lines = [f"#### {method} on {suite}", ""]
    if not resolved["published"]:
        why = get_method(method).own_protocol or NO_PUBLISHED_RUN.get(suite, "no published run of this method on this suite")
        lines += [f"Published: none ({why}); `--protocol published` is refused.", ""]
    elif len(resolved["published"]) < len(tasks):
        missing = [t.name for t in tasks if t.name not in resolved["published"]]
        lines += [f"Published on {len(resolved['published'])} of {len(tasks)} tasks; refused on: {', '.join(missing)}.", ""]
    if base_resolved is not None:
        lines += [f"Every setting not listed is {base_method(method)}'s on the same task and protocol.", ""]
    rows = _settings_rows(resolved, base_resolved)
    if rows:
        lines += ["| part | key | protocol | value | source |", "|---|---|---|---|---|", *rows]
    else:
        lines.append("(no setting differs)")
    not_applied = sorted({(k, v, r) for res in resolved["published"].values() for k, v, r in res.not_applied})
    if not_applied:
        lines += ["", "Published but not applied:"]
        lines += [f"- `{key}` = {value}: {reason}" for key, value, reason in not_applied]
    lines.append("")
    return lines


def conflict_table() -> list[str]:
    """Every conflict between two primary sources, one row per (method, setting, values, sources,
    reason) with the tasks it covers: the value used and its source (as `resolve` gives it: the
    published protocol where the method has one on the task, else the controlled one), the other
    value and its source, and why the one is used. Presets inherit their base method's rows."""
    rows: dict[tuple[str, ...], list[str]] = {}
    for suite in suite_names():
        for task in load_suite(suite).values():
            for method in sorted(METHODS):
                conflicts = conflicts_for(method, task)
                if not conflicts or (method != base_method(method) and conflicts == conflicts_for(base_method(method), task)):
                    continue
                resolved = resolve(method, task, "published" if has_published(method, task) else "controlled")
                for key, (other, _) in conflicts.items():
                    used = (resolved.config.get(key) or resolved.knobs[key])
                    ident = (method, key, _fmt(used.value), used.source, _fmt(other.other), other.source, other.why)
                    rows.setdefault(ident, []).append(task.id)
    lines = ["| method | tasks | setting | used | its source | other value | its source | why the used one |",
             "|---|---|---|---|---|---|---|---|"]
    for (method, key, used, used_source, other, other_source, why), tasks in rows.items():
        lines.append(f"| {method} | {', '.join(tasks)} | {key} | {_cell(used)} | {_cell(used_source)} | {_cell(other)} | "
                     f"{_cell(other_source)} | {_cell(why)} |")
    return lines


def render_docs() -> str:
    """The whole docs/run-settings.md page, deterministic."""
    out = [
        "# Run settings: every method on every suite, under both protocols",
        "",
        f"Generated by `{DOCS_COMMAND}` from the suite files, the override files, the method",
        "registry and `benchmarks/tasks/published_settings.csv`; do not edit by hand (the test",
        "`tests/test_protocols.py::test_docs_page_is_current` fails when it is stale).",
        "",
        "- `controlled`: one protocol for every method on a suite (data, steps, evaluation episodes,",
        "  seeds from the suite file); hyperparameters from the published table where it has a row.",
        "- `published`: each method as its authors ran it (hyperparameters, steps, preprocessing,",
        "  evaluation); refused where no published run exists.",
        "- Sources: `paper:` a paper's table/section/equation; `code:` the authors' repository and file",
        "  or README command; `derived:` a value computed from published ones (stated how); `default:<Class>`",
        "  the config dataclass default (the paper defaults of `algorithms/<method>.py`); `suite:` a suite",
        "  or override file of this project; `controlled:` the suite's controlled block; `preset:` a",
        "  registry preset; `user:` the command line; `ours:` this project's choice with its reason.",
        "",
        "Print one resolved run with `modebench config --algo NAME --task SUITE/TASK [--protocol P] [--json]`.",
        "",
        "## Decisions",
        "",
        *[f"- `{name}`: {entry.protocol_note}" for name, entry in METHODS.items() if entry.protocol_note],
        "- Per-method preprocessing (`data.*` rows) and run settings (`run.*` rows) apply under `published`",
        "  only; `controlled` gives every method the suite's. Hyperparameter rows apply under both.",
        "- Under `published`, a data or run setting without a row is the suite's, and its source says",
        "  `no published value`; a method without any row on a task is refused there.",
        "",
        "Published rows that do not apply, and why:",
        "",
        *[f"- every method `{key}`: {reason}" for key, reason in sorted(INFORMATIONAL_KEYS.items())],
        *[f"- {name} `{key}`: {reason}" for name, entry in sorted(METHODS.items())
          for key, reason in sorted(entry.published_not_applicable.items())],
        "",
        "Methods whose published protocol is their own rows only:",
        "",
        *[f"- {name}: {entry.own_protocol}" for name, entry in sorted(METHODS.items()) if entry.own_protocol],
        "",
        "Suites without any published run:",
        "",
        *[f"- {suite}: {reason}" for suite, reason in sorted(NO_PUBLISHED_RUN.items())],
        "",
        "## Source conflicts",
        "",
        "Where two primary sources (a paper's table and the authors' run script, a paper and its code) give",
        "different values for a setting a method here takes, the override file records the other value as",
        "data (`conflicts: {KEY: {other, source, why}}` in `benchmarks/tasks/suites/*_overrides.yaml`) and",
        "`modebench config` prints it beside the value used. Every such conflict:",
        "",
        *conflict_table(),
        "",
        "Not conflicts of one method: LOM's paper values against its code's (beta, C, learning rates, ...) are",
        "two methods, `lom` (the paper) and `lom-code` (the code); DROL's run script runs its DROL(16) section on",
        "D4RL antmaze-large-* with bc_coef 0.1 where Table 3's DROL(16) column gives 0.03, a column no method",
        "here runs.",
        "",
    ]
    for suite in suite_names():
        block = controlled_block(suite)
        out.append(f"## {suite}")
        out.append("")
        out.append(f"Controlled: {block['steps']} steps, {block['seeds']} seeds, evaluation "
                   f"{'every ' + str(block['eval_every']) + ' steps' if block.get('eval_every') else 'at the end'}"
                   + (f". {block['note']}" if block.get("note") else "") + ".")
        out.append("")
        tasks = list(load_suite(suite).values())
        bases = {name: _resolutions(name, tasks) for name in sorted(METHODS) if base_method(name) == name}
        for method in sorted(METHODS):
            base = base_method(method)
            out.extend(_pair_section(method, suite, None if base == method else bases[base]))
    return "\n".join(out).rstrip() + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m modebench.benchmarks.run.protocols", description=__doc__.splitlines()[0])
    parser.add_argument("--write-docs", action="store_true", help=f"regenerate {DOCS_PAGE.name}")
    parser.add_argument("--check-docs", action="store_true", help=f"exit 1 when {DOCS_PAGE.name} is stale")
    args = parser.parse_args(argv)
    text = render_docs()
    if args.write_docs:
        DOCS_PAGE.parent.mkdir(parents=True, exist_ok=True)
        DOCS_PAGE.write_text(text)
        print(f"wrote {DOCS_PAGE} ({len(text.splitlines())} lines)")
    elif args.check_docs:
        if not DOCS_PAGE.exists() or DOCS_PAGE.read_text() != text:
            print(f"{DOCS_PAGE} is stale; run `{DOCS_COMMAND}`", file=sys.stderr)
            return 1
    else:
        sys.stdout.write(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
