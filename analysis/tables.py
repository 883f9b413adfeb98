"""The papers' table layouts rebuilt from the results store, each beside the published numbers.

- `gem_layout`:  GEM Table 1 -- tasks x methods, mean ± std over seeds with n, per-section Sum
  and Avg rows, bold within 0.95 of the row's best; a paper / Δ column pair per method.
- `ablation_layouts`: GEM Table 5 (variant, score, Δ mean ± std over paired runs, audits,
  n pairs) and Table 6 (per-task Δ of each variant) -- paired on (task, seed).
- `drol_layout`: DROL Table 4 -- task-level, methods grouped by policy class, bold within 0.95
  of the row's best, one-step methods within 0.95 underlined, (*) default tasks, per-family
  averages (DROL Table 1).
- `lom_layout`: LOM Table 1 -- rows grouped by dataset type then environment, the highest
  mean bold.
- `aggregate_layout` / `improvement_layout`: IQM, median, mean, optimality gap with 95%
  stratified-bootstrap CIs, and P(X > Y) per suite (analysis/stats.py).

Every function takes `select_scores(...)` output (one row per run) and returns a `Table`;
`build_tables` writes them all as Markdown, LaTeX and CSV. Std is the sample std (ddof = 1)
over seeds; a cell with one seed prints no std.

What a cell holds and says (docs/reading-results.md):
- only runs of its protocol's own steps and evaluation episodes (records.by_length); the rest
  are listed in `left_out_runs`, never averaged in; the header line (`Table.about`) states the
  steps, episodes and that (n) counts runs;
- failed runs (non-finite score) are counted, '(2, 1 failed)', and left out of every statistic;
- bold / underline / significance marks only where every compared cell has >= 5 runs;
- † the cell mixes git commits, § a run froze a fit phase unconverged, ‡ numbers on different
  normalisers (a paper number on another normaliser than the row's gets no Δ); each table's
  notes explain the markers it shows, and count the damaged records of its protocol.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from modebench.analysis import facts, stats
from modebench.analysis.records import (
    NORMALISER_LABELS,
    UNKNOWN_NORMALISER,
    ScoreRule,
    by_length,
    damaged_in,
    describe_protocol,
    load_records,
    main_runs,
    method_order,
    protocols_in,
    select_scores,
    task_order,
    warn_incomplete,
)
from modebench.analysis.reference import (
    RECREATION_CAVEAT,
    minari_recreation,
    paper_normaliser,
    published_value,
    read_reference,
    reference_id,
)
from modebench.analysis.render import Cell, Table, mean_std, num, within
from modebench.benchmarks.store import iter_records

BOLD_RATIO = 0.95
# Bold, underline and significance marks need at least this many runs in every cell they compare
# (issue 24: P(X > Y) = 0.88 [0.88, 0.88] from 3 seeds was printed bold); with fewer, n is shown
# and no mark is set.
MIN_RUNS_FOR_MARKS = 5
# Footnote markers of a cell (each explained under the table when it appears)
MIXED_COMMITS = "†"
OTHER_NORMALISER = "‡"
UNCONVERGED_FIT = "§"


# ---------------------------------------------------------------------- per-task statistics


def failed(scores: pd.DataFrame) -> pd.Series:
    """Runs whose score is not a finite number, or whose record says status non_finite: failed
    runs, counted in their cell and left out of its statistics, never dropped silently."""
    status = scores["status"] if "status" in scores else pd.Series("ok", index=scores.index)
    return ~np.isfinite(pd.to_numeric(scores["score"], errors="coerce")) | status.eq("non_finite")


def finite_runs(scores: pd.DataFrame) -> pd.DataFrame:
    """The runs the statistics use: `scores` without its failed runs (see `failed`)."""
    return scores[~failed(scores)]


def task_stats(scores: pd.DataFrame, ddof: int = 1) -> pd.DataFrame:
    """suite, task, method -> mean, std (ddof) and n over the cell's finite runs, its failed runs,
    run length and episodes, whether its runs come from more than one commit or hold an
    unconverged fit phase, plus the published dataset id and the row's normaliser."""
    columns = ["suite", "task", "method", "mean", "std", "n", "failed", "steps", "episodes", "commits", "unconverged",
               "reference_id", "task_default", "normaliser"]
    if scores.empty:
        return pd.DataFrame(columns=columns)
    scores = scores.assign(_failed=failed(scores))
    ok = scores[~scores["_failed"]]
    keys = ["suite", "task", "method"]
    grouped = scores.groupby(keys, sort=False)
    out = grouped["_failed"].sum().rename("failed").astype(int).reset_index()
    good = ok.groupby(keys, sort=False)["score"]
    out = out.join(good.mean().rename("mean"), on=keys).join(good.count().rename("n"), on=keys)
    out = out.join(good.std(ddof=ddof).rename("std"), on=keys)
    out["n"] = out["n"].fillna(0).astype(int)
    for name, column in (("steps", "cell_steps"), ("episodes", "cell_episodes")):
        out[name] = grouped[column].first().to_numpy() if column in scores else np.nan
    commit = scores["commit"] if "commit" in scores else pd.Series(None, index=scores.index)
    out["commits"] = scores.assign(_c=commit).groupby(keys, sort=False)["_c"].nunique().to_numpy()
    fits = scores["unconverged_fits"] if "unconverged_fits" in scores else pd.Series("", index=scores.index)
    out["unconverged"] = scores.assign(_u=fits.fillna("").astype(bool)).groupby(keys, sort=False)["_u"].any().to_numpy()
    meta = scores.drop_duplicates("task").set_index("task")
    out["dataset"] = out["task"].map(meta["dataset"])
    out["task_default"] = out["task"].map(meta["task_default"]).fillna(False).astype(bool)
    out["reference_id"] = [reference_id(t, d if isinstance(d, str) else None) for t, d in zip(out["task"], out["dataset"])]
    out["normaliser"] = out["task"].map(normaliser_kinds(scores))
    for column in [c for c in scores if c.startswith("audit/")]:
        out[column] = out[keys].join(ok.groupby(keys, sort=False)[column].mean(), on=keys)[column].to_numpy()
    return out


def cell_text(r: Any, decimals: int) -> str:
    """'54.42 ± 1.20 (3)' for a cell of `task_stats`; failed runs counted inside the parentheses
    ('(2, 1 failed)'), then the cell's footnote markers."""
    n, bad = int(r.n), int(r.failed)
    if n == 0:
        text = f"failed ({bad})"
    else:
        text = mean_std(float(r.mean), float(r.std), n, decimals)
        if bad:
            text = text[:-1] + f", {bad} failed)"
    return text + cell_marks(r)


def cell_data(r: Any | None) -> dict[str, Any]:
    """A cell's numbers for a layout's CSV row (a `task_stats` row, or None for an empty cell)."""
    if r is None:
        return {"std": math.nan, "n": None, "failed": None, "steps": math.nan, "episodes": math.nan, "marks": ""}
    return {"std": float(r.std), "n": int(r.n), "failed": int(r.failed), "steps": r.steps, "episodes": r.episodes,
            "marks": cell_marks(r)}


def cell_marks(r: Any) -> str:
    return (MIXED_COMMITS if int(r.commits) > 1 else "") + (UNCONVERGED_FIT if bool(r.unconverged) else "")


def marks_allowed(stats_rows: Iterable[Any], min_runs: int) -> bool:
    """Bold / underline / significance marks only where every compared cell has >= min_runs runs."""
    return all(int(r.n) >= min_runs for r in stats_rows)


def _lookup(stats_frame: pd.DataFrame) -> dict[tuple[str, str], pd.Series]:
    return {(r.task, r.method): r for r in stats_frame.itertuples(index=False)}


def with_published(methods: Sequence[str], refs: Iterable[str | None], layout: str) -> list[str]:
    """The methods that get paper / Δ columns: those with a published number for at least one of
    the table's tasks (a toy-only table has none, so it carries no empty column pairs)."""
    refs = [r for r in refs if r is not None]
    return [m for m in methods if any(published_value(m, r, layout) is not None for r in refs)]


def _short(task: str) -> str:
    return task.split("/", 1)[1] if "/" in task else task


def _gem_section(task: str, ref: str | None) -> str:
    """GEM Table 1's suite (Locomotion / AntMaze / Maze2D) for published tasks, else our suite."""
    if ref is not None:
        table = read_reference(facts.facts()["gem_sections"])
        hit = table.loc[table["dataset_id"] == ref, "suite"]
        if not hit.empty:
            return str(hit.iloc[0])
    return task.split("/", 1)[0] if "/" in task else "tasks"


def normaliser_kinds(scores: pd.DataFrame) -> dict[str, str]:
    """task -> the normaliser kind its scores were computed with (the records' `normaliser`):
    "" where the records do not say, "mixed" where its runs differ (kind or reference returns)."""
    out = {}
    keys = scores["normaliser_key"] if "normaliser_key" in scores else pd.Series("", index=scores.index)
    kinds = scores["normaliser_kind"] if "normaliser_kind" in scores else pd.Series("", index=scores.index)
    for task, part in scores.assign(_k=keys.fillna(""), _kind=kinds.fillna("")).groupby("task", sort=False):
        out[task] = "mixed" if part["_k"].nunique() > 1 else str(part["_kind"].iloc[0])
    return out


def normaliser_label(kind: str) -> str:
    if kind == "mixed":
        return "mixed normalisers " + OTHER_NORMALISER
    return NORMALISER_LABELS.get(kind, f"{kind} refs") if kind else UNKNOWN_NORMALISER


def _paper_cells(method: str, ref: str | None, mean: float, layout: str, decimals: int,
                 ours: str) -> tuple[list[Cell], dict[str, Any]]:
    """The paper / Δ cells of one task: the published number, and Δ only where the paper's
    normaliser is the one our row used (`ours`, a normaliser kind); else the number carries ‡."""
    pub = published_value(method, ref, layout)
    if pub is None:
        return [Cell(""), Cell("")], dict(NO_PAPER)
    score, std, label = pub
    kind, _ = paper_normaliser(label, ref or "")
    comparable = kind == ours
    delta = mean - score if comparable and not math.isnan(mean) else math.nan
    text = num(score, decimals) + (f" ± {num(std, decimals)}" if not math.isnan(std) else "") + ("" if comparable else OTHER_NORMALISER)
    return [Cell(text), Cell(num(delta, decimals, signed=True))], {
        "paper": score, "paper_std": std, "paper_source": label, "paper_normaliser": kind, "comparable": comparable, "delta": delta}


def _paper_summary(method: str, tasks: Sequence[str], refs: dict[str, str | None], kinds: dict[str, str], layout: str,
                   value: float, how: str, decimals: int) -> tuple[list[Cell], dict[str, Any]]:
    """Paper / Δ cells of a Sum, Avg or family Average row: only where the paper has every task;
    Δ only where each task's paper normaliser is ours."""
    pubs = [published_value(method, refs[t], layout) for t in tasks]
    if not all(p is not None for p in pubs):
        return [Cell(""), Cell("")], dict(NO_PAPER)
    total = float(np.sum([p[0] for p in pubs]))
    pvalue = total if how == "sum" else total / len(tasks)
    paper_kinds = {paper_normaliser(p[2], refs[t] or "")[0] for p, t in zip(pubs, tasks)}
    comparable = len(paper_kinds) == 1 and all(kinds.get(t) in paper_kinds for t in tasks)
    delta = value - pvalue if comparable else math.nan
    cells = [Cell(num(pvalue, decimals) + ("" if comparable else OTHER_NORMALISER)), Cell(num(delta, decimals, signed=True))]
    return cells, {"paper": pvalue, "paper_std": math.nan, "paper_source": pubs[0][2],
                   "paper_normaliser": "/".join(sorted(paper_kinds)), "comparable": comparable, "delta": delta}


def paper_header(method: str, refs: Iterable[str | None], layout: str) -> list[str]:
    """'GEM paper [D4RL refs]', 'GEM Δ': the paper column names the normaliser of its numbers
    when one normaliser holds for all of them (else each source's is named under Sources)."""
    kinds = set()
    for ref in refs:
        pub = published_value(method, ref, layout) if ref is not None else None
        if pub is not None:
            kinds.add(paper_normaliser(pub[2], ref)[0])
    name = facts.display(method)
    return [f"{name} paper" + (f" [{normaliser_label(kinds.pop())}]" if len(kinds) == 1 else ""), f"{name} Δ"]


NO_PAPER: dict[str, Any] = {"paper": math.nan, "paper_std": math.nan, "paper_source": "", "paper_normaliser": "",
                            "comparable": False, "delta": math.nan}


def _summary_label(label: str, tasks: Sequence[str], kinds: dict[str, str]) -> str:
    """A Sum / Avg / Average row's label, with ‡ when its tasks' scores use different normalisers."""
    return label + (OTHER_NORMALISER if len({kinds.get(t, "") for t in tasks}) > 1 else "")


def _sources_note(data: pd.DataFrame) -> list[str]:
    if data.empty or "paper_source" not in data:
        return []
    used = data[data["paper_source"].astype(str) != ""]
    if used.empty:
        return ["paper / Δ: no published number for these tasks (toy and unmapped tasks are empty by design)."]
    parts = []
    for label, part in used.groupby("paper_source"):
        kinds = sorted({normaliser_label(k) for k in part["paper_normaliser"].astype(str).str.split("/").explode() if k})
        parts.append(f"{label} [{', '.join(kinds)}] ({', '.join(sorted(part['method'].unique()))})")
    return ["paper = the published number [its normaliser]; Δ = ours - paper, only where the normalisers agree. "
            "Sources: " + "; ".join(parts) + "."]


def _protocol_of(scores: pd.DataFrame) -> str:
    protocols = sorted(set(scores["protocol"].dropna())) if not scores.empty and "protocol" in scores else []
    if len(protocols) > 1:  # build_tables renders each protocol on its own; a caller mixing them is a bug
        raise ValueError(f"a table was asked to mix protocols {protocols}; select one protocol's scores first")
    return protocols[0] if protocols else "unknown"


def _title(text: str, scores: pd.DataFrame) -> str:
    return f"{text}, {_protocol_of(scores)} protocol"


def _count(value: float) -> str:
    return "unknown" if value is None or (isinstance(value, float) and math.isnan(value)) else str(int(value))


def _varying(cells: pd.DataFrame, column: str, unit: str) -> str:
    """'2000 training steps' when one value holds for every cell, else the value per method, per
    task, or per method and task, whichever the values follow."""
    values = cells.assign(_v=cells[column].map(_count))
    if values["_v"].nunique() == 1:
        return f"{values['_v'].iloc[0]} {unit}"
    for key, name in (("method", facts.display), ("task", _short)):
        if (values.groupby(key)["_v"].nunique() == 1).all():
            by = values.groupby("_v", sort=False)[key].unique()
            return f"{unit} " + "; ".join(f"{v} ({', '.join(name(k) for k in keys)})" for v, keys in by.items())
    by: dict[str, list[str]] = {}
    for v, m, t in zip(values["_v"], values["method"], values["task"]):
        by.setdefault(v, []).append(f"{facts.display(m)} on {_short(t)}")
    return f"{unit} " + "; ".join(f"{v} ({', '.join(cells_)})" for v, cells_ in by.items())


def length_line(cells: pd.DataFrame) -> str:
    """What every cell holds: its runs' training steps and evaluation episodes (from `cells`, one
    row per cell with method, task, steps, episodes), said once where the table shares a value,
    else per method or per task."""
    pairs = cells[["method", "task", "steps", "episodes"]].drop_duplicates()
    if pairs.empty:
        return "No runs."
    return (f"Every cell: runs of {_varying(pairs, 'steps', 'training steps')}, each scored over "
            f"{_varying(pairs, 'episodes', 'evaluation episodes')}; (n) = runs in the cell. "
            "Runs of another length are never averaged in (left_out_runs lists them).")


LEGEND = {
    MIXED_COMMITS: ("{m}: the cell's runs were written by more than one git commit (the records' provenance); "
                    "their numbers may come from different code."),
    OTHER_NORMALISER: ("{m}: numbers on different normalisers: a paper number whose normaliser is not our row's "
                       "(Normaliser column; the paper's in brackets under Sources), so no Δ; or a Sum / Avg / "
                       "aggregate over rows of different normalisers."),
    UNCONVERGED_FIT: ("{m}: a run of the cell froze a fit phase before its loss levelled off (record `fit_phases`: "
                      "converged false; e.g. GEM's behaviour GMM, LOM's MDN), so its score may reflect an under-fit model."),
}


def finish(table: Table, scores: pd.DataFrame, cells: pd.DataFrame | None = None) -> Table:
    """The header lines (what every cell holds) and the legend of every marker the table shows."""
    if cells is not None:
        table.about = [length_line(cells)] + table.about
    text = " ".join([c.text for row in table.rows for c in row] + list(table.sections.values()) + table.header)
    table.notes += [line.format(m=mark) for mark, line in LEGEND.items() if mark in text]
    bad = int(failed(scores).sum()) if not scores.empty and "score" in scores else 0
    if bad:
        table.notes.append(f"{bad} failed run(s) (score not a finite number, status non_finite) are counted in their cells "
                           "as 'k failed' and left out of the means, stds and statistics.")
    return table


def _base_notes(scores: pd.DataFrame) -> list[str]:
    notes = [f"Runs of the {describe_protocol(_protocol_of(scores))} only.",
             scores.attrs.get("score_rule", ScoreRule().describe()) + "; mean ± sample std over seeds, (n) = seeds."]
    notes += warn_incomplete(scores)
    if not scores.empty and any(minari_recreation(d) for d in scores["dataset"].dropna().astype(str).unique()):
        notes.append(RECREATION_CAVEAT)
    return notes


def _marks_note(rule: str, min_runs: int) -> str:
    return f"{rule}, only in rows where every cell holds >= {min_runs} runs (fewer: no marks; n is shown)."


# ---------------------------------------------------------------------- GEM Table 1 layout


def gem_layout(scores: pd.DataFrame, methods: Sequence[str] | None = None, *, bold_ratio: float = BOLD_RATIO,
               decimals: int = 2, published: bool = True, name: str = "main_gem_layout",
               min_runs: int = MIN_RUNS_FOR_MARKS) -> Table:
    st = task_stats(scores)
    methods = method_order(scores, methods)
    tasks = task_order(scores)
    refs = {t: reference_id(t, scores.loc[scores["task"] == t, "dataset"].iloc[0]) for t in tasks}
    kinds = normaliser_kinds(scores)
    paper_methods = with_published(methods, refs.values(), "gem") if published else []
    header = ["Task", "Normaliser"]
    for m in methods:
        header.append(facts.display(m))
        if m in paper_methods:
            header += paper_header(m, refs.values(), "gem")
    table = Table(name, _title("Normalised score per task (GEM Table 1 layout)", scores), header)
    look = _lookup(st)
    sections: dict[str, list[str]] = {}
    for task in tasks:
        sections.setdefault(_gem_section(task, refs[task]), []).append(task)
    rows: list[dict[str, Any]] = []

    def emit(label: str, kind: str, section: str, values: dict[str, tuple[float, str, int | None]],
             paper: dict[str, tuple[list[Cell], dict[str, Any]]], marks: bool, normaliser: str, task_id: str = "",
             ref: str | None = None) -> None:
        best = max((v[0] for v in values.values() if not math.isnan(v[0])), default=math.nan)
        cells: list[Cell] = [Cell(label), Cell(normaliser)]
        for m in methods:
            mean, text, n = values.get(m, (math.nan, "", None))
            bold = marks and within(mean, best, bold_ratio)
            cells.append(Cell(text, bold=bold))
            extra: dict[str, Any] = dict(NO_PAPER)
            if m in paper_methods:
                pcells, extra = paper.get(m, ([Cell(""), Cell("")], extra))
                cells += pcells
            r = look.get((task_id, m))
            rows.append({"section": section, "row": label, "kind": kind, "task": task_id, "reference_id": ref or "",
                         "normaliser": normaliser, "method": m, "mean": mean, **cell_data(r), "n": n, "bold": bold, **extra})
        table.add(*cells)

    for section, section_tasks in sections.items():
        table.section(section)
        for task in section_tasks:
            values, paper = {}, {}
            present = [look[(task, m)] for m in methods if (task, m) in look]
            for m in methods:
                r = look.get((task, m))
                if r is not None:
                    values[m] = (float(r.mean), cell_text(r, decimals), int(r.n))
                if m in paper_methods:
                    paper[m] = _paper_cells(m, refs[task], float(r.mean) if r is not None else math.nan, "gem", decimals,
                                            kinds.get(task, ""))
            emit(_short(task), "task", section, values, paper, marks_allowed(present, min_runs),
                 normaliser_label(kinds.get(task, "")), task, refs[task])
        # Sum and Avg over the section's tasks: only for methods with every task (else empty, as GEM's nan)
        enough = marks_allowed([r for (t, _), r in look.items() if t in section_tasks], min_runs)
        for how in ("sum", "avg"):
            values, paper = {}, {}
            for m in methods:
                means = [look[(t, m)].mean for t in section_tasks if (t, m) in look]
                total = float(np.sum(means)) if len(means) == len(section_tasks) else math.nan
                value = total if how == "sum" else total / len(section_tasks)
                values[m] = (value, num(value, decimals), None)
                if m in paper_methods:
                    paper[m] = _paper_summary(m, section_tasks, refs, kinds, "gem", value, how, decimals)
            label = _summary_label("Sum" if how == "sum" else "Avg", section_tasks, kinds)
            emit(label, how, section, values, paper, enough, "")
    table.data = pd.DataFrame(rows)
    table.notes = _base_notes(scores) + [
        _marks_note(f"Bold: within {bold_ratio:g} of the row's best mean", min_runs),
        "Sum / Avg over the section's tasks, empty where a method lacks a task.",
    ] + (_sources_note(table.data) if published else [])
    return finish(table, scores, st)


# ---------------------------------------------------------------------- DROL Table 4 layout


def _drol_family(task: str, ref: str | None) -> str:
    if ref is not None:
        if "-singletask" in ref:
            return "OGBench " + ref.split("-singletask")[0]
        if ref.startswith("antmaze"):
            return "D4RL antmaze"
        if ref.split("-")[0] in ("pen", "door", "hammer", "relocate"):
            return "D4RL adroit"
        return "D4RL " + ref.split("-")[0]
    return task.split("/", 1)[0] if "/" in task else "tasks"


def drol_layout(scores: pd.DataFrame, methods: Sequence[str] | None = None, *, bold_ratio: float = BOLD_RATIO,
                decimals: int = 1, published: bool = True, name: str = "main_drol_layout",
                min_runs: int = MIN_RUNS_FOR_MARKS) -> Table:
    st = task_stats(scores)
    present = method_order(scores, methods)
    tasks = task_order(scores)
    refs = {t: reference_id(t, scores.loc[scores["task"] == t, "dataset"].iloc[0]) for t in tasks}
    kinds = normaliser_kinds(scores)
    paper_methods = set(with_published(present, refs.values(), "drol")) if published else set()
    policy_groups = facts.policy_groups()
    one_step = set(policy_groups[facts.facts()["policy_classes"]["one_step"]])
    ordered: list[str] = []
    groups: list[tuple[str, int]] = [("", 2)]
    grouped = {m for members in policy_groups.values() for m in members}
    for label, members in list(policy_groups.items()) + [("Other", [m for m in present if m not in grouped])]:
        chosen = [m for m in present if m in members]
        if chosen:
            ordered += chosen
            span = sum(3 if m in paper_methods else 1 for m in chosen)
            groups.append((label, span))
    header = ["Task", "Normaliser"]
    for m in ordered:
        header.append(facts.display(m))
        if m in paper_methods:
            header += paper_header(m, refs.values(), "drol")
    table = Table(name, _title("Task-level normalised score (DROL Table 4 layout)", scores), header, groups=groups)
    look = _lookup(st)
    default = dict(zip(st["task"], st["task_default"]))
    families: dict[str, list[str]] = {}
    for task in tasks:
        families.setdefault(_drol_family(task, refs[task]), []).append(task)
    rows = []

    def emit(label: str, kind: str, family: str, values: dict[str, tuple[float, str, int | None]], ref: str | None,
             task_id: str, marks: bool, normaliser: str) -> None:
        best = max((v[0] for v in values.values() if not math.isnan(v[0])), default=math.nan)
        cells = [Cell(label), Cell(normaliser)]
        for m in ordered:
            mean, text, n = values.get(m, (math.nan, "", None))
            bold = marks and within(mean, best, bold_ratio)
            underline = bold and m in one_step
            cells.append(Cell(text, bold=bold, underline=underline))
            extra = dict(NO_PAPER)
            if m in paper_methods:
                if kind == "task":
                    pcells, extra = _paper_cells(m, ref, mean, "drol", decimals, kinds.get(task_id, ""))
                else:
                    pcells, extra = _paper_summary(m, families[family], refs, kinds, "drol", mean, "avg", decimals)
                cells += pcells
            r = look.get((task_id, m))
            rows.append({"family": family, "row": label, "kind": kind, "task": task_id, "reference_id": ref or "",
                         "normaliser": normaliser, "method": m, "mean": mean, **cell_data(r), "n": n, "bold": bold,
                         "underline": underline, **extra})
        table.add(*cells)

    for family, members in families.items():
        table.section(family)
        for task in members:
            values = {m: (float(look[(task, m)].mean), cell_text(look[(task, m)], decimals), int(look[(task, m)].n))
                      for m in ordered if (task, m) in look}
            present_cells = [look[(task, m)] for m in ordered if (task, m) in look]
            emit(_short(task) + (" (*)" if default.get(task) else ""), "task", family, values, refs[task], task,
                 marks_allowed(present_cells, min_runs), normaliser_label(kinds.get(task, "")))
        averages = {}
        for m in ordered:
            means = [look[(t, m)].mean for t in members if (t, m) in look]
            value = float(np.mean(means)) if len(means) == len(members) else math.nan
            averages[m] = (value, num(value, decimals), None)
        enough = marks_allowed([r for (t, _), r in look.items() if t in members], min_runs)
        emit(_summary_label(f"Average ({_plural(len(members), 'task')})", members, kinds), "average", family, averages,
             None, "", enough, "")
    table.data = pd.DataFrame(rows)
    table.notes = _base_notes(scores) + [
        _marks_note(f"Bold: within {bold_ratio:g} of the row's best; underlined: one-step methods within {bold_ratio:g} "
                    "of the best", min_runs),
        "(*) marks the suite's default task. Averages only for methods with every task of the family.",
    ] + (_sources_note(table.data) if published else [])
    return finish(table, scores, st)


# ---------------------------------------------------------------------- LOM Table 1 layout

_D4RL = re.compile(r"^(?P<env>[a-z0-9]+)-(?P<kind>[a-z-]+)-v\d+$")


def _lom_split(task: str, ref: str | None) -> tuple[str, str]:
    """(dataset type, environment): 'halfcheetah-medium-replay-v2' -> ('medium-replay', 'halfcheetah')."""
    if ref is not None:
        match = _D4RL.match(ref)
        if match:
            return match["kind"], match["env"]
        return "other", ref
    return (task.split("/", 1)[0] if "/" in task else "tasks"), _short(task)


def lom_layout(scores: pd.DataFrame, methods: Sequence[str] | None = None, *, decimals: int = 1,
               published: bool = True, name: str = "main_lom_layout", min_runs: int = MIN_RUNS_FOR_MARKS) -> Table:
    st = task_stats(scores)
    methods = method_order(scores, methods)
    tasks = task_order(scores)
    refs = {t: reference_id(t, scores.loc[scores["task"] == t, "dataset"].iloc[0]) for t in tasks}
    kinds = normaliser_kinds(scores)
    paper_methods = with_published(methods, refs.values(), "lom") if published else []
    header = ["Dataset", "Env", "Normaliser"]
    for m in methods:
        header.append(facts.display(m))
        if m in paper_methods:
            header += paper_header(m, refs.values(), "lom")
    table = Table(name, _title("Normalised score by dataset type and environment (LOM Table 1 layout)", scores), header)
    look = _lookup(st)
    kind_order = ["medium", "medium-replay", "medium-expert", "expert", "full-replay"]
    grouped: dict[str, list[tuple[str, str]]] = {}
    for task in tasks:
        kind, env = _lom_split(task, refs[task])
        grouped.setdefault(kind, []).append((env, task))
    keys = sorted(grouped, key=lambda k: (kind_order.index(k) if k in kind_order else len(kind_order), list(grouped).index(k)))
    rows = []
    for kind in keys:
        for i, (env, task) in enumerate(sorted(grouped[kind])):
            values = {m: look[(task, m)] for m in methods if (task, m) in look}
            best = max((float(v.mean) for v in values.values() if not math.isnan(v.mean)), default=math.nan)
            marks = marks_allowed(values.values(), min_runs)
            normaliser = normaliser_label(kinds.get(task, ""))
            cells = [Cell(kind if i == 0 else ""), Cell(env), Cell(normaliser)]
            for m in methods:
                r = values.get(m)
                mean = float(r.mean) if r is not None else math.nan
                bold = marks and not math.isnan(mean) and mean >= best - 1e-12  # LOM bolds the highest mean only
                cells.append(Cell(cell_text(r, decimals) if r is not None else "", bold=bold))
                extra = dict(NO_PAPER)
                if m in paper_methods:
                    pcells, extra = _paper_cells(m, refs[task], mean, "lom", decimals, kinds.get(task, ""))
                    cells += pcells
                rows.append({"dataset_type": kind, "env": env, "task": task, "reference_id": refs[task] or "",
                             "normaliser": normaliser, "method": m, "mean": mean, **cell_data(r), "bold": bold, **extra})
            table.add(*cells)
    table.data = pd.DataFrame(rows)
    table.notes = _base_notes(scores) + [_marks_note("Bold: the highest mean of the row (LOM's rule)", min_runs)] + (
        _sources_note(table.data) if published else [])
    return finish(table, scores, st)


# ---------------------------------------------------------------------- ablations (GEM Tables 5 / 6)


@dataclass(frozen=True)
class Variant:
    """An ablation of a base method: a registry preset (`method`) or config/knob overrides of
    the base run (matched exactly: every other config field and knob equal)."""

    name: str
    knobs: dict[str, Any] = field(default_factory=dict)
    config: dict[str, Any] = field(default_factory=dict)
    method: str | None = None
    table6: str | None = None  # GEM Table 6 column of the published per-task delta

    def __hash__(self) -> int:
        return hash((self.name, json.dumps(self.knobs, sort_keys=True), json.dumps(self.config, sort_keys=True), self.method))


def variants_for(base: str) -> list[Variant]:
    """The named ablations of `base` (facts file) plus every other preset built on it."""
    named = facts.facts()["ablations"]["variants"].get(base, [])
    out = [Variant(v["name"], knobs=v.get("knobs", {}), config=v.get("config", {}), table6=v.get("table6")) for v in named]
    covered = {v.get("preset") for v in named}
    out += [Variant(name, method=name) for name, f in facts.methods().items()
            if f.get("base") == base and name not in covered]
    return out


def paired_deltas(all_scores: pd.DataFrame, base: str, variant: Variant) -> pd.DataFrame:
    """(task, seed) pairs of the base method's own-knob runs and the variant: base and variant rows
    side by side with `delta = variant - base`. Prefers the variant evaluated on the same run."""
    rows = all_scores[all_scores["base_method"] == base]
    bases = rows[(rows["method"] == base) & rows["is_run_knobs"].astype(bool)]
    if variant.method is not None:
        candidates = all_scores[(all_scores["method"] == variant.method) & all_scores["is_run_knobs"].astype(bool)]
    else:
        candidates = rows.assign(_knobs=rows["knob_key"].map(json.loads), _config=rows["config_key"].map(json.loads))
    out = []
    for b in bases.itertuples(index=False):
        pool = candidates[(candidates["task"] == b.task) & (candidates["seed"] == b.seed)]
        if variant.method is None:
            want_knobs = json.loads(b.knob_key)
            want_config = json.loads(b.config_key)
            if not set(variant.knobs) <= set(want_knobs) or not set(variant.config) <= set(want_config):
                continue
            want_knobs.update(variant.knobs)
            want_config.update(variant.config)
            if want_knobs == json.loads(b.knob_key) and want_config == json.loads(b.config_key):
                continue  # the variant is the base setting itself (e.g. lam = 0 on a lam = 0 run)
            same_knobs = pool["_knobs"].map(lambda k, want=want_knobs: k == want)
            same_config = pool["_config"].map(lambda c, want=want_config: c == want)
            pool = pool[same_knobs & same_config]
        if pool.empty:
            continue
        same = pool[pool["run_id"] == b.run_id]
        v = (same if not same.empty else pool).iloc[0]
        record = {"task": b.task, "seed": b.seed, "suite": b.suite, "dataset": b.dataset, "base_score": b.score,
                  "score": float(v["score"]), "delta": float(v["score"]) - b.score, "same_run": not same.empty,
                  "eval_env_steps_per_second": v.get("eval_env_steps_per_second", math.nan)}
        for column in [c for c in all_scores if c.startswith("audit/")]:
            record[column] = v.get(column, math.nan)
        out.append(record)
    return pd.DataFrame(out)


def ablation_layouts(all_scores: pd.DataFrame, base: str = "gem", variants: Iterable[Variant] | None = None,
                     decimals: int = 2) -> tuple[Table, Table] | None:
    """GEM Table 5 (suite-level paired deltas) and Table 6 (per-task deltas) for `base`; None without data."""
    variants = list(variants) if variants is not None else variants_for(base)
    rows = all_scores[(all_scores["method"] == base) & all_scores["is_run_knobs"].astype(bool)]
    if rows.empty:
        return None
    pairs = {v: paired_deltas(all_scores, base, v) for v in variants}
    pairs = {v: p for v, p in pairs.items() if not p.empty}
    if not pairs:
        return None
    audits = ["audit/support_z", "audit/violation", "audit/collapse_dist"]
    audits = [a for a in audits if a in all_scores and all_scores[a].notna().any()]
    datasets = dict(zip(rows["task"], rows["dataset"]))
    all_mapped = all(reference_id(t, datasets[t]) is not None for t in datasets)
    spec5, spec6 = facts.facts()["ablations"]["table5"], facts.facts()["ablations"]["table6"]
    paper5 = read_reference(spec5["file"]).set_index(spec5["variant_column"]) if base == "gem" and all_mapped else None
    header = ["Variant", "Score", "Δ mean ± std"] + [a.split("/", 1)[1] for a in audits] + ["eval steps/s", "n pairs"]
    if paper5 is not None:
        header += ["paper Δ", "Δ - paper Δ"]
    t5 = Table(f"ablations_{base}", _title(f"{facts.display(base)} ablations, paired deltas over (task, seed) (GEM Table 5 layout)", rows), header)
    data5 = []

    def add_row(name: str, score: pd.Series, delta: pd.Series | None, frame: pd.DataFrame) -> None:
        # a pair with a failed run (non-finite score) is counted, not averaged
        ok = np.isfinite(score.to_numpy(float)) & (np.isfinite(delta.to_numpy(float)) if delta is not None else True)
        n_failed = int((~ok).sum())
        score, frame = score[ok], frame[ok]
        delta = delta[ok] if delta is not None else None
        dmean = float(delta.mean()) if delta is not None else 0.0
        dstd = float(delta.std(ddof=1)) if delta is not None and len(delta) > 1 else (0.0 if delta is None else math.nan)
        cells = [Cell(name), Cell(num(float(score.mean()), decimals)),
                 Cell(f"{num(dmean, decimals, signed=delta is not None)}" + (f" ± {num(dstd, decimals)}" if not math.isnan(dstd) else ""))]
        values = {a: float(frame[a].mean()) if a in frame else math.nan for a in audits}
        cells += [Cell(num(values[a], 4 if "violation" in a else 3)) for a in audits]
        speed = float(frame["eval_env_steps_per_second"].mean()) if "eval_env_steps_per_second" in frame else math.nan
        cells += [Cell(num(speed, 0)), Cell(str(len(score)) + (f" ({n_failed} failed)" if n_failed else ""))]
        pdelta = math.nan
        if paper5 is not None:
            if name == base:
                pdelta = 0.0
            elif name in paper5.index:
                pdelta = float(paper5.loc[name, spec5["delta_column"]])
            cells += [Cell(num(pdelta, decimals, signed=True)), Cell(num(dmean - pdelta, decimals, signed=True))]
        t5.add(*cells)
        data5.append({"variant": name, "score": float(score.mean()), "delta_mean": dmean, "delta_std": dstd, **values,
                      "eval_env_steps_per_second": speed, "n": len(score), "failed": n_failed, "paper_delta": pdelta,
                      "delta_minus_paper": dmean - pdelta})

    add_row(base, rows["score"], None, rows)
    for v, p in pairs.items():
        add_row(v.name, p["score"], p["delta"], p)
    t5.data = pd.DataFrame(data5)
    t5.notes = _base_notes(rows) + [
        ("Δ = variant - base on the same (task, seed); mean ± sample std over pairs (GEM Table 5 reports the same over 47 pairs). "
        "Knob variants are evaluated on the base run's checkpoint (exactly paired); config variants are separate runs with the same seed."),
        f"Audits are episode means of the variant ({', '.join(a.split('/', 1)[1] for a in audits) or 'none recorded'}).",
    ] + (["paper Δ: GEM Table 5."] if paper5 is not None else ["paper Δ: not shown (GEM Table 5 is over D4RL tasks; these tasks have no published counterpart)."])
    missing = [v.name for v in variants if v not in pairs]
    if missing:
        t5.notes.append("No data for: " + ", ".join(missing) + ".")

    # Table 6: per task, base score and each variant's mean paired delta, with the published delta
    paper6 = read_reference(spec6["file"]).set_index(spec6["dataset_column"]) if base == "gem" else None
    if paper6 is not None and not any(reference_id(t, datasets[t]) in paper6.index for t in datasets):
        paper6 = None  # none of these tasks is in GEM Table 6: no empty paper Δ columns
    header6 = ["Task", base]
    for v in pairs:
        header6.append(f"{v.name} Δ")
        if paper6 is not None and v.table6:
            header6.append(f"{v.name} paper Δ")
    t6 = Table(f"ablation_deltas_{base}", _title(f"{facts.display(base)} per-task ablation deltas (GEM Table 6 layout)", rows), header6)
    data6 = []
    for task in task_order(rows):
        ref = reference_id(task, datasets[task])
        base_scores = rows[rows["task"] == task]["score"]
        cells = [Cell(_short(task)), Cell(mean_std(float(base_scores.mean()), float(base_scores.std(ddof=1)), len(base_scores), decimals))]
        for v, p in pairs.items():
            d = p[p["task"] == task]["delta"]
            bad = int((~np.isfinite(d.to_numpy(float))).sum())  # pairs with a failed run: counted, not averaged
            d = d[np.isfinite(d.to_numpy(float))]
            dmean = float(d.mean()) if len(d) else math.nan
            count = f"{len(d)}, {bad} failed" if bad else f"{len(d)}"
            cells.append(Cell(num(dmean, decimals, signed=True) + (f" ({count})" if len(d) or bad else "")))
            pvalue = math.nan
            if paper6 is not None and v.table6:
                if ref is not None and ref in paper6.index:
                    pvalue = float(paper6.loc[ref, v.table6])
                cells.append(Cell(num(pvalue, decimals, signed=True)))
            data6.append({"task": task, "reference_id": ref or "", "variant": v.name, "base_mean": float(base_scores.mean()),
                          "delta_mean": dmean, "n": len(d), "paper_delta": pvalue})
        t6.add(*cells)
    t6.data = pd.DataFrame(data6)
    t6.notes = _base_notes(rows) + ["Δ = mean over seeds of the paired (variant - base) difference, (n) = pairs; paper Δ: GEM Table 6 (empty for tasks it does not report)."]
    cells = task_stats(rows)
    return finish(t5, rows, cells), finish(t6, rows, cells)


# ---------------------------------------------------------------------- aggregates (rliable)


def _suite_sets(scores: pd.DataFrame, methods: Sequence[str]) -> list[tuple[str, list[str], list[str], list[str]]]:
    """(label, tasks, methods, left-out methods) per suite and over all suites.

    Aggregates compare methods on one task set: every task of the scope, with the methods that
    have all of them; when no method has all, the tasks every method has."""
    out = []
    suites = list(dict.fromkeys(scores["suite"]))
    for label, part in [(s, scores[scores["suite"] == s]) for s in suites] + ([("all suites", scores)] if len(suites) > 1 else []):
        present = [m for m in methods if m in set(part["method"])]
        tasks = task_order(part)
        covered = {m: set(part.loc[part["method"] == m, "task"]) for m in present}
        full = [m for m in present if covered[m] >= set(tasks)]
        if full:
            ms = full
        else:
            ms = present
            tasks = [t for t in tasks if all(t in covered[m] for m in ms)]
        if ms and tasks:
            out.append((label, tasks, ms, [m for m in present if m not in ms]))
    return out


def _plural(n: int, word: str) -> str:
    return f"{n} {word}" + ("" if n == 1 else "s")


def _scope_label(label: str, tasks: Sequence[str], kinds: dict[str, str]) -> str:
    """'toy (4 tasks; toy refs)': a scope of the aggregate tables with its normaliser."""
    used = {kinds.get(t, "") for t in tasks}
    normaliser = normaliser_label(used.pop()) if len(used) == 1 else "mixed normalisers " + OTHER_NORMALISER
    return f"{label} ({_plural(len(tasks), 'task')}; {normaliser})"


def aggregate_layout(scores: pd.DataFrame, methods: Sequence[str] | None = None, *, reps: int = stats.REPS,
                     seed: int = 0, decimals: int = 1) -> Table:
    methods = method_order(scores, methods)
    header = ["Method"] + [stats.METRIC_LABELS[m] for m in stats.METRICS] + ["tasks", "runs", "failed"]
    table = Table("aggregates", _title("Aggregate normalised score with 95% stratified-bootstrap CIs (rliable estimators)", scores), header)
    rows = []
    left_out = []
    kinds = normaliser_kinds(scores)
    bad = scores[failed(scores)]
    usable = finite_runs(scores)  # failed runs: an explicit, counted exclusion (the failed column)
    for label, tasks, ms, missing in _suite_sets(usable, methods):
        table.section(_scope_label(label, tasks, kinds))
        if missing:
            left_out.append(f"{label}: {', '.join(missing)} (lack some of its tasks)")
        frame = stats.aggregate_metrics(stats.score_dict(usable, ms, tasks), reps=reps, seed=seed)
        for m in ms:
            part = frame[frame["method"] == m].set_index("metric")
            n_failed = int(((bad["method"] == m) & bad["task"].isin(tasks)).sum())
            cells = [Cell(facts.display(m))]
            for metric in stats.METRICS:
                r = part.loc[metric]
                cells.append(Cell(f"{num(r.point, decimals)} [{num(r.low, decimals)}, {num(r.high, decimals)}]"))
                rows.append({"scope": label, "method": m, "metric": metric, "point": r.point, "low": r.low, "high": r.high,
                             "n_tasks": int(r.n_tasks), "n_runs": int(r.n_runs), "n_failed": n_failed})
            cells += [Cell(str(int(part["n_tasks"].iloc[0]))), Cell(str(int(part["n_runs"].iloc[0]))), Cell(str(n_failed))]
            table.add(*cells)
    table.data = pd.DataFrame(rows)
    table.notes = _base_notes(scores) + [
        "runs = the finite runs the estimates use; failed = runs with a non-finite score, left out of the estimates and counted here.",
        f"Point estimate [95% CI]; CIs from {reps} stratified-bootstrap replicates (runs resampled within each task), random state {seed}.",
        "Median and mean are over per-task means; IQM is the 25% trimmed mean of all runs x tasks; optimality gap = 100 - mean(min(score, 100)) (lower is better).",
        "Per scope, methods are compared on the same tasks: all of the scope's tasks, with the methods that have every one.",
    ] + (["Left out: " + "; ".join(left_out) + "."] if left_out else [])
    return finish(table, scores, task_stats(scores))


def improvement_layout(scores: pd.DataFrame, methods: Sequence[str] | None = None, *, reps: int = stats.REPS,
                       seed: int = 0, min_runs: int = MIN_RUNS_FOR_MARKS) -> Table:
    methods = method_order(scores, methods)
    table = Table("probability_of_improvement", _title("Probability of improvement P(X > Y) with 95% CIs", scores),
                  ["X", "Y", "P(X > Y)", "95% CI", "runs per task (X / Y)"])
    rows = []
    kinds = normaliser_kinds(scores)
    usable = finite_runs(scores)
    for label, tasks, ms, _ in _suite_sets(usable, methods):
        data = stats.score_dict(usable, ms, tasks)
        frame = stats.improvement_table(data, reps=reps, seed=seed)
        if frame.empty:
            continue
        table.section(_scope_label(label, tasks, kinds))
        for r in frame.itertuples(index=False):
            nx, ny = (min(len(c) for c in data[m].per_task) for m in (r.x, r.y))
            bold = min(nx, ny) >= min_runs and (r.low > 0.5 or r.high < 0.5)
            table.add(Cell(facts.display(r.x)), Cell(facts.display(r.y)), Cell(num(r.point, 2), bold=bold),
                      Cell(f"[{num(r.low, 2)}, {num(r.high, 2)}]"), Cell(f"{nx} / {ny}"))
            rows.append({"scope": label, "x": r.x, "y": r.y, "point": r.point, "low": r.low, "high": r.high, "n_x": nx,
                         "n_y": ny, "bold": bold})
    table.data = pd.DataFrame(rows)
    table.notes = _base_notes(scores) + [
        ("P(X > Y): Mann-Whitney probability that a run of X beats a run of Y on the same task, averaged over tasks; "
        f"CIs from {reps} independent stratified-bootstrap replicates of X's and Y's runs, random state {seed}. "
        f"Bold: the CI excludes 0.5 and both methods have >= {min_runs} runs on every task (fewer: never bold). "
        "Pairs with unequal seed counts per task (failed runs left out included) are skipped."),
    ]
    return finish(table, scores, task_stats(scores))


# ---------------------------------------------------------------------- everything


# ---------------------------------------------------------------------- NLL gap (GEM Table 9)


def nll_gap_frame(scores: pd.DataFrame) -> pd.DataFrame:
    """Per run: its final own-knob evaluation's `diagnostics/..._gap` fields (written by the run
    when it evaluated; analysis never reloads a checkpoint). Runs without such fields are absent."""
    gaps = [c for c in scores if c.startswith("diagnostics/") and c.endswith("_gap")]
    if scores.empty or not gaps:
        return pd.DataFrame()
    rows = scores[scores[gaps].notna().any(axis=1)]
    lengths = [c for c in ("cell_steps", "cell_episodes") if c in rows]
    return rows[["run_id", "protocol", "method", "task", "dataset", "seed", *lengths, *gaps]].reset_index(drop=True)


def nll_gap_table(per_run: pd.DataFrame) -> Table:
    spec = facts.facts()["nll_gap"]
    gaps = [c for c in per_run if c.endswith("_gap") and per_run[c].notna().any()]
    primary = spec["diagnostic"] if spec["diagnostic"] in gaps else gaps[0]
    paper = read_reference(spec["file"]).set_index(spec["dataset_column"])
    refs = {t: reference_id(t, d) for t, d in zip(per_run["task"], per_run["dataset"])}
    with_paper = any(r in paper.index for r in refs.values() if r is not None)  # else no empty paper / Δ columns
    header = ["Task", "Method"] + [f"{g.split('/')[-1]} mean ± std" for g in gaps] + ["seeds"] + (["paper gap", "Δ"] if with_paper else [])
    table = Table("nll_gap", _title("Multimodality diagnostic: dataset NLL gap = NLL_top1 - NLL_gmm (GEM Table 9 layout)",
                                    per_run), header)
    rows = []
    for (task, method), group in per_run.groupby(["task", "method"], sort=False):
        ref = refs[task]
        cells = [Cell(task), Cell(facts.display(method))]
        row: dict[str, Any] = {"task": task, "method": method, "reference_id": ref or "", "seeds": len(group)}
        for g in gaps:
            mean, std = float(group[g].mean()), float(group[g].std(ddof=1)) if len(group) > 1 else math.nan
            cells.append(Cell(num(mean, 3) + (f" ± {num(std, 3)}" if not math.isnan(std) else "")))
            row[f"{g}_mean"], row[f"{g}_std"] = mean, std
        pvalue = float(paper.loc[ref, spec["gap_column"]]) if ref is not None and ref in paper.index else math.nan
        delta = row[f"{primary}_mean"] - pvalue
        cells += [Cell(str(len(group)))] + ([Cell(num(pvalue, 2)), Cell(num(delta, 2, signed=True))] if with_paper else [])
        row.update({"paper_gap": pvalue, "delta": delta})
        table.add(*cells)
        rows.append(row)
    table.data = pd.DataFrame(rows)
    table.notes = [
        f"Runs of the {describe_protocol(_protocol_of(per_run))} only; each run's final evaluation.",
        ("gap = NLL_top1 - NLL_gmm on the run's fixed evaluation batch of dataset actions (GEM Eq. 72-75): NLL_top1 uses "
         "only the most-weighted component k*(s) without its weight. behavior_gap is the fitted behaviour GMM's "
         "(GEM Table 9); actor_gap is the actor GMM's."),
        (f"Mean ± sample std over seeds; paper gap and Δ (= ours - paper) compare {primary.split('/')[-1]} with GEM Table 9 "
         "(empty for tasks it does not report)." if with_paper else
         "paper gap: none of these tasks is in GEM Table 9 (toy and unmapped tasks have no published gap)."),
    ]
    cells = per_run.rename(columns={"cell_steps": "steps", "cell_episodes": "episodes"})
    return finish(table, per_run.iloc[0:0], cells.assign(**{c: np.nan for c in ("steps", "episodes") if c not in cells}))


# ---------------------------------------------------------------------- deployment profile (GEM Table 3)


def load_profiles(root: str | Path, log=print) -> pd.DataFrame:
    """Every profile record under `root` (benchmarks/run/profile.py writes them), one row each;
    a damaged one is named in the log and left out."""
    damaged: list = []
    rows = [{k: v for k, v in r.items() if not isinstance(v, dict)} for r in iter_records(root, "profile", damaged)]
    for d in damaged:
        log(f"tables: damaged profile record {d.line()} (left out of the latency tables)")
    if not rows:
        return pd.DataFrame()
    frame = pd.DataFrame(rows)
    order = {m: i for i, m in enumerate(facts.methods())}
    sweep = frame["setting"].str.extract(r"^([A-Za-z]*)(\d*)")  # "N64" -> ("N", 64): N1, N64, N1024 in numeric order
    frame = frame.assign(_m=frame["method"].map(order).fillna(len(order)), _k=sweep[0],
                         _v=pd.to_numeric(sweep[1], errors="coerce"))
    return (frame.sort_values(["device", "batch", "_m", "method", "_k", "_v", "setting"], kind="stable")
            .drop(columns=["_m", "_k", "_v"]).reset_index(drop=True))


def _published_profile_note() -> str:
    spec = facts.facts()["profile"]
    paper = read_reference(spec["file"])
    ours = paper[paper["method"] == spec["method"]]
    n_rows = ours[ours["setting"].str.startswith("N")]
    return (f"Published GEM Table 3 (their GPU, batch not stated): {spec['method']} "
            f"{num(n_rows['latency_ms_mean'].min(), 2)}-{num(n_rows['latency_ms_mean'].max(), 2)} ms over "
            f"{', '.join(n_rows['setting'])} with peak alloc {num(n_rows['peak_alloc_mb_mean'].iloc[0], 2)} -> "
            f"{num(n_rows['peak_alloc_mb_mean'].iloc[-1], 2)} MB. Compare shapes across N and T, not absolute milliseconds "
            "across machines.")


def profile_table(frame: pd.DataFrame, device: str) -> Table:
    part = frame[frame["device"] == device].reset_index(drop=True)
    header = ["Method", "Setting", "Batch", "Latency (ms) median [IQR]", "Latency (ms) mean ± std", "Peak alloc (MB)",
              "Peak reserved (MB)", "Params (M)"]
    table = Table("latency_" + device.replace(":", ""), f"Deployment profile of act on {device} (GEM Table 3 layout)", header)
    for r in part.itertuples(index=False):
        table.add(Cell(facts.display(r.method)), Cell(r.setting), Cell(str(r.batch)),
                  Cell(f"{num(r.latency_ms_median, 3)} [{num(r.latency_ms_iqr_low, 3)}, {num(r.latency_ms_iqr_high, 3)}]"),
                  Cell(f"{num(r.latency_ms_mean, 3)} ± {num(r.latency_ms_std, 3)}"), Cell(num(r.peak_alloc_mb, 2)),
                  Cell(num(r.peak_reserved_mb, 2)), Cell(num(r.params_m, 3)))
    table.data = part
    versions = ", ".join(sorted(set(part["torch_version"].astype(str))))
    table.notes = [
        (f"Up to {int(part['repeats'].max())} timed calls ({int(part['repeats'].min())} for the slowest settings, capped by "
         f"time) after {int(part['warmup'].max())} warm-up calls per setting; random weights, config-class defaults, "
         f"obs {int(part['obs_dim'].iloc[0])} / act {int(part['act_dim'].iloc[0])}, torch {versions}, "
         f"{int(part['threads'].max())} CPU thread(s). Measured by `modebench profile` (one record per row)."),
        "Peak alloc: CUDA allocator peak (weights included) on GPU; on CPU the weights + input + peak live tensor bytes of one call.",
        _published_profile_note(),
    ]
    return table


def base_methods(scores: pd.DataFrame) -> list[str]:
    """Methods that are not presets (method == base_method): the main tables' columns."""
    if scores.empty:
        return []
    return method_order(scores, [m for m in method_order(scores) if (scores.loc[scores["method"] == m, "base_method"] == m).all()])


def protocol_tables(frame: pd.DataFrame, *, rule: ScoreRule | str | None = None, methods: Sequence[str] | None = None,
                    reps: int = stats.REPS, seed: int = 0, log=print, damaged: pd.DataFrame | None = None) -> list[Table]:
    """Every table of ONE protocol's evaluation records (`frame` must hold a single protocol).
    Only runs of each cell's own length enter them (`by_length`); the others go to
    `left_out_runs`, a table of their own, written only when there are any."""
    protocol = _protocol_of(frame)
    membership = by_length(frame)
    frame = membership.kept
    for note in membership.notes:
        log(f"tables ({protocol}): {note}")
    if not membership.left_out.empty:
        log(f"tables ({protocol}): {len(membership.left_out)} run(s) of another length or episode count than their "
            "cell's left out of every table (listed in left_out_runs)")
    scores = select_scores(frame, rule)
    all_scores = select_scores(frame, rule, knobs="all")
    chosen = list(methods) if methods else base_methods(scores)
    main, notes = main_runs(scores[scores["method"].isin(chosen)])
    main.attrs.update(scores.attrs)
    for note in notes:
        log(f"tables: {note}")
    tables = []
    if not main.empty:
        tables += [gem_layout(main, chosen), drol_layout(main, chosen), lom_layout(main, chosen),
                   aggregate_layout(main, chosen, reps=reps, seed=seed)]
        improvement = improvement_layout(main, chosen, reps=reps, seed=seed)
        if improvement.rows:
            tables.append(improvement)
        else:
            log(f"tables ({protocol}): probability of improvement skipped (needs >= 2 methods with equal seed counts on shared tasks)")
    else:
        log(f"tables ({protocol}): main tables skipped: none of the methods {', '.join(chosen)} has runs under this protocol")
    for base in sorted(set(all_scores["base_method"])):
        variants = variants_for(base)
        built = ablation_layouts(all_scores, base, variants) if variants else None
        if built is None:
            if variants:
                log(f"tables ({protocol}): ablations_{base} skipped: none of its ablations ({', '.join(v.name for v in variants)}) "
                    "has records paired with its runs (train the presets, or `modebench eval --checkpoint ... --knob ...`)")
            continue
        tables += list(built)
    gaps = nll_gap_frame(scores)
    if gaps.empty:
        log(f"tables ({protocol}): nll_gap skipped: no record carries a diagnostics/..._gap field (GEM runs write one when they evaluate)")
    else:
        tables.append(nll_gap_table(gaps))
    if damaged is not None and not damaged.empty:
        for table in tables:
            table.notes.append(damaged_note(damaged))
    if not membership.left_out.empty:
        tables.append(left_out_table(membership.left_out, protocol))
    return tables


def damaged_note(damaged: pd.DataFrame, shown: int = 3) -> str:
    """One note counting the damaged records that would have entered a table, naming the first few."""
    lines = list(damaged["line"])
    more = f"; +{len(lines) - shown} more (each named in the log)" if len(lines) > shown else ""
    return (f"{len(lines)} damaged record(s) of this protocol's runs could not be read and are in none of these numbers: "
            + "; ".join(lines[:shown]) + more + ".")


LEFT_OUT_NAME = "left_out_runs"


def store_counts(frame: pd.DataFrame, *, rule: ScoreRule | str | None = None, methods: Sequence[str] | None = None) -> list[str]:
    """Per protocol, one line: the runs the main tables hold (failed ones among them), the runs
    left out for their length or episodes, the damaged records. `tables` logs these lines and
    `report` prints them, computed by the same functions as the tables themselves."""
    lines = []
    for protocol in protocols_in(frame):
        membership = by_length(frame[frame["protocol"] == protocol])
        scores = select_scores(membership.kept, rule)
        chosen = list(methods) if methods else base_methods(scores)
        main, _ = main_runs(scores[scores["method"].isin(chosen)])
        n_failed = int(failed(main).sum()) if not main.empty else 0
        lines.append(f"{protocol}: {main['run_id'].nunique()} runs in the main tables ({n_failed} failed: score not finite, "
                     f"counted in their cells), {len(membership.left_out)} run(s) of another length or episode count set "
                     f"apart (left_out_runs), {len(damaged_in(frame, protocol))} damaged record(s)")
    return lines


def left_out_table(left_out: pd.DataFrame, protocol: str) -> Table:
    """The runs set apart from every table because their length or episode count is not their
    cell's (records.by_length): listed, never averaged in."""
    table = Table(LEFT_OUT_NAME, f"Runs left out of every table: another length or episode count than their cell's, {protocol} protocol",
                  ["Method", "Task", "Seed", "Steps", "Episodes", "Cell steps", "Cell episodes", "Final step", "Final score", "Run"])
    for r in left_out.itertuples(index=False):
        table.add(Cell(facts.display(r.method)), Cell(r.task), Cell(str(r.seed)), Cell(_count(r.total_steps)),
                  Cell(_count(r.eval_episodes)), Cell(_count(r.cell_steps)), Cell(_count(r.cell_episodes)),
                  Cell(str(r.final_step)), Cell(num(float(r.final_score), 2) if np.isfinite(r.final_score) else "failed"),
                  Cell(r.run_id))
    table.data = left_out.reset_index(drop=True)
    table.about = [f"{len(left_out)} run(s) (a run with evaluations over two episode counts counts once per count)."]
    table.notes = [("A table cell holds only runs of its protocol's own steps and evaluation episodes for the method and task "
                   "(the records' `default_run`); these runs were trained or evaluated otherwise (e.g. `--steps 200`) and "
                   "are in no table, plot or aggregate.")]
    return table


def build_tables(root: str | Path | None = None, out: str | Path | None = None, *, rule: ScoreRule | str | None = None,
                 methods: Sequence[str] | None = None, reps: int = stats.REPS, seed: int = 0,
                 frame: pd.DataFrame | None = None, study_tables: Sequence[Callable[..., list[Path]]] = (),
                 log=print) -> list[Path]:
    """Every table from the stored records under `root` into `out` (default <root>/tables): each
    protocol's tables in `<out>/<protocol>/` (never mixed), the profile tables in `<out>/profile/`.
    `study_tables`: writers `(root, out, protocol=, seed=, log=)` of the studies' tables for each
    protocol (the command-line root passes them: studies/cli.py)."""
    from modebench.analysis.records import default_root

    root = Path(root) if root is not None else default_root()
    out = Path(out) if out is not None else root / "tables"
    frame = frame if frame is not None else load_records(root)
    profiles = load_profiles(root, log)
    damaged = damaged_in(frame)
    for line in damaged["line"]:
        log(f"tables: damaged record {line} (in no table; each table it would have entered counts it)")
    if frame.empty and profiles.empty:
        log(f"tables: no evaluation records under {root}/ (run `make bench SUITE=toy` or `modebench train ...` first)"
            + (f"; {len(damaged)} damaged record(s) named above" if len(damaged) else "") + "; nothing written")
        return []
    written: list[Path] = []
    for protocol in protocols_in(frame):
        tables = protocol_tables(frame[frame["protocol"] == protocol], rule=rule, methods=methods, reps=reps, seed=seed, log=log,
                                 damaged=damaged_in(frame, protocol))
        for table in tables:
            written += table.write(out / protocol)
        if not any(t.name == LEFT_OUT_NAME for t in tables):  # none now: an earlier listing is stale
            for stale in (out / protocol).glob(f"{LEFT_OUT_NAME}.*"):
                stale.unlink()
        for write in study_tables:
            written += write(root, out / protocol, protocol=protocol, seed=seed, log=log)
        log(f"tables: {len(tables)} tables ({', '.join(t.name for t in tables)}) -> {out / protocol}/ (.md, .tex, .csv)")
    for line in store_counts(frame, rule=rule, methods=methods):
        log(f"tables: {line}")
    if profiles.empty:
        log(f"tables: latency skipped: no profile records under {root}/ (run `make profile`)")
    else:
        tables = [profile_table(profiles, device) for device in sorted(profiles["device"].unique())]
        for table in tables:
            written += table.write(out / "profile")
        log(f"tables: {len(tables)} profile tables ({', '.join(t.name for t in tables)}) -> {out / 'profile'}/")
    return written
