"""End to end: train -> records + checkpoint -> eval grid; determinism, resume, CLI contract, errors."""

import json
import re
import subprocess
import sys

import numpy as np
import pytest
import torch
from modebench.algorithms.config import ConfigError
from modebench.algorithms.registry import UnknownMethodError
from modebench.benchmarks.run.train import evaluate_checkpoint, train
from modebench.benchmarks.store import iter_records
from modebench.benchmarks.tasks.suites import UnknownNameError, get_task

from modebench.cli import main


def test_bc_on_four_goal_lands_between_the_modes(results_root):
    """The failure the toy suite exists to expose: a unimodal Gaussian averages the corners."""
    result = train("bc", "toy/four-goal", steps=1500, seed=0, out=results_root, eval_episodes=20)
    obs = torch.zeros(1, 2)
    action = result.algorithm.act(obs, torch.zeros(1, dtype=torch.long), None).actions[0]
    assert action.abs().max() < 0.5, f"BC's mean action {action.tolist()} should sit between the modes"
    assert abs(result.score) < 5.0


def test_same_seed_same_numbers(results_root, tmp_path):
    a = train("iql", "toy/obstacle", steps=120, seed=3, out=tmp_path / "a", eval_episodes=5)
    b = train("iql", "toy/obstacle", steps=120, seed=3, out=tmp_path / "b", eval_episodes=5)
    for pa, pb in zip(a.algorithm.parameters(), b.algorithm.parameters()):
        assert torch.equal(pa, pb)
    assert a.records[-1]["return_mean"] == b.records[-1]["return_mean"]
    assert a.metrics["training/q_loss"] == b.metrics["training/q_loss"]
    c = train("iql", "toy/obstacle", steps=120, seed=4, out=tmp_path / "c", eval_episodes=5)
    assert not torch.equal(next(a.algorithm.parameters()), next(c.algorithm.parameters()))


def test_compiled_losses_train_like_eager_in_a_run_of_their_own(tmp_path):
    # BC's loss has no random draws, so the compiled graphs must follow eager's trajectory
    # up to float rounding; the flag is recorded and names a different run folder.
    eager = train("bc", "toy/four-goal", steps=30, seed=2, out=tmp_path, eval_episodes=5)
    compiled = train("bc", "toy/four-goal", steps=30, seed=2, out=tmp_path, eval_episodes=5, compile=True)
    assert compiled.run_dir != eager.run_dir
    assert compiled.records[-1]["compiled"] is True and eager.records[-1]["compiled"] is False
    for pa, pb in zip(eager.algorithm.parameters(), compiled.algorithm.parameters()):
        assert torch.allclose(pa, pb, atol=1e-5), (pa - pb).abs().max()
    assert compiled.metrics["training/actor_loss"] == pytest.approx(eager.metrics["training/actor_loss"], rel=1e-4)


def test_interrupted_run_resumes_to_the_same_numbers(tmp_path):
    full = train("iql", "toy/four-goal", steps=200, seed=1, out=tmp_path / "full", eval_every=100, eval_episodes=5)
    part_root = tmp_path / "part"  # an interrupted run: stopped right after its first evaluation + checkpoint
    with pytest.raises(KeyboardInterrupt):
        def stop(record):
            if record["step"] == 100:
                raise KeyboardInterrupt
        train("iql", "toy/four-goal", steps=200, seed=1, out=part_root, eval_every=100, eval_episodes=5, on_evaluation=stop)
    resumed = train("iql", "toy/four-goal", steps=200, seed=1, out=part_root, eval_every=100, eval_episodes=5)
    assert [r["step"] for r in resumed.records] == [200]  # only the unfinished part ran
    for pa, pb in zip(full.algorithm.parameters(), resumed.algorithm.parameters()):
        assert torch.allclose(pa, pb, atol=1e-6)
    steps = sorted(r["step"] for r in iter_records(part_root))
    assert steps == [100, 200]  # every evaluation stored exactly once
    # a finished run is not trained again
    again = train("iql", "toy/four-goal", steps=200, seed=1, out=part_root, eval_every=100, eval_episodes=5)
    assert again.records[-1]["step"] == 200 and again.score == resumed.score


def test_record_has_the_fields_analysis_needs(results_root):
    result = train("bc", "toy/branch", steps=50, seed=0, out=results_root, eval_episodes=4)
    record = result.records[-1]
    for key in ("method", "task", "seed", "step", "knobs", "return_mean", "normalized_score", "success_rate",
                "audits", "git_revision", "config_hash", "updates_per_second", "episodes", "eval_wall_time"):
        assert key in record, key
    assert len(record["episodes"]) == 4
    stored = json.loads(next((result.run_dir / "records").glob("*.json")).read_text())
    assert stored["normalized_score"] == record["normalized_score"]
    payload = torch.load(result.checkpoint, weights_only=True)
    assert payload["step"] == 50


def test_eval_rejects_unknown_knobs(results_root):
    result = train("bc", "toy/four-goal", steps=20, seed=0, out=results_root, eval_episodes=2)
    with pytest.raises(ConfigError, match=r"unknown knob\(s\) \['N'\] for bc"):
        evaluate_checkpoint(result.checkpoint, {"N": ["1", "2"]})
    records = evaluate_checkpoint(result.checkpoint, {}, episodes=3, seed=7)
    assert len(records) == 1 and records[0]["source"] == "eval"


def test_unknown_names_list_the_valid_ones():
    with pytest.raises(UnknownMethodError, match="registered methods: .*bc.*iql"):
        train("nope", "toy/four-goal", steps=1)
    with pytest.raises(UnknownNameError, match="valid tasks: four-goal, sparse-optimum"):
        get_task("toy/nope")
    with pytest.raises(UnknownNameError, match="valid suites: .*toy"):
        get_task("nosuite/x")


def test_bad_config_values_are_refused(results_root):
    with pytest.raises(ConfigError, match="unknown iql config key"):
        train("iql", "toy/four-goal", steps=1, config={"expectiel": 0.9})
    with pytest.raises(ConfigError, match="expectile must be in"):
        train("iql", "toy/four-goal", steps=1, config={"expectile": 1.5})


def test_cli_train_contract(results_root, capsys):
    code = main(["train", "--algo", "bc", "--task", "toy/four-goal", "--steps", "30", "--seed", "0",
                 "--results", str(results_root), "--eval-episodes", "3", "--no-progress"])
    assert code == 0
    lines = capsys.readouterr().out.strip().splitlines()
    name, value = lines[-1].split()
    assert name == "normalized_score" and np.isfinite(float(value))


def test_cli_errors_are_one_line_not_tracebacks(capsys):
    assert main(["train", "--algo", "nope", "--task", "toy/four-goal"]) == 2
    err = capsys.readouterr().err
    assert "unknown method 'nope'" in err and "Traceback" not in err
    assert main(["bench", "--suite", "nosuch"]) == 2
    assert "valid suites" in capsys.readouterr().err
    assert main(["train", "--algo", "bc", "--task", "toy/four-goal", "--steps", "0"]) == 2
    assert "argument --steps: must be an integer >= 1, got 0" in capsys.readouterr().err


def test_missing_minari_dataset_offline_says_what_to_do(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(tmp_path / "empty"))
    assert main(["train", "--algo", "bc", "--dataset", "D4RL/antmaze/umaze-v1", "--steps", "1"]) == 2
    err = capsys.readouterr().err
    assert "modebench datasets download D4RL/antmaze/umaze-v1" in err and "local" in err


def test_console_entry_point_runs():
    out = subprocess.run([sys.executable, "-m", "modebench.cli", "methods"], check=False, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and "iql" in out.stdout


def test_speed_script_times_our_iql_against_the_plain_pytorch_reference(tmp_path, capsys):
    from perf import speed

    speed.main(["--methods", "iql", "--updates", "3", "--repeats", "2", "--threads", "1",
                "--d3rlpy-python", str(tmp_path / "no-d3rlpy-venv")])
    out = capsys.readouterr()
    assert "make d3rlpy-venv" in out.err
    assert re.search(r"^  iql +\d+\.\d$", out.out, re.MULTILINE)
    assert re.search(r"^  plain PyTorch iql +\d+\.\d  \(blocks alternating with iql\)$", out.out, re.MULTILINE)
    assert re.search(r"^ratio iql / plain PyTorch iql: \d+\.\d\dx, median of 2 paired blocks", out.out, re.MULTILINE)


def test_a_run_is_resolved_once_into_a_frozen_spec_that_names_its_folder(tmp_path):
    import dataclasses

    from modebench.benchmarks.run.spec import resolve_run

    spec = resolve_run("bc", "toy/four-goal", steps=20, seed=0, eval_episodes=2)
    with pytest.raises(dataclasses.FrozenInstanceError):
        spec.seed = 1
    assert spec.protocol == "controlled" and spec.suite_default and spec.eval_every == 20
    result = train(spec, out=tmp_path)
    assert result.run_dir.name == spec.run_id
    info = json.loads((result.run_dir / "config.json").read_text())
    assert info["run_id"] == spec.run_id and info["protocol"] == "controlled"
    controlled = resolve_run("iql", "locomotion/hopper-medium", steps=20, seed=0)
    published = resolve_run("iql", "locomotion/hopper-medium", steps=20, seed=0, protocol="published")
    assert published.run_id != controlled.run_id  # the protocol is part of the run's identity
    with pytest.raises(ConfigError, match="bc has no published protocol on toy/four-goal"):
        resolve_run("bc", "toy/four-goal", steps=20, seed=0, protocol="published")
    with pytest.raises(TypeError, match="resolve settings with resolve_run"):
        train(spec, steps=3)


def test_unknown_protocol_is_a_one_line_error(capsys):
    assert main(["train", "--algo", "bc", "--task", "toy/four-goal", "--steps", "5", "--protocol", "nope"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert err.startswith("modebench train: error: argument --protocol: invalid choice 'nope' (choose from controlled, published)")
    assert main(["bench", "--suite", "toy", "--protocol", "nope", "--num-seeds", "1"]) == 2
    assert "invalid choice 'nope'" in capsys.readouterr().err


def test_records_say_whether_the_run_is_the_suite_default_and_carry_diagnostics(tmp_path):
    default = train("gem", "toy/four-goal", steps=10, seed=0, out=tmp_path, eval_episodes=2).records[-1]
    changed = train("gem", "toy/four-goal", steps=10, seed=0, out=tmp_path, eval_episodes=2, config={"beta": 1.0}).records[-1]
    knob_only = train("gem", "toy/four-goal", steps=10, seed=0, out=tmp_path, eval_episodes=2, knobs={"N": 2}).records[-1]
    assert default["suite_default"] is True and changed["suite_default"] is False
    assert knob_only["suite_default"] is True and knob_only["knobs"]["N"] == 2 and knob_only["default_knobs"]["N"] == 64
    for record in (default, changed):
        assert record["protocol"] == "controlled" and record["task_default"] is True and record["task_order"] == 0
        # GEM's NLL gap (Eq. 72-75) on the fixed evaluation batch, computed when the run evaluates
        assert np.isfinite(record["diagnostics/behavior_gap"]) and np.isfinite(record["diagnostics/actor_gap"])
    # the fixed batch is the same for every run of a seed: an unchanged model gives the same numbers
    again = train("gem", "toy/four-goal", steps=10, seed=0, out=tmp_path / "again", eval_episodes=2).records[-1]
    assert again["diagnostics/behavior_gap"] == default["diagnostics/behavior_gap"]


def test_metrics_are_namespaced_jsonl_and_diagnostics_do_not_move_training(tmp_path, monkeypatch):
    from modebench.benchmarks.run import callbacks

    a = train("drol", "toy/four-goal", steps=40, seed=1, out=tmp_path / "a", eval_every=20, eval_episodes=2)
    monkeypatch.setattr(callbacks, "diagnostics", lambda run: {})  # the same run without diagnostics
    b = train("drol", "toy/four-goal", steps=40, seed=1, out=tmp_path / "b", eval_every=20, eval_episodes=2)
    for pa, pb in zip(a.algorithm.parameters(), b.algorithm.parameters()):
        assert torch.equal(pa, pb)  # DROL's diagnostics draw latents: from a forked RNG, never the training stream
    lines = [json.loads(line) for line in (a.run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [line["step"] for line in lines] == [20, 20, 40, 40]
    names = {key.split("/")[0] for line in lines for key in line if key != "step"}
    assert names == {"training", "time", "eval", "diagnostics"}
    assert lines[1]["eval/normalized_score"] == a.records[0]["normalized_score"]


def test_optional_metric_sinks_need_their_package(tmp_path, monkeypatch, capsys):
    import builtins

    real_import = builtins.__import__

    def no_sinks(name, *args, **kwargs):
        if name in ("wandb", "torch.utils.tensorboard") or (name == "torch.utils" and "tensorboard" in (args[2] or ())):
            raise ImportError(name)
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_sinks)
    for sink in ("tensorboard", "wandb"):
        assert main(["train", "--algo", "bc", "--task", "toy/four-goal", "--steps", "5", "--results", str(tmp_path),
                     "--log", sink, "--no-progress"]) == 2
        err = capsys.readouterr().err.strip()
        assert err == f"modebench train: error: --log {sink} needs the {sink} package: pip install 'modebench-rl[{sink}]'"
    assert not (tmp_path / "runs").exists() or not list((tmp_path / "runs").glob("*/checkpoint.pt"))  # refused before training
    assert main(["train", "--algo", "bc", "--task", "toy/four-goal", "--steps", "5", "--log", "mlflow"]) == 2
    assert "argument --log: invalid choice 'mlflow' (choose from tensorboard, wandb)" in capsys.readouterr().err
