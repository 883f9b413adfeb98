"""One-page Markdown report of the results store: what was run, the main tables, every figure."""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path

import pandas as pd
from modebench.analysis import facts, stats
from modebench.analysis.records import (
    ScoreRule,
    damaged_in,
    default_root,
    describe_protocol,
    load_records,
    method_order,
    protocols_in,
)
from modebench.benchmarks.store import atomic_write_bytes


def _rel(path: Path, start: Path) -> str:
    return os.path.relpath(path, start).replace(os.sep, "/")


def _summary(frame: pd.DataFrame, rule: ScoreRule, methods: Sequence[str] | None = None) -> list[str]:
    runs = frame["run_id"].nunique()
    commits = frame["commit"] if "commit" in frame else frame["git_revision"]  # provenance's commit, else the older field
    revisions = sorted(set(commits.dropna().astype(str)) - {"unknown"})
    lines = [
        f"- {len(frame)} evaluation records from {runs} runs; {rule.describe()}.",
        f"- Protocols: {', '.join(protocols_in(frame))} (each shown on its own, never mixed).",
        f"- Methods: {', '.join(facts.display(m) for m in method_order(frame))}.",
        f"- Tasks: {', '.join(sorted(frame['task'].unique()))}.",
        (f"- Seeds: {', '.join(str(s) for s in sorted(frame['seed'].unique()))}; "
        f"training steps: {', '.join(str(s) for s in sorted(frame['total_steps'].dropna().astype(int).unique()))}."),
        f"- Code revisions: {', '.join(revisions) or 'unknown'}"
        + (" -- more than one: results from different code are mixed (tables mark such cells †)." if len(revisions) > 1 else "")
        + (" -- uncommitted changes (+dirty)." if any(r.endswith("+dirty") for r in revisions) else ""),
        f"- Devices: {', '.join(sorted(frame['device'].dropna().astype(str).unique()))}.",
    ]
    # the tables' own counts, so report and tables agree
    from modebench.analysis.tables import store_counts

    lines += [f"- Counted, {line}." for line in store_counts(frame, rule=rule, methods=methods)]
    lines += [f"- Damaged record (in no table): {line}" for line in damaged_in(frame)["line"]]
    return lines


def build_report(root: str | Path | None = None, *, rule: ScoreRule | str | None = None, methods: Sequence[str] | None = None,
                 reps: int = stats.REPS, seed: int = 0, formats: Sequence[str] = ("png", "pdf"),
                 study_tables: Sequence[Callable[..., list[Path]]] = (), study_plots: Sequence[Callable[..., list[Path]]] = (),
                 html: bool = False, log: Callable[[str], None] = print) -> Path:
    """Regenerate results/tables and results/plots from the stored records and write results/report.md
    (and, with `html`, the self-contained results/report.html: analysis/report_html.py). Returns the
    report written last."""
    from modebench.analysis.plots import build_plots, caption
    from modebench.analysis.tables import build_tables

    root = Path(root) if root is not None else default_root()
    rule = ScoreRule.parse(rule)
    notes: list[str] = []

    def collect(message: str) -> None:
        log(message)
        if "skipped" in message or "left out" in message or "leave out" in message or "no ablation" in message:
            notes.append(message)

    frame = load_records(root)
    report = root / "report.md"
    lines = ["# ModeBench results report", "",
             f"Regenerated from the stored evaluation records under `{root}/` by `modebench report` (no training).", ""]
    if html:
        lines[-1:] = ["The same report as one self-contained file, every figure inside it: [report.html](report.html).", ""]
    if frame.empty:
        lines += ["No evaluation records yet: run `make bench SUITE=toy` (or `modebench train ...`), then `make tables plots`."]
        lines += [f"- Damaged record (not read): {line}" for line in damaged_in(frame)["line"]]
        atomic_write_bytes(report, ("\n".join(lines) + "\n").encode())
        log(f"report: {report} (empty store)")
        if html:
            from modebench.analysis.report_html import write_html_report

            page = write_html_report(root, frame, rule, [], [], [lines[-1].replace("`", "")], [])
            log(f"report: {page} (empty store)")
            return page
        return report
    tables = build_tables(root, rule=rule, methods=methods, reps=reps, seed=seed, frame=frame, study_tables=study_tables,
                          log=collect)
    plots = build_plots(root, rule=rule, methods=methods, formats=formats, reps=reps, seed=seed, frame=frame,
                        study_plots=study_plots, log=collect)
    lines += ["## What is in the store", ""] + _summary(frame, rule, methods) + [""]

    def inline(path: Path, heading: str) -> None:
        if path.exists():
            lines.extend([f"### {heading}", "", path.read_text().replace("### ", "#### ", 1), ""])

    for protocol in protocols_in(frame):
        lines += [f"## Results under the {describe_protocol(protocol)}", ""]
        inline(root / "tables" / protocol / "main_gem_layout.md", "Scores per task")
        inline(root / "tables" / protocol / "aggregates.md", "Aggregate scores")
    pngs = sorted(p for p in plots if p.suffix == ".png")
    if pngs:
        lines += ["## Figures", ""]
        for png in pngs:
            pdf = png.with_suffix(".pdf")
            data = png.with_suffix(".csv")
            links = [f"[png]({_rel(png, root)})"] + ([f"[pdf]({_rel(pdf, root)})"] if pdf.exists() else []) + (
                [f"[data]({_rel(data, root)})"] if data.exists() else [])
            lines += [f"**{png.parent.name}/{png.stem}** ({' · '.join(links)})", "", f"![{png.stem}]({_rel(png, root)})", "",
                      f"*{caption(png.stem) or png.stem}*", ""]
    bases = sorted({p.with_suffix("") for p in tables if p.parent.name != "profile"})
    if bases:
        lines += ["## All tables", "", "| protocol | table | Markdown | LaTeX | CSV |", "|:---|:---|:---|:---|:---|"]
        for base in bases:
            lines.append(f"| {base.parent.name} | {base.name} | [md]({_rel(base.with_suffix('.md'), root)}) "
                         f"| [tex]({_rel(base.with_suffix('.tex'), root)}) | [csv]({_rel(base.with_suffix('.csv'), root)}) |")
        lines.append("")
    profile_tables = sorted(p for p in tables if p.parent.name == "profile" and p.suffix == ".md")
    lines += ["## Deployment profile", ""]
    if profile_tables:
        for path in profile_tables:
            lines += [f"- [{path.stem}]({_rel(path, root)}) ([csv]({_rel(path.with_suffix('.csv'), root)}))"]
    else:
        lines += [("Not measured yet: `make profile` (or `modebench profile`) stores act latency / memory records; "
                   "`modebench tables` renders them.")]
    lines.append("")
    if notes:
        lines += ["## Not shown, and why", ""] + [f"- {n}" for n in notes] + [""]
    atomic_write_bytes(report, "\n".join(lines).encode())
    log(f"report: {report}")
    if html:
        from modebench.analysis.report_html import write_html_report

        page = write_html_report(root, frame, rule, tables, plots, _summary(frame, rule), notes)
        log(f"report: {page} ({page.stat().st_size / 1e6:.1f} MB, one self-contained file: open it in a browser)")
        return page
    return report
