"""GEM's critic ensemble size M (`num_q`) from evidence: train GEM at several M and tabulate scores.

    python -m perf.gem_ensemble_size [--tasks toy/four-goal,...] [--values 2,5,10] [--seeds 3]
        [--steps 2000] [--eval-episodes N] [--jobs 2] [--out results/gem-ensemble-size] [--set KEY=VALUE ...]
        [--table-only]

The GEM paper writes the ensemble only as {Q_i}_{i=1}^M and never gives M (no public code
either), so ModeBench's M is a choice. This script is the evidence behind it: one
`modebench train --algo gem --set num_q=M` per (task, M, seed), each a separate process with one
thread (`--jobs` at a time), writing its records to the results store like any run; then a table of
normalised scores (mean +- std over seeds) per task and M, read back from the store. Runs whose
record is already in the store are not run again, so `--table-only` (or a rerun) only reads.

M matters twice: training reads min_i Q_i (Eq. 63), and inference scores candidates with
LCB = mean_i Q_i - lambda std_i Q_i (Eq. 3). With M = 2 the population std is |Q1 - Q2| / 2, so
at lambda = 1 the LCB is exactly min(Q1, Q2) (see algorithms/gem.py).
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from modebench.benchmarks.store import iter_records

TOY_TASKS = "toy/four-goal,toy/sparse-optimum,toy/branch,toy/obstacle"
OUT = "results/gem-ensemble-size"  # its own store: other stores hold GEM runs with the same ids at M = 2


def _matches(record: dict, task: str, m: int, seed: int, steps: int, overrides: dict[str, str]) -> bool:
    config = record.get("config", {})
    return (
        record.get("method") == "gem"
        and record.get("task") == task
        and record.get("seed") == seed
        and record.get("step") == steps
        and config.get("num_q") == m
        and all(str(config.get(k)) == v for k, v in overrides.items())
    )


def _find(records: list[dict], task: str, m: int, seed: int, steps: int, overrides: dict[str, str]) -> dict | None:
    found = [r for r in records if _matches(r, task, m, seed, steps, overrides)]
    return max(found, key=lambda r: r.get("timestamp", 0.0)) if found else None


def _train(task: str, m: int, seed: int, steps: int, out: str, sets: list[str],
           eval_episodes: int | None) -> tuple[str, int, int, int]:
    cmd = [
        sys.executable, "-m", "modebench.cli", "train", "--algo", "gem", "--task", task, "--steps", str(steps),
        "--seed", str(seed), "--set", f"num_q={m}", "--results", out, "--no-progress",
    ]
    if eval_episodes:
        cmd += ["--eval-episodes", str(eval_episodes)]
    for item in sets:
        cmd += ["--set", item]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    done = subprocess.run(cmd, check=False, env=env, capture_output=True, text=True)  # a failed run is reported, the rest go on
    if done.returncode != 0:
        sys.stderr.write(f"FAILED {' '.join(cmd)}\n{done.stderr[-2000:]}\n")
    return task, m, seed, done.returncode


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", default=TOY_TASKS, help="comma-separated SUITE/TASK names")
    parser.add_argument("--values", default="2,5,10", help="ensemble sizes M to train")
    parser.add_argument("--seeds", type=int, default=3, help="seeds 0..N-1 per (task, M)")
    parser.add_argument("--steps", type=int, default=2000, help="updates per run (toy bench_steps: 2000)")
    parser.add_argument("--eval-episodes", type=int, default=None, help="evaluation episodes (default: the task's)")
    parser.add_argument("--jobs", type=int, default=2, help="runs at once, one thread each")
    parser.add_argument("--out", default=OUT, help=f"results root of this experiment (default {OUT})")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="further GEM config overrides for every run (e.g. hidden_dims=64,64)")
    parser.add_argument("--table-only", action="store_true", help="run nothing; tabulate what the store holds")
    args = parser.parse_args(argv)
    tasks = [t for t in args.tasks.split(",") if t]
    values = [int(v) for v in args.values.split(",")]
    seeds = list(range(args.seeds))
    overrides = dict(item.split("=", 1) for item in args.set)

    records = list(iter_records(args.out)) if Path(args.out).exists() else []
    todo = [(t, m, s) for t in tasks for m in values for s in seeds
            if _find(records, t, m, s, args.steps, overrides) is None]
    if todo and not args.table_only:
        print(f"training {len(todo)} runs, {args.jobs} at a time", flush=True)
        with ThreadPoolExecutor(args.jobs) as pool:
            for task, m, seed, rc in pool.map(lambda job: _train(*job, args.steps, args.out, args.set, args.eval_episodes), todo):
                print(f"  {task} M={m} seed={seed}: {'ok' if rc == 0 else f'exit {rc}'}", flush=True)
        records = list(iter_records(args.out))

    print(f"\nGEM normalised score by critic ensemble size M ({args.steps} updates, seeds {seeds}; mean +- sample std)")
    print("| task | " + " | ".join(f"M = {m}" for m in values) + " |")
    print("|---|" + "---|" * len(values))
    per_m: dict[int, list[float]] = {m: [] for m in values}
    for task in tasks:
        cells = []
        for m in values:
            scores = [r["normalized_score"] for s in seeds
                      if (r := _find(records, task, m, s, args.steps, overrides)) is not None]
            per_m[m] += scores
            if scores:
                std = statistics.stdev(scores) if len(scores) > 1 else 0.0  # sample std, as the bench tables
                cells.append(f"{statistics.mean(scores):.1f} +- {std:.1f} (n={len(scores)})")
            else:
                cells.append("-")
        print(f"| {task} | " + " | ".join(cells) + " |")
    print("| mean over runs | " + " | ".join(
        f"{statistics.mean(v):.1f}" if v else "-" for v in per_m.values()) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
