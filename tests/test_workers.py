"""No orphans, one writer per run folder (issue 19 item 4): a killed `modebench bench` takes its
workers with it, a run folder is written by one process at a time (RunStore.writing), and a
rerun completes only what is missing."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from helpers import wait_for
from modebench.benchmarks.run.spec import resolve_run
from modebench.benchmarks.run.train import evaluate_checkpoint, train
from modebench.benchmarks.store import RunBusyError, RunStore
from modebench.sweeps import reaper

from modebench.cli import main

MODEBENCH = [sys.executable, "-m", "modebench.cli"]
ONE_THREAD = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}


def _hold_lock(root: Path, run_id: str) -> subprocess.Popen:
    """Another process that holds the run's writer lock until it is killed."""
    code = ("import sys, time\nfrom modebench.benchmarks.store import RunStore\n"
            f"with RunStore({str(root)!r}, {run_id!r}).writing():\n"
            "    print('held', flush=True)\n    time.sleep(600)\n")
    holder = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True, env=ONE_THREAD)
    assert holder.stdout.readline().strip() == "held"
    return holder


def test_a_run_folder_has_one_writer_and_a_killed_writer_frees_it(tmp_path):
    spec = resolve_run("bc", "toy/four-goal", steps=40, seed=0, eval_episodes=2)
    run_dir = tmp_path / "runs" / spec.run_id
    holder = _hold_lock(tmp_path, spec.run_id)
    try:
        with pytest.raises(RunBusyError, match=f"run {spec.run_id} is being written by pid {holder.pid} on "):
            train(spec, out=tmp_path)
        assert sorted(p.name for p in run_dir.iterdir()) == ["writer.lock"]  # refused before writing anything
        started = time.monotonic()
        with pytest.raises(RunBusyError), RunStore(tmp_path, spec.run_id).writing(wait=0.5):
            pass  # a sweep trial waits a while for the lock, then fails for Tune to retry
        assert time.monotonic() - started >= 0.5
    finally:
        holder.kill()  # SIGKILL: no cleanup runs; the kernel drops the lock with the process
        holder.wait()
    result = train(spec, out=tmp_path)
    assert [r["step"] for r in result.records] == [40]
    with RunStore(tmp_path, spec.run_id).writing():  # re-entrant in one process: train and eval inside a trial
        evaluate_checkpoint(result.checkpoint, None, episodes=1, seed=5, out=tmp_path)
    holder = _hold_lock(tmp_path, spec.run_id)
    try:
        with pytest.raises(RunBusyError):  # a checkpoint's evaluation writes the run folder too
            evaluate_checkpoint(result.checkpoint, None, episodes=1, seed=6, out=tmp_path)
    finally:
        holder.kill()
        holder.wait()
    # the seed-5 evaluation is another evaluation than the run's own: a record of its own beside the
    # training record; the refused seed-6 one wrote nothing
    assert sorted(json.loads(p.read_text()).get("eval_seed", -1) for p in run_dir.glob("records/*.json")) == [-1, 5]
    # a harness that evaluates one checkpoint from several workers (claims) waits for the lock
    holder = _hold_lock(tmp_path, spec.run_id)
    release = threading.Timer(1.0, holder.kill)
    release.start()
    try:
        started = time.monotonic()
        (record,) = evaluate_checkpoint(result.checkpoint, None, episodes=1, seed=7, out=tmp_path, lock_wait=60)
        assert record["eval_seed"] == 7 and time.monotonic() - started >= 1.0
    finally:
        release.cancel()
        holder.kill()
        holder.wait()
    holder = _hold_lock(tmp_path, spec.run_id)
    release = threading.Timer(1.0, holder.kill)
    release.start()
    try:
        started = time.monotonic()
        again = train(spec, out=tmp_path, lock_wait=60)  # a finished run: read back, not retrained
        assert again.records[-1]["step"] == 40 and time.monotonic() - started >= 1.0
    finally:
        release.cancel()
        holder.kill()
        holder.wait()


def test_bench_skips_a_run_another_process_writes(tmp_path, capsys):
    spec = resolve_run("bc", "toy/four-goal", steps=30, seed=0)
    holder = _hold_lock(tmp_path, spec.run_id)
    try:
        status = main(["bench", "--suite", "toy", "--methods", "bc", "--tasks", "four-goal", "--num-seeds", "2",
                       "--steps", "30", "--jobs", "1", "--results", str(tmp_path)])
    finally:
        holder.kill()
        holder.wait()
    out = capsys.readouterr().out
    assert status == 1, out
    assert f"skipped: run {spec.run_id} is being written by pid {holder.pid}" in out
    assert "1 of 2 runs skipped" in out
    assert not list((tmp_path / "runs" / spec.run_id).glob("records/*.json"))
    assert [json.loads(p.read_text())["seed"] for p in tmp_path.glob("runs/*/records/*.json")] == [1]


def _records(root: Path) -> dict[Path, tuple[int, bytes]]:
    return {p: (p.stat().st_mtime_ns, p.read_bytes()) for p in root.glob("runs/*/records/*.json")}


def test_killed_bench_leaves_no_worker_and_a_rerun_completes_only_what_is_missing(tmp_path, capsys):
    """SIGKILL of the bench driver while its two workers train (each job: the two seeds of one
    task as one seed-batched model): the workers are gone within seconds (they die with their
    parent), no run folder's writer lock is still held, and the same command run again trains
    only the unfinished runs, leaving each run with its one record."""
    seeds, steps, tasks = 2, 200, ("four-goal", "branch", "sparse-optimum", "obstacle")
    bench = ["bench", "--suite", "toy", "--methods", "bc", "--tasks", ",".join(tasks), "--num-seeds", str(seeds),
             "--steps", str(steps), "--jobs", "2", "--results", str(tmp_path)]
    runs = {resolve_run("bc", f"toy/{task}", steps=steps, seed=s).run_id for task in tasks for s in range(seeds)}
    total = len(runs)
    driver = subprocess.Popen([*MODEBENCH, *bench], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                              env=ONE_THREAD)
    workers: list[int] = []
    try:
        def finished_and_training():  # some run has its record, another job's runs are being trained
            done = {p.parents[1].name for p in tmp_path.glob("runs/*/records/*.json")}
            started = {p.parent.name for p in tmp_path.glob("runs/*/config.json")}
            return done if done and len(started - done) >= seeds and len(done) <= total - seeds else None

        wait_for(finished_and_training, 240, "a finished run while two others train", driver)
        workers += reaper.descendants(driver.pid)
        assert len(workers) >= 2, workers  # the two workers (and multiprocessing's resource tracker)
        driver.kill()
        driver.wait()
        killed = time.monotonic()
        try:
            wait_for(lambda: not any(reaper.alive(pid) for pid in workers), 5, "the workers to die with the driver")
        except AssertionError:
            raise AssertionError(f"orphans {[p for p in workers if reaper.alive(p)]} outlived the killed bench") from None
        print(f"\nworkers gone {time.monotonic() - killed:.2f} s after the driver's SIGKILL")
    finally:  # the test leaves no process behind, even when the code under test does
        driver.kill()
        driver.wait()
        for pid in [*workers, *reaper.descendants(driver.pid)]:
            if reaper.alive(pid):
                os.kill(pid, signal.SIGKILL)
    for run_id in {p.name for p in tmp_path.glob("runs/*")}:  # nobody is writing any run folder any more
        with RunStore(tmp_path, run_id).writing():
            pass
    before = _records(tmp_path)
    finished = {p.parents[1].name for p in before}
    assert 0 < len(finished) < total

    capsys.readouterr()
    status = main(bench)  # the same command again, here
    rerun = capsys.readouterr().out
    assert status == 0, rerun
    assert "skipped" not in rerun  # no run folder was still held by a process of the killed bench
    after = _records(tmp_path)
    assert {p: after[p] for p in before} == before  # finished runs: records untouched, not re-run
    records = [json.loads(data) for _, data in after.values()]
    assert sorted(r["run_id"] for r in records) == sorted(runs)  # every run exactly one record
    assert all(r["step"] == steps for r in records)
    for run_id in runs - finished:  # the unfinished ones trained to the end once more, from the start
        lines = [json.loads(x) for x in (tmp_path / "runs" / run_id / "metrics.jsonl").read_text().splitlines()]
        assert lines[-1]["step"] == steps


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt is Linux-only (elsewhere it is a no-op returning False)")
def test_allocator_settings_apply_in_a_fresh_process():
    """keep_freed_memory's two mallopt calls are accepted by this libc (a wrong parameter number
    or value makes mallopt return 0, and the function False)."""
    out = subprocess.run([sys.executable, "-c", "from modebench.benchmarks.run.workers import keep_freed_memory as k; print(k())"],
                         capture_output=True, text=True, check=True, env=ONE_THREAD)
    assert out.stdout.strip() == "True", out
