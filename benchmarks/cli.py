"""Subcommands train, eval, bench, methods, suites."""

from __future__ import annotations

import argparse
import math
import os
import signal
import time
from concurrent.futures import as_completed
from typing import Any

from modebench.algorithms.config import ConfigError, parse_assignments


def register(subparsers: argparse._SubParsersAction) -> None:
    """train, eval, bench, methods, suites, and the datasets subcommands (benchmarks.tasks.cli)."""
    from modebench.benchmarks.run import protocols
    from modebench.benchmarks.tasks import cli as datasets_cli

    datasets_cli.register(subparsers)
    protocols.register_config(subparsers)  # `modebench config`: every setting of a run with its source
    from modebench.benchmarks.run.profile import register_profile

    register_profile(subparsers)  # `modebench profile`: timing act is a run; it writes profile records
    p = subparsers.add_parser("train", help="train one method on one task, evaluate, write records and a checkpoint")
    p.add_argument("--algo", required=True, help="method name (`modebench methods` lists them)")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--task", help="SUITE/TASK, e.g. toy/four-goal (`modebench suites` lists them)")
    src.add_argument("--dataset", help="a Minari dataset id or local path, or a D4RL-style .npz/.hdf5 file")
    p.add_argument("--env", help="gymnasium id to evaluate in (required for .npz/.hdf5 files)")
    p.add_argument("--ref-min", type=float, help="random-policy return for the normalised score")
    p.add_argument("--ref-max", type=float, help="expert return for the normalised score")
    p.add_argument("--steps", type=int, default=None,
                   help="gradient updates (default: the protocol's, `modebench config` shows it; 10000 for --dataset)")
    seeds = p.add_mutually_exclusive_group()
    seeds.add_argument("--seed", type=int, default=0)
    seeds.add_argument("--seeds", default=None, metavar="S1,S2,...",
                       help="train these seeds as one seed-batched model (one run folder each, the numbers of each seed alone)")
    p.add_argument("--out", default=None, help="results root (default: results/ or $MODEBENCH_RESULTS)")
    p.add_argument("--set", action="append", metavar="KEY=VALUE", help="training config override (repeatable)")
    p.add_argument("--knob", action="append", metavar="KEY=VALUE", help="inference knob for the run's evaluations")
    p.add_argument("--data", action="append", metavar="KEY=VALUE", help="data preprocessing override (normalize_obs, reward_transform, ...)")
    p.add_argument("--eval-every", type=int, default=None, help="evaluate every N updates (default: at the end)")
    p.add_argument("--eval-episodes", type=int, default=None, help="episodes per evaluation (default: the task's)")
    p.add_argument("--device", default="auto", help="auto (CUDA when present), cpu or cuda[:i]")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--compile", action="store_true",
                   help="torch.compile the loss pass (pays ~10-60 s of compilation once; for long runs)")
    p.add_argument("--protocol", default="controlled",
                   help="controlled (shared settings, default) or published (the papers' own settings); part of the run's identity")
    p.add_argument("--log", action="append", default=[], metavar="SINK",
                   help="also log metrics to tensorboard or wandb (optional extras; metrics.jsonl is always written)")
    p.set_defaults(handler=cmd_train)

    p = subparsers.add_parser("eval", help="evaluate a checkpoint over a grid of inference-only knobs")
    p.add_argument("--checkpoint", required=True)
    p.add_argument("--knob", action="append", metavar="NAME=V1,V2,...", help="knob values (repeatable; the grid is their product)")
    p.add_argument("--episodes", type=int, default=None)
    p.add_argument("--seed", type=int, default=None, help="evaluation seed (default: the run's)")
    p.add_argument("--out", default=None, help="results root for the records (default: the checkpoint's)")
    p.add_argument("--device", default="auto")
    p.add_argument("--select-with", metavar="GEM_CHECKPOINT", default=None,
                   help="score the checkpoint's proposals with this checkpoint's selection rule (a method that scores "
                        "candidates: GEM); --knob then sets the selector's knobs")
    p.set_defaults(handler=cmd_eval)

    p = subparsers.add_parser("bench", help="train and evaluate methods x tasks x seeds of a suite, print the table")
    p.add_argument("--suite", default="toy")
    p.add_argument("--methods", default=None, help="comma-separated names, or 'all' for every preset too (default: every base method)")
    p.add_argument("--tasks", default=None, help="comma-separated task names (default: all of the suite)")
    p.add_argument("--seeds", type=int, default=None, help="seeds per method and task (default: the protocol's)")
    p.add_argument("--steps", type=int, default=None, help="updates per run (default: the protocol's; `modebench config` shows it)")
    p.add_argument("--out", default=None)
    p.add_argument("--jobs", type=int, default=os.cpu_count() or 1, help="runs in parallel (default: all cores)")
    p.add_argument("--device", default="auto")
    p.add_argument("--protocol", default="controlled", help="controlled (default) or published")
    p.set_defaults(handler=cmd_bench)

    p = subparsers.add_parser("methods", help="list registered methods, their configs and knobs")
    p.add_argument("name", nargs="?", help="show one method's config fields and knobs")
    p.set_defaults(handler=cmd_methods)

    p = subparsers.add_parser("suites", help="list suites and their tasks")
    p.add_argument("name", nargs="?")
    p.set_defaults(handler=cmd_suites)


def parse_knob_grid(items: list[str] | None) -> dict[str, list[str]]:
    """`--knob N=1,64,1024` -> {"N": ["1", "64", "1024"]}."""
    return {k: [v.strip() for v in value.split(",") if v.strip()] for k, value in parse_assignments(items, "--knob").items()}


def user_errors() -> tuple[type[BaseException], ...]:
    """The errors of the core a user can fix (unknown names, bad values, malformed or missing data)."""
    from modebench.algorithms.registry import UnknownMethodError
    from modebench.benchmarks.data.dataset import DatasetError
    from modebench.benchmarks.data.loaders import MissingDatasetError
    from modebench.benchmarks.run.checkpoints import CheckpointError
    from modebench.benchmarks.store import RunBusyError
    from modebench.benchmarks.tasks.suites import UnknownNameError

    return (ConfigError, UnknownMethodError, UnknownNameError, DatasetError, MissingDatasetError, CheckpointError,
            RunBusyError, FileNotFoundError)


def _check_positive(name: str, value: int | None) -> None:
    if value is not None and value < 1:
        raise ConfigError(f"{name} must be >= 1, got {value}")


def parse_seed_list(text: str) -> list[int]:
    """`0,1,2` -> [0, 1, 2]: distinct seeds >= 0, or one ConfigError line."""
    try:
        seeds = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise ConfigError(f"--seeds {text!r}: give comma-separated integer seeds, e.g. --seeds 0,1,2") from None
    if not seeds or min(seeds) < 0 or len(set(seeds)) != len(seeds):
        raise ConfigError(f"--seeds {text!r}: give distinct seeds >= 0, e.g. --seeds 0,1,2")
    return seeds


def cmd_train(args: argparse.Namespace) -> int:
    from modebench.benchmarks.run.spec import resolve_run
    from modebench.benchmarks.run.train import train_seeds
    from modebench.benchmarks.tasks.adhoc import task_from_dataset

    for name in ("steps", "eval_every", "eval_episodes"):
        _check_positive(f"--{name.replace('_', '-')}", getattr(args, name))
    seeds = parse_seed_list(args.seeds) if args.seeds is not None else [args.seed]
    task = args.task or task_from_dataset(args.dataset, args.env, args.ref_min, args.ref_max)
    specs = [resolve_run(
        args.algo, task, protocol=args.protocol, config=parse_assignments(args.set),
        knobs=parse_assignments(args.knob, "--knob"), data=parse_assignments(args.data, "--data"), seed=seed,
        steps=args.steps, eval_every=args.eval_every, eval_episodes=args.eval_episodes, device=args.device,
        compile=args.compile,
    ) for seed in seeds]
    results = train_seeds(specs, out=args.out, progress=not args.no_progress, log=tuple(args.log))
    for spec, result in zip(specs, results):
        if len(specs) > 1:
            print(f"seed {spec.seed}:")
        if isinstance(result, FloatingPointError):
            print(f"diverged: {result}")
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

    if args.select_with:  # selection as a composition (benchmarks/run/compose.py)
        from modebench.benchmarks.run.compose import evaluate_selection

        records = evaluate_selection(args.checkpoint, args.select_with, parse_knob_grid(args.knob), args.episodes, args.seed, args.out, args.device, progress=True)
    else:
        records = evaluate_checkpoint(args.checkpoint, parse_knob_grid(args.knob), args.episodes, args.seed, args.out, args.device, progress=True)
    for record in records:
        knobs = " ".join(f"{k}={v}" for k, v in record.get("selection", {}).get("knobs", record["knobs"]).items())
        audits = " ".join(f"{k}={v:.3f}" for k, v in record["audits"].items())
        print(f"{knobs} normalized_score {record['normalized_score']:.4f} {audits}".strip())
    return 0


def bench_methods(spec: str | None) -> list[str]:
    from modebench.algorithms.registry import METHODS, get_method

    if spec in (None, ""):
        return [n for n, e in METHODS.items() if e.is_base]
    if spec == "all":
        return list(METHODS)
    names = [n.strip() for n in spec.split(",") if n.strip()]
    for name in names:
        get_method(name)
    return names


def _bench_job(specs: list, out: str | None) -> list[dict[str, Any]]:
    """One worker's job: every seed of one (method, task, config), trained as one seed-batched model."""
    from modebench.benchmarks.run.train import train_seeds
    from modebench.benchmarks.store import RunBusyError

    start = time.perf_counter()
    # a run another process writes is skipped, the job's other seeds go on
    results = train_seeds(specs, out=out, skip_busy=True)
    seconds = time.perf_counter() - start
    rows = []
    for spec, result in zip(specs, results):
        row = {"method": spec.method, "task": spec.task.id, "seed": spec.seed}
        if isinstance(result, RunBusyError):
            row["busy"] = str(result)
        elif isinstance(result, FloatingPointError):
            row["diverged"] = str(result)
        else:
            row.update(score=result.score, updates_per_second=result.updates_per_second, seconds=seconds)
        rows.append(row)
    return rows


def _raise_interrupt(signum, frame):
    raise KeyboardInterrupt


def cmd_bench(args: argparse.Namespace) -> int:
    import pandas as pd
    from modebench.benchmarks.run.workers import stop_workers, worker_pool
    from modebench.benchmarks.tasks.suites import load_suite
    from tqdm.auto import tqdm

    tasks = load_suite(args.suite)
    selected = list(tasks) if not args.tasks else [t.strip() for t in args.tasks.split(",")]
    for name in selected:
        if name not in tasks:
            raise ConfigError(f"unknown task {name!r} in suite {args.suite!r}; valid tasks: {', '.join(tasks)}")
    methods = bench_methods(args.methods)
    from modebench.benchmarks.tasks.sources import require_datasets

    require_datasets(args.suite, [tasks[name] for name in selected])  # missing data: one clear error now, not one per worker
    for name in ("--steps", "--seeds", "--jobs"):
        _check_positive(name, getattr(args, name[2:]))
    from modebench.benchmarks.run.protocols import (
        check_protocol,
        has_published,
        resolve,
    )
    from modebench.benchmarks.run.spec import resolve_run

    check_protocol(args.protocol)
    pairs = [(m, t) for t in selected for m in methods]
    if args.protocol == "published" and not args.methods:  # the default methods: those with a published run here
        pairs = [(m, t) for m, t in pairs if has_published(m, tasks[t])]
        methods = list(dict.fromkeys(m for m, _ in pairs))
        if not pairs:
            raise ConfigError(f"no method has a published protocol on {args.suite}; use --protocol controlled")
    seeds = {(m, t): args.seeds or resolve(m, tasks[t], args.protocol).run["seeds"].value for m, t in pairs}
    # one job per (method, task): its seeds train as one seed-batched model in one worker
    jobs = [
        [resolve_run(m, tasks[t], protocol=args.protocol, seed=s, steps=args.steps, device=args.device)
         for s in range(seeds[m, t])]
        for m, t in pairs
    ]
    runs = [run for job in jobs for run in job]
    steps = "/".join(str(n) for n in sorted({run.steps for run in runs}))
    seeds_text = "/".join(str(n) for n in sorted(set(seeds.values())))
    threads = max(1, (os.cpu_count() or 1) // args.jobs)
    print(f"bench {args.suite} ({args.protocol} protocol): {len(methods)} methods x {len(selected)} tasks x {seeds_text} seeds, "
          f"{steps} updates each; each method x task's seeds as one seed-batched model, {args.jobs} in parallel")
    rows, busy, diverged = [], [], []
    start = time.perf_counter()
    pool = worker_pool(args.jobs, threads)  # workers die with this process, SIGKILL included
    previous = signal.signal(signal.SIGTERM, _raise_interrupt)
    try:
        futures = [pool.submit(_bench_job, job, args.out) for job in jobs]
        for future in tqdm(as_completed(futures), total=len(futures), desc="bench jobs (method x task, all seeds)"):
            for row in future.result():
                if "busy" in row:
                    busy.append(row["busy"])
                    tqdm.write(f"skipped: {row['busy']}")
                elif "diverged" in row:
                    diverged.append(row)
                    tqdm.write(f"diverged: {row['diverged']}")
                else:
                    rows.append(row)
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
    frame = pd.DataFrame(rows)
    table = frame.groupby(["task", "method"])["score"].agg(["mean", "std", "count"]).reset_index()
    table["cell"] = [f"{m:6.1f} +- {0.0 if math.isnan(s) else s:5.1f}" for m, s in zip(table["mean"], table["std"])]
    pivot = table.pivot(index="task", columns="method", values="cell").reindex(columns=methods)
    print(f"\nnormalized score, {args.protocol} protocol, mean +- std over {seeds_text} seeds ({steps} updates; "
          f"wall {time.perf_counter() - start:.0f} s)")
    print(pivot.to_string())
    return 1 if busy or diverged else 0


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
    return 0

