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


def render(root: Path) -> tuple[dict[str, bytes], list[str]]:
    """Every table and figure of the store, as bytes by path, and what the build logged."""
    log: list[str] = []
    build_tables(root, reps=200, log=log.append)
    build_plots(root, formats=("png", "pdf"), reps=200, log=log.append)
    files = {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.glob("tables/**/*")) + sorted(root.glob("plots/**/*"))
             if p.is_file()}
    return files, log


@pytest.mark.parametrize("recorded", [True, False], ids=["default_run recorded", "older records"])
def test_a_short_run_leaves_every_table_and_plot_byte_identical(tmp_path, recorded):
    root = build_store(tmp_path / "results", default_run=recorded)
    before, _ = render(root)
    assert "tables/controlled/main_gem_layout.md" in before and "plots/controlled/aggregates_toy.pdf" in before
    assert not any("left_out_runs" in p for p in before)
    # `modebench train --algo gem --task toy/four-goal --steps 200 --seed 0` into the same root: another run id,
    # 200 of the protocol's 2000 steps; and a run of the right length evaluated over other episodes
    write_run(root, "gem", "toy/four-goal", 0, 10.0, run_id="gem__toy-four-goal__seed0__short", steps=200)
    write_run(root, "iql", "toy/branch", 1, 99.0, run_id="iql__toy-branch__seed1__episodes", episodes=3)
    after, log = render(root)
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
