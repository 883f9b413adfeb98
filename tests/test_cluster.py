"""A sweep beyond one machine (issue 19 item 5): a Ray cluster of a head and two worker nodes,
started on this machine with Ray's own test utility (`ray.cluster_utils.Cluster`); the worker
node that runs a trial is removed mid-training. The sweep still finishes, the lost trial restarts
on the other node from the store's last checkpoint, and every record exists exactly once.

Slow tier (a three-node cluster and a two-trial sweep, ~1.5 min on 2 busy cores):
    .venv/bin/python -m pytest -q -m slow tests/test_cluster.py
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import pytest
from helpers import wait_for

from sweeps import reaper

pytestmark = pytest.mark.slow

CHECKPOINT_EVERY = 50
GRID = f"""
name: node_loss
description: two ISEP-FM trials on toy/four-goal, each ending with 2 records (guidance w = 1, 3)
tasks: [toy/four-goal]
seeds: [0, 1]
steps: 300
eval: {{episodes: 10}}
checkpoint_every: {CHECKPOINT_EVERY}
resources: {{cpu: 1, gpu: 0}}
max_failures: 2
config: {{batch_size: 64, flow_hidden_dims: [32, 32], critic_hidden_dims: [32, 32], token_dim: 8, sample_steps: 2}}
inference:
  w: [1.0, 3.0]
methods: [isep-fm]
"""


def _attempts(root: Path) -> dict[str, list[dict]]:
    return {p.parent.name: [json.loads(line) for line in p.read_text().splitlines() if line.strip()]
            for p in root.glob("runs/*/sweep_attempts.jsonl")}


def test_a_sweep_survives_the_loss_of_a_worker_node(tmp_path, monkeypatch):
    from ray.cluster_utils import Cluster

    from benchmarks.run.checkpoints import load_checkpoint
    from benchmarks.store import iter_records

    tag = uuid.uuid4().hex
    monkeypatch.setenv("MODEBENCH_TEST_TAG", tag)  # every process of the cluster carries it: none may outlive the test
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    monkeypatch.setenv("RAY_USAGE_STATS_ENABLED", "0")
    grid = tmp_path / "node_loss.yaml"
    grid.write_text(GRID)
    root = tmp_path / "results"
    # the cluster's own temp folder (short: Ray's socket paths must fit 107 bytes): its address
    # file never points another Ray user of this machine at the test's cluster
    ray_tmp = tempfile.mkdtemp(prefix="mbray", dir="/tmp")
    cluster = driver = None
    t0 = time.monotonic()
    try:
        cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 0, "include_dashboard": False, "temp_dir": ray_tmp})
        nodes = [cluster.add_node(num_cpus=1, temp_dir=ray_tmp) for _ in range(2)]  # one trial at a time on each
        t_cluster = time.monotonic()
        driver = subprocess.Popen(
            [sys.executable, "-m", "modebench.cli", "sweep", str(grid), "--address", cluster.address, "--out", str(root),
             "--quiet"],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)

        def trial_on_a_worker_node():  # a trial training past its first checkpoint, and the node it runs on
            for run_id, events in _attempts(root).items():
                checkpoint = root / "runs" / run_id / "checkpoint.pt"
                if events[-1]["event"] != "start" or not checkpoint.exists():
                    continue
                for node in nodes:
                    if events[-1]["pid"] in reaper.descendants(node.all_processes["raylet"][0].process.pid):
                        return run_id, events[-1]["pid"], node
            return None

        victim, pid, node = wait_for(trial_on_a_worker_node, 300, "a trial with a checkpoint on a worker node", driver)
        cluster.remove_node(node)  # the node's raylet, object store, agents and workers
        t_removed = time.monotonic()
        assert not reaper.alive(pid), "the lost node's trial process outlived its node"
        lost_at = int(load_checkpoint(root / "runs" / victim / "checkpoint.pt")["step"])
        output, _ = driver.communicate(timeout=600)
        t_end = time.monotonic()
        assert driver.returncode == 0, output
    finally:
        if driver is not None and driver.poll() is None:
            driver.kill()
            driver.wait()
        if cluster is not None:
            cluster.shutdown()
        reaper.kill_marked(f"MODEBENCH_TEST_TAG={tag}")
        shutil.rmtree(ray_tmp, ignore_errors=True)
    print(f"\ntimings: cluster {t_cluster - t0:.0f} s, node removed at {t_removed - t_cluster:.0f} s, "
          f"sweep done {t_end - t_removed:.0f} s later")

    # every record exactly once: 2 seeds x 2 guidance settings, at the final step
    records = list(iter_records(root))
    keys = [(r["run_id"], r["step"], json.dumps(r["knobs"], sort_keys=True)) for r in records]
    assert len(records) == 4 and len(set(keys)) == 4
    assert sorted((r["seed"], r["knobs"]["w"], r["step"]) for r in records) == [
        (0, 1.0, 300), (0, 3.0, 300), (1, 1.0, 300), (1, 3.0, 300)]
    # the lost trial started again in another process, from the store's last checkpoint before the
    # loss (losing at most checkpoint_every updates); the other trial ran once, untouched
    attempts = _attempts(root)
    starts = [e for e in attempts[victim] if e["event"] == "start"]
    assert len(starts) == 2 and starts[1]["pid"] != pid, attempts[victim]
    assert starts[1]["start_step"] == lost_at >= CHECKPOINT_EVERY, (lost_at, attempts[victim])
    assert attempts[victim][-1]["event"] == "finished"
    for run_id, events in attempts.items():
        if run_id != victim:
            assert [e["event"] for e in events] == ["start", "finished"], events
    summary = json.loads((root / "sweeps/node_loss/summary.json").read_text())
    assert summary["statuses"] == {"finished": 2} and summary["errors"] == {}, summary
    assert not reaper.processes_with(f"MODEBENCH_TEST_TAG={tag}"), "a process of the test's cluster outlived it"
