"""Training throughput: updates/s of every registered method, and d3rlpy's IQL on the same data.

    python -m benchmarks.speed [--d3rlpy-python .venv-d3rlpy/bin/python] [--repeats 5] [--compile]

All methods train at their paper defaults (network sizes, batch size) on the same synthetic
hopper-shaped dataset (17-dim observations, 6-dim actions, 100k transitions). Each figure is
the median over `--repeats` timed blocks of `--updates` updates after a warm-up, sampling
included. d3rlpy 2.8.1 pins gymnasium 1.0.0, so it runs in its own virtual environment
(`make d3rlpy-venv`) on the same arrays (saved to an .npz), in the same invocation, with the
same thread count; the script prints the ratio of our IQL to d3rlpy's IQL. `--compile` also
measures every method with its loss pass under torch.compile (`modebench train --compile`); the
compilation itself (the first updates) is outside the timed blocks.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

OBS_DIM, ACT_DIM, SIZE = 17, 6, 100_000

D3RLPY_SCRIPT = r"""
import json, statistics, sys, time
import numpy as np, torch, d3rlpy
torch.set_num_threads(int(sys.argv[2]))
data = np.load(sys.argv[1])
dataset = d3rlpy.dataset.MDPDataset(data["observations"], data["actions"], data["rewards"], data["terminals"], timeouts=data["timeouts"])
iql = d3rlpy.algos.IQLConfig(batch_size=256, actor_learning_rate=3e-4, critic_learning_rate=3e-4,
                             expectile=0.7, weight_temp=3.0, max_weight=100.0).create(device="cpu")
iql.build_with_dataset(dataset)
updates, repeats = int(sys.argv[3]), int(sys.argv[4])
for _ in range(20):
    iql.update(dataset.sample_transition_batch(256))
rates = []
for _ in range(repeats):
    start = time.perf_counter()
    for _ in range(updates):
        iql.update(dataset.sample_transition_batch(256))
    rates.append(updates / (time.perf_counter() - start))
print(json.dumps({"median": statistics.median(rates), "all": rates}))
"""


def synthetic_dataset(seed: int = 0):
    from benchmarks.data import TransitionDataset

    rng = np.random.default_rng(seed)
    episode_len = 1000
    obs = rng.normal(size=(SIZE + SIZE // episode_len, OBS_DIM)).astype(np.float32)
    episodes = []
    for i in range(SIZE // episode_len):
        chunk = obs[i * (episode_len + 1) : (i + 1) * (episode_len + 1)]
        episodes.append(dict(
            observations=chunk, actions=rng.uniform(-1, 1, (episode_len, ACT_DIM)).astype(np.float32),
            rewards=rng.normal(size=episode_len).astype(np.float32),
            terminations=np.zeros(episode_len, bool), truncations=np.eye(episode_len)[-1].astype(bool),
        ))
    return TransitionDataset.from_episodes(episodes, "synthetic-hopper-shaped").validate()


def measure(method: str, dataset, updates: int, repeats: int, device: torch.device, compiled: bool = False) -> float:
    from algorithms.base import EnvSpec
    from algorithms.registry import get_method
    from benchmarks.data import DataConfig, DeviceReplay, Normalizer

    entry = get_method(method)
    cls = entry.load()
    config = cls.config_class(**entry.config) if entry.config else cls.config_class()
    replay = DeviceReplay(dataset, DataConfig(), Normalizer.fit(dataset.observations), device, seed=0)
    algorithm = cls(config, EnvSpec(OBS_DIM, ACT_DIM, 1000, 1_000_000), device)
    if compiled:
        algorithm.compile_losses()
    for step in range(max(20, updates // 10)):  # warm-up, and past any pretraining switch at step 0
        algorithm.update(replay.sample(config.batch_size), step)
    rates = []
    step = 10_000_000  # well past every method's pretraining phase
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        for _ in range(updates):
            metrics = algorithm.update(replay.sample(config.batch_size), step)
            step += 1
        float(next(iter(metrics.values())))  # wait for queued work before stopping the clock
        rates.append(updates / (time.perf_counter() - start))
    return statistics.median(rates)


def run_d3rlpy(python: str, dataset, threads: int, updates: int, repeats: int) -> float | None:
    if not Path(python).exists():
        print(f"d3rlpy interpreter {python} not found: run `make d3rlpy-venv` for the comparison", file=sys.stderr)
        return None
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "data.npz"
        np.savez(path, observations=dataset.observations, actions=dataset.actions, rewards=dataset.rewards,
                 terminals=dataset.terminals.astype(np.float32), timeouts=dataset.timeouts.astype(np.float32))
        out = subprocess.run([python, "-c", D3RLPY_SCRIPT, str(path), str(threads), str(updates), str(repeats)],
                             capture_output=True, text=True)
    if out.returncode != 0:
        print(f"d3rlpy run failed:\n{out.stderr[-2000:]}", file=sys.stderr)
        return None
    return json.loads(out.stdout.strip().splitlines()[-1])["median"]


def main(argv: list[str] | None = None) -> int:
    from algorithms.registry import METHODS

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--methods", default=None, help="comma-separated (default: every base method)")
    parser.add_argument("--updates", type=int, default=200, help="updates per timed block")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--d3rlpy-python", default=".venv-d3rlpy/bin/python")
    parser.add_argument("--compile", action="store_true",
                        help="also measure each method with its loss pass compiled (train --compile)")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    methods = args.methods.split(",") if args.methods else [n for n, e in METHODS.items() if not e.config and not e.knobs]
    dataset = synthetic_dataset()
    device = torch.device(args.device)
    print(f"training updates/s, median of {args.repeats} x {args.updates} updates, paper-default sizes, "
          f"obs {OBS_DIM} / act {ACT_DIM}, {args.threads} threads, {device}")
    results = {}
    print(f"  {'method':24s} {'eager':>9s}" + (f" {'compiled':>9s}" if args.compile else ""))
    for method in methods:
        results[method] = measure(method, dataset, args.updates, args.repeats, device)
        line = f"  {method:24s} {results[method]:9.1f}"
        if args.compile:
            results[f"{method} compiled"] = measure(method, dataset, args.updates, args.repeats, device, compiled=True)
            line += f" {results[f'{method} compiled']:9.1f}"
        print(line, flush=True)
    reference = run_d3rlpy(args.d3rlpy_python, dataset, args.threads, args.updates, args.repeats)
    if reference is not None:
        print(f"  {'d3rlpy 2.8.1 iql':24s} {reference:9.1f}")
        for name in ("iql", "iql compiled"):
            if name in results:
                print(f"ratio {name} / d3rlpy iql: {results[name] / reference:.2f}x (target >= 3x)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
