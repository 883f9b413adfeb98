"""The papers' figures rebuilt from the results store (PNG and PDF, plus the plotted numbers as CSV).

- gem_budget_suite: score / Violation / CollapseDist versus the candidate budget N, suite means
  (GEM Fig. 2; like the paper, no error bars at suite level); gem_budget_tasks_<metric>: the
  same per task with mean ± std bands over seeds (GEM Fig. A.3). Any method with a knob N.
- gem_wp_frontier: score versus Violation over the terminal support weight w_end at fixed N
  (GEM Fig. 19), suite means, points labelled by w_end.
- drol_k, lom_m, isep_lambda (the facts file's config_sweeps): score versus K (DROL's config `num_candidates`; DROL Fig. 4), dashed line at the
  default K = 16, the best K circled in red.
- lom_m: score versus M (LOM's config `num_modes`; LOM Fig. 3).
- isep_lambda: score versus the interpolation λ (ISEP's config `lam`; ISEP Fig. 5).
- learning_curves: score versus training step, mean ± std band over seeds.
- aggregates_<scope>, performance_profile_<scope>, probability_of_improvement_<scope>: the
  rliable plots (analysis/stats.py).

Each protocol's figures go to `<out>/<protocol>/` and say the protocol in their title; runs of
different protocols are never drawn together. Every method has its own colour (algorithms/methods.yaml,
read by analysis/facts.py), and legends sit outside the axes, right of the figure.
A figure whose data is not in the store is skipped with a printed note that says what is missing.
Knob sweeps vary one knob around each run's own knobs (the rest equal); config sweeps compare
runs whose configs differ only in that field.
"""

from __future__ import annotations

import io
import json
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns
from modebench.analysis import facts, stats
from modebench.analysis.records import (
    ScoreRule,
    by_length,
    default_root,
    load_records,
    main_runs,
    method_order,
    protocols_in,
    select_scores,
    task_order,
)
from modebench.benchmarks.store import atomic_write_bytes

FORMATS = ("png", "pdf")
POI_ROWS = 14  # most method pairs drawn in one probability-of-improvement panel
AUDIT_LABELS = {"score": "Normalised score", "audit/violation": "Violation", "audit/collapse_dist": "CollapseDist",
                "audit/support_z": "SupportZ"}


def write_figure(fig: plt.Figure, path: Path) -> Path:
    """Write `fig` atomically in the format of `path`'s suffix, with no creation date in PDF / SVG,
    so the same records give byte-identical figures."""
    fmt = path.suffix.lstrip(".")
    buffer = io.BytesIO()
    fig.savefig(buffer, format=fmt, dpi=150, bbox_inches="tight",
                metadata={"pdf": {"CreationDate": None}, "svg": {"Date": None}}.get(fmt))
    atomic_write_bytes(path, buffer.getvalue())
    return path


@dataclass(frozen=True)
class Sweep:
    """A training-config sweep figure (one entry of the facts file's config_sweeps)."""

    name: str
    title: str
    param: str  # "config/<field>"
    label: str
    methods: tuple[str, ...] | None = None  # base methods; None = every base method that has the column
    default: float | None = None
    log2: bool = False
    mark_best: bool = False

    @classmethod
    def all(cls) -> list[Sweep]:
        return [cls(f["name"], f["title"], f"config/{f['field']}", f["label"], tuple(f.get("methods") or ()) or None,
                    f.get("default"), bool(f.get("log2", False)), bool(f.get("mark_best", False)))
                for f in facts.facts()["config_sweeps"]]


# What each figure shows and how to read it, printed under it in the report (`caption`); keyed by the
# file stem or its prefix before `_<scope>` (the suite or task set, filled in as {scope}). The
# studies' figures (studies/budget.py) are named here too, so every figure of a report has one.
CAPTIONS = {
    "learning_curves": "Normalised score against training step, one panel per task: mean (line) and ± std (band) over seeds.",
    "gem_budget_suite": ("Suite means of the score, Violation and CollapseDist against the candidate budget N on a log2 "
                         "axis (GEM Fig. 2; no error bars at suite level, as in the paper)."),
    "gem_budget_tasks": "{scope} against the candidate budget N, one panel per task: mean ± std over seeds (GEM Fig. A.3).",
    "gem_wp_frontier": ("Score against Violation as the terminal support weight w_end varies at fixed N, suite means, "
                        "each point labelled by its w_end; an X marks w_p = 0, no support term (GEM Fig. 19)."),
    "aggregates": ("Median, IQM, mean and optimality gap of the normalised score over every run on {scope}: dot = point "
                   "estimate, bar = 95% stratified-bootstrap interval (rliable). Higher is better, except the optimality gap."),
    "performance_profile": ("Fraction of runs on {scope} that score above each threshold τ, with 95% bootstrap bands "
                            "(rliable's performance profile); a curve lying above another dominates it."),
    "probability_of_improvement": ("P(X > Y): the chance that a run of method X beats a run of method Y on a task of {scope} "
                                   "drawn at random, point and 95% interval (rliable); right of the dashed 0.5 line, X is better."),
    "cross_selection": ("{scope}: each proposer's score when GEM's selection rule picks among N of its samples (solid, "
                        "mean ± std over seeds) against the proposer alone (dashed), per task and as the suite mean."),
    "online_budget": ("{scope}: the true score of the configuration a UCB1 bandit deploys after B online evaluation "
                      "episodes (mean and 95% interval), per method and tuned family; dashed: the oracle best configuration."),
}


def caption(stem: str) -> str | None:
    """The caption of the figure file `stem` (None for a figure nothing here describes)."""
    for sweep in Sweep.all():
        if stem == sweep.name:
            marks = (f"; dashed line at the default {sweep.default:g}" if sweep.default is not None else "") + (
                "; the best value circled in red" if sweep.mark_best else "")
            return f"{sweep.title}: normalised score against {sweep.label}, one panel per task, mean ± std over seeds{marks}."
    for prefix, text in CAPTIONS.items():
        if stem == prefix or stem.startswith(prefix + "_"):
            scope = stem[len(prefix) + 1:]
            if prefix == "gem_budget_tasks":
                scope = AUDIT_LABELS.get(f"audit/{scope}", AUDIT_LABELS.get(scope, scope))
            return text.format(scope=scope.replace("_", " ") or "every task")
    return None


class Plotter:
    """Holds the store's scores, the palette and the output folder; each method writes one figure."""

    def __init__(self, frame: pd.DataFrame, out: Path, rule: ScoreRule | str | None = None, formats: Sequence[str] = FORMATS,
                 methods: Sequence[str] | None = None, reps: int = stats.REPS, seed: int = 0, log: Callable[[str], None] = print):
        protocols = protocols_in(frame)
        if len(protocols) > 1:
            raise ValueError(f"a Plotter was given records of protocols {protocols}; give it one protocol's records")
        self.protocol = protocols[0] if protocols else "unknown"
        frame = by_length(frame).kept  # only runs of their cell's length, as in the tables (left_out_runs lists the rest)
        self.frame = frame
        self.rule = ScoreRule.parse(rule)
        self.sweep_scores = select_scores(frame, self.rule)
        self.scores, _ = main_runs(self.sweep_scores)
        self.all_scores = select_scores(frame, self.rule, knobs="all")
        self.methods = method_order(self.scores, methods)
        self.out = Path(out)
        self.formats = tuple(formats)
        self.reps, self.seed = reps, seed
        self.log = log
        self.written: list[Path] = []
        self.colors = {m: facts.color(m) for m in method_order(self.all_scores)}
        sns.set_theme(context="paper", style="whitegrid", font_scale=1.2)
        plt.rcParams.update({"figure.dpi": 150, "savefig.bbox": "tight", "axes.titlesize": 11, "legend.fontsize": 9})

    # ------------------------------------------------------------------ helpers

    def skip(self, name: str, why: str) -> None:
        self.log(f"plots ({self.protocol}): {name} skipped: {why}")

    def save(self, fig: plt.Figure, name: str, data: pd.DataFrame | None = None) -> None:
        self.out.mkdir(parents=True, exist_ok=True)
        fig.text(0.01, -0.01, f"{self.protocol} protocol; {self.rule.describe()}", fontsize=7, color="0.4", ha="left", va="top")
        for fmt in self.formats:
            self.written.append(write_figure(fig, self.out / f"{name}.{fmt}"))
        plt.close(fig)
        if data is not None:
            path = self.out / f"{name}.csv"
            atomic_write_bytes(path, data.to_csv(index=False).encode())
            self.written.append(path)

    @staticmethod
    def grid(n: int, ncols: int = 4, size: tuple[float, float] = (3.6, 2.8)) -> tuple[plt.Figure, list[plt.Axes]]:
        ncols = max(1, min(ncols, n))
        nrows = math.ceil(n / ncols)
        fig, axes = plt.subplots(nrows, ncols, figsize=(size[0] * ncols, size[1] * nrows), squeeze=False)
        flat = list(axes.flat)
        for ax in flat[n:]:
            ax.set_visible(False)
        return fig, flat[:n]

    @staticmethod
    def set_x(ax: plt.Axes, values: Sequence[float], log2: bool) -> None:
        values = sorted({float(v) for v in values})
        if log2 and len(values) > 1:
            ax.set_xscale("symlog", base=2, linthresh=1) if min(values) <= 0 else ax.set_xscale("log", base=2)
            ax.set_xticks(values)
            ax.set_xticklabels([f"{v:g}" for v in values], rotation=45 if len(values) > 5 else 0)
            ax.minorticks_off()

    def title(self, text: str) -> str:
        return f"{text} [{self.protocol} protocol]"

    def legend(self, fig: plt.Figure, axes: Sequence[plt.Axes]) -> None:
        """One legend for the figure, right of every axis (never over the data)."""
        handles, labels = {}, []
        for ax in axes:
            for h, label in zip(*ax.get_legend_handles_labels()):
                if label not in handles:
                    handles[label] = h
                    labels.append(label)
        if handles:
            fig.legend([handles[x] for x in labels], labels, loc="center left", bbox_to_anchor=(1.0, 0.5), frameon=False)

    # ------------------------------------------------------------------ sweeps

    def knob_sweep(self, knob: str) -> pd.DataFrame:
        """Rows (all knob settings) whose knobs differ from their run's own knobs at most in `knob`."""
        column = f"knob/{knob}"
        if column not in self.all_scores:
            return self.all_scores.iloc[0:0]
        rows = self.all_scores[self.all_scores[column].notna() & self.all_scores["run_knob_key"].notna()]

        def others(key: str) -> str:
            knobs = json.loads(key)
            knobs.pop(knob, None)
            return json.dumps(knobs, sort_keys=True)

        keep = [others(k) == others(r) for k, r in zip(rows["knob_key"], rows["run_knob_key"])]
        return rows[keep]

    def config_sweep(self, column: str, methods: Sequence[str] | None) -> tuple[pd.DataFrame, list[str]]:
        """Own-knob runs whose configs differ only in `column`; per method the family with most values."""
        name = column.split("/", 1)[1]
        if column not in self.sweep_scores:
            return self.sweep_scores.iloc[0:0], []
        rows = self.sweep_scores[self.sweep_scores[column].notna()]
        if methods is not None:
            rows = rows[rows["base_method"].isin(methods)]
        notes, parts = [], []
        for method, group in rows.groupby("method", sort=False):
            family = group["config_key"].map(lambda k: json.dumps({a: b for a, b in json.loads(k).items() if a != name}, sort_keys=True))
            counts = group.assign(_f=family).groupby("_f")[column].nunique()
            best = counts.idxmax()
            if len(counts) > 1:
                notes.append(f"{method}: {len(counts) - 1} run group(s) with other config differences left out")
            parts.append(group[family == best])
        return (pd.concat(parts) if parts else rows.iloc[0:0]), notes

    def _stat(self, rows: pd.DataFrame, by: list[str], metrics: Sequence[str]) -> pd.DataFrame:
        g = rows.groupby(by, sort=True)
        out = g.size().rename("n").reset_index()
        for m in metrics:
            out[f"{m}_mean"] = g[m].mean().to_numpy()
            out[f"{m}_std"] = g[m].std(ddof=1).to_numpy()
        return out

    def budget_plots(self) -> None:
        rows = self.knob_sweep("N")
        if rows.empty or rows["knob/N"].nunique() < 2:
            self.skip("gem_budget_suite / gem_budget_tasks", "needs records of a method with knob N at >= 2 values of N "
                      "(e.g. `modebench eval --checkpoint .../checkpoint.pt --knob N=1,64,1024,2048`)")
            return
        metrics = [m for m in ("score", "audit/violation", "audit/collapse_dist") if m in rows and rows[m].notna().any()]
        per_task = self._stat(rows, ["method", "suite", "task", "knob/N"], metrics)
        suite = per_task.groupby(["method", "suite", "knob/N"])[[f"{m}_mean" for m in metrics]].mean().reset_index()
        fig, axes = plt.subplots(len(metrics), 1, figsize=(5.2, 2.6 * len(metrics)), sharex=True, squeeze=False)
        for ax, metric in zip(axes[:, 0], metrics):
            for (method, s), part in suite.groupby(["method", "suite"]):
                ax.plot(part["knob/N"], part[f"{metric}_mean"], marker="o", color=self.colors.get(method), label=f"{facts.display(method)} ({s})",
                        linestyle="-" if s == suite["suite"].iloc[0] else "--")
            ax.set_ylabel(AUDIT_LABELS.get(metric, metric))
            self.set_x(ax, suite["knob/N"], True)
        axes[-1, 0].set_xlabel("candidate budget N")
        axes[0, 0].set_title(self.title("Suite means vs candidate budget N (GEM Fig. 2)"))
        self.legend(fig, list(axes[:, 0]))
        fig.tight_layout()
        self.save(fig, "gem_budget_suite", suite)
        tasks = task_order(rows)
        for metric in metrics:
            fig, axes = self.grid(len(tasks))
            for ax, task in zip(axes, tasks):
                for method, part in per_task[per_task["task"] == task].groupby("method"):
                    self.band(ax, part["knob/N"], part[f"{metric}_mean"], part[f"{metric}_std"], method)
                self.set_x(ax, per_task["knob/N"], True)
                ax.set_title(task, fontsize=10)
                ax.set_xlabel("N")
                ax.set_ylabel(AUDIT_LABELS.get(metric, metric))
            fig.suptitle(self.title(f"{AUDIT_LABELS.get(metric, metric)} vs N per task, mean ± std over seeds (GEM Fig. A.3)"), y=1.02)
            self.legend(fig, axes)
            fig.tight_layout()
            self.save(fig, f"gem_budget_tasks_{metric.split('/')[-1]}", per_task)

    def band(self, ax: plt.Axes, x, mean, std, method: str, label: str | None = None) -> None:
        x, mean, std = np.asarray(x, float), np.asarray(mean, float), np.nan_to_num(np.asarray(std, float))
        ax.plot(x, mean, marker="o", markersize=4, color=self.colors.get(method), label=label or facts.display(method))
        ax.fill_between(x, mean - std, mean + std, color=self.colors.get(method), alpha=0.15, linewidth=0)

    def frontier_plot(self) -> None:
        rows = self.knob_sweep("w_end")
        if rows.empty or rows["knob/w_end"].nunique() < 2 or "audit/violation" not in rows:
            self.skip("gem_wp_frontier", "needs records at >= 2 values of knob w_end with the violation audit "
                      "(e.g. `modebench eval --checkpoint ... --knob w_end=0,0.2,0.4,0.8,1`)")
            return
        per_task = self._stat(rows, ["method", "suite", "task", "knob/w_end"], ["score", "audit/violation"])
        suite = per_task.groupby(["method", "suite", "knob/w_end"])[["score_mean", "audit/violation_mean"]].mean().reset_index()
        # w_p = 0 (use_pw off) on the same runs, drawn as its own point when stored
        off = self.knob_sweep("use_pw")
        off = off[(off["knob/use_pw"].astype(str) == "False") & off["run_id"].isin(set(rows["run_id"]))]
        off_suite = (self._stat(off, ["method", "suite", "task"], ["score", "audit/violation"])
                     .groupby(["method", "suite"])[["score_mean", "audit/violation_mean"]].mean()) if len(off) else None
        groups = list(suite.groupby(["method", "suite"]))
        fig, axes = self.grid(len(groups), ncols=3, size=(4.2, 3.4))
        for ax, ((method, s), part) in zip(axes, groups):
            part = part.sort_values("knob/w_end")
            ax.plot(part["audit/violation_mean"], part["score_mean"], marker="o", color=self.colors.get(method), label=f"{facts.display(method)}: w_end")
            for w, score, violation in zip(part["knob/w_end"], part["score_mean"], part["audit/violation_mean"]):
                ax.annotate(f"{w:g}", (violation, score), textcoords="offset points", xytext=(4, 4), fontsize=8)
            if off_suite is not None and (method, s) in off_suite.index:
                point = off_suite.loc[(method, s)]
                ax.plot([point["audit/violation_mean"]], [point["score_mean"]], marker="X", markersize=9, color="0.3",
                        linestyle="none", label="w_p = 0 (no support term)")
            ax.set_xlabel("Violation (suite mean)")
            ax.set_ylabel("Score (suite mean)")
            ax.set_title(f"{facts.display(method)}, {s}", fontsize=10)
        fig.suptitle(self.title("w_p frontier: score vs Violation over w_end, fixed N (GEM Fig. 19)"), y=1.02)
        self.legend(fig, axes)
        fig.tight_layout()
        if off_suite is not None:
            suite = pd.concat([suite, off_suite.reset_index().assign(**{"knob/w_end": np.nan, "w_p_off": True})], ignore_index=True)
        self.save(fig, "gem_wp_frontier", suite)

    def sweep_plot(self, sweep: Sweep) -> None:
        rows, notes = self.config_sweep(sweep.param, sweep.methods)
        if rows.empty or rows[sweep.param].nunique() < 2:
            name = sweep.param.split("/", 1)[1]
            self.skip(sweep.name, f"needs runs of {', '.join(sweep.methods or ['a method'])} at >= 2 values of config {name} "
                      f"(e.g. `modebench train --algo {(sweep.methods or ['X'])[0]} --set {name}=V ...` per value)")
            return
        for note in notes:
            self.log(f"plots: {sweep.name}: {note}")
        swept = rows.groupby("task")[sweep.param].nunique()
        single = sorted(swept.index[swept < 2])
        if single:
            self.log(f"plots: {sweep.name}: tasks with a single {sweep.param.split('/', 1)[1]} value left out: {', '.join(single)}")
        rows = rows[~rows["task"].isin(single)]
        stat = self._stat(rows, ["method", "task", sweep.param], ["score"])
        tasks = task_order(rows)
        fig, axes = self.grid(len(tasks))
        for ax, task in zip(axes, tasks):
            part_t = stat[stat["task"] == task]
            for method, part in part_t.groupby("method"):
                self.band(ax, part[sweep.param], part["score_mean"], part["score_std"], method)
            if sweep.default is not None:
                ax.axvline(sweep.default, color="0.3", linestyle="--", linewidth=1, label=f"default {sweep.label.split()[0]} = {sweep.default:g}")
            if sweep.mark_best and not part_t.empty:
                best = part_t.loc[part_t["score_mean"].idxmax()]
                ax.plot([best[sweep.param]], [best["score_mean"]], marker="o", markersize=12, markerfacecolor="none",
                        markeredgecolor="red", markeredgewidth=1.5, linestyle="none", label="best")
            self.set_x(ax, stat[sweep.param], sweep.log2)
            ax.set_title(task, fontsize=10)
            ax.set_xlabel(sweep.label)
            ax.set_ylabel("Normalised score")
        fig.suptitle(self.title(f"{sweep.title}, mean ± std over seeds"), y=1.02)
        self.legend(fig, axes)
        fig.tight_layout()
        self.save(fig, sweep.name, stat)

    def learning_curves(self) -> None:
        rows = self.frame[self.frame["is_run_knobs"].astype(bool) & self.frame["run_id"].isin(set(self.scores["run_id"]))
                          & self.frame["method"].isin(self.methods)]
        if rows.empty or rows.groupby("run_id")["step"].nunique().max() < 2:
            self.skip("learning_curves", "every run has a single evaluation (train with --eval-every to record curves)")
            return
        stat = rows.groupby(["task", "method", "step"])["normalized_score"].agg(["mean", "std", "count"]).reset_index()
        tasks = task_order(rows.assign(task_order=rows["task_order"]))
        fig, axes = self.grid(len(tasks))
        for ax, task in zip(axes, tasks):
            for method in self.methods:
                part = stat[(stat["task"] == task) & (stat["method"] == method)]
                if len(part):
                    self.band(ax, part["step"], part["mean"], part["std"], method)
            ax.set_title(task, fontsize=10)
            ax.set_xlabel("training step")
            ax.set_ylabel("Normalised score")
        fig.suptitle(self.title("Learning curves, mean ± std over seeds"), y=1.02)
        self.legend(fig, axes)
        fig.tight_layout()
        self.save(fig, "learning_curves", stat)

    # ------------------------------------------------------------------ rliable plots

    def rliable_plots(self) -> None:
        from modebench.analysis.tables import _plural, _suite_sets, finite_runs

        scores = finite_runs(self.scores)  # failed runs: counted in the tables, left out of the estimates

        sets = _suite_sets(scores, self.methods)
        if not sets:
            self.skip("aggregates / performance_profile / probability_of_improvement", "no task that every method has")
            return
        for label, tasks, ms, missing in sets:
            if missing:
                self.log(f"plots: aggregates for {label} leave out {', '.join(missing)} (they lack some of its tasks)")
            scope = label.replace(" ", "_")
            data = stats.score_dict(scores, ms, tasks)
            agg = stats.aggregate_metrics(data, reps=self.reps, seed=self.seed)
            fig, axes = plt.subplots(1, 4, figsize=(13, 0.45 * len(ms) + 1.6), sharey=True)
            for ax, metric in zip(axes, stats.METRICS):
                part = agg[agg["metric"] == metric].set_index("method").loc[ms]
                y = np.arange(len(ms))
                for i, m in enumerate(ms):
                    ax.plot([part["low"].iloc[i], part["high"].iloc[i]], [y[i], y[i]], color=self.colors.get(m), linewidth=6, alpha=0.6,
                            solid_capstyle="butt")
                    ax.plot([part["point"].iloc[i]], [y[i]], marker="o", markersize=6, color=self.colors.get(m),
                            markeredgecolor="k", linestyle="none")
                ax.set_yticks(y)
                ax.set_yticklabels([facts.display(m) for m in ms])
                ax.set_ylim(len(ms) - 0.5, -0.5)
                ax.set_title(stats.METRIC_LABELS[metric] + (" (lower is better)" if metric == "optimality_gap" else ""))
                ax.set_xlabel("Normalised score")
                ax.margins(x=0.08)
            fig.suptitle(self.title(f"Aggregates with 95% stratified-bootstrap CIs (bars; dot = point estimate): {label}, "
                                    f"{_plural(len(tasks), 'task')}"), y=1.04)
            fig.tight_layout()
            self.save(fig, f"aggregates_{scope}", agg)

            high = max(100.0, float(np.max(scores["score"])))
            low = min(0.0, float(np.min(scores["score"])))
            taus = np.linspace(low, high, 101)
            profiles = stats.performance_profile(data, taus, reps=self.reps, seed=self.seed)
            fig, ax = plt.subplots(figsize=(5.6, 3.8))
            rows = []
            for m, (point, lo, hi) in profiles.items():
                ax.plot(taus, point, color=self.colors.get(m), label=facts.display(m))
                ax.fill_between(taus, lo, hi, color=self.colors.get(m), alpha=0.15, linewidth=0)
                rows += [{"method": m, "tau": t, "fraction": p, "low": a, "high": b} for t, p, a, b in zip(taus, point, lo, hi)]
            ax.set_xlabel("Normalised score τ")
            ax.set_ylabel("Fraction of runs with score > τ")
            ax.set_title(self.title(f"Performance profiles: {label}"))
            self.legend(fig, [ax])
            fig.tight_layout()
            self.save(fig, f"performance_profile_{scope}", pd.DataFrame(rows))

            poi = stats.improvement_table(data, reps=self.reps, seed=self.seed)
            if poi.empty:
                self.skip(f"probability_of_improvement_{scope}", "needs >= 2 methods with equal seed counts per task")
                continue
            # pairs grow as methods squared (8 methods: 28 rows): side-by-side panels of at most
            # POI_ROWS rows keep the figure page-sized instead of one panel ~1800 px tall
            panels = math.ceil(len(poi) / POI_ROWS)
            per_panel = math.ceil(len(poi) / panels)
            fig, axes = plt.subplots(1, panels, figsize=(5.2 * panels, 0.38 * per_panel + 1.4), squeeze=False)
            for k, ax in enumerate(axes[0]):
                chunk = poi.iloc[k * per_panel:(k + 1) * per_panel]
                for i, r in enumerate(chunk.itertuples(index=False)):
                    ax.plot([r.low, r.high], [i, i], color=self.colors.get(r.x), linewidth=6, alpha=0.6, solid_capstyle="butt")
                    ax.plot([r.point], [i], marker="o", markersize=6, color=self.colors.get(r.x), markeredgecolor="k",
                            linestyle="none", clip_on=False)
                ax.axvline(0.5, color="0.3", linestyle="--", linewidth=1)
                ax.set_yticks(np.arange(len(chunk)))
                ax.set_yticklabels([f"P({facts.display(r.x)} > {facts.display(r.y)})" for r in chunk.itertuples(index=False)])
                ax.set_ylim(per_panel - 0.5, -0.5)
                ax.set_xlim(-0.03, 1.03)
                ax.set_xlabel("Probability of improvement P(X > Y)")
            fig.suptitle(self.title(f"Probability of improvement: {label}, {_plural(len(tasks), 'task')}: point and 95% CI"))
            fig.tight_layout()
            self.save(fig, f"probability_of_improvement_{scope}", poi)

    def all(self) -> list[Path]:
        if self.frame.empty:
            self.skip("all plots", "no evaluation records in the store")
            return []
        self.learning_curves()
        self.budget_plots()
        self.frontier_plot()
        for sweep in Sweep.all():
            self.sweep_plot(sweep)
        self.rliable_plots()
        return self.written


def build_plots(root: str | Path | None = None, out: str | Path | None = None, *, rule: ScoreRule | str | None = None,
                methods: Sequence[str] | None = None, formats: Sequence[str] = FORMATS, reps: int = stats.REPS, seed: int = 0,
                frame: pd.DataFrame | None = None, study_plots: Sequence[Callable[..., list[Path]]] = (),
                log: Callable[[str], None] = print) -> list[Path]:
    """Every figure from the stored records under `root` into `out` (default <root>/plots), each
    protocol's in `<out>/<protocol>/`. `study_plots`: writers `(root, out, formats, protocol=,
    seed=, log=)` of the studies' figures for each protocol (the command-line root passes them)."""
    from modebench.analysis.tables import base_methods

    root = Path(root) if root is not None else default_root()
    out = Path(out) if out is not None else root / "plots"
    frame = frame if frame is not None else load_records(root)
    if frame.empty:
        log(f"plots: no evaluation records under {root}/; nothing drawn")
        return []
    written: list[Path] = []
    for protocol in protocols_in(frame):
        part = frame[frame["protocol"] == protocol]
        chosen = methods if methods is not None else base_methods(select_scores(part, rule))
        drawn = Plotter(part, out / protocol, rule, formats, chosen, reps, seed, log).all()
        for write in study_plots:
            drawn += write(root, out / protocol, formats, protocol=protocol, seed=seed, log=log)
        # one line per protocol counting every figure written, the studies' included (each in every format)
        figures = sorted({p.stem for p in drawn if p.suffix.lstrip(".") in formats})
        log(f"plots: {len(figures)} figures ({', '.join(figures)}) -> {out / protocol}/ ({', '.join(formats)}, data as .csv)")
        written += drawn
    return written
