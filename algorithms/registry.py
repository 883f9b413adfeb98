"""Method registry: every method and preset of algorithms/methods.yaml, by name.

A method is declared once, in algorithms/methods.yaml: its class (`module:Class`), description,
display name, colour, policy class, paper, and its presets. A preset is a named variant of a method
(a paper ablation, a code-faithful configuration): the same class with fixed config and knob
overrides. This module builds `METHODS` from that file; the analysis reads the same file as plain
data (analysis/facts.py). Classes are imported lazily so that `modebench --help` stays fast and one
method's optional dependencies never block another. This is the project's one dynamic import
(`importlib.import_module` of a `class` written in methods.yaml, never a computed name);
tests/test_imports.py allows it here and nowhere else.
Adding a method is one file in algorithms/ and one entry in methods.yaml.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from modebench.algorithms.base import Algorithm
from modebench.algorithms.config import ConfigError, check_keys, close_matches

METHODS_FILE = Path(__file__).resolve().parent / "methods.yaml"
REQUIRED = ("class", "description", "display", "color", "policy_class")  # every method's keys
PROTOCOL = ("own_protocol", "published_not_applicable", "protocol_note")  # the published protocol's facts
OPTIONAL = ("paper", "published_as", "presets", *PROTOCOL)
PRESET_REQUIRED = ("description", "display", "color")  # a preset inherits class and policy_class
PRESET_OPTIONAL = ("config", "knobs", "policy_class", *PROTOCOL)


class UnknownMethodError(KeyError):
    def __str__(self) -> str:  # KeyError quotes its message; show it plainly
        return str(self.args[0])


@dataclass(frozen=True)
class MethodEntry:
    """Where a method's class lives, plus fixed config/knob overrides for presets."""

    target: str  # "module:ClassName"
    config: dict[str, Any] = field(default_factory=dict)
    knobs: dict[str, Any] = field(default_factory=dict)
    description: str = ""
    base: str | None = None  # the method a preset varies (None: a method of its own)
    own_protocol: str = ""  # why its published protocol is its own rows only ("" : it takes its base's too)
    published_not_applicable: dict[str, str] = field(default_factory=dict)  # published-table key -> why it cannot apply
    protocol_note: str = ""  # what docs/run-settings.md says about its published rows

    @property
    def is_base(self) -> bool:
        """A method's own entry, not a preset."""
        return self.base is None

    def load(self) -> type[Algorithm]:
        module_name, class_name = self.target.split(":")
        return getattr(importlib.import_module(module_name), class_name)


def _tuples(values: dict[str, Any]) -> dict[str, Any]:
    """YAML lists as tuples: the config dataclasses' sequence fields are tuples (hidden_dims)."""
    return {k: tuple(v) if isinstance(v, list) else v for k, v in values.items()}


def _protocol_facts(spec: dict[str, Any]) -> dict[str, Any]:
    return {"own_protocol": spec.get("own_protocol", ""), "protocol_note": spec.get("protocol_note", ""),
            "published_not_applicable": dict(spec.get("published_not_applicable") or {})}


def _check_entry(spec: Any, required: tuple[str, ...], optional: tuple[str, ...], where: str) -> None:
    """One ConfigError line for an entry that is not a mapping, has an unknown key or lacks a required one."""
    if not isinstance(spec, dict):
        raise ConfigError(f"{where}: give a mapping with the keys {list(required)}")
    check_keys(spec, required + optional, where=where)
    missing = [k for k in required if k not in spec]
    if missing:
        raise ConfigError(f"{where}: missing key(s) {missing}")


def load_methods(path: Path = METHODS_FILE) -> dict[str, MethodEntry]:
    """Every method and preset of the methods file, in its order (each method, then its presets);
    one ConfigError line for a malformed entry."""
    raw = yaml.safe_load(path.read_text()) or {}
    entries: dict[str, MethodEntry] = {}

    def add(name: str, entry: MethodEntry) -> None:
        if name in entries:
            raise ConfigError(f"{path}: method {name!r} is declared twice")
        entries[name] = entry

    for name, spec in raw.items():
        where = f"{path}: method {name!r}"
        _check_entry(spec, REQUIRED, OPTIONAL, where)
        if len(str(spec["class"]).split(":")) != 2:
            raise ConfigError(f"{where}: class {spec['class']!r} must be module:Class")
        add(name, MethodEntry(spec["class"], description=spec["description"], **_protocol_facts(spec)))
        for preset, overrides in (spec.get("presets") or {}).items():
            _check_entry(overrides, PRESET_REQUIRED, PRESET_OPTIONAL, f"{path}: preset {preset!r} of {name!r}")
            add(preset, MethodEntry(spec["class"], _tuples(overrides.get("config") or {}), _tuples(overrides.get("knobs") or {}),
                                    overrides["description"], base=name, **_protocol_facts(overrides)))
    return entries


METHODS: dict[str, MethodEntry] = load_methods()


def method_names() -> list[str]:
    return sorted(METHODS)


def get_method(name: str) -> MethodEntry:
    try:
        return METHODS[name]
    except KeyError:
        raise UnknownMethodError(
            f"unknown method {name!r}{close_matches(name, METHODS)}; registered methods: {', '.join(method_names())}"
        ) from None


def base_method(name: str) -> str:
    """The method a preset varies (e.g. 'gem-no-pw' -> 'gem'); a method is its own base."""
    return get_method(name).base or name
