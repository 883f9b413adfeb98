"""The documentation a newcomer reads: a short README, no dead relative link in README.md and
docs/*.md, nothing that points outside the repository, and install hints that name the project's
own distribution."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import tomllib

ROOT = Path(__file__).resolve().parents[1]
README_MAX_LINES = 150
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
LINK = re.compile(r"(?<!!)\[[^\]\n]*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")  # [text](target "title"); images too via the prefix below
IMAGE = re.compile(r"!\[[^\]\n]*\]\(([^)\s]+)\)")
FENCE = re.compile(r"^(```|~~~).*?^\1", re.DOTALL | re.MULTILINE)
SKIPPED_DIRS = {".git", ".venv", ".venv-d3rlpy", ".venv-jax", "__pycache__", "node_modules", "build", "data"}
TEXT_SUFFIXES = {".py", ".md", ".yaml", ".yml", ".toml", ".txt", ".cfg", ".csv", ".sh", ".json"}
# a path into ../shared (the papers' text, the implementation digest SPEC.md, their tables), anywhere;
# SPEC.md by name, in the documentation
OUTSIDE = re.compile(r"\.\./(?:shared|seeds)\b|shared/(?:SPEC|seeds|reference)\b|seeds/[A-Z]+-[\w*.-]+")
OUTSIDE_DOCS = re.compile(r"SPEC\.md")


def anchors(page: Path) -> set[str]:
    """GitHub's heading anchors of a Markdown page: lower case, punctuation dropped, spaces to '-'."""
    text = FENCE.sub("", page.read_text())
    found = set()
    for heading in re.findall(r"^#{1,6}\s+(.+?)\s*#*\s*$", text, re.MULTILINE):
        plain = re.sub(r"[`*_]|\[([^\]]*)\]\([^)]*\)", r"\1", heading).strip().lower()
        found.add(re.sub(r"[^\w\- ]", "", plain).replace(" ", "-"))
    return found


def links(page: Path) -> list[str]:
    text = FENCE.sub("", page.read_text())
    text = re.sub(r"`[^`\n]*`", "", text)  # inline code is not a link
    return LINK.findall(text) + IMAGE.findall(text)


def test_readme_is_short():
    lines = (ROOT / "README.md").read_text().splitlines()
    assert len(lines) <= README_MAX_LINES, f"README.md has {len(lines)} lines; move detail to a docs/ page and link it"


@pytest.mark.parametrize("page", PAGES, ids=[str(p.relative_to(ROOT)) for p in PAGES])
def test_no_dead_relative_link(page):
    dead = []
    for target in links(page):
        if re.match(r"^[a-z][a-z0-9+.-]*:", target):  # https:, mailto: ... (not checked offline)
            continue
        path, _, anchor = target.partition("#")
        resolved = (page.parent / path).resolve() if path else page
        if ROOT not in resolved.parents and resolved != ROOT:
            dead.append(f"{target} (outside the repository)")
        elif not resolved.exists():
            dead.append(f"{target} (no such file)")
        elif anchor and resolved.suffix == ".md" and anchor not in anchors(resolved):
            dead.append(f"{target} (no heading #{anchor} in {resolved.relative_to(ROOT)})")
    assert not dead, f"{page.relative_to(ROOT)}: dead links: {dead}"


def test_every_docs_page_is_reachable_from_the_readme():
    reachable, todo = set(), [ROOT / "README.md"]
    while todo:
        page = todo.pop()
        for target in links(page):
            path = target.partition("#")[0]
            if path.endswith(".md") and not re.match(r"^[a-z][a-z0-9+.-]*:", path):
                linked = (page.parent / path).resolve()
                if linked.exists() and linked not in reachable:
                    reachable.add(linked)
                    todo.append(linked)
    orphans = [str(p.relative_to(ROOT)) for p in PAGES[1:] if p.resolve() not in reachable]
    assert not orphans, f"docs pages no link from README.md leads to: {orphans}"


def test_nothing_points_outside_the_repository():
    """A clone has no ../shared (the papers and the implementation digest the project was built
    from): no file of the repository may send a reader there."""
    hits = []
    for path in ROOT.rglob("*"):
        parts = set(path.relative_to(ROOT).parts)
        if parts & SKIPPED_DIRS or (path.relative_to(ROOT).parts[:1] == ("results",) and "reference" not in parts):
            continue
        if path.is_file() and (path.suffix in TEXT_SUFFIXES or path.name == "Makefile"):
            for number, line in enumerate(path.read_text(errors="replace").splitlines(), 1):
                if OUTSIDE.search(line) or (path.suffix == ".md" and OUTSIDE_DOCS.search(line)):
                    hits.append(f"{path.relative_to(ROOT)}:{number}: {line.strip()[:100]}")
    hits = [h for h in hits if not h.startswith("tests/test_docs.py")]
    assert not hits, "points outside the repository:\n" + "\n".join(hits)


def test_install_hints_name_the_projects_own_distribution():
    """`modebench` on the public package index is another project: pyproject's name, the store's
    DISTRIBUTION and every `pip install '<name>[extra]'` hint in the code agree."""
    from importlib import metadata

    from modebench.benchmarks.store import DISTRIBUTION

    from modebench.cli import package_version

    name = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["name"]
    assert name == DISTRIBUTION != "modebench"
    assert package_version() == metadata.version(DISTRIBUTION)  # `modebench --version` finds the installed distribution
    hints = []
    for part in ("algorithms", "benchmarks", "sweeps", "analysis", "studies", "modebench"):
        for path in (ROOT / part).rglob("*.py"):
            hints += re.findall(r"pip install '?\"?([{}A-Za-z0-9_.-]+)\[", path.read_text())
    assert hints and set(hints) <= {DISTRIBUTION, "{DISTRIBUTION}"}, hints
    for page in PAGES:
        wrong = re.findall(r"pip install [\"']?modebench\[", page.read_text())
        assert not wrong, f"{page.relative_to(ROOT)} tells users to install someone else's 'modebench'"
