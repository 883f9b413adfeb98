"""Typed, strictly loaded configuration dataclasses.

Every method has a config dataclass with the paper's defaults. Each field declares, once, its
one-line help and what values it takes, with `field(default, help=..., choices=..., ge=...,
gt=..., le=..., lt=...)`; `Literal[...]` annotations are choices too. `check_fields` (run by
`Checked.__post_init__` for every config and knobs class) enforces them all, so a class only
writes `check()` for rules that involve several fields. Overrides come from suite data files
and the command line; an unknown key is an error that lists the valid ones, never silently
ignored.
"""

from __future__ import annotations

import dataclasses
import difflib
import hashlib
import json
import math
import typing
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")


class ConfigError(ValueError):
    """A configuration value or key is invalid; the message names it and the fix."""


# Upper bounds of the fields whose value sizes an allocation, so that a slip such as `--knob
# N=100000000` or `--set batch_size=1e9` is one ConfigError line instead of an out-of-memory crash
# minutes into a run. Each is far above every paper's and suite's value (in brackets) and sized so
# one such allocation at paper sizes stays within a few GiB.
MAX_BATCH = 1 << 16  # minibatch rows [256-1024]; 65536 x a 4 x 512 MLP's activations ~ 0.5 GiB
MAX_WIDTH = 1 << 13  # MLP layer width [256-1024]; one 8192 x 8192 float32 layer + Adam state ~ 1 GiB
MAX_ENSEMBLE = 64  # critic ensemble members [1-10]: each a full critic
MAX_COMPONENTS = 1024  # mixture components or modes [5-20]: heads of width x components
MAX_CANDIDATES = 1 << 16  # candidates or samples per state [16-2048]: a candidates x batch x width activation each


def field(default: Any = dataclasses.MISSING, *, help: str, choices: Iterable[Any] | None = None,
          ge: float | None = None, gt: float | None = None, le: float | None = None, lt: float | None = None,
          default_factory: Any = dataclasses.MISSING) -> Any:
    """A dataclass field with its one-line help and the values it takes (bounds apply to each
    element of a tuple field, which must also be non-empty)."""
    bounds = {k: v for k, v in (("ge", ge), ("gt", gt), ("le", le), ("lt", lt)) if v is not None}
    metadata = {"help": help, "choices": tuple(choices) if choices is not None else None, "bounds": bounds}
    return dataclasses.field(default=default, default_factory=default_factory, metadata=metadata)


def field_help(f: dataclasses.Field) -> str:
    return f.metadata.get("help", "")


def field_choices(f: dataclasses.Field, annotation: Any) -> tuple[Any, ...] | None:
    """The declared choices, or a Literal annotation's values (also inside `X | None`)."""
    if f.metadata.get("choices") is not None:
        return f.metadata["choices"]
    for hint in [annotation, *typing.get_args(annotation)]:
        if typing.get_origin(hint) is typing.Literal:
            return typing.get_args(hint)
    return None


def describe_values(f: dataclasses.Field, annotation: Any) -> str:
    """`one of [..]`, `in (0, 1]`, `>= 1` ... ('' when any value of the type goes)."""
    choices = field_choices(f, annotation)
    if choices is not None:
        return f"one of {list(choices)}"
    bounds = f.metadata.get("bounds", {})
    low = ("(", bounds["gt"]) if "gt" in bounds else ("[", bounds["ge"]) if "ge" in bounds else None
    high = (bounds["lt"], ")") if "lt" in bounds else (bounds["le"], "]") if "le" in bounds else None
    if low and high:
        return f"in {low[0]}{low[1]}, {high[0]}{high[1]}"
    if low:
        return f"{'>' if low[0] == '(' else '>='} {low[1]}"
    if high:
        return f"{'<' if high[1] == ')' else '<='} {high[0]}"
    return ""


def _within(value: float, bounds: Mapping[str, float]) -> bool:
    return (("ge" not in bounds or value >= bounds["ge"]) and ("gt" not in bounds or value > bounds["gt"])
            and ("le" not in bounds or value <= bounds["le"]) and ("lt" not in bounds or value < bounds["lt"]))


def _allows_none(annotation: Any) -> bool:
    return annotation is type(None) or type(None) in typing.get_args(annotation)


def check_fields(config: Any) -> None:
    """The one checker of declared field values: choices, bounds, whole numbers for int fields,
    finite numbers for float fields, non-empty tuples; ConfigError naming the field."""
    hints = typing.get_type_hints(type(config))
    for f in dataclasses.fields(config):
        value, hint = getattr(config, f.name), hints[f.name]
        if value is None:
            if not _allows_none(hint):
                raise ConfigError(f"{f.name} must be set, got None")
            continue
        wanted = describe_values(f, hint)
        choices = field_choices(f, hint)
        if choices is not None:
            if value not in choices:
                raise ConfigError(f"{f.name} must be {wanted}, got {value!r}")
            continue
        items = list(value) if isinstance(value, (tuple, list)) else [value]
        if isinstance(value, (tuple, list)) and not items:
            raise ConfigError(f"{f.name} must be a non-empty list, got {value!r}")
        base = [h for h in [hint, *typing.get_args(hint)] if h in (int, float)]
        for item in items:
            if isinstance(item, bool) or not isinstance(item, (int, float)):
                if base or f.metadata.get("bounds"):
                    raise ConfigError(f"{f.name} must be a{'n integer' if int in base else ' number'}, got {value!r}")
                continue
            if int in base and float not in base and not isinstance(item, int):
                raise ConfigError(f"{f.name} must be an integer, got {value!r}")
            if not math.isfinite(item):
                raise ConfigError(f"{f.name} must be a finite number, got {value!r}")
            if not _within(item, f.metadata.get("bounds", {})):
                each = " (each)" if isinstance(value, (tuple, list)) else ""
                raise ConfigError(f"{f.name}{each} must be {wanted}, got {value!r}")


class Checked:
    """Base of every config and knobs dataclass: the declared values are checked on construction,
    then the class's own `check()` (rules that involve several fields)."""

    def __post_init__(self) -> None:
        check_fields(self)
        self.check()

    def check(self) -> None:
        """Rules across fields; none by default."""


def _field_types(cls: type) -> dict[str, Any]:
    hints = typing.get_type_hints(cls)
    return {f.name: hints[f.name] for f in dataclasses.fields(cls)}


def coerce(value: Any, annotation: Any, name: str) -> Any:
    """Convert `value` (possibly a command-line string) to the field's annotated type."""
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin is typing.Union or (origin is not None and str(origin) == "<class 'types.UnionType'>"):
        if type(None) in args and (value is None or (isinstance(value, str) and value.lower() == "none")):
            return None
        for arg in args:
            if arg is type(None):
                continue
            try:
                return coerce(value, arg, name)
            except (ConfigError, ValueError, TypeError):
                continue
        raise ConfigError(f"{name}: cannot read {value!r} as {annotation}")
    if origin is typing.Literal:  # the choice itself is checked by check_fields
        return next((allowed for allowed in args if value == allowed or (isinstance(value, str) and str(allowed) == value)), value)
    if origin in (tuple, list):
        if isinstance(value, str):
            value = [v for v in value.replace("(", "").replace(")", "").split(",") if v.strip()]
        inner = args[0] if args else Any
        items = [coerce(v, inner, name) for v in value]
        return tuple(items) if origin is tuple else items
    if annotation is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "1", "yes", "on"):
            return True
        if isinstance(value, str) and value.lower() in ("false", "0", "no", "off"):
            return False
        if isinstance(value, int) and value in (0, 1):
            return bool(value)
        raise ConfigError(f"{name}: {value!r} is not a boolean (use true/false)")
    if annotation is int:
        if isinstance(value, bool):
            raise ConfigError(f"{name}: {value!r} is not an integer")
        if isinstance(value, float) and value.is_integer():
            return int(value)
        if isinstance(value, str):
            try:
                return int(float(value)) if float(value).is_integer() else int(value)
            except ValueError as err:
                raise ConfigError(f"{name}: {value!r} is not an integer") from err
        if isinstance(value, int):
            return value
        raise ConfigError(f"{name}: {value!r} is not an integer")
    if annotation is float:
        try:
            return float(value)
        except (TypeError, ValueError) as err:
            raise ConfigError(f"{name}: {value!r} is not a number") from err
    if annotation is str:
        if not isinstance(value, str):
            raise ConfigError(f"{name}: {value!r} is not a string")
        return value
    return value


def close_matches(word: str, options: Iterable[str]) -> str:
    """'; did you mean X?' for a misspelt name (difflib), '' when nothing is close."""
    found = difflib.get_close_matches(str(word), [str(o) for o in options], n=3, cutoff=0.6)
    return f"; did you mean {' or '.join(found)}?" if found else ""


def check_keys(values: Mapping[str, Any], allowed: Iterable[str], what: str = "", where: str = "") -> None:
    """The one unknown-key check of every strict loader (config and knobs dataclasses, suite files,
    grid files): one line naming the unknown keys, where they are and the valid keys."""
    unknown = sorted(set(values) - set(allowed))
    if unknown:
        prefix = f"{where}: " if where else ""
        raise ConfigError(f"{prefix}unknown {what + ' ' if what else ''}key(s) {unknown}; valid keys: {sorted(allowed)}")


def load_mapping(path: Path, allowed: Iterable[str], what: str) -> dict[str, Any]:
    """A YAML data file (suite, overrides, grid) whose top level is a mapping with known keys."""
    import yaml  # here, not at the top: `modebench --help` imports this module and needs no YAML

    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as err:
        raise ConfigError(f"{what} {path}: not valid YAML ({str(err).splitlines()[0]})") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{what} {path}: expected a mapping at the top level, got {type(raw).__name__}")
    check_keys(raw, allowed, where=f"{what} {path}")
    return raw


def resolve_aliases(cls: type, values: Mapping[str, Any]) -> dict[str, Any]:
    """`values` with `cls.ALIASES` renamed to field names (e.g. the paper's `lambda` for GEM's `lcb_lambda`)."""
    aliases = getattr(cls, "ALIASES", {})
    return {aliases.get(k, k): v for k, v in values.items()}


def from_dict(cls: type[T], values: Mapping[str, Any], *, base: T | None = None, what: str = "config") -> T:
    """Build `cls` from `values` on top of `base` (or the defaults); unknown keys are errors."""
    types_ = _field_types(cls)
    values = resolve_aliases(cls, values)
    check_keys(values, types_, what, where=cls.__name__)
    current = dataclasses.asdict(base) if base is not None else {}
    current.update({k: coerce(v, types_[k], k) for k, v in values.items()})
    try:
        built = cls(**current)
    except TypeError as err:
        raise ConfigError(f"{cls.__name__}: {err}") from err
    if not isinstance(built, Checked):  # a plain dataclass (e.g. DataConfig): its Literal choices, finite numbers
        check_fields(built)
    return built


def to_dict(config: Any) -> dict[str, Any]:
    out = dataclasses.asdict(config)
    return {k: list(v) if isinstance(v, tuple) else v for k, v in out.items()}


def config_hash(payload: Mapping[str, Any]) -> str:
    """Stable short hash of a JSON-serialisable mapping (run identity, record keys)."""
    text = json.dumps(payload, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def parse_assignments(items: list[str] | None, what: str = "--set") -> dict[str, str]:
    """Parse `key=value` command-line assignments."""
    out: dict[str, str] = {}
    for item in items or []:
        if "=" not in item:
            raise ConfigError(f"{what} {item!r}: expected KEY=VALUE")
        key, value = item.split("=", 1)
        out[key.strip()] = value.strip()
    return out


def require(condition: bool, message: str) -> None:
    """Validation helper for __post_init__: raise ConfigError with the message when violated."""
    if not condition:
        raise ConfigError(message)
