"""How much online tuning hides in a score, and whether GEM's selection helps other actors.

Both read the stored records only (`benchmarks.store.iter_records`), including their
per-episode entries (`episodes[i].normalized_score`).

Online-tuning budget (issue 18.3). A CONFIGURATION SET is what one would tune online on one
task: the knob settings one checkpoint was evaluated at (an inference grid: GEM's N, lambda,
w_end; ISEP-FM's w, T), the training configs of one seed (a training grid: ISEP's lam, DROL's
K, LOM's M) or the seeds of one config. Each configuration is an arm whose episodes are its
stored per-episode normalised scores; its true score is their mean.

- Expected Online Performance (Kurenkov & Kolesnikov 2021): the expected best true score over k
  configurations drawn uniformly without replacement, in closed form on the sorted scores
  v_(1) <= ... <= v_(n):  E[max] = sum_i v_(i) C(i-1, k-1) / C(n, k).
- UCB bandit (Unifloral, Jackson et al. 2025): B evaluation episodes spent by UCB1 (each arm
  once in random order, then argmax mean + sqrt(2 ln t / n_i), episode scores scaled to [0, 1]
  by the set's range), each pull one stored episode of the arm drawn with replacement; after B
  episodes the arm with the best empirical mean is deployed and its TRUE score is reported.
  B = 0 deploys the default (the run's own knobs, the suite's default config, a random seed).
  `reps` replicates (one random state) give the mean and a 95% percentile interval; every
  replicate averages over the family's sets (tasks x seeds), so the interval is that of the
  suite mean. The oracle is the best true score of each set.

Cross-selection (issue 18.2): every proposer's own score against the same checkpoint's
proposals scored by GEM's rule at each N (records with source 'select', benchmarks/run/compose.py).
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from modebench.analysis import facts
from modebench.analysis.records import by_length, load_records
from modebench.analysis.render import Cell, Table, mean_std, num
from modebench.benchmarks.store import run_config, scan_store

BUDGETS = (0, 10, 50, 200, 1000)  # evaluation episodes spent on tuning (0: the default, no tuning)
EOP_K = (1, 2, 4, 8)  # configurations drawn for Expected Online Performance
BANDIT_REPS = 1000  # bandit replicates per family
SELECT_SOURCE = "select"  # benchmarks/run/compose.py's record source (kept literal: analysis reads records only)


# ----------------------------------------------------------------------------- estimators


def expected_max_of_k(values: Sequence[float], k: int) -> float:
    """E[max of k values drawn uniformly without replacement] = sum_i v_(i) C(i-1, k-1) / C(n, k)."""
    v = np.sort(np.asarray(values, dtype=float))
    n = len(v)
    if not 1 <= k <= n:
        raise ValueError(f"k must be in [1, {n}], got {k}")
    weights = np.array([math.comb(i, k - 1) for i in range(n)], dtype=float) / math.comb(n, k)
    return float(weights @ v)


def ucb_choices(pools: Sequence[np.ndarray], budgets: Sequence[int], reps: int, rng: np.random.Generator) -> np.ndarray:
    """The arm UCB1 deploys after each budget, [reps, len(budgets)] (-1 for budget 0: no tuning).

    pools: each arm's episode scores. All replicates run at once; replicate r pulls arms in its
    own random order first, then by UCB1 on scores scaled to [0, 1] by the set's range."""
    arms = len(pools)
    lengths = np.array([len(p) for p in pools])
    if arms == 0 or (lengths == 0).any():
        raise ValueError("every arm needs at least one stored episode")
    table = np.full((arms, lengths.max()), np.nan)
    for i, pool in enumerate(pools):
        table[i, : len(pool)] = pool
    low, high = np.nanmin(table), np.nanmax(table)
    table = (table - low) / (high - low) if high > low else np.zeros_like(table)
    horizon = max(budgets)
    order = np.argsort(rng.random((reps, arms)), axis=1)  # each replicate's first-pull order
    tie = rng.random((reps, arms)) * 1e-9  # random tie-break among equal means
    sums = np.zeros((reps, arms))
    counts = np.zeros((reps, arms))
    rows = np.arange(reps)
    out = np.full((reps, len(budgets)), -1, dtype=int)
    for t in range(1, horizon + 1):
        if t <= arms:
            arm = order[:, t - 1]
        else:
            ucb = sums / counts + np.sqrt(2.0 * math.log(t) / counts)
            arm = np.argmax(ucb + tie, axis=1)
        episode = (rng.random(reps) * lengths[arm]).astype(int)
        sums[rows, arm] += table[arm, episode]
        counts[rows, arm] += 1
        for j, budget in enumerate(budgets):
            if budget == t:
                means = np.where(counts > 0, sums / np.maximum(counts, 1), -np.inf)
                out[:, j] = np.argmax(means + tie, axis=1)
    return out


@dataclass
class ConfigSet:
    """The configurations of one tuning problem: one task, one unit (a run or a seed)."""

    suite: str
    task: str
    method: str
    family: str  # what varies: "knobs: N, lcb_lambda", "config: lam", "seeds"
    unit: str  # the run id (knob grid), "seed S" (training grid) or "all seeds"
    labels: list[str]
    pools: list[np.ndarray]  # per-episode normalised scores per configuration
    default: int | None  # the configuration deployed without tuning (None: a random one)

    @property
    def true(self) -> np.ndarray:
        return np.array([float(np.mean(p)) for p in self.pools])

    @property
    def default_score(self) -> float:
        return float(self.true.mean()) if self.default is None else float(self.true[self.default])


# ----------------------------------------------------------------------------- configuration sets


def _key(value: Any) -> str:
    return json.dumps(value, sort_keys=True, default=str)


def _episode_scores(record: dict[str, Any]) -> np.ndarray:
    return np.array([e["normalized_score"] for e in record.get("episodes") or []], dtype=float)


def _varying(dicts: Sequence[dict[str, Any]]) -> list[str]:
    """Fields every dict has whose values differ (a field only some have is a code-version
    difference, not a setting that was varied)."""
    names = sorted(set.intersection(*(set(d) for d in dicts))) if dicts else []
    return [n for n in names if len({_key(d[n]) for d in dicts}) > 1]


def _label(d: dict[str, Any], names: Sequence[str]) -> str:
    return ", ".join(f"{n}={d.get(n)}" for n in names)


def config_sets(records: Iterable[dict[str, Any]], run_knobs: dict[str, dict[str, Any]] | None = None) -> list[ConfigSet]:
    """Knob grids (per run), training grids (per seed) and seed sets (per config) in the records.

    Only each run's final evaluations count, composed ('select') records never (they are the
    cross-selection study); a configuration needs stored episodes. `run_knobs`: each run's own
    knobs (its config.json); else those of its train record, else of its first record."""
    run_knobs = run_knobs or {}
    final: dict[str, list[dict[str, Any]]] = {}
    for r in records:
        if r.get("source") == SELECT_SOURCE or not r.get("episodes"):
            continue
        final.setdefault(r["run_id"], []).append(r)
    own: list[dict[str, Any]] = []  # each run's own-knob final record
    sets: list[ConfigSet] = []
    for run_id, rs in sorted(final.items()):
        step = max(r["step"] for r in rs)
        rs = [r for r in rs if r["step"] == step]
        train = [r for r in rs if r.get("source") == "train"]
        own_knobs = run_knobs.get(run_id, (train[0] if train else rs[0]).get("knobs") or {})
        by_knobs: dict[str, dict[str, Any]] = {}
        for r in sorted(rs, key=lambda r: (r.get("source") != "train", r.get("timestamp", 0))):
            by_knobs.setdefault(_key(r.get("knobs") or {}), r)  # one record per setting (train first)
        own_record = by_knobs.get(_key(own_knobs))
        if own_record is not None:
            own.append(own_record)
        if len(by_knobs) > 1:
            knobs = [r.get("knobs") or {} for r in by_knobs.values()]
            names = _varying(knobs)
            keys = list(by_knobs)
            first = next(iter(by_knobs.values()))
            sets.append(ConfigSet(first["suite"], first["task"], first["method"], "knobs: " + ", ".join(names), run_id,
                                  [_label(k, names) for k in knobs], [_episode_scores(r) for r in by_knobs.values()],
                                  keys.index(_key(own_knobs)) if _key(own_knobs) in keys else None))
    groups: dict[tuple[str, str, str, str], list[dict[str, Any]]] = {}
    for r in own:  # runs of another protocol or dataset are not configurations of the same tuning problem
        groups.setdefault((r["suite"], r["task"], r["method"], _key([r.get("protocol"), r.get("dataset")])), []).append(r)
    for (suite, task, method, _), rs in sorted(groups.items()):
        configs = [r.get("config") or {} for r in rs]
        names = _varying(configs)
        if names:  # a training grid: per seed, the configs trained with that seed
            by_seed: dict[int, list[dict[str, Any]]] = {}
            for r in rs:
                by_seed.setdefault(r["seed"], []).append(r)
            for seed, srs in sorted(by_seed.items()):
                if len(srs) < 2:
                    continue
                srs = sorted(srs, key=lambda r: _key(r.get("config")))
                # the default: the run marked suite_default, else the one run not marked otherwise (records
                # written before the field existed carry None), else none (B = 0 draws a config at random)
                marked = [i for i, r in enumerate(srs) if r.get("suite_default")]
                unmarked = [i for i, r in enumerate(srs) if r.get("suite_default") is not False]
                default = marked[0] if len(marked) == 1 else unmarked[0] if len(unmarked) == 1 else None
                sets.append(ConfigSet(suite, task, method, "config: " + ", ".join(names), f"seed {seed}",
                                      [_label(r.get("config") or {}, names) for r in srs], [_episode_scores(r) for r in srs], default))
        by_config: dict[str, list[dict[str, Any]]] = {}
        for r in rs:
            by_config.setdefault(_key(r.get("config")), []).append(r)
        for config_key, crs in sorted(by_config.items()):
            if len(crs) >= 2:  # seeds of one config: deploying "the best seed" after online evaluation
                crs = sorted(crs, key=lambda r: r["seed"])
                sets.append(ConfigSet(suite, task, method, "seeds", "all seeds", [f"seed {r['seed']}" for r in crs],
                                      [_episode_scores(r) for r in crs], None))
    return sets


# ----------------------------------------------------------------------------- budget frame


def budget_frame(sets: Sequence[ConfigSet], budgets: Sequence[int] = BUDGETS, reps: int = BANDIT_REPS,
                 seed: int = 0) -> pd.DataFrame:
    """One row per (suite, method, family, budget): the deployed true score averaged over the
    family's sets, its mean over `reps` bandit replicates and 95% interval; budget 'oracle'
    and 'EOP k' rows carry exact values (no interval)."""
    rng = np.random.default_rng(seed)
    rows: list[dict[str, Any]] = []
    families: dict[tuple[str, str, str], list[ConfigSet]] = {}
    for s in sets:
        families.setdefault((s.suite, s.method, s.family), []).append(s)
    tuned = [b for b in budgets if b > 0]
    for (suite, method, family), group in sorted(families.items()):
        base = {"suite": suite, "method": method, "family": family, "n_sets": len(group), "n_tasks": len({s.task for s in group}),
                "n_configs": int(np.median([len(s.pools) for s in group])),
                "episodes_per_config": int(np.median([len(p) for s in group for p in s.pools]))}
        # replicate r's suite-level score: the mean over sets of the deployed arm's true score
        deployed = np.zeros((reps, len(tuned)))
        random_default = np.zeros(reps)
        for s in group:
            true = s.true
            if tuned:
                deployed += true[ucb_choices(s.pools, tuned, reps, rng)]
            random_default += true[rng.integers(0, len(true), reps)] if s.default is None else true[s.default]
        deployed /= len(group)
        random_default /= len(group)
        default_exact = float(np.mean([s.default_score for s in group]))
        if 0 in budgets:
            low, high = np.percentile(random_default, [2.5, 97.5]) if any(s.default is None for s in group) else (default_exact, default_exact)
            rows.append({**base, "budget": "0", "episodes": 0, "score": default_exact, "low": low, "high": high})
        for j, b in enumerate(tuned):
            low, high = np.percentile(deployed[:, j], [2.5, 97.5])
            rows.append({**base, "budget": str(b), "episodes": b, "score": float(deployed[:, j].mean()), "low": low, "high": high})
        oracle = float(np.mean([s.true.max() for s in group]))
        rows.append({**base, "budget": "oracle", "episodes": math.inf, "score": oracle, "low": oracle, "high": oracle})
        for k in EOP_K:
            if all(len(s.pools) >= k for s in group):
                value = float(np.mean([expected_max_of_k(s.true, k) for s in group]))
                rows.append({**base, "budget": f"EOP k={k}", "episodes": math.nan, "score": value, "low": value, "high": value})
    return pd.DataFrame(rows)


def budget_tables(frame: pd.DataFrame, reps: int = BANDIT_REPS, seed: int = 0) -> list[Table]:
    """One table per suite: rows method x family, columns default, each B, oracle, EOP."""
    tables = []
    if frame.empty:
        return tables
    for suite, part in frame.groupby("suite", sort=True):
        columns = list(dict.fromkeys(part["budget"]))
        header = ["Method", "Tuned over", "configs", "tasks x units"] + [_budget_header(c) for c in columns]
        table = Table(f"online_budget_{suite}", f"Score after online tuning, {suite} suite (mean and 95% interval)", header)
        for (method, family), rows in part.groupby(["method", "family"], sort=False):
            cells = {r.budget: r for r in rows.itertuples(index=False)}
            first = rows.iloc[0]
            out: list[Cell | str] = [facts.display(method), family, str(first["n_configs"]), str(first["n_sets"])]
            for c in columns:
                r = cells.get(c)
                if r is None:
                    out.append("")
                elif r.low == r.high:
                    out.append(num(r.score, 1))
                else:
                    out.append(f"{num(r.score, 1)} [{num(r.low, 1)}, {num(r.high, 1)}]")
            table.add(*out)
        table.notes = [
            ("A configuration set is what one would tune online on one task: the knob settings one checkpoint was evaluated at "
            "(per run), the training configs of one seed, or the seeds of one config. Scores are normalised, averaged over the "
            "family's tasks x units (tasks x units column)."),
            ("B = 0: the default (the run's own knobs; the suite's default config; for seeds a seed at random). "
            f"B = 10..1000: the true score of the configuration UCB1 deploys after B evaluation episodes (Unifloral), "
            f"each episode drawn from the arm's stored episodes; mean and 95% percentile interval over {reps} replicates, "
            f"random state {seed}. Oracle: the best configuration. EOP k: expected best of k configurations drawn at random "
            "(Kurenkov & Kolesnikov 2021, closed form)."),
            "True scores are the means of the same stored episodes the bandit draws from (no held-out evaluation).",
        ]
        table.data = part.reset_index(drop=True)
        tables.append(table)
    return tables


def _budget_header(budget: str) -> str:
    if budget == "0":
        return "B=0 (default)"
    if budget.isdigit():
        return f"B={budget}"
    return budget


# ----------------------------------------------------------------------------- cross-selection


def cross_selection_frame(records: Iterable[dict[str, Any]]) -> pd.DataFrame:
    """One row per (proposer run, N): the composed score and the proposer's own score (its own-knob
    evaluation at the same step). Only the most common setting of the other selection knobs."""
    records = list(records)
    own: dict[tuple[str, int, str], float] = {}
    for r in records:
        if r.get("source") != SELECT_SOURCE:
            own.setdefault((r["run_id"], r["step"], _key(r.get("knobs") or {})), r["normalized_score"])
    rows = []
    for r in records:
        if r.get("source") != SELECT_SOURCE:
            continue
        sel = r["selection"]
        knobs = dict(sel["knobs"])
        n = knobs.pop("N")
        rows.append({"suite": r["suite"], "task": r["task"], "method": r["method"], "seed": r["seed"], "run_id": r["run_id"],
                     "selector_run_id": sel["selector_run_id"], "N": int(n), "other_knobs": _key(knobs),
                     "score": r["normalized_score"], "n_episodes": len(r.get("episodes") or []),
                     "alone": own.get((r["run_id"], r["step"], _key(sel["proposer_knobs"])), math.nan)})
    frame = pd.DataFrame(rows)
    if frame.empty:
        return frame
    common = frame["other_knobs"].value_counts().idxmax()
    out = frame[frame["other_knobs"] == common].reset_index(drop=True)
    out.attrs["other_knobs"] = common
    out.attrs["left_out"] = int(len(frame) - len(out))
    return out


def _mean_std(values: pd.Series) -> tuple[float, float, int]:
    v = values.dropna()
    return (float(v.mean()) if len(v) else math.nan, float(v.std(ddof=1)) if len(v) > 1 else math.nan, len(v))


def cross_selection_tables(frame: pd.DataFrame) -> list[Table]:
    """Per suite: rows proposer per task (and the suite mean), columns alone and each N."""
    tables = []
    if frame.empty:
        return tables
    for suite, part in frame.groupby("suite", sort=True):
        ns = sorted(part["N"].unique())
        methods = list(dict.fromkeys(part.sort_values(["method"])["method"]))
        header = ["Proposer", "alone"] + [f"N={n}" if n else "N=0 (own action)" for n in ns] + ["best N - alone"]
        table = Table(f"cross_selection_{suite}", f"Does GEM's selection help every proposer? {suite} suite "
                      "(normalised score, mean ± std over seeds)", header)
        data = []
        tasks = list(dict.fromkeys(part["task"]))
        # suite means per seed first (tasks averaged within a seed), then mean ± std over seeds
        scopes = [(t, part[part["task"] == t]) for t in tasks] + [("suite mean", part)]
        for scope, rows in scopes:
            table.section(scope if scope == "suite mean" else scope.split("/", 1)[-1])
            for method in methods:
                m = rows[rows["method"] == method]
                if m.empty:
                    continue
                per_seed = m.groupby(["seed", "N"])[["score", "alone"]].mean().reset_index()
                alone = _mean_std(per_seed.groupby("seed")["alone"].first())
                cells = {n: _mean_std(per_seed[per_seed["N"] == n]["score"]) for n in ns}
                tuned = [n for n in ns if n > 0]
                best = max(tuned, key=lambda n: cells[n][0]) if tuned else None
                gain = cells[best][0] - alone[0] if best is not None else math.nan
                top = max([alone[0]] + [cells[n][0] for n in ns])
                row: list[Cell | str] = [facts.display(method), Cell(mean_std(*alone, decimals=1), bold=alone[0] == top)]
                row += [Cell(mean_std(*cells[n], decimals=1), bold=cells[n][0] == top) for n in ns]
                row.append(f"{num(gain, 1, signed=True)} (N={best})" if best is not None else "")
                table.add(*row)
                for n in ns:
                    data.append({"suite": suite, "scope": scope, "method": method, "N": n, "score": cells[n][0],
                                 "score_std": cells[n][1], "n_seeds": cells[n][2], "alone": alone[0], "alone_std": alone[1]})
        table.notes = [
            ("alone: the proposer's own evaluation (its run's knobs, final step). N: the same checkpoint's own action plus N "
            "proposals, scored by the GEM run on the same task, data and seed (LCB over its critic ensemble, z-scored support "
            "under its behaviour density with the w_p schedule, top-k; `modebench cross-select`). N=0 is the proposer's own "
            "action (equal to alone for every proposer but GEM, whose N=0 is its anchor mu_k*)."),
            f"Other selection knobs: {_pretty(frame.attrs.get('other_knobs', ''))}. Bold: the row's best.",
        ] + ([f"{frame.attrs['left_out']} record(s) with other selection knobs left out."] if frame.attrs.get("left_out") else [])
        table.data = pd.DataFrame(data)
        tables.append(table)
    return tables


def _pretty(key: str) -> str:
    try:
        return ", ".join(f"{k}={v}" for k, v in json.loads(key).items())
    except (TypeError, ValueError):
        return key


# ----------------------------------------------------------------------------- plots


def _palette(methods: Sequence[str]) -> dict[str, Any]:
    """Each method's colour from algorithms/methods.yaml (analysis/facts.py), as every plot."""
    return {m: facts.color(m) for m in methods}


def _categorical_x(ax, values: Sequence[Any]) -> dict[Any, int]:
    """Equally spaced positions for budgets / N (a log axis cannot show 0 beside 1000)."""
    ax.set_xticks(range(len(values)))
    ax.set_xticklabels([str(v) for v in values])
    ax.set_xlim(-0.3, len(values) - 0.7)
    return {v: i for i, v in enumerate(values)}


def plot_budget(frame: pd.DataFrame, out: Path, formats: Sequence[str]) -> list[Path]:
    """Per suite: score vs B per method and family, 95% band; oracle dashed."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    written = []
    for suite, part in frame.groupby("suite", sort=True):
        families = list(dict.fromkeys(part["family"].map(_family_kind)))
        ncols = min(2, len(families))
        nrows = math.ceil(len(families) / ncols)
        fig, axes = plt.subplots(nrows, ncols, figsize=(7.2 * ncols, 3.9 * nrows), squeeze=False)
        for ax in list(axes.flat)[len(families):]:
            ax.set_visible(False)
        colors = _palette(part["method"].unique())
        for ax, kind in zip(axes.flat, families):
            sub = part[part["family"].map(_family_kind) == kind]
            position = _categorical_x(ax, [b for b in BUDGETS])
            for (method, family), rows in sub.groupby(["method", "family"], sort=True):
                curve = rows[rows["budget"].str.isdigit()].sort_values("episodes")
                x = [position[int(b)] for b in curve["episodes"]]
                label = facts.display(method) if kind == "seeds" else f"{facts.display(method)} ({family.split(': ', 1)[-1]})"
                ax.plot(x, curve["score"], marker="o", color=colors[method], label=label)
                ax.fill_between(x, curve["low"], curve["high"], color=colors[method], alpha=0.15, linewidth=0)
                oracle = rows[rows["budget"] == "oracle"]["score"]
                if len(oracle):
                    ax.axhline(float(oracle.iloc[0]), color=colors[method], linestyle="--", linewidth=1)
            ax.set_xlabel("online evaluation episodes B (0 = default)")
            ax.set_ylabel("normalised score of the deployed config")
            ax.set_title(f"{suite}: tuned over {kind}", fontsize=11)
            ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8, frameon=False)
        fig.text(0.01, -0.02, "UCB1 over stored episodes, mean and 95% interval; dashed: oracle best config", fontsize=8, color="0.3")
        fig.tight_layout()
        written += _save(fig, out / f"online_budget_{suite}", formats)
        plt.close(fig)
    return written


def _family_kind(family: str) -> str:
    return family.split(":", 1)[0]


def plot_cross_selection(frame: pd.DataFrame, out: Path, formats: Sequence[str]) -> list[Path]:
    """Per suite: one panel per task and the suite mean; score vs N per proposer (solid), alone dashed."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    written = []
    for suite, part in frame.groupby("suite", sort=True):
        tasks = list(dict.fromkeys(part["task"]))
        scopes = [(t.split("/", 1)[-1], part[part["task"] == t]) for t in tasks] + [("suite mean", part)]
        ncols = min(3, len(scopes))
        nrows = math.ceil(len(scopes) / ncols)
        fig, axes = plt.subplots(nrows, ncols, figsize=(4.2 * ncols, 3.3 * nrows), squeeze=False)
        colors = _palette(part["method"].unique())
        ns = sorted(part["N"].unique())
        for ax, (title, rows) in zip(axes.flat, scopes):
            position = _categorical_x(ax, ns)
            for method, m in rows.groupby("method", sort=True):
                per_seed = m.groupby(["seed", "N"])[["score", "alone"]].mean().reset_index()
                curve = per_seed.groupby("N")["score"].agg(["mean", "std"]).reindex(ns)
                x = [position[n] for n in curve.index]
                ax.plot(x, curve["mean"], marker="o", color=colors[method], label=facts.display(method))
                ax.fill_between(x, curve["mean"] - curve["std"].fillna(0), curve["mean"] + curve["std"].fillna(0),
                                color=colors[method], alpha=0.12, linewidth=0)
                ax.axhline(float(per_seed.groupby("seed")["alone"].first().mean()), color=colors[method], linestyle="--", linewidth=1)
            ax.set_title(title, fontsize=11)
            ax.set_xlabel("N proposals scored by GEM")
            ax.set_ylabel("normalised score")
        for ax in list(axes.flat)[len(scopes):]:
            ax.set_visible(False)
        handles, labels = axes.flat[0].get_legend_handles_labels()
        fig.legend(handles, labels, loc="center left", bbox_to_anchor=(1.0, 0.5), frameon=False, title="proposer")
        fig.suptitle(f"{suite}: each proposer with GEM's selection (solid, mean ± std over seeds) vs alone (dashed)", y=1.02)
        fig.tight_layout()
        written += _save(fig, out / f"cross_selection_{suite}", formats)
        plt.close(fig)
    return written


def _save(fig, stem: Path, formats: Sequence[str]) -> list[Path]:
    stem.parent.mkdir(parents=True, exist_ok=True)
    from modebench.analysis.plots import (
        write_figure,  # matplotlib only where a figure is drawn
    )

    return [write_figure(fig, stem.with_suffix(f".{fmt}")) for fmt in formats]


# ----------------------------------------------------------------------------- entry points (tables.py / plots.py call these)


def _records(root: str | Path, protocol: str | None,
             log: Callable[[str], None] = print) -> tuple[list[dict[str, Any]], dict[str, dict[str, Any]]]:
    """The evaluation records of `protocol` under `root` that the main tables' cells hold (runs of
    their protocol's own length and evaluation episodes: analysis.records.by_length), and each
    run's own knobs (its config.json). Damaged files are named in one line, never raised: the
    studies' tables follow the same membership and store reader as every other table."""
    scan = scan_store(root, "evaluation")
    kept_paths = set(by_length(load_records(root, scan)).kept["path"].astype(str))
    records, run_knobs = [], {}
    for path, record in scan.records:
        if str(path) not in kept_paths:
            continue
        if protocol is None or record.get("protocol") == protocol:
            records.append(record)
            if record["run_id"] not in run_knobs:
                config = run_config(path)
                if config is not None and "knobs" in config:
                    run_knobs[record["run_id"]] = config["knobs"]
    if scan.damaged:
        # counted, not named again: the tables' own reading names each damaged file on one line
        log(f"cross_selection / online_budget: {len(scan.damaged)} damaged record(s) left out (`modebench tables` names each)")
    return records, run_knobs


def write_tables(root: str | Path, out: str | Path, *, protocol: str | None = None, seed: int = 0, reps: int = BANDIT_REPS,
                 log: Callable[[str], None] = print) -> list[Path]:
    """The cross-selection and online-budget tables from the records under `root` (of one protocol)."""
    records, run_knobs = _records(root, protocol, log)
    tables = cross_selection_tables(cross_selection_frame(records))
    tables += budget_tables(budget_frame(config_sets(records, run_knobs), reps=reps, seed=seed), reps=reps, seed=seed)
    written = [p for table in tables for p in table.write(out)]
    if not tables:
        log("tables: cross_selection / online_budget skipped: no 'select' records (`modebench cross-select`) and no "
            "configuration sets (knob grids, training grids or seeds with per-episode records)")
    return written


def write_plots(root: str | Path, out: str | Path, formats: Sequence[str] = ("png",), *, protocol: str | None = None,
                seed: int = 0, reps: int = BANDIT_REPS, log: Callable[[str], None] = print) -> list[Path]:
    """The cross-selection and online-budget figures from the records under `root` (of one protocol)."""
    records, run_knobs = _records(root, protocol, log)
    written: list[Path] = []
    cross = cross_selection_frame(records)
    if not cross.empty:
        written += plot_cross_selection(cross, Path(out), formats)
    budget = budget_frame(config_sets(records, run_knobs), reps=reps, seed=seed)
    if not budget.empty:
        written += plot_budget(budget, Path(out), formats)
    if not written:
        log("plots: cross_selection / online_budget skipped: no 'select' records and no configuration sets in the store")
    return written
