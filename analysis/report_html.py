"""`modebench report --html`: the report as ONE self-contained HTML file (results/report.html).

Everything is inside the file: the tables (the fragments `Table.write` leaves beside each table's
Markdown), every PNG figure as a base64 data URI with its caption (analysis/plots.py `caption`),
what each table cell is made of (runs, seeds, training steps, evaluation episodes, normaliser,
protocol) and where the runs came from (the records' provenance: commit, device, package
versions, command). No script, no external stylesheet, font or image: it opens from disk in any
browser, mailed or copied alone.

Every embedded table carries `data-table="<protocol>/<name>"` and every figure
`data-figure="<protocol>/<name>"`; the contents list at the top names each of them once, so a
reader (and tests/test_report_html.py) can check that everything the report names is in it.
"""

from __future__ import annotations

import base64
import json
import re
from collections.abc import Sequence
from html import escape
from pathlib import Path

import pandas as pd
from modebench.analysis import facts
from modebench.analysis.records import (
    ScoreRule,
    describe_protocol,
    main_runs,
    method_order,
    protocols_in,
    select_scores,
)
from modebench.benchmarks.store import atomic_write_bytes, read_record

MAIN_TABLES = (("main_gem_layout", "Scores per task"), ("aggregates", "Aggregate scores"))
PROVENANCE_KEYS = ("git_commit", "git_dirty", "modebench", "python", "torch", "numpy", "gymnasium", "mujoco", "minari",
                   "ogbench", "device_name")

STYLE = """
body { font-family: system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; margin: 2em auto; max-width: 1100px;
       padding: 0 1em; color: #1a1a1a; line-height: 1.45; }
h1 { font-size: 1.7em; } h2 { border-bottom: 1px solid #ccc; padding-bottom: .2em; margin-top: 2em; }
nav ol { columns: 2; font-size: .92em; }
table { border-collapse: collapse; margin: .8em 0 1.4em; font-size: .88em; }
caption { caption-side: top; text-align: left; font-weight: 600; padding-bottom: .3em; }
th, td { border-bottom: 1px solid #ddd; padding: .25em .6em; text-align: right; white-space: nowrap; }
th:first-child, td:first-child, th.l, td.l { text-align: left; }
thead th { border-bottom: 2px solid #888; }
tr.section th { text-align: left; font-style: italic; background: #f4f4f4; }
ul.notes { font-size: .85em; color: #444; margin-top: -.8em; }
figure { margin: 1.2em 0 2em; }
figure img { display: block; max-width: 100%; height: auto; border: 1px solid #eee; }
figcaption { font-size: .9em; color: #333; margin-top: .4em; max-width: 60em; }
code { background: #f4f4f4; padding: 0 .2em; }
.wide { overflow-x: auto; }
"""


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")


def _figure(png: Path, key: str, number: int) -> str:
    from modebench.analysis.plots import caption

    data = base64.b64encode(png.read_bytes()).decode("ascii")
    text = caption(png.stem) or f"Figure {png.stem}."
    return (f'<figure id="{_slug("figure-" + key)}" data-figure="{escape(key)}">\n'
            f'<img src="data:image/png;base64,{data}" alt="{escape(text)}">\n'
            f"<figcaption><b>Figure {number}.</b> {escape(text)} <code>{escape(key)}.png</code></figcaption>\n</figure>")


def _table(fragment: Path, key: str) -> str:
    """The table fragment `Table.write` left, tagged with its protocol-qualified name."""
    html = fragment.read_text()
    return f'<div class="wide" id="{_slug("table-" + key)}">\n' + html.replace(
        f'data-table="{fragment.stem}"', f'data-table="{escape(key)}"', 1) + "</div>"


def _cells(frame: pd.DataFrame, rule: ScoreRule, key: str, provenances: dict[str, dict]) -> str:
    """One row per (method, task) of the main tables: what its number is made of."""
    main, _ = main_runs(select_scores(frame, rule))
    if main.empty:
        return f'<div id="{_slug("table-" + key)}"><table data-table="{escape(key)}"><tr><td>No run is in the main tables.</td></tr></table></div>'
    records = frame[frame["run_id"].isin(set(main["run_id"]))]
    rows = []
    for (method, task), part in main.groupby(["method", "task"], sort=False):
        runs = records[records["run_id"].isin(set(part["run_id"]))]
        rows.append({
            "method": facts.display(method), "task": task, "runs": part["run_id"].nunique(),
            "seeds": ", ".join(str(int(s)) for s in sorted(part["seed"].unique())),
            "steps": _values(runs["total_steps"]), "eval episodes": _values(runs["eval_episodes"]),
            "normaliser": _values(runs["normaliser_key"].map(_normaliser)),
            "protocol": _values(runs["protocol"]),
            "provenance": _values(pd.Series([_provenance_id(provenances[r]) for r in part["run_id"].unique()])),
        })
    table = pd.DataFrame(rows)
    numeric = {"runs", "steps", "eval episodes"}
    head = "".join(f'<th class="{"" if c in numeric else "l"}">{escape(c)}</th>' for c in table.columns)
    body = "\n".join("<tr>" + "".join(f'<td class="{"" if c in numeric else "l"}">{escape(str(v))}</td>'
                                       for c, v in zip(table.columns, row)) + "</tr>" for row in table.itertuples(index=False))
    return (f'<div class="wide" id="{_slug("table-" + key)}"><table data-table="{escape(key)}"><caption>What each cell of the '
            "main tables is made of: runs (one per seed), training steps, evaluation episodes per record, normaliser, "
            f"protocol and provenance (code and device; details below)</caption>\n<thead><tr>{head}</tr></thead>\n<tbody>\n"
            f"{body}\n</tbody></table></div>")


def _values(column: pd.Series) -> str:
    values = sorted({str(int(v)) if isinstance(v, float) and v.is_integer() else str(v) for v in column.dropna() if v != ""})
    return ", ".join(values) if values else "not recorded"


def _normaliser(key: str) -> str | None:
    """records' normaliser_key (canonical [kind, ref_min, ref_max]) as 'kind [min, max]'; None where not recorded."""
    if not key:
        return None
    kind, low, high = json.loads(key)
    numbers = all(isinstance(v, (int, float)) for v in (low, high))
    return f"{kind} [{low:.4g}, {high:.4g}]" if numbers else str(kind)


def _provenances(frame: pd.DataFrame) -> dict[str, dict]:
    """Each run's provenance, read from one of its records (the frame keeps only the commit); a record
    older than schema 3 has none and says what it can: its code revision and device."""
    out: dict[str, dict] = {}
    for run_id, path, revision, device in zip(frame["run_id"], frame["path"], frame["git_revision"], frame["device"]):
        if run_id in out:
            continue
        spec = read_record(path).get("provenance")
        if not isinstance(spec, dict):
            revision = str(revision)
            spec = {"git_commit": revision.removesuffix("+dirty"), "git_dirty": revision.endswith("+dirty"),
                    "device_name": str(device), "command": None, "_older": True}
        out[run_id] = spec
    return out


def _provenance_id(spec: dict) -> str:
    commit = (spec.get("git_commit") or "unknown")[:10] + ("+dirty" if spec.get("git_dirty") else "")
    return f"{commit} on {spec.get('device_name') or 'unknown device'}"


def _provenance(frame: pd.DataFrame, provenances: dict[str, dict]) -> str:
    """One row per distinct provenance (code, packages, device) with its runs and a command that wrote them."""
    groups: dict[str, dict] = {}
    methods = dict(zip(frame["run_id"], frame["method"]))
    for run_id, spec in provenances.items():
        key = json.dumps({k: spec.get(k) for k in PROVENANCE_KEYS}, sort_keys=True)
        group = groups.setdefault(key, {"spec": spec, "runs": set(), "methods": set(), "commands": set()})
        group["runs"].add(run_id)
        group["methods"].add(methods[run_id])
        if spec.get("command"):
            group["commands"].add(spec["command"])
    head = "".join(f'<th class="{"" if c == "runs" else "l"}">{escape(c)}</th>'
                   for c in ("code and device", "runs", "methods", "versions", "a command that wrote them"))
    rows = []
    for group in groups.values():
        spec = group["spec"]
        versions = ", ".join(f"{k} {spec[k]}" for k in PROVENANCE_KEYS[2:-1] if spec.get(k)) or (
            "not recorded (record older than schema 3)" if spec.get("_older") else "")
        command = min(group["commands"]) if group["commands"] else "not recorded"
        names = ", ".join(facts.display(m) for m in method_order(pd.DataFrame({"method": sorted(group["methods"])})))
        cells = [_provenance_id(spec), str(len(group["runs"])), names, versions, command]
        rows.append("<tr>" + "".join(f'<td class="{"" if i == 1 else "l"}">{escape(c)}</td>' for i, c in enumerate(cells)) + "</tr>")
    return ('<div class="wide" id="table-provenance"><table data-table="provenance"><caption>Where the runs came from: '
            "code commit, device, package versions and command, from each run's records</caption>\n"
            f"<thead><tr>{head}</tr></thead>\n<tbody>\n" + "\n".join(rows) + "\n</tbody></table></div>")


def write_html_report(root: Path, frame: pd.DataFrame, rule: ScoreRule, tables: Sequence[Path], plots: Sequence[Path],
                      summary: Sequence[str], notes: Sequence[str]) -> Path:
    """results/report.html from the tables and figures `modebench report` just regenerated."""
    sections: list[tuple[str, str, list[str]]] = []  # (anchor, heading, html blocks)
    contents: list[tuple[str, str]] = []  # (anchor, label) of every table and figure, in order
    fragments = {p.with_suffix(""): p for p in tables if p.suffix == ".html"}
    pngs = sorted(p for p in plots if p.suffix == ".png")
    number = 0
    provenances = _provenances(frame)
    for protocol in protocols_in(frame):
        blocks: list[str] = []
        folder = root / "tables" / protocol
        shown = set()
        for name, heading in MAIN_TABLES:
            fragment = fragments.get(folder / name)
            if fragment is not None:
                key = f"{protocol}/{name}"
                blocks += [f"<h3>{escape(heading)}</h3>", _table(fragment, key)]
                contents.append((_slug("table-" + key), f"Table {key}"))
                shown.add(fragment)
        key = f"{protocol}/cells"
        blocks += ["<h3>What each cell is made of</h3>", _cells(frame[frame["protocol"] == protocol], rule, key, provenances)]
        contents.append((_slug("table-" + key), f"Table {key}"))
        figures = [p for p in pngs if p.parent.name == protocol]
        if figures:
            blocks.append("<h3>Figures</h3>")
            for png in figures:
                number += 1
                key = f"{protocol}/{png.stem}"
                blocks.append(_figure(png, key, number))
                contents.append((_slug("figure-" + key), f"Figure {number}: {key}"))
        others = [p for stem, p in sorted(fragments.items()) if stem.parent == folder and p not in shown]
        if others:
            blocks.append("<h3>All other tables</h3>")
            for fragment in others:
                key = f"{protocol}/{fragment.stem}"
                blocks.append(_table(fragment, key))
                contents.append((_slug("table-" + key), f"Table {key}"))
        sections.append((_slug(protocol), f"Results under the {describe_protocol(protocol)}", blocks))
    profile = [p for stem, p in sorted(fragments.items()) if stem.parent.name == "profile"]
    blocks = []
    for fragment in profile:
        key = f"profile/{fragment.stem}"
        blocks.append(_table(fragment, key))
        contents.append((_slug("table-" + key), f"Table {key}"))
    if not blocks:
        blocks = [("<p>Not measured yet: <code>make profile</code> (or <code>modebench profile</code>) stores act latency / "
                   "memory records; <code>modebench report --html</code> then shows them here.</p>")]
    sections.append(("deployment-profile", "Deployment profile", blocks))
    sections.append(("provenance", "Provenance of the runs", [_provenance(frame, provenances)]))
    contents.append(("table-provenance", "Table provenance"))
    if notes:
        sections.append(("not-shown", "Not shown, and why", ["<ul>" + "".join(f"<li>{escape(n)}</li>" for n in notes) + "</ul>"]))

    toc = "".join(f'<li><a href="#{anchor}">{escape(label)}</a></li>' for anchor, label in contents)
    parts = [
        "<!DOCTYPE html>", '<html lang="en">', "<head>", '<meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        "<title>ModeBench results report</title>", f"<style>{STYLE}</style>", "</head>", "<body>",
        "<h1>ModeBench results report</h1>",
        (f"<p>Regenerated from the stored evaluation records under <code>{escape(str(root))}/</code> by "
         "<code>modebench report --html</code> (no training). One file: every table and figure is inside it.</p>"),
        "<h2>What is in the store</h2>",
        "<ul>" + "".join(f"<li>{escape(line.removeprefix('- '))}</li>" for line in summary) + "</ul>",
        f'<nav><h2>Contents</h2><ol data-contents="{len(contents)}">{toc}</ol></nav>',
    ]
    for anchor, heading, blocks in sections:
        parts += [f'<h2 id="{anchor}">{escape(heading)}</h2>', *blocks]
    parts += ["</body>", "</html>", ""]
    path = root / "report.html"
    atomic_write_bytes(path, "\n".join(parts).encode())
    return path
