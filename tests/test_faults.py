"""Faults through the public commands, one table (docs/command-line.md lists every row's message).

Each row runs `modebench ...` (in-process through `modebench.cli.main`; the file-size limit in a
subprocess, since a limit is process-wide) on a copy of a small finished store (a BC and a GEM
run of 20 updates) and checks:

- the exit status (0 done, 2 bad input, 3 a file could not be written, 4 out of memory, 130 interrupted);
- one line on stderr naming the problem (none for a row that must succeed), never a traceback;
- nothing lost: the finished runs' records are byte-identical afterwards (a row that damages a
  record checks the others), and no temporary file is left behind;
- nothing written outside the results root (the working directory and the test folder stay as they were);
- for a damaged store: the bad file named, or the command's repair checked.

Operating-system faults that need privileges to cause for real (a full disk, a read-only file
system, a permission the test's root user bypasses) are injected at the OS call that would
raise them (os.mkdir, os.open, os.replace), for paths under the results root only.
"""

from __future__ import annotations

import errno
import json
import math
import os
import resource
import shutil
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from modebench.cli import main

TASK = "toy/four-goal"
TRAIN = ["train", "--algo", "bc", "--task", TASK, "--steps", "20", "--eval-episodes", "2", "--no-progress",
         "--results", "{root}"]
NEW_RUN = [*TRAIN, "--seed", "1"]  # a run the finished store does not hold yet
GEM_SETTINGS = ["--set", "gmm_pretrain_steps=5"]


@pytest.fixture(scope="module")
def finished(tmp_path_factory) -> Path:
    """A finished store: one BC and one GEM run of 20 updates on the toy four-goal task."""
    root = tmp_path_factory.mktemp("finished") / "results"
    assert main([*(a.format(root=root) for a in TRAIN)]) == 0
    gem = ["train", "--algo", "gem", "--task", TASK, "--steps", "20", "--eval-episodes", "2", "--no-progress",
           "--results", str(root), *GEM_SETTINGS]
    assert main(gem) == 0
    return root


@dataclass
class Context:
    root: Path  # this row's results root (a copy of the finished store)
    tmp: Path  # this row's folder; root and work are inside it
    values: dict[str, str] = field(default_factory=dict)  # placeholders of the row's argv

    def run_dir(self, method: str) -> Path:
        (path,) = (self.root / "runs").glob(f"{method}__*")
        return path

    def record(self, method: str) -> Path:
        return max(p for p in (self.run_dir(method) / "records").glob("*.json") if p.is_file())

    def checkpoint(self, method: str) -> Path:
        return self.run_dir(method) / "checkpoint.pt"

    def new_run_id(self, seed: int = 1) -> str:
        from modebench.benchmarks.run.spec import resolve_run

        return resolve_run("bc", TASK, seed=seed, steps=20, eval_episodes=2, device="cpu").run_id


@dataclass
class Fault:
    kind: str
    argv: list[str]
    status: int
    message: str = ""  # in the one stderr line ("" for a row that succeeds)
    setup: Callable[[Context], None] | None = None
    inject: Callable[[Context, pytest.MonkeyPatch], None] | None = None
    damaged: tuple[str, ...] = ()  # methods whose finished records the row changes on purpose
    check: Callable[[Context, str], None] | None = None  # the row's own check of the outcome (gets stdout)
    subprocess_limits: dict[int, int] | None = None  # run in a subprocess under these rlimits


# ------------------------------------------------------------------------------ row helpers


def set_placeholder(name: str, make: Callable[[Context], Any]) -> Callable[[Context], None]:
    def setup(ctx: Context) -> None:
        ctx.values[name] = str(make(ctx))

    return setup


def fail_os(code: int, calls: tuple[str, ...] = ("mkdir", "open"), name_part: str = "") -> Callable:
    """Make the OS calls `calls` raise OSError(code) for paths under the root containing `name_part`."""

    def inject(ctx: Context, mp: pytest.MonkeyPatch) -> None:
        root = str(ctx.root)
        for call in calls:
            real = getattr(os, call)

            def fake(path, *args, _real=real, _call=call, **kwargs):
                text = "" if isinstance(path, int) else os.fspath(path)
                writing = _call != "open" or bool(args and args[0] & (os.O_WRONLY | os.O_RDWR | os.O_CREAT))
                if text.startswith(root) and name_part in text and writing:
                    raise OSError(code, os.strerror(code), text)
                return _real(path, *args, **kwargs)

            mp.setattr(os, call, fake)

    return inject


def raise_in_training(error: BaseException) -> Callable:
    def inject(ctx: Context, mp: pytest.MonkeyPatch) -> None:
        from modebench.benchmarks.data.replay import DeviceReplay

        def fail(*args, **kwargs):
            raise error

        mp.setattr(DeviceReplay, "sample", fail)

    return inject


def rewrite_record(method: str, edit: Callable[[dict], Any]) -> Callable[[Context], None]:
    def setup(ctx: Context) -> None:
        path = ctx.record(method)
        result = edit(json.loads(path.read_text()))
        path.write_bytes(result if isinstance(result, bytes) else json.dumps(result).encode())
        ctx.values["bad"] = path.name

    return setup


def truncate(path_of: Callable[[Context], Path], keep: float = 0.5) -> Callable[[Context], None]:
    def setup(ctx: Context) -> None:
        path = path_of(ctx)
        data = path.read_bytes()
        path.write_bytes(data[: int(len(data) * keep)])
        ctx.values["bad"] = path.name

    return setup


def without(key: str) -> Callable[[dict], dict]:
    return lambda record: {k: v for k, v in record.items() if k != key}


def with_value(key: str, value: Any) -> Callable[[dict], dict]:
    return lambda record: {**record, key: value}


def checkpoint_env(env_id: str) -> Callable[[Context], None]:
    """The BC checkpoint's recorded env id replaced (as a file edited by someone else would be)."""

    def setup(ctx: Context) -> None:
        import torch

        path = ctx.checkpoint("bc")
        payload = torch.load(path, weights_only=True)
        run = json.loads(payload["run"]) if isinstance(payload["run"], str) else payload["run"]
        run["task"]["env"]["id"] = env_id
        payload["run"] = json.dumps(run)
        torch.save(payload, path)

    return setup


def user_suite(env_id: str) -> Callable[[Context], None]:
    def setup(ctx: Context) -> None:
        from modebench.benchmarks.tasks.suites import SUITES_DIR

        text = (SUITES_DIR / "toy.yaml").read_text().replace("modebench/FourGoalBandit-v0", env_id)
        path = ctx.tmp / "inputs" / "mysuite.yaml"
        path.parent.mkdir()
        path.write_text(text)
        ctx.values["suite"] = str(path)

    return setup


def pendulum_npz(ctx: Context, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    n = 120
    timeouts = np.zeros(n, bool)
    timeouts[[59, 119]] = True
    path = ctx.tmp / "inputs" / "pendulum.npz"
    path.parent.mkdir(exist_ok=True)
    np.savez(path, observations=rng.normal(size=(n, 3)).astype(np.float32),
             actions=rng.uniform(-2, 2, (n, 1)).astype(np.float32), rewards=rng.normal(size=n).astype(np.float32),
             terminals=np.zeros(n, bool), timeouts=timeouts)
    return path


DATASET_TRAIN = ["train", "--algo", "bc", "--dataset", "{dataset}", "--env", "Pendulum-v1", "--ref-min", "-1000",
                 "--ref-max", "0", "--steps", "10", "--eval-episodes", "1", "--no-progress", "--results", "{root}"]


def dataset_changed_gives_a_new_run(ctx: Context, stdout: str) -> None:
    """Rerun after the --dataset file's content changed: a new run, not the old score."""
    first = next(line for line in stdout.splitlines() if line.startswith("run "))
    pendulum_npz(ctx, seed=1)  # same path, other data
    argv = [a.format(**ctx.values) for a in DATASET_TRAIN]
    out = run_main(argv)
    assert out.status == 0, out.err
    second = next((line for line in out.out.splitlines() if line.startswith("run ")), out.out)
    assert second != first, "the changed dataset reused the old run (and its score)"


def records_land_under_the_root(ctx: Context, stdout: str) -> None:
    run_id = ctx.run_dir("bc").name
    sources = [json.loads(p.read_text()).get("source") for p in (ctx.root / "runs" / run_id / "records").glob("*.json")]
    assert "eval" in sources, f"no eval record under {ctx.root}/runs/{run_id}/"


def checkpoint_repaired(ctx: Context, stdout: str) -> None:
    """The run retrained to its checkpoint: the checkpoint is back, every printed path exists, same score."""
    assert ctx.checkpoint("bc").is_file()
    for line in stdout.splitlines():
        if line.startswith(("checkpoint ", "run ")):
            assert Path(line.split(" ", 1)[1]).exists(), f"printed a path that does not exist: {line}"
    score = json.loads(ctx.record("bc").read_text())["normalized_score"]
    assert f"normalized_score {score:.4f}" in stdout


def damaged_record_retrained(ctx: Context, stdout: str) -> None:
    path = ctx.record("bc")
    assert isinstance(json.loads(path.read_text()).get("normalized_score"), float), "the damaged record was not rewritten"


def no_final_record_without_checkpoint(ctx: Context, stdout: str) -> None:
    run = ctx.root / "runs" / ctx.new_run_id()
    if run.exists() and any((run / "records").glob("*.json")):
        assert (run / "checkpoint.pt").is_file(), "a final record was written but its checkpoint was not"


def nan_kept_as_failed(ctx: Context, stdout: str) -> None:
    assert ctx.record("bc").exists()  # never dropped from the store
    assert "non_finite" in stdout or "failed" in stdout or "nan" in stdout.lower(), \
        "tables did not show the NaN run as a failed run"


TABLES = ["tables", "--results", "{root}", "--reps", "100"]

ROWS = [
    # -------------------------------------------------------------- the command line (exit 2)
    Fault("unknown command", ["trian"], 2, "did you mean train?"),
    Fault("unknown device", [*TRAIN, "--device", "gpu"], 2, "unknown device 'gpu'"),
    Fault("negative seed", [*TRAIN, "--seed", "-1"], 2, "seed -1 is out of range"),
    Fault("seed beyond 32 bits", [*TRAIN, "--seed", "4294967296"], 2, "out of range"),
    Fault("seed given twice", [*TRAIN, "--seeds", "0,0"], 2, "seeds must be distinct (0 given twice)"),
    Fault("non-integer seed", [*TRAIN, "--seeds", "0,x"], 2, "seed 'x' is not an integer"),
    Fault("zero steps", [*TRAIN, "--steps", "0"], 2, "must be an integer >= 1, got 0"),
    Fault("episodes beyond memory", [*TRAIN, "--eval-episodes", "100000000"], 2, "in [1, 10000]"),
    Fault("jobs beyond memory", ["bench", "--jobs", "100000", "--results", "{root}"], 2, "in [1, 256]"),
    Fault("--results names a file", [*TRAIN[:-1], "{file}"], 2, "is a file",
          setup=set_placeholder("file", lambda ctx: (ctx.tmp / "inputs").mkdir() or (ctx.tmp / "inputs" / "f").write_text("x")
                                and ctx.tmp / "inputs" / "f")),
    Fault("misspelt method", ["train", "--algo", "gme", "--task", TASK, "--results", "{root}"], 2, "did you mean gem?"),
    Fault("misspelt task", ["train", "--algo", "bc", "--task", "toy/four-gaol", "--results", "{root}"], 2,
          "did you mean four-goal?"),
    Fault("misspelt suite", ["bench", "--suite", "tyo", "--results", "{root}"], 2, "did you mean toy?"),
    Fault("suite name leaving the suites folder", ["bench", "--suite", "../../x", "--results", "{root}"], 2,
          "unknown suite '../../x'"),
    Fault("batch beyond memory", [*TRAIN, "--set", "batch_size=100000000"], 2, "batch_size must be in [1, 65536]"),
    Fault("layer width beyond memory", [*TRAIN, "--set", "hidden_dims=100000,100000"], 2, "hidden_dims (each) must be in [1, 8192]"),
    Fault("GEM candidates beyond memory at eval", ["eval", "--checkpoint", "{gem}", "--knob", "N=100000000", "--results", "{root}"],
          2, "N must be in [0, 65536]", setup=set_placeholder("gem", lambda ctx: ctx.checkpoint("gem"))),
    Fault("unknown config key", [*TRAIN, "--set", "nope=1"], 2, "unknown"),
    Fault("knob the method lacks", ["eval", "--checkpoint", "{bc}", "--knob", "N=4", "--results", "{root}"], 2, "unknown knob",
          setup=set_placeholder("bc", lambda ctx: ctx.checkpoint("bc"))),
    Fault("unknown protocol", [*TRAIN, "--protocol", "nope"], 2, "invalid choice 'nope'"),
    Fault("unknown metric sink", [*TRAIN, "--log", "nope"], 2, "invalid choice 'nope'"),
    Fault("missing dataset file", ["train", "--algo", "bc", "--dataset", "{tmp}/missing.npz", "--env", "Pendulum-v1",
                                   "--ref-min", "0", "--ref-max", "1", "--results", "{root}"], 2, "missing.npz"),
    Fault("missing checkpoint", ["eval", "--checkpoint", "{tmp}/nope.pt", "--results", "{root}"], 2, "nope.pt"),
    Fault("truncated checkpoint", ["eval", "--checkpoint", "{bc}", "--results", "{root}"], 2, "checkpoint.pt",
          setup=lambda ctx: (set_placeholder("bc", lambda c: c.checkpoint("bc"))(ctx), truncate(lambda c: c.checkpoint("bc"))(ctx))),
    # another evaluation seed, so eval builds the env (at the run's own settings it returns the stored record)
    Fault("module: env id in a checkpoint", ["eval", "--checkpoint", "{bc}", "--eval-seed", "3", "--results", "{root}"], 2,
          "would import the module 'json'",
          setup=lambda ctx: (set_placeholder("bc", lambda c: c.checkpoint("bc"))(ctx), checkpoint_env("json:Env")(ctx))),
    Fault("module: env id in a suite file", ["bench", "--suite", "{suite}", "--results", "{root}"], 2,
          "would import the module 'json'", setup=user_suite("json:Env")),
    # -------------------------------------------------------------- the machine (exit 3, 4, 130)
    Fault("disk full", NEW_RUN, 3, "disk full", inject=fail_os(errno.ENOSPC, ("replace",), "checkpoint"),
          check=no_final_record_without_checkpoint),
    Fault("read-only file system", NEW_RUN, 3, "read-only file system", inject=fail_os(errno.EROFS)),
    Fault("unwritable root", NEW_RUN, 3, "permission denied", inject=fail_os(errno.EACCES)),
    Fault("disk quota", NEW_RUN, 3, "quota", inject=fail_os(errno.EDQUOT, ("replace",))),
    Fault("file-size limit", NEW_RUN, 3, "file too large", subprocess_limits={resource.RLIMIT_FSIZE: 40_000},
          check=no_final_record_without_checkpoint),
    Fault("a file where the runs folder goes", [*TRAIN[:-1], "{fresh}"], 3, "not a folder",
          setup=set_placeholder("fresh", lambda ctx: (ctx.root / "fresh").mkdir() or (ctx.root / "fresh" / "runs").write_text("")
                                or ctx.root / "fresh")),
    Fault("a folder where the checkpoint goes", NEW_RUN, 2, "checkpoint.pt is a folder",
          setup=lambda ctx: (ctx.root / "runs" / ctx.new_run_id() / "checkpoint.pt").mkdir(parents=True)),
    Fault("out of memory", NEW_RUN, 4, "out of memory",
          inject=raise_in_training(RuntimeError("[enforce fail at alloc_cpu.cpp:121] DefaultCPUAllocator: can't allocate memory: "
                                                "you tried to allocate 68719476736 bytes."))),
    Fault("interrupted", NEW_RUN, 130, "interrupted", inject=raise_in_training(KeyboardInterrupt())),
    # -------------------------------------------------------------- the store (benchmarks/store.py)
    # tables still build: a damaged file is named on one line and counted in every table it would have entered
    Fault("truncated record", TABLES, 0, "{bad}: file: not JSON", setup=truncate(lambda c: c.record("bc")), damaged=("bc",)),
    Fault("truncated record on resume", TRAIN, 0, "", setup=truncate(lambda c: c.record("bc")), damaged=("bc",),
          check=damaged_record_retrained),
    Fault("empty-object record", TABLES, 0, "{bad}: method: missing", setup=rewrite_record("bc", lambda r: {}), damaged=("bc",)),
    Fault("non-UTF-8 record", TABLES, 0, "{bad}: file: not UTF-8", setup=rewrite_record("bc", lambda r: b'{"method": "\xff\xfe"}'), damaged=("bc",)),
    Fault("folder named like a record", TABLES, 0, "x.json",
          setup=lambda ctx: (ctx.run_dir("bc") / "records" / "x.json").mkdir()),
    Fault("record without its score", TABLES, 0, "{bad}: normalized_score: missing",
          setup=rewrite_record("bc", without("normalized_score")), damaged=("bc",)),
    Fault("non-numeric score", TABLES, 0, "{bad}: normalized_score: must be a number",
          setup=rewrite_record("bc", with_value("normalized_score", "high")), damaged=("bc",)),
    Fault("NaN score", TABLES, 0, "", setup=rewrite_record("bc", lambda r: {**without("status")(r), "normalized_score": math.nan}),
          damaged=("bc",), check=nan_kept_as_failed),
    Fault("lost checkpoint after the final record", TRAIN, 0, "", setup=lambda ctx: ctx.checkpoint("bc").unlink(),
          damaged=("bc",), check=checkpoint_repaired),
    Fault("eval --checkpoint outside runs/", ["eval", "--checkpoint", "{outside}", "--eval-seed", "3", "--results", "{root}"], 0, "",
          setup=set_placeholder("outside", lambda ctx: (ctx.tmp / "inputs").mkdir() or shutil.copy(ctx.checkpoint("bc"),
                                                                                                    ctx.tmp / "inputs" / "x.pt")),
          damaged=("bc",), check=records_land_under_the_root),  # its own run's folder: the next row checks what it keeps
    Fault("eval of a finished run keeps its training record", ["eval", "--checkpoint", "{bc}", "--results", "{root}"], 0, "",
          setup=set_placeholder("bc", lambda ctx: ctx.checkpoint("bc"))),
    Fault("--dataset file changed", DATASET_TRAIN, 0, "", setup=set_placeholder("dataset", pendulum_npz),
          check=dataset_changed_gives_a_new_run),
]


@dataclass
class Outcome:
    status: int
    out: str
    err: str


def run_main(argv: list[str]) -> Outcome:
    """`modebench.cli.main(argv)` with its stdout and stderr captured (pytest's capture stays as it is)."""
    import contextlib
    import io

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        status = main(argv)
    return Outcome(status, out.getvalue(), err.getvalue())


def run_subprocess(argv: list[str], limits: dict[int, int], cwd: Path) -> Outcome:
    def apply_limits():
        for which, value in limits.items():
            resource.setrlimit(which, (value, value))

    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "PYTHONDONTWRITEBYTECODE": "1"}
    done = subprocess.run([sys.executable, "-m", "modebench.cli", *argv], cwd=cwd, capture_output=True, text=True,
                          preexec_fn=apply_limits, env=env, timeout=300, check=False)
    return Outcome(done.returncode, done.stdout, done.stderr)


def snapshot(root: Path, methods: tuple[str, ...]) -> dict[str, bytes]:
    return {str(p): p.read_bytes() for m in methods for p in (root / "runs").glob(f"{m}__*/records/*.json") if p.is_file()}


def test_the_table_covers_at_least_30_fault_kinds():
    assert len({row.kind for row in ROWS}) == len(ROWS) >= 30


@pytest.mark.parametrize("row", ROWS, ids=[row.kind for row in ROWS])
def test_fault(row: Fault, finished: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    ctx = Context(root=tmp_path / "results", tmp=tmp_path)
    shutil.copytree(finished, ctx.root)
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    ctx.values.update(root=str(ctx.root), tmp=str(tmp_path))
    if row.setup:
        row.setup(ctx)
    kept = tuple(m for m in ("bc", "gem") if m not in row.damaged)
    before = snapshot(ctx.root, kept)
    around = sorted(p.name for p in tmp_path.iterdir())
    argv = [a.format(**ctx.values) for a in row.argv]
    if row.subprocess_limits:
        outcome = run_subprocess(argv, row.subprocess_limits, work)
    else:
        if row.inject:
            row.inject(ctx, monkeypatch)
        outcome = run_main(argv)
        monkeypatch.undo()  # the injected faults end with the command
    lines = [line for line in outcome.err.splitlines() if line.strip()]
    assert "Traceback" not in outcome.err, outcome.err
    assert outcome.status == row.status, f"exit {outcome.status}, expected {row.status}: {outcome.err}"
    message = row.message.format(**ctx.values)
    if row.status == 0:
        errors = [line for line in lines if "error" in line.lower()]
        assert not errors, errors
        if message:
            named = [line for line in (outcome.out + outcome.err).splitlines() if message in line]
            assert len(named) == 1, f"the bad input {message!r} is not named on one line: {outcome.out}{outcome.err}"
    else:
        assert len(lines) == 1, f"expected one line, got {lines}"
        assert message in lines[0], lines[0]
    after = snapshot(ctx.root, kept)
    assert {path: after.get(path) for path in before} == before, "a finished record changed or went"
    assert not list(ctx.root.rglob("*.tmp")), "a temporary file was left behind"
    assert sorted(p.name for p in tmp_path.iterdir()) == around, "something was written beside the results root"
    assert not list(work.iterdir()), f"something was written in the working directory: {list(work.iterdir())}"
    if row.check:
        row.check(ctx, outcome.out)
