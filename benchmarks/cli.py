"""Subcommands train, eval, bench, methods, suites."""

from __future__ import annotations

import argparse
import math
import os
import signal
import sys
import time
from concurrent.futures import FIRST_COMPLETED, wait
from pathlib import Path
from typing import Any

from modebench.algorithms.config import ConfigError, parse_assignments
from modebench.benchmarks.grammar import (
    bounded_int,
    close_matches,
    positive_int,
    seed_value,
)

DEFAULT_LOG_EVERY = 1000  # updates per training-metrics line (resolve_run's default)
LOGGERS = ("tensorboard", "wandb")  # the optional metric sinks (benchmarks/run/callbacks.py)


def register(subparsers: argparse._SubParsersAction) -> None:
    """train, eval, bench, profile, config, methods, suites, and the datasets subcommands
    (benchmarks.tasks.cli). Building the parsers imports no torch: each handler imports what it runs."""
    from modebench.benchmarks.tasks import cli as datasets_cli

    p = subparsers.add_parser("train", help="train one method on one task, evaluate, write records and a checkpoint")
    p.add_argument("--algo", required=True, metavar="METHOD", help="method name (`modebench methods` lists them)")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--task", metavar="SUITE/TASK", help="a suite's task, e.g. toy/four-goal (`modebench suites` lists them)")
    src.add_argument("--dataset", metavar="ID_OR_PATH", help="a Minari dataset id or local path, or a D4RL-style .npz/.hdf5 file")
    p.add_argument("--env", metavar="GYM_ID",
                   help="gymnasium id to evaluate in (required for .npz/.hdf5 files); a module:Env id is imported "
                        "only when given here")
    p.add_argument("--ref-min", type=float, help="random-policy return for the normalised score")
    p.add_argument("--ref-max", type=float, help="expert return for the normalised score")
    p.add_argument("--steps", type=positive_int, default=None, metavar="N",
                   help="gradient updates (default: the protocol's, `modebench config` shows it; 10000 for --dataset)")
    p.add_seeds(single=True)
    p.add_results(old=("--out",))
    p.add_argument("--set", action="append", metavar="KEY=VALUE", help="training config override (repeatable)")
    p.add_argument("--knob", action="append", metavar="KEY=VALUE", help="inference knob for the run's evaluations (repeatable)")
    p.add_argument("--data", action="append", metavar="KEY=VALUE", help="data preprocessing override (normalize_obs, reward_transform, ...)")
    p.add_argument("--eval-every", type=positive_int, default=None, metavar="N", help="evaluate every N updates (default: at the end)")
    p.add_eval_episodes()
    p.add_argument("--log-every", type=positive_int, default=None, metavar="N",
                   help=f"write the mean training metrics every N updates (default {DEFAULT_LOG_EVERY})")
    p.add_device()
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--compile", action="store_true",
                   help="torch.compile the loss pass (pays ~10-60 s of compilation once; for long runs)")
    p.add_argument("--rerun", action="store_true",
                   help="train the run again from scratch even when the results root holds it finished")
    p.add_protocol()
    p.add_argument("--log", action="append", default=[], choices=LOGGERS,
                   help="also log metrics to TensorBoard or Weights & Biases, one run per seed (optional extras; "
                        "metrics.jsonl is always written)")
    p.set_defaults(handler=cmd_train)

    p = subparsers.add_parser("eval", help="evaluate a checkpoint over a grid of inference-only knobs")
    p.add_argument("--checkpoint", required=True, metavar="PATH", help="a run's checkpoint.pt (runs/<run id>/checkpoint.pt)")
    p.add_argument("--knob", action="append", metavar="NAME=V1,V2,...", help="knob values (repeatable; the grid is their product)")
    p.add_eval_episodes()
    p.add_argument("--eval-seed", type=seed_value, default=None, metavar="S", help="evaluation seed (default: the run's)")
    p.deprecated(("--seed",), "eval_seed", "--eval-seed", type=seed_value)
    p.add_results(old=("--out",), what="records go into the checkpoint's own run folder under it")
    p.add_device()
    p.add_argument("--env", metavar="GYM_ID",
                   help="confirm the checkpoint's env id when it names a module to import (module:Env); "
                        "such an id is never imported from a file alone")
    p.add_argument("--select-with", metavar="GEM_CHECKPOINT", default=None,
                   help="score the checkpoint's proposals with this GEM checkpoint's selection rule; --knob then sets GEM's knobs")
    p.set_defaults(handler=cmd_eval)

    p = subparsers.add_parser("bench", help="train and evaluate methods x tasks x seeds of a suite, print the table")
    p.add_argument("--suite", default="toy", metavar="NAME_OR_FILE",
                   help="a suite name (`modebench suites` lists them) or your own suite .yaml file (default toy)")
    p.add_methods("every base method; 'all' adds the presets")
    p.add_argument("--tasks", default=None, metavar="A,B,...", help="comma-separated task names (default: all of the suite)")
    p.add_seeds(count_default=0)
    p.add_argument("--steps", type=positive_int, default=None, metavar="N",
                   help="updates per run (default: the protocol's; `modebench config` shows it)")
    p.add_results(old=("--out",))
    p.add_jobs()
    p.add_device()
    p.add_protocol()
    p.add_argument("--rerun", action="store_true",
                   help="train every run again from scratch, also those the results root holds finished")
    p.set_defaults(handler=cmd_bench)

    p = subparsers.add_parser("profile", help="act latency / peak memory / params of every method (GEM Table 3) -> profile records")
    p.add_results(old=("--out",), what="profile records go into RESULTS/profiles/")
    p.add_methods("every registered base method")
    p.add_argument("--devices", default=None, metavar="D1,D2", help="comma-separated devices (default: cpu, plus cuda when present)")
    p.add_argument("--batch-sizes", default="1,64", metavar="B1,B2", help="states per act call (default 1,64)")
    p.add_argument("--knob", action="append", default=None, metavar="NAME=VALUE",
                   help="fix a knob for every method that has it (repeatable), e.g. --knob w=1")
    p.add_argument("--repeats", type=positive_int, default=50, metavar="N", help="timed calls per setting (default 50; the median is reported)")
    p.add_argument("--warmup", type=bounded_int(0), default=5, metavar="N", help="untimed calls before timing (default 5)")
    p.add_argument("--max-seconds", type=float, default=10.0, metavar="S",
                   help="stop timing a setting after this many seconds, with at least 3 calls (default 10)")
    p.add_argument("--threads", type=positive_int, default=1, metavar="N", help="CPU threads for every method (default 1)")
    p.set_defaults(handler=cmd_profile)

    p = subparsers.add_parser("config", help="print a method's resolved config, knobs, data and run settings with the source of each")
    p.add_argument("--algo", required=True, metavar="METHOD", help="method name (`modebench methods` lists them)")
    p.add_argument("--task", required=True, metavar="SUITE/TASK", help="a suite's task, e.g. adroit/pen-human")
    p.add_protocol()
    p.add_argument("--set", action="append", metavar="KEY=VALUE", help="training config override (repeatable)")
    p.add_argument("--knob", action="append", metavar="KEY=VALUE", help="inference knob override (repeatable)")
    p.add_argument("--data", action="append", metavar="KEY=VALUE", help="data preprocessing override (repeatable)")
    p.add_argument("--json", action="store_true", help='JSON: {"config": {key: {"value", "source"}}, "knobs", "data", "run", "protocol"}')
    p.set_defaults(handler=cmd_config)

    p = subparsers.add_parser("methods", help="list registered methods, their configs and knobs")
    p.add_argument("name", nargs="?", help="show one method's config fields and knobs")
    p.set_defaults(handler=cmd_methods)

    p = subparsers.add_parser("suites", help="list suites and their tasks")
    p.add_argument("name", nargs="?", help="show one suite's tasks")
    p.set_defaults(handler=cmd_suites)

    datasets_cli.register(subparsers)


def cmd_profile(args: argparse.Namespace) -> int:
    from modebench.benchmarks.run.profile import cmd_profile as run

    return run(args)


def cmd_config(args: argparse.Namespace) -> int:
    from modebench.benchmarks.run.protocols import cmd_config as run

    return run(args)


def parse_knob_grid(items: list[str] | None) -> dict[str, list[str]]:
    """`--knob N=1,64,1024` -> {"N": ["1", "64", "1024"]}."""
    return {k: [v.strip() for v in value.split(",") if v.strip()] for k, value in parse_assignments(items, "--knob").items()}


def user_errors() -> tuple[type[BaseException], ...]:
    """The errors of the core a user can fix (unknown names, bad values, malformed or missing data)."""
    from modebench.algorithms.registry import UnknownMethodError
    from modebench.benchmarks.data.dataset import DatasetError
    from modebench.benchmarks.data.loaders import MissingDatasetError
    from modebench.benchmarks.run.checkpoints import CheckpointError
    from modebench.benchmarks.store import StoreError
    from modebench.benchmarks.tasks.suites import UnknownNameError

    return (ConfigError, UnknownMethodError, UnknownNameError, DatasetError, MissingDatasetError, CheckpointError,
            StoreError, FileNotFoundError)  # StoreError: RunBusyError, DamagedRecordError too


def cmd_train(args: argparse.Namespace) -> int:
    from modebench.benchmarks.run.spec import resolve_run
    from modebench.benchmarks.run.train import train_seeds
    from modebench.benchmarks.tasks.adhoc import task_from_dataset
    from modebench.benchmarks.tasks.sources import allow_env_module

    seeds = args.seeds or [0 if args.seed is None else args.seed]
    if args.env:
        allow_env_module(args.env)  # a module:Env id the user typed may be imported; one from a file never
    task = args.task or task_from_dataset(args.dataset, args.env, args.ref_min, args.ref_max)
    specs = [resolve_run(
        args.algo, task, protocol=args.protocol, config=parse_assignments(args.set),
        knobs=parse_assignments(args.knob, "--knob"), data=parse_assignments(args.data, "--data"), seed=seed,
        steps=args.steps, eval_every=args.eval_every, eval_episodes=args.eval_episodes, device=args.device,
        compile=args.compile, log_every=args.log_every or DEFAULT_LOG_EVERY,
    ) for seed in seeds]
    results = train_seeds(specs, out=args.results, progress=not args.no_progress, log=tuple(args.log),
                          resume=not args.rerun)
    for spec, result in zip(specs, results):
        if len(specs) > 1:
            print(f"seed {spec.seed}:")
        if isinstance(result, FloatingPointError):
            print(f"diverged: {result}")
            continue
        if result.already_finished:
            print(f"already finished: {spec.run_id} ({result.score:.4f}) — pass --rerun to train it again")
            continue
        last = result.records[-1]
        print(f"run {result.run_dir}")
        print(f"checkpoint {result.checkpoint}")
        print(f"return {last['return_mean']:.4f} +- {last['return_std']:.4f}, success {last['success_rate']:.3f}, "
              f"updates/s {result.updates_per_second:.1f}")
        print(f"normalized_score {result.score:.4f}")
    return 1 if any(isinstance(r, FloatingPointError) for r in results) else 0


def cmd_eval(args: argparse.Namespace) -> int:
    from modebench.benchmarks.run.train import evaluate_checkpoint
    from modebench.benchmarks.tasks.sources import allow_env_module

    if args.env:
        allow_env_module(args.env)
    grid = parse_knob_grid(args.knob)
    if args.select_with:  # selection as a composition (benchmarks/run/compose.py)
        from modebench.benchmarks.run.compose import evaluate_selection

        records = evaluate_selection(args.checkpoint, args.select_with, grid, args.eval_episodes, args.eval_seed, args.results,
                                     args.device, progress=True)
    else:
        records = evaluate_checkpoint(args.checkpoint, grid, args.eval_episodes, args.eval_seed, args.results, args.device,
                                      progress=True)
    for record in records:
        knobs = " ".join(f"{k}={v}" for k, v in record.get("selection", {}).get("knobs", record["knobs"]).items())
        audits = " ".join(f"{k}={v:.3f}" for k, v in record["audits"].items())
        print(f"{knobs} normalized_score {record['normalized_score']:.4f} {audits}".strip())
    return 0


def bench_methods(names: list[str] | None) -> list[str]:
    """`--methods`: None = every base method, ['all'] = every method and preset, else the names (checked)."""
    from modebench.algorithms.registry import METHODS, get_method

    if not names:
        return [n for n, e in METHODS.items() if e.is_base]
    if names == ["all"]:
        return list(METHODS)
    for name in names:
        get_method(name)
    return names


def _bench_job(specs: list, out: str | None, rerun: bool = False) -> list[dict[str, Any]]:
    """One worker's job: every seed of one (method, task, config), trained as one seed-batched model."""
    from modebench.benchmarks.run.train import train_seeds
    from modebench.benchmarks.store import RunBusyError

    start = time.perf_counter()
    # a run another process writes is skipped, the job's other seeds go on
    results = train_seeds(specs, out=out, skip_busy=True, resume=not rerun)
    seconds = time.perf_counter() - start
    rows = []
    for spec, result in zip(specs, results):
        row = {"method": spec.method, "task": spec.task.id, "seed": spec.seed}
        if isinstance(result, RunBusyError):
            row["busy"] = str(result)
        elif isinstance(result, FloatingPointError):
            row["diverged"] = str(result)
        else:
            row.update(score=result.score, updates_per_second=result.updates_per_second, seconds=seconds,
                       already_finished=result.already_finished)
        rows.append(row)
    return rows


def _raise_interrupt(signum, frame):
    raise KeyboardInterrupt


def cmd_bench(args: argparse.Namespace) -> int:
    from modebench.benchmarks.run.workers import (
        JobWatch,
        resolve_watched,
        stop_workers,
        worker_pool,
    )
    from modebench.benchmarks.store import DEFAULT_ROOT, RunStore
    from modebench.benchmarks.tasks.suites import load_suite

    tasks = load_suite(args.suite)
    suite = next(iter(tasks.values())).suite if tasks else args.suite
    selected = list(tasks) if not args.tasks else [t.strip() for t in args.tasks.split(",")]
    for name in selected:
        if name not in tasks:
            raise ConfigError(f"unknown task {name!r} in suite {suite!r}{close_matches(name, tasks)}; valid tasks: {', '.join(tasks)}")
    methods = bench_methods(args.methods)
    from modebench.benchmarks.tasks.sources import require_datasets

    require_datasets(suite, [tasks[name] for name in selected])  # missing data: one clear error now, not one per worker
    from modebench.benchmarks.run.protocols import has_published, resolve

    pairs = [(m, t) for t in selected for m in methods]
    if args.protocol == "published" and not args.methods:  # the default methods: those with a published run here
        pairs = [(m, t) for m, t in pairs if has_published(m, tasks[t])]
        methods = list(dict.fromkeys(m for m, _ in pairs))
        if not pairs:
            raise ConfigError(f"no method has a published protocol on {suite}; use --protocol controlled")
    count_notice(args, "bench")
    seeds = {(m, t): args.seeds or list(range(args.num_seeds or resolve(m, tasks[t], args.protocol).run["seeds"].value))
             for m, t in pairs}
    # one job per (method, task): its seeds train as one seed-batched model in one worker, writing
    # the metrics lines the driver reads to show each job's progress
    jobs = [
        [resolve_watched(m, tasks[t], protocol=args.protocol, seed=s, steps=args.steps, device=args.device)
         for s in seeds[m, t]]
        for m, t in pairs
    ]
    runs = [run for job in jobs for run in job]
    steps = "/".join(str(n) for n in sorted({run.steps for run in runs}))
    seeds_text = "/".join(str(n) for n in sorted({len(v) for v in seeds.values()}))
    threads = max(1, (os.cpu_count() or 1) // args.jobs)
    root = Path(args.results) if args.results else DEFAULT_ROOT
    print(f"bench {suite} ({args.protocol} protocol): {len(methods)} methods x {len(selected)} tasks x {seeds_text} seeds, "
          f"{steps} updates each; each method x task's seeds as one seed-batched model, {args.jobs} in parallel")
    watch = JobWatch([(f"{job[0].method} x {job[0].task.name}", RunStore(root, job[0].run_id).path / "metrics.jsonl", job[0].steps)
                      for job in jobs])
    rows, busy, diverged = [], [], []
    start = time.perf_counter()
    pool = worker_pool(args.jobs, threads)  # workers die with this process, SIGKILL included
    previous = signal.signal(signal.SIGTERM, _raise_interrupt)
    try:
        futures = {pool.submit(_bench_job, job, args.results, args.rerun): index for index, job in enumerate(jobs)}
        progress = JobProgress(watch, len(jobs))
        pending = set(futures)
        try:
            while pending:
                finished, pending = wait(pending, timeout=PROGRESS_POLL_S, return_when=FIRST_COMPLETED)
                for future in finished:
                    watch.finished.add(futures[future])
                    for row in future.result():
                        if "busy" in row:
                            busy.append(row["busy"])
                            progress.write(f"skipped: {row['busy']}")
                        elif "diverged" in row:
                            diverged.append(row)
                            progress.write(f"diverged: {row['diverged']}")
                        else:
                            rows.append(row)
                progress.update()
        finally:
            progress.close()
    except BaseException:
        stop_workers(pool)  # finished runs are stored; none of the workers outlives the command
        raise
    finally:
        signal.signal(signal.SIGTERM, previous)
    pool.shutdown()
    if busy:
        print(f"{len(busy)} of {len(runs)} runs skipped: another process is writing them; "
              "run the same command again once it has ended")
    if diverged:
        print(f"{len(diverged)} of {len(runs)} runs diverged (left out of the table): "
              + ", ".join(f"{r['method']} {r['task']} seed {r['seed']}" for r in diverged))
    if not rows:
        return 1
    finished = sum(bool(row.get("already_finished")) for row in rows)
    if finished:
        print(f"{finished} of {len(runs)} runs already finished in the results root (read back, not trained); "
              "pass --rerun to train them again")
    import pandas as pd

    frame = pd.DataFrame(rows)
    table = frame.groupby(["task", "method"])["score"].agg(["mean", "std", "count"]).reset_index()
    table["cell"] = [f"{m:6.1f} +- {0.0 if math.isnan(s) else s:5.1f}" for m, s in zip(table["mean"], table["std"])]
    pivot = table.pivot(index="task", columns="method", values="cell").reindex(columns=methods)
    print(f"\nnormalized score, {args.protocol} protocol, mean +- std over {seeds_text} seeds ({steps} updates; "
          f"wall {time.perf_counter() - start:.0f} s)")
    print(pivot.to_string())
    print(f"results in {root}/ ({len(rows)} runs: records under runs/); `modebench report --results {root}` writes the "
          f"tables to {root}/tables/ and the plots to {root}/plots/")
    return 1 if busy or diverged else 0


PROGRESS_POLL_S = 2.0  # seconds between reads of the running jobs' progress


class JobProgress:
    """One bar over every update of a bench (ETA from the updates done), its line naming each job
    under way with its step and updates/s; plain lines when stderr is not a terminal."""

    def __init__(self, watch, jobs: int):
        from tqdm.auto import tqdm

        self.watch = watch
        self.jobs = jobs
        _, total, _ = watch.snapshot()
        self.bar = tqdm(total=total, desc=f"bench: {jobs} jobs", unit="upd", dynamic_ncols=True)
        self.tqdm = tqdm

    def close(self) -> None:
        self.bar.close()

    def write(self, line: str) -> None:
        self.tqdm.write(line)

    def update(self) -> None:
        done, _, running = self.watch.snapshot()
        self.bar.set_description(f"bench: {len(self.watch.finished)}/{self.jobs} jobs done", refresh=False)
        self.bar.set_postfix_str("; ".join(running), refresh=False)
        self.bar.update(max(0, done - self.bar.n))


def count_notice(args: argparse.Namespace, command: str) -> None:
    """`--seeds 3` was a count in `bench` and `sweep` before it became a list everywhere: say so."""
    if args.seeds is not None and len(args.seeds) == 1 and args.seeds[0] >= 1:
        n = args.seeds[0]
        print(f"modebench {command}: note: --seeds {n} is the one seed {n}; --num-seeds {n} runs "
              f"{'seed 0' if n == 1 else f'seeds 0..{n - 1}'}", file=sys.stderr)


def cmd_methods(args: argparse.Namespace) -> int:
    from modebench.algorithms.registry import METHODS, get_method

    if args.name:
        entry = get_method(args.name)
        cls = entry.load()
        print(f"{args.name}: {entry.description}")
        print("config (training):")
        print_fields(cls.config_class, entry.config, args.name)
        print("knobs (inference-only):")
        print_fields(cls.knobs_class, entry.knobs, args.name)
        return 0
    for name, entry in METHODS.items():
        print(f"{name:28s} {entry.description}")
    return 0


def print_fields(cls: type, preset: dict[str, Any], method: str) -> None:
    """One line per field: name = value [where the value comes from], its help and allowed values."""
    import dataclasses
    import typing

    from modebench.algorithms.config import describe_values, field_help

    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
        value, source = (preset[f.name], f"preset {method}") if f.name in preset else (default, "default")
        allowed = describe_values(f, hints[f.name])
        print(f"  {f.name} = {value}  [{source}]  {field_help(f)}{f'  ({allowed})' if allowed else ''}")


def cmd_suites(args: argparse.Namespace) -> int:
    from modebench.benchmarks.tasks.suites import load_suite, suite_names

    names = [args.name] if args.name else suite_names()
    for suite in names:
        tasks = load_suite(suite)
        print(f"{suite}: {len(tasks)} tasks")
        for task in tasks.values():
            marker = " (default)" if task.default else ""
            print(f"  {task.id}{marker}  {task.description}")
            if args.name:  # one suite: what the policy sees and how its score is normalised
                for line in task_details(task):
                    print(f"      {line}")
    return 0


def task_details(task) -> list[str]:
    """The policy's observation (each layout's parts and dimension, read from the evaluation env's
    spaces without any data) and the score's normaliser under each protocol, with their sources."""
    from modebench.benchmarks.tasks.sources import score

    lines = []
    for name in task.layout_names:
        layout = task.layout(name)
        try:
            parts = task.observation_dims(name)
            dim = sum(size for _, size in parts)
            shape = " + ".join(f"{key} {size}" if key else str(size) for key, size in parts) + f" = {dim}"
        except Exception as err:  # an env that does not build here (kitchen under MuJoCo 4): say so, go on
            why = (str(err).splitlines() or [""])[0][:120] or type(err).__name__
            shape = f"{layout.dim} declared (the env does not build here: {why})"
        used = " (used)" if name == task.layout().name and len(task.layout_names) > 1 else ""
        label = f" [{layout.label}]" if layout.label else ""
        lines.append(f"observation {name}{used}: {shape}{label}; source: {layout.source}")
    for protocol in ("controlled", "published"):
        scored = task.for_protocol(protocol)
        kind, source = score(scored.score).declared(task.id, scored.score)
        lines.append(f"score ({protocol}): {kind}; source: {source}")
    return lines

