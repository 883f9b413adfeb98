"""The papers' published numbers (results/reference/*.csv) and the map from our names to theirs
(described in results/reference/tables.yaml; our methods' names there: algorithms/methods.yaml).

Every per-dataset score table is read into one long frame (`published_scores`) with the
paper's method name, our method name where we implement that method, the dataset id as the
paper prints it, score and std. Our tasks map to those dataset ids by `reference_id`: the task
name (after `suite/`) or the dataset name when it IS a published dataset id, an OGBench bare
`...-singletask-v0` id to the paper's default task, or an entry of the facts file's `task_aliases`. Nothing maps
by resemblance: Minari's regenerated datasets (e.g. mujoco/halfcheetah/medium-v0) are other
data and must never be set beside D4RL numbers, and toy tasks have no published numbers.

Each published number's normaliser (D4RL's reference returns, OGBench success rate, a paper's raw
average) comes from results/reference/normalisers.yaml (`paper_normaliser`), per table and dataset
id: tables print a paper number beside ours as comparable only when the normalisers agree.
"""

from __future__ import annotations

import re
from functools import lru_cache

import pandas as pd
import yaml
from modebench.analysis.facts import REFERENCE_DIR, facts, paper_to_ours

NORMALISERS_FILE = REFERENCE_DIR / "normalisers.yaml"

RECREATION_CAVEAT = ("Tasks on Minari's D4RL/* datasets are compared with the paper's D4RL numbers; Minari re-created "
                     "those datasets and environments, so expect differences that are not the method's.")


@lru_cache(maxsize=1)
def _recreations() -> list[tuple[re.Pattern, str]]:
    return [(re.compile(r["pattern"]), r["template"]) for r in facts()["minari_recreations"]]


def minari_recreation(dataset: str | None) -> str | None:
    """The D4RL id a Minari D4RL/* dataset re-creates, or None."""
    for pattern, template in _recreations():
        match = pattern.match(dataset or "")
        if match:
            return template.format(*match.groups())
    return None


def read_reference(name: str) -> pd.DataFrame:
    path = REFERENCE_DIR / f"{name}.csv"
    if not path.exists():
        raise FileNotFoundError(f"published table {path} is missing (see results/reference/README.md)")
    return pd.read_csv(path)


@lru_cache(maxsize=1)
def published_scores() -> pd.DataFrame:
    """All per-dataset published scores: table, label, dataset_id, paper_method, method, score, std."""
    frames = []
    for table, spec in facts()["score_tables"].items():
        raw = read_reference(table)
        frames.append(pd.DataFrame({
            "table": table,
            "label": spec["label"],
            "dataset_id": raw[spec["dataset_column"]].astype(str),
            "paper_method": raw["method"].astype(str) if "method" in raw else spec["method"],
            "score": pd.to_numeric(raw[spec["score_column"]], errors="coerce"),
            "std": pd.to_numeric(raw[spec["std_column"]], errors="coerce") if "std_column" in spec else float("nan"),
        }))
    out = pd.concat(frames, ignore_index=True)
    out["method"] = out["paper_method"].map(paper_to_ours())
    return out


@lru_cache(maxsize=1)
def _known_ids() -> frozenset[str]:
    return frozenset(published_scores()["dataset_id"])


@lru_cache(maxsize=1)
def _ogbench_defaults() -> dict[str, str]:
    """OGBench bare ids (`env-singletask-v0`) -> the paper's default task (rows marked (*))."""
    table = read_reference(facts()["ogbench_defaults"])
    out = {}
    for task in table.loc[table["default_task"].astype(str).str.lower() == "true", "task"].unique():
        head, _, tail = task.rpartition("-task")
        version = tail.split("-", 1)[1] if "-" in tail else "v0"
        out[f"{head}-{version}"] = task
    return out


def reference_id(task: str, dataset: str | None = None) -> str | None:
    """The published dataset id our task corresponds to, or None (toy and unknown tasks)."""
    aliases = facts()["task_aliases"]
    if task in aliases:
        return aliases[task]
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
    layouts = facts()["layouts"]
    for name in layouts.get(layout, layouts["gem"]):
        row = hits[hits["table"] == name]
        if not row.empty and pd.notna(row["score"].iloc[0]):
            return float(row["score"].iloc[0]), float(row["std"].iloc[0]), str(row["label"].iloc[0])
    return None


@lru_cache(maxsize=1)
def _normaliser_rules() -> dict[str, list[tuple[re.Pattern, str, str]]]:
    if not NORMALISERS_FILE.exists():
        raise FileNotFoundError(f"published normalisers file {NORMALISERS_FILE} is missing (restore it from git)")
    raw = yaml.safe_load(NORMALISERS_FILE.read_text()) or {}
    return {table: [(re.compile(r["pattern"]), str(r["kind"]), str(r["source"])) for r in rules] for table, rules in raw.items()}


def paper_normaliser(label: str, dataset_id: str) -> tuple[str, str]:
    """(kind, source) of the normaliser behind the published number that `published_value`
    returned with `label` for `dataset_id`; ("unknown", why) where normalisers.yaml has no rule."""
    tables = [name for name, spec in facts()["score_tables"].items() if spec["label"] == label]
    for table in tables:
        for pattern, kind, source in _normaliser_rules().get(table, []):
            if pattern.search(dataset_id):
                return kind, source
    return "unknown", f"no rule for {label} in {NORMALISERS_FILE.name}"
