"""Method and paper facts for tables and plots, read from results/reference/methods.yaml.

Analysis may not import the method registry (it reads only the results store), so the names,
display names, colours, policy classes, published-table mapping, ablation variants and sweep
figures it needs live in that one data file; tests check it names every registered method.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Any

import yaml

REFERENCE_DIR = Path(__file__).resolve().parents[1] / "results" / "reference"
FACTS_FILE = REFERENCE_DIR / "methods.yaml"
FALLBACK_COLOR = "#999999"  # a method the facts file does not know (a store from newer code)


@lru_cache(maxsize=1)
def facts() -> dict[str, Any]:
    """The parsed facts file (cached: it is read-only data)."""
    if not FACTS_FILE.exists():
        raise FileNotFoundError(f"method facts file {FACTS_FILE} is missing (restore it from git)")
    return yaml.safe_load(FACTS_FILE.read_text())


def methods() -> dict[str, dict[str, Any]]:
    """Every known method in table order: name -> its facts."""
    return facts()["methods"]


def display(method: str) -> str:
    return methods().get(method, {}).get("display", method)


def color(method: str) -> str:
    return methods().get(method, {}).get("color", FALLBACK_COLOR)


def base_of(method: str) -> str:
    """The method a preset varies; a base method (or an unknown one) is its own base."""
    return methods().get(method, {}).get("base", method)


def paper_to_ours() -> dict[str, str]:
    """Paper method name (as in the score tables) -> our method name."""
    return {f["paper_name"]: name for name, f in methods().items() if "paper_name" in f}


def policy_groups() -> dict[str, list[str]]:
    """DROL Table 4's column groups: label -> our methods in that policy class, in table order."""
    labels = facts()["policy_classes"]
    return {label: [m for m, f in methods().items() if f.get("policy_class") == key] for key, label in labels.items()}
