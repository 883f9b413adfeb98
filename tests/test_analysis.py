"""The analysis layer: loader, score rule, table membership from record fields, paper-layout
tables, plots, rliable-equivalent aggregates, the NLL-gap and profile tables, the facts file and
the CLI, on a small store of records with hand-checkable numbers written by the real RunStore
(numbers chosen in `build_store`)."""

from __future__ import annotations

import math
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from modebench.analysis import stats
from modebench.analysis.records import ScoreRule, load_records, main_runs, select_scores
from modebench.analysis.render import within
from modebench.analysis.tables import (
    Variant,
    ablation_layouts,
    drol_layout,
    gem_layout,
    lom_layout,
)
from modebench.benchmarks.store import RunStore, write_profile

# ---------------------------------------------------------------------------- the fixture store

GEM_KNOBS = {"N": 1024, "lcb_lambda": 1.0, "w_end": 0.4, "use_pw": True, "k_smooth": 1,
             "candidate_source": "actor", "support_mode": "zscore", "anchor": "mode"}
GEM_CONFIG = {"batch_size": 256, "discount": 0.99, "num_components": 5, "hidden_dims": [256, 256]}
IQL_CONFIG = {"batch_size": 256, "discount": 0.99, "expectile": 0.7}
DROL_CONFIG = {"batch_size": 256, "discount": 0.99, "num_candidates": 16, "alpha": 1.0}

TASKS = ["toy/four-goal", "toy/branch", "d4rl/hopper-medium-v2"]
NORMALISERS = {"toy": {"kind": "toy", "ref_min": 0.0, "ref_max": 1.0, "source": "test"},
               "d4rl": {"kind": "d4rl", "ref_min": -20.27, "ref_max": 3234.3, "source": "test"}}

# final-step scores per (method, task) for seeds 0, 1, 2
FINAL = {
    ("gem", "toy/four-goal"): [80.0, 90.0, 100.0],  # mean 90, std 10
    ("iql", "toy/four-goal"): [60.0, 70.0, 80.0],  # mean 70, std 10: not bold (< 0.95 * 90)
    ("gem", "toy/branch"): [40.0, 44.0, 42.0],  # mean 42, std 2
    ("iql", "toy/branch"): [40.0, 41.0, 42.0],  # mean 41 >= 0.95 * 42 = 39.9: bold too
    ("gem", "d4rl/hopper-medium-v2"): [100.0, 102.0, 104.0],  # mean 102; GEM Table 1 prints 100.08
    ("iql", "d4rl/hopper-medium-v2"): [66.0, 68.0, 70.0],  # mean 68; GEM Table 1 prints 67.53
}
MIDWAY = 20.0  # every run scores this at step 500 (learning curves; last:2 = (20 + final) / 2)
N_SWEEP = {1: (50.0, 0.00, 0.50), 64: (70.0, 0.01, 0.40)}  # N -> (score offset from 0, violation, collapse_dist)
# GEM's recorded NLL gap per (task, seed): hopper's mean 6.5 vs GEM Table 9's 6.05
GAPS = {(task, seed): value for task, values in {"toy/four-goal": [1.0, 2.0, 3.0], "toy/branch": [0.5, 0.5, 0.5],
                                                 "d4rl/hopper-medium-v2": [6.0, 7.0, 6.5]}.items()
        for seed, value in enumerate(values)}


def _record(method: str, task: str, seed: int, step: int, score: float, knobs: dict, config: dict, source: str,
            audits: dict | None = None, base: str | None = None, protocol: str = "controlled", suite_default: bool | None = True,
            extra: dict | None = None) -> dict:
    membership = {"protocol": protocol, "task_default": task == "toy/four-goal", "task_order": TASKS.index(task),
                  "default_run": {"steps": 1000, "eval_episodes": None}, "normaliser": NORMALISERS[task.split("/")[0]]}
    if suite_default is not None:
        membership["suite_default"] = suite_default
    return {
        **membership, **(extra or {}),
        "method": method, "base_method": base or method, "task": task, "suite": task.split("/")[0],
        "dataset": task.split("/")[1] if task.startswith("d4rl/") else task,
        "seed": seed, "step": step, "total_steps": 1000, "knobs": knobs, "config": config, "config_hash": "h",
        "git_revision": "test", "device": "cpu", "timestamp": 0.0, "return_mean": score / 100, "return_std": 0.0,
        "normalized_score": score, "normalized_std": 0.0, "success_rate": 0.0, "episode_length_mean": 1.0,
        "audits": audits or {}, "eval_wall_time": 0.1, "eval_env_steps_per_second": 1000.0, "episodes": [],
        "source": source, "updates_per_second": 100.0, "training_metrics": {"training/loss": 1.0},
    }


def build_store(root: Path, with_sweeps: bool = True) -> Path:
    """The store: gem and iql on three tasks x 3 seeds (plus gem knob grids), drol at K = 4 and 16."""
    for (method, task), scores in FINAL.items():
        config = GEM_CONFIG if method == "gem" else IQL_CONFIG
        knobs = GEM_KNOBS if method == "gem" else {}
        for seed, final in enumerate(scores):
            store = RunStore(root, f"{method}__{task.replace('/', '-')}__seed{seed}__h")
            audits = {"violation": 0.02, "collapse_dist": 0.3, "support_z": 1.0} if method == "gem" else {}
            gap = {"diagnostics/behavior_gap": GAPS[(task, seed)], "diagnostics/actor_gap": 0.5} if method == "gem" else {}
            store.write_record(_record(method, task, seed, 500, MIDWAY, knobs, config, "train", audits, extra=gap))
            store.write_record(_record(method, task, seed, 1000, final, knobs, config, "train", audits, extra=gap))
            if method != "gem" or not with_sweeps:
                continue
            # inference-knob grid on the final checkpoint (modebench eval): N, w_end, no-pw ablation
            for n, (score, violation, collapse) in N_SWEEP.items():
                store.write_record(_record("gem", task, seed, 1000, score + seed, {**knobs, "N": n}, config, "eval",
                                           {"violation": violation, "collapse_dist": collapse, "support_z": 0.5}))
            for w_end, (score, violation) in {0.2: (final + 1.0, 0.05), 1.0: (final - 3.0, 0.001)}.items():
                store.write_record(_record("gem", task, seed, 1000, score, {**knobs, "w_end": w_end}, config, "eval",
                                           {"violation": violation, "collapse_dist": 0.3, "support_z": 1.0}))
            # no-pw: delta -5, -10, -15 for seeds 0, 1, 2 (mean -10, sample std 5 per task)
            store.write_record(_record("gem", task, seed, 1000, final - 5.0 * (seed + 1), {**knobs, "use_pw": False}, config,
                                       "eval", {"violation": 0.2, "collapse_dist": 0.6, "support_z": -0.9}))
    if with_sweeps:
        # DROL K sweep on four-goal: K = 4 (two seeds) and K = 16 (three seeds: the main-table config)
        for k, scores in {4: [30.0, 34.0], 16: [50.0, 52.0, 54.0]}.items():
            for seed, score in enumerate(scores):
                store = RunStore(root, f"drol__toy-four-goal__seed{seed}__k{k}")
                store.write_record(_record("drol", "toy/four-goal", seed, 1000, score, {}, {**DROL_CONFIG, "num_candidates": k}, "train",
                                           suite_default=k == 16))
    return root


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> Path:
    return build_store(tmp_path_factory.mktemp("results"))


@pytest.fixture(scope="module")
def frame(store) -> pd.DataFrame:
    return load_records(store)


@pytest.fixture(scope="module")
def scores(frame) -> pd.DataFrame:
    main, _ = main_runs(select_scores(frame))
    return main


# ---------------------------------------------------------------------------- loader and score rule


def test_loader_one_row_per_record_with_flat_knobs_config_audits(store, frame):
    files = list(store.glob("**/records/*.json"))
    assert len(frame) == len(files) == 86
    for column in ("knob/N", "knob/w_end", "config/num_candidates", "audit/violation", "audit/collapse_dist", "training/loss"):
        assert column in frame
    gem = frame[(frame["method"] == "gem") & (frame["task"] == "toy/four-goal") & (frame["seed"] == 0)]
    # 2 train evaluations + 2 N + 2 w_end + 1 no-pw settings on the final checkpoint
    assert len(gem) == 7
    assert gem["is_run_knobs"].sum() == 2
    assert set(gem.loc[~gem["is_run_knobs"], "setting"]) == {"N=1", "N=64", "w_end=0.2", "w_end=1.0", "use_pw=False"}
    assert frame.loc[frame["task"] == "toy/four-goal", "task_default"].all()  # from the records, not toy.yaml
    assert set(frame["protocol"]) == {"controlled"}
    assert load_records(store / "missing").empty


def test_score_rule_is_explicit_final_by_default(frame):
    def gem0(rule):
        s = select_scores(frame, rule)
        return s[(s["method"] == "gem") & (s["task"] == "toy/four-goal") & (s["seed"] == 0)].iloc[0]

    final = gem0(None)
    assert final["score"] == 80.0 and final["n_evals"] == 1 and final["step"] == 1000
    assert gem0("last:2")["score"] == pytest.approx((MIDWAY + 80.0) / 2)
    assert gem0("best")["score"] == 80.0
    assert select_scores(frame).attrs["score_rule"] == "score = final evaluation of each run"
    assert "BEST" in ScoreRule.parse("best").describe()
    from modebench.analysis.errors import AnalysisError

    with pytest.raises(AnalysisError, match="last:K"):
        ScoreRule.parse("max")
    # knobs="all" keeps every knob setting as its own row (the sweeps), "run" only the run's own
    every = select_scores(frame, knobs="all")
    assert len(every[(every["method"] == "gem") & (every["task"] == "toy/four-goal") & (every["seed"] == 0)]) == 6


def test_main_runs_keeps_one_training_config(frame):
    main, notes = main_runs(select_scores(frame))
    drol = main[main["method"] == "drol"]
    assert sorted(drol["score"]) == [50.0, 52.0, 54.0]  # K = 16 kept (suite_default), the K = 4 sweep runs set aside
    assert any("drol on toy/four-goal (controlled): 2 run(s)" in n and "suite's default" in n for n in notes)


def test_main_runs_follow_the_suite_default_field_not_the_run_count(frame):
    """Membership is the record's suite_default, even when the sweep config has more runs."""
    scores = select_scores(frame)
    flipped = scores.copy()
    drol = flipped["method"] == "drol"
    flipped.loc[drol, "suite_default"] = flipped.loc[drol, "config/num_candidates"] == 4
    main, _ = main_runs(flipped)
    assert sorted(main.loc[main["method"] == "drol", "score"]) == [30.0, 34.0]  # 2 runs at K = 4 beat 3 at K = 16
    # records that predate the field (store marks it None): the config with the most runs, said in the note
    legacy = scores.copy()
    legacy["suite_default"] = None
    main, notes = main_runs(legacy)
    assert sorted(main.loc[main["method"] == "drol", "score"]) == [50.0, 52.0, 54.0]
    assert any("predate the suite_default field" in n for n in notes)
    # code changed the suite's default between runs: both configs say suite_default; the newer one is kept
    changed = scores.copy()
    drol = changed["method"] == "drol"
    changed.loc[drol, "suite_default"] = True
    changed.loc[drol, "timestamp"] = np.where(changed.loc[drol, "config/num_candidates"] == 4, 200.0, 100.0)
    main, notes = main_runs(changed)
    assert sorted(main.loc[main["method"] == "drol", "score"]) == [30.0, 34.0] and main["method"].eq("gem").sum() == 9
    assert any("drol on toy/four-goal (controlled): 3 run(s)" in n and "the default changed between runs" in n for n in notes)
    assert not any(n.startswith("gem ") for n in notes)  # one config: nothing set aside, nothing said


# ---------------------------------------------------------------------------- tables


def _cells(table, label):
    for row in table.rows:
        if row[0].text == label:
            return {h: c for h, c in zip(table.header, row)}
    raise KeyError(label)


def test_gem_layout_means_stds_bold_sums_and_published(scores):
    table = gem_layout(scores, min_runs=3)  # the fixture has 3 seeds; the default needs 5 for any bold
    four = _cells(table, "four-goal")
    assert four["GEM"].text == "90.00 ± 10.00 (3)" and four["GEM"].bold
    assert four["IQL"].text == "70.00 ± 10.00 (3)" and not four["IQL"].bold  # 70 < 0.95 * 90
    assert four["DROL"].text == "52.00 ± 2.00 (3)"
    branch = _cells(table, "branch")
    assert branch["GEM"].bold and branch["IQL"].bold  # 41 >= 0.95 * 42 = 39.9
    assert branch["DROL"].text == ""
    # toy is the second section: Sum / Avg over its two tasks; drol lacks branch -> empty
    toy_rows = table.data[(table.data["section"] == "toy")]
    sums = toy_rows[toy_rows["kind"] == "sum"].set_index("method")["mean"]
    avgs = toy_rows[toy_rows["kind"] == "avg"].set_index("method")["mean"]
    assert sums["gem"] == 132.0 and sums["iql"] == 111.0 and math.isnan(sums["drol"])
    assert avgs["gem"] == 66.0 and avgs["iql"] == 55.5
    # published: hopper-medium-v2 is in GEM Table 1 (GEM 100.08, IQL 67.53), toy tasks are empty
    hopper = _cells(table, "hopper-medium-v2")
    assert hopper["GEM paper [D4RL refs]"].text == "100.08" and hopper["GEM Δ"].text == "+1.92"
    assert hopper["IQL paper [D4RL refs]"].text == "67.53" and hopper["IQL Δ"].text == "+0.47"
    assert four["GEM paper [D4RL refs]"].text == "" and four["GEM Δ"].text == ""
    assert not any(h.startswith("DROL paper") for h in table.header)  # no published DROL number for any of these tasks: no empty pair
    assert table.sections[0] == "Locomotion"  # GEM Table 1's suite for a published task
    assert table.title.endswith("controlled protocol") and "controlled protocol" in table.notes[0]
    md, tex = table.markdown(), table.latex()
    assert "| four-goal | toy refs | 70.00 ± 10.00 (3) |" in md and "**90.00 ± 10.00 (3)**" in md
    assert "\\textbf{90.00 $\\pm$ 10.00 (3)}" in tex and "\\toprule" in tex
    assert "Sources: GEM Table 1 [D4RL refs] (gem, iql)" in md
    assert hopper["Normaliser"].text == "D4RL refs" and four["Normaliser"].text == "toy refs"
    # the header line says what every cell holds
    assert table.about[0].startswith("Every cell: runs of 1000 training steps, each scored over unknown evaluation episodes")
    assert md.splitlines()[2] == table.about[0]
    # the default: fewer than 5 runs per cell, no bold anywhere (n is shown)
    plain = gem_layout(scores)
    assert not any(c.bold for row in plain.rows for c in row) and "(3)" in _cells(plain, "four-goal")["GEM"].text


def test_reference_ids_map_only_the_same_datasets():
    from modebench.analysis.reference import published_value, reference_id

    assert reference_id("locomotion/hopper-medium", "hopper-medium-v2") == "hopper-medium-v2"
    assert reference_id("ogbench-cube-single/task2", "cube-single-play-singletask-task2-v0") == "cube-single-play-singletask-task2-v0"
    assert reference_id("antmaze/umaze", "D4RL/antmaze/umaze-v1") == "antmaze-umaze-v2"  # Minari re-creation (caveat note)
    assert reference_id("adroit/pen-human", "D4RL/pen/human-v2") == "pen-human-v1"
    assert reference_id("maze2d/umaze-dense", "D4RL/pointmaze/umaze-dense-v2") is None  # GEM's maze2d is sparse
    assert reference_id("minari-mujoco/hopper-medium", "mujoco/hopper/medium-v0") is None  # new data, never D4RL's
    assert reference_id("ogbench-local/cube", "cube-single-play-singletask-task2-v0[local:small]") is None  # locally generated
    assert reference_id("toy/four-goal", "toy/four-goal") is None
    assert published_value("drol", "antmaze-large-navigate-singletask-task1-v0", "drol")[0] == 98.0  # DROL(16) column
    assert published_value("lom", "hopper-medium-v2", "lom") == (87.2, 2.8, "LOM Table 1")


def test_bold_rule_is_relative_to_the_row_best():
    assert within(95.0, 100.0, 0.95) and not within(94.9, 100.0, 0.95)
    assert within(-10.5, -10.0, 0.95) and not within(-10.6, -10.0, 0.95)  # mirrored for negative bests


def test_drol_layout_groups_default_marker_and_one_step_underline(scores):
    table = drol_layout(scores, min_runs=3)
    assert [g[0] for g in table.groups[1:]] == ["Gaussian / mixture policies", "One-step generative policies"]
    assert "\\cmidrule(lr){3-8} \\cmidrule(lr){9-9}" in table.latex()  # iql, gem (+ paper, Δ) | drol (no published number)
    four = _cells(table, "four-goal (*)")
    assert four["DROL"].text == "52.0 ± 2.0 (3)" and not four["DROL"].underline
    # a row where the one-step method is within 0.95 of the best: bold AND underlined
    one = scores[(scores["task"] == "toy/four-goal") & scores["method"].isin(["iql", "drol"])].copy()
    one.loc[one["method"] == "drol", "score"] += 20.0  # drol mean 72 vs iql 70
    row = _cells(drol_layout(one, min_runs=3), "four-goal (*)")
    assert row["DROL"].bold and row["DROL"].underline and row["IQL"].bold and not row["IQL"].underline
    avg = table.data[(table.data["kind"] == "average") & (table.data["family"] == "toy")].set_index("method")["mean"]
    assert avg["gem"] == 66.0 and math.isnan(avg["drol"])


def test_lom_layout_rows_and_highest_only_bold(scores):
    table = lom_layout(scores, min_runs=3)
    hopper = next(r for r in table.rows if r[1].text == "hopper")
    assert hopper[0].text == "medium"  # hopper-medium-v2 -> dataset type medium, env hopper
    branch = {h: c for h, c in zip(table.header, next(r for r in table.rows if r[1].text == "branch"))}
    assert branch["GEM"].bold and not branch["IQL"].bold  # LOM bolds the highest mean only
    assert "IQL paper [D4RL refs]" in table.header


def test_ablation_tables_paired_deltas(frame):
    every = select_scores(frame, knobs="all")
    t5, t6 = ablation_layouts(every, "gem")
    no_pw = t5.data.set_index("variant").loc["no pw"]
    # deltas -5, -10, -15 per task over 3 tasks: mean -10, sample std sqrt(150 / 8)
    assert no_pw["delta_mean"] == pytest.approx(-10.0)
    assert no_pw["delta_std"] == pytest.approx(math.sqrt(150 / 8))
    assert no_pw["n"] == 9 and no_pw["audit/violation"] == pytest.approx(0.2)
    assert "No data for: anchor bary" in " ".join(t5.notes)
    assert "paper Δ" not in t5.header  # toy tasks: GEM Table 5 (D4RL) is not comparable
    six = t6.data.set_index(["task", "variant"])
    assert six.loc[("toy/four-goal", "no pw"), "delta_mean"] == pytest.approx(-10.0)
    assert six.loc[("d4rl/hopper-medium-v2", "no pw"), "paper_delta"] == pytest.approx(0.22)  # GEM Table 6
    # on published tasks only, Table 5's published delta is set beside ours
    d4rl = every[every["task"] == "d4rl/hopper-medium-v2"]
    t5_d4rl, _ = ablation_layouts(d4rl, "gem", [Variant("no pw", knobs={"use_pw": False})])
    row = t5_d4rl.data.set_index("variant").loc["no pw"]
    assert row["paper_delta"] == pytest.approx(-11.57) and row["delta_minus_paper"] == pytest.approx(1.57)
    assert ablation_layouts(every, "iql") is None
    # a failed variant evaluation (NaN score) is counted beside n, never averaged
    broken = every.copy()
    hit = broken.index[(broken["knob/use_pw"] == False) & (broken["task"] == "toy/branch") & (broken["seed"] == 0)]
    broken.loc[hit, "score"] = float("nan")
    t5_broken, _ = ablation_layouts(broken, "gem", [Variant("no pw", knobs={"use_pw": False})])
    row = t5_broken.data.set_index("variant").loc["no pw"]
    assert (row["n"], row["failed"]) == (8, 1) and np.isfinite(row["delta_mean"])
    assert t5_broken.rows[1][-1].text == "8 (1 failed)"


# ---------------------------------------------------------------------------- aggregates vs rliable


def _rliable():
    """rliable itself (pinned with pandas 2.3.3: its dependency arch < 8 does not import under pandas 3)."""
    from rliable import library, metrics

    return library, metrics


def test_aggregates_equal_rliable_on_a_fixed_seed():
    rly, metrics = _rliable()
    rng = np.random.default_rng(0)
    data = {"a": rng.uniform(0, 120, (5, 7)), "b": rng.uniform(0, 100, (5, 7))}

    def func(x):
        return np.array([metrics.aggregate_median(x), metrics.aggregate_iqm(x), metrics.aggregate_mean(x),
                         metrics.aggregate_optimality_gap(x, 100)])

    np.random.seed(3)
    points, intervals = rly.get_interval_estimates(data, func, reps=200)
    ours = stats.aggregate_metrics(data, reps=200, seed=3)
    for method in data:
        part = ours[ours["method"] == method].set_index("metric").loc[list(stats.METRICS)]
        np.testing.assert_allclose(part["point"], points[method], rtol=0, atol=1e-10)
        np.testing.assert_allclose(np.stack([part["low"], part["high"]]), intervals[method], rtol=0, atol=1e-10)

    taus = np.linspace(0, 120, 13)
    np.random.seed(5)
    profiles, cis = rly.create_performance_profile(data, taus, reps=150)
    mine = stats.performance_profile(data, taus, reps=150, seed=5)
    for method in data:
        np.testing.assert_allclose(mine[method][0], profiles[method], atol=1e-12)
        np.testing.assert_allclose(np.stack(mine[method][1:]), cis[method], atol=1e-12)

    np.random.seed(7)
    point, ci = rly.get_interval_estimates({"ab": [data["a"], data["b"]]}, metrics.probability_of_improvement, reps=150)
    p, low, high = stats.probability_of_improvement(data["a"], data["b"], reps=150, seed=7)
    assert p == pytest.approx(float(point["ab"]), abs=1e-12)
    assert (low, high) == pytest.approx(tuple(np.ravel(ci["ab"])), abs=1e-12)


def test_non_finite_scores_give_what_rliable_gives():
    """A NaN score: rliable's NaN point and interval (not a NaN point with finite intervals); inf
    enters the sums as numpy does; the IQM is trimmed per replicate; the global stream is what
    rliable draws from, and ours leaves it alone."""
    import warnings

    rly, metrics = _rliable()
    rng = np.random.default_rng(1)
    a, b, c = rng.uniform(0, 120, (5, 3)), rng.uniform(0, 100, (5, 3)), rng.uniform(0, 100, (5, 3))
    a[1, 2] = np.nan
    b[0, 0] = np.inf
    c[0, 0], c[2, 1] = np.inf, -np.inf
    data = {"a": a, "b": b, "c": c}

    def func(x):
        return np.array([metrics.aggregate_median(x), metrics.aggregate_iqm(x), metrics.aggregate_mean(x),
                         metrics.aggregate_optimality_gap(x, 100)])

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        np.random.seed(3)
        points, intervals = rly.get_interval_estimates(data, func, reps=300)
        state = np.random.get_state()[1].copy()
        ours = stats.aggregate_metrics(data, reps=300, seed=3)
        assert (np.random.get_state()[1] == state).all()  # the global stream untouched
        for method in data:
            part = ours[ours["method"] == method].set_index("metric").loc[list(stats.METRICS)]
            np.testing.assert_allclose(part["point"], points[method], rtol=0, atol=1e-10)
            np.testing.assert_allclose(np.stack([part["low"], part["high"]]), intervals[method], rtol=0, atol=1e-10)
        assert ours.loc[ours["method"] == "a", ["point", "low", "high"]].isna().all().all()
        assert (ours.loc[ours["method"] == "a", "n_nonfinite"] == 1).all()

        taus = np.linspace(0, 120, 7)
        np.random.seed(5)
        profiles, cis = rly.create_performance_profile({"a": a}, taus, reps=100)
        point, low, high = stats.performance_profile({"a": a}, taus, reps=100, seed=5)["a"]
        np.testing.assert_allclose(point, profiles["a"], atol=1e-12)
        np.testing.assert_allclose(np.stack([low, high]), cis["a"], atol=1e-12)
        assert ((low <= point) & (point <= high)).all()  # NaN counted as a run below every tau, in point and replicates

        for x, y in ((a, b), (b, c)):
            np.random.seed(7)
            p, ci = rly.get_interval_estimates({"xy": [x, y]}, metrics.probability_of_improvement, reps=60)
            mine = stats.probability_of_improvement(x, y, reps=60, seed=7)
            np.testing.assert_allclose(mine, [float(p["xy"]), *np.ravel(ci["xy"])], atol=1e-12)


def test_iqm_is_trimmed_per_replicate_and_every_point_lies_in_its_interval():
    x = np.array([[0.0, 10.0], [100.0, 20.0], [50.0, 90.0]])  # 6 scores: each replicate trims its own 1 + 1
    reps = stats._resample(stats.Scores.of(x), 50, np.random.RandomState(0))
    mask = np.ones_like(x, dtype=bool)
    want = [float(np.mean(np.sort(r.ravel())[1:5])) for r in reps]
    np.testing.assert_allclose(stats.agg_iqm(reps, mask), want)
    rng = np.random.default_rng(2)
    for trial in range(60):  # small finite samples, rectangular and ragged, continuous and tied
        tasks = int(rng.integers(1, 4))
        counts = rng.integers(1, 6, tasks) if trial % 2 else np.full(tasks, rng.integers(1, 6))
        per_task = [rng.choice([0.0, 50.0, 100.0], n) if trial % 3 == 0 else rng.uniform(0, 100, n) for n in counts]
        agg = stats.aggregate_metrics({"m": stats.Scores(per_task)}, reps=300, seed=trial)
        assert ((agg["low"] <= agg["point"] + 1e-9) & (agg["point"] <= agg["high"] + 1e-9)).all(), (per_task, agg)
        taus = np.linspace(0, 100, 11)
        point, low, high = stats.performance_profile({"m": stats.Scores(per_task)}, taus, reps=200, seed=trial)["m"]
        assert ((low <= point + 1e-12) & (point <= high + 1e-12)).all()


def test_aggregates_by_hand_on_0_100_scores():
    x = np.array([[0.0, 50.0, 120.0, 100.0], [10.0, 60.0, 80.0, 100.0]])  # 2 runs x 4 tasks
    row = stats.aggregate_metrics({"m": x}, reps=200, seed=0).set_index("metric")["point"]
    assert row["mean"] == pytest.approx(np.mean([5, 55, 100, 100]))
    assert row["median"] == pytest.approx(77.5)
    assert row["iqm"] == pytest.approx(np.mean([50, 60, 80, 100]))  # 8 scores, 2 cut at each end
    assert row["optimality_gap"] == pytest.approx(100 - np.mean([0, 50, 100, 100, 10, 60, 80, 100]))  # 120 clipped at 100
    # ragged tasks (different seed counts) are resampled task by task
    ragged = stats.Scores([np.array([1.0, 2.0, 3.0]), np.array([5.0, 7.0])])
    agg = stats.aggregate_metrics({"r": ragged}, reps=150, seed=0).set_index("metric")
    assert agg.loc["mean", "point"] == pytest.approx((2.0 + 6.0) / 2)
    assert (agg["low"] <= agg["point"]).all() and (agg["point"] <= agg["high"]).all()
    assert stats.probability_of_improvement(np.ones((3, 2)), np.ones((3, 2)), reps=10)[0] == 0.5


# ---------------------------------------------------------------------------- plots


def test_every_plot_builds_from_the_fixture_and_plots_the_right_numbers(store, tmp_path):
    from modebench.analysis.plots import build_plots

    notes: list[str] = []
    written = build_plots(store, tmp_path, formats=("png",), reps=200, log=notes.append)
    stems = {p.stem for p in written if p.suffix == ".png"}
    expected = {"learning_curves", "gem_budget_suite", "gem_budget_tasks_score", "gem_budget_tasks_violation",
                "gem_budget_tasks_collapse_dist", "gem_wp_frontier", "drol_k", "aggregates_toy",
                "performance_profile_toy", "probability_of_improvement_toy"}
    assert expected <= stems
    assert all(p.stat().st_size > 10_000 for p in written if p.suffix == ".png")
    skipped = " ".join(n for n in notes if "skipped" in n)
    assert "lom_m skipped" in skipped and "isep_lambda skipped" in skipped  # no data: said, not silent
    out = tmp_path / "controlled"  # each protocol's figures in its own folder
    budget = pd.read_csv(out / "gem_budget_suite.csv")
    toy = budget[budget["suite"] == "toy"].set_index("knob/N")
    assert toy.loc[1, "score_mean"] == pytest.approx(51.0)  # 50 + seed, mean over seeds and tasks
    assert toy.loc[1024, "score_mean"] == pytest.approx(66.0)  # the runs' own N
    assert toy.loc[64, "audit/violation_mean"] == pytest.approx(0.01)
    drol = pd.read_csv(out / "drol_k.csv").set_index("config/num_candidates")
    assert drol.loc[4, "score_mean"] == pytest.approx(32.0) and drol.loc[16, "score_mean"] == pytest.approx(52.0)
    frontier = pd.read_csv(out / "gem_wp_frontier.csv")
    toy = frontier[frontier["suite"] == "toy"]
    assert sorted(toy["knob/w_end"].dropna()) == [0.2, 0.4, 1.0]
    off = toy[toy["w_p_off"].eq(True)].iloc[0]  # the no-pw records: the w_p = 0 point
    assert off["score_mean"] == pytest.approx(66.0 - 10.0) and off["audit/violation_mean"] == pytest.approx(0.2)


# ---------------------------------------------------------------------------- NLL gap and profile tables


def test_nll_gap_table_reads_the_recorded_diagnostics(store, tmp_path):
    """GEM Table 9 from the runs' own diagnostics/..._gap record fields (no checkpoint is read)."""
    from modebench.analysis.tables import build_tables

    build_tables(store, tmp_path, reps=50, log=lambda _: None)
    rows = pd.read_csv(tmp_path / "controlled" / "nll_gap.csv").set_index("task")
    assert rows.loc["d4rl/hopper-medium-v2", "diagnostics/behavior_gap_mean"] == pytest.approx(6.5)
    assert rows.loc["d4rl/hopper-medium-v2", "diagnostics/behavior_gap_std"] == pytest.approx(0.5)
    assert rows.loc["d4rl/hopper-medium-v2", "paper_gap"] == pytest.approx(6.05)  # GEM Table 9
    assert rows.loc["d4rl/hopper-medium-v2", "delta"] == pytest.approx(0.45)
    assert rows.loc["toy/four-goal", "diagnostics/behavior_gap_mean"] == pytest.approx(2.0)
    assert math.isnan(rows.loc["toy/four-goal", "paper_gap"])
    assert set(rows["method"]) == {"gem"}  # iql and drol record no gap


def _profile(method: str, setting: str, median: float, device: str = "cpu", batch: int = 1) -> dict:
    return {"method": method, "setting": setting, "knobs": {}, "device": device, "batch": batch, "obs_dim": 17, "act_dim": 6,
            "horizon": 1000, "latency_ms_median": median, "latency_ms_iqr_low": median - 0.1, "latency_ms_iqr_high": median + 0.1,
            "latency_ms_mean": median, "latency_ms_std": 0.2, "peak_alloc_mb": 3.5, "peak_reserved_mb": float("nan"),
            "params_m": 0.25, "repeats": 50, "warmup": 5, "threads": 1, "torch_version": "test"}


def test_profile_tables_render_the_stored_profile_records(tmp_path):
    from modebench.analysis.tables import build_tables

    for n, median in ((1024, 4.0), (1, 1.25), (64, 2.5)):
        write_profile(tmp_path, _profile("gem", f"N{n}", median))
    write_profile(tmp_path, _profile("bc", "default", 0.125))
    write_profile(tmp_path, _profile("bc", "default", 0.5, device="cuda"))
    written = build_tables(tmp_path, reps=10, log=lambda _: None)
    assert {p.name for p in written} == {f"latency_{d}{s}" for d in ("cpu", "cuda") for s in (".md", ".tex", ".csv", ".html")}
    md = (tmp_path / "tables" / "profile" / "latency_cpu.md").read_text()
    assert "| GEM | N64 | 1 | 2.500 [2.400, 2.600] | 2.500 ± 0.200 | 3.50 |  | 0.250 |" in md
    assert "| BC | default | 1 | 0.125 [0.025, 0.225] |" in md and "0.500" not in md  # the cuda record is in its own table
    assert "Published GEM Table 3" in md and "1.25-1.33 ms" in md  # read from gem_table3_profile.csv
    rows = [line.split(" | ")[:2] for line in md.splitlines() if line.startswith(("| BC", "| GEM"))]
    assert rows == [["| BC", "default"], ["| GEM", "N1"], ["| GEM", "N64"], ["| GEM", "N1024"]]  # facts order, numeric N


# ---------------------------------------------------------------------------- CLI end to end


def test_cli_tables_report_and_errors(store, tmp_path, capsys):
    from modebench.cli import main

    out = tmp_path / "tables"
    assert main(["tables", "--results", str(store), "--output-dir", str(out), "--reps", "200"]) == 0
    out = out / "controlled"
    for stem in ("main_gem_layout", "main_drol_layout", "main_lom_layout", "aggregates", "probability_of_improvement",
                 "ablations_gem", "ablation_deltas_gem", "nll_gap"):
        for suffix in (".md", ".tex", ".csv"):
            assert (out / f"{stem}{suffix}").exists()
    csv = pd.read_csv(out / "main_gem_layout.csv")
    hop = csv[(csv["task"] == "d4rl/hopper-medium-v2") & (csv["method"] == "gem")].iloc[0]
    assert hop["mean"] == 102.0 and hop["paper"] == 100.08 and hop["delta"] == pytest.approx(1.92)
    # the report regenerates tables and plots into its root and links every file it names
    root = tmp_path / "results"
    for seed, (gem, iql) in enumerate([(80.0, 60.0), (90.0, 70.0)]):
        for method, score in (("gem", gem), ("iql", iql)):
            RunStore(root, f"{method}-{seed}").write_record(
                _record(method, "toy/four-goal", seed, 1000, score, {}, IQL_CONFIG, "train"))
    assert main(["report", "--results", str(root), "--reps", "200", "--formats", "png,pdf"]) == 0
    report = (root / "report.md").read_text()
    links = re.findall(r"\]\(([^)]+)\)", report)
    assert "plots/controlled/aggregates_toy.png" in links and "tables/controlled/main_gem_layout.md" in links
    for link in links:
        assert (root / link).exists(), link
    assert "| four-goal | toy refs | 65.00 ± 7.07 (2) |" in report  # iql: mean of 60, 70; sample std 7.07
    assert main(["tables", "--results", str(root), "--score", "max"]) == 2
    assert "--score 'max'" in capsys.readouterr().err
    assert main(["tables", "--results", str(tmp_path / "empty"), "--reps", "10"]) == 0
    assert "no evaluation records" in capsys.readouterr().out


@pytest.mark.slow
def test_real_training_runs_end_to_end(tmp_path):
    """Real `train` runs (2 methods x 2 seeds, evaluated twice) -> every table and the learning curves."""
    import torch
    from modebench.analysis.plots import build_plots
    from modebench.analysis.tables import build_tables
    from modebench.benchmarks.run.train import train

    torch.set_num_threads(1)
    for method in ("bc", "iql"):
        for seed in (0, 1):
            train(method, "toy/four-goal", steps=40, seed=seed, out=tmp_path, eval_every=20, eval_episodes=10, device="cpu")
    frame = load_records(tmp_path)
    assert len(frame) == 8 and set(frame["step"]) == {20, 40}
    build_tables(tmp_path, reps=200, frame=frame)
    table = pd.read_csv(tmp_path / "tables" / "controlled" / "main_gem_layout.csv")
    task_rows = table[table["kind"] == "task"].set_index("method")
    finals = select_scores(frame).groupby("method")["score"].mean()
    for method in ("bc", "iql"):
        assert task_rows.loc[method, "mean"] == pytest.approx(finals[method]) and task_rows.loc[method, "n"] == 2
    written = build_plots(tmp_path, reps=200, formats=("png",), frame=frame)
    assert {"learning_curves", "aggregates_toy", "performance_profile_toy"} <= {p.stem for p in written}


# ---------------------------------------------------------------------------- records alone decide


def test_same_records_give_byte_identical_tables_whatever_the_suite_files_say(store, tmp_path, monkeypatch):
    """Tables depend on the records only: changing a suite's default task and a method's default
    config (in a temp copy of the suites folder) changes nothing that is rendered."""
    import shutil

    import yaml
    from modebench.analysis.tables import build_tables
    from modebench.benchmarks.tasks import suites

    def render(out: Path) -> dict[str, bytes]:
        build_tables(store, out, reps=50, log=lambda _: None)
        return {str(p.relative_to(out)): p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file()}

    before = render(tmp_path / "before")
    changed = tmp_path / "suites"
    shutil.copytree(suites.SUITES_DIR, changed)
    toy = yaml.safe_load((changed / "toy.yaml").read_text())
    toy["tasks"]["four-goal"]["default"] = False
    toy["tasks"]["branch"]["default"] = True
    toy["methods"]["drol"] = {"config": {"num_candidates": 4}}  # the sweep config becomes "the default" in the files
    (changed / "toy.yaml").write_text(yaml.safe_dump(toy))
    monkeypatch.setattr(suites, "SUITES_DIR", changed)
    after = render(tmp_path / "after")
    assert before == after and "controlled/main_drol_layout.md" in before
    assert "four-goal (*)" in before["controlled/main_drol_layout.md"].decode()


def test_protocols_are_rendered_apart_and_say_which(tmp_path):
    from modebench.analysis.plots import build_plots
    from modebench.analysis.tables import build_tables

    for protocol, scores in (("published", [80.0, 90.0]), ("controlled", [10.0, 20.0])):
        for seed, score in enumerate(scores):
            for method, offset in (("gem", 0.0), ("iql", -5.0)):
                RunStore(tmp_path, f"{method}-{protocol}-{seed}").write_record(
                    _record(method, "toy/four-goal", seed, 1000, score + offset, {}, IQL_CONFIG, "train", protocol=protocol))
    build_tables(tmp_path, reps=50, log=lambda _: None)
    for protocol, gem_mean in (("published", 85.0), ("controlled", 15.0)):
        md = (tmp_path / "tables" / protocol / "main_gem_layout.md").read_text()
        assert md.startswith(f"### Normalised score per task (GEM Table 1 layout), {protocol} protocol")
        data = pd.read_csv(tmp_path / "tables" / protocol / "main_gem_layout.csv")
        assert data.loc[(data["kind"] == "task") & (data["method"] == "gem"), "mean"].item() == gem_mean
        assert data.loc[(data["kind"] == "task") & (data["method"] == "gem"), "n"].item() == 2  # never 4: not mixed
    written = build_plots(tmp_path, formats=("png",), reps=50, log=lambda _: None)
    assert {p.parent.name for p in written} == {"published", "controlled"}
    from modebench.analysis.tables import gem_layout

    mixed = select_scores(load_records(tmp_path))
    with pytest.raises(ValueError, match="mix protocols"):
        gem_layout(mixed)


def test_toy_only_tables_carry_no_empty_published_columns(scores):
    toy = scores[scores["suite"] == "toy"]
    for layout in (gem_layout, drol_layout, lom_layout):
        table = layout(toy)
        assert not [h for h in table.header if " paper" in h or h.endswith("Δ")], (table.name, table.header)
        assert table.data["paper"].isna().all()
    assert "paper / Δ: no published number for these tasks" in " ".join(gem_layout(toy).notes)


def test_toy_only_nll_gap_and_ablation_tables_carry_no_empty_paper_columns(frame):
    from modebench.analysis.tables import nll_gap_frame, nll_gap_table

    every = select_scores(frame, knobs="all")
    toy_all = every[every["suite"] == "toy"]
    _, t6 = ablation_layouts(toy_all, "gem")
    assert not [h for h in t6.header if "paper" in h] and t6.data["paper_delta"].isna().all()
    _, t6_d4rl = ablation_layouts(every, "gem")  # with a GEM Table 6 task in the set the columns come back
    assert "no pw paper Δ" in t6_d4rl.header
    gaps = nll_gap_frame(select_scores(frame))
    toy_gap = nll_gap_table(gaps[gaps["task"].str.startswith("toy/")])
    assert toy_gap.header[-1] == "seeds" and "no published gap" in toy_gap.notes[-1]
    assert nll_gap_table(gaps).header[-2:] == ["paper gap", "Δ"]


# ---------------------------------------------------------------------------- the facts file


def test_facts_file_names_every_registered_method_with_its_own_colour():
    from matplotlib.colors import to_rgb
    from modebench.algorithms.registry import METHODS, base_method
    from modebench.analysis import facts

    known = facts.methods()
    assert set(known) == set(METHODS), set(METHODS) ^ set(known)
    colors = [to_rgb(f["color"]) for f in known.values()]
    assert len(set(colors)) == len(colors)
    for name in METHODS:  # the facts' base matches the registry's, and presets are marked as such
        assert known[name].get("base", name) == base_method(name), name
    groups = facts.policy_groups()
    assert sorted(m for members in groups.values() for m in members) == sorted(METHODS)
    tables = facts.facts()["score_tables"]
    for name in tables:
        assert (facts.REFERENCE_DIR / f"{name}.csv").exists()
    assert facts.paper_to_ours()["DROL(16)"] == "drol"


def test_plot_legends_sit_outside_every_axis(store, tmp_path, monkeypatch):
    from modebench.analysis import plots

    seen: list[tuple[str, bool]] = []
    save = plots.Plotter.save

    def check(self, fig, name, data=None):
        fig.canvas.draw()
        renderer = fig.canvas.get_renderer()
        for legend in fig.legends + [ax.get_legend() for ax in fig.axes if ax.get_legend() is not None]:
            box = legend.get_window_extent(renderer)
            overlaps = any(box.overlaps(ax.get_window_extent(renderer)) for ax in fig.axes if ax.get_visible())
            seen.append((name, overlaps))
        colours = [line.get_color() for ax in fig.axes for line in ax.get_lines() if not line.get_label().startswith("_")]
        save(self, fig, name, data)
        return colours

    monkeypatch.setattr(plots.Plotter, "save", check)
    plots.build_plots(store, tmp_path, formats=("png",), reps=50, log=lambda _: None)
    assert {"performance_profile_toy", "learning_curves", "drol_k"} <= {n for n, _ in seen}
    assert [n for n, overlaps in seen if overlaps] == []
