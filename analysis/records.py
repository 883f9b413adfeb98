"""The results store as one tidy DataFrame, and the explicit rule for "the score" of a run.

`load_records(root)` reads every `**/records/*.json` under `root` (single runs, `modebench eval`
knob grids and sweeps all write the same record format, see benchmarks/store.py) into one
row per evaluation record:

- identity: run_id, method, base_method, suite, task, dataset, seed, step, total_steps, source,
  config_hash, git_revision, device, timestamp, path;
- scores: normalized_score, normalized_std, return_mean, return_std, success_rate,
  episode_length_mean, n_episodes, eval_wall_time, eval_env_steps_per_second, updates_per_second;
- `knob/<name>` for every inference knob, `config/<name>` for every training config field,
  `audit/<name>` for every audit (episode means, e.g. audit/violation), training metrics under
  their own namespaced names (`training/...`, `time/...`) and `diagnostics/...` when recorded;
- knob_key / config_key (canonical JSON of the knobs / config), run_knob_key (the knobs the run
  was trained and evaluated with), is_run_knobs, and setting (the knobs that differ from the
  run's own, e.g. "N=64", empty for the run's own).

`select_scores(frame, rule)` reduces the evaluations of each (run, knob setting) to one score:
the final evaluation (default), the mean of the last k evaluations, or -- only when asked for by
name -- the best one. The rule's description travels with every table and plot.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd

REPO_ROOT = Path(__file__).resolve().parents[1]

IDENTITY = ["run_id", "method", "base_method", "suite", "task", "dataset", "seed", "step", "total_steps", "source"]
SCALARS = [
    "normalized_score", "normalized_std", "return_mean", "return_std", "success_rate", "episode_length_mean",
    "n_episodes", "eval_wall_time", "eval_env_steps_per_second", "updates_per_second", "train_wall_time",
]
META = ["config_hash", "git_revision", "device", "timestamp", "schema_version", "eval_seed", "path"]
KEYS = ["knob_key", "config_key", "run_knob_key", "is_run_knobs", "setting", "task_order", "default_task"]


def default_root() -> Path:
    """The results root: $MODEBENCH_RESULTS, else results/ (the store's default)."""
    return Path(os.environ.get("MODEBENCH_RESULTS", "results"))


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
        if key in ("knobs", "config", "audits", "training_metrics", "diagnostics", "episodes"):
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
    for name, value in (record.get("diagnostics") or {}).items():
        row[name if name.startswith("diagnostics/") else f"diagnostics/{name}"] = value
    row["n_episodes"] = len(record.get("episodes") or [])
    row["knob_key"] = canonical(knobs)
    row["config_key"] = canonical(config)
    row["path"] = str(path)
    return row


def _run_config(records_dir: Path) -> dict[str, Any] | None:
    path = records_dir.parent / "config.json"
    if path.exists():
        try:
            return json.loads(path.read_text())
        except json.JSONDecodeError:
            return None
    return None


def _setting_label(knobs: dict[str, Any], run_knobs: dict[str, Any] | None) -> str:
    if run_knobs is None:
        return ", ".join(f"{k}={v}" for k, v in sorted(knobs.items()))
    diff = {k: v for k, v in knobs.items() if run_knobs.get(k) != v}
    return ", ".join(f"{k}={v}" for k, v in sorted(diff.items()))


def _suite_tasks(suite: str) -> dict[str, Any] | None:
    try:
        from benchmarks.tasks.suites import load_suite

        return load_suite(suite)
    except (KeyError, ValueError, OSError):  # a suite that is not (or no longer) a data file here: no metadata
        return None


def load_records(root: str | Path | None = None, *, pattern: str = "**/records/*.json") -> pd.DataFrame:
    """Every evaluation record under `root` as one row (see the module docstring for columns)."""
    root = Path(root) if root is not None else default_root()
    paths = sorted(root.glob(pattern)) if root.exists() else []
    raw: list[tuple[dict[str, Any], Path]] = []
    for path in paths:
        try:
            raw.append((json.loads(path.read_text()), path))
        except json.JSONDecodeError as err:
            raise ValueError(f"damaged record {path}: {err}") from err
    if not raw:
        return pd.DataFrame(columns=IDENTITY + SCALARS + META + KEYS)

    # the knobs each run was trained with: its train records, else its config.json, else the
    # only knob setting it has; a run whose own knobs cannot be told has none marked
    run_knobs: dict[str, dict[str, Any] | None] = {}
    by_run: dict[str, list[dict[str, Any]]] = {}
    for record, path in raw:
        by_run.setdefault(record["run_id"], []).append(record)
        if record.get("source") == "train" and record["run_id"] not in run_knobs:
            run_knobs[record["run_id"]] = record.get("knobs") or {}
    for record, path in raw:
        rid = record["run_id"]
        if rid not in run_knobs:
            config = _run_config(path.parent)
            if config is not None and "knobs" in config:
                run_knobs[rid] = config["knobs"]
    for rid, records in by_run.items():
        if rid not in run_knobs:
            keys = {canonical(r.get("knobs") or {}) for r in records}
            run_knobs[rid] = (records[0].get("knobs") or {}) if len(keys) == 1 else None

    rows = []
    for record, path in raw:
        row = _flatten(record, path)
        own = run_knobs.get(record["run_id"])
        row["run_knob_key"] = canonical(own) if own is not None else None
        row["is_run_knobs"] = own is not None and row["knob_key"] == row["run_knob_key"]
        row["setting"] = _setting_label(record.get("knobs") or {}, own)
        rows.append(row)
    frame = pd.DataFrame(rows)
    for column in IDENTITY + SCALARS + META + KEYS:
        if column not in frame:
            frame[column] = np.nan
    frame["seed"] = frame["seed"].astype("int64")
    frame["step"] = frame["step"].astype("int64")

    # task order and default flags from the suite files (tasks of unknown suites keep file order)
    order, default = {}, {}
    for suite in frame["suite"].dropna().unique():
        tasks = _suite_tasks(str(suite))
        for i, task in enumerate((tasks or {}).values()):
            order[task.id] = i
            default[task.id] = bool(task.default)
    frame["task_order"] = frame["task"].map(order)
    frame["default_task"] = frame["task"].map(default).fillna(False).astype(bool)
    front = [c for c in IDENTITY + SCALARS if c in frame]
    rest = sorted(c for c in frame if c not in front)
    return frame[front + rest].sort_values(["suite", "task", "method", "seed", "step", "knob_key"], kind="stable").reset_index(drop=True)


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
        from algorithms.config import require

        require(self.how in ("final", "last", "best"), f"score rule must be final, last:K or best, got {self.how!r}")
        require(isinstance(self.k, int) and self.k >= 1, f"score rule k must be an integer >= 1, got {self.k!r}")

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
        from algorithms.config import ConfigError

        raise ConfigError(f"--score {text!r}: use final, last:K (mean of the last K evaluations) or best")

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
    keep = [c for c in data if c not in values and c not in ("timestamp", "path", "source", "eval_wall_time", "eval_seed")]
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
    return result.sort_values(["suite", "task_order", "task", "method", "seed"], kind="stable", na_position="last").reset_index(drop=True)


def task_order(scores: pd.DataFrame) -> list[str]:
    """Tasks in suite-file order (unknown suites after, alphabetically)."""
    if scores.empty:
        return []
    tasks = scores[["suite", "task", "task_order"]].drop_duplicates("task")
    tasks = tasks.assign(_o=tasks["task_order"].fillna(1e9)).sort_values(["suite", "_o", "task"])
    return list(tasks["task"])


def method_order(scores: pd.DataFrame, methods: Iterable[str] | None = None) -> list[str]:
    """Methods in registry order (presets after their base), then any unknown ones."""
    present = list(dict.fromkeys(scores["method"])) if not scores.empty else []
    if methods is not None:
        return [m for m in methods if m in present]
    try:
        from algorithms.registry import METHODS

        registry = list(METHODS)
    except ImportError:  # the registry is optional for reading stored records
        registry = []
    known = [m for m in registry if m in present]
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


def _default_config_key(method: str, task: str) -> str | None:
    """The config `modebench bench` would train `method` on `task` with (suite overrides applied)."""
    try:
        from algorithms.config import to_dict
        from benchmarks.run.train import resolve_method
        from benchmarks.tasks.suites import get_task

        return canonical(to_dict(resolve_method(method, get_task(task)).config))
    except (KeyError, ValueError, ImportError, AttributeError, OSError):  # unknown here: fall back to the most common config
        return None


def main_runs(scores: pd.DataFrame) -> tuple[pd.DataFrame, list[str]]:
    """One training config per (method, task) for the main tables: the suite's default config
    when it was run, else the config with the most runs. Other configs (training sweeps such as
    DROL's K) belong to the sweep plots; a note says how many runs were set aside."""
    if scores.empty:
        return scores, []
    keep, notes = [], []
    for (method, task), group in scores.groupby(["method", "task"], sort=False):
        configs = group["config_key"].value_counts(sort=False)
        if len(configs) == 1:
            keep.append(group)
            continue
        default = _default_config_key(method, task)
        if default in configs.index:
            chosen, why = default, "the suite's default config"
        elif default is not None:  # code changed since (e.g. a new config field): the config closest to today's default
            want = json.loads(default)

            def distance(key: str, want: dict = want, configs: pd.Series = configs) -> tuple[int, int]:
                have = json.loads(key)
                return (sum(have.get(k) != want.get(k) for k in set(have) | set(want)), -int(configs[key]))

            chosen = min(configs.index, key=distance)
            why = "the config closest to the suite's current default"
        else:
            chosen, why = configs.index[int(np.argmax(configs.to_numpy()))], "the config with the most runs"
        keep.append(group[group["config_key"] == chosen])
        notes.append(f"{method} on {task}: {int((group['config_key'] != chosen).sum())} run(s) with other training configs "
                     f"left out of the main tables (kept {why}; see the sweep plots)")
    out = pd.concat(keep).sort_index()
    out.attrs.update(scores.attrs)
    return out, notes
