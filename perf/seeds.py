"""Seed-batched training throughput: single-seed updates/s against S seeds trained as one model.

    python -m perf.seeds [--methods bc,iql,...] [--sizes toy,paper] [--seeds 1,3,8]
                         [--repeats 5] [--updates N] [--device auto] [--threads 1] [--out results/perf]

For every base method, at two sizes:
- toy: the toy suite's resolved run (`resolve_run(method, "toy/four-goal")`: its config, data
  preprocessing, horizon and length) on the toy four-goal data;
- paper: the method's class defaults (network sizes, batch size) on perf/speed.py's synthetic
  hopper-shaped dataset (17-dim observations, 6-dim actions, 100k transitions), as `perf.speed`.

Each figure times `model.update(replay.sample(batch_size), step)`, sampling included, as the
training loop runs it (benchmarks/run/train.py), for
- the plain single-seed model (seed 0, built as `train` builds it): updates/s;
- the seed-batched model of S seeds (seeds 0..S-1, each built under its own seed as
  `train_seeds` builds them, stacked by `algorithms.seeds.stack_algorithms`, minibatches from
  `SeedReplays`): seed-updates/s = S x its updates/s.
The timed updates are those a run spends most of its time in: they start at the end of the last
phase the method declares that ends inside the run (`Algorithm.phases`: LOM's MDN fit, 500 of
2000 toy updates and 200k of 1M at paper sizes; GEM's behaviour-GMM fit at paper sizes, frozen
after 100k updates; on the toy suite GEM fits its GMM in every update), with the warm-up
crossing the switch (half of it in the phase, half after), so every timed block is past it.

Blocks alternate in one run: single, S=1, S=3, S=8, single, S=1, ..., a closing single block;
each block is `--updates` updates (default 200 at toy sizes, 40 at paper sizes, where one S=8
update of drol, fql or lom takes seconds on one thread) after a warm-up of every model
(max(20, updates / 10) updates). Each figure is the median over
the `--repeats` blocks (the single-seed rate over its repeats + 1 blocks). The ratio of S in
one repeat is S's seed-updates/s over the geometric mean of the single-seed blocks right before
and right after that repeat's batched blocks, so a slow spell of a shared machine moves both
sides; the table gives the median ratio over the repeats.

Targets (issue 19, item 2; 2 CPU cores, one torch thread, two workers): S=3 >= 2x the single-seed
rate at toy sizes for every method; at paper sizes S=3 >= 1.3x for the methods bound by operator
overhead (bc, iql, gem, isep, lom) and >= 1x (no slower than three single-seed trainings) for
those bound by arithmetic (drol's K candidates, fql's and isep-fm's flow steps through 4 x 512
nets). On CUDA S=32 is measured too, and the check is that one S=32 update takes at most 3x the
time of one S=1 update (this path has not been run on a GPU yet).
"""

from __future__ import annotations

import argparse
import csv
import itertools
import json
import math
import os
import platform
import statistics
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from modebench.benchmarks.run.workers import keep_freed_memory

TOY_TASK = "toy/four-goal"
BASE_METHODS = ("bc", "iql", "gem", "isep", "isep-fm", "lom", "drol", "fql")
SIZES = ("toy", "paper")
# the S = 3 ratio each size's target asks for, by base method
OVERHEAD_BOUND = ("bc", "iql", "gem", "isep", "lom")
ARITHMETIC_BOUND = ("drol", "fql", "isep-fm")
TOY_TARGET = 2.0
PAPER_TARGETS = {**{m: 1.3 for m in OVERHEAD_BOUND}, **{m: 1.0 for m in ARITHMETIC_BOUND}}
GPU_SEEDS, GPU_TIME_TARGET = 32, 3.0
UPDATES = {"toy": 200, "paper": 40}  # default updates per timed block


def target_for(method: str, size: str) -> float | None:
    """The S = 3 ratio the issue asks of `method` at `size` (None: no target, e.g. an unknown method)."""
    from modebench.algorithms.registry import base_method

    base = base_method(method)
    if size == "toy":
        return TOY_TARGET if base in BASE_METHODS else None
    return PAPER_TARGETS.get(base)


@dataclass
class Case:
    """One method at one size: how to build it for a seed, and from which step to time it."""

    method: str
    size: str
    cls: type
    config: Any
    dataset: Any
    data: Any  # DataConfig
    normalizer: Any
    env: Any  # EnvSpec
    device: torch.device
    start_step: int  # the first timed-regime step: past every phase that ends inside the run

    @property
    def batch_size(self) -> int:
        return self.config.batch_size

    def build(self, seed: int):
        """(algorithm, replay) for `seed`, as benchmarks/run/train.py's prepare builds them; the
        algorithm's generator taken right away (as train_seeds does), so stacked seeds each keep
        their own stream."""
        from modebench.benchmarks.data.replay import DeviceReplay
        from modebench.benchmarks.run.train import seed_everything

        seed_everything(seed)
        replay = DeviceReplay(self.dataset, self.data, self.normalizer, self.device, seed)
        algorithm = self.cls(self.config, self.env, self.device)
        algorithm.rng  # noqa: B018
        return algorithm, replay


def _start_step(cls, config, total_steps: int) -> int:
    ends = [phase.steps for phase in cls.phases(config) if phase.steps < total_steps]
    return max(ends, default=0)


def toy_case(method: str, device: torch.device, overrides: dict | None = None, dataset=None) -> Case:
    """The toy suite's run of `method` on toy/four-goal (`overrides`: config fields to change, for tests)."""
    from modebench.algorithms.base import EnvSpec
    from modebench.benchmarks.data.dataset import Normalizer
    from modebench.benchmarks.run.spec import resolve_run

    spec = resolve_run(method, TOY_TASK, seed=0, config=overrides, device=str(device))
    dataset = dataset if dataset is not None else spec.task.load_dataset()
    return Case(method, "toy", spec.algorithm_class, spec.config, dataset, spec.data,
                Normalizer.fit(dataset.observations, spec.data.normalize_obs),
                EnvSpec(dataset.obs_dim, dataset.act_dim, spec.task.horizon, spec.steps), device,
                _start_step(spec.algorithm_class, spec.config, spec.steps))


def paper_case(method: str, device: torch.device, dataset, overrides: dict | None = None) -> Case:
    """`method` at its class defaults on `dataset` (perf.speed.synthetic_dataset()), as perf/speed.py builds it."""
    from modebench.algorithms.base import EnvSpec
    from modebench.algorithms.registry import get_method
    from modebench.benchmarks.data.dataset import DataConfig, Normalizer

    entry = get_method(method)
    cls = entry.load()
    config = cls.config_class(**{**entry.config, **(overrides or {})})
    env = EnvSpec(dataset.obs_dim, dataset.act_dim, 1000, 1_000_000)
    return Case(method, "paper", cls, config, dataset, DataConfig(), Normalizer.fit(dataset.observations),
                env, device, _start_step(cls, config, env.total_steps))


class Trainer:
    """A model being timed (the single-seed algorithm or S stacked seeds), its replay, its step."""

    def __init__(self, model, replay, case: Case, seeds: int | None):
        self.model, self.replay, self.case, self.seeds = model, replay, case, seeds
        self.step = case.start_step
        self.metrics: dict[str, torch.Tensor] = {}
        model.train()

    def updates(self, n: int, step: int | None = None) -> None:
        if step is not None:
            self.step = step
        for _ in range(n):
            self.metrics = self.model.update(self.replay.sample(self.case.batch_size), self.step)
            self.step += 1

    def block(self, n: int) -> float:
        """One timed block of n updates: updates/s."""
        self._sync()
        start = time.perf_counter()
        self.updates(n)
        self._sync()
        return n / (time.perf_counter() - start)

    def _sync(self) -> None:
        if self.case.device.type == "cuda":
            torch.cuda.synchronize(self.case.device)
        elif self.metrics:  # wait for any queued work (nothing queues on the CPU; cheap)
            float(next(iter(self.metrics.values())).sum())


def single_trainer(case: Case) -> Trainer:
    algorithm, replay = case.build(0)
    return Trainer(algorithm, replay, case, None)


def batched_trainer(case: Case, seeds: int) -> Trainer:
    from modebench.algorithms.seeds import stack_algorithms
    from modebench.benchmarks.data.replay import SeedReplays

    built = [case.build(seed) for seed in range(seeds)]
    model = stack_algorithms([algorithm for algorithm, _ in built])
    return Trainer(model, SeedReplays([replay for _, replay in built]), case, seeds)


def warm_up(trainer: Trainer, updates: int) -> None:
    """Adam's state, the allocator, and the phase switch: half the updates before `start_step`
    (when there is a phase to end), half after; the timed blocks continue from there."""
    before = min(updates // 2, trainer.case.start_step)
    trainer.updates(before, trainer.case.start_step - before)
    trainer.updates(updates - before)


@dataclass
class Row:
    method: str
    size: str
    batch_size: int
    single: float  # median single-seed updates/s
    seed_rates: dict[int, float]  # S -> median seed-updates/s (S x the stacked model's updates/s)
    ratios: dict[int, float]  # S -> median over repeats of seed-updates/s / the adjacent single-seed rate
    ratio_ranges: dict[int, tuple[float, float]]
    target: float | None  # the S = 3 ratio asked for
    gpu_time_ratio: float | None = None  # CUDA: median time of one S=32 update / one S=1 update
    blocks: dict[str, list[float]] = field(default_factory=dict)  # every block's rate, in order
    error: str | None = None

    @property
    def meets(self) -> bool | None:
        if self.error is not None or self.target is None or 3 not in self.ratios:
            return None
        return self.ratios[3] >= self.target

    @property
    def gpu_meets(self) -> bool | None:
        return None if self.gpu_time_ratio is None else self.gpu_time_ratio <= GPU_TIME_TARGET


def measure(case: Case, seeds: list[int], repeats: int, updates: int, warmup: int | None = None,
            trainers: dict | None = None) -> Row:
    """Alternating blocks: single, then each S in `seeds`, `repeats` times, and a closing single
    block. `trainers`, when given a dict, receives the timed models ("single" and each S)."""
    single = single_trainer(case)
    batched = {s: batched_trainer(case, s) for s in seeds}
    if trainers is not None:
        trainers.update({"single": single, **batched})
    warmup = max(20, updates // 10) if warmup is None else warmup
    for trainer in (single, *batched.values()):
        warm_up(trainer, warmup)
    singles: list[float] = []
    rates: dict[int, list[float]] = {s: [] for s in seeds}
    for _ in range(repeats):
        singles.append(single.block(updates))
        for s, trainer in batched.items():
            rates[s].append(s * trainer.block(updates))
    singles.append(single.block(updates))
    adjacent = [math.sqrt(a * b) for a, b in itertools.pairwise(singles)]
    ratios = {s: [rate / ref for rate, ref in zip(rates[s], adjacent)] for s in seeds}
    gpu = None
    if gpu_checked(seeds):
        # time per update of the S=32 model over that of the S=1 model, blocks of the same repeat
        gpu = statistics.median(GPU_SEEDS * r1 / r32 for r1, r32 in zip(rates[1], rates[GPU_SEEDS]))
    return Row(
        method=case.method, size=case.size, batch_size=case.batch_size,
        single=statistics.median(singles),
        seed_rates={s: statistics.median(r) for s, r in rates.items()},
        ratios={s: statistics.median(r) for s, r in ratios.items()},
        ratio_ranges={s: (min(r), max(r)) for s, r in ratios.items()},
        target=target_for(case.method, case.size), gpu_time_ratio=gpu,
        blocks={"single": singles, **{f"S={s}": r for s, r in rates.items()}},
    )


def machine(device: torch.device) -> dict[str, Any]:
    """What the figures were measured on (cores, torch threads, device, load)."""
    info = {
        "cpu_cores": os.cpu_count(),
        "cpus_usable": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "device": str(device),
        "processor": platform.processor() or platform.machine(),
        "load_average": os.getloadavg() if hasattr(os, "getloadavg") else None,
    }
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
    return info


def gpu_checked(seeds: list[int]) -> bool:
    """Whether the rows carry the GPU check (S = 32 and S = 1 both timed)."""
    return GPU_SEEDS in seeds and 1 in seeds


def format_table(rows: list[Row], seeds: list[int]) -> str:
    """One line per method x size: single-seed updates/s, then per S seed-updates/s and the ratio."""
    head = f"{'method':9s} {'size':6s} {'single u/s':>10s}" + "".join(f" {f'S={s} seed-u/s (ratio)':>24s}" for s in seeds)
    head += f"  {'target (S=3)':>14s}"
    if gpu_checked(seeds):
        head += f"  {'t(S=32)/t(S=1)':>15s}"
    lines = [head]
    for row in rows:
        line = f"{row.method:9s} {row.size:6s}"
        if row.error is not None:
            lines.append(f"{line} failed: {row.error}")
            continue
        line += f" {row.single:10.1f}"
        for s in seeds:
            line += f" {f'{row.seed_rates[s]:.1f} ({row.ratios[s]:.2f}x)':>24s}"
        target = "-" if row.target is None else f">= {row.target:.1f}x {'met' if row.meets else 'NOT met'}"
        line += f"  {target:>14s}"
        if gpu_checked(seeds):
            line += f"  {row.gpu_time_ratio:>8.2f}x {'met' if row.gpu_meets else 'NOT met'}"
        lines.append(line)
    return "\n".join(lines)


def verdict_line(target: str, missed: list[str], missed_as: str, unknown: list[str], unknown_as: str) -> str:
    """`<target>: holds | does NOT hold | not decided`, then what missed it and what was not measured."""
    verdict = "holds" if not missed and not unknown else "does NOT hold" if missed else "not decided"
    line = f"{target}: {verdict}"
    if missed:
        line += f"; {missed_as}: {', '.join(missed)}"
    if unknown:
        line += f"; {unknown_as}: {', '.join(unknown)}"
    return line


def verdicts(rows: list[Row], seeds: list[int]) -> list[str]:
    """Whether each of the issue's targets holds on the rows measured."""
    out = []
    for size, what in (("toy", f"S=3 >= {TOY_TARGET:.1f}x for every method"),
                       ("paper", "S=3 >= 1.3x for " + "/".join(OVERHEAD_BOUND) + ", >= 1.0x for " + "/".join(ARITHMETIC_BOUND))):
        measured = [r for r in rows if r.size == size]
        if measured:
            out.append(verdict_line(f"{size} target ({what})", [f"{r.method} {r.ratios[3]:.2f}x" for r in measured if r.meets is False],
                                    "short", [r.method for r in measured if r.meets is None], "not measured or failed"))
    if gpu_checked(seeds):
        out.append(verdict_line(f"GPU target (one S=32 update within {GPU_TIME_TARGET:.0f}x the time of one S=1 update)",
                                [f"{r.method} {r.size} {r.gpu_time_ratio:.2f}x" for r in rows if r.gpu_meets is False], "over",
                                [f"{r.method} {r.size}" for r in rows if r.gpu_meets is None], "failed"))
    return out


def row_record(row: Row) -> dict[str, Any]:
    record = asdict(row)
    record["meets"] = row.meets
    record["gpu_meets"] = row.gpu_meets
    return record


def write_rows(out: Path, rows: list[Row], seeds: list[int], settings: dict[str, Any], info: dict[str, Any]) -> list[Path]:
    """seeds.csv (one row per method x size) and seeds.json (the rows, every block, the machine)."""
    out.mkdir(parents=True, exist_ok=True)
    csv_path, json_path = out / "seeds.csv", out / "seeds.json"
    columns = ["method", "size", "batch_size", "single_updates_per_s"]
    for s in seeds:
        columns += [f"S{s}_seed_updates_per_s", f"S{s}_ratio", f"S{s}_ratio_min", f"S{s}_ratio_max"]
    columns += ["target_S3", "meets", "gpu_time_ratio_S32_S1", "error"]
    with csv_path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(columns)
        for row in rows:
            line = [row.method, row.size, row.batch_size, row.single if row.error is None else ""]
            for s in seeds:
                if row.error is None:
                    line += [row.seed_rates[s], row.ratios[s], *row.ratio_ranges[s]]
                else:
                    line += ["", "", "", ""]
            line += [row.target, row.meets, row.gpu_time_ratio, row.error or ""]
            writer.writerow(line)
    json_path.write_text(json.dumps({"settings": settings, "machine": info,
                                     "rows": [row_record(r) for r in rows]}, indent=1, default=str) + "\n")
    return [csv_path, json_path]


def failed_row(case_method: str, size: str, error: BaseException) -> Row:
    message = f"{type(error).__name__}: {error}".splitlines()[0][:200]
    return Row(case_method, size, 0, math.nan, {}, {}, {}, target_for(case_method, size), error=message)


def main(argv: list[str] | None = None) -> int:
    keep_freed_memory()  # as every modebench command and worker runs (benchmarks/run/workers.py)
    from modebench.algorithms.config import ConfigError
    from modebench.benchmarks.run.spec import resolve_device

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--methods", default=",".join(BASE_METHODS), help="comma-separated (default: every base method)")
    parser.add_argument("--sizes", default=",".join(SIZES), help="toy, paper or both (comma-separated)")
    parser.add_argument("--seeds", default="1,3,8", help=f"the S to time (comma-separated); on CUDA {GPU_SEEDS} is added")
    parser.add_argument("--repeats", type=int, default=5, help="blocks per model (medians over them)")
    parser.add_argument("--updates", type=int, default=None,
                        help=f"updates per timed block (default {UPDATES['toy']} at toy sizes, {UPDATES['paper']} at paper sizes)")
    parser.add_argument("--warmup", type=int, default=None, help="untimed updates per model first (default max(20, updates/10))")
    parser.add_argument("--device", default="auto", help="auto, cpu or cuda")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1: the targets are for 2 workers on 2 cores)")
    parser.add_argument("--out", type=Path, default=None, help="a folder for seeds.csv and seeds.json (e.g. results/perf)")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    try:
        device = resolve_device(args.device)
    except ConfigError as error:
        parser.error(str(error))
    methods = [m for m in args.methods.split(",") if m]
    sizes = [s for s in args.sizes.split(",") if s]
    if unknown := [s for s in sizes if s not in SIZES]:
        parser.error(f"unknown size(s) {unknown}; choose from {', '.join(SIZES)}")
    seeds = sorted({int(s) for s in args.seeds.split(",") if s} | ({1, GPU_SEEDS} if device.type == "cuda" else set()))
    info = machine(device)
    blocks = args.updates or " / ".join(f"{UPDATES[size]} ({size})" for size in sizes)
    print(f"seed-batched training: median of {args.repeats} alternating blocks x {blocks} updates per model; "
          f"{info['cpus_usable']} of {info['cpu_cores']} cores, {info['torch_threads']} torch thread(s), "
          f"{info.get('gpu', device)}, torch {info['torch']}, load average {info['load_average']}", flush=True)
    rows: list[Row] = []
    datasets: dict[str, Any] = {}
    for size in sizes:
        for method in methods:
            started = time.perf_counter()
            try:
                if size == "toy":
                    case = toy_case(method, device, dataset=datasets.get("toy"))
                    datasets["toy"] = case.dataset
                else:
                    if "paper" not in datasets:
                        from perf.speed import synthetic_dataset

                        datasets["paper"] = synthetic_dataset()
                    case = paper_case(method, device, datasets["paper"])
                row = measure(case, seeds, args.repeats, args.updates or UPDATES[size], args.warmup)
            except Exception as error:  # noqa: BLE001 (a method that cannot be stacked yet: its row says why)
                row = failed_row(method, size, error)
            rows.append(row)
            done = "failed" if row.error else f"single {row.single:.1f} u/s, " + ", ".join(
                f"S={s} {row.ratios[s]:.2f}x" for s in seeds)
            print(f"  {method} {size}: {done} ({time.perf_counter() - started:.0f} s)", file=sys.stderr, flush=True)
    print(format_table(rows, seeds))
    for line in verdicts(rows, seeds):
        print(line)
    print(f"load average at the end: {machine(device)['load_average']}")
    if args.out is not None:
        settings = {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()}
        for path in write_rows(args.out, rows, seeds, settings, info):
            print(f"wrote {path}")
    return 1 if any(r.error for r in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
