"""`modebench cross-select`: does GEM's selection help other actors? Every stored proposer run of
a results store with the GEM run on the same task, data, seed and updates, its proposals scored
by GEM's rule at several candidate budgets N (no retraining; benchmarks/run/compose.py composes
them through the plugin interface). studies/budget.py renders the table and the figure.
"""

from __future__ import annotations

import argparse
from pathlib import Path

SELECTOR = "gem"  # the method whose selection the study applies
PROPOSERS = ("gem", "lom", "drol", "isep", "isep-fm", "fql")  # default proposers
CROSS_N = (0, 1, 16, 64, 256)  # default candidate budgets (0: the proposer alone)


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("cross-select", help="every stored proposer's checkpoint with GEM's selection at several N (no retraining)")
    p.add_results(old=("--root",), what="read and written")
    p.add_argument("--suite", default=None, help="only runs of this suite (default: all)")
    p.add_argument("--proposers", default=",".join(PROPOSERS), help=f"comma-separated methods (default {','.join(PROPOSERS)})")
    p.add_argument("--knob", action="append", metavar="NAME=V1,V2,...",
                   help=f"selection knob grid (default N={','.join(map(str, CROSS_N))}; the selector run's own knobs otherwise)")
    p.add_eval_episodes()
    p.add_device()
    p.set_defaults(handler=cmd_cross_select)


def cmd_cross_select(args: argparse.Namespace) -> int:
    from modebench.benchmarks.cli import parse_knob_grid
    from modebench.benchmarks.run.compose import select_stored
    from modebench.benchmarks.store import DEFAULT_ROOT

    proposers = [m.strip() for m in args.proposers.split(",") if m.strip()]
    grid = parse_knob_grid(args.knob) if args.knob else {"N": [str(n) for n in CROSS_N]}
    select_stored(Path(args.results) if args.results else DEFAULT_ROOT, proposers, grid, selector=SELECTOR, suite=args.suite,
                  episodes=args.eval_episodes, device=args.device)
    return 0
