"""Typed, strictly loaded configuration dataclasses.

Every method has a config dataclass with the paper's defaults (a docstring-style comment per
field). Overrides come from suite data files and the command line; an unknown key is an
error that lists the valid ones, never silently ignored.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import typing
from collections.abc import Mapping
from typing import Any, TypeVar

T = TypeVar("T")


class ConfigError(ValueError):
    """A configuration value or key is invalid; the message names it and the fix."""


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
    if origin is typing.Literal:
        for allowed in args:
            if value == allowed or (isinstance(value, str) and str(allowed) == value):
                return allowed
        raise ConfigError(f"{name}: {value!r} is not one of {list(args)}")
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


def resolve_aliases(cls: type, values: Mapping[str, Any]) -> dict[str, Any]:
    """`values` with `cls.ALIASES` renamed to field names (e.g. the paper's `lambda` for GEM's `lcb_lambda`)."""
    aliases = getattr(cls, "ALIASES", {})
    return {aliases.get(k, k): v for k, v in values.items()}


def from_dict(cls: type[T], values: Mapping[str, Any], *, base: T | None = None, what: str = "config") -> T:
    """Build `cls` from `values` on top of `base` (or the defaults); unknown keys are errors."""
    types_ = _field_types(cls)
    values = resolve_aliases(cls, values)
    unknown = sorted(set(values) - set(types_))
    if unknown:
        raise ConfigError(
            f"unknown {what} key(s) {unknown} for {cls.__name__}; valid keys: {sorted(types_)}"
        )
    current = dataclasses.asdict(base) if base is not None else {}
    current.update({k: coerce(v, types_[k], k) for k, v in values.items()})
    try:
        return cls(**current)
    except TypeError as err:
        raise ConfigError(f"{cls.__name__}: {err}") from err


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
