"""`modebench`: the command-line root, above the parts.

    modebench train --algo NAME (--task SUITE/TASK | --dataset ID_OR_PATH) [--steps N] [--seeds 0,1,2] [--results DIR]
    modebench eval --checkpoint PATH [--knob NAME=V1,V2,...]... [--eval-episodes N]
    modebench bench [--suite toy | --suite FILE.yaml] [--methods a,b] [--num-seeds 3 | --seeds 0,1,2] [--steps N]
    modebench tables | plots | report [--results DIR]     (analysis.cli)
    modebench sweep GRID [--seeds 0,1,2] [--results DIR]  (sweeps.cli)
    modebench claims | cross-select ...                   (studies.cli)
    modebench profile | config | methods | suites | datasets ...   (benchmarks.cli)

Each part exposes `register(subparsers)` and `user_errors()`; only this module imports them
all, and no part imports it. Every parser is a `CommandParser` (benchmarks/grammar.py: the
shared flags, defined once). Every fault a user can act on is one line on stderr and an exit
status (docs/command-line.md): 2 bad input, 3 a file that cannot be written or read, 4 out of
memory, 130 interrupted; never a traceback.
"""

from __future__ import annotations

import argparse
import errno
import os
import signal
import sys

from modebench.analysis import cli as analysis_cli
from modebench.benchmarks import cli as benchmarks_cli
from modebench.benchmarks.grammar import (
    EXIT_INTERRUPTED,
    EXIT_MEMORY,
    EXIT_STORAGE,
    EXIT_USAGE,
    CommandParser,
)
from modebench.studies import cli as studies_cli
from modebench.sweeps import cli as sweeps_cli

PARTS = (benchmarks_cli, sweeps_cli, analysis_cli, studies_cli)


def user_errors() -> tuple[type[BaseException], ...]:
    return tuple(dict.fromkeys(err for part in PARTS for err in part.user_errors()))


# `modebench --help` lists the commands in the order a user needs them; a part's command not
# named here follows, in registration order.
EXIT_BROKEN_PIPE = 141  # 128 + SIGPIPE, what a Unix tool killed by a closed pipe reports

COMMAND_ORDER = ("train", "eval", "bench", "tables", "plots", "report", "sweep", "claims", "cross-select", "profile",
                 "config", "methods", "suites", "datasets")


def build_parser() -> argparse.ArgumentParser:
    """Every subcommand's parser; imports no torch (the parts import their heavy modules in the handlers)."""
    parser = CommandParser(
        prog="modebench",
        description="Offline RL under multimodal action data: GEM, LOM, ISEP(-FM), DROL, BC, IQL, FQL on one core.",
        epilog="Exit status: 0 done, 1 some runs failed, 2 bad command line or input, 3 a file could not be "
               "written or read (disk full, read-only, permissions, file-size limit), 4 out of memory, "
               "130 interrupted. docs/command-line.md describes every command.",
    )
    parser.add_argument("--version", action=VersionAction, nargs=0, help="print the installed version and exit")
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for part in PARTS:
        part.register(subparsers)
    studies_cli.extend_analysis(subparsers)  # the study tables and figures beside the analysis's own
    rank = {name: i for i, name in enumerate(COMMAND_ORDER)}
    subparsers._choices_actions.sort(key=lambda a: rank.get(a.dest, len(rank)))  # argparse keeps the help rows here
    ordered = sorted(subparsers.choices.items(), key=lambda item: rank.get(item[0], len(rank)))
    subparsers.choices.clear()  # and the names an error lists
    subparsers.choices.update(ordered)
    return parser


class VersionAction(argparse.Action):
    """`--version`, reading the installed version only when asked (importlib.metadata costs `--help` time)."""

    def __call__(self, parser, namespace, values, option_string=None):
        print(f"modebench {package_version()}")
        parser.exit()


def package_version() -> str:
    from modebench.benchmarks.store import DISTRIBUTION, installed_version

    # the distribution's name (modebench-rl), not the import name; None from a checkout that is not installed
    return installed_version(DISTRIBUTION) or "unknown (not installed)"


def fault_message(err: OSError) -> tuple[int, str]:
    """(exit status, one line) for an operating-system error: what failed, on which file, the fix."""
    where = f" {err.filename}" if err.filename else ""
    if err.errno == errno.EFBIG and where:
        where = f" to{where}"
    fixes = {
        errno.ENOSPC: "disk full: no space left to write{}; free space or pass --results DIR on another disk",
        errno.EDQUOT: "disk quota exceeded writing{}; free space or pass --results DIR elsewhere",
        errno.EROFS: "read-only file system: cannot write{}; pass --results DIR on a writable disk",
        errno.EACCES: "permission denied:{}; pass --results DIR you may write, or fix the folder's permissions",
        errno.EPERM: "operation not permitted:{}; pass --results DIR you may write, or fix the folder's permissions",
        errno.EFBIG: "file too large: a write{} went past the file-size limit (`ulimit -f`); raise the limit",
        errno.ENOTDIR: "not a folder:{} (a file stands where the results store needs a folder); pass --results DIR",
        errno.EEXIST: "not a folder:{} (a file stands where the results store needs a folder); pass --results DIR",
        errno.EISDIR: "is a folder:{} (the store expected a file there); move it aside",
        errno.EMFILE: "too many open files{}; raise `ulimit -n` or lower --jobs",
        errno.ENOMEM: "out of memory{}; lower --jobs, the batch size or the candidate count",
    }
    if err.errno in fixes:
        return (EXIT_MEMORY if err.errno == errno.ENOMEM else EXIT_STORAGE), fixes[err.errno].format(where)
    return EXIT_STORAGE, f"{err.strerror or err}:{where}"


def _is_out_of_memory(err: BaseException) -> bool:
    """MemoryError, torch.OutOfMemoryError, or the RuntimeError of torch's CPU allocator."""
    if isinstance(err, MemoryError) or type(err).__name__ == "OutOfMemoryError":
        return True
    return isinstance(err, RuntimeError) and "can't allocate memory" in str(err)


def main(argv: list[str] | None = None) -> int:
    """Run one command; returns its exit status (docs/command-line.md): every fault a user can act
    on is one line on stderr, never a traceback."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as done:  # --help, --version, or a command-line error already printed as one line
        return done.code if isinstance(done.code, int) else EXIT_USAGE
    # imported here, not at the top: it brings multiprocessing, which `--help` does not need
    from modebench.benchmarks.run.workers import keep_freed_memory

    keep_freed_memory()  # allocator settings for the whole process (benchmarks/run/workers.py)
    # past a file-size limit (ulimit -f) a write fails with EFBIG instead of killing the process
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    name = f"modebench {args.command}"
    try:
        return int(args.handler(args) or 0)
    except user_errors() as err:
        print(f"{name}: error: {err}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print(f"{name}: interrupted: finished evaluations are stored; run the same command again to resume", file=sys.stderr)
        return EXIT_INTERRUPTED
    except BrokenPipeError:  # `modebench suites | head`: the reader left; say nothing, as Unix tools do
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no second error when Python flushes stdout
        return EXIT_BROKEN_PIPE
    except OSError as err:
        status, message = fault_message(err)
        print(f"{name}: error: {message}", file=sys.stderr)
        return status
    except (MemoryError, RuntimeError) as err:
        if not _is_out_of_memory(err):
            raise
        print(f"{name}: error: out of memory ({str(err).splitlines()[0][:160]}); lower --jobs, the batch size "
              "(--set batch_size=...) or the candidate count (--knob N=...)", file=sys.stderr)
        return EXIT_MEMORY


if __name__ == "__main__":
    sys.exit(main())
