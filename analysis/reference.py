"""The papers' published numbers (results/reference/*.csv) and the map from our names to theirs.

Every per-dataset score table is read into one long frame (`published_scores`) with the
paper's method name, our registry name where we implement that method, the dataset id as the
paper prints it, score and std. Our tasks map to those dataset ids by `reference_id`: the task
name (after `suite/`) or the dataset name when it IS a published dataset id, an OGBench bare
`...-singletask-v0` id to the paper's default task, or an entry of `TASK_ALIASES`. Nothing maps
by resemblance: Minari's regenerated datasets (e.g. mujoco/halfcheetah/medium-v0) are other
data and must never be set beside D4RL numbers, and toy tasks have no published numbers.
"""

from __future__ import annotations

import re
from functools import lru_cache
from pathlib import Path

import pandas as pd

from analysis.records import REPO_ROOT

REFERENCE_DIR = REPO_ROOT / "results" / "reference"

# paper method name -> our registry name (only methods this suite implements)
PAPER_TO_OURS = {
    "GEM": "gem",
    "IQL": "iql",
    "FQL": "fql",
    "BC": "bc",
    "LOM": "lom",
    "ISEP": "isep",
    "ISEP-FM": "isep-fm",
    "DROL(16)": "drol",  # our drol trains with the fixed default K = 16 (DROL's "DROL(16)" column)
}

# our task id -> the paper's dataset id, for tasks whose name is not the dataset id itself
TASK_ALIASES: dict[str, str] = {}

# Minari's D4RL namespace re-creates D4RL's datasets (same tasks, re-collected or converted data, newer
# simulators): mapped to the paper's id, with a caveat printed under every table that uses one.
# Minari's mujoco/* datasets are NEW data and are never mapped (SPEC, "Protocol facts").
MINARI_RECREATIONS = [
    (re.compile(r"^D4RL/antmaze/(umaze|umaze-diverse|medium-play|medium-diverse|large-play|large-diverse)-v\d+$"), "antmaze-{0}-v2"),
    (re.compile(r"^D4RL/pointmaze/(umaze|medium|large)-v\d+$"), "maze2d-{0}-v1"),
    (re.compile(r"^D4RL/(pen|door|hammer|relocate)/(human|cloned|expert)-v\d+$"), "{0}-{1}-v1"),
    (re.compile(r"^D4RL/kitchen/(complete|partial|mixed)-v\d+$"), "kitchen-{0}-v0"),
]
RECREATION_CAVEAT = ("Tasks on Minari's D4RL/* datasets are compared with the paper's D4RL numbers; Minari re-created "
                     "those datasets and environments, so expect differences that are not the method's.")


def minari_recreation(dataset: str | None) -> str | None:
    """The D4RL id a Minari D4RL/* dataset re-creates, or None."""
    for pattern, template in MINARI_RECREATIONS:
        match = pattern.match(dataset or "")
        if match:
            return template.format(*match.groups())
    return None

# per-dataset score tables: file -> (label, dataset-id column, score column, std column)
SCORE_TABLES = {
    "gem_table1": ("GEM Table 1", "dataset_id", "score", None),
    "gem_table4": ("GEM Table 4 (N=1024)", "dataset_id", "score_mean", "score_std"),
    "lom_table1": ("LOM Table 1", "dataset_id", "score", "std"),
    "lom_table2_fetch": ("LOM Table 2", "task", "score", "std"),
    "isep_tables": ("ISEP Tables 1-2", "dataset_id", "score", "std"),
    "drol_table4": ("DROL Table 4", "task", "score", "std"),
}

# which published table a layout prefers for a (method, dataset) pair, first match wins
PREFERENCE = {
    "gem": ["gem_table1", "lom_table1", "isep_tables", "drol_table4", "lom_table2_fetch"],
    "lom": ["lom_table1", "lom_table2_fetch", "gem_table1", "isep_tables", "drol_table4"],
    "drol": ["drol_table4", "gem_table1", "lom_table1", "isep_tables", "lom_table2_fetch"],
    "isep": ["isep_tables", "gem_table1", "lom_table1", "drol_table4", "lom_table2_fetch"],
}


def read_reference(name: str) -> pd.DataFrame:
    path = REFERENCE_DIR / f"{name}.csv"
    if not path.exists():
        raise FileNotFoundError(f"published table {path} is missing (see results/reference/README.md)")
    return pd.read_csv(path)


@lru_cache(maxsize=1)
def published_scores() -> pd.DataFrame:
    """All per-dataset published scores: table, label, dataset_id, paper_method, method, score, std."""
    frames = []
    for table, (label, id_col, score_col, std_col) in SCORE_TABLES.items():
        raw = read_reference(table)
        frames.append(pd.DataFrame({
            "table": table,
            "label": label,
            "dataset_id": raw[id_col].astype(str),
            "paper_method": raw["method"].astype(str) if "method" in raw else "GEM",
            "score": pd.to_numeric(raw[score_col], errors="coerce"),
            "std": pd.to_numeric(raw[std_col], errors="coerce") if std_col else float("nan"),
        }))
    out = pd.concat(frames, ignore_index=True)
    out["method"] = out["paper_method"].map(PAPER_TO_OURS)
    return out


@lru_cache(maxsize=1)
def _known_ids() -> frozenset[str]:
    return frozenset(published_scores()["dataset_id"])


@lru_cache(maxsize=1)
def _ogbench_defaults() -> dict[str, str]:
    """OGBench bare ids (`env-singletask-v0`) -> the paper's default task (rows marked (*))."""
    table = read_reference("drol_table4")
    out = {}
    for task in table.loc[table["default_task"].astype(str).str.lower() == "true", "task"].unique():
        head, _, tail = task.rpartition("-task")
        version = tail.split("-", 1)[1] if "-" in tail else "v0"
        out[f"{head}-{version}"] = task
    return out


def reference_id(task: str, dataset: str | None = None) -> str | None:
    """The published dataset id our task corresponds to, or None (toy and unknown tasks)."""
    if task in TASK_ALIASES:
        return TASK_ALIASES[task]
    name = task.split("/", 1)[1] if "/" in task else task
    known = _known_ids()
    for candidate in (name, dataset):
        if candidate and candidate in known:
            return candidate
        if candidate and candidate in _ogbench_defaults():
            return _ogbench_defaults()[candidate]
    recreated = minari_recreation(dataset)
    return recreated if recreated in known else None


def published_value(method: str, dataset_id: str | None, layout: str = "gem") -> tuple[float, float, str] | None:
    """(score, std, label) of the first preferred table that has our `method` on `dataset_id`."""
    if dataset_id is None:
        return None
    table = published_scores()
    hits = table[(table["method"] == method) & (table["dataset_id"] == dataset_id)]
    for name in PREFERENCE.get(layout, PREFERENCE["gem"]):
        row = hits[hits["table"] == name]
        if not row.empty and pd.notna(row["score"].iloc[0]):
            return float(row["score"].iloc[0]), float(row["std"].iloc[0]), str(row["label"].iloc[0])
    return None


def repo_path(path: Path) -> str:
    try:
        return str(path.resolve().relative_to(REPO_ROOT))
    except ValueError:
        return str(path)
