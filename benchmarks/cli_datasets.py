"""Subcommand `datasets`: what data each suite uses and whether it is on this machine."""

from __future__ import annotations

import argparse

import numpy as np


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("datasets", help="list, inspect, download or generate datasets")
    sub = p.add_subparsers(dest="datasets_command", required=True, metavar="ACTION")
    q = sub.add_parser("list", help="every suite's datasets and where they come from")
    q.add_argument("--suite", default=None)
    q.set_defaults(handler=cmd_list)
    q = sub.add_parser("info", help="size, dimensions and returns of a task's dataset (SUITE/TASK)")
    q.add_argument("task")
    q.set_defaults(handler=cmd_info)


def cmd_list(args: argparse.Namespace) -> int:
    from benchmarks.suites import load_suite, suite_names

    for suite in [args.suite] if args.suite else suite_names():
        for task in load_suite(suite).values():
            source = ", ".join(f"{k}={v}" for k, v in task.dataset.items())
            print(f"{task.id:48s} {source}")
    return 0


def cmd_info(args: argparse.Namespace) -> int:
    from benchmarks.suites import get_task

    task = get_task(args.task)
    data = task.load_dataset()
    returns = data.episode_returns()
    low, high = task.reference_returns(data)
    print(f"task            {task.id}")
    print(f"dataset         {data.name} ({', '.join(f'{k}={v}' for k, v in task.dataset.items())})")
    print(f"transitions     {len(data)} in {data.num_episodes} episodes")
    print(f"obs/act dims    {data.obs_dim} / {data.act_dim}")
    print(f"episode return  mean {returns.mean():.3f}, min {returns.min():.3f}, max {returns.max():.3f}")
    print(f"reference       random {low:.4f}, expert {high:.4f} (normalised = 100 (R - random) / (expert - random))")
    print(f"terminals       {int(data.terminals.sum())}, timeouts {int(data.timeouts.sum())}")
    print(f"action range    [{float(np.min(data.actions)):.3f}, {float(np.max(data.actions)):.3f}]")
    return 0
