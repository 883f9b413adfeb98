"""The results store (benchmarks/store.py): record keys that resumes depend on, the schema's
writer checks, reading v1 and refusing newer records, atomic writes, its import boundary, and
profile records from the core's profile harness (benchmarks/run/profile.py)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from modebench.benchmarks import store
from modebench.benchmarks.store import (
    SCHEMA_VERSION,
    RunStore,
    StoreError,
    atomic_write_bytes,
    iter_records,
    read_record,
    record_key,
    write_profile,
)

REPO = Path(__file__).resolve().parents[1]


def _evaluation(**extra) -> dict:
    return {"method": "gem", "base_method": "gem", "suite": "toy", "task": "toy/four-goal", "dataset": "toy/four-goal",
            "seed": 0, "step": 100, "total_steps": 100, "source": "train", "knobs": {"N": 64}, "config": {"batch_size": 256},
            "normalized_score": 42.0, **extra}


def test_record_keys_are_the_ones_existing_stores_hold():
    """Resumes find records by file name: the key format and hash must not change."""
    from modebench.algorithms.config import (
        config_hash,  # the hash records were named with before the store had its own
    )

    knobs = {"N": 1024, "lcb_lambda": 1.0, "anchor": "mode", "hidden": (64, 64)}
    payload = {"run_id": "gem__toy-four-goal__seed0__abc", "step": 2000, "knobs": knobs}
    assert record_key("gem__toy-four-goal__seed0__abc", 2000, knobs) == f"step000002000-{config_hash(payload)}"
    assert record_key("r", 5, {}) == "step000000005-e7cd3da1a72c"  # pinned: a stored key, whatever code hashes it


def test_write_record_stamps_the_schema_and_checks_the_fields(tmp_path):
    run = RunStore(tmp_path, "gem__run")
    path = run.write_record(_evaluation(protocol="published", suite_default=True))
    stored = json.loads(path.read_text())
    assert (stored["schema_version"], stored["kind"], stored["run_id"]) == (SCHEMA_VERSION, "evaluation", "gem__run")
    assert path.name == f"{record_key('gem__run', 100, {'N': 64})}.json" and run.has_record(100, {"N": 64})
    assert not run.has_record(100, {"N": 1})
    with pytest.raises(StoreError, match=r"lacks required field\(s\) \['normalized_score'\]"):
        run.write_record({k: v for k, v in _evaluation().items() if k != "normalized_score"})
    with pytest.raises(StoreError, match="protocol 'mine' is not one of published, controlled"):
        run.write_record(_evaluation(protocol="mine"))
    with pytest.raises(StoreError, match="suite_default must be true or false"):
        run.write_record(_evaluation(suite_default="yes"))
    assert len(list(iter_records(tmp_path))) == 1  # refused records leave nothing behind
    assert not list(run.records_dir.glob(".*.tmp"))


def test_re_evaluating_at_the_runs_own_knobs_keeps_what_only_training_measured(tmp_path):
    run = RunStore(tmp_path, "gem__run")
    trained = _evaluation(updates_per_second=150.0, training_metrics={"training/loss": 0.5},
                          **{"diagnostics/behavior_gap": 11.6})
    run.write_record(trained)
    path = run.write_record(_evaluation(source="eval", normalized_score=40.0, eval_seed=7))
    stored = json.loads(path.read_text())
    assert (stored["source"], stored["normalized_score"], stored["eval_seed"]) == ("eval", 40.0, 7)
    assert stored["updates_per_second"] == 150.0 and stored["training_metrics"] == {"training/loss": 0.5}
    assert stored["diagnostics/behavior_gap"] == 11.6
    # a training record written later (a resumed run) replaces the evaluation whole
    stored = json.loads(run.write_record(_evaluation()).read_text())
    assert "eval_seed" not in stored and "updates_per_second" not in stored


def test_a_run_held_under_two_nested_roots_is_read_once(tmp_path):
    for root in (tmp_path, tmp_path / "claims"):
        RunStore(root, "gem__run").write_record(_evaluation())
    RunStore(tmp_path, "gem__other").write_record(_evaluation())
    assert sorted(r["run_id"] for r in iter_records(tmp_path)) == ["gem__other", "gem__run"]


def test_v1_records_are_read_with_what_their_identity_implies_and_the_rest_marked_missing(tmp_path):
    v1 = {k: v for k, v in _evaluation().items()} | {"schema_version": 1, "run_id": "old"}
    path = tmp_path / "runs" / "old" / "records" / "step000000100-x.json"
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps(v1))
    record = read_record(path)
    assert record["kind"] == "evaluation" and record["protocol"] == store.LEGACY_PROTOCOL == "controlled"
    assert record["suite_default"] is None and record["task_order"] is None
    assert record["missing_fields"] == ["suite_default", "task_order", "eval_episodes", "provenance"]
    assert record["status"] == "ok"  # derived from its finite score, not guessed
    # a record that carries the fields is read as written, nothing marked
    fresh = read_record(RunStore(tmp_path, "new").write_record(_evaluation(
        protocol="published", suite_default=False, task_order=0, eval_episodes=10, provenance={"command": "x"})))
    assert fresh["protocol"] == "published" and fresh["suite_default"] is False and "missing_fields" not in fresh
    # v2 records lack eval_episodes: the length of their episodes list is the count
    v2 = _evaluation(schema_version=2, run_id="v2", episodes=[{"return": 1.0}] * 7)
    path.write_text(json.dumps(v2))
    assert read_record(path)["eval_episodes"] == 7 and "eval_episodes" not in read_record(path)["missing_fields"]


def test_one_reader_names_and_counts_every_damaged_record_and_keeps_non_finite_scores(tmp_path):
    run = RunStore(tmp_path, "gem__run")
    run.write_record(_evaluation())
    nan_path = run.write_record(_evaluation(step=50, normalized_score=float("nan")))
    assert json.loads(nan_path.read_text().replace("NaN", "null"))["status"] == "non_finite"
    records = run.records_dir
    bad = {
        "truncated.json": (b'{"method": "gem", "seed', "file"),
        "empty-object.json": (b"{}", "method"),
        "latin1.json": (b'{"method": "g\xe9m"}', "file"),
        "list.json": (b"[1, 2]", "file"),
        "string-score.json": (json.dumps(_evaluation(normalized_score="42")).encode(), "normalized_score"),
        "float-seed.json": (json.dumps(_evaluation(seed=0.5)).encode(), "seed"),
        "nan-said-ok.json": (json.dumps(_evaluation(normalized_score=float("inf"), status="ok")).encode(), "normalized_score"),
    }
    for name, (content, _) in bad.items():
        (records / name).write_bytes(content)
    (records / "folder.json").mkdir()
    scan = store.scan_store(tmp_path)
    assert sorted(r["step"] for _, r in scan.records) == [50, 100]
    assert [r["status"] for _, r in scan.records] == ["non_finite", "ok"]  # a NaN score is kept, marked failed
    found = {d.path.name: d.field for d in scan.damaged}
    assert found == {**{name: field for name, (_, field) in bad.items()}, "folder.json": "file"}
    assert all("\n" not in d.line() and str(d.path) in d.line() for d in scan.damaged)
    assert scan.summary().startswith("8 damaged records (left out): ")
    damaged: list = []
    assert len(list(store.iter_stored(tmp_path, damaged=damaged))) == 2 and len(damaged) == 8
    with pytest.raises(store.DamagedRecordError, match=r"damaged record .*\.json: "):
        list(iter_records(tmp_path))  # a reader that keeps no list is told, not silently short
    # the run's own lookups treat a damaged record as not written: it is evaluated again
    (records / f"{record_key('gem__run', 100, {'N': 64})}.json").write_bytes(b'{"trunc')
    assert not run.has_record(100, {"N": 64}) and run.read_record(100, {"N": 64}) is None


def test_written_files_follow_the_umask(tmp_path):
    previous = os.umask(0o002)
    try:
        atomic_write_bytes(tmp_path / "shared.json", b"{}")
        os.umask(0o077)
        atomic_write_bytes(tmp_path / "private.json", b"{}")
    finally:
        os.umask(previous)
    assert (tmp_path / "shared.json").stat().st_mode & 0o777 == 0o664
    assert (tmp_path / "private.json").stat().st_mode & 0o777 == 0o600


def test_the_writer_lock_is_gone_when_a_run_ends_and_stale_temporaries_with_it(tmp_path):
    run = RunStore(tmp_path, "gem__run")
    run.records_dir.mkdir(parents=True)
    stale = [run.path / ".config.json.x1.tmp", run.records_dir / ".step1.json.x2.tmp"]
    for path in stale:
        path.write_bytes(b"half")
    with run.writing():
        assert run.lock_path.exists() and not any(path.exists() for path in stale)
        with run.writing():  # re-entrant
            pass
        assert run.lock_path.exists()
    assert not run.lock_path.exists()
    with run.writing():  # and taken again
        assert "pid" in run.lock_path.read_text()


def test_resuming_rewinds_metrics_to_the_checkpoint(tmp_path):
    run = RunStore(tmp_path, "gem__run")
    for step in (100, 200, 300):
        run.append_metrics({"step": step, "training/loss": 1.0})
    with open(run.metrics_path, "a") as fh:
        fh.write('{"step": 40')  # torn last line of a killed writer
    run.rewind_metrics(200)
    assert [json.loads(line)["step"] for line in run.metrics_path.read_text().splitlines()] == [100, 200]


def test_run_ids_never_name_a_folder_outside_the_root(tmp_path):
    for bad in ("../escape", "a/b", ".hidden", "", None):
        with pytest.raises(StoreError, match="is not a run folder name"):
            RunStore(tmp_path, bad)
    assert RunStore.of_checkpoint(tmp_path, {"run_id": "gem__x"}).path == tmp_path / "runs" / "gem__x"


def test_provenance_names_versions_commit_device_and_command():
    prov = store.provenance("cpu-name")
    assert set(prov) == {"modebench", "git_commit", "git_dirty", "python", "torch", "numpy", "gymnasium", "mujoco",
                         "minari", "ogbench", "device_name", "command"}
    assert prov["device_name"] == "cpu-name" and prov["torch"] and prov["python"] and prov["command"]


def test_newer_or_damaged_records_are_one_line_errors(tmp_path):
    path = tmp_path / "runs" / "x" / "records" / "a.json"
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps(_evaluation(schema_version=SCHEMA_VERSION + 1)))
    with pytest.raises(StoreError, match=f"schema_version {SCHEMA_VERSION + 1}, newer than this reader's {SCHEMA_VERSION}"):
        list(iter_records(tmp_path))
    path.write_text('{"method": ')
    with pytest.raises(StoreError, match="damaged record .*a.json"):
        list(iter_records(tmp_path))
    with pytest.raises(StoreError, match="unknown record kind 'runs'"):
        list(iter_records(tmp_path, "runs"))
    assert list(iter_records(tmp_path / "absent")) == []


def test_atomic_write_keeps_the_old_file_when_a_write_fails(tmp_path, monkeypatch):
    target = tmp_path / "r.json"
    atomic_write_bytes(target, b"old")

    def crash(fd):
        raise OSError("disk full")

    monkeypatch.setattr(os, "fsync", crash)
    with pytest.raises(OSError, match="disk full"):
        atomic_write_bytes(target, b"new and half written")
    assert target.read_bytes() == b"old" and [p.name for p in tmp_path.iterdir()] == ["r.json"]


def test_the_store_imports_nothing_of_the_project_and_no_torch():
    code = ("import sys, modebench.benchmarks.store; print(sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'pandas') "
            "or (m.startswith('modebench') and m not in ('modebench', 'modebench.benchmarks', 'modebench.benchmarks.store'))))")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120, check=True)
    assert out.stdout.strip() == "[]"


def test_the_schema_documents_every_field_the_writers_require():
    assert set(store.REQUIRED_EVALUATION) <= set(store.EVALUATION_FIELDS)
    assert set(store.REQUIRED_PROFILE) <= set(store.PROFILE_FIELDS)
    assert set(store.UPGRADE_MARKED) <= set(store.EVALUATION_FIELDS)


# ---------------------------------------------------------------------------- profile records


def test_profile_harness_times_every_registered_base_method_into_profile_records(tmp_path):
    import torch
    from modebench.benchmarks.run.profile import (
        ProfileConfig,
        base_method_names,
        run_profile,
    )

    cfg = ProfileConfig(batch_sizes=(2,), warmup=1, repeats=2, n_values=(1, 8), t_values=(2, 4))
    logs: list[str] = []
    threads = torch.get_num_threads()
    written, failures = run_profile(tmp_path, cfg=cfg, devices=["cpu"], log=logs.append)
    assert torch.get_num_threads() == threads  # the caller's thread count is restored
    assert failures == [], failures
    records = list(iter_records(tmp_path, "profile"))
    assert len(records) == len(written) and {r["method"] for r in records} == set(base_method_names())
    assert all(r["kind"] == "profile" and r["schema_version"] == SCHEMA_VERSION for r in records)
    assert all(r["latency_ms_median"] > 0 and r["params_m"] > 0 and r["peak_alloc_mb"] > 0 for r in records)
    settings = {m: sorted(r["setting"] for r in records if r["method"] == m) for m in base_method_names()}
    assert settings["isep-fm"] == ["T2", "T4"] and settings["bc"] == ["default"]  # iterative sampler: the T sweep
    assert settings["gem"] == ["N1", "N8"]  # candidate method: the N sweep
    assert [r["knobs"]["N"] for r in sorted((r for r in records if r["method"] == "gem"), key=lambda r: r["setting"])] == [1, 8]
    assert list(iter_records(tmp_path, "evaluation")) == []  # profile records are not evaluations
    # measuring again replaces each setting's record (one per method x setting x device x batch)
    run_profile(tmp_path, methods=["bc"], cfg=cfg, devices=["cpu"], log=logs.append)
    assert len(list(iter_records(tmp_path, "profile"))) == len(records)


def test_profile_knob_option_and_cli_errors(tmp_path, capsys):
    from modebench.cli import main

    args = ["profile", "--results", str(tmp_path), "--methods", "isep-fm", "--batch-sizes", "1", "--repeats", "2",
            "--warmup", "0", "--devices", "cpu"]
    assert main(args + ["--knob", "w=1"]) == 0
    records = list(iter_records(tmp_path, "profile"))
    assert {r["setting"] for r in records} == {f"T{t},w=1" for t in (10, 20, 50, 100)}
    assert all(r["knobs"]["w"] == 1.0 for r in records)
    capsys.readouterr()
    assert main(args + ["--knob", "lambda_typo=3"]) == 2
    assert "--knob lambda_typo: no profiled method has such a knob" in capsys.readouterr().err
    assert main(["profile", "--methods", "nope", "--results", str(tmp_path)]) == 2
    assert "unknown method 'nope'" in capsys.readouterr().err
    assert main(["profile", "--batch-sizes", "0", "--results", str(tmp_path)]) == 2
    assert "--batch-sizes '0'" in capsys.readouterr().err


def test_write_profile_refuses_an_incomplete_record(tmp_path):
    with pytest.raises(StoreError, match="profile record of gem lacks required field"):
        write_profile(tmp_path, {"method": "gem", "setting": "N1"})
