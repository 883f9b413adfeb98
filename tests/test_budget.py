"""Online-tuning-budget estimators and the cross-selection table (studies/budget.py), on tiny
hand-made records: the closed-form expected max, a two-arm bandit, configuration sets, files."""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from modebench.benchmarks.store import RunStore
from modebench.studies import budget
from modebench.studies.budget import (
    budget_frame,
    config_sets,
    cross_selection_frame,
    cross_selection_tables,
    expected_max_of_k,
    ucb_choices,
)


def test_expected_max_of_k_by_hand_and_by_enumeration():
    # {1,2,3,4}, k = 2: the six pairs' maxima are 2,3,4,3,4,4 -> 20/6
    assert expected_max_of_k([4, 1, 3, 2], 2) == pytest.approx(20 / 6)
    assert expected_max_of_k([4, 1, 3, 2], 1) == pytest.approx(2.5)
    assert expected_max_of_k([4, 1, 3, 2], 4) == pytest.approx(4.0)
    values = np.random.default_rng(0).normal(size=7)
    for k in range(1, 8):
        brute = np.mean([max(c) for c in itertools.combinations(values, k)])
        assert expected_max_of_k(values, k) == pytest.approx(brute, abs=1e-12)
    with pytest.raises(ValueError):
        expected_max_of_k(values, 8)


def test_two_arm_bandit_settles_on_the_better_arm():
    rng = np.random.default_rng(1)
    worse = (rng.random(200) < 0.3) * 100.0  # true mean ~30
    better = (rng.random(200) < 0.7) * 100.0  # true mean ~70
    choices = ucb_choices([worse, better], [1, 2, 10, 200, 1000], reps=400, rng=np.random.default_rng(0))
    share_better = (choices == 1).mean(0)
    assert share_better[-1] == 1.0  # after 1000 episodes every replicate deploys the better arm
    assert share_better[3] > 0.97
    assert share_better[2] > 0.6  # 10 episodes already favour it
    assert 0.25 < share_better[0] < 0.75  # one episode: a coin flip between the arm tried and nothing
    # deterministic for a fixed random state
    again = ucb_choices([worse, better], [1, 2, 10, 200, 1000], reps=400, rng=np.random.default_rng(0))
    assert np.array_equal(choices, again)


def record(run_id, method, seed, knobs, config, scores, source="train", step=100, task="toy/a", suite_default=None, **extra):
    return {"run_id": run_id, "method": method, "base_method": method, "suite": "toy", "task": task, "dataset": "d", "seed": seed,
            "step": step, "total_steps": 100, "knobs": knobs, "config": config, "source": source, "suite_default": suite_default,
            "normalized_score": float(np.mean(scores)), "episodes": [{"normalized_score": float(s)} for s in scores], **extra}


def fixture_records():
    rs = []
    # a knob grid on one GEM checkpoint: own knobs N=64 (mean 50), N=1 (mean 20), N=256 (mean 80)
    rs.append(record("gem-0", "gem", 0, {"N": 64}, {"h": 1}, [40, 60]))
    rs.append(record("gem-0", "gem", 0, {"N": 1}, {"h": 1}, [10, 30], source="eval"))
    rs.append(record("gem-0", "gem", 0, {"N": 256}, {"h": 1}, [70, 90], source="eval"))
    rs.append(record("gem-0", "gem", 0, {"N": 1}, {"h": 1}, [0, 0], source="eval", step=50))  # not final: ignored
    # a DROL training grid K in {1, 16} x seeds {0, 1}; K=16 is the suite default
    for seed in (0, 1):
        rs.append(record(f"drol-k1-{seed}", "drol", seed, {}, {"K": 1}, [10 + seed, 30]))
        rs.append(record(f"drol-k16-{seed}", "drol", seed, {}, {"K": 16}, [60, 80 + seed], suite_default=True))
    return rs


def test_config_sets_find_knob_grids_training_grids_and_seeds():
    sets = {(s.method, s.family, s.unit): s for s in config_sets(fixture_records())}
    knob = sets[("gem", "knobs: N", "gem-0")]
    assert sorted(knob.labels) == ["N=1", "N=256", "N=64"]
    assert knob.default_score == 50.0 and sorted(knob.true) == [20.0, 50.0, 80.0]
    grid = sets[("drol", "config: K", "seed 1")]
    assert dict(zip(grid.labels, grid.true.tolist())) == {"K=1": 20.5, "K=16": 70.5} and grid.labels[grid.default] == "K=16"
    # without a suite_default mark, the one config not marked non-default is the default
    unmarked = [{**r, "suite_default": None if r["config"] == {"K": 16} else False} for r in fixture_records()]
    (grid_old,) = [s for s in config_sets(unmarked) if s.family == "config: K" and s.unit == "seed 0"]
    assert grid_old.labels[grid_old.default] == "K=16"
    # a config field only some runs have (another code version) is not a varied setting
    newer = [{**r, "config": {**r["config"], "new_field": 1}} if r["run_id"] == "drol-k1-0" else r for r in fixture_records()]
    assert {s.family for s in config_sets(newer) if s.method == "drol"} == {"config: K", "seeds"}
    seeds = sets[("drol", "seeds", "all seeds")]
    assert seeds.default is None and seeds.labels == ["seed 0", "seed 1"]
    assert ("gem", "seeds", "all seeds") not in sets  # one seed: nothing to choose
    # the run's own knobs from its config.json win over a record's source (an eval record may replace the train one)
    (relabelled,) = [s for s in config_sets(fixture_records(), {"gem-0": {"N": 256}}) if s.unit == "gem-0"]
    assert relabelled.default_score == 80.0


def test_budget_frame_default_oracle_eop_and_determinism():
    sets = config_sets(fixture_records())
    frame = budget_frame(sets, reps=200, seed=3)
    gem = frame[(frame["method"] == "gem")].set_index("budget")
    assert gem.loc["0", "score"] == 50.0 and gem.loc["0", "low"] == gem.loc["0", "high"] == 50.0
    assert gem.loc["oracle", "score"] == 80.0
    assert gem.loc["EOP k=1", "score"] == pytest.approx(50.0) and gem.loc["EOP k=2", "score"] == pytest.approx((50 + 80 + 80) / 3)
    assert gem.loc["1000", "score"] == 80.0  # enough episodes: always the best setting
    assert gem.loc["10", "low"] <= gem.loc["10", "score"] <= gem.loc["10", "high"]
    grid = frame[(frame["family"] == "config: K")].set_index("budget")
    assert grid.loc["0", "score"] == pytest.approx(70.25)  # the suite default K=16, both seeds
    pd.testing.assert_frame_equal(frame, budget_frame(sets, reps=200, seed=3))


def cross_records():
    rs = []
    for seed in (0, 1):
        rs.append(record(f"lom-{seed}", "lom", seed, {"actor": "policy"}, {}, [40, 40 + 10 * seed]))
        for n, score in ((0, 40 + 5 * seed), (16, 70 + seed), (256, 90)):
            # evaluated over the proposer's own episode count (2), as cross-select does by default
            rs.append(record(f"lom-{seed}", "lom", seed, {"actor": "policy", "selection": {"N": n}}, {}, [score, score], source="select",
                             selection={"selector_run_id": f"gem-{seed}", "proposer_knobs": {"actor": "policy"},
                                        "knobs": {"N": n, "lcb_lambda": 1.0}}))
    # another lambda: left out of the table (the most common setting is kept)
    rs.append(record("lom-0", "lom", 0, {"actor": "policy", "selection": {"N": 16, "l": 3}}, {}, [0, 0], source="select",
                     selection={"selector_run_id": "gem-0", "proposer_knobs": {"actor": "policy"}, "knobs": {"N": 16, "lcb_lambda": 3.0}}))
    return rs


def test_cross_selection_table_pairs_each_proposer_with_its_own_score():
    frame = cross_selection_frame(cross_records())
    assert frame.attrs["left_out"] == 1 and set(frame["N"]) == {0, 16, 256}
    assert frame[frame["seed"] == 1]["alone"].unique().tolist() == [45.0]
    (table,) = cross_selection_tables(frame)
    data = table.data[table.data["scope"] == "suite mean"].set_index("N")
    assert data.loc[16, "score"] == 70.5 and data.loc[256, "score"] == 90.0 and data.loc[16, "alone"] == 42.5
    text = table.markdown()
    assert "+47.5 (N=256)" in text and "1 record(s) with other selection knobs left out" in text


def test_tables_and_plots_are_written_from_a_store(tmp_path):
    for r in fixture_records() + cross_records():
        RunStore(tmp_path, r["run_id"]).write_record({k: v for k, v in r.items() if k != "run_id"})
    tables = budget.write_tables(tmp_path, tmp_path / "tables", reps=50)
    assert {p.name for p in tables} >= {"cross_selection_toy.md", "online_budget_toy.md", "online_budget_toy.csv"}
    assert "B=1000" in (tmp_path / "tables" / "online_budget_toy.md").read_text()
    plots = budget.write_plots(tmp_path, tmp_path / "plots", ["png"], reps=50)
    assert {p.name for p in plots} == {"cross_selection_toy.png", "online_budget_toy.png"}
    assert all(p.stat().st_size > 10_000 for p in plots)


def test_tables_plots_and_report_commands_carry_the_study_writers(tmp_path):
    """analysis cannot import the studies: the command-line root hands `tables`, `plots` and `report` their writers."""
    from modebench.cli import build_parser

    for r in cross_records():
        RunStore(tmp_path, r["run_id"]).write_record({k: v for k, v in r.items() if k != "run_id"})
    parser = build_parser()
    for command in ("tables", "plots", "report"):
        args = parser.parse_args([command])
        written = [p.name for write in args.study_tables for p in write(tmp_path, tmp_path / command, log=print)]
        assert "cross_selection_toy.md" in written, command
        drawn = [p.name for write in args.study_plots for p in write(tmp_path, tmp_path / command, ["png"], log=print)]
        assert "cross_selection_toy.png" in drawn, command


def test_a_short_run_or_a_damaged_record_leaves_the_study_tables_and_figures_unchanged(tmp_path):
    """The studies read the store as every table does: runs of their cell's length only (a short
    try is never averaged in) and a damaged file named in one line, never a crash."""
    def render(out: Path) -> tuple[dict[str, bytes], list[str]]:
        log: list[str] = []
        budget.write_tables(tmp_path / "store", out, reps=50, log=log.append)
        budget.write_plots(tmp_path / "store", out, ["png", "pdf"], reps=50, log=log.append)
        return {p.name: p.read_bytes() for p in sorted(out.iterdir())}, log

    for r in fixture_records():
        RunStore(tmp_path / "store", r["run_id"]).write_record({k: v for k, v in r.items() if k != "run_id"})
    before, _ = render(tmp_path / "before")
    assert "online_budget_toy.md" in before and "online_budget_toy.pdf" in before
    # a 10-update try of DROL K=1 seed 1 that scored 0, and a truncated record
    short = record("drol-k1-short", "drol", 1, {}, {"K": 1}, [0, 0], step=10)
    RunStore(tmp_path / "store", "drol-k1-short").write_record({**short, "total_steps": 10})
    damaged = tmp_path / "store" / "runs" / "gem-0" / "records" / "truncated.json"
    damaged.write_text('{"method": "gem", "normalized_sc')
    after, log = render(tmp_path / "after")
    assert [name for name in before if after.get(name) != before[name]] == []
    assert any("1 damaged record(s) left out" in line for line in log), log
