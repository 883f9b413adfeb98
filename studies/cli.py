"""The studies' commands: `claims` (run the claims' experiments, render results/claims.md) and
`cross-select`; and the study tables and figures that `tables`, `plots` and `report` write beside
the analysis's own (analysis cannot import the studies, so the command-line root hands it these
writers: `extend_analysis`).
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Sequence
from pathlib import Path


def register(subparsers: argparse._SubParsersAction) -> None:
    from modebench.studies import cross_select

    p = subparsers.add_parser("claims", help="measure each paper's mechanism claims on the toy suite -> results/claims.md, claims.csv")
    claims_arguments(p)
    p.set_defaults(handler=cmd_claims)
    cross_select.register(subparsers)  # `modebench cross-select`: stored proposers x GEM's selection


def claims_arguments(p: argparse.ArgumentParser) -> None:
    """The options of `modebench claims` (here, not in the runner: building the parser imports no torch)."""
    p.add_argument("--claims", default=None, help="comma-separated claim ids or methods (gem, lom, isep, drol); default: all")
    p.add_seeds(count_default=3)  # --num-seeds N, or --seeds S1,S2 (a list, as everywhere)
    p.add_argument("--quick", action="store_true", help="a smoke run at 2%% of the steps: the harness end to end, numbers meaningless")
    p.add_jobs(default=2)
    p.add_results(old=("--root",))
    p.add_device(default="cpu")  # the toy nets are fastest on the CPU
    p.add_argument("--render-only", action="store_true", help="run nothing: render the report from the stored records")


def user_errors() -> tuple[type[BaseException], ...]:
    from modebench.algorithms.config import ConfigError

    return (ConfigError,)


def cmd_claims(args: argparse.Namespace) -> int:
    from modebench.studies.claims.render import render_claims
    from modebench.studies.claims.runner import measurements_dir, run_from_args

    root, scale = run_from_args(args)
    for path in render_claims(measurements_dir(root), root, scale.name):
        print(f"wrote {path}")
    return 0


def budget_tables(root: str | Path, out: str | Path, *, protocol: str | None = None, seed: int = 0,
                  log: Callable[[str], None] = print) -> list[Path]:
    """The cross-selection and online-budget tables (studies/budget.py; imported when used)."""
    from modebench.studies import budget

    return budget.write_tables(root, out, protocol=protocol, seed=seed, log=log)


def budget_plots(root: str | Path, out: str | Path, formats: Sequence[str], *, protocol: str | None = None, seed: int = 0,
                 log: Callable[[str], None] = print) -> list[Path]:
    """The cross-selection and online-budget figures (studies/budget.py; imported when used)."""
    from modebench.studies import budget

    return budget.write_plots(root, out, formats, protocol=protocol, seed=seed, log=log)


def extend_analysis(subparsers: argparse._SubParsersAction) -> None:
    """`tables`, `plots` and `report` also write the studies' tables and figures."""
    for command in ("tables", "plots", "report"):
        subparsers.choices[command].set_defaults(study_tables=(budget_tables,), study_plots=(budget_plots,))
