"""The command line's one grammar: every flag two subcommands share is defined here, once.

The root (modebench/cli.py) builds every parser as a `CommandParser`, so a part's
`register(subparsers)` adds a shared flag with `p.add_results()`, `p.add_seeds()`, ... on the
parser it is handed, without importing this module (analysis imports nothing of the core but
the store: tests/test_imports.py). It lives in benchmarks, the lowest part with a command line,
so the root, benchmarks' and the sweeps' commands can import its value types. The shared flags:

    --results DIR        the results root (default results/ or $MODEBENCH_RESULTS), every command
    --seeds S1,S2,...    a LIST of seeds, every command that trains (`--num-seeds N` = 0..N-1)
    --eval-episodes N    evaluation episodes, every command that evaluates
    --device NAME        auto, cpu, cuda, cuda:N or mps
    --protocol NAME      controlled or published
    --methods A,B        comma-separated method names

Old spellings (`--out` / `--root` for the results root, `--episodes`, a per-command `--seed`)
are hidden aliases that still work and print a one-line notice. Errors of the command line are
one line (`modebench train: error: ...`) and exit status 2, with "did you mean" on a misspelt
subcommand or choice. This module imports nothing but the standard library, so `modebench
--help` never pays for torch.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
from collections.abc import Sequence
from pathlib import Path

from modebench.algorithms.config import close_matches

# Exit statuses of every command (docs/command-line.md lists them with the faults behind each).
EXIT_OK = 0
EXIT_FAILED_RUNS = 1  # the command ran, but some runs diverged, were busy or failed a check
EXIT_USAGE = 2  # the command line or an input is wrong: the message names it and the fix
EXIT_STORAGE = 3  # a file could not be written or read: disk full, read-only, permissions, size limit
EXIT_MEMORY = 4  # the machine ran out of memory
EXIT_INTERRUPTED = 130  # SIGINT / SIGTERM: finished work is stored, the same command resumes

MAX_SEED = 2**32 - 1  # numpy's and gymnasium's seeds are 32-bit
MAX_EVAL_EPISODES = 10_000  # episodes of one evaluation run as one vector env: one env instance each
MAX_JOBS = 256  # worker processes of one command; each holds its own torch, data and model
DEVICE_NAMES = ("auto", "cpu", "cuda", "cuda:N", "mps")
PROTOCOL_NAMES = ("controlled", "published")
_DEVICE = re.compile(r"^(auto|cpu|mps|cuda(:\d+)?)$")


# ----------------------------------------------------------------------------- value types


def device_name(text: str) -> str:
    if not _DEVICE.match(text):
        hint = "; did you mean cuda?" if text.lower().startswith("gpu") else close_matches(text, ("auto", "cpu", "cuda", "mps"))
        raise argparse.ArgumentTypeError(f"unknown device {text!r}{hint} "
                                         f"(choose {', '.join(DEVICE_NAMES)})")
    return text


def seed_value(text: str) -> int:
    try:
        seed = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"seed {text!r} is not an integer") from None
    if not 0 <= seed <= MAX_SEED:
        raise argparse.ArgumentTypeError(f"seed {seed} is out of range: seeds are integers in [0, {MAX_SEED}]")
    return seed


def comma_items(text: str, what: str) -> list[str]:
    """`a, b,` -> ['a', 'b']; nothing at all is an error asking for `what`."""
    items = [item.strip() for item in text.split(",") if item.strip()]
    if not items:
        raise argparse.ArgumentTypeError(f"{text!r}: give comma-separated {what}")
    return items


def seed_list(text: str) -> list[int]:
    """`0,1,2` -> [0, 1, 2]: distinct seeds in [0, 2**32 - 1]."""
    seeds = [seed_value(item) for item in comma_items(text, "seeds, e.g. 0,1,2")]
    if len(set(seeds)) != len(seeds):
        twice = sorted({seed for seed in seeds if seeds.count(seed) > 1})
        raise argparse.ArgumentTypeError(f"{text!r}: seeds must be distinct ({', '.join(map(str, twice))} given twice)")
    return seeds


def bounded_int(low: int, high: int | None = None, why: str = ""):
    """An argparse type: an integer in [low, high]."""
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
        if value < low or (high is not None and value > high):
            span = f"in [{low}, {high}]" if high is not None else f">= {low}"
            raise argparse.ArgumentTypeError(f"must be an integer {span}, got {value}{f' ({why})' if why else ''}")
        return value

    parse.__name__ = "integer"  # argparse names the type in its own messages
    return parse


positive_int = bounded_int(1)
episode_count = bounded_int(1, MAX_EVAL_EPISODES, "one env instance per episode")
seed_count = bounded_int(1, 1000)
job_count = bounded_int(1, MAX_JOBS, "one process each")


def results_dir(text: str) -> str:
    """A results root: a folder, or a path where one can be made (never an existing file)."""
    path = Path(text).expanduser()
    if path.exists() and not path.is_dir():
        raise argparse.ArgumentTypeError(f"{text} is a file; the results root must be a folder (give a new or existing folder)")
    return text


def method_list(text: str) -> list[str]:
    return comma_items(text, "method names (`modebench methods` lists them)")


# ----------------------------------------------------------------------------- the parser


class _DeprecatedAlias(argparse.Action):
    """An old spelling of a flag: hidden from --help, same value, a one-line notice."""

    def __init__(self, option_strings, dest, replacement: str = "", **kwargs):
        super().__init__(option_strings, dest, help=argparse.SUPPRESS, **kwargs)
        self.replacement = replacement

    def __call__(self, parser, namespace, values, option_string=None):
        print(f"{parser.prog}: note: {option_string} is deprecated; use {self.replacement}", file=sys.stderr)
        setattr(namespace, self.dest, values)


class CommandParser(argparse.ArgumentParser):
    """argparse with one-line errors, "did you mean", no abbreviated flags, and the shared flags."""

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("allow_abbrev", False)  # `--out` must never silently mean `--output-dir`
        super().__init__(*args, **kwargs)

    def error(self, message: str):
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message} (`{self.prog} --help` lists the options)\n")

    def _check_value(self, action, value):
        if action.choices is not None and value not in action.choices:
            names = [str(c) for c in action.choices]
            raise argparse.ArgumentError(
                action, f"invalid choice {value!r}{close_matches(str(value), names)} (choose from {', '.join(names)})")

    def deprecated(self, old: Sequence[str], dest: str, replacement: str, type=None) -> None:
        """Hidden old spellings `old` of the flag `replacement` (value into `dest`)."""
        self.add_argument(*old, dest=dest, action=_DeprecatedAlias, replacement=replacement, type=type)

    # the shared flags -------------------------------------------------------------------------

    def add_results(self, old: Sequence[str] = (), what: str = "") -> None:
        self.add_argument("--results", metavar="DIR", type=results_dir, default=None,
                          help="results root: records, runs, tables, plots (default: results/ or $MODEBENCH_RESULTS)"
                          + (f"; {what}" if what else ""))
        if old:
            self.deprecated(old, "results", "--results", type=results_dir)

    def add_seeds(self, count_default: int | None = None, single: bool = False) -> None:
        """`--seeds S1,S2,...` (a list), with `--num-seeds N` (seeds 0..N-1) when `count_default` is
        given or 0 (0: the count defaults to the protocol's), or `--seed S` when `single`."""
        group = self.add_mutually_exclusive_group()
        group.add_argument("--seeds", metavar="S1,S2,...", type=seed_list, default=None,
                           help="a list of seeds, e.g. 0,1,2 (integers in [0, 2**32-1])")
        if single:
            group.add_argument("--seed", type=seed_value, default=None, metavar="S", help="one seed (same as --seeds S; default 0)")
        if count_default is not None:
            group.add_argument("--num-seeds", metavar="N", type=seed_count, default=None,
                               help="seeds 0..N-1" + (f" (default {count_default})" if count_default else " (default: the protocol's)"))

    def add_eval_episodes(self) -> None:
        self.add_argument("--eval-episodes", metavar="N", type=episode_count, default=None,
                          help="evaluation episodes (default: the task's)")
        self.deprecated(("--episodes",), "eval_episodes", "--eval-episodes", type=episode_count)

    def add_device(self, default: str = "auto") -> None:
        self.add_argument("--device", type=device_name, default=default, metavar="{auto,cpu,cuda,cuda:N,mps}",
                          help=f"where to compute: auto = CUDA when present, else CPU (default {default})")

    def add_protocol(self, default: str | None = "controlled") -> None:
        self.add_argument("--protocol", choices=PROTOCOL_NAMES, default=default,
                          help="controlled: one shared setting per suite; published: each paper's own settings "
                               f"(default {default or 'the grid file`s, else controlled'}); part of a run's identity")

    def add_methods(self, default: str) -> None:
        self.add_argument("--methods", metavar="A,B,...", type=method_list, default=None,
                          help=f"comma-separated method names (`modebench methods` lists them; default: {default})")

    def add_jobs(self, default: int | None = None) -> None:
        cores = os.cpu_count() or 1
        self.add_argument("--jobs", metavar="N", type=job_count,
                          default=default or cores, help=f"worker processes in parallel (default {default or 'all cores'})")
