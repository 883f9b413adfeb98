"""Subcommand `datasets`: what data each suite uses, whether it is here, and how to get it.

    modebench datasets list [--suite S] [--generators]
    modebench datasets info SUITE/TASK
    modebench datasets download (SUITE | SUITE/TASK | DATASET_ID)... [--suite S] [--force]
    modebench datasets generate (GENERATOR | --suite S) [--preset tiny|small|full | --size N] [--generation-seed S] [--force]

`download` goes through minari (Minari ids), OGBench's server (OGBench names) and D4RL's file
URLs (D4RL names such as hopper-medium-v2); offline, it fails within seconds with the command
to run when online and the suite that runs without network. `generate` runs the offline
generators (benchmarks/tasks/generators), which write LOCAL datasets named as such.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from modebench.algorithms.config import ConfigError
from modebench.benchmarks.grammar import positive_int, seed_value


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("datasets", help="list, inspect, download or generate datasets")
    sub = p.add_subparsers(dest="datasets_command", required=True, metavar="ACTION")
    q = sub.add_parser("list", help="every suite's datasets, where they come from and whether they are here")
    q.add_argument("--suite", default=None, help="only this suite's datasets (default: every suite)")
    q.add_argument("--generators", action="store_true", help="list the offline generators and their presets instead")
    q.set_defaults(handler=cmd_list)
    q = sub.add_parser("info", help="size, dimensions and returns of a task's dataset (SUITE/TASK)")
    q.add_argument("task", metavar="SUITE/TASK", help="the task whose dataset to describe")
    q.set_defaults(handler=cmd_info)
    q = sub.add_parser("download", help="download datasets (needs network): suites, SUITE/TASK, or dataset ids")
    q.add_argument("targets", nargs="*", metavar="TARGET", help="a suite, SUITE/TASK, a Minari id, an OGBench or D4RL dataset name")
    q.add_argument("--suite", default=None, help="every dataset of this suite")
    q.add_argument("--force", action="store_true", help="download again even if present")
    q.set_defaults(handler=cmd_download)
    q = sub.add_parser("generate", help="build datasets offline with the benchmarks' own recipes")
    q.add_argument("generator", nargs="?", help="generator name (`modebench datasets list --generators`)")
    q.add_argument("--suite", default=None, help="every generated dataset of this suite (e.g. maze2d-local)")
    q.add_argument("--preset", default=None, choices=("tiny", "small", "full"), help="dataset size preset (default: small, or the suite's)")
    q.add_argument("--size", type=positive_int, default=None, help="explicit size (steps for pointmaze-*, episodes for ogbench-*)")
    q.add_argument("--generation-seed", dest="seed", type=seed_value, default=None, metavar="S",
                   help="seed of the generated data (default 0, or the suite's)")
    q.deprecated(("--seed",), "seed", "--generation-seed", type=seed_value)
    q.add_argument("--reference-episodes", type=positive_int, default=None, help="episodes per reference return (default: by preset)")
    q.add_argument("--force", action="store_true", help="regenerate even if present")
    q.set_defaults(handler=cmd_generate)


def cmd_list(args: argparse.Namespace) -> int:
    if args.generators:
        from modebench.benchmarks.tasks.generators import generators

        for gen in generators().values():
            presets = ", ".join(f"{k}={v}" for k, v in gen.presets.items())
            print(f"{gen.name:36s} {gen.unit:8s} {presets:36s} {gen.description}")
        return 0
    from modebench.benchmarks.tasks.sources import dataset_status
    from modebench.benchmarks.tasks.suites import load_suite, suite_names

    for suite in [args.suite] if args.suite else suite_names():
        for task in load_suite(suite).values():
            print(dataset_status(task).line())
    return 0


def cmd_info(args: argparse.Namespace) -> int:
    from modebench.benchmarks.tasks.suites import get_task

    task = get_task(args.task)
    data = task.load_dataset()
    returns = data.episode_returns()
    print(f"task            {task.id}")
    print(f"dataset         {data.name} ({', '.join(f'{k}={v}' for k, v in task.dataset.items())})")
    print(f"transitions     {len(data)} in {data.num_episodes} episodes")
    print(f"obs/act dims    {data.obs_dim} / {data.act_dim}")
    print(f"episode return  mean {returns.mean():.3f}, min {returns.min():.3f}, max {returns.max():.3f}")
    if task.score.get("kind") == "success":
        print("score           success rate x 100 (the env's info['success'])")
    else:
        low, high = task.reference_returns(data)
        print(f"reference       random {low:.4f}, expert {high:.4f} (normalised = 100 (R - random) / (expert - random))")
    print(f"terminals       {int(data.terminals.sum())}, timeouts {int(data.timeouts.sum())}")
    print(f"action range    [{float(data.actions.min()):.3f}, {float(data.actions.max()):.3f}]")
    record = _generation_record(task)
    if record:
        print("LOCAL dataset   generated on this machine (not the published data):")
        for key in ("recipe", "preset", "seed", "random_reference", "expert_reference", "generation_seconds"):
            if key in record:
                print(f"  {key:22s}{json.dumps(record[key]) if isinstance(record[key], dict) else record[key]}")
    return 0


def _generation_record(task) -> dict | None:
    from modebench.benchmarks.tasks.sources import dataset_status

    record = dataset_status(task).record
    return json.loads(Path(record).read_text()) if record and Path(record).exists() else None


def _resolve_targets(targets: list[str], suite: str | None):
    """Tasks for suite names / SUITE/TASK ids; ad-hoc tasks for raw dataset ids."""
    from modebench.benchmarks.tasks.sources import D4RL_ADROIT_ENVS
    from modebench.benchmarks.tasks.suites import (
        Task,
        get_task,
        load_suite,
        suite_names,
    )

    suites = set(suite_names())
    tasks = []
    for target in ([suite] if suite else []) + list(targets):
        if target in suites:
            tasks.extend(load_suite(target).values())
        elif "/" in target and target.split("/", 1)[0] in suites:
            tasks.append(get_task(target))
        elif "/" in target:  # a Minari id
            tasks.append(Task("dataset", target, {"source": "minari", "id": target}, {"source": "gym", "id": "none"}, 1, {"kind": "dataset"}))
        elif "singletask" in target or target.endswith(("-navigate-v0", "-play-v0", "-noisy-v0", "-stitch-v0", "-explore-v0")):
            name = target if "singletask" in target else target[: -len("-v0")] + "-singletask-v0"
            tasks.append(Task("dataset", target, {"source": "ogbench", "name": name}, {"source": "gym", "id": "none"}, 1, {"kind": "success"}))
        elif (target.endswith("-v2") and target.split("-", 1)[0] in ("halfcheetah", "hopper", "walker2d", "ant")) or (
                target.endswith("-v1") and target.split("-", 1)[0] in D4RL_ADROIT_ENVS):  # D4RL's Adroit -v1 files
            tasks.append(Task("dataset", target, {"source": "d4rl", "name": target}, {"source": "gym", "id": "none"}, 1, {"kind": "dataset"}))
        else:
            raise ConfigError(
                f"don't know what to download for {target!r}: give a suite ({', '.join(sorted(suites))}), SUITE/TASK, "
                "a Minari id (D4RL/pen/human-v2), an OGBench dataset (cube-single-play-v0) or a D4RL name (hopper-medium-v2, pen-human-v1)"
            )
    if not tasks:
        raise ConfigError("nothing to download: give a suite, SUITE/TASK or a dataset id (or --suite S)")
    return tasks


def cmd_download(args: argparse.Namespace) -> int:
    from modebench.benchmarks.tasks.sources import download_task

    for task in _resolve_targets(args.targets, args.suite):
        print(download_task(task, force=args.force), flush=True)
    return 0


def cmd_generate(args: argparse.Namespace) -> int:
    from modebench.benchmarks.tasks.generators import generate

    jobs: list[tuple[str, str | None, int, int | None]] = []
    if args.suite:
        from modebench.benchmarks.tasks.sources import generator_job
        from modebench.benchmarks.tasks.suites import load_suite

        for task in load_suite(args.suite).values():
            job = generator_job(task)
            if job is not None:
                name, preset, seed, size = job
                jobs.append((name, args.preset or preset, args.seed if args.seed is not None else seed, args.size or size))
        if not jobs:
            raise ConfigError(f"suite {args.suite!r} has no generated datasets (local suites: maze2d-local, ogbench-local)")
    elif args.generator:
        jobs.append((args.generator, args.preset or "small", args.seed or 0, args.size))
    else:
        raise ConfigError("give a generator name or --suite S (`modebench datasets list --generators` lists generators)")
    for name, preset, seed, size in dict.fromkeys(jobs):
        result = generate(name, preset, seed, size=size, force=args.force, reference_episodes=args.reference_episodes)
        stats = result.stats
        where = ", ".join(f"{k}: {v}" for k, v in result.paths.items())
        state = f"generated in {result.seconds:.0f} s" if result.generated else "already present"
        refs = f"reference returns random {stats.get('ref_min_score')}, expert {stats.get('ref_max_score')}"
        success = ""
        if stats.get("expert_reference"):
            success = f", expert success {stats['expert_reference']['success_rate']:.2f}"
        print(f"{name} ({preset}, seed {seed}): {state}; {where}; {refs}{success}", flush=True)
    return 0
