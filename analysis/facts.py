"""Method and paper facts for tables and plots, read as plain data from two files:

- algorithms/methods.yaml: every method and preset (display name, colour, policy class, the name it
  has in the papers' tables), the same file the method registry is built from. Analysis may not
  import the registry or a method (it reads only the results store), so it reads the file itself.
- results/reference/tables.yaml: how the papers' published tables are read (score tables and
  layouts, task mappings, ablation variants, NLL-gap and profile tables, sweep figures).
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Any

import yaml

PROJECT_DIR = Path(__file__).resolve().parents[1]  # the folder that holds algorithms/, analysis/, results/
REFERENCE_DIR = PROJECT_DIR / "results" / "reference"
TABLES_FILE = REFERENCE_DIR / "tables.yaml"
METHODS_FILE = PROJECT_DIR / "algorithms" / "methods.yaml"
FALLBACK_COLOR = "#999999"  # a method the methods file does not know (a store from newer code)


def _read(path: Path) -> dict[str, Any]:
    if not path.exists():
        raise FileNotFoundError(f"{path} is missing (restore it from git)")
    return yaml.safe_load(path.read_text()) or {}


def method_facts(declared: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """algorithms/methods.yaml's entries flattened in table order (each method, then its presets):
    name -> {display, color, policy_class, paper_name (its name in the published tables, if any),
    base (presets only: the method it varies)}."""
    out: dict[str, dict[str, Any]] = {}
    for name, spec in declared.items():
        out[name] = {k: spec[k] for k in ("display", "color", "policy_class")}
        if "published_as" in spec:
            out[name]["paper_name"] = spec["published_as"]
        for preset, p in (spec.get("presets") or {}).items():
            out[preset] = {"display": p["display"], "color": p["color"], "base": name,
                           "policy_class": p.get("policy_class", spec["policy_class"])}
    return out


@lru_cache(maxsize=1)
def facts() -> dict[str, Any]:
    """The reference tables file with `methods` from the methods file (cached: read-only data)."""
    return {**_read(TABLES_FILE), "methods": method_facts(_read(METHODS_FILE))}


def methods() -> dict[str, dict[str, Any]]:
    """Every known method in table order: name -> its facts."""
    return facts()["methods"]


def display(method: str) -> str:
    return methods().get(method, {}).get("display", method)


def color(method: str) -> str:
    return methods().get(method, {}).get("color", FALLBACK_COLOR)


def paper_to_ours() -> dict[str, str]:
    """Paper method name (as in the score tables) -> our method name."""
    return {f["paper_name"]: name for name, f in methods().items() if "paper_name" in f}


def policy_groups() -> dict[str, list[str]]:
    """DROL Table 4's column groups: label -> our methods in that policy class, in table order."""
    labels = facts()["policy_classes"]
    return {label: [m for m, f in methods().items() if f.get("policy_class") == key] for key, label in labels.items()}
