"""The claims report: the renderer's interval and verdict rule on hand-made records, the probes'
counting by hand, the catalogue's shape, and the harness end to end on two claims at tiny
settings (a temporary store; the numbers of a quick run mean nothing)."""

from __future__ import annotations

import csv
import json
import math

import numpy as np
import pytest
import torch
from modebench.studies.claims.catalog import CLAIMS, select_claims
from modebench.studies.claims.probes import coverage, coverage_bound, mode_shares
from modebench.studies.claims.render import (
    FAILS,
    HOLDS,
    INCONCLUSIVE,
    interval,
    load_claim_records,
    render_claims,
    summarize,
    verdict,
)
from modebench.studies.claims.runner import (
    measurement_path,
    measurements_dir,
    run_claims,
)
from modebench.studies.claims.spec import QUICK, Expect

# ------------------------------------------------------------------ the rule, by hand


def test_interval_is_the_student_t_interval_of_the_mean():
    mean, low, high = interval([1.0, 2.0, 3.0])
    half = 4.302652729911275 * 1.0 / math.sqrt(3)  # t_{0.975, 2} * s / sqrt(n), s = 1
    assert mean == 2.0 and low == pytest.approx(2.0 - half) and high == pytest.approx(2.0 + half)
    assert interval([0.5, 0.5, 0.5]) == (0.5, 0.5, 0.5)  # no spread: a zero-width interval
    mean, low, high = interval([4.0])
    assert mean == 4.0 and math.isnan(low) and math.isnan(high)  # one seed: no interval


@pytest.mark.parametrize(("expect", "low", "high", "expected"), [
    (Expect(">", 0.0), 0.1, 1.0, HOLDS),
    (Expect(">", 0.0), -1.0, -0.1, FAILS),
    (Expect(">", 0.0), -1.0, 1.0, INCONCLUSIVE),
    (Expect(">", 0.0), 0.0, 0.0, FAILS),  # strictly greater: zero everywhere is not a rise
    (Expect(">", 0.0), 0.0, 1.0, INCONCLUSIVE),
    (Expect(">=", -2.0), -2.0, 0.0, HOLDS),
    (Expect(">=", -2.0), -5.0, -2.5, FAILS),
    (Expect("<", 0.0), -3.0, -1.0, HOLDS),
    (Expect("<", 0.0), 0.0, 2.0, FAILS),
    (Expect("<=", 0.0), -3.0, 0.0, HOLDS),
    (Expect("<=", 0.0), 0.5, 2.0, FAILS),
    (Expect("between", -2.0, 2.0), -1.0, 2.0, HOLDS),
    (Expect("between", -2.0, 2.0), 2.5, 4.0, FAILS),
    (Expect("between", -2.0, 2.0), 1.0, 3.0, INCONCLUSIVE),
    (Expect(">", 0.0), math.nan, math.nan, INCONCLUSIVE),
])
def test_verdict_rule(expect, low, high, expected):
    assert verdict(low, high, expect.to_dict()) == expected


def _record(claim: str, seed: int, value: float, order: int = 0, **extra) -> dict:
    return {
        "kind": "claim", "claim": claim, "order": order, "method": "GEM", "statement": f"{claim} statement",
        "paper": "GEM", "where": "Table 5", "paper_says": "0.0069 -> 0.2169", "quantity": "a difference",
        "expect": Expect(">", 0.0).to_dict(), "finding": "", "seed": seed, "scale": "full", "value": value,
        "details": {"arm a": value + 1.0}, "command": f"modebench claims --claims {claim} --seeds 3",
        "git_revision": "abc", "timestamp": float(seed), **extra,
    }


def test_report_rows_from_hand_made_records(tmp_path):
    folder = tmp_path / "measurements"
    folder.mkdir()
    records = [_record("rises", s, v, order=1) for s, v in enumerate([1.0, 1.1, 0.9])]
    records += [_record("straddles", s, v, order=0, finding="a known finding") for s, v in enumerate([1.0, 2.0, -2.0])]
    records.append({"kind": "something else", "claim": "ignored"})
    for i, record in enumerate(records):
        (folder / f"{i}.json").write_text(json.dumps(record))
    table = summarize(load_claim_records(folder))
    assert list(table["claim"]) == ["straddles", "rises"]  # the catalogue's order, not the files'
    rises = table.set_index("claim").loc["rises"]
    mean, low, high = interval([1.0, 1.1, 0.9])
    assert (rises["mean"], rises["ci_low"], rises["ci_high"]) == pytest.approx((mean, low, high))
    assert rises["verdict"] == HOLDS and rises["n_seeds"] == 3 and rises["expected"] == "> 0"
    assert json.loads(rises["details"]) == {"arm a": pytest.approx(2.0)}
    assert table.set_index("claim").loc["straddles", "verdict"] == INCONCLUSIVE

    md, csv_path = render_claims(folder, tmp_path)
    text = md.read_text()
    assert "| **GEM** rises statement |" in text and "`modebench claims --claims rises --seeds 3`" in text
    assert "known finding: a known finding" in text and HOLDS in text and INCONCLUSIVE in text
    assert "| Could fail here |" in text and "unknown (record predates the field)" in text
    rows = list(csv.DictReader(csv_path.open()))
    assert [r["claim"] for r in rows] == ["straddles", "rises"]
    assert {"paper", "where", "paper_says", "mean", "ci_low", "ci_high", "verdict", "command"} <= set(rows[0])


def test_render_without_records_says_what_writes_them(tmp_path):
    with pytest.raises(FileNotFoundError, match="modebench claims"):
        render_claims(tmp_path, tmp_path)


# ------------------------------------------------------------------ probes, by hand


def test_mode_shares_coverage_and_the_prop44_bound_by_hand():
    centers = np.array([[1.0, 1.0], [-1.0, -1.0]])
    actions = torch.tensor([[1.0, 1.1], [0.9, 1.0], [-1.0, -1.0], [0.0, 0.0]])
    assert mode_shares(actions, centers, 0.25).tolist() == [0.5, 0.25]
    sets = torch.tensor([[[1.0, 1.0], [-1.0, -1.0]], [[1.0, 1.0], [0.0, 0.0]]])  # covers both; misses one
    assert coverage(sets, centers, 0.25) == 0.5
    assert coverage_bound([0.5, 0.25], 2) == pytest.approx(1 - 0.5**2 - 0.75**2)


# ------------------------------------------------------------------ the catalogue


def test_catalogue_covers_every_method_and_the_known_findings():
    ids = [c.id for c in CLAIMS]
    assert len(ids) == len(set(ids))
    assert {c.method for c in CLAIMS} == {"GEM", "LOM", "ISEP", "DROL"}
    findings = {c.finding for c in CLAIMS if c.finding}
    assert len(findings) == 4  # GEM no-pw Violation, ISEP-FM lam at w = 1, DROL spread beyond 16, LOM obstacle argmax
    for claim in CLAIMS:
        assert claim.runs and claim.paper and claim.where and claim.paper_says and claim.quantity
        assert claim.could_fail.startswith(("yes", "no")) and len(claim.could_fail) > 4  # and says why
    # issue 25: held to the papers' own numbers and settings
    by_id = {c.id: c for c in CLAIMS}
    assert by_id["drol-candidates-cover-modes"].expect.threshold == 0.0  # coverage minus Prop. 4.4's own bound
    assert all(by_id[i].expect.to_dict() == {"op": ">=", "threshold": 0.0, "high": None}  # the theorems' inequality
               for i in ("lom-greedy-mode-beats-behaviour", "lom-policy-beats-greedy-mode",
                         "lom-greedy-mode-beats-behaviour-obstacle", "lom-policy-beats-greedy-mode-obstacle"))
    assert {c.id for c in CLAIMS if c.ours} == {"isep-fm-lam-moves-flow-to-optimum", "drol-spread-rises-beyond-16"}
    assert all(c.deviation for c in CLAIMS if c.ours)
    assert by_id["gem-nll-gap-positive"].could_fail.startswith("no")
    assert by_id["gem-score-plateaus-in-n"].runs["gem"].task == "toy/obstacle"  # GEM's anchor is not saturated there
    assert select_claims("drol") == [c for c in CLAIMS if c.method == "DROL"]
    with pytest.raises(Exception, match="unknown claim"):
        select_claims("no-such-claim")


# ------------------------------------------------------------------ the harness end to end


def test_two_claims_end_to_end_into_a_temporary_store(tmp_path):
    torch.set_num_threads(1)
    claims = select_claims("gem-no-pw-raises-violation,drol-spread-rises-with-k")
    records = run_claims(claims, 2, tmp_path, QUICK, jobs=1)
    assert sorted((r["claim"], r["seed"]) for r in records) == [
        ("drol-spread-rises-with-k", 0), ("drol-spread-rises-with-k", 1),
        ("gem-no-pw-raises-violation", 0), ("gem-no-pw-raises-violation", 1),
    ]
    for record in records:
        assert record["kind"] == "claim" and record["scale"] == "quick" and math.isfinite(record["value"])
        assert record["command"] == f"modebench claims --claims {record['claim']} --num-seeds 2 --quick"
        assert measurement_path(tmp_path, record["claim"], QUICK, record["seed"]).exists()
    gem = next(r for r in records if r["claim"] == "gem-no-pw-raises-violation")
    assert gem["value"] == pytest.approx(gem["details"]["violation no-pw"] - gem["details"]["violation GEM"])
    # evaluating the run's own knobs reads its final record: the train record keeps its diagnostics
    run_dir = tmp_path / "claims" / "runs" / gem["runs"]["gem"]["run_id"]
    sources = [json.loads(p.read_text()) for p in (run_dir / "records").glob("*.json")]
    assert any(r["source"] == "train" and "diagnostics/behavior_gap" in r for r in sources)

    checkpoints = {p: p.stat().st_mtime_ns for p in (tmp_path / "claims" / "runs").glob("*/checkpoint.pt")}
    assert len(checkpoints) == 2 * 3 + 2 * 2  # (GEM, BC, IQL) and (DROL K=4, K=16) x 2 seeds

    # the command: a second run trains nothing (the store holds the runs), then renders every stored claim
    from modebench.cli import main

    assert main(["claims", "--claims", "drol-spread-rises-with-k", "--num-seeds", "2", "--quick", "--jobs", "1",
                 "--results", str(tmp_path)]) == 0
    assert {p: p.stat().st_mtime_ns for p in checkpoints} == checkpoints
    rows = list(csv.DictReader((tmp_path / "claims.csv").open()))
    assert [r["claim"] for r in rows] == ["gem-no-pw-raises-violation", "drol-spread-rises-with-k"]
    assert all(r["n_seeds"] == "2" for r in rows)
    assert len(load_claim_records(measurements_dir(tmp_path), "quick")) == 4


@pytest.mark.slow
def test_every_claim_measures_at_quick_scale(tmp_path):
    """Every claim of the catalogue end to end (one seed, quick): a finite number per claim and a
    report row each. Catches a measurement that reads a run it does not declare or a missing field."""
    torch.set_num_threads(1)
    records = run_claims(list(CLAIMS), 1, tmp_path, QUICK, jobs=1)
    assert sorted(r["claim"] for r in records) == sorted(c.id for c in CLAIMS)
    assert all(math.isfinite(r["value"]) for r in records)
    _, csv_path = render_claims(measurements_dir(tmp_path), tmp_path, "quick")
    assert [r["claim"] for r in csv.DictReader(csv_path.open())] == [c.id for c in CLAIMS]
