"""A sweep beyond one machine (issue 19 item 5): a Ray cluster of a head and two worker nodes,
started on this machine with Ray's own test utility (`ray.cluster_utils.Cluster`); the worker
node that runs a trial is removed mid-training. A trial is one run's seeds trained together, so
the node takes both seeds of its trial with it. The sweep still finishes, the lost trial restarts
on the other node with each seed from its own last checkpoint in the store, and every record
exists exactly once.

Slow tier (a three-node cluster and a sweep of two trials of two seeds each, a few minutes on 2
busy cores):
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
from modebench.sweeps import reaper

pytestmark = pytest.mark.slow

CHECKPOINT_EVERY = 50
GRID = f"""
name: node_loss
description: two ISEP-FM trials (token_dim 4, 8) of two seeds on toy/four-goal; each run ends with 2 records (w = 1, 3)
tasks: [toy/four-goal]
seeds: [0, 1]
steps: 300
eval: {{episodes: 10}}
checkpoint_every: {CHECKPOINT_EVERY}
resources: {{cpu: 1, gpu: 0}}
max_failures: 2
config: {{batch_size: 64, flow_hidden_dims: [32, 32], critic_hidden_dims: [32, 32], sample_steps: 2}}
train:
  token_dim: [4, 8]
inference:
  w: [1.0, 3.0]
methods: [isep-fm]
"""


def _attempts(root: Path) -> dict[str, list[dict]]:
    return {p.parent.name: [json.loads(line) for line in p.read_text().splitlines() if line.strip()]
            for p in root.glob("runs/*/sweep_attempts.jsonl")}


def test_a_sweep_survives_the_loss_of_a_worker_node(tmp_path, monkeypatch):
    from modebench.benchmarks.run.checkpoints import load_checkpoint
    from modebench.benchmarks.store import iter_records
    from ray.cluster_utils import Cluster

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
            [sys.executable, "-m", "modebench.cli", "sweep", str(grid), "--address", cluster.address, "--results", str(root),
             "--quiet"],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)

        def trial_on_a_worker_node():  # a trial (both seeds) training past its first checkpoint, and its node
            training: dict[int, list[str]] = {}
            for run_id, events in _attempts(root).items():
                if events[-1]["event"] == "start":
                    training.setdefault(events[-1]["pid"], []).append(run_id)
            for pid, run_ids in training.items():
                if len(run_ids) != 2 or not all((root / "runs" / r / "checkpoint.pt").exists() for r in run_ids):
                    continue
                for node in nodes:
                    if pid in reaper.descendants(node.all_processes["raylet"][0].process.pid):
                        return run_ids, pid, node
            return None

        victims, pid, node = wait_for(trial_on_a_worker_node, 300, "a trial with checkpoints on a worker node", driver)
        cluster.remove_node(node)  # the node's raylet, object store, agents and workers
        t_removed = time.monotonic()
        assert not reaper.alive(pid), "the lost node's trial process outlived its node"
        lost_at = {r: int(load_checkpoint(root / "runs" / r / "checkpoint.pt")["step"]) for r in victims}
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

    # every record exactly once: 2 trials x 2 seeds x 2 guidance settings, at the final step
    records = list(iter_records(root))
    keys = [(r["run_id"], r["step"], json.dumps(r["knobs"], sort_keys=True)) for r in records]
    assert len(records) == 8 and len(set(keys)) == 8
    assert sorted((r["config"]["token_dim"], r["seed"], r["knobs"]["w"], r["step"]) for r in records) == [
        (d, s, w, 300) for d in (4, 8) for s in (0, 1) for w in (1.0, 3.0)]
    # the lost trial started again in another process, each seed from its own last checkpoint in
    # the store before the loss (losing at most checkpoint_every updates); the other trial's seeds
    # ran once, untouched
    attempts = _attempts(root)
    for run_id in victims:
        starts = [e for e in attempts[run_id] if e["event"] == "start"]
        assert len(starts) == 2 and starts[1]["pid"] != pid, attempts[run_id]
        assert starts[1]["start_step"] == lost_at[run_id] >= CHECKPOINT_EVERY, (lost_at, attempts[run_id])
        assert attempts[run_id][-1]["event"] == "finished"
    assert len({e["pid"] for r in victims for e in attempts[r] if e["event"] == "start"}) == 2  # both seeds in each process
    others = [r for r in attempts if r not in victims]
    assert len(others) == 2
    for run_id in others:
        assert [e["event"] for e in attempts[run_id]] == ["start", "finished"], attempts[run_id]
    summary = json.loads((root / "sweeps/node_loss/summary.json").read_text())
    assert summary["statuses"] == {"finished": 4} and summary["errors"] == {}, summary
    assert summary["trials"] == 2 and summary["runs"] == 4, summary
    assert not reaper.processes_with(f"MODEBENCH_TEST_TAG={tag}"), "a process of the test's cluster outlived it"
