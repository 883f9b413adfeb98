"""`modebench`: the command-line root, above the four parts.

    modebench train --algo NAME (--task SUITE/TASK | --dataset ID_OR_PATH) --steps N --seed S [--out DIR]
    modebench eval --checkpoint PATH [--knob NAME=V1,V2,...]...
    modebench bench --suite toy [--methods a,b] [--seeds 3] [--steps N]
    modebench methods | suites | datasets ...        (benchmarks.cli)
    modebench sweep GRID ...                          (sweeps.cli)
    modebench tables | plots | profile | report ...   (analysis.cli)
    modebench claims [--claims ID,...] [--seeds 3] [--quick]   (studies.claims runs and renders)
    modebench cross-select [--root results] [--proposers a,b] [--knob N=0,16]   (studies.cross_select)

Each part exposes `register(subparsers)` and `user_errors()`; only this module imports them
all, and no part imports it. Errors a user can fix (unknown names, bad values, missing data)
print one clear line and exit with status 2, never a traceback.
"""

from __future__ import annotations

import argparse
import sys

from modebench.analysis import cli as analysis_cli
from modebench.benchmarks import cli as benchmarks_cli
from modebench.benchmarks.run.workers import keep_freed_memory
from modebench.studies import cli as studies_cli
from modebench.sweeps import cli as sweeps_cli

PARTS = (benchmarks_cli, sweeps_cli, analysis_cli, studies_cli)


def user_errors() -> tuple[type[BaseException], ...]:
    return tuple(dict.fromkeys(err for part in PARTS for err in part.user_errors()))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="modebench",
        description="Offline RL under multimodal action data: GEM, LOM, ISEP(-FM), DROL, BC, IQL, FQL on one core.",
    )
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for part in PARTS:
        part.register(subparsers)
    studies_cli.extend_analysis(subparsers)  # the study tables and figures beside the analysis's own
    return parser


def main(argv: list[str] | None = None) -> int:
    keep_freed_memory()  # allocator settings for the whole process (benchmarks/run/workers.py)
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.handler(args) or 0)
    except user_errors() as err:
        print(f"modebench {args.command}: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted: finished evaluations are stored; run the same command again to resume", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
