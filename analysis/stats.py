"""Aggregate performance with statistical honesty (Agarwal et al. 2021): rliable's estimators.

IQM, median, mean and optimality gap over runs x tasks, with stratified-bootstrap confidence
intervals (runs resampled with replacement within each task), performance profiles (score
distributions) and the probability of improvement of one method over another (Mann-Whitney U
per task, averaged over tasks) with independent stratified-bootstrap intervals.

Point estimates are rliable's own functions (`rliable.metrics`, `rliable.library.run_score_deviation`).
The bootstrap intervals are drawn here, vectorised over replicates, because rliable's bootstrap
(arch's StratifiedBootstrap, one Python call per replicate) is too slow at the 50 000 replicates
the tables use. Measured on this project's 2-core VM, one thread, 3 methods x 3 runs x 4 tasks
(the machine shared with other jobs, so rliable's figures are upper bounds; both sides in the
same minutes):

    replicates                                  2 000                 50 000
    aggregates, 3 methods            rliable 2.43 s / here 0.03 s   rliable 229 s / here 0.58 s
    performance profiles (101 taus)  rliable 7.42 s / here 0.08 s   here 2.94 s
    P(X > Y), one pair               rliable 9.30 s / here 0.011 s  here 0.19 s

(`make tables` on the toy suite computes 8 methods' aggregates and 28 pairs per scope, twice with
the plots: hours with rliable's loop.) rliable draws its replicates from numpy's GLOBAL random
stream (`np.random.choice` in StratifiedBootstrap.update_indices; the `random_state` it accepts
does not reach that call), so "rliable with seed s" means `np.random.seed(s)` before the call.
Here one `RandomState(seed)` yields the same numbers in the same order
(`choice(n_runs, (n_runs, n_tasks))` per replicate, methods in order, `np.percentile`
intervals) without touching the global stream: on rectangular data the points and intervals
equal rliable's after `np.random.seed(seed)` to 1e-10 (float summation order), NaN and inf
scores included (tests/test_analysis.py runs rliable itself on both). Each replicate is its own
estimate (the IQM is sorted and trimmed per replicate). Tasks with different run counts
(rliable needs a rectangular matrix) are resampled task by task with their own counts.

Non-finite input follows rliable: a NaN score makes the method's mean, median, IQM and
optimality gap NaN, point and interval alike (np.percentile of NaN replicates), and P(X > Y)
NaN; in a performance profile a NaN run counts as below every threshold. Tables do not hand
NaN here: they leave failed runs out of the statistics and count them in the cell
(analysis/tables.py).

Scores are on the 0-100 normalised scale; the optimality gap's threshold is therefore
`gamma = 100` (rliable's default gamma = 1 assumes 0-1 scores and would report nonsense here).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
from rliable import library as rly
from rliable import metrics as rly_metrics

REPS = 50_000  # bootstrap replicates (rliable's default; CORL's 200 is too few for stable 95% tails)
CONFIDENCE = 0.95
GAMMA = 100.0  # optimality-gap threshold for 0-100 normalised scores
METRICS = ("median", "iqm", "mean", "optimality_gap")
METRIC_LABELS = {"median": "Median", "iqm": "IQM", "mean": "Mean", "optimality_gap": "Optimality gap"}
_CHUNK_ELEMENTS = 4_000_000  # bound on replicates x runs x tasks held at once


# ------------------------------------------------------------------ runs x tasks containers


@dataclass
class Scores:
    """One method's scores: per task, a 1-D array of runs (seeds). Rectangular when equal counts.

    A NaN or inf inside `per_task` is a score (a failed run), handled as rliable handles it; a
    task with fewer runs than another is padding, which `mask` marks and no estimator reads."""

    per_task: list[np.ndarray]

    @classmethod
    def of(cls, data: np.ndarray | Sequence[Sequence[float]]) -> Scores:
        if isinstance(data, np.ndarray) and data.ndim == 2:
            return cls([np.asarray(data[:, t], dtype=np.float64) for t in range(data.shape[1])])
        return cls([np.asarray(col, dtype=np.float64) for col in data])

    @property
    def rectangular(self) -> bool:
        return len({len(c) for c in self.per_task}) == 1

    def matrix(self) -> np.ndarray:
        """[runs, tasks]; a ragged matrix is padded with zeros where `mask` is False."""
        n = max(len(c) for c in self.per_task)
        out = np.zeros((n, len(self.per_task)))
        for t, col in enumerate(self.per_task):
            out[: len(col), t] = col
        return out

    def mask(self) -> np.ndarray:
        """[runs, tasks] bool: True where a run exists (False only in the padding of ragged data)."""
        n = max(len(c) for c in self.per_task)
        return np.arange(n)[:, None] < np.array([len(c) for c in self.per_task])[None, :]


def score_dict(scores: pd.DataFrame, methods: Sequence[str], tasks: Sequence[str], column: str = "score") -> dict[str, Scores]:
    """{method: Scores} from `select_scores` output, runs ordered by seed, only the given tasks."""
    out = {}
    for method in methods:
        rows = scores[scores["method"] == method]
        per_task = [rows[rows["task"] == task].sort_values("seed")[column].to_numpy(np.float64) for task in tasks]
        if all(len(c) for c in per_task):
            out[method] = Scores(per_task)
    return out


# ------------------------------------------------------------------ the estimators, batched for the bootstrap
# Each takes x [reps, runs, tasks] and the [runs, tasks] mask of real runs, and returns [reps]:
# rliable's definitions applied to each replicate on its own (rliable's functions take one
# [runs, tasks] matrix at a time). Non-finite scores behave as in rliable's numpy / scipy calls:
# a NaN makes the replicate's estimate NaN; an inf enters the sums and sorts as a number.


def _flat(x: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """[reps, real runs x tasks], C-contiguous (the summation order numpy's reductions use
    depends on the layout: a strided view sums in another order, in the 15th digit)."""
    return x.reshape(len(x), -1) if mask.all() else np.ascontiguousarray(x[:, mask])


def _task_means(x: np.ndarray, mask: np.ndarray) -> np.ndarray:
    return np.where(mask, x, 0.0).sum(axis=1) / mask.sum(axis=0)


def agg_mean(x: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Mean over tasks of the per-task mean over runs (rliable aggregate_mean)."""
    return _task_means(x, mask).mean(axis=-1)


def agg_median(x: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Median over tasks of the per-task mean over runs (rliable aggregate_median)."""
    return np.median(_task_means(x, mask), axis=-1)


def agg_iqm(x: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """25% trimmed mean of all runs x tasks scores (rliable aggregate_iqm = scipy trim_mean),
    each replicate sorted and trimmed on its own; a replicate holding a NaN gives NaN (scipy's
    nan_policy 'propagate')."""
    flat = np.sort(_flat(x, mask), axis=1)
    count = flat.shape[1]
    cut = int(0.25 * count)
    out = flat[:, cut: count - cut].mean(axis=1)
    out[np.isnan(flat).any(axis=1)] = np.nan
    return out


def agg_optimality_gap(x: np.ndarray, mask: np.ndarray, gamma: float = GAMMA) -> np.ndarray:
    """gamma - mean(min(score, gamma)) over all runs x tasks (rliable aggregate_optimality_gap)."""
    return gamma - np.minimum(_flat(x, mask), gamma).mean(axis=1)


def _metric_funcs(gamma: float) -> dict[str, Callable[[np.ndarray, np.ndarray], np.ndarray]]:
    return {"median": agg_median, "iqm": agg_iqm, "mean": agg_mean,
            "optimality_gap": lambda x, mask: agg_optimality_gap(x, mask, gamma)}


def _point_estimates(scores: Scores, gamma: float) -> np.ndarray:
    """The METRICS' point estimates: rliable's functions on a rectangular matrix; the batched
    forms on ragged data (rliable needs equal run counts per task)."""
    if not scores.rectangular:
        funcs = _metric_funcs(gamma)
        return np.array([funcs[m](scores.matrix()[None], scores.mask())[0] for m in METRICS])
    x = scores.matrix()
    with np.errstate(invalid="ignore"):  # inf - inf inside a sum: NaN, as in rliable
        return np.array([rly_metrics.aggregate_median(x), rly_metrics.aggregate_iqm(x), rly_metrics.aggregate_mean(x),
                         rly_metrics.aggregate_optimality_gap(x, gamma)])


# ------------------------------------------------------------------ stratified bootstrap


def _resample(scores: Scores, reps: int, rs: np.random.RandomState) -> np.ndarray:
    """Bootstrap replicates [reps, runs, tasks]: runs resampled with replacement within each task.

    Rectangular data consumes the random stream exactly as rliable's StratifiedBootstrap
    (one choice(n, (n, T)) per replicate); ragged data draws task by task (padding stays padding)."""
    matrix = scores.matrix()
    n, n_tasks = matrix.shape
    if scores.rectangular:
        idx = rs.choice(n, size=(reps, n, n_tasks), replace=True)
        return matrix[idx, np.arange(n_tasks)[None, None, :]]
    out = np.zeros((reps, n, n_tasks))
    for t, col in enumerate(scores.per_task):
        out[:, : len(col), t] = col[rs.choice(len(col), size=(reps, len(col)), replace=True)]
    return out


def _bootstrap(scores: Scores, func: Callable[[np.ndarray, np.ndarray], np.ndarray], reps: int,
               rs: np.random.RandomState) -> np.ndarray:
    """func over `reps` replicates, chunked so memory stays bounded; returns [reps, ...]."""
    mask = scores.mask()
    chunk = max(1, _CHUNK_ELEMENTS // max(1, mask.size))
    parts, done = [], 0
    with np.errstate(invalid="ignore"):  # inf - inf in a replicate: NaN, as in rliable
        while done < reps:
            size = min(chunk, reps - done)
            parts.append(func(_resample(scores, size, rs), mask))
            done += size
    return np.concatenate(parts, axis=0)


def _interval(samples: np.ndarray, confidence: float) -> tuple[np.ndarray, np.ndarray]:
    """Percentile interval (arch's 'percentile' method, which rliable uses): np.percentile, so a
    NaN replicate makes the interval NaN, as in rliable."""
    alpha = (1.0 - confidence) / 2.0
    low, high = np.percentile(samples, [100 * alpha, 100 * (1 - alpha)], axis=0)
    return low, high


def aggregate_metrics(
    data: Mapping[str, Scores | np.ndarray],
    *,
    reps: int = REPS,
    seed: int = 0,
    gamma: float = GAMMA,
    confidence: float = CONFIDENCE,
) -> pd.DataFrame:
    """Median, IQM, mean, optimality gap with stratified-bootstrap CIs, one row per (method, metric).

    On rectangular data, equal to `np.random.seed(seed)` followed by rliable's
    `get_interval_estimates(data, lambda x: [median, iqm, mean, og], reps=reps)`: same replicates,
    same percentile intervals, NaN where rliable gives NaN (a NaN score makes the point and the
    interval NaN). rliable draws its replicates from numpy's GLOBAL stream (its
    StratifiedBootstrap.update_indices calls np.random.choice), so its own `random_state`
    argument does not fix them; here one `RandomState(seed)` is drawn in that same order and the
    global stream is left alone. `n_nonfinite` counts the non-finite scores given."""
    rs = np.random.RandomState(seed)
    funcs = _metric_funcs(gamma)
    rows = []
    for method, raw in data.items():
        scores = raw if isinstance(raw, Scores) else Scores.of(raw)

        def all_metrics(x: np.ndarray, mask: np.ndarray) -> np.ndarray:
            return np.stack([funcs[m](x, mask) for m in METRICS], axis=1)

        point = _point_estimates(scores, gamma)
        low, high = _interval(_bootstrap(scores, all_metrics, reps, rs), confidence)
        n_runs = sum(len(c) for c in scores.per_task)
        bad = int(sum((~np.isfinite(c)).sum() for c in scores.per_task))
        for i, metric in enumerate(METRICS):
            rows.append({"method": method, "metric": metric, "point": float(point[i]), "low": float(low[i]),
                         "high": float(high[i]), "n_tasks": len(scores.per_task), "n_runs": n_runs, "n_nonfinite": bad})
    return pd.DataFrame(rows)


# ------------------------------------------------------------------ performance profiles


def performance_profile(
    data: Mapping[str, Scores | np.ndarray],
    taus: np.ndarray,
    *,
    reps: int = REPS,
    seed: int = 0,
    confidence: float = CONFIDENCE,
) -> dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """Score distributions: fraction of runs (all tasks) with score > tau, with bootstrap CIs.

    Same as rliable's `create_performance_profile(data, taus, reps=reps)` after np.random.seed(seed)
    (rliable's `run_score_deviation`: a NaN score is a run below every tau, counted in the runs)."""
    taus = np.asarray(taus, dtype=np.float64)
    rs = np.random.RandomState(seed)
    out = {}
    for method, raw in data.items():
        scores = raw if isinstance(raw, Scores) else Scores.of(raw)

        def profile(x: np.ndarray, mask: np.ndarray) -> np.ndarray:
            flat = _flat(x, mask)
            return (flat[:, :, None] > taus[None, None, :]).sum(axis=1) / flat.shape[1]

        flat = np.concatenate(scores.per_task)
        point = np.array([rly.run_score_deviation(flat, tau) for tau in taus])
        low, high = _interval(_bootstrap(scores, profile, reps, rs), confidence)
        out[method] = (point, low, high)
    return out


# ------------------------------------------------------------------ probability of improvement


def _poi(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """P(X > Y) per replicate: x [R, nx, T], y [R, ny, T] -> [R] (U / (nx ny), averaged over tasks).
    A task whose replicate holds a NaN gives NaN (scipy's mannwhitneyu, which rliable calls)."""
    gt = (x[:, :, None, :] > y[:, None, :, :]).mean(axis=(1, 2))
    eq = (x[:, :, None, :] == y[:, None, :, :]).mean(axis=(1, 2))
    per_task = gt + 0.5 * eq
    per_task[np.isnan(x).any(axis=1) | np.isnan(y).any(axis=1)] = np.nan
    return per_task.mean(axis=-1)


def probability_of_improvement(
    x: Scores | np.ndarray,
    y: Scores | np.ndarray,
    *,
    reps: int = REPS,
    seed: int = 0,
    confidence: float = CONFIDENCE,
    rs: np.random.RandomState | None = None,
) -> tuple[float, float, float]:
    """P(X > Y): the Mann-Whitney probability per task averaged over tasks, with CIs from
    resampling X's and Y's runs independently within each task (rliable's
    StratifiedIndependentBootstrap). Needs rectangular X and Y over the same tasks."""
    xs = x if isinstance(x, Scores) else Scores.of(x)
    ys = y if isinstance(y, Scores) else Scores.of(y)
    if not (xs.rectangular and ys.rectangular) or len(xs.per_task) != len(ys.per_task):
        raise ValueError("probability_of_improvement needs the same tasks and an equal number of runs per task within each method")
    xm, ym = xs.matrix(), ys.matrix()
    rs = rs if rs is not None else np.random.RandomState(seed)
    point = float(rly_metrics.probability_of_improvement(xm, ym))
    (nx, tasks), ny = xm.shape, ym.shape[0]
    cols = np.arange(tasks)[None, None, :]
    chunk = max(1, _CHUNK_ELEMENTS // max(1, nx * ny * tasks))
    samples, done = [], 0
    while done < reps:
        size = min(chunk, reps - done)
        if nx == ny:  # per replicate: choice for X then choice for Y, as one draw
            idx = rs.choice(nx, size=(size, 2, nx, tasks), replace=True)
            ix, iy = idx[:, 0], idx[:, 1]
        else:
            pairs = [(rs.choice(nx, size=(nx, tasks)), rs.choice(ny, size=(ny, tasks))) for _ in range(size)]
            ix, iy = np.stack([p[0] for p in pairs]), np.stack([p[1] for p in pairs])
        samples.append(_poi(xm[ix, cols], ym[iy, cols]))
        done += size
    low, high = _interval(np.concatenate(samples), confidence)
    return point, float(low), float(high)


def improvement_table(data: Mapping[str, Scores], *, reps: int = REPS, seed: int = 0,
                      confidence: float = CONFIDENCE) -> pd.DataFrame:
    """P(X > Y) with CIs for every pair of methods, X the later one in `data`'s order (methods come
    in registry order, baselines first, so X is the newer method); one random stream, pairs in order."""
    rs = np.random.RandomState(seed)
    rows = []
    names = list(data)
    for i, a in enumerate(names):
        for b in names[:i]:
            try:
                point, low, high = probability_of_improvement(data[a], data[b], reps=reps, rs=rs, confidence=confidence)
            except ValueError:
                continue
            rows.append({"x": a, "y": b, "point": point, "low": low, "high": high})
    return pd.DataFrame(rows, columns=["x", "y", "point", "low", "high"])
