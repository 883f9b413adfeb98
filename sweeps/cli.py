"""`modebench sweep GRID`: run a grid of trials under Ray Tune (sweeps.runner)."""

from __future__ import annotations

import argparse
from pathlib import Path

from modebench.benchmarks.grammar import positive_int


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "sweep",
        help="run a grid (tasks x training values, all seeds per trial; inference-only knob settings) under Ray Tune",
        description=(
            "Run every trial of GRID (a file, or a name in sweeps/grids/) under Ray Tune and write one record per "
            "evaluation to the results store. A trial is one method, training value and task with all the seeds, "
            "trained as one seed-batched model (one run folder per seed). Finished runs (all their records stored) "
            "are skipped, so running the same command again only does what is missing."
        ),
    )
    p.add_argument("grid", help="grid file or name (`modebench sweep --list` shows the built-in grids)", nargs="?")
    p.add_argument("--list", action="store_true", help="list the built-in grids with their trial, run and record counts")
    p.add_argument("--address", default=None,
                   help="join a running Ray cluster (auto on a cluster node, or HOST:PORT); default: a local node with all cores")
    p.add_seeds(count_default=0)  # every trial holds the seeds; default: the grid file's
    p.add_argument("--resume", action="store_true",
                   help="continue an interrupted sweep: restore Ray Tune's state, then run what the store lacks")
    p.add_results(old=("--out",), what="on a cluster, a shared path every node mounts")
    p.add_argument("--storage", default=None,
                   help="Ray Tune storage for its experiment state and checkpoints (path or URI such as s3://bucket/dir; "
                        "default RESULTS/sweeps/GRID/ray)")
    p.add_argument("--steps", type=positive_int, default=None, metavar="N", help="override the grid's updates per run (smoke runs)")
    p.add_argument("--num-cpus", type=positive_int, default=None, metavar="N", help="CPUs of the local Ray node (default: all cores)")
    p.add_argument("--max-concurrent", type=positive_int, default=None, metavar="N", help="at most this many trials at once")
    p.add_protocol(default=None)
    p.add_argument("--dry-run", action="store_true", help="print the trials and their status; start nothing")
    p.add_argument("--quiet", action="store_true", help="no Ray Tune progress tables")
    p.set_defaults(handler=cmd_sweep)


def user_errors() -> tuple[type[BaseException], ...]:
    """A sweep's fixable errors are the core's: a bad grid value, an unknown method or task, missing data."""
    from modebench.benchmarks.cli import user_errors as core_errors

    return core_errors()


def cmd_sweep(args: argparse.Namespace) -> int:
    from modebench.algorithms.config import ConfigError
    from modebench.sweeps.grid import grid_names, load_grid

    if args.list:
        for name in grid_names():
            grid = load_grid(name)
            try:
                records = f"{grid.count_records():6d}"
            except (ConfigError, KeyError, ImportError, OSError):  # a method or suite the grid names is not here
                records = "     ?"
            print(f"{name:18s} {grid.count_trials():5d} trials {grid.count_runs():5d} runs {records} records  {grid.description}")
        return 0
    if not args.grid:
        raise ConfigError("give a GRID (file or name; `modebench sweep --list` shows the built-in grids)")
    from modebench.benchmarks.cli import count_notice
    from modebench.benchmarks.run.workers import ProgressLines
    from modebench.sweeps.runner import print_summary, run_sweep

    count_notice(args, "sweep")
    seeds = args.seeds or (list(range(args.num_seeds)) if args.num_seeds else None)
    progress = None if args.dry_run else ProgressLines(trial_watch(args.grid, args.results, seeds, args.steps, args.protocol),
                                                        f"sweep {args.grid}", every=PROGRESS_LINE_S)
    if progress:
        progress.start()
    try:
        summary = run_sweep(
            args.grid, out=args.results, address=args.address, seeds=seeds, resume=args.resume,
            storage=args.storage, steps=args.steps, num_cpus=args.num_cpus, max_concurrent=args.max_concurrent,
            dry_run=args.dry_run, verbose=0 if args.quiet else 1, protocol=args.protocol,
        )
    finally:
        if progress:
            progress.stop()
    if args.dry_run:
        return 0
    print_summary(summary)
    print(f"results in {summary.root}/; `modebench report --results {summary.root}` writes the tables to "
          f"{summary.root}/tables/ and the plots to {summary.root}/plots/")
    return 0 if summary.ok else 1


PROGRESS_LINE_S = 30.0  # seconds between the sweep's progress lines (Ray Tune's own tables come between)


def trial_watch(grid_ref: str, results: str | None, seeds: list[int] | None, steps: int | None, protocol: str | None):
    """The sweep's trials as jobs to watch: each trial's first run's metrics.jsonl (its seeds train together)."""
    import dataclasses

    from modebench.benchmarks.run.workers import JobWatch
    from modebench.benchmarks.store import DEFAULT_ROOT, RunStore
    from modebench.sweeps.grid import load_grid
    from modebench.sweeps.runner import plan_grid

    grid = load_grid(grid_ref)
    if protocol is not None:
        grid = dataclasses.replace(grid, protocol=protocol)
    root = Path(results or DEFAULT_ROOT).expanduser().resolve()
    planned = plan_grid(grid, root, seeds, steps)
    return JobWatch([(trial.label, RunStore(root, trial.runs[0].run_id).path / "metrics.jsonl", trial.runs[0].steps)
                     for trial in planned if trial.runs])
