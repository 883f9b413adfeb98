"""Sweeps (issue 8): grid files, trial planning against the results store, divergence, process
cleanup, and the CI grid under Ray Tune with a trial killed, the driver SIGKILLed and resumed."""

from __future__ import annotations

import dataclasses
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
from helpers import wait_for
from modebench.algorithms.config import ConfigError
from modebench.algorithms.registry import METHODS, base_method
from modebench.sweeps import reaper
from modebench.sweeps.grid import grid_names, load_grid, parse_seeds
from modebench.sweeps.runner import plan_grid
from modebench.sweeps.trial import execute, restore_from_tune

REPO = Path(__file__).resolve().parents[1]
MODEBENCH = [sys.executable, "-m", "modebench.cli"]

# The studies' sizes, from the papers (see each grid file's header for the sources): trials
# (method x training value x task; each trial holds every seed) and seeds (runs = trials x seeds).
EXPECTED_TRIALS = {
    "ci_toy": (2 * 1, 2),  # 2 methods x 1 task; 2 seeds
    "gem_table1": (8 * 18, 3),  # every base method x the 18 Table 1 tasks; 3 seeds
    "gem_budget": (18, 3),  # inference only: N is a knob
    "gem_wp_frontier": (18, 3),  # inference only: w_end is a knob
    "gem_ablations": (2 * 18, 3),  # gem (6 knob-only ablations as settings) + the trained unimodal-actor preset
    "lom_m_sweep": (5 * 3, 4),  # M x medium-replay tasks; 4 seeds
    "isep_lambda_sweep": (6 * 10, 5),  # lambda x 10 tasks; 5 seeds
    "isep_fm_guidance": (14, 5),  # inference only: w is a knob
    "drol_k_sweep": (7 * 14, 4),  # K x 14 tasks; 4 seeds
    "cross_selection": (6 * 4, 2),  # proposers x toy tasks; 2 seeds (selection is `modebench cross-select`)
    "cross_selection_local": (6 * 6, 2),  # proposers x maze2d-local and ogbench-local tasks; 2 seeds
}
AXES = {  # the swept values each study is defined by
    "gem_budget": ("gem", "inference", {"N": [0, 1, 64, 1024, 2048]}),
    "lom_m_sweep": ("lom", "train", {"num_modes": [2, 5, 10, 15, 20]}),
    "drol_k_sweep": ("drol", "train", {"num_candidates": [1, 2, 4, 8, 16, 32, 64]}),
    "isep_lambda_sweep": ("isep", "train", {"lam": [0.0, 0.1, 0.2, 0.3, 0.5, 0.7]}),
    "isep_fm_guidance": ("isep-fm", "inference", {"w": [0.0, 0.2, 0.5, 1.0, 2.0, 3.0]}),
}


def test_every_grid_file_has_an_expected_size():
    assert sorted(EXPECTED_TRIALS) == grid_names()


@pytest.mark.parametrize("name", sorted(EXPECTED_TRIALS))
def test_grid_parses_and_expands_to_the_study_size(name):
    grid = load_grid(name)
    trials = grid.trials()
    n_trials, n_seeds = EXPECTED_TRIALS[name]
    assert len(trials) == grid.count_trials() == n_trials
    assert grid.count_runs() == n_trials * n_seeds and all(t.seeds == grid.seeds for t in trials)
    assert len(grid.seeds) == n_seeds
    identities = {(t.method, t.task, json.dumps(t.train_combo, sort_keys=True)) for t in trials}
    assert len(identities) == len(trials), "two trials of the grid are the same"
    assert len({t.label for t in trials}) == len(trials), "trial names must be unique (Tune folders)"
    if name in AXES:
        method, part, space = AXES[name]
        entry = next(m for m in grid.methods if m.name == method)
        if part == "train":
            assert entry.train == space
        else:
            assert entry.inference == [{k: v} for k, vs in space.items() for v in vs]


@pytest.mark.parametrize("name", sorted(EXPECTED_TRIALS))
def test_grid_names_real_tasks_and_real_config_and_knob_fields(name):
    """Method names, config keys/values and knob keys/values are checked against the method's
    own dataclasses; task ids against the suite files. Methods not registered in this checkout
    (being written in parallel) are reported, not silently passed."""
    grid = load_grid(name)
    for task in grid.expand_tasks():
        from modebench.benchmarks.tasks.suites import get_task

        get_task(task)
    missing = [m.name for m in grid.methods if m.name not in METHODS]
    for m in grid.methods:
        if m.name in METHODS:
            grid.validate_method(m)
    if missing:
        pytest.skip(f"methods not registered in this checkout yet: {missing}")


def test_gem_ablation_grid_covers_every_knob_only_gem_preset():
    presets = {n: e for n, e in METHODS.items() if n != "gem" and base_method(n) == "gem"}
    if "gem" not in METHODS:
        pytest.skip("gem is not registered in this checkout yet")
    grid = load_grid("gem_ablations")
    gem = next(m for m in grid.methods if m.name == "gem")
    settings = [{**grid.methods[0].knobs, **s} for s in gem.inference]
    trained = {m.name for m in grid.methods}
    for name, entry in presets.items():
        if entry.config:  # a training ablation: it must be a trained method of the grid
            assert name in trained, f"training preset {name} is not in gem_ablations.yaml"
        else:
            assert any(all(s.get(k) == v for k, v in entry.knobs.items()) for s in settings), (
                f"knob-only preset {name} {entry.knobs} has no inference setting in gem_ablations.yaml")


def test_inference_only_gem_grids_evaluate_the_table1_checkpoints(tmp_path):
    """gem_budget, gem_wp_frontier and the knob-only ablations plan the very runs gem_table1
    trains (same run ids), so they evaluate those checkpoints instead of retraining."""
    if "gem" not in METHODS:
        pytest.skip("gem is not registered in this checkout yet")
    table1 = {r for t in plan_grid(load_grid("gem_table1"), tmp_path) if t.spec.method == "gem" for r in t.run_ids}
    assert len(table1) == 18 * 3
    for name in ("gem_budget", "gem_wp_frontier", "gem_ablations"):
        runs = {r for t in plan_grid(load_grid(name), tmp_path) if t.spec.method == "gem" for r in t.run_ids}
        assert runs == table1, name


def test_cluster_recipes_run_the_gem_table1_grid_on_shared_storage():
    import shlex

    import yaml
    from ray.autoscaler._private.util import prepare_config, validate_config

    from modebench.cli import build_parser

    cluster = yaml.safe_load((REPO / "sweeps/cluster/aws-gpu.yaml").read_text())
    validate_config(prepare_config(cluster))  # the schema of the pinned Ray's cluster launcher
    assert any("/mnt/shared" in c and "mount" in c for c in cluster["initialization_commands"])
    assert "-v /mnt/shared:/mnt/shared" in cluster["docker"]["run_options"]
    header = (REPO / "sweeps/cluster/aws-gpu.yaml").read_text()
    assert "modebench sweep gem_table1 --address auto --results /mnt/shared/results --resume" in header

    job = yaml.safe_load((REPO / "sweeps/cluster/rayjob-gem-table1.yaml").read_text())
    pvc = yaml.safe_load((REPO / "sweeps/cluster/shared-pvc.yaml").read_text())
    assert job["kind"] == "RayJob" and pvc["spec"]["accessModes"] == ["ReadWriteMany"]
    argv = shlex.split(job["spec"]["entrypoint"])
    args = build_parser().parse_args(argv[1:])
    assert argv[0] == "modebench" and args.grid == "gem_table1" and args.address == "auto" and args.resume
    spec = job["spec"]["rayClusterSpec"]
    pods = [spec["headGroupSpec"]["template"]["spec"]] + [g["template"]["spec"] for g in spec["workerGroupSpecs"]]
    for pod in pods:  # every pod mounts the shared claim where --results points
        claim = {v["name"]: v["persistentVolumeClaim"]["claimName"] for v in pod["volumes"]}
        mounts = {m["mountPath"]: claim[m["name"]] for m in pod["containers"][0]["volumeMounts"]}
        assert any(args.results.startswith(path) and name == pvc["metadata"]["name"] for path, name in mounts.items())
    gpus = [g["template"]["spec"]["containers"][0]["resources"]["limits"].get("nvidia.com/gpu") for g in spec["workerGroupSpecs"]]
    assert all(gpus) and load_grid("gem_table1").resources["gpu"] > 0


def test_bad_grids_fail_with_the_field_named(tmp_path):
    base = "tasks: [toy/four-goal]\nsteps: 10\n"
    path = tmp_path / "bad.yaml"
    cases = {
        "methods: [isep-fm]\nstepz: 3\n": r"unknown key\(s\) \['stepz'\]",
        "methods: [isep-fm]\neval: {knobs_at: sometimes}\n": "eval.knobs_at must be 'final' or 'all'",
        "methods: [isep-fm]\nresources: {cpu: 0}\n": "cpu > 0",
        "methods: {isep-fm: {train: {lam: 0.3}}}\n": "lam must be a non-empty list",
        "methods: {isep-fm: {config: {lam: 0.3}, train: {lam: [0.1, 0.2]}}}\n": "both a fixed config value and a training grid axis",
    }
    for text, message in cases.items():
        path.write_text(base + text)
        with pytest.raises(ConfigError, match=message):
            load_grid(path)
    invalid = {  # structure fine, fields checked against the method's dataclasses
        "methods: {isep-fm: {inference: {guidance: [1.0, 3.0]}}}\n": r"unknown .*knob key.*guidance.*valid keys",
        "methods: {isep-fm: {config: {sample_steps: 0}}}\n": "sample_steps",
        "methods: {isep-fm: {inference: {w: [-1.0]}}}\n": "w .*>= 0",
        "methods: [no-such-method]\n": "unknown method 'no-such-method'",
    }
    for text, message in invalid.items():
        path.write_text(base + text)
        with pytest.raises((ConfigError, KeyError), match=message):
            load_grid(path).validate()


def test_parse_seeds():
    assert parse_seeds("3") == [0, 1, 2]
    assert parse_seeds("0,4,7") == [0, 4, 7]
    assert parse_seeds("7,") == [7]
    assert parse_seeds(None) is None
    for bad in ("x", "1,1", "-1,2", "0"):
        with pytest.raises(ConfigError):
            parse_seeds(bad)


def test_cli_errors_are_one_line_and_status_2(capsys):
    from modebench.cli import main

    assert main(["sweep", "no-such-grid"]) == 2
    err = capsys.readouterr().err
    assert "no grid file 'no-such-grid'" in err and "ci_toy" in err and "Traceback" not in err


def test_sweep_protocol_flag_overrides_the_grid_and_keeps_its_own_state(tmp_path, capsys):
    from modebench.sweeps.runner import run_sweep, sweep_dir

    from modebench.cli import main

    assert main(["sweep", "ci_toy", "--protocol", "published", "--dry-run", "--results", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "no published protocol on toy/four-goal" in err and "--protocol controlled" in err
    lines: list[str] = []
    run_sweep("ci_toy", out=tmp_path, dry_run=True, protocol="controlled", log=lines.append)
    assert "2 trials, 4 runs" in lines[0]
    grid = load_grid("ci_toy")
    published = dataclasses.replace(grid, protocol="published")
    assert sweep_dir(tmp_path, grid) != sweep_dir(tmp_path, published)


# ------------------------------------------------------------------ trials without Ray
def _toy_trials(root: Path, steps: int = 30):
    return plan_grid(load_grid("ci_toy"), root, steps=steps)


def _events(run) -> list[str]:
    return [json.loads(line)["event"] for line in (run.run_dir / "sweep_attempts.jsonl").read_text().splitlines()]


def _records(run) -> list[dict]:
    return sorted((json.loads(p.read_text()) for p in run.run_dir.glob("records/*.json")),
                  key=lambda r: (r["step"], json.dumps(r["knobs"], sort_keys=True)))


def test_a_trial_holds_every_seed_and_writes_one_record_per_run_and_setting(tmp_path):
    trial = _toy_trials(tmp_path)[0]
    assert trial.spec.seeds == [0, 1] and [r.seed for r in trial.runs] == [0, 1]
    assert [s["w"] for s in trial.settings] == [1.0, 3.0]  # configured w = 1 first, then the grid's other value
    # each seed's run is the run a single-seed plan (an older sweep, `modebench train`) makes: stored ones are found
    for run in trial.runs:
        (alone,) = plan_grid(load_grid("ci_toy"), tmp_path, seeds=[run.seed], steps=30)[:1]
        assert alone.run_ids == [run.run_id]
    assert trial.status() == "todo"
    reports = []
    out = execute(trial.spec.to_dict(), lambda m, c: reports.append((m, c)))  # raises if train_seeds' run ids differ
    assert out["status"] == "finished" and trial.status() == "finished"
    assert out["statuses"] == dict.fromkeys(trial.run_ids, "finished")
    for run in trial.runs:
        records = _records(run)
        assert [(r["step"], r["knobs"]["w"], r["source"], r["seed"]) for r in records] == [
            (30, 1.0, "train", run.seed), (30, 3.0, "eval", run.seed)]
        assert {r["run_id"] for r in records} == {run.run_id}
    # one report per seed's record; the last seed's carries every seed's checkpoint for Tune
    assert [(m["status"], m["seed"]) for m, _ in reports[:2]] == [("training", 0), ("training", 1)]
    assert reports[0][1] is None and reports[1][1] == {r.run_id: r.checkpoint_path for r in trial.runs}
    stamps = {p: p.stat().st_mtime_ns for run in trial.runs for p in run.run_dir.glob("records/*.json")}
    # a second execution (a trial Tune resumed although the store says finished) does nothing
    assert execute(trial.spec.to_dict(), lambda m, c: None)["skipped"] is True
    assert {p: p.stat().st_mtime_ns for p in stamps} == stamps
    for run in trial.runs:
        assert _events(run) == ["start", "finished", "skip"]


def test_a_missing_knob_record_is_evaluated_without_retraining(tmp_path):
    trial = _toy_trials(tmp_path)[1]
    execute(trial.spec.to_dict(), lambda m, c: None)
    first, second = trial.runs
    eval_record = next(p for p in second.run_dir.glob("records/*.json") if json.loads(p.read_text())["source"] == "eval")
    eval_record.unlink()
    metrics_before = {run.run_id: (run.run_dir / "metrics.jsonl").read_text() for run in trial.runs}
    assert trial.statuses() == {first.run_id: "finished", second.run_id: "todo"}
    execute(trial.spec.to_dict(), lambda m, c: None)
    assert trial.status() == "finished" and eval_record.exists()
    assert {run.run_id: (run.run_dir / "metrics.jsonl").read_text() for run in trial.runs} == metrics_before  # no update ran
    assert _events(first) == ["start", "finished", "skip"] and _events(second) == ["start", "finished", "start", "finished"]


def test_a_diverging_trial_stops_with_its_reason_recorded(tmp_path):
    """IQL with an absurd learning rate and no discounting blows up within 50 updates in both
    seeds (a real divergence, no simulation): each seed's run is marked with its reason and the
    trial is not retried."""
    grid = tmp_path / "diverge.yaml"
    grid.write_text("name: diverge\ntasks: [toy/four-goal]\nseeds: [0, 1]\nsteps: 50\neval: {episodes: 5}\n"
                    "methods: {iql: {config: {hidden_dims: [16], lr: 1.0e+30, discount: 1.0}}}\n")
    (trial,) = plan_grid(load_grid(grid), tmp_path / "results")
    reports = []
    out = execute(trial.spec.to_dict(), lambda m, c: reports.append(m))
    assert out["status"] == "diverged" and "non-finite training metric" in out["reason"]
    assert reports[-1]["status"] == "diverged"
    assert trial.status() == "diverged" and out["statuses"] == dict.fromkeys(trial.run_ids, "diverged")
    for run in trial.runs:
        assert not list(run.run_dir.glob("records/*.json"))
        marker = json.loads(run.diverged_path.read_text())
        assert marker["seed"] == run.seed and marker["reason"].startswith(f"{run.run_id}:")
        # the first logging step after the blow-up (trials log about 20 times a run: every 2 of 50 updates)
        step = re.search(r"at step ([0-9]+); the run diverged", marker["reason"])
        assert step and 0 < int(step[1]) <= 50, marker["reason"]
    assert execute(trial.spec.to_dict(), lambda m, c: None)["status"] == "diverged"  # not retried
    for run in trial.runs:
        assert _events(run) == ["start", "diverged", "skip"]


def test_a_user_error_fails_the_trial_without_retries_or_marks(tmp_path, monkeypatch):
    import modebench.benchmarks.run.train as train_module
    from modebench.benchmarks.data.loaders import MissingDatasetError

    def missing(*args, **kwargs):
        raise MissingDatasetError("D4RL dataset 'hopper-medium-v2' is not on this machine")

    monkeypatch.setattr(train_module, "train_seeds", missing)
    trial = _toy_trials(tmp_path)[1]
    out = execute(trial.spec.to_dict(), lambda m, c: None)  # returns: Tune does not retry it
    assert out["status"] == "failed" and "not on this machine" in out["reason"]
    assert out["run_ids"] == trial.run_ids
    assert trial.status() == "todo" and not any(r.diverged_path.exists() for r in trial.runs)  # a later run tries again
    assert all(_events(run) == ["start", "failed"] for run in trial.runs)


def test_knobs_at_all_evaluates_every_setting_at_every_evaluation_step(tmp_path):
    grid = tmp_path / "curve.yaml"
    grid.write_text(
        "name: curve\ntasks: [toy/four-goal]\nseeds: [0, 1]\nsteps: 20\neval: {every: 10, episodes: 10, knobs_at: all}\n"
        "config: {batch_size: 32, flow_hidden_dims: [16], critic_hidden_dims: [16], token_dim: 4, sample_steps: 1}\n"
        "methods: {isep-fm: {inference: {w: [0.0, 2.0]}}}\n"
    )
    (trial,) = plan_grid(load_grid(grid), tmp_path / "results")
    assert trial.eval_steps == [10, 20] and [s["w"] for s in trial.settings] == [1.0, 0.0, 2.0]
    execute(trial.spec.to_dict(), lambda m, c: None)
    for run in trial.runs:
        records = _records(run)
        assert [(r["step"], r["knobs"]["w"]) for r in records] == [(s, w) for s in (10, 20) for w in (0.0, 1.0, 2.0)]
        assert {r["seed"] for r in records} == {run.seed}


def test_tune_checkpoint_is_copied_into_the_store_per_seed_only_when_newer(tmp_path):
    import torch
    from modebench.benchmarks.run.checkpoints import CHECKPOINT_FORMAT, PAYLOAD_KEYS

    trial = _toy_trials(tmp_path)[0]
    first, second = trial.runs
    tune_dir = tmp_path / "tune_ckpt"

    def save(path: Path, step: int) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        torch.save({**dict.fromkeys(PAYLOAD_KEYS), "format": CHECKPOINT_FORMAT, "run": "{}", "step": step}, path)

    save(tune_dir / first.run_id / "checkpoint.pt", 7)
    save(tune_dir / second.run_id / "checkpoint.pt", 7)
    save(second.checkpoint_path, 9)  # the store's own is newer for the second seed: kept
    from ray.tune import Checkpoint

    assert restore_from_tune(trial, Checkpoint.from_directory(tune_dir)) == {first.run_id: 7}
    assert torch.load(first.checkpoint_path, weights_only=True)["step"] == 7
    assert torch.load(second.checkpoint_path, weights_only=True)["step"] == 9
    save(tune_dir / first.run_id / "checkpoint.pt", 20)
    assert restore_from_tune(trial, tune_dir, runs=[second]) == {}  # only the runs asked for
    assert restore_from_tune(trial, tune_dir) == {first.run_id: 20}


def test_the_reported_tune_checkpoint_restores_every_seed(tmp_path, monkeypatch):
    """What the trainable hands Tune (sweeps.trial._tune_report) is what a restarted trial
    restores from: one checkpoint folder with each seed's checkpoint.pt under its run id."""
    import ray.tune
    from modebench.benchmarks.run.checkpoints import load_checkpoint
    from modebench.sweeps.trial import _tune_report

    kept = tmp_path / "kept"

    def report(metrics, checkpoint=None):
        if checkpoint is not None:  # Tune persists it to its storage; keep the latest
            shutil.rmtree(kept, ignore_errors=True)
            shutil.copytree(checkpoint.path, kept)

    monkeypatch.setattr(ray.tune, "report", report)
    trial = _toy_trials(tmp_path / "results")[0]
    execute(trial.spec.to_dict(), _tune_report)
    assert sorted(p.name for p in kept.iterdir()) == sorted([*trial.run_ids, "meta.json"])
    for run in trial.runs:  # a store without the checkpoints (lost, or older): Tune's copies come back
        run.checkpoint_path.unlink()
    assert restore_from_tune(trial, kept) == dict.fromkeys(trial.run_ids, 30)
    assert all(int(load_checkpoint(run.checkpoint_path)["step"]) == 30 for run in trial.runs)


# ------------------------------------------------------------------ seed-batched trials against single runs
BC3 = """name: bc3
tasks: [toy/four-goal]
seeds: [0, 1, 2]
steps: 300
eval: {every: 100, episodes: 5}
checkpoint_every: 100
config: {hidden_dims: [32, 32], batch_size: 64}
methods: [bc]
"""


def _bc3(tmp_path: Path, root: Path):
    grid = tmp_path / "bc3.yaml"
    grid.write_text(BC3)
    (trial,) = plan_grid(load_grid(grid), root)
    return trial


@pytest.fixture(scope="module")
def bc_alone(tmp_path_factory):
    """The three seeds of the bc3 trial, each trained alone by `train` (as a single-seed sweep
    trial or `modebench train` does): run id -> its records."""
    from modebench.benchmarks.run.train import train

    tmp = tmp_path_factory.mktemp("alone")
    trial = _bc3(tmp, tmp / "results")
    for run in trial.runs:
        train(run.run, out=trial.root)
    return trial.root, {run.run_id: _records(run) for run in trial.runs}


def _assert_same_records(ours: list[dict], theirs: list[dict], what: str) -> None:
    assert [(r["step"], r["seed"], r["source"], r["knobs"]) for r in ours] == [
        (r["step"], r["seed"], r["source"], r["knobs"]) for r in theirs], what
    for mine, other in zip(ours, theirs):
        for key in ("normalized_score", "return_mean", "success_rate"):
            assert mine[key] == pytest.approx(other[key], rel=1e-4, abs=1e-4), f"{what} step {mine['step']} {key}"
        assert [e["return"] for e in mine["episodes"]] == pytest.approx([e["return"] for e in other["episodes"]], rel=1e-4, abs=1e-4)
        assert mine["training_metrics"].keys() == other["training_metrics"].keys()
        for key, value in other["training_metrics"].items():
            if key.startswith("training/"):
                assert mine["training_metrics"][key] == pytest.approx(value, rel=1e-3, abs=1e-6), f"{what} step {mine['step']} {key}"


def test_a_three_seed_trial_writes_the_records_of_three_single_seed_runs(tmp_path, bc_alone, monkeypatch):
    import modebench.benchmarks.run.train as train_module

    calls = []
    train_seeds = train_module.train_seeds

    def spy(specs, **kwargs):
        calls.append([spec.seed for spec in specs])
        return train_seeds(specs, **kwargs)

    monkeypatch.setattr(train_module, "train_seeds", spy)
    _, alone = bc_alone
    trial = _bc3(tmp_path, tmp_path / "results")
    assert trial.run_ids == list(alone)  # the same run ids as the runs trained alone
    out = execute(trial.spec.to_dict(), lambda m, c: None)
    assert out["status"] == "finished" and out["seeds_finished"] == 3
    assert calls == [[0, 1, 2]]  # one seed-batched training for the three seeds
    for run in trial.runs:
        records = _records(run)
        assert [r["step"] for r in records] == [100, 200, 300]
        _assert_same_records(records, alone[run.run_id], f"seed {run.seed}")
    # the seeds are three different runs (not one seed written three times)
    losses = {run.seed: _records(run)[-1]["training_metrics"]["training/actor_loss"] for run in trial.runs}
    assert len(set(losses.values())) == 3, losses


class _Crash(Exception):
    """The trial's process dying (a killed worker): raised from the report after step 100."""


def test_an_interrupted_trial_finishes_only_what_is_missing(tmp_path, bc_alone):
    """Seed 0 is already stored by a single-seed run (an older sweep's trial); the trial is
    interrupted after seeds 1 and 2 stored their step-100 record and checkpoint. Run again, it
    skips seed 0 (untouched), resumes seeds 1 and 2 from step 100, and ends with the records the
    seeds get trained alone."""
    alone_root, alone = bc_alone
    trial = _bc3(tmp_path, tmp_path / "results")
    first, *rest = trial.runs
    shutil.copytree(alone_root / "runs" / first.run_id, first.run_dir)
    stamps = {p: p.stat().st_mtime_ns for p in first.run_dir.rglob("*") if p.is_file() and p.name not in ("sweep_attempts.jsonl", "writer.lock")}
    assert trial.statuses() == {first.run_id: "finished", **{r.run_id: "todo" for r in rest}}

    def crash(metrics, checkpoints):
        if checkpoints:  # the step-100 Tune checkpoint: both training seeds' files, the finished seed's not
            assert sorted(checkpoints) == sorted(r.run_id for r in rest)
            raise _Crash

    with pytest.raises(_Crash):
        execute(trial.spec.to_dict(), crash)
    from modebench.benchmarks.run.checkpoints import load_checkpoint

    for run in rest:
        assert int(load_checkpoint(run.checkpoint_path)["step"]) == 100 and run.status() == "todo"
    early = {p: p.stat().st_mtime_ns for run in rest for p in run.run_dir.glob("records/*.json")}
    assert len(early) == 2  # the step-100 records
    out = execute(trial.spec.to_dict(), lambda m, c: None)
    assert {p: p.stat().st_mtime_ns for p in early} == early  # its step-100 records not written again
    for run in rest:  # resumed at step 100: every interval's metrics logged once, none repeated
        lines = [json.loads(line) for line in (run.run_dir / "metrics.jsonl").read_text().splitlines()]
        training = [line["step"] for line in lines if any(key.startswith("training/") for key in line)]
        evaluated = [line["step"] for line in lines if any(key.startswith("eval/") for key in line)]
        assert evaluated == [100, 200, 300] and len(training) == len(set(training)) and 300 in training, lines
    assert out["status"] == "finished" and trial.status() == "finished"
    assert _events(first) == ["skip", "skip"]
    assert {p: p.stat().st_mtime_ns for p in stamps} == stamps  # seed 0 not rewritten
    for run in rest:
        starts = [json.loads(line) for line in (run.run_dir / "sweep_attempts.jsonl").read_text().splitlines()]
        assert [(e["event"], e.get("start_step")) for e in starts] == [("start", 0), ("start", 100), ("finished", None)]
        assert starts[1]["seeds"] == [1, 2]
    for run in trial.runs:
        _assert_same_records(_records(run), alone[run.run_id], f"seed {run.seed}")


def test_a_seed_that_diverges_is_marked_and_the_other_seeds_finish(tmp_path, bc_alone, monkeypatch):
    """SIMULATED divergence: the divergence guard is handed a NaN training metric for seed 1 from
    step 200 on (BC on the toy task does not diverge by itself; a config that diverges does so in
    every seed: see the test above). The real guard raises; seed 1 is marked diverged with that
    reason, seeds 0 and 2 finish with the records they get trained alone, and a rerun retries
    nothing."""
    from modebench.benchmarks.run.callbacks import DivergenceGuard

    guard = DivergenceGuard.on_log

    def on_log(self, run, step, metrics):
        if run.spec.seed == 1 and step >= 200:
            metrics = {**metrics, "training/actor_loss": float("nan")}
        guard(self, run, step, metrics)

    monkeypatch.setattr(DivergenceGuard, "on_log", on_log)
    _, alone = bc_alone
    trial = _bc3(tmp_path, tmp_path / "results")
    zero, one, two = trial.runs
    reports = []
    out = execute(trial.spec.to_dict(), lambda m, c: reports.append((m, c)))
    assert out["status"] == "diverged" and out["seeds_finished"] == 2
    assert out["statuses"] == {zero.run_id: "finished", one.run_id: "diverged", two.run_id: "finished"}
    marker = json.loads(one.diverged_path.read_text())
    assert marker["seed"] == 1 and marker["reason"].startswith(f"{one.run_id}: non-finite") and "at step 200" in marker["reason"]
    assert [r["step"] for r in _records(one)] == [100]
    for run in (zero, two):
        assert not run.diverged_path.exists()
        _assert_same_records(_records(run), alone[run.run_id], f"seed {run.seed}")
    # Tune checkpoints: at step 100 (all three seeds stored it) and at 300 (the two survivors did)
    assert [m["step"] for m, c in reports if c] == [100, 300]
    assert _events(one) == ["start", "diverged"] and _events(zero) == ["start", "finished"]
    again = execute(trial.spec.to_dict(), lambda m, c: None)
    assert again["skipped"] is True and again["status"] == "diverged"
    assert _events(one) == ["start", "diverged", "skip"]


def test_a_divergence_raised_out_of_train_seeds_marks_the_named_seed_and_retrains_the_others(tmp_path, bc_alone, monkeypatch):
    """train_seeds returns a diverged seed's error in its place; should one be raised instead
    (SIMULATED here: the first call raises the guard's message for seed 1 before training), the
    named seed is marked and the others are trained by a second call, ending as trained alone."""
    import modebench.benchmarks.run.train as train_module

    calls = []
    train_seeds = train_module.train_seeds
    _, alone = bc_alone
    trial = _bc3(tmp_path, tmp_path / "results")
    zero, one, two = trial.runs

    def raising(specs, **kwargs):
        calls.append([spec.seed for spec in specs])
        if len(calls) == 1:
            raise FloatingPointError(f"{one.run_id}: non-finite training metric(s) ['training/actor_loss'] at step 100 (simulated)")
        return train_seeds(specs, **kwargs)

    monkeypatch.setattr(train_module, "train_seeds", raising)
    out = execute(trial.spec.to_dict(), lambda m, c: None)
    assert calls == [[0, 1, 2], [0, 2]]
    assert out["statuses"] == {zero.run_id: "finished", one.run_id: "diverged", two.run_id: "finished"}
    assert "(simulated)" in json.loads(one.diverged_path.read_text())["reason"]
    for run in (zero, two):
        _assert_same_records(_records(run), alone[run.run_id], f"seed {run.seed}")


def test_a_sweep_of_stored_runs_writes_one_plan_and_summary_row_per_run(tmp_path, bc_alone):
    """No trial to run (every run stored): no Ray. plan.json and summary.json list each seed's
    run; `seeds` (the CLI's --seeds) narrows every trial to those seeds."""
    from modebench.sweeps.runner import run_sweep

    alone_root, alone = bc_alone
    grid = tmp_path / "bc3.yaml"
    grid.write_text(BC3)
    root = tmp_path / "results"
    for run_id in alone:
        shutil.copytree(alone_root / "runs" / run_id, root / "runs" / run_id)
    lines: list[str] = []
    summary = run_sweep(grid, out=root, log=lines.append)
    assert "1 trials, 3 runs" in lines[0] and "3 runs already finished or diverged, 0 trials to run" in lines[0]
    assert summary.ok and summary.trials == 1 and summary.runs == 3 and summary.statuses == {"finished": 3}
    plan = json.loads((root / "sweeps/bc3/plan.json").read_text())
    assert [(r["seed"], r["run_id"], r["label"]) for r in plan["runs"]] == [(s, r, "bc_toy-four-goal") for s, r in zip((0, 1, 2), alone)]
    assert plan["trials"] == [{"label": "bc_toy-four-goal", "method": "bc", "task": "toy/four-goal", "train": {},
                               "seeds": [0, 1, 2], "run_ids": list(alone)}]
    written = json.loads((root / "sweeps/bc3/summary.json").read_text())
    assert written["run_status"] == dict.fromkeys(alone, "finished") and written["trials"] == 1 and written["runs"] == 3
    lines.clear()
    run_sweep(grid, out=root, seeds=[1, 5], dry_run=True, log=lines.append)
    assert "1 trials, 2 runs" in lines[0] and "1 runs already finished or diverged, 1 trials to run" in lines[0]
    assert len(lines) == 4 and f"[finished] seed 1  {list(alone)[1]}" in lines[2] and "[todo    ] seed 5" in lines[3]


def test_reaper_kills_only_marked_processes():
    token = f"{reaper.TOKEN_VAR}={uuid.uuid4().hex}"
    marked = subprocess.Popen(["sleep", "60"], env={**os.environ, reaper.TOKEN_VAR: token.split("=", 1)[1]})
    other = subprocess.Popen(["sleep", "60"])
    try:
        time.sleep(0.2)
        assert reaper.processes_with(token) == [marked.pid]
        assert reaper.kill_marked(token, grace=2.0) == [marked.pid]
        assert marked.wait(timeout=5) != 0
        assert other.poll() is None
    finally:
        for proc in (marked, other):
            proc.kill()
            proc.wait()


DRIVER_WITH_AN_UNMARKED_CHILD = """
import subprocess, sys, time
from modebench.sweeps import reaper
reaper.spawn_watchdog(sys.argv[1], sys.argv[2])
child = subprocess.Popen(["sleep", "120"], env={})  # like an agent whose title overwrote the token
print(child.pid, flush=True)
time.sleep(120)
"""


def test_watchdog_stops_the_killed_drivers_descendants_that_lost_the_token(tmp_path):
    """Ray's agents rename themselves (setproctitle), which can overwrite the token in their
    environment: after a SIGKILL of the driver, the watchdog still stops every process it saw
    below the driver, and nothing else."""
    token = uuid.uuid4().hex
    bystander = subprocess.Popen(["sleep", "60"])
    driver = subprocess.Popen([sys.executable, "-c", DRIVER_WITH_AN_UNMARKED_CHILD, token, str(tmp_path / "reaper.log")],
                              stdout=subprocess.PIPE, text=True)
    child = int(driver.stdout.readline())
    try:
        assert not any(e.startswith(reaper.TOKEN_VAR.encode()) for e in Path(f"/proc/{child}/environ").read_bytes().split(b"\0"))
        time.sleep(1.5)  # a few of the watchdog's polls of the process tree
        driver.kill()
        driver.wait()
        wait_for(lambda: not reaper.alive(child), 20, "the watchdog to stop the driver's unmarked child")
        assert f"stopped [{child}]" in wait_for(lambda: _read(tmp_path / "reaper.log") if (tmp_path / "reaper.log").exists() else None,
                                             10, "the watchdog's log")
        assert bystander.poll() is None
    finally:
        for pid in (child, bystander.pid):
            if reaper.alive(pid):
                os.kill(pid, signal.SIGKILL)
        bystander.wait()


# ------------------------------------------------------------------ the CI grid under Ray Tune
def _attempts(root: Path) -> dict[str, list[dict]]:
    out = {}
    for path in root.glob("runs/*/sweep_attempts.jsonl"):
        out[path.parent.name] = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return out


def _read(path: Path) -> str:
    return path.read_text() if path.exists() else "(none)"


def _describe(pids: list[int]) -> list[str]:
    out = []
    for pid in pids:
        try:
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()[:120]
            env = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
            token = any(e.startswith(reaper.TOKEN_VAR.encode()) for e in env)
            out.append(f"{pid} [{Path(f'/proc/{pid}/stat').read_text().rsplit(')', 1)[1].split()[0]}] {cmd} token={token}")
        except OSError:
            out.append(f"{pid} (gone)")
    return out


def test_ci_grid_under_ray_survives_a_dead_trial_and_a_killed_driver(tmp_path):
    """The CI grid (2 methods x toy/four-goal = 2 trials of 2 seeds each, 300 updates, guidance w
    in {1, 3}) under Ray Tune: one trial's worker is SIGKILLed mid-training (FailureConfig
    restarts it, both seeds from their checkpoints), then the driver is SIGKILLed once a trial
    has finished; `--resume` finishes the rest. Ends with the 2 x 2 x 2 records, each once,
    finished runs not re-run, and no process of the test's Ray node left."""
    root = tmp_path / "results"
    tag = f"MODEBENCH_TEST_TAG={uuid.uuid4().hex}"
    env = {**os.environ, "MODEBENCH_TEST_TAG": tag.split("=", 1)[1], "PYTHONUNBUFFERED": "1"}
    command = [*MODEBENCH, "sweep", "ci_toy", "--results", str(root), "--quiet"]
    trials = plan_grid(load_grid("ci_toy"), root)
    assert len(trials) == 2 and all(len(t.runs) == 2 for t in trials)
    final = {r.run_id: r for t in trials for r in t.runs}
    t0 = time.monotonic()
    driver = subprocess.Popen(command, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        # 1. a trial worker dies mid-training (after its first periodic checkpoint at step 100): the
        # process of a trial trains both its seeds
        def training_with_checkpoint():  # a trial both of whose seeds are training past a checkpoint
            training: dict[int, list[str]] = {}
            for run_id, events in _attempts(root).items():
                if events[-1]["event"] == "start":
                    training.setdefault(events[-1]["pid"], []).append(run_id)
            for pid, run_ids in training.items():
                if len(run_ids) == 2 and all((root / "runs" / r / "checkpoint.pt").exists() for r in run_ids):
                    return run_ids[0], pid
            return None

        victim, pid = wait_for(training_with_checkpoint, 240, "a trial with a checkpoint", driver)
        os.kill(pid, signal.SIGKILL)
        # 2. the driver dies once some trial has finished and some has not
        def some_finished():
            done = [r for r, t in final.items() if t.status() == "finished"]
            return done if 0 < len(done) < len(final) else None

        finished_before = wait_for(some_finished, 240, "a finished trial", driver)
        snapshot = {p: (p.stat().st_mtime_ns, p.read_bytes()) for r in finished_before for p in (root / "runs" / r).glob("records/*.json")}
        driver.kill()
        driver.wait()
        first_output = driver.stdout.read()
        t_kill = time.monotonic()
        # the watchdog removes the dead driver's Ray node (Ray leaves agents orphaned otherwise)
        try:
            wait_for(lambda: not reaper.processes_with(tag), 60, "the killed driver's Ray processes to end")
        except AssertionError:
            raise AssertionError(f"left after the driver's SIGKILL: {_describe(reaper.processes_with(tag))}; "
                                 f"reaper log: {_read(root / 'sweeps/ci_toy/reaper.log')}") from None
        t_clean = time.monotonic()

        resumed = subprocess.run([*command, "--resume"], check=False, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
        t_end = time.monotonic()
        assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    finally:
        if driver.poll() is None:
            driver.kill()
        reaper.kill_marked(tag)
    print(f"\ntimings: first driver {t_kill - t0:.0f} s, cleanup {t_clean - t_kill:.1f} s, resume {t_end - t_clean:.0f} s")

    # every record exactly once: 2 methods x 2 seeds x 2 knob settings, at the final step
    from modebench.benchmarks.store import iter_records

    records = list(iter_records(root))
    keys = [(r["run_id"], r["step"], json.dumps(r["knobs"], sort_keys=True)) for r in records]
    assert len(records) == 8 and len(set(keys)) == 8
    assert {r["run_id"] for r in records} == set(final)
    assert sorted((r["method"], r["seed"], r["knobs"]["w"]) for r in records) == sorted(
        (m, s, w) for m in ("isep-fm", "cfgrl") for s in (0, 1) for w in (1.0, 3.0))
    assert all(r["step"] == 300 for r in records)
    assert not list(root.glob("runs/*/records/.*.tmp"))
    # finished trials were not re-run: one start each, records untouched
    attempts = _attempts(root)
    for run_id in finished_before:
        assert [e["event"] for e in attempts[run_id] if e["event"] == "start"] == ["start"], attempts[run_id]
    assert {p: (p.stat().st_mtime_ns, p.read_bytes()) for p in snapshot} == snapshot
    # the trial whose worker died restarted from its checkpoints, not from step 0: both its seeds,
    # trained in the one process that died
    siblings = [r for r, events in attempts.items() if any(e["event"] == "start" and e["pid"] == pid for e in events)]
    assert len(siblings) == 2 and victim in siblings, attempts
    for run_id in siblings:
        starts = [e for e in attempts[run_id] if e["event"] == "start"]
        assert len(starts) >= 2 and starts[1]["start_step"] >= 100, attempts[run_id]
    summary = json.loads((root / "sweeps/ci_toy/summary.json").read_text())
    assert summary["statuses"] == {"finished": 4} and summary["restored_tune_state"] is True, (summary, first_output)
    assert not reaper.processes_with(tag), "a Ray process of the test outlived the sweep"
