"""Subcommands tables, plots, report: regenerate results/ from the stored records (no training).

    modebench tables  [--results DIR] [--output-dir DIR] [--score final|last:K|best] [--methods a,b] [--reps 50000] [--bootstrap-seed 0]
    modebench plots   [same] [--formats png,pdf]
    modebench report  [same as tables]   (tables + plots + results/report.md linking them)

(`modebench profile`, which MEASURES act, is a run and belongs to the core: benchmarks/run/profile.py;
`tables` renders its records.)
"""

from __future__ import annotations

import argparse
from pathlib import Path

from modebench.analysis.errors import AnalysisError


def user_errors() -> tuple[type[BaseException], ...]:
    """Errors a user can fix: a bad option value, a record the store cannot read, a missing file.
    (The store is imported here, not at the top: `modebench --help` builds this parser.)"""
    from modebench.benchmarks.store import StoreError

    return (AnalysisError, StoreError, FileNotFoundError)


def _common(p: argparse.ArgumentParser, output: str | None) -> None:
    """The options of tables, plots and report; `p` is the root's parser (`add_results`, `deprecated`)."""
    p.add_results(old=("--root",))
    if output:
        p.add_argument("--output-dir", metavar="DIR", default=None, help=f"where the {output} go (default: RESULTS/{output})")
        p.deprecated(("--out",), "output_dir", "--output-dir")
    p.add_argument("--score", default="final",
                   help="which evaluations count as a run's score: final (default), last:K (mean of the last K), best (optimistic)")
    p.add_methods("every non-preset method in the store")
    p.add_argument("--reps", type=int, default=50_000, metavar="N", help="bootstrap replicates for the 95%% CIs (default 50000)")
    p.add_argument("--bootstrap-seed", type=int, default=0, metavar="S", help="bootstrap random state (default 0)")
    p.deprecated(("--seed",), "bootstrap_seed", "--bootstrap-seed", type=int)


def register(subparsers: argparse._SubParsersAction) -> None:
    """tables, plots, report; each takes the studies' writers from the root (`study_tables`, `study_plots`)."""
    p = subparsers.add_parser("tables", help="paper-layout tables (Markdown, LaTeX, CSV) from the stored records")
    _common(p, "tables")
    p.set_defaults(handler=cmd_tables, study_tables=(), study_plots=())

    p = subparsers.add_parser("plots", help="paper figures (PNG, PDF, data CSV) from the stored records")
    _common(p, "plots")
    p.add_argument("--formats", default="png,pdf", metavar="png,pdf,svg", help="comma-separated image formats from png, pdf, svg (default png,pdf)")
    p.set_defaults(handler=cmd_plots, study_tables=(), study_plots=())

    p = subparsers.add_parser("report", help="tables + plots + a one-page results/report.md linking them")
    _common(p, None)  # report writes into RESULTS/tables, RESULTS/plots and RESULTS/report.md
    p.add_argument("--formats", default="png,pdf", metavar="png,pdf,svg", help="comma-separated image formats from png, pdf, svg (default png,pdf)")
    p.add_argument("--html", action="store_true",
                   help="also write results/report.html: one self-contained file (tables, figures, provenance) to open in a browser")
    p.set_defaults(handler=cmd_report, study_tables=(), study_plots=())


def _options(args: argparse.Namespace) -> dict:
    from modebench.analysis.records import ScoreRule

    if args.reps < 1:
        raise AnalysisError(f"--reps must be >= 1, got {args.reps}")
    return {"rule": ScoreRule.parse(args.score), "methods": args.methods, "reps": args.reps, "seed": args.bootstrap_seed}


def _formats(text: str) -> list[str]:
    formats = [f.strip() for f in text.split(",") if f.strip()]
    if not formats or set(formats) - {"png", "pdf", "svg"}:
        raise AnalysisError(f"--formats {text!r}: choose from png, pdf, svg")
    return formats


def cmd_tables(args: argparse.Namespace) -> int:
    from modebench.analysis.tables import build_tables

    build_tables(args.results, args.output_dir, study_tables=args.study_tables, **_options(args))
    return 0


def cmd_plots(args: argparse.Namespace) -> int:
    from modebench.analysis.plots import build_plots

    build_plots(args.results, args.output_dir, formats=_formats(args.formats), study_plots=args.study_plots, **_options(args))
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from modebench.analysis.report import build_report

    build_report(Path(args.results) if args.results else None, formats=_formats(args.formats), study_tables=args.study_tables,
                 study_plots=args.study_plots, html=args.html, **_options(args))
    return 0
