"""The claims report: results/claims.md and claims.csv, rendered from the claim-measurement
records alone (`kind: "claim"`, one per claim and seed; studies/claims/runner.py writes them).

Per claim: the mean of the seeds' numbers with a 95% Student-t interval for the mean
(scipy.stats.t; a single seed has no interval), and a verdict from one rule:

    holds                        every point of the interval satisfies the paper's direction
    does not hold                no point of the interval satisfies it
    inconclusive at this scale   the interval straddles the boundary (or there is one seed)

The paper's direction is the record's `expect`: value > t, >= t, < t, <= t, or t <= value <= high.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from modebench.benchmarks.store import atomic_write_bytes
from scipy import stats

CONFIDENCE = 0.95
HOLDS, FAILS, INCONCLUSIVE = "holds", "does not hold", "inconclusive at this scale"
RECORD_KIND = "claim"
CSV_COLUMNS = [
    "claim", "method", "statement", "paper", "where", "paper_says", "quantity", "expected", "mean", "ci_low",
    "ci_high", "n_seeds", "verdict", "finding", "could_fail", "deviation", "ours", "details", "command", "scale",
    "git_revision",
]


def interval(values: Iterable[float], confidence: float = CONFIDENCE) -> tuple[float, float, float]:
    """(mean, low, high): the Student-t interval for the mean over seeds. Equal values give a
    zero-width interval; one value gives none (NaN bounds)."""
    x = np.asarray(list(values), dtype=np.float64)
    mean = float(x.mean())
    if x.size < 2:
        return mean, math.nan, math.nan
    sem = float(stats.sem(x))
    if sem == 0.0:
        return mean, mean, mean
    low, high = stats.t.interval(confidence, x.size - 1, loc=mean, scale=sem)
    return mean, float(low), float(high)


@dataclass(frozen=True)
class Region:
    """The values the paper's direction allows: an interval with open or closed ends."""

    low: float
    high: float
    low_closed: bool
    high_closed: bool

    @classmethod
    def of(cls, expect: dict[str, Any]) -> Region:
        op, t = expect["op"], float(expect["threshold"])
        regions = {
            ">": (t, math.inf, False, False), ">=": (t, math.inf, True, False),
            "<": (-math.inf, t, False, False), "<=": (-math.inf, t, False, True),
        }
        if op == "between":
            return cls(t, float(expect["high"]), True, True)
        if op not in regions:
            raise ValueError(f"unknown expectation {op!r}")
        return cls(*regions[op])

    def contains(self, x: float) -> bool:
        above = x >= self.low if self.low_closed else x > self.low
        below = x <= self.high if self.high_closed else x < self.high
        return above and below

    def disjoint(self, low: float, high: float) -> bool:
        """No point of [low, high] is in the region."""
        left = high < self.low or (high == self.low and not self.low_closed)
        right = low > self.high or (low == self.high and not self.high_closed)
        return left or right


def verdict(low: float, high: float, expect: dict[str, Any]) -> str:
    """The one rule (module docstring) applied to an interval [low, high]."""
    if math.isnan(low) or math.isnan(high):
        return INCONCLUSIVE
    region = Region.of(expect)
    if region.contains(low) and region.contains(high):  # the region is an interval: both ends in = all in
        return HOLDS
    if region.disjoint(low, high):
        return FAILS
    return INCONCLUSIVE


def describe(expect: dict[str, Any]) -> str:
    if expect["op"] == "between":
        return f"in [{expect['threshold']:g}, {expect['high']:g}]"
    return f"{expect['op']} {expect['threshold']:g}"


def load_claim_records(folder: str | Path, scale: str | None = None) -> list[dict[str, Any]]:
    """Every claim-measurement record in `folder` (optionally of one scale: full / quick)."""
    records = []
    for path in sorted(Path(folder).glob("*.json")):
        record = json.loads(path.read_text())
        if record.get("kind") == RECORD_KIND and (scale is None or record.get("scale") == scale):
            records.append(record)
    return records


def summarize(records: list[dict[str, Any]]) -> pd.DataFrame:
    """One row per claim (in the catalogue's order): metadata of its newest record, the interval
    over its seeds, the verdict, and the seed-mean of every detail."""
    by_claim: dict[str, list[dict[str, Any]]] = {}
    for record in sorted(records, key=lambda r: (r.get("order", math.inf), r["claim"])):
        by_claim.setdefault(record["claim"], []).append(record)
    rows = []
    for group in by_claim.values():
        group = sorted(group, key=lambda r: r["seed"])
        newest = max(group, key=lambda r: r["timestamp"])
        mean, low, high = interval(r["value"] for r in group)
        details = {key: float(np.mean([r["details"][key] for r in group if key in r["details"]]))
                   for key in newest["details"]}
        rows.append({
            **{k: newest[k] for k in ("claim", "method", "statement", "paper", "where", "paper_says", "quantity", "finding",
                                        "command", "scale")},
            # records written before these fields: unknown, shown as such
            "could_fail": newest.get("could_fail", "unknown (record predates the field)"),
            "deviation": newest.get("deviation", ""), "ours": bool(newest.get("ours", False)),
            "expected": describe(newest["expect"]),
            "mean": mean, "ci_low": low, "ci_high": high, "n_seeds": len(group),
            "verdict": verdict(low, high, newest["expect"]),
            "details": json.dumps(details),
            "git_revision": ", ".join(sorted({r["git_revision"] for r in group})),
        })
    return pd.DataFrame(rows, columns=CSV_COLUMNS)


def _number(x: float) -> str:
    if math.isnan(x):
        return "n/a"
    return f"{x:.3g}" if abs(x) < 1000 else f"{x:.0f}"


def _ours(row: pd.Series) -> str:
    if math.isnan(row["ci_low"]):
        return f"{_number(row['mean'])} (one seed)"
    return f"{_number(row['mean'])} [{_number(row['ci_low'])}, {_number(row['ci_high'])}] (n={row['n_seeds']})"


def render_markdown(table: pd.DataFrame) -> str:
    scales = sorted(set(table["scale"]))
    lines = [
        "# Claims report",
        "",
        "Each paper's mechanism claims, measured by `modebench claims` (`make claims`) on the toy suite, where the",
        "answer is known. Rendered from the claim-measurement records only. Ours: the mean over seeds of the",
        f"quantity in the row, with a {CONFIDENCE:.0%} Student-t interval for the mean. Verdict: **holds** when every",
        "point of the interval goes the paper's way (Expected), **does not hold** when no point does,",
        "**inconclusive at this scale** otherwise. Small nets and short runs: a verdict is about this scale.",
        f"Scale: {', '.join(scales)}" + ("  (QUICK: a smoke run, the numbers mean nothing)" if "quick" in scales else "") + ".",
        "",
        "A claim marked *(ours)* is not the paper's: an extrapolation kept as a probe. *Could fail* says whether",
        "the quantity could have gone against the paper at this scale (a saturated quantity cannot);",
        "*deviation* names where the experiment's settings differ from the paper's.",
        "",
        "| Claim | Paper, where | Paper says | Quantity | Ours, 95% CI | Expected | Verdict | Could fail here | Reproduce |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for _, row in table.iterrows():
        claim = (f"**{row['method']}** {row['statement']}" + (" *(ours)*" if row["ours"] else "")
                 + (f" *(known finding: {row['finding']})*" if row["finding"] else ""))
        quantity = row["quantity"] + (f" *Deviation: {row['deviation']}*" if row["deviation"] else "")
        lines.append(
            f"| {claim} | {row['paper']}, {row['where']} | {row['paper_says']} | {quantity} | {_ours(row)} "
            f"| {row['expected']} | {row['verdict']} | {row['could_fail']} | `{row['command']}` |"
        )
    lines += ["", "## The numbers behind each row (means over seeds)", ""]
    for _, row in table.iterrows():
        details = json.loads(row["details"])
        lines.append(f"- `{row['claim']}`: " + "; ".join(f"{k} {_number(v)}" for k, v in details.items()))
    revisions = sorted({rev for revs in table["git_revision"] for rev in revs.split(", ")})
    lines += ["", f"Source revision(s): {', '.join(revisions)}.", ""]
    return "\n".join(lines)


def render_claims(folder: str | Path, out: str | Path, scale: str | None = None) -> tuple[Path, Path]:
    """Write out/claims.md and out/claims.csv from the records in `folder`; returns their paths."""
    records = load_claim_records(folder, scale)
    if not records:
        raise FileNotFoundError(f"no claim records in {folder}; `modebench claims` writes them")
    table = summarize(records)
    out = Path(out)
    md, csv = out / "claims.md", out / "claims.csv"
    atomic_write_bytes(md, render_markdown(table).encode())
    atomic_write_bytes(csv, table.to_csv(index=False).encode())
    return md, csv
