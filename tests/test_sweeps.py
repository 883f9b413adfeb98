"""Sweeps (issue 8): grid files, trial planning against the results store, divergence, process
cleanup, and the CI grid under Ray Tune with a trial killed, the driver SIGKILLed and resumed."""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
from helpers import wait_for

from algorithms.config import ConfigError
from algorithms.registry import METHODS, base_method
from sweeps import reaper
from sweeps.grid import grid_names, load_grid, parse_seeds
from sweeps.runner import plan_grid
from sweeps.trial import execute, restore_from_tune

REPO = Path(__file__).resolve().parents[1]
MODEBENCH = [sys.executable, "-m", "modebench.cli"]

# The studies' sizes, from the papers (see each grid file's header for the sources).
EXPECTED_TRIALS = {
    "ci_toy": 2 * 2 * 1,  # 2 methods x 2 seeds x 1 task
    "gem_table1": 8 * 18 * 3,  # every base method x the 18 Table 1 tasks x 3 seeds
    "gem_budget": 18 * 3,  # inference only: N is a knob
    "gem_wp_frontier": 18 * 3,  # inference only: w_end is a knob
    "gem_ablations": 2 * 18 * 3,  # gem (6 knob-only ablations as settings) + the trained unimodal-actor preset
    "lom_m_sweep": 5 * 3 * 4,  # M x medium-replay tasks x 4 seeds
    "isep_lambda_sweep": 6 * 10 * 5,  # lambda x 10 tasks x 5 seeds
    "isep_fm_guidance": 14 * 5,  # inference only: w is a knob
    "drol_k_sweep": 7 * 14 * 4,  # K x 14 tasks x 4 seeds
    "cross_selection": 6 * 4 * 2,  # proposers x toy tasks x 2 seeds (selection is `modebench cross-select`)
    "cross_selection_local": 6 * 6 * 2,  # proposers x maze2d-local and ogbench-local tasks x 2 seeds
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
    assert len(trials) == grid.count_trials() == EXPECTED_TRIALS[name]
    identities = {(t.method, t.task, t.seed, json.dumps(t.train_combo, sort_keys=True)) for t in trials}
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
        from benchmarks.tasks.suites import get_task

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
    table1 = {t.run_id for t in plan_grid(load_grid("gem_table1"), tmp_path) if t.spec.method == "gem"}
    assert len(table1) == 18 * 3
    for name in ("gem_budget", "gem_wp_frontier", "gem_ablations"):
        runs = {t.run_id for t in plan_grid(load_grid(name), tmp_path) if t.spec.method == "gem"}
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
    assert "modebench sweep gem_table1 --address auto --out /mnt/shared/results --resume" in header

    job = yaml.safe_load((REPO / "sweeps/cluster/rayjob-gem-table1.yaml").read_text())
    pvc = yaml.safe_load((REPO / "sweeps/cluster/shared-pvc.yaml").read_text())
    assert job["kind"] == "RayJob" and pvc["spec"]["accessModes"] == ["ReadWriteMany"]
    argv = shlex.split(job["spec"]["entrypoint"])
    args = build_parser().parse_args(argv[1:])
    assert argv[0] == "modebench" and args.grid == "gem_table1" and args.address == "auto" and args.resume
    spec = job["spec"]["rayClusterSpec"]
    pods = [spec["headGroupSpec"]["template"]["spec"]] + [g["template"]["spec"] for g in spec["workerGroupSpecs"]]
    for pod in pods:  # every pod mounts the shared claim where --out points
        claim = {v["name"]: v["persistentVolumeClaim"]["claimName"] for v in pod["volumes"]}
        mounts = {m["mountPath"]: claim[m["name"]] for m in pod["containers"][0]["volumeMounts"]}
        assert any(args.out.startswith(path) and name == pvc["metadata"]["name"] for path, name in mounts.items())
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
    from modebench.cli import main
    from sweeps.runner import run_sweep, sweep_dir

    assert main(["sweep", "ci_toy", "--protocol", "published", "--dry-run", "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "no published protocol on toy/four-goal" in err and "--protocol controlled" in err
    lines: list[str] = []
    run_sweep("ci_toy", out=tmp_path, dry_run=True, protocol="controlled", log=lines.append)
    assert "4 trials" in lines[0]
    grid = load_grid("ci_toy")
    published = dataclasses.replace(grid, protocol="published")
    assert sweep_dir(tmp_path, grid) != sweep_dir(tmp_path, published)


# ------------------------------------------------------------------ trials without Ray
def _toy_trials(root: Path, steps: int = 30):
    return plan_grid(load_grid("ci_toy"), root, steps=steps)


def test_trial_writes_one_record_per_setting_and_matches_train_run_id(tmp_path):
    trial = _toy_trials(tmp_path)[0]
    assert [s["w"] for s in trial.settings] == [1.0, 3.0]  # configured w = 1 first, then the grid's other value
    assert trial.status() == "todo"
    reports = []
    out = execute(trial.spec.to_dict(), lambda m, c: reports.append((m, c)))  # raises if train()'s run id differs
    assert out["status"] == "finished" and trial.status() == "finished"
    records = [json.loads(p.read_text()) for p in sorted(trial.run_dir.glob("records/*.json"))]
    assert sorted((r["step"], r["knobs"]["w"], r["source"]) for r in records) == [(30, 1.0, "train"), (30, 3.0, "eval")]
    assert {r["run_id"] for r in records} == {trial.run_id}
    assert reports[0][0]["status"] == "training" and reports[0][1] == trial.run_dir / "checkpoint.pt"
    stamps = {p: p.stat().st_mtime_ns for p in trial.run_dir.glob("records/*.json")}
    # a second execution (a trial Tune resumed although the store says finished) does nothing
    assert execute(trial.spec.to_dict(), lambda m, c: None)["skipped"] is True
    assert {p: p.stat().st_mtime_ns for p in trial.run_dir.glob("records/*.json")} == stamps
    events = [json.loads(line)["event"] for line in (trial.run_dir / "sweep_attempts.jsonl").read_text().splitlines()]
    assert events == ["start", "finished", "skip"]


def test_a_missing_knob_record_is_evaluated_without_retraining(tmp_path):
    trial = _toy_trials(tmp_path)[1]
    execute(trial.spec.to_dict(), lambda m, c: None)
    eval_record = next(p for p in trial.run_dir.glob("records/*.json") if json.loads(p.read_text())["source"] == "eval")
    eval_record.unlink()
    metrics_before = (trial.run_dir / "metrics.jsonl").read_text()
    assert trial.status() == "todo"
    execute(trial.spec.to_dict(), lambda m, c: None)
    assert trial.status() == "finished" and eval_record.exists()
    assert (trial.run_dir / "metrics.jsonl").read_text() == metrics_before  # no update ran


def test_a_diverging_trial_stops_with_its_reason_recorded(tmp_path):
    """IQL with an absurd learning rate and no discounting blows up within 50 updates; train()
    raises FloatingPointError, the trial records why and is not retried."""
    grid = tmp_path / "diverge.yaml"
    grid.write_text("name: diverge\ntasks: [toy/four-goal]\nseeds: [0]\nsteps: 50\neval: {episodes: 5}\n"
                    "methods: {iql: {config: {hidden_dims: [16], lr: 1.0e+30, discount: 1.0}}}\n")
    (trial,) = plan_grid(load_grid(grid), tmp_path / "results")
    reports = []
    out = execute(trial.spec.to_dict(), lambda m, c: reports.append(m))
    assert out["status"] == "diverged" and "non-finite training metric" in out["reason"]
    assert reports[-1]["status"] == "diverged"
    assert trial.status() == "diverged" and not list(trial.run_dir.glob("records/*.json"))
    assert "at step 50" in json.loads(trial.diverged_path.read_text())["reason"]
    assert execute(trial.spec.to_dict(), lambda m, c: None)["status"] == "diverged"  # not retried
    events = [json.loads(line)["event"] for line in (trial.run_dir / "sweep_attempts.jsonl").read_text().splitlines()]
    assert events == ["start", "diverged", "skip"]


def test_a_user_error_fails_the_trial_without_retries_or_marks(tmp_path, monkeypatch):
    import benchmarks.run.train
    from benchmarks.data.loaders import MissingDatasetError

    def missing(*args, **kwargs):
        raise MissingDatasetError("D4RL dataset 'hopper-medium-v2' is not on this machine")

    monkeypatch.setattr(benchmarks.run.train, "train", missing)
    trial = _toy_trials(tmp_path)[3]
    out = execute(trial.spec.to_dict(), lambda m, c: None)  # returns: Tune does not retry it
    assert out["status"] == "failed" and "not on this machine" in out["reason"]
    assert trial.status() == "todo" and not trial.diverged_path.exists()  # a later run tries again


def test_knobs_at_all_evaluates_every_setting_at_every_evaluation_step(tmp_path):
    grid = tmp_path / "curve.yaml"
    grid.write_text(
        "name: curve\ntasks: [toy/four-goal]\nseeds: [0]\nsteps: 20\neval: {every: 10, episodes: 10, knobs_at: all}\n"
        "config: {batch_size: 32, flow_hidden_dims: [16], critic_hidden_dims: [16], token_dim: 4, sample_steps: 1}\n"
        "methods: {isep-fm: {inference: {w: [0.0, 2.0]}}}\n"
    )
    (trial,) = plan_grid(load_grid(grid), tmp_path / "results")
    assert trial.eval_steps == [10, 20] and [s["w"] for s in trial.settings] == [1.0, 0.0, 2.0]
    execute(trial.spec.to_dict(), lambda m, c: None)
    records = [json.loads(p.read_text()) for p in trial.run_dir.glob("records/*.json")]
    assert sorted((r["step"], r["knobs"]["w"]) for r in records) == [(s, w) for s in (10, 20) for w in (0.0, 1.0, 2.0)]


def test_tune_checkpoint_is_copied_into_the_store_only_when_newer(tmp_path):
    import torch

    from benchmarks.run.checkpoints import CHECKPOINT_FORMAT, PAYLOAD_KEYS

    trial = _toy_trials(tmp_path)[0]
    tune_dir = tmp_path / "tune_ckpt"
    tune_dir.mkdir()

    def save(path: Path, step: int) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        torch.save({**dict.fromkeys(PAYLOAD_KEYS), "format": CHECKPOINT_FORMAT, "run": "{}", "step": step}, path)

    save(tune_dir / "checkpoint.pt", 7)
    from ray.tune import Checkpoint

    assert restore_from_tune(trial, Checkpoint.from_directory(tune_dir)) == 7  # the store had none
    save(trial.run_dir / "checkpoint.pt", 9)
    assert restore_from_tune(trial, tune_dir) is None  # the store's is newer: kept
    assert torch.load(trial.run_dir / "checkpoint.pt", weights_only=True)["step"] == 9


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
from sweeps import reaper
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
    """The CI grid (2 methods x 2 seeds x toy/four-goal, 300 updates, guidance w in {1, 3}) under
    Ray Tune: one trial's worker is SIGKILLed mid-training (FailureConfig restarts it from its
    checkpoint), then the driver is SIGKILLed once a trial has finished; `--resume` finishes the
    rest. Ends with the 2 x 2 x 2 records, each once, finished trials not re-run, and no process
    of the test's Ray node left."""
    root = tmp_path / "results"
    tag = f"MODEBENCH_TEST_TAG={uuid.uuid4().hex}"
    env = {**os.environ, "MODEBENCH_TEST_TAG": tag.split("=", 1)[1], "PYTHONUNBUFFERED": "1"}
    command = [*MODEBENCH, "sweep", "ci_toy", "--out", str(root), "--quiet"]
    trials = plan_grid(load_grid("ci_toy"), root)
    final = {t.run_id: t for t in trials}
    t0 = time.monotonic()
    driver = subprocess.Popen(command, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        # 1. a trial worker dies mid-training (after its first periodic checkpoint at step 100)
        def training_with_checkpoint():
            for run_id, events in _attempts(root).items():
                if events[-1]["event"] == "start" and (root / "runs" / run_id / "checkpoint.pt").exists():
                    return run_id, events[-1]["pid"]
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
    from benchmarks.store import iter_records

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
    # the trial whose worker died restarted from its checkpoint, not from step 0
    starts = [e for e in attempts[victim] if e["event"] == "start"]
    assert len(starts) >= 2 and starts[1]["start_step"] >= 100, attempts[victim]
    summary = json.loads((root / "sweeps/ci_toy/summary.json").read_text())
    assert summary["statuses"] == {"finished": 4} and summary["restored_tune_state"] is True, (summary, first_output)
    assert not reaper.processes_with(tag), "a Ray process of the test outlived the sweep"
