"""A run's identity (benchmarks/run/spec.py: run_identity): everything that decides its result
names its folder, and runs stored by 7d1dc42 (before the identity held the task's evaluation
inputs and the data's content) keep their ids. The ids below were written by 7d1dc42's own code
(`git worktree add /tmp/old 7d1dc42`, resolve_run there); tests/fixtures/store_7d1dc42 is a run
that code stored (`train bc toy/four-goal --steps 50 --seed 0`), its checkpoint left out."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from modebench.benchmarks.run.spec import resolve_run
from modebench.benchmarks.run.train import train
from modebench.benchmarks.store import iter_stored, read_record
from modebench.benchmarks.tasks.adhoc import task_from_dataset

FIXTURE = Path(__file__).parent / "fixtures" / "store_7d1dc42"
STORED_RUN = "bc__toy-four-goal__seed0__d0d0518a19c6"

# (method, task, resolve_run settings) -> the run id 7d1dc42 gave it
IDS_AT_7D1DC42 = {
    ("bc", "toy/four-goal", ()): "bc__toy-four-goal__seed0__d9c75c1139b9",
    ("bc", "toy/sparse-optimum", ()): "bc__toy-sparse-optimum__seed0__3b2c0baad22d",
    ("bc", "toy/branch", ()): "bc__toy-branch__seed0__f8000269eb64",
    ("bc", "toy/obstacle", ()): "bc__toy-obstacle__seed0__37505497fd17",
    ("iql", "toy/four-goal", ()): "iql__toy-four-goal__seed0__e1bddcc47030",
    ("gem", "toy/four-goal", ()): "gem__toy-four-goal__seed0__45041fa35bc4",
    ("isep", "toy/four-goal", ()): "isep__toy-four-goal__seed0__3a8b5990e48d",
    ("isep-fm", "toy/four-goal", ()): "isep-fm__toy-four-goal__seed0__49b37dec403a",
    ("lom", "toy/four-goal", ()): "lom__toy-four-goal__seed0__864d6230d0f0",
    ("drol", "toy/four-goal", ()): "drol__toy-four-goal__seed0__223a569795f4",
    ("fql", "toy/four-goal", ()): "fql__toy-four-goal__seed0__fce64871de49",
    ("bc", "toy/branch", (("seed", 1), ("steps", 50))): "bc__toy-branch__seed1__036ae14e07a1",
    ("bc", "toy/branch", (("seed", 1), ("steps", 50), ("config", (("lr", 1e-3),)))): "bc__toy-branch__seed1__ffa8f8fbaf27",
}


@pytest.mark.parametrize(("method", "task", "settings"), list(IDS_AT_7D1DC42))
def test_runs_stored_by_7d1dc42_keep_their_ids(method, task, settings):
    kwargs = {k: dict(v) if k == "config" else v for k, v in settings}
    assert resolve_run(method, task, **kwargs).run_id == IDS_AT_7D1DC42[method, task, settings]


def test_every_input_that_decides_the_result_names_another_run():
    base = resolve_run("bc", "toy/branch", seed=1, steps=50)
    # 7d1dc42 gave these the base run's id: its record answered for another evaluation
    others = [resolve_run("bc", "toy/branch", seed=1, steps=50, eval_episodes=5),
              resolve_run("bc", "toy/branch", seed=1, steps=50, eval_every=25),
              resolve_run("gem", "toy/four-goal", knobs={"N": 8})]
    assert len({base.run_id, *(spec.run_id for spec in others)}) == 4
    assert others[2].run_id != resolve_run("gem", "toy/four-goal").run_id
    # what the protocol itself gives is no override: the same run
    assert resolve_run("bc", "toy/branch", seed=1, steps=50, eval_every=50).run_id == base.run_id
    # the seeds of one run share a group, another setting does not
    assert resolve_run("bc", "toy/branch", seed=2, steps=50).group_id == base.group_id != others[0].group_id


def _d4rl_file(path: Path, shift: float = 0.0) -> None:
    rng = np.random.default_rng(0)
    n = 200
    np.savez(path, observations=rng.normal(size=(n, 3)).astype(np.float32), actions=rng.uniform(-2, 2, (n, 1)).astype(np.float32),
             rewards=(rng.normal(size=n) + shift).astype(np.float32), terminals=np.zeros(n, bool),
             timeouts=(np.arange(n) % 50 == 49), next_observations=rng.normal(size=(n, 3)).astype(np.float32))


def test_a_dataset_file_is_named_by_its_content_and_reference_scores(tmp_path, monkeypatch):
    monkeypatch.setenv("MODEBENCH_DIGEST_CACHE", str(tmp_path / "digests.json"))
    data = tmp_path / "pendulum.npz"
    _d4rl_file(data)

    def run_id(ref_max: float = 0.0) -> str:
        return resolve_run("bc", task_from_dataset(str(data), "Pendulum-v1", -1500.0, ref_max), steps=10).run_id

    first = run_id()
    assert run_id() == first  # the digest is cached by (path, size, mtime): the second call reads no file bytes
    assert len(json.loads((tmp_path / "digests.json").read_text())) == 1
    assert run_id(ref_max=-100.0) != first  # other reference scores: another run
    _d4rl_file(data, shift=1.0)  # the same path, other data
    assert run_id() != first


def test_a_run_7d1dc42_stored_without_its_checkpoint_is_found_and_trained_again_to_the_same_numbers(tmp_path, capsys):
    shutil.copytree(FIXTURE, tmp_path / "results")
    root = tmp_path / "results"
    (old_path, old), = iter_stored(root)
    assert old["schema_version"] == 2 and old["provenance"] is None and "provenance" in old["missing_fields"]
    assert old["eval_episodes"] == 100 and old["status"] == "ok"  # counted from its episodes; derived from its score

    result = train("bc", "toy/four-goal", steps=50, seed=0, out=root)
    assert result.run_dir.name == STORED_RUN and not result.already_finished
    assert "has records but no checkpoint" in capsys.readouterr().out
    assert result.checkpoint.exists()
    new = read_record(old_path)
    assert new["normalized_score"] == old["normalized_score"] and new["return_mean"] == old["return_mean"]
    assert new["schema_version"] == 3 and new["provenance"]["command"] and "missing_fields" not in new

    again = train("bc", "toy/four-goal", steps=50, seed=0, out=root)
    assert again.already_finished and again.score == old["normalized_score"]
    lines = (root / "runs" / STORED_RUN / "metrics.jsonl").read_text().splitlines()
    assert len(lines) == len({(json.loads(line)["step"], tuple(sorted(json.loads(line)))) for line in lines})
