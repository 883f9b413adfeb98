"""`modebench`: the command line.

    modebench train --algo NAME (--task SUITE/TASK | --dataset ID_OR_PATH) --steps N --seed S [--out DIR]
    modebench eval --checkpoint PATH [--knob NAME=V1,V2,...]...
    modebench bench --suite toy [--methods a,b] [--seeds 3] [--steps N]
    modebench methods | suites | datasets ...

Each subcommand lives in a module that exposes `register(subparsers)`; the module list below
is the whole wiring. Errors a user can fix (unknown names, bad values, missing data) print one
clear line and exit with status 2, never a traceback.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from algorithms.config import ConfigError, parse_assignments

SUBCOMMAND_MODULES = [
    "benchmarks.cli_core",
    "benchmarks.cli_datasets",
    "sweeps.cli",
    "analysis.cli",
]


def parse_knob_grid(items: list[str] | None) -> dict[str, list[str]]:
    """`--knob N=1,64,1024` -> {"N": ["1", "64", "1024"]}."""
    return {k: [v.strip() for v in value.split(",") if v.strip()] for k, value in parse_assignments(items, "--knob").items()}


def user_errors() -> tuple[type[BaseException], ...]:
    from algorithms.registry import UnknownMethodError
    from benchmarks.data import DatasetError
    from benchmarks.minari_io import MissingDatasetError
    from benchmarks.suites import UnknownNameError

    return (ConfigError, UnknownMethodError, UnknownNameError, DatasetError, MissingDatasetError, FileNotFoundError)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="modebench",
        description="Offline RL under multimodal action data: GEM, LOM, ISEP(-FM), DROL, BC, IQL, FQL on one core.",
    )
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for module in SUBCOMMAND_MODULES:
        importlib.import_module(module).register(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
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
