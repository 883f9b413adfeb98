"""A run's life in the results store (benchmarks/run/train.py, callbacks.py): the checkpoint is on
disk before each record, a run stopped between the two or holding a damaged record is repaired by
the next run with the same numbers, a finished run says so, `eval --checkpoint` of a file anywhere
writes under the results root only."""

from __future__ import annotations

import json
import shutil

import pytest
from modebench.benchmarks.run.checkpoints import load_checkpoint
from modebench.benchmarks.run.train import evaluate_checkpoint, train
from modebench.benchmarks.store import RunStore, iter_records

from modebench.cli import main

RUN = dict(steps=40, seed=0, eval_every=20, eval_episodes=3)


def test_each_record_is_stored_after_its_checkpoint(tmp_path, monkeypatch):
    seen = []
    write = RunStore.write_record

    def checked(self, record):
        seen.append((record["step"], int(load_checkpoint(self.checkpoint_path)["step"])))
        return write(self, record)

    monkeypatch.setattr(RunStore, "write_record", checked)
    result = train("bc", "toy/four-goal", out=tmp_path, **RUN)
    assert seen == [(20, 20), (40, 40)]
    assert not (result.run_dir / "writer.lock").exists()
    assert not list(result.run_dir.rglob("*.tmp"))


def test_a_run_stopped_between_checkpoint_and_record_makes_that_record_first(tmp_path, monkeypatch):
    whole = train("bc", "toy/four-goal", out=tmp_path / "whole", **RUN)
    write = RunStore.write_record

    def stop_at_20(self, record):
        if record["step"] == 20:
            raise KeyboardInterrupt  # a SIGTERM after the checkpoint, before the record
        return write(self, record)

    monkeypatch.setattr(RunStore, "write_record", stop_at_20)
    with pytest.raises(KeyboardInterrupt):
        train("bc", "toy/four-goal", out=tmp_path / "part", **RUN)
    monkeypatch.setattr(RunStore, "write_record", write)
    resumed = train("bc", "toy/four-goal", out=tmp_path / "part", **RUN)
    assert [r["step"] for r in resumed.records] == [20, 40] and not resumed.already_finished
    ours = {r["step"]: r["normalized_score"] for r in iter_records(tmp_path / "part")}
    assert ours == {r["step"]: r["normalized_score"] for r in whole.records}
    lines = [json.loads(line) for line in (resumed.run_dir / "metrics.jsonl").read_text().splitlines()]
    keys = [(line["step"], tuple(sorted(line))) for line in lines]
    assert len(keys) == len(set(keys))  # nothing logged twice


def test_a_damaged_final_record_is_evaluated_again_on_the_next_run(tmp_path):
    first = train("bc", "toy/four-goal", out=tmp_path, **RUN)
    final = next(p for p in (first.run_dir / "records").iterdir() if p.name.startswith("step000000040"))
    final.write_text(final.read_text()[:100])  # truncated (a copy cut short)
    again = train("bc", "toy/four-goal", out=tmp_path, **RUN)
    assert not again.already_finished and again.score == first.score
    assert json.loads(final.read_text())["normalized_score"] == first.score


def test_eval_of_a_checkpoint_anywhere_writes_in_its_own_run_folder_under_the_results_root(tmp_path, results_root):
    trained = train("bc", "toy/four-goal", out=tmp_path / "elsewhere", **RUN)
    loose = tmp_path / "downloads" / "x.pt"  # not inside any runs/<id>/ folder
    loose.parent.mkdir()
    shutil.copy(trained.checkpoint, loose)
    records = evaluate_checkpoint(loose, episodes=2)
    run = RunStore(results_root, trained.run_dir.name)
    assert len(records) == 1 and [r["run_id"] for r in iter_records(results_root)] == [trained.run_dir.name]
    assert run.read_config()["run_id"] == trained.run_dir.name
    assert [p.name for p in loose.parent.iterdir()] == ["x.pt"]  # nothing beside the checkpoint
    assert not run.lock_path.exists()


def test_a_finished_run_asked_again_says_so_in_one_line_and_rerun_trains_it(results_root, capsys):
    args = ["train", "--algo", "bc", "--task", "toy/four-goal", "--steps", "30", "--eval-episodes", "3",
            "--results", str(results_root), "--no-progress"]
    assert main(args) == 0
    capsys.readouterr()
    assert main(args) == 0
    out = capsys.readouterr().out.strip().splitlines()
    assert len(out) == 1 and out[0].startswith("already finished: bc__toy-four-goal__seed0__")
    assert out[0].endswith("— pass --rerun to train it again")
    assert main([*args, "--rerun"]) == 0
    assert "normalized_score" in capsys.readouterr().out


def test_evaluating_a_finished_run_never_replaces_its_record_with_another_evaluation(tmp_path):
    trained = train("bc", "toy/four-goal", out=tmp_path, **RUN)
    final = trained.records[-1]
    (same,) = evaluate_checkpoint(trained.checkpoint, out=tmp_path)  # the run's own seed and episodes: stored already
    assert same["source"] == "train" and same["normalized_score"] == final["normalized_score"]
    (other,) = evaluate_checkpoint(trained.checkpoint, episodes=2, seed=9, out=tmp_path)
    stored = {(r["source"], r["eval_episodes"]) for r in iter_records(tmp_path) if r["step"] == 40}
    assert stored == {("train", 3), ("eval", 2)} and other["eval_seed"] == 9
