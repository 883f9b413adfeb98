"""The import rules of the parts, read from the source with `ast` (nothing is imported). Every
import counts wherever it is written: at module level, inside a function or a class (a lazy
import is still a dependency); only `if TYPE_CHECKING:` blocks are left out.

- algorithms imports nothing of benchmarks, sweeps, analysis, studies, modebench or perf;
- benchmarks nothing of sweeps, analysis, studies, modebench or perf;
- sweeps nothing of analysis, studies or modebench; analysis nothing of studies or modebench;
- studies (claims, cross-selection, the online-tuning budget) anything below; only modebench/cli.py imports them;
- analysis only the results store (`benchmarks.store`) and its own files;
- the core (benchmarks/) never imports a method file (a module algorithms/methods.yaml names as a
  method's class): it reaches methods through the registry and the plugin interface (algorithms/base.py);
  the kit (base, config, nets, critics, seeds, registry, ...) is fine;
- the core names no method as a string (a method is data: algorithms/methods.yaml, the suite files);
- no import cycles among files;
- no `importlib.import_module` / `__import__` of a project module outside the one explicit
  registry that loads classes lazily by name: algorithms/registry.py (method classes, so that
  `modebench --help` imports no torch model code). The source kinds need no such loading: they
  are classes listed in benchmarks/tasks/sources.py.

Each rule is also run on planted violations, so a rule that stopped finding anything fails.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
PARTS = ("algorithms", "benchmarks", "sweeps", "analysis", "studies", "modebench", "perf")
FORBIDDEN = {
    "algorithms": ("benchmarks", "sweeps", "analysis", "studies", "modebench", "perf"),
    "benchmarks": ("sweeps", "analysis", "studies", "modebench", "perf"),
    "sweeps": ("analysis", "studies", "modebench"),
    "analysis": ("studies", "modebench"),
    "studies": ("modebench", "perf"),
}
ANALYSIS_MAY_IMPORT = ("benchmarks.store",)
MAPPED_PARTS = ("algorithms", "benchmarks", "sweeps", "analysis", "studies")  # installed as modebench.<part> (pyproject.toml)
DYNAMIC_IMPORT_ALLOWED = {"algorithms/registry.py"}


def project_sources() -> dict[str, str]:
    return {str(p.relative_to(ROOT)): p.read_text() for part in PARTS for p in sorted((ROOT / part).rglob("*.py"))}


def sources_of_tests() -> dict[str, str]:
    return {str(p.relative_to(ROOT)): p.read_text() for p in sorted((ROOT / "tests").glob("*.py"))}


def module_name(path: str) -> str:
    name = path[: -len(".py")].replace("/", ".")
    return name.removesuffix(".__init__")


def _type_checking_block(node: ast.AST) -> bool:
    test = getattr(node, "test", None)
    return isinstance(node, ast.If) and (
        (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING")
        or (isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")
    )


def folder_name(name: str) -> str:
    """`modebench.benchmarks.store` -> `benchmarks.store`: the rules speak of the folders."""
    head, _, rest = name.partition(".")
    return rest if head == "modebench" and rest.split(".", 1)[0] in MAPPED_PARTS else name


def imports(source: str, module: str, modules: set[str], as_written: bool = False) -> list[tuple[int, str]]:
    """(line, imported module) for every import of `source` wherever it is written (module level,
    function, class; `if TYPE_CHECKING:` blocks excepted), named by folder (see folder_name)
    unless `as_written`; `from pkg import name` names the submodule pkg.name when that is a
    module of the project."""
    out: list[tuple[int, str]] = []
    name_of = (lambda n: n) if as_written else folder_name
    package = module if module in {m.rsplit(".", 1)[0] for m in modules if "." in m} else module.rsplit(".", 1)[0]

    def visit(node: ast.AST) -> None:
        for child in ast.iter_child_nodes(node):
            if _type_checking_block(child):
                continue
            if isinstance(child, ast.Import):
                out.extend((child.lineno, name_of(alias.name)) for alias in child.names)
            elif isinstance(child, ast.ImportFrom):
                base = name_of(child.module or "")
                if child.level:  # relative: resolve against this module's package
                    parts = package.split(".")
                    base = ".".join(parts[: len(parts) - child.level + 1] + ([base] if base else []))
                for alias in child.names:
                    candidate = name_of(f"{base}.{alias.name}")
                    out.append((child.lineno, candidate if candidate in modules else base))
            visit(child)

    visit(ast.parse(source))
    return out


def _within(name: str, prefix: str) -> bool:
    return name == prefix or name.startswith(prefix + ".")


def layering_violations(sources: dict[str, str]) -> list[str]:
    modules = {module_name(p) for p in sources}
    found = []
    for path, source in sources.items():
        part = path.split("/", 1)[0]
        for line, name in imports(source, module_name(path), modules):
            if any(_within(name, other) for other in FORBIDDEN.get(part, ())):
                found.append(f"{path}:{line} imports {name}")
    return found


def analysis_violations(sources: dict[str, str]) -> list[str]:
    modules = {module_name(p) for p in sources}
    found = []
    for path, source in sources.items():
        if not path.startswith("analysis/"):
            continue
        for line, name in imports(source, module_name(path), modules):
            project = name.split(".", 1)[0] in PARTS
            if project and not _within(name, "analysis") and not any(_within(name, ok) for ok in ANALYSIS_MAY_IMPORT):
                found.append(f"{path}:{line} imports {name}")
    return found


def import_cycles(sources: dict[str, str]) -> list[list[str]]:
    """Strongly connected components (more than one file) of the import graph, every import
    counted wherever it is written (a function-level import too)."""
    modules = {module_name(p): p for p in sources}
    graph = {
        name: sorted({target for _, target in imports(sources[path], name, set(modules))
                      if target in modules and target != name})
        for name, path in modules.items()
    }
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles: list[list[str]] = []

    def strongconnect(node: str) -> None:  # Tarjan
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in graph[node]:
            if target not in index:
                strongconnect(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    for name in sorted(graph):
        if name not in index:
            strongconnect(name)
    return cycles


def bare_import_violations(sources: dict[str, str]) -> list[str]:
    """Imports of a part by its folder name (`import algorithms`): installed, only
    `modebench.algorithms` exists, and from the checkout the bare name would load a second copy."""
    modules = {module_name(p) for p in sources}
    return [f"{path}:{line} imports {name}" for path, source in sources.items()
            for line, name in imports(source, module_name(path), modules, as_written=True)
            if name.split(".", 1)[0] in MAPPED_PARTS]


def _declared(declarations: str | None) -> dict:
    path = ROOT / "algorithms" / "methods.yaml"
    return yaml.safe_load(declarations if declarations is not None else path.read_text())


def method_modules(declarations: str | None = None) -> set[str]:
    """The method files, by folder name (`algorithms.gem`): the modules of algorithms/methods.yaml's `class` entries."""
    return {folder_name(spec["class"].split(":")[0]) for spec in _declared(declarations).values()}


def registered_names(declarations: str | None = None) -> set[str]:
    """Every method and preset name of algorithms/methods.yaml."""
    declared = _declared(declarations)
    return set(declared) | {p for spec in declared.values() for p in (spec.get("presets") or {})}


def core_method_import_violations(sources: dict[str, str], methods: set[str]) -> list[str]:
    """Imports of a method file by the core (benchmarks/), wherever they are written."""
    known = {module_name(p) for p in sources} | methods
    return [f"{path}:{line} imports {name}" for path, source in sources.items() if path.startswith("benchmarks/")
            for line, name in imports(source, module_name(path), known)
            if any(_within(name, m) for m in methods)]


def method_name_strings(sources: dict[str, str], names: set[str]) -> list[str]:
    """String constants of the core (benchmarks/) that are a method's name (`"gem"`, `"lom-code"`):
    prose naming a method (a docstring, a help text) is fine, a name used as a value is not."""
    found = []
    for path, source in sources.items():
        if path.startswith("benchmarks/"):
            found += [f"{path}:{node.lineno} {node.value!r}" for node in ast.walk(ast.parse(source))
                      if isinstance(node, ast.Constant) and isinstance(node.value, str) and node.value in names]
    return found


def dynamic_import_violations(sources: dict[str, str]) -> list[str]:
    """importlib.import_module / __import__ calls outside the registry, unless their argument is a
    string naming a module outside the project."""
    found = []
    for path, source in sources.items():
        if path in DYNAMIC_IMPORT_ALLOWED:
            continue
        for node in ast.walk(ast.parse(source)):
            if not isinstance(node, ast.Call):
                continue
            func = node.func
            name = func.attr if isinstance(func, ast.Attribute) else func.id if isinstance(func, ast.Name) else ""
            if name not in ("import_module", "__import__"):
                continue
            arg = node.args[0] if node.args else None
            literal = arg.value if isinstance(arg, ast.Constant) and isinstance(arg.value, str) else None
            if literal is None or literal.split(".", 1)[0] in PARTS:
                found.append(f"{path}:{node.lineno} {name}({ast.unparse(arg) if arg is not None else ''})")
    return found


# ---------------------------------------------------------------- the rules on the project


def test_lower_parts_never_import_higher_ones():
    assert layering_violations(project_sources()) == []


def test_analysis_reads_only_the_results_store():
    assert analysis_violations(project_sources()) == []


def test_no_import_cycles_among_files():
    assert import_cycles(project_sources()) == []


def test_the_core_never_imports_a_method_file():
    methods = method_modules()
    assert {"algorithms.gem", "algorithms.lom", "algorithms.isep"} <= methods and "algorithms.base" not in methods
    assert core_method_import_violations(project_sources(), methods) == []


def test_the_core_names_no_method_as_a_string():
    assert method_name_strings(project_sources(), registered_names()) == []


def test_every_part_is_imported_through_the_one_package_name():
    assert bare_import_violations(project_sources() | sources_of_tests()) == []


def test_no_dynamic_imports_of_project_modules_outside_the_registry():
    assert dynamic_import_violations(project_sources()) == []


def test_the_scan_sees_the_whole_project():
    sources = project_sources()
    assert {"algorithms/registry.py", "benchmarks/tasks/sources.py", "sweeps/trial.py", "modebench/cli.py"} <= set(sources)
    modules = {module_name(p) for p in sources}
    cli = imports(sources["modebench/cli.py"], "modebench.cli", modules)
    assert {"benchmarks.cli", "sweeps.cli", "analysis.cli"} <= {name for _, name in cli}  # the root imports every part


# ---------------------------------------------------------------- each rule finds a planted violation


@pytest.mark.parametrize("path, source, found", [
    ("algorithms/bad.py", "from benchmarks.store import RunStore\n", "algorithms/bad.py:1 imports benchmarks.store"),
    ("algorithms/bad.py", "def f():\n    import sweeps.grid\n", "algorithms/bad.py:2 imports sweeps.grid"),  # lazy ones too
    ("benchmarks/bad.py", "from analysis import tables\n", "benchmarks/bad.py:1 imports analysis"),
    ("benchmarks/bad.py", "import modebench.cli\n", "benchmarks/bad.py:1 imports modebench.cli"),
    ("sweeps/bad.py", "import os\nfrom modebench.cli import main\n", "sweeps/bad.py:2 imports modebench.cli"),
])
def test_a_planted_upward_import_is_found(path, source, found):
    assert layering_violations({path: source}) == [found]
    assert layering_violations({path: "import numpy\nfrom algorithms.config import ConfigError\n"}) == []


def test_a_planted_analysis_import_of_the_core_is_found():
    sources = {"analysis/bad.py": "from benchmarks.run.spec import resolve_run\nfrom benchmarks.store import iter_records\n"
                                  "from analysis import stats\nimport pandas\n",
               "analysis/stats.py": "", "benchmarks/run/spec.py": "", "benchmarks/store.py": ""}
    assert analysis_violations(sources) == ["analysis/bad.py:1 imports benchmarks.run.spec"]


def test_a_planted_cycle_is_found_a_function_level_one_too_and_a_type_checking_import_is_not_one():
    cycle = {"benchmarks/a.py": "from benchmarks import b\n", "benchmarks/b.py": "import benchmarks.c\n",
             "benchmarks/c.py": "from benchmarks.a import x\n"}
    assert import_cycles(cycle) == [["benchmarks.a", "benchmarks.b", "benchmarks.c"]]
    lazy = dict(cycle, **{"benchmarks/c.py": "def f():\n    from modebench.benchmarks.a import x\n"})
    assert import_cycles(lazy) == [["benchmarks.a", "benchmarks.b", "benchmarks.c"]]
    in_a_method = {"benchmarks/cli.py": "def register(p):\n    from modebench.benchmarks.run import compose\n",
                   "benchmarks/run/compose.py": "class C:\n    def f(self):\n        from modebench.benchmarks.cli import parse\n"}
    assert import_cycles(in_a_method) == [["benchmarks.cli", "benchmarks.run.compose"]]
    typed = dict(cycle, **{"benchmarks/c.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from benchmarks.a import x\n"})
    assert import_cycles(typed) == []


def test_a_planted_core_import_of_a_method_file_is_found():
    declarations = ("gem: {class: 'modebench.algorithms.gem:GEM', presets: {gem-no-pw: {}}}\n"
                    "bc: {class: 'modebench.algorithms.bc:BC'}\n")
    methods = method_modules(declarations)
    assert methods == {"algorithms.gem", "algorithms.bc"}
    sources = {
        "benchmarks/run/compose.py": "from modebench.algorithms.base import Algorithm\nfrom modebench.algorithms.gem import GEM\n",
        "benchmarks/run/lazy.py": "def f():\n    from modebench.algorithms import bc\n",
        "benchmarks/run/kit.py": "from modebench.algorithms.registry import get_method\nfrom modebench.algorithms.nets import MLP\n",
        "studies/claims/probes.py": "from modebench.algorithms.gem import GEM\n",  # a study may
        "algorithms/gem.py": "", "algorithms/bc.py": "", "algorithms/base.py": "", "algorithms/registry.py": "",
        "algorithms/nets.py": "",
    }
    assert core_method_import_violations(sources, methods) == ["benchmarks/run/compose.py:2 imports algorithms.gem",
                                                               "benchmarks/run/lazy.py:2 imports algorithms.bc"]


def test_a_planted_method_name_string_in_the_core_is_found():
    names = registered_names("gem: {class: 'modebench.algorithms.gem:GEM', presets: {gem-no-pw: {}}}\n"
                             "bc: {class: 'modebench.algorithms.bc:BC'}\n")
    assert names == {"gem", "gem-no-pw", "bc"}
    sources = {"benchmarks/run/protocols.py": 'OWN = {"gem-no-pw": "its own rows"}\n'
                                              'def f(m):\n    """The gem rows."""\n    return m == "bc" or "gem rows" in m\n',
               "studies/cross_select.py": 'SELECTOR = "gem"\n'}
    assert method_name_strings(sources, names) == ["benchmarks/run/protocols.py:1 'gem-no-pw'",
                                                   "benchmarks/run/protocols.py:4 'bc'"]


def test_a_planted_bare_import_is_found():
    sources = {"benchmarks/bad.py": "import os\nfrom algorithms.gem import GEM\n",
               "tests/test_bad.py": "def f():\n    import benchmarks.store\n",
               "benchmarks/fine.py": "from modebench.algorithms.gem import GEM\n"}
    assert bare_import_violations(sources) == ["benchmarks/bad.py:2 imports algorithms.gem",
                                               "tests/test_bad.py:2 imports benchmarks.store"]


def test_a_planted_dynamic_import_is_found():
    sources = {
        "benchmarks/bad.py": "import importlib\nimportlib.import_module('sweeps.cli')\n",
        "benchmarks/worse.py": "def f(name):\n    return __import__(name)\n",
        "benchmarks/fine.py": "import importlib\nimportlib.import_module('gymnasium_robotics')\n",
        "algorithms/registry.py": "import importlib\nimportlib.import_module(target)\n",
    }
    assert dynamic_import_violations(sources) == ["benchmarks/bad.py:2 import_module('sweeps.cli')",
                                                  "benchmarks/worse.py:2 __import__(name)"]
