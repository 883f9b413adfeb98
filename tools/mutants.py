"""Scripted one-line mutation check over algorithms/ (issue 16, item 4): `make mutants`.

Each mutant in tools/mutants.yaml replaces one exact, unique piece of one file under algorithms/
(a loss term, a target-network choice, a stop-gradient, a clip, a schedule). For every mutant
this script writes the changed file into a PRIVATE COPY of the working tree (a fresh temp
directory, one per parallel job; the repository itself is never written), runs only the fast test files the mutant
lists (`-m "not slow and not mechanism"`, first failure stops the run) with the copy first on
PYTHONPATH, and restores the copy's file. A mutant is killed when a test fails, survived when
every selected test passes.

Mutants with an `equivalent:` reason are expected to survive (the change cannot alter any
result; the reason says why) and are reported apart. The exit status is 0 when every other
mutant is killed, 1 otherwise, 2 on a broken list (a `find` that no longer matches exactly
once, or a baseline that fails unmutated).

    python tools/mutants.py                 # every mutant
    python tools/mutants.py --only gem-     # ids starting with a prefix (repeatable)
    python tools/mutants.py --list          # ids and descriptions, nothing run
"""

from __future__ import annotations

import argparse
import os
import queue
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import tomllib
import yaml

ROOT = Path(__file__).resolve().parents[1]
MUTANTS_FILE = Path(__file__).with_name("mutants.yaml")
# the folders that install as modebench.<part> (pyproject's package-dir)
PARTS = tuple(folder for name, folder in tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
              ["package-dir"].items() if name.startswith("modebench."))
COPIED = (*PARTS, "modebench", "perf", "tests", "pyproject.toml", "results/reference")
PYTEST_ARGS = ("-q", "-x", "-p", "no:cacheprovider", "-m", "not slow and not mechanism")
TIMEOUT_S = 300


@dataclass(frozen=True)
class Mutant:
    id: str
    file: str
    find: str
    replace: str
    tests: tuple[str, ...]
    what: str
    equivalent: str | None = None


def load_mutants(path: Path = MUTANTS_FILE) -> list[Mutant]:
    entries = yaml.safe_load(path.read_text())
    mutants = [Mutant(**{**entry, "tests": tuple(entry["tests"])}) for entry in entries]
    ids = [m.id for m in mutants]
    duplicated = sorted({i for i in ids if ids.count(i) > 1})
    if duplicated:
        raise SystemExit(f"mutants.yaml: duplicate ids {duplicated}")
    return mutants


def private_copy() -> Path:
    """The working tree's source, tests and pyproject in a fresh temp directory."""
    dest = Path(tempfile.mkdtemp(prefix="modebench-mutants-"))
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", ".pytest_cache")
    for name in COPIED:
        src = ROOT / name
        (dest / name).parent.mkdir(parents=True, exist_ok=True)
        if src.is_dir():
            shutil.copytree(src, dest / name, ignore=ignore)
        elif src.exists():
            shutil.copy2(src, dest / name)
    # The parts install as modebench.<part> (pyproject's package-dir maps the top-level folders):
    # the copy's modebench/ package reaches the copy's folders through links, so the copy first on
    # PYTHONPATH shadows the editable install of the repository
    for part in PARTS:
        if (dest / part).is_dir():
            (dest / "modebench" / part).symlink_to(dest / part, target_is_directory=True)
    return dest


def run_tests(copy: Path, tests: tuple[str, ...]) -> tuple[int, str]:
    env = {**os.environ, "PYTHONPATH": str(copy), "PYTHONDONTWRITEBYTECODE": "1",
           "MODEBENCH_TEST_THREADS": os.environ.get("MODEBENCH_TEST_THREADS", "1"),
           "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
    cmd = [sys.executable, "-m", "pytest", *PYTEST_ARGS, *tests]
    try:
        proc = subprocess.run(cmd, cwd=copy, env=env, capture_output=True, text=True, timeout=TIMEOUT_S, check=False)
    except subprocess.TimeoutExpired:
        return 124, f"timed out after {TIMEOUT_S} s"
    return proc.returncode, proc.stdout + proc.stderr


def first_failure(output: str) -> str:
    for line in output.splitlines():
        if line.startswith(("FAILED", "ERROR")):
            return line[:160]
    return output.strip().splitlines()[-1][:160] if output.strip() else ""


def check_imports_from(copy: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(copy)}
    out = subprocess.run([sys.executable, "-c", "import modebench.algorithms.base as b; print(b.__file__)"],
                         cwd=copy, env=env, capture_output=True, text=True, check=True).stdout.strip()
    if not Path(out).resolve().is_relative_to(copy.resolve()):
        raise SystemExit(f"the copy does not shadow the installed package: algorithms imports from {out}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", action="append", default=[], help="run mutants whose id starts with this (repeatable)")
    parser.add_argument("--list", action="store_true", help="print the mutants and exit")
    parser.add_argument("--keep", action="store_true", help="keep the private copies (their paths are printed)")
    parser.add_argument("--jobs", "-j", type=int, default=2, help="mutants tested at once, each in its own copy")
    args = parser.parse_args(argv)

    mutants = load_mutants()
    if args.only:
        mutants = [m for m in mutants if any(m.id.startswith(p) for p in args.only)]
    if args.list:
        for m in mutants:
            print(f"{m.id:34s} {m.file:24s} {m.what}" + (f"  [equivalent: {m.equivalent}]" if m.equivalent else ""))
        return 0

    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # a terminated run still removes its copies (finally)
    copies = [private_copy() for _ in range(max(1, args.jobs))]  # one per worker: a worker mutates only its own
    print(f"private copies: {', '.join(map(str, copies))}")
    try:
        for copy in copies:
            check_imports_from(copy)
        originals = {f: (copies[0] / f).read_text() for f in sorted({m.file for m in mutants})}
        stale = [m for m in mutants if originals[m.file].count(m.find) != 1]
        if stale:  # the code moved under the list: say so, run the others
            print(f"STALE (their `find` does not occur exactly once; update tools/mutants.yaml): {[m.id for m in stale]}")
            mutants = [m for m in mutants if m not in stale]
        baseline_tests = tuple(sorted({t for m in mutants for t in m.tests}))
        rc, out = run_tests(copies[0], baseline_tests)
        if rc != 0:
            print(f"baseline fails unmutated ({first_failure(out)}); fix the tests first")
            return 2

        free: queue.Queue[Path] = queue.Queue()
        for copy in copies:
            free.put(copy)
        lock = threading.Lock()
        done = [0]
        outcome: dict[str, str] = {}

        def run_one(m: Mutant) -> None:
            copy = free.get()
            try:
                path = copy / m.file
                path.write_text(originals[m.file].replace(m.find, m.replace))
                t0 = time.monotonic()
                rc, out = run_tests(copy, m.tests)
                path.write_text(originals[m.file])
            finally:
                free.put(copy)
            if rc == 0:
                verdict, detail = ("EQUIVALENT", m.equivalent) if m.equivalent else ("SURVIVED", m.what)
                outcome[m.id] = "equivalent" if m.equivalent else "survived"
            else:  # 1: a test failed; 124: timed out; other: the mutant broke collection (still caught)
                verdict, detail = ("killed", first_failure(out)) if rc in (1, 124) else ("killed (error)", first_failure(out))
                outcome[m.id] = "killed"
            with lock:
                done[0] += 1
                print(f"[{done[0]:3d}/{len(mutants)}] {verdict:14s} {m.id:40s} {time.monotonic() - t0:5.1f}s  {detail}", flush=True)

        start = time.monotonic()
        with ThreadPoolExecutor(max_workers=len(copies)) as pool:
            list(pool.map(run_one, mutants))

        killed = [m for m in mutants if outcome[m.id] == "killed"]
        survived = [m for m in mutants if outcome[m.id] == "survived"]
        equivalent = [m for m in mutants if outcome[m.id] == "equivalent"]
        total = len(mutants)
        print(f"\n{len(killed)} of {total} mutants killed, {len(survived)} survived, "
              f"{len(equivalent)} equivalent (expected to survive); {time.monotonic() - start:.0f} s")
        non_equivalent = total - len(equivalent)
        if non_equivalent:
            print(f"kill rate over non-equivalent mutants: {len(killed)}/{non_equivalent} = {len(killed) / non_equivalent:.1%}")
        for m in survived:
            print(f"  SURVIVED {m.id}: {m.file}: {m.what}")
        for m in equivalent:
            print(f"  equivalent {m.id}: {m.equivalent}")
        for m in killed:
            if m.equivalent:
                print(f"  note: {m.id} is marked equivalent but was killed; drop its `equivalent:`")
        return 2 if stale else 0 if not survived else 1
    finally:
        if args.keep:
            print(f"kept {', '.join(map(str, copies))}")
        else:
            for copy in copies:
                shutil.rmtree(copy, ignore_errors=True)

if __name__ == "__main__":
    sys.exit(main())
