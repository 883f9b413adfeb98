"""The results store as one tidy DataFrame, and the explicit rule for "the score" of a run.

`load_records(root)` reads every evaluation record under `root` through the store's reader
(single runs, `modebench eval` knob grids and sweeps all write the same schema, documented in
benchmarks/store.py) into one row per record:

- identity: run_id, method, base_method, protocol, suite, task, dataset, seed, step, total_steps,
  source, config_hash, git_revision, device, timestamp, path;
- membership: suite_default (the run's config is the suite's default for the method under its
  protocol), task_default (the suite's default task), task_order (position in the suite file);
- scores: normalized_score, normalized_std, return_mean, return_std, success_rate,
  episode_length_mean, n_episodes, eval_wall_time, eval_env_steps_per_second, updates_per_second;
- `knob/<name>` for every inference knob, `config/<name>` for every training config field,
  `audit/<name>` for every audit (episode means, e.g. audit/violation), training metrics under
  their own namespaced names (`training/...`, `time/...`) and `diagnostics/...` as recorded;
- knob_key / config_key (canonical JSON of the knobs / config), run_knob_key (the knobs the run
  was trained and evaluated with), is_run_knobs, and setting (the knobs that differ from the
  run's own, e.g. "N=64", empty for the run's own).

`select_scores(frame, rule)` reduces the evaluations of each (run, knob setting) to one score:
the final evaluation (default), the mean of the last k evaluations, or -- only when asked for by
name -- the best one. The rule's description travels with every table and plot.

Derived per record (`_derived`): eval_episodes (the field, else the length of the episode
list), cell_steps / cell_episodes (the protocol's own length, `default_run`), commit (provenance,
else git_revision), status ("non_finite" for a score that is not a finite number), normaliser_kind
/ normaliser_key, unconverged_fits (fit phases that ended with converged false, marked on every
record of the run). `by_length` splits the records into what the tables hold (runs of their
cell's length) and what is listed apart; damaged files travel in `frame.attrs["damaged"]`.

Everything here is decided from the records (and their run's config.json), never from today's
code or suite files, so the same records give the same tables at any code revision. Fields an
older record lacks (the store marks them, see benchmarks/store.py) are handled so:
- suite_default missing: `main_runs` keeps, per (method, task), the training config with the
  most runs (ties: the first config in canonical-JSON order) and says so in a note (when several
  configs are marked suite_default, because code changed the default between runs, the one
  written last is kept, also with a note);
- task_default missing: the run's config.json `task.default`, else False;
- task_order missing: tasks of that suite sort by name after the ordered ones.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd
from modebench.analysis import facts
from modebench.analysis.errors import AnalysisError
from modebench.benchmarks.store import (
    DEFAULT_ROOT,
    LEGACY_PROTOCOL,
    PROTOCOLS,
    StoreScan,
    run_config,
    scan_store,
)

IDENTITY = ["run_id", "method", "base_method", "protocol", "suite", "task", "dataset", "seed", "step", "total_steps",
            "source"]
SCALARS = [
    "normalized_score", "normalized_std", "return_mean", "return_std", "success_rate", "episode_length_mean",
    "n_episodes", "eval_wall_time", "eval_env_steps_per_second", "updates_per_second", "train_wall_time",
]
META = ["config_hash", "git_revision", "device", "timestamp", "schema_version", "eval_seed", "path"]
KEYS = ["knob_key", "config_key", "run_knob_key", "is_run_knobs", "setting", "task_order", "task_default", "suite_default"]
NESTED = ("knobs", "config", "audits", "training_metrics", "episodes", "missing_fields", "data", "default_knobs",
          "default_run", "provenance", "normaliser", "fit_phases", "observation_layout")
# what analysis derives per record (load_records), each from the record alone
DERIVED = ["eval_episodes", "cell_steps", "cell_episodes", "commit", "status", "normaliser_kind", "normaliser_key",
           "unconverged_fits"]
NORMALISER_LABELS = {"d4rl": "D4RL refs", "minari": "Minari refs", "ogbench-success": "success %", "toy": "toy refs",
                     "user": "user refs"}
UNKNOWN_NORMALISER = "normaliser unknown"


def default_root() -> Path:
    """The results root: $MODEBENCH_RESULTS, else results/ (the store's default)."""
    return DEFAULT_ROOT


def canonical(value: Any) -> str:
    """Canonical JSON (sorted keys; tuples as lists) so equal settings compare equal."""
    return json.dumps(value, sort_keys=True, default=str)


def _hashable(value: Any) -> Any:
    if isinstance(value, list):
        return tuple(_hashable(v) for v in value)
    if isinstance(value, dict):
        return canonical(value)
    return value


def _flatten(record: dict[str, Any], path: Path) -> dict[str, Any]:
    row: dict[str, Any] = {}
    for key, value in record.items():
        if key in NESTED:
            continue
        if isinstance(value, (dict, list)):
            row[key] = canonical(value)
        else:
            row[key] = value
    knobs = record.get("knobs") or {}
    config = record.get("config") or {}
    for name, value in knobs.items():
        row[f"knob/{name}"] = _hashable(value)
    for name, value in config.items():
        row[f"config/{name}"] = _hashable(value)
    for name, value in (record.get("audits") or {}).items():
        row[f"audit/{name}"] = value
    for name, value in (record.get("training_metrics") or {}).items():
        row[name if "/" in name else f"training/{name}"] = value
    row["n_episodes"] = len(record.get("episodes") or [])
    row["knob_key"] = canonical(knobs)
    row["config_key"] = canonical(config)
    row["path"] = str(path)
    row.update(_derived(record, row["n_episodes"]))
    return row


def _number(value: Any) -> float:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else math.nan


def _derived(record: dict[str, Any], n_episodes: int) -> dict[str, Any]:
    """The DERIVED columns of one record:

    - eval_episodes: the record's field, else the length of its episode list (records before v3);
    - cell_steps / cell_episodes: the protocol's own length for the run (`default_run`), NaN
      where the record predates it;
    - commit: provenance's git commit (+dirty), else the older `git_revision` field;
    - status: the record's, else "non_finite" when its normalised score is not a finite number;
    - normaliser_kind / normaliser_key: how the score was normalised (kind, and kind with the
      reference returns, which must agree for scores to be compared); "" where not recorded;
    - unconverged_fits: the fields of fit phases that ended unconverged, comma-separated."""
    episodes = record.get("eval_episodes")
    default_run = record.get("default_run") if isinstance(record.get("default_run"), dict) else {}
    provenance = record.get("provenance") if isinstance(record.get("provenance"), dict) else {}
    commit = provenance.get("git_commit")
    if isinstance(commit, str):
        commit += "+dirty" if provenance.get("git_dirty") else ""
    else:
        commit = record.get("git_revision") if isinstance(record.get("git_revision"), str) else None
    commit = None if commit in (None, "unknown") else commit
    status = record.get("status")
    if status not in ("ok", "non_finite"):
        status = "ok" if math.isfinite(_number(record.get("normalized_score"))) else "non_finite"
    normaliser = record.get("normaliser") if isinstance(record.get("normaliser"), dict) else {}
    kind = str(normaliser.get("kind") or "")
    key = canonical([kind, normaliser.get("ref_min"), normaliser.get("ref_max")]) if kind else ""
    phases = record.get("fit_phases") if isinstance(record.get("fit_phases"), list) else []
    unconverged = [str(p.get("field") or p.get("name")) for p in phases if isinstance(p, dict) and p.get("converged") is False]
    return {"eval_episodes": episodes if isinstance(episodes, int) else (n_episodes or math.nan),
            "cell_steps": _number(default_run.get("steps")), "cell_episodes": _number(default_run.get("eval_episodes")),
            "commit": commit, "status": status, "normaliser_kind": kind, "normaliser_key": key,
            "unconverged_fits": ", ".join(unconverged)}


def _setting_label(knobs: dict[str, Any], run_knobs: dict[str, Any] | None) -> str:
    if run_knobs is None:
        return ", ".join(f"{k}={v}" for k, v in sorted(knobs.items()))
    diff = {k: v for k, v in knobs.items() if run_knobs.get(k) != v}
    return ", ".join(f"{k}={v}" for k, v in sorted(diff.items()))


DAMAGED_COLUMNS = ["path", "field", "problem", "line", "run_id", "protocol", "method", "task"]


def _damaged_rows(damaged: list) -> tuple[dict[str, Any], ...]:
    """The store reader's damaged files, each with the cell it would have entered as far as its
    run's config.json tells (protocol, method, task; None where it cannot be told)."""
    rows = []
    for d in damaged:
        config = run_config(d.path) or {}
        task = config.get("task") if isinstance(config.get("task"), dict) else {}
        identity = {"protocol": config.get("protocol", LEGACY_PROTOCOL) if config else None, "method": config.get("method"),
                    "task": task.get("id")}
        identity = {k: v if isinstance(v, str) else None for k, v in identity.items()}
        rows.append({"path": str(d.path), "field": d.field, "problem": d.problem, "line": d.line(),
                     "run_id": Path(d.path).parent.parent.name, **identity})
    return tuple(rows)  # a tuple of dicts: frame.attrs must compare with == when pandas concatenates frames


def damaged_in(frame: pd.DataFrame, protocol: str | None = None) -> pd.DataFrame:
    """The damaged records `load_records` met (frame.attrs["damaged"]) that would have entered
    the tables of `protocol`: its own, and those whose protocol cannot be told."""
    damaged = pd.DataFrame(list(frame.attrs.get("damaged") or ()), columns=DAMAGED_COLUMNS)
    if protocol is None:
        return damaged
    return damaged[damaged["protocol"].isna() | (damaged["protocol"] == protocol)].reset_index(drop=True)


def load_records(root: str | Path | None = None, scan: StoreScan | None = None) -> pd.DataFrame:
    """Every evaluation record under `root` as one row (see the module docstring for columns).
    Files the store reader finds damaged (benchmarks/store.py scan_store) are not rows: they
    travel in `frame.attrs["damaged"]` (one row each: path, field, problem, and the cell they
    would have entered) for the tables and the report to name and count. A caller that also
    needs the raw records passes the `scan` it made of `root`, so the store is read once."""
    root = Path(root) if root is not None else default_root()
    scan = scan if scan is not None else scan_store(root, "evaluation")
    raw = scan.records
    damaged = _damaged_rows(scan.damaged)
    if not raw:
        empty = pd.DataFrame(columns=IDENTITY + SCALARS + META + KEYS + DERIVED)
        empty.attrs["damaged"] = damaged
        return empty
    configs: dict[Path, dict[str, Any] | None] = {}  # records folder -> its run's config.json (read once per run)
    for path, _ in raw:
        if path.parent not in configs:
            configs[path.parent] = run_config(path)

    # the knobs each run was trained with: its train records, else its config.json, else the
    # only knob setting it has; a run whose own knobs cannot be told has none marked
    run_knobs: dict[str, dict[str, Any] | None] = {}
    by_run: dict[str, list[dict[str, Any]]] = {}
    for path, record in raw:
        by_run.setdefault(record["run_id"], []).append(record)
        if record.get("source") == "train" and record["run_id"] not in run_knobs:
            run_knobs[record["run_id"]] = record.get("knobs") or {}
    for path, record in raw:
        config = configs[path.parent]
        if record["run_id"] not in run_knobs and config is not None and "knobs" in config:
            run_knobs[record["run_id"]] = config["knobs"]
    for rid, records in by_run.items():
        if rid not in run_knobs:
            keys = {canonical(r.get("knobs") or {}) for r in records}
            run_knobs[rid] = (records[0].get("knobs") or {}) if len(keys) == 1 else None

    rows = []
    for path, record in raw:
        row = _flatten(record, path)
        own = run_knobs.get(record["run_id"])
        row["run_knob_key"] = canonical(own) if own is not None else None
        row["is_run_knobs"] = own is not None and row["knob_key"] == row["run_knob_key"]
        row["setting"] = _setting_label(record.get("knobs") or {}, own)
        if record.get("task_default") is None:
            task = (configs[path.parent] or {}).get("task")
            row["task_default"] = bool(task.get("default", False)) if isinstance(task, dict) else False
        rows.append(row)
    frame = pd.DataFrame(rows)
    for column in IDENTITY + SCALARS + META + KEYS:
        if column not in frame:
            frame[column] = np.nan
    # a fit phase ends once per run and only its training records carry the report: mark every
    # record of the run (a knob grid evaluated later on its checkpoint has the same fitted model)
    fits = frame.groupby("run_id")["unconverged_fits"].agg(lambda v: ", ".join(sorted({f for x in v if x for f in x.split(", ")})))
    frame["unconverged_fits"] = frame["run_id"].map(fits)
    frame["seed"] = frame["seed"].astype("int64")
    frame["step"] = frame["step"].astype("int64")
    frame["task_default"] = frame["task_default"].fillna(False).astype(bool)
    frame["task_order"] = pd.to_numeric(frame["task_order"], errors="coerce")
    front = [c for c in IDENTITY + SCALARS if c in frame]
    rest = sorted(c for c in frame if c not in front)
    frame = frame[front + rest].sort_values(["protocol", "suite", "task", "method", "seed", "step", "knob_key"],
                                            kind="stable").reset_index(drop=True)
    frame.attrs["damaged"] = damaged
    return frame


def protocols_in(frame: pd.DataFrame) -> list[str]:
    """The protocols present, in the store's order of protocols (tables render each on its own)."""
    present = set(frame["protocol"].dropna()) if not frame.empty else set()
    return [p for p in PROTOCOLS if p in present] + sorted(present - set(PROTOCOLS))


def describe_protocol(protocol: str) -> str:
    return {"published": "published protocol (each method as its authors ran it)",
            "controlled": "controlled protocol (one protocol for every method of a suite)"}.get(protocol, f"protocol {protocol}")


# ------------------------------------------------------------------------ the score of a run


@dataclass(frozen=True)
class ScoreRule:
    """Which evaluations of a run count as its score.

    final: the last evaluation (highest step) -- the default, as in CORL's "last".
    last:  the mean of the last k evaluations (smooths evaluation noise).
    best:  the best evaluation -- optimistic (selection on the test signal); only on request.
    """

    how: Literal["final", "last", "best"] = "final"
    k: int = 1

    def __post_init__(self) -> None:
        if self.how not in ("final", "last", "best"):
            raise AnalysisError(f"score rule must be final, last:K or best, got {self.how!r}")
        if not isinstance(self.k, int) or self.k < 1:
            raise AnalysisError(f"score rule k must be an integer >= 1, got {self.k!r}")

    @classmethod
    def parse(cls, text: str | ScoreRule | None) -> ScoreRule:
        """'final' | 'last:K' | 'best' (what --score accepts)."""
        if isinstance(text, ScoreRule):
            return text
        if text in (None, "", "final"):
            return cls()
        if text == "best":
            return cls("best")
        if isinstance(text, str) and text.startswith("last:"):
            try:
                return cls("last", int(text.split(":", 1)[1]))
            except ValueError:
                pass
        raise AnalysisError(f"--score {text!r}: use final, last:K (mean of the last K evaluations) or best")

    def describe(self) -> str:
        if self.how == "final" or (self.how == "last" and self.k == 1):
            return "score = final evaluation of each run"
        if self.how == "last":
            return f"score = mean of the last {self.k} evaluations of each run"
        return "score = BEST evaluation of each run (optimistic: selected on the evaluation signal)"


def value_columns(frame: pd.DataFrame) -> list[str]:
    """Numeric per-evaluation values that selection averages (scores, audits, speeds)."""
    extra = [c for c in frame if c.startswith(("audit/", "diagnostics/"))]
    return [c for c in SCALARS + extra if c in frame]


def select_scores(
    frame: pd.DataFrame,
    rule: ScoreRule | str | None = None,
    *,
    knobs: Literal["run", "all"] = "run",
    metric: str = "normalized_score",
) -> pd.DataFrame:
    """One row per (run, knob setting): the evaluations chosen by `rule` reduced to one score.

    knobs="run" keeps each run's own knob setting (what it was trained and evaluated with);
    knobs="all" keeps every setting of knob grids as its own row (for sweep plots).
    Columns: the identity and knob/config columns, `score` (= `metric` under the rule), the
    other value columns reduced the same way, `step` (last step used), `n_evals` (how many
    evaluations were averaged) and `complete` (the run reached its total_steps).
    """
    rule = ScoreRule.parse(rule)
    if frame.empty:
        return frame.assign(score=pd.Series(dtype=float), n_evals=pd.Series(dtype=int), complete=pd.Series(dtype=bool))
    data = frame[frame["is_run_knobs"].astype(bool)] if knobs == "run" else frame
    if data.empty:
        return data.assign(score=pd.Series(dtype=float), n_evals=pd.Series(dtype=int), complete=pd.Series(dtype=bool))
    values = value_columns(data)
    keys = ["run_id", "knob_key"]
    keep = [c for c in data if c not in values and c not in ("path", "source", "eval_wall_time", "eval_seed")]
    data = data.sort_values(keys + ["step"], kind="stable")
    if rule.how == "best":
        chosen = data.loc[data.groupby(keys, sort=False)[metric].idxmax()]
    else:
        chosen = data.groupby(keys, sort=False).tail(1 if rule.how == "final" else rule.k)
    numeric = chosen[keys].join(chosen[values].apply(pd.to_numeric, errors="coerce"))
    grouped = numeric.groupby(keys, sort=False)
    result = chosen.groupby(keys, sort=False).tail(1)[keep].set_index(keys)  # identity and the last step used
    result = result.join(grouped[values].mean()).join(grouped.size().rename("n_evals")).reset_index()
    result["score"] = result[metric]
    result["complete"] = result["step"] >= result["total_steps"].fillna(result["step"])
    result.attrs["score_rule"] = rule.describe()
    return result.sort_values(["protocol", "suite", "task_order", "task", "method", "seed"], kind="stable",
                              na_position="last").reset_index(drop=True)


def task_order(scores: pd.DataFrame) -> list[str]:
    """Tasks in suite-file order (tasks without a recorded order after, by name)."""
    if scores.empty:
        return []
    tasks = scores[["suite", "task", "task_order"]].drop_duplicates("task")
    tasks = tasks.assign(_o=tasks["task_order"].fillna(1e9)).sort_values(["suite", "_o", "task"])
    return list(tasks["task"])


def method_order(scores: pd.DataFrame, methods: Iterable[str] | None = None) -> list[str]:
    """Methods in the facts file's order (presets after their base), then any unknown ones."""
    present = list(dict.fromkeys(scores["method"])) if not scores.empty else []
    if methods is not None:
        return [m for m in methods if m in present]
    known = [m for m in facts.methods() if m in present]
    return known + sorted(m for m in present if m not in known)


def warn_incomplete(scores: pd.DataFrame) -> list[str]:
    """Notes for runs whose last evaluation is before their total_steps (interrupted runs)."""
    if scores.empty or "complete" not in scores:
        return []
    bad = scores[~scores["complete"].astype(bool)]
    if bad.empty:
        return []
    runs = sorted(set(bad["run_id"]))
    more = f" (+{len(runs) - 5} more)" if len(runs) > 5 else ""
    return [f"{len(runs)} run(s) stopped before their total_steps; their scores use their last evaluation: {', '.join(runs[:5])}{more}"]


def main_runs(scores: pd.DataFrame) -> tuple[pd.DataFrame, list[str]]:
    """One training config per (protocol, method, task) for the main tables: the runs whose
    records say `suite_default` (when code changed a suite's default between runs, several configs
    say so: the one written last wins); for records that do not know (written before schema v2),
    the config with the most runs. Other configs (training sweeps such as DROL's K) belong to the
    sweep plots; a note says how many runs were set aside and why."""
    if scores.empty:
        return scores, []
    keep, notes = [], []
    for (protocol, method, task), group in scores.groupby(["protocol", "method", "task"], sort=True):
        if group["config_key"].nunique() == 1:
            keep.append(group)
            continue
        flags = group["suite_default"].eq(True)
        pool = group[flags] if flags.any() else group
        stats = pool.groupby("config_key").agg(written=("timestamp", "max"), runs=("run_id", "nunique"))
        if flags.any():  # the newest suite-default config, then the most runs, then canonical order
            ranked = sorted(stats.itertuples(), key=lambda r: (-np.nan_to_num(r.written, nan=-np.inf), -r.runs, r.Index))
            why = ("the runs at the suite's default config" if len(stats) == 1 else
                   f"the newest of {len(stats)} configs their records call the suite's default: the default changed between runs")
        else:
            ranked = sorted(stats.itertuples(), key=lambda r: (-r.runs, r.Index))
            why = ("the config with the most runs: no run at the suite's default" if group["suite_default"].notna().all() else
                   "the config with the most runs: these records predate the suite_default field")
        chosen = pool[pool["config_key"] == ranked[0].Index]
        keep.append(chosen)
        notes.append(f"{method} on {task} ({protocol}): {len(group) - len(chosen)} run(s) with other training configs "
                     f"left out of the main tables (kept {why}; see the sweep plots)")
    out = pd.concat(keep).sort_index()
    out.attrs.update(scores.attrs)
    return out, notes


# ------------------------------------------------------------------ table membership by run length


@dataclass
class Membership:
    """The records that enter the tables and plots, and what was set apart.

    A cell (protocol, method, task) holds only runs of the protocol's own length for that method
    and task and evaluations over its own episode count: `cell_steps` / `cell_episodes` of the
    records (`default_run`, written from the protocol by the run). For records that predate the
    field, the cell's length is the (steps, episodes) most of its runs have (ties: the longer
    run, then more episodes), and `notes` say so. Everything else (a `--steps 200` try, a
    re-evaluation over other episodes) is never averaged in: `left_out` lists it, one row per
    (run, episode count), with the cell length it missed."""

    kept: pd.DataFrame
    left_out: pd.DataFrame
    notes: list[str]


LEFT_OUT_COLUMNS = ["protocol", "method", "task", "seed", "run_id", "total_steps", "eval_episodes", "cell_steps",
                    "cell_episodes", "records", "final_step", "final_score"]


def _cell_length(group: pd.DataFrame) -> tuple[float, float, bool]:
    """(steps, episodes, recorded) of one cell: what its records say the protocol runs (the newest
    record's word where they differ), else the length most of its runs have."""
    stated = group[group["cell_steps"].notna()]
    if not stated.empty:
        newest = stated.sort_values("timestamp", kind="stable").iloc[-1]
        return float(newest["cell_steps"]), float(newest["cell_episodes"]), True
    runs = group.groupby(["total_steps", "eval_episodes"], dropna=False)["run_id"].nunique().reset_index()
    runs = runs.sort_values(["run_id", "total_steps", "eval_episodes"], ascending=False, kind="stable")
    return float(runs["total_steps"].iloc[0]), float(runs["eval_episodes"].iloc[0]), False


def by_length(frame: pd.DataFrame) -> Membership:
    """Split evaluation records into the runs each table cell holds and the runs set apart
    (see Membership); `kept` and every table built from it carry `cell_steps` and `cell_episodes`."""
    if frame.empty:
        return Membership(frame, pd.DataFrame(columns=LEFT_OUT_COLUMNS), [])
    kept, left, inferred = [], [], []
    for (protocol, method, task), group in frame.groupby(["protocol", "method", "task"], sort=True, dropna=False):
        steps, episodes, recorded = _cell_length(group)
        if not recorded:
            inferred.append(f"{method} on {task} ({protocol})")
        group = group.assign(cell_steps=steps, cell_episodes=episodes)
        unknown = group["eval_episodes"].isna() & math.isnan(episodes)  # records with no episode count at all
        same = (group["total_steps"] == steps) & ((group["eval_episodes"] == episodes) | unknown)
        kept.append(group[same])
        for (run_id, n), part in group[~same].groupby(["run_id", "eval_episodes"], sort=True, dropna=False):
            final = part.sort_values("step", kind="stable").iloc[-1]
            left.append({"protocol": protocol, "method": method, "task": task, "seed": int(final["seed"]), "run_id": run_id,
                         "total_steps": final["total_steps"], "eval_episodes": n, "cell_steps": steps,
                         "cell_episodes": episodes, "records": len(part), "final_step": int(final["step"]),
                         "final_score": final["normalized_score"]})
    out = pd.concat(kept).sort_index()
    out.attrs.update(frame.attrs)
    notes = []
    if inferred:
        more = f" (+{len(inferred) - 3} more)" if len(inferred) > 3 else ""
        notes.append(f"{len(inferred)} cell(s) take their length from their runs (the records predate `default_run`): "
                     f"{'; '.join(inferred[:3])}{more}")
    return Membership(out, pd.DataFrame(left, columns=LEFT_OUT_COLUMNS), notes)
