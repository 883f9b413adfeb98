"""Table membership (issue 24 item 2): a cell holds only runs of its protocol's own steps and
evaluation episodes; any other run is listed apart (left_out_runs) and every existing table and
figure stays byte-identical. Records are written by the real RunStore, the fixture is tiny
(2 methods x 2 tasks x 2 seeds) so the whole tables + plots pass takes seconds."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
from modebench.analysis.plots import build_plots
from modebench.analysis.records import by_length, load_records
from modebench.analysis.tables import build_tables
from modebench.benchmarks.store import RunStore

STEPS, EPISODES = 2000, 5
SCORES = {("gem", "toy/four-goal"): [90.0, 96.0], ("iql", "toy/four-goal"): [60.0, 64.0],
          ("gem", "toy/branch"): [40.0, 48.0], ("iql", "toy/branch"): [41.0, 45.0]}
TOY = {"kind": "toy", "ref_min": 0.0, "ref_max": 1.0, "source": "test"}


def record(method: str, task: str, seed: int, step: int, score: float, *, steps: int = STEPS, episodes: int = EPISODES,
           default_run: dict | None | bool = True, extra: dict | None = None) -> dict:
    out = {
        "method": method, "base_method": method, "task": task, "suite": "toy", "dataset": task, "seed": seed, "step": step,
        "total_steps": steps, "knobs": {}, "config": {"lr": 0.001}, "config_hash": "h", "protocol": "controlled",
        "suite_default": True, "task_default": task == "toy/four-goal", "task_order": ["toy/four-goal", "toy/branch"].index(task),
        "normalized_score": score, "normalized_std": 1.0, "return_mean": score / 100, "return_std": 0.0, "success_rate": 0.0,
        "episode_length_mean": 10.0, "episodes": [{"return": score / 100, "length": 10}] * episodes, "source": "train",
        "git_revision": "abc", "device": "cpu", "timestamp": 1.0, "normaliser": TOY, **(extra or {}),
    }
    if default_run is True:
        out["default_run"] = {"steps": STEPS, "eval_episodes": EPISODES}
    return out


def write_run(root: Path, method: str, task: str, seed: int, final: float, run_id: str | None = None, **kw) -> None:
    steps = kw.get("steps", STEPS)
    store = RunStore(root, run_id or f"{method}__{task.replace('/', '-')}__seed{seed}__h")
    store.write_record(record(method, task, seed, steps // 2, final / 2, **kw))  # learning curves need two points
    store.write_record(record(method, task, seed, steps, final, **kw))


def build_store(root: Path, default_run: bool = True) -> Path:
    for (method, task), finals in SCORES.items():
        for seed, final in enumerate(finals):
            write_run(root, method, task, seed, final, default_run=default_run)
    return root


def render(root: Path, plots: bool = True) -> tuple[dict[str, bytes], list[str]]:
    """Every table (and figure) of the store, as bytes by path, and what the build logged."""
    log: list[str] = []
    build_tables(root, reps=200, log=log.append)
    if plots:
        build_plots(root, formats=("png", "pdf"), reps=200, log=log.append)
    files = {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.glob("tables/**/*")) + sorted(root.glob("plots/**/*"))
             if p.is_file()}
    return files, log


@pytest.mark.parametrize("recorded", [True, False], ids=["default_run recorded", "older records"])
def test_a_short_run_leaves_every_table_and_plot_byte_identical(tmp_path, recorded):
    root = build_store(tmp_path / "results", default_run=recorded)
    before, _ = render(root, plots=recorded)  # the figures go through the same membership: drawn once
    assert "tables/controlled/main_gem_layout.md" in before
    assert not recorded or "plots/controlled/aggregates_toy.pdf" in before
    assert not any("left_out_runs" in p for p in before)
    # `modebench train --algo gem --task toy/four-goal --steps 200 --seed 0` into the same root: another run id,
    # 200 of the protocol's 2000 steps; and a run of the right length evaluated over other episodes
    write_run(root, "gem", "toy/four-goal", 0, 10.0, run_id="gem__toy-four-goal__seed0__short", steps=200)
    write_run(root, "iql", "toy/branch", 1, 99.0, run_id="iql__toy-branch__seed1__episodes", episodes=3)
    after, log = render(root, plots=recorded)
    changed = [p for p in before if after.get(p) != before[p]]
    assert changed == []
    listed = pd.read_csv(root / "tables/controlled/left_out_runs.csv")
    assert sorted(listed["run_id"]) == ["gem__toy-four-goal__seed0__short", "iql__toy-branch__seed1__episodes"]
    short = listed.set_index("run_id").loc["gem__toy-four-goal__seed0__short"]
    assert (short["total_steps"], short["cell_steps"], short["cell_episodes"]) == (200, STEPS, EPISODES)
    assert any("2 run(s) of another length or episode count" in line for line in log)
    text = (root / "tables/controlled/main_gem_layout.md").read_text()
    assert f"Every cell: runs of {STEPS} training steps, each scored over {EPISODES} evaluation episodes" in text
    assert "93.00 ± 4.24 (2)" in text  # gem four-goal: the two 2000-step runs only, not the 200-step one
    # with the runs gone the listing goes too (no stale file)
    for run_id in listed["run_id"]:
        for path in (root / "runs" / run_id / "records").glob("*.json"):
            path.unlink()
    build_tables(root, reps=200, log=lambda _: None)
    assert not list(root.glob("tables/controlled/left_out_runs.*"))


def test_cell_length_follows_default_run_not_the_majority(tmp_path):
    """Two short tries outnumber the protocol's one run: the records' default_run still decides."""
    root = tmp_path / "results"
    write_run(root, "gem", "toy/four-goal", 0, 90.0)
    for seed in (1, 2):
        write_run(root, "gem", "toy/four-goal", seed, 10.0, run_id=f"short{seed}", steps=200)
    kept = by_length(load_records(root))
    assert set(kept.kept["run_id"]) == {"gem__toy-four-goal__seed0__h"}
    assert sorted(kept.left_out["run_id"]) == ["short1", "short2"] and kept.notes == []
    # older records (no default_run): the length most runs have, said in a note
    legacy = tmp_path / "legacy"
    write_run(legacy, "gem", "toy/four-goal", 0, 90.0, default_run=False)
    write_run(legacy, "gem", "toy/four-goal", 1, 92.0, default_run=False)
    write_run(legacy, "gem", "toy/four-goal", 2, 10.0, run_id="short", steps=200, default_run=False)
    split = by_length(load_records(legacy))
    assert list(split.left_out["run_id"]) == ["short"] and "predate `default_run`" in split.notes[0]


# ---------------------------------------------------------------------------- what a cell says about its runs


def test_damaged_records_and_failed_runs_are_named_and_counted(tmp_path):
    from modebench.analysis.report import build_report

    root = build_store(tmp_path / "results")
    # a truncated record in a run whose config.json says which cell it would have entered, and a
    # bare {} in a folder without one (its cell cannot be told: every table counts it)
    gem = RunStore(root, "gem__toy-four-goal__seed1__h")
    gem.write_config({"method": "gem", "protocol": "controlled", "task": {"id": "toy/four-goal"}})
    truncated = gem.records_dir / "step000000500-truncated.json"
    truncated.write_text('{"method": "gem", "normalized_')
    stray = root / "runs" / "stray" / "records" / "x.json"
    stray.parent.mkdir(parents=True)
    stray.write_text("{}")
    # a diverged run: NaN score, status non_finite (kept, shown as failed, never dropped)
    write_run(root, "iql", "toy/branch", 2, float("nan"), extra={"status": "non_finite"})
    log: list[str] = []
    build_tables(root, reps=200, log=log.append)
    named = [line for line in log if line.startswith("tables: damaged record")]
    assert len(named) == 2 and all("\n" not in line for line in named)
    assert any(str(truncated) in line and ": file: not JSON" in line for line in named)
    assert any(str(stray) in line for line in named)
    out = root / "tables" / "controlled"
    for name in ("main_gem_layout", "main_drol_layout", "main_lom_layout", "aggregates", "probability_of_improvement"):
        text = (out / f"{name}.md").read_text()
        assert "2 damaged record(s) of this protocol's runs could not be read" in text and str(truncated) in text, name
    gem_md = (out / "main_gem_layout.md").read_text()
    assert "43.00 ± 2.83 (2, 1 failed)" in gem_md  # iql branch: 41 and 45; the NaN run counted, not averaged
    assert "1 failed run(s)" in gem_md
    aggregates = pd.read_csv(out / "aggregates.csv")
    iql = aggregates[(aggregates["method"] == "iql") & (aggregates["metric"] == "mean")].iloc[0]
    assert (iql["n_runs"], iql["n_failed"]) == (4, 1) and iql["low"] <= iql["point"] <= iql["high"]
    counts = [line for line in log if line.startswith("tables: controlled:")]
    assert counts == [("tables: controlled: 9 runs in the main tables (1 failed: score not finite, counted in their cells), "
                      "0 run(s) of another length or episode count set apart (left_out_runs), 2 damaged record(s)")]
    # the report prints the same counts and names the same files
    report = build_report(root, reps=100, formats=("png",), log=lambda _: None).read_text()
    assert counts[0].removeprefix("tables: ") in report and str(stray) in report


def test_cells_mark_mixed_commits_unconverged_fits_and_other_normalisers(tmp_path):
    from modebench.analysis.records import select_scores
    from modebench.analysis.tables import aggregate_layout, gem_layout

    root = tmp_path / "results"
    phases = [{"name": "behaviour GMM", "field": "gmm_pretrain_steps", "steps": 100, "final_nll": 1.0, "slope": -0.5,
               "window": 10, "converged": False}]
    for (method, task), finals in SCORES.items():
        for seed, final in enumerate(finals):
            extra = {}
            if method == "gem" and task == "toy/four-goal":  # two commits in one cell; one unconverged fit phase
                extra = {"provenance": {"git_commit": f"c{seed}", "git_dirty": False}}
                extra["fit_phases"] = phases if seed == 1 else [{**phases[0], "converged": True}]
            if task == "toy/branch" and method == "iql":  # another normaliser on one row
                extra["normaliser"] = {"kind": "minari", "ref_min": 0.0, "ref_max": 5.0, "source": "test"}
            write_run(root, method, task, seed, final, extra=extra)
    scores = select_scores(load_records(root))
    table = gem_layout(scores)
    rows = {row[0].text: {h: c.text for h, c in zip(table.header, row)} for row in table.rows}
    assert rows["four-goal"]["GEM"] == "93.00 ± 4.24 (2)†§" and rows["four-goal"]["IQL"] == "62.00 ± 2.83 (2)"
    assert rows["four-goal"]["Normaliser"] == "toy refs" and rows["branch"]["Normaliser"] == "mixed normalisers ‡"
    assert "Sum‡" in rows and "Avg‡" in rows  # a sum over rows of different normalisers says so
    notes = " ".join(table.notes)
    assert "† : the cell's runs were written by more than one git commit".replace(" :", ":") in notes
    assert "§: a run of the cell froze a fit phase" in notes and "‡: numbers on different normalisers" in notes
    assert "\\dag{}\\S{}" in table.latex()
    agg = aggregate_layout(scores, reps=100)
    assert agg.sections[0] == "toy (2 tasks; mixed normalisers ‡)"
    # records without a normaliser: said, never derived
    plain = gem_layout(scores.assign(normaliser_kind="", normaliser_key=""))
    assert {row[1].text for row in plain.rows if row[0].text in ("four-goal", "branch")} == {"normaliser unknown"}


def test_a_paper_number_on_another_normaliser_is_marked_and_gets_no_delta():
    from modebench.analysis.tables import _paper_cells

    # GEM Table 1's maze2d numbers are D4RL-normalised; a run scored with Minari's references is not comparable
    cells, extra = _paper_cells("gem", "maze2d-umaze-v1", 100.0, "gem", 2, ours="minari")
    assert cells[0].text.endswith("‡") and cells[1].text == "" and extra["paper_normaliser"] == "d4rl"
    cells, extra = _paper_cells("gem", "maze2d-umaze-v1", 100.0, "gem", 2, ours="d4rl")
    assert not cells[0].text.endswith("‡") and cells[1].text.startswith(("+", "-")) and extra["comparable"]
    cells, _ = _paper_cells("gem", "maze2d-umaze-v1", 100.0, "gem", 2, ours="")  # normaliser unknown: not comparable
    assert cells[0].text.endswith("‡") and cells[1].text == ""


def test_the_header_line_names_each_length_where_methods_or_tasks_differ():
    from modebench.analysis.tables import length_line

    cells = pd.DataFrame({"method": ["gem", "gem", "iql", "iql"], "task": ["a/x", "a/y", "a/x", "a/y"],
                          "steps": [1e6, 1e6, 5e5, 5e5], "episodes": [10, 100, 10, 100]})
    assert length_line(cells).startswith("Every cell: runs of training steps 1000000 (GEM); 500000 (IQL), each scored "
                                         "over evaluation episodes 10 (x); 100 (y); (n) = runs in the cell.")
    mixed = length_line(cells.assign(steps=[1e6, 2e6, 5e5, 5e5]))
    assert "training steps 1000000 (GEM on x); 2000000 (GEM on y); 500000 (IQL on x, IQL on y)" in mixed


def test_paper_columns_name_their_normaliser():
    from modebench.analysis.tables import paper_header

    assert paper_header("gem", ["maze2d-umaze-v1", None], "gem") == ["GEM paper [D4RL refs]", "GEM Δ"]  # GEM Table 1: D4RL
    ogbench = "antmaze-large-navigate-singletask-task1-v0"
    assert paper_header("drol", [ogbench], "drol")[0] == "DROL paper [success %]"
    assert paper_header("drol", [ogbench, "antmaze-large-diverse-v2"], "drol")[0] == "DROL paper"  # two: named under Sources
