"""`modebench report --html`: one self-contained file that names and embeds every table and figure,
opens in a real headless browser without errors, and figures sized for a page."""

from __future__ import annotations

import base64
import contextlib
import io
import re
import shutil
import struct
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import pytest
from modebench.benchmarks.store import RunStore
from PIL import Image
from test_analysis import _record

CHROMIUM_INSTALL = "apt-get update && apt-get install -y chromium"
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
NORMALISER = {"kind": "toy", "ref_min": -1.0, "ref_max": 2.0, "source": "closed-form returns"}
PROVENANCE = {"modebench": "0.1.0", "git_commit": "0123456789abcdef", "git_dirty": False, "python": "3.11.2", "torch": "2.13.0",
              "numpy": "2.4.6", "gymnasium": "1.4.0", "mujoco": None, "minari": None, "ogbench": None, "device_name": "cpu",
              "command": "modebench bench --suite toy"}
METHODS = ("bc", "iql", "gem", "isep", "isep-fm", "drol", "fql", "lom")  # 8 methods: 28 probability-of-improvement pairs


class Page(HTMLParser):
    """What the report names (its contents list) and what it holds (tables, figures, links to outside)."""

    def __init__(self) -> None:
        super().__init__()
        self.contents: list[tuple[str, str]] = []  # (anchor, label) of the contents list
        self.ids: set[str] = set()
        self.tables: dict[str, int] = {}  # data-table -> rows
        self.figures: dict[str, dict] = {}  # data-figure -> {src, caption}
        self.external: list[str] = []
        self._nav = self._caption = False
        self._link: str | None = None
        self._table: str | None = None
        self._figure: str | None = None

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if "id" in attrs:
            self.ids.add(attrs["id"])
        for name in ("src", "href"):
            value = attrs.get(name) or ""
            if value and not value.startswith(("#", "data:")):
                self.external.append(value)
        if tag in ("script", "link", "iframe", "object"):
            self.external.append(tag)
        if tag == "nav":
            self._nav = True
        elif tag == "a" and self._nav:
            self._link = attrs["href"].lstrip("#")
        elif tag == "table" and "data-table" in attrs:
            self._table = attrs["data-table"]
            self.tables[self._table] = 0
        elif tag == "tr" and self._table:
            self.tables[self._table] += 1
        elif tag == "figure":
            self._figure = attrs["data-figure"]
            self.figures[self._figure] = {"src": None, "caption": ""}
        elif tag == "img" and self._figure:
            self.figures[self._figure]["src"] = attrs["src"]
        elif tag == "figcaption":
            self._caption = True

    def handle_endtag(self, tag):
        if tag == "nav":
            self._nav = False
        elif tag == "table":
            self._table = None
        elif tag == "figure":
            self._figure = None
        elif tag == "figcaption":
            self._caption = False

    def handle_data(self, data):
        if self._link is not None:
            self.contents.append((self._link, data))
            self._link = None
        if self._caption and self._figure:
            self.figures[self._figure]["caption"] += data


def png_size(data: bytes) -> tuple[int, int]:
    assert data.startswith(PNG_SIGNATURE)
    return struct.unpack(">II", data[16:24])


def build_methods_store(root: Path) -> Path:
    """Every registered base method on two toy tasks, 3 seeds, evaluated at steps 500 and 1000, so
    the report has the full 8-method figures (probability of improvement: 28 pairs) and learning curves."""
    for m, method in enumerate(METHODS):
        for task in ("toy/four-goal", "toy/branch"):
            for seed in range(3):
                store = RunStore(root, f"{method}__{task.replace('/', '-')}__seed{seed}__h")
                for step in (500, 1000):
                    score = 10.0 * m + seed + (task == "toy/branch") - (step == 500) * 20
                    record = _record(method, task, seed, step, score, {}, {"lr": 0.001}, "train")
                    # per-episode scores: the seeds of a config are a configuration set (the online-budget study)
                    record["episodes"] = [{"return": score / 100, "normalized_score": score + e - 2, "length": 1, "success": False}
                                          for e in range(5)]
                    record.update(eval_episodes=5, default_run={"steps": 1000, "eval_episodes": 5}, normaliser=NORMALISER,
                                  provenance={**PROVENANCE, "git_dirty": method == "lom"})
                    store.write_record(record)
    return root


@pytest.fixture(scope="module")
def report(tmp_path_factory) -> Path:
    """`modebench report --html` on the fixture store plus every method (the command line, end to end)."""
    from modebench.cli import main

    root = build_methods_store(tmp_path_factory.mktemp("results"))
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert main(["report", "--results", str(root), "--html", "--reps", "100", "--formats", "png"]) == 0
    page = root / "report.html"
    assert f"report: {page} (" in out.getvalue() and "one self-contained file" in out.getvalue(), out.getvalue()
    assert "[report.html](report.html)" in (root / "report.md").read_text()  # the Markdown report points at it
    return page


@pytest.fixture(scope="module")
def parsed(report) -> Page:
    page = Page()
    page.feed(report.read_text())
    return page


def test_every_table_and_figure_the_report_names_is_embedded(report, parsed):
    root = report.parent
    assert parsed.contents, "the report lists its tables and figures"
    for anchor, label in parsed.contents:
        assert anchor in parsed.ids, f"contents entry {label!r} points at nothing"
        kind, key = label.split(" ", 1)
        if kind == "Table":
            assert parsed.tables.get(key, 0) >= 2, f"{key}: no table with a header and a row"
        else:
            key = key.split(": ", 1)[1]
            figure = parsed.figures[key]
            assert figure["src"].startswith("data:image/png;base64,")
            data = base64.b64decode(figure["src"].split(",", 1)[1])
            png_size(data)
            Image.open(io.BytesIO(data)).load()  # the whole image decodes (a truncated one raises)
    named = {label.split(": ", 1)[-1].split(" ", 1)[-1] for _, label in parsed.contents}
    # everything `report` wrote is named and embedded: every figure file, every table file
    for png in (root / "plots").rglob("*.png"):
        assert f"{png.parent.name}/{png.stem}" in named and f"{png.parent.name}/{png.stem}" in parsed.figures
    for table in (root / "tables").rglob("*.csv"):
        assert f"{table.parent.name}/{table.stem}" in named and f"{table.parent.name}/{table.stem}" in parsed.tables
    assert {"controlled/main_gem_layout", "controlled/aggregates", "controlled/cells", "provenance"} <= set(parsed.tables)
    assert parsed.external == [], "the file must open alone: no script, stylesheet, image or link outside it"


def test_figures_have_captions_and_fit_a_page(parsed):
    assert len(parsed.figures) >= 4
    for key, figure in parsed.figures.items():
        caption = " ".join(figure["caption"].split())
        assert caption.startswith("Figure ") and f"Figure {key.split('/')[1]}." not in caption, f"{key}: no caption"
        width, height = png_size(base64.b64decode(figure["src"].split(",", 1)[1]))
        assert height <= 1300, f"{key}: {width} x {height} px, taller than a page"
    poi = parsed.figures["controlled/probability_of_improvement_toy"]
    assert "chance that a run of method X beats" in poi["caption"]


def test_report_says_what_each_cell_is_made_of_with_display_names(report):
    text = report.read_text()
    cells = text[text.index('data-table="controlled/cells"'):]
    cells = cells[:cells.index("</table>")]
    row = re.sub(r"<td[^>]*>", "<td>", cells)
    assert ("<td>ISEP-FM</td><td>toy/four-goal</td><td>3</td><td>0, 1, 2</td><td>1000</td><td>5</td><td>toy [-1, 2]</td>"
            "<td>controlled</td><td>0123456789 on cpu</td>") in row
    assert "<td>LOM</td><td>toy/four-goal</td>" in row and "<td>0123456789+dirty on cpu</td>" in row
    provenance = re.sub(r"<td[^>]*>", "<td>", text[text.index('data-table="provenance"'):])
    assert ("<td>0123456789 on cpu</td><td>42</td><td>BC, IQL, GEM, ISEP, ISEP-FM, DROL, FQL</td><td>modebench 0.1.0, "
            "python 3.11.2, torch 2.13.0, numpy 2.4.6, gymnasium 1.4.0</td><td>modebench bench --suite toy</td>") in provenance
    assert "<td>isep-fm</td>" not in row
    # display names in every table, the studies' included (online_budget_toy lists methods)
    assert 'data-table="controlled/online_budget_toy"' in text
    assert "<li>Methods: BC, IQL, GEM, ISEP, ISEP-FM, DROL, FQL, LOM.</li>" in text
    plain = re.sub(r"<(t[dh])[^>]*>", r"<\1>", text)
    for method in METHODS:
        assert f"<th>{method}</th>" not in plain and f"<td>{method}</td>" not in plain


def test_report_opens_in_headless_chromium_with_every_image_decoded(report, tmp_path):
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    if browser is None:
        pytest.skip(f"needs Debian's chromium: {CHROMIUM_INSTALL}")
    # a probe in a copy of the page: records script errors, failed loads and console errors, then
    # each image's decode state, into the DOM that --dump-dom prints (Chromium draws a truncated PNG
    # in part and calls it decoded: the parser test decodes every image in full with Pillow)
    probe = """<script>
window.__errors = [];
window.addEventListener('error', e => window.__errors.push('error: ' + (e.message || (e.target && e.target.tagName))), true);
const consoleError = console.error;
console.error = (...args) => { window.__errors.push('console: ' + args.join(' ')); consoleError(...args); };
window.addEventListener('load', () => {
  const images = Array.from(document.images);
  document.body.setAttribute('data-images', images.length);
  document.body.setAttribute('data-decoded', images.filter(i => i.complete && i.naturalWidth > 0).length);
  document.body.setAttribute('data-errors', JSON.stringify(window.__errors));
});
</script>"""
    page = tmp_path / "probed.html"
    page.write_text(report.read_text().replace("<head>", "<head>\n" + probe, 1))
    result = subprocess.run(
        [browser, "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run",
         f"--user-data-dir={tmp_path / 'profile'}", "--enable-logging=stderr", "--v=0", "--virtual-time-budget=5000",
         "--dump-dom", page.as_uri()],
        check=False, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    dom = result.stdout
    images = int(dom.split('data-images="', 1)[1].split('"', 1)[0])
    decoded = int(dom.split('data-decoded="', 1)[1].split('"', 1)[0])
    errors = dom.split("data-errors=\"", 1)[1].split('"', 1)[0]
    assert images >= 4 and decoded == images, f"{decoded} of {images} images decoded"
    assert errors == "[]", errors
    console = [line for line in result.stderr.splitlines() if "CONSOLE" in line]
    assert console == [], console


def test_plots_count_every_figure_written_the_studies_included(report, tmp_path):
    from modebench.analysis.plots import build_plots

    def study(root, out, formats, *, protocol, seed, log):  # a study writer, as the command-line root passes them
        path = Path(out) / "study_figure.png"
        path.write_bytes(PNG_SIGNATURE)
        return [path]

    lines: list[str] = []
    written = build_plots(report.parent, tmp_path, methods=["bc", "iql"], formats=("png",), reps=10, study_plots=[study],
                          log=lines.append)
    stems = sorted({p.stem for p in written if p.suffix == ".png"})
    assert "study_figure" in stems and len(stems) >= 4
    assert f"plots: {len(stems)} figures ({', '.join(stems)}) -> {tmp_path / 'controlled'}/ (png, data as .csv)" in lines
