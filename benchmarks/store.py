"""The results store: the one contract between writers (runs, sweeps, profiling) and readers (analysis).
docs/results-store.md is the user's page (identity, layout, schema, durability, resume and repair).

Layout under a results root (`results_root()`: --results, else $MODEBENCH_RESULTS, else results/),
computed here and nowhere else (RunStore's paths, `stored_runs`):

    runs/<run_id>/config.json           the full resolved run (method, task, config, knobs, data)
    runs/<run_id>/checkpoint.pt         latest checkpoint (written by benchmarks/run/checkpoints.py)
    runs/<run_id>/metrics.jsonl         training metrics, one line per logging interval
    runs/<run_id>/records/<key>.json    one evaluation record (training step x knob setting)
    runs/<run_id>/writer.lock           exists while the one process writing the run holds it (RunStore.writing)
    runs/<run_id>/diverged.json         a sweep's mark: the seed diverged
    runs/<run_id>/sweep_attempts.jsonl  a sweep's log of a run's starts, skips and ends
    profiles/<key>.json                 one profile record (method x setting x device x batch)

Sweeps write the same layout under their own root; readers glob `**/records/*.json` and
`**/profiles/*.json` under any root.

A record's file name is a stable hash of its identity (for evaluations: run, step, knobs), so
writing the same evaluation twice (a resumed run, a retried sweep trial) replaces it with the
same content and every evaluation is stored exactly once. Writes go to a temporary file in the
same folder, are fsync'ed, given the umask's mode and renamed into place: a crash never leaves a
half-written record (and the next writer of the run removes the temporary file).

Schema (SCHEMA_VERSION = 3; every field is documented in EVALUATION_FIELDS and PROFILE_FIELDS):

- v3 added `eval_episodes`, `status` ("ok" | "non_finite"), `provenance`, and the hooked fields
  `normaliser`, `observation_layout`, `fit_phases`.
- v2 added `kind`, `protocol`, `suite_default`, `default_knobs`, `data`, `task_default`,
  `task_order`, the `diagnostics/<name>` values (evaluation records) and profile records.
- Older records are READ, not refused: `read_record` fills what the run identity implies
  (`kind = "evaluation"`, `protocol = LEGACY_PROTOCOL`), counts `eval_episodes` from the record's
  `episodes` list, derives `status` from its scores, and sets each field of UPGRADE_MARKED that the
  record still lacks to None, listing it under `missing_fields`, so a reader sees "unknown" rather
  than a guess. Analysis documents what it does with each missing field (analysis/records.py).
- Every record read is checked (`record_problem`): a file that is not a record of the schema is a
  DamagedRecord (path, field, problem) that `scan_store` lists and counts, never a crash.
- A record of a NEWER schema than this reader is refused with a one-line StoreError.

This module imports nothing of the project and no torch: analysis reads the store through it alone.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import platform
import shlex
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import lru_cache
from importlib import metadata
from pathlib import Path
from typing import Any

SCHEMA_VERSION = 3
DEFAULT_ROOT = Path(os.environ.get("MODEBENCH_RESULTS", "results"))  # at import; results_root() reads it per call
PROTOCOLS = ("published", "controlled")
KINDS = {"evaluation": "records", "profile": "profiles"}  # record kind -> the folder its files live in
_HELD: dict[str, list] = {}  # writer locks this process holds: resolved lock path -> [open file, depth]
_HELD_GUARD = threading.Lock()

EVALUATION_FIELDS: dict[str, str] = {
    # identity
    "schema_version": "int: the schema the record was written under (stamped by the writer)",
    "kind": '"evaluation" (stamped by the writer; v1 records are read as evaluations)',
    "run_id": "str: the run folder's name; the same run inputs always give the same id",
    "method": "str: registry name of the method or preset that was trained (e.g. 'gem', 'gem-no-pw')",
    "base_method": "str: registry name of the method class a preset varies ('gem' for 'gem-no-pw')",
    "suite": "str: the task's suite ('toy', 'locomotion', ...)",
    "task": "str: the task id 'suite/name'",
    "dataset": "str: the dataset's name as loaded (published id, Minari id, or local name)",
    "seed": "int: the training seed",
    "eval_episodes": ("int: evaluation episodes this record's scores average over (v3; older records: the length of "
                      "their `episodes` list, else None, marked missing)"),
    "step": "int: the training step the evaluated weights are from",
    "total_steps": "int: the run's planned training steps (step < total_steps: an interrupted run)",
    "source": ('"train" (evaluated during training) | "eval" (a checkpoint re-evaluated, e.g. a knob grid) | '
               '"select" (a proposer\'s candidates selected by a GEM checkpoint)'),
    "knobs": "dict: every inference knob of the evaluated policy",
    "config": "dict: the full resolved training config",
    "config_hash": "str: the run identity's hash (the suffix of run_id)",
    "protocol": ('"published" (each method as its authors ran it) | "controlled" (one protocol for every method '
                 "of a suite). v1 records read as LEGACY_PROTOCOL (see below)"),
    "suite_default": ("bool: the run's config and data settings equal the suite's resolved default for this method "
                      "and protocol (what the main tables show). v1: None, marked missing"),
    "default_knobs": "dict: the suite's resolved default knobs for this method and protocol",
    "default_run": ("dict {steps, eval_episodes}: the protocol's own length for this method and task, whatever --steps / "
                    "--eval-episodes asked; a table cell holds only runs of it (analysis/records.py by_length). "
                    "Absent before v3: tables take the length most of the cell's runs have"),
    "data": "dict: the run's data settings (observation normalisation, reward transform, clipping)",
    "task_default": "bool: the suite marks this task its default (DROL Table 4's (*) rows)",
    "task_order": "int | None: position of the task in its suite file (table row order); None for ad-hoc datasets",
    # scores of the evaluation
    "status": ('"ok" | "non_finite": a record whose score numbers (SCORE_FIELDS) are not all finite is kept with '
               'status "non_finite" (a failed run, shown as such), never dropped. Older records: derived from the scores'),
    "normalized_score": "float: mean normalised score over the evaluation episodes (0 random, 100 expert)",
    "normalized_std": "float: population std of the per-episode normalised scores",
    "return_mean": "float: mean undiscounted episode return",
    "return_std": "float: population std of the episode returns",
    "success_rate": "float: fraction of episodes that reported success (0 where the env reports none)",
    "episode_length_mean": "float: mean episode length",
    "episodes": "list[dict]: per episode: return, length, success, normalized_score, audit/<name>",
    "audits": "dict[str, float]: episode means of the method's act() audits (e.g. violation, collapse_dist)",
    "diagnostics/<name>": ("float, one top-level key per value of algorithm.diagnostics(batch) on the run's fixed "
                           "evaluation batch, computed when the run evaluates (e.g. diagnostics/behavior_gap: GEM's NLL "
                           "gap, Eq. 72-75); absent for methods without diagnostics and in v1 records"),
    "eval_wall_time": "float: seconds the evaluation took",
    "eval_env_steps_per_second": "float: environment steps per second during the evaluation",
    "eval_seed": "int: evaluation seed when it differs from the training seed (source 'eval' only)",
    "selection": ("dict: a composed evaluation (source 'select'): the proposer's and the GEM selector's run ids "
                  "and the selection knobs (benchmarks/run/compose.py)"),
    # training
    "updates_per_second": "float: training updates per second up to this step (source 'train' only)",
    "train_wall_time": "float: seconds spent in training updates up to this step (source 'train' only)",
    "training_metrics": "dict[str, float]: the last logging interval's training metrics, namespaced (e.g. training/loss)",
    # what the task and the method supply (hooks: RunSpec.info's entries of the same names, and the
    # method's fit_report(); docs/results-store.md). Absent where nothing supplies them.
    "normaliser": ('dict {kind: "d4rl"|"minari"|"ogbench-success"|"toy"|"user", ref_min, ref_max, source}: how the '
                   "normalised score was computed (from the task's run info)"),
    "observation_layout": "dict {name, keys, dim, source}: what the policy saw (from the task's run info)",
    "fit_phases": ("list[dict {name, field, steps, final_nll, slope, window, converged}]: every fit phase that ended "
                   "in the run (the method's fit_report(), source 'train' only)"),
    # provenance
    "provenance": ("dict {modebench, git_commit, git_dirty, python, torch, numpy, gymnasium, mujoco, minari, ogbench, "
                   "device_name, command}: what wrote the record (store.provenance); v1/v2 records: None, marked missing"),
    "git_revision": "str: source revision that wrote the record ('+dirty' with uncommitted changes)",
    "device": "str: torch device of the run",
    "compiled": "bool: the loss pass was torch.compile'd",
    "timestamp": "float: Unix time the record was written",
    "missing_fields": "list[str]: set by the READER: fields an older record lacks (see UPGRADE_MARKED)",
}
REQUIRED_EVALUATION = ("method", "base_method", "suite", "task", "dataset", "seed", "step", "total_steps", "source",
                       "knobs", "config", "normalized_score")
# What only the training run measures: a later evaluation at the same key keeps it (RunStore.write_record).
TRAINING_ONLY_FIELDS = ("updates_per_second", "train_wall_time", "training_metrics", "fit_phases")
# fields a reader marks missing (None) rather than guesses; eval_episodes is counted from the
# record's own `episodes` list where it has one (a count, not a guess)
UPGRADE_MARKED = ("suite_default", "task_order", "eval_episodes", "provenance")
STATUSES = ("ok", "non_finite")
# the numbers a record's status speaks for: any of them NaN or infinite makes it "non_finite"
SCORE_FIELDS = ("normalized_score", "normalized_std", "return_mean", "return_std", "success_rate", "episode_length_mean")
# ModeBench's distribution name (pyproject.toml [project] name; `modebench` on the public package index is
# an unrelated project): what `pip install` takes and what provenance reads the version of. The import
# name and the command stay `modebench`.
DISTRIBUTION = "modebench-rl"
PROVENANCE_PACKAGES = ("torch", "numpy", "gymnasium", "mujoco", "minari", "ogbench")
# Runs stored before protocols existed keep their run ids as runs of the default protocol
# (benchmarks/run/spec.py leaves "controlled" out of the identity hash), so a resumed old run
# continues as a controlled run; their records are read as that protocol, to match.
LEGACY_PROTOCOL = "controlled"

PROFILE_FIELDS: dict[str, str] = {
    "schema_version": "int: the schema the record was written under",
    "kind": '"profile"',
    "method": "str: registry name of the profiled method (built from its config class's defaults, random weights)",
    "setting": "str: the swept knob setting ('N64', 'T10', or 'default')",
    "knobs": "dict: the knob values of the setting",
    "device": "str: torch device ('cpu', 'cuda', 'cuda:1')",
    "batch": "int: states per act() call",
    "obs_dim": "int: observation size of the EnvSpec the method was built with",
    "act_dim": "int: action size",
    "horizon": "int: episode horizon of the EnvSpec",
    "latency_ms_median": "float: median wall time of one act() call, milliseconds",
    "latency_ms_iqr_low": "float: 25th percentile of the call times",
    "latency_ms_iqr_high": "float: 75th percentile of the call times",
    "latency_ms_mean": "float: mean call time",
    "latency_ms_std": "float: sample std of the call times",
    "peak_alloc_mb": ("float: CUDA: allocator peak during the timed calls (weights included); CPU: weights + input + "
                      "peak live tensor bytes of one call"),
    "peak_reserved_mb": "float: CUDA allocator's peak reserved memory; NaN on CPU",
    "params_m": "float: parameters of the method, millions (every module, targets included)",
    "repeats": "int: timed calls made (fewer than asked when a slow setting hit its time cap)",
    "warmup": "int: untimed calls before timing",
    "threads": "int: torch CPU threads",
    "torch_version": "str: torch.__version__ of the measuring process",
    "git_revision": "str: source revision",
    "timestamp": "float: Unix time",
}
REQUIRED_PROFILE = tuple(k for k in PROFILE_FIELDS if k not in ("schema_version", "kind", "git_revision", "timestamp"))
PROFILE_IDENTITY = ("method", "setting", "device", "batch", "obs_dim", "act_dim", "horizon", "threads")


class StoreError(ValueError):
    """A record that cannot be written or read as the schema says (one line: what and the fix)."""


class RunBusyError(StoreError):
    """The run folder is being written by another process (RunStore.writing)."""


# ---------------------------------------------------------------------- writing


TEMP_SUFFIX = ".tmp"  # atomic_write_bytes' temporary files: `.<name>.<random>.tmp` beside the target


def _umask() -> int:
    """The process's umask, read without changing it where Linux shows it (/proc), else set and restored."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except OSError:
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write `data` to `path` whole or not at all: a temporary file in the same folder, fsync'ed,
    given the mode a plain open() would (0o666 less the umask: mkstemp makes 0600, which would
    keep a team sharing a results root from reading each other's files), renamed into place."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=TEMP_SUFFIX)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fchmod(fh.fileno(), 0o666 & ~_umask())
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def atomic_write_json(path: Path, payload: Any) -> None:
    atomic_write_bytes(path, json.dumps(payload, indent=1, sort_keys=True, default=_json_default).encode())


def _json_default(value: Any):
    if hasattr(value, "tolist"):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def stable_hash(payload: Mapping[str, Any]) -> str:
    """12 hex digits of sha256 over canonical JSON (sorted keys, non-JSON values as str).

    Byte-for-byte the hash record keys were always named with (it was algorithms.config.config_hash),
    so runs resumed across this change still find their records; a test pins a known key."""
    text = json.dumps(payload, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:12]


@lru_cache(maxsize=1)
def git_state() -> tuple[str | None, bool | None]:
    """(commit, dirty) of the checkout this code runs from; (None, None) outside a git checkout
    (an installed wheel) or without git."""
    here = Path(__file__).resolve().parent
    try:
        rev = subprocess.run(["git", "rev-parse", "HEAD"], check=False, cwd=here, capture_output=True, text=True, timeout=5)
        if rev.returncode != 0:
            return None, None
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], check=False, cwd=here, capture_output=True, text=True, timeout=5)
        return rev.stdout.strip(), bool(dirty.stdout.strip())
    except (OSError, subprocess.SubprocessError):
        return None, None


def git_revision() -> str:
    """The source revision of this checkout (with '+dirty' for uncommitted changes), or 'unknown'."""
    commit, dirty = git_state()
    return "unknown" if commit is None else commit + ("+dirty" if dirty else "")


def installed_version(package: str) -> str | None:
    """The installed distribution's version (importlib.metadata), None where it is not installed."""
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


@lru_cache(maxsize=1)
def _static_provenance() -> dict[str, Any]:
    commit, dirty = git_state()
    return {"modebench": installed_version(DISTRIBUTION), "git_commit": commit, "git_dirty": dirty,
            "python": platform.python_version(), **{name: installed_version(name) for name in PROVENANCE_PACKAGES}}


def provenance(device_name: str) -> dict[str, Any]:
    """What wrote a record: ModeBench's and its key packages' versions (read from the installed
    distributions, nothing imported), the git commit and dirty flag, the device's name (the
    caller's: this module imports no torch) and the command line ($MODEBENCH_COMMAND where a
    driver sets it for its workers, else this process's argv)."""
    command = os.environ.get("MODEBENCH_COMMAND") or shlex.join([Path(sys.argv[0]).name, *sys.argv[1:]])
    return {**_static_provenance(), "device_name": device_name, "command": command}


def record_key(run_id: str, step: int, knobs: dict[str, Any]) -> str:
    """File stem of the evaluation record of `run_id` at `step` with `knobs`."""
    return f"step{step:09d}-{stable_hash({'run_id': run_id, 'step': step, 'knobs': knobs})}"


_STR, _INT, _DICT, _LIST, _BOOL = "a string", "an integer", "an object", "a list", "true or false"
# field -> what it must be (None allowed where a field can be unknown); every other field is free
EVALUATION_TYPES: dict[str, tuple[str, bool]] = {
    **{k: (_STR, False) for k in ("run_id", "method", "base_method", "suite", "task", "dataset", "source")},
    **{k: (_INT, False) for k in ("seed", "step", "total_steps")},
    "eval_episodes": (_INT, True), "task_order": (_INT, True),
    **{k: (_DICT, False) for k in ("knobs", "config")},
    **{k: (_DICT, True) for k in ("provenance", "data", "default_knobs", "default_run", "audits", "training_metrics", "selection",
                                  "normaliser", "observation_layout")},
    **{k: (_LIST, True) for k in ("episodes", "fit_phases")},
    **{k: (_BOOL, True) for k in ("suite_default", "task_default", "compiled")},
}
PROFILE_TYPES: dict[str, tuple[str, bool]] = {
    **{k: (_STR, False) for k in ("method", "setting", "device")},
    **{k: (_INT, False) for k in ("batch", "obs_dim", "act_dim", "horizon", "repeats", "warmup", "threads")},
    "knobs": (_DICT, False),
}


def _is(value: Any, kind: str) -> bool:
    if kind == _INT:
        return isinstance(value, int) and not isinstance(value, bool)
    return isinstance(value, {_STR: str, _DICT: dict, _LIST: list, _BOOL: bool}[kind])


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def scores_finite(record: Mapping[str, Any]) -> bool:
    """Every score number of the record that it has is finite (what status "ok" means)."""
    return all(math.isfinite(record[k]) for k in SCORE_FIELDS if _is_number(record.get(k)))


def record_problem(record: Mapping[str, Any], kind: str = "evaluation") -> tuple[str, str] | None:
    """(field, what is wrong) for the first way `record` breaks the schema, or None. Numbers
    that are not finite are allowed only in a record whose status says "non_finite"."""
    required, types = (REQUIRED_EVALUATION, EVALUATION_TYPES) if kind == "evaluation" else (REQUIRED_PROFILE, PROFILE_TYPES)
    for key in required:
        if key not in record:
            return key, "missing (a required field)"
    for key, (expected, optional) in types.items():
        if key in record and not (optional and record[key] is None) and not _is(record[key], expected):
            return key, f"must be {expected}, got {type(record[key]).__name__} {str(record[key])[:40]!r}"
    if kind == "profile":
        for key in ("latency_ms_median", "latency_ms_mean", "params_m"):
            if not _is_number(record.get(key)):
                return key, f"must be a number, got {record.get(key)!r}"
        return None
    for key in SCORE_FIELDS:
        if key in record and not _is_number(record[key]):
            return key, f"must be a number, got {type(record[key]).__name__} {str(record[key])[:40]!r}"
    if record["step"] < 0 or record["total_steps"] < 1:
        return "step", f"step {record['step']} of {record['total_steps']} is not a training step"
    if record.get("eval_episodes") is not None and record["eval_episodes"] < 1:
        return "eval_episodes", f"must be >= 1, got {record['eval_episodes']}"
    status = record.get("status", "ok" if scores_finite(record) else "non_finite")
    if status not in STATUSES:
        return "status", f"{status!r} is not one of {', '.join(STATUSES)}"
    if status == "ok" and not scores_finite(record):
        bad = next(k for k in SCORE_FIELDS if _is_number(record.get(k)) and not math.isfinite(record[k]))
        return bad, f"{record[bad]} with status 'ok' (a non-finite score must say status 'non_finite')"
    protocol = record.get("protocol")
    if protocol is not None and protocol not in PROTOCOLS:
        return "protocol", f"{protocol!r} is not one of {', '.join(PROTOCOLS)}"
    return None


def _check(record: Mapping[str, Any], kind: str, what: str) -> None:
    problem = record_problem(record, kind)
    if problem is not None:
        key, why = problem
        if why.startswith("missing"):
            missing = [k for k in (REQUIRED_EVALUATION if kind == "evaluation" else REQUIRED_PROFILE) if k not in record]
            raise StoreError(f"{what} lacks required field(s) {missing}; see benchmarks/store.py for the schema")
        if key == "suite_default":
            raise StoreError(f"{what}: suite_default must be true or false, got {record['suite_default']!r}")
        if key == "protocol":
            raise StoreError(f"{what}: protocol {record['protocol']!r} is not one of {', '.join(PROTOCOLS)}")
        raise StoreError(f"{what}: field {key!r} {why}; see benchmarks/store.py for the schema")


# ---------------------------------------------------------------------- layout
# The folder layout is computed here and nowhere else (the module docstring draws it).
RUNS_DIR = "runs"
RUN_FILES = {"config": "config.json", "checkpoint": "checkpoint.pt", "metrics": "metrics.jsonl",
             "lock": "writer.lock", "diverged": "diverged.json", "attempts": "sweep_attempts.jsonl"}


def results_root(out: Path | str | None = None) -> Path:
    """The results root: `out` (--results) when given, else $MODEBENCH_RESULTS (read now), else results/."""
    if out is not None:
        return Path(out)
    return Path(os.environ.get("MODEBENCH_RESULTS", "results"))


def check_run_id(run_id: Any) -> str:
    """A run id as a folder name: one path component, not hidden (a run id read from a checkpoint
    or a record can never name a folder outside the results root)."""
    if (not isinstance(run_id, str) or not run_id or run_id.startswith(".") or len(run_id) > 255
            or any(c in run_id for c in "/\\\0")):
        raise StoreError(f"run id {run_id!r} is not a run folder name (one path component, not starting with '.'); "
                         "the checkpoint or record that names it was not written by ModeBench")
    return run_id


class RunStore:
    """The folder of one run under a results root: config, checkpoint, metrics, evaluation records,
    writer lock, and a sweep's divergence mark and attempt log."""

    def __init__(self, root: Path | str, run_id: str):
        self.root = Path(root)
        self.run_id = check_run_id(run_id)
        self.path = self.root / RUNS_DIR / run_id

    @property
    def config_path(self) -> Path:
        return self.path / RUN_FILES["config"]

    @property
    def checkpoint_path(self) -> Path:
        return self.path / RUN_FILES["checkpoint"]

    @property
    def metrics_path(self) -> Path:
        return self.path / RUN_FILES["metrics"]

    @property
    def records_dir(self) -> Path:
        return self.path / KINDS["evaluation"]

    @property
    def lock_path(self) -> Path:
        return self.path / RUN_FILES["lock"]

    @property
    def diverged_path(self) -> Path:
        return self.path / RUN_FILES["diverged"]

    @property
    def attempts_path(self) -> Path:
        return self.path / RUN_FILES["attempts"]

    def record_path(self, step: int, knobs: dict[str, Any]) -> Path:
        return self.records_dir / f"{record_key(self.run_id, step, knobs)}.json"

    @contextmanager
    def writing(self, wait: float = 0.0) -> Iterator[RunStore]:
        """Hold the run folder's writer lock: every process that writes a run (training, a
        checkpoint's evaluation, a sweep trial) does it inside this block, so two processes never
        write one run folder, even when two drivers (or two hosts on a shared file system) start
        the same run. Another process holding it: RunBusyError after `wait` seconds of retrying.

        An exclusive flock on `writer.lock`: the kernel drops it when its holder exits in any way
        (SIGKILL included), so a dead writer never leaves a held lock. The holder deletes the file
        when it is done, still holding the lock; a process that opened the file before the
        deletion finds, once it has the lock, that the path no longer names the file it locked, and
        locks the new one (so two processes never hold two different files). Re-entrant within a
        process (a sweep trial holds it around train(), which takes it again). On NFS (v4, or v3
        with lockd) Linux maps flock to a byte-range lock the server arbitrates. Taking the lock
        removes the temporary files an interrupted atomic write left in the folder."""
        key = str(self.lock_path.resolve())
        with _HELD_GUARD:
            held = _HELD.get(key)
            if held is not None:
                held[1] += 1
        if held is None:
            handle = self._lock(wait)
            with _HELD_GUARD:
                held = _HELD[key] = [handle, 1]
            self._remove_stale_temporaries()
        try:
            yield self
        finally:
            with _HELD_GUARD:
                held[1] -= 1
                last = held[1] == 0
                if last:
                    del _HELD[key]
            if last:
                try:
                    self.lock_path.unlink()  # still locked: a waiter re-checks the path (see above)
                except FileNotFoundError:
                    pass
                held[0].close()  # closing the descriptor releases the flock

    def _lock(self, wait: float):
        import fcntl  # POSIX; imported here so that readers of the store import nothing they do not use

        self.path.mkdir(parents=True, exist_ok=True)
        deadline = time.monotonic() + wait
        while True:
            handle = open(self.lock_path, "a+")  # noqa: SIM115 -- held open for the lock's lifetime, closed by writing()
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    handle.seek(0)
                    holder = handle.read().strip() or "another process"
                    handle.close()
                    raise RunBusyError(f"run {self.run_id} is being written by {holder}; not writing it twice "
                                       "(wait for that process to end, or stop it)") from None
                handle.close()
                time.sleep(min(1.0, max(0.05, deadline - time.monotonic())))
                continue
            try:
                same = os.path.samestat(os.fstat(handle.fileno()), os.stat(self.lock_path))
            except FileNotFoundError:
                same = False
            if same:
                break
            handle.close()  # the holder we waited for deleted this file: lock the one the path names now
        handle.seek(0)
        handle.truncate()
        handle.write(f"pid {os.getpid()} on {socket.gethostname()} (since {time.strftime('%Y-%m-%d %H:%M:%S')})\n")
        handle.flush()
        return handle

    def _remove_stale_temporaries(self) -> None:
        """Temporary files of atomic writes that never finished (a SIGKILL between mkstemp and rename):
        under the writer lock no other process is writing here."""
        for folder in (self.path, self.records_dir):
            for tmp in folder.glob(f".*{TEMP_SUFFIX}"):
                tmp.unlink(missing_ok=True)

    def write_config(self, config: dict[str, Any]) -> None:
        atomic_write_json(self.config_path, config)

    def read_config(self) -> dict[str, Any] | None:
        """The run's config.json, or None when it has none or it cannot be read."""
        return _read_json_object(self.config_path)

    def write_record(self, record: dict[str, Any], key_extra: dict[str, Any] | None = None) -> Path:
        """Stamp the schema version, kind, run id and status, check the record against the schema,
        write it atomically. `key_extra`: what else names this evaluation besides step and knobs (a
        checkpoint evaluated with another seed or number of episodes than its run's own)."""
        record = {"status": "ok" if scores_finite(record) else "non_finite", **record,
                  "schema_version": SCHEMA_VERSION, "kind": "evaluation", "run_id": self.run_id}
        _check(record, "evaluation", f"evaluation record of {self.run_id}")
        path = self.record_path(record["step"], {**record.get("knobs", {}), **(key_extra or {})})
        if record.get("source") != "train" and not key_extra:
            # Re-evaluating a checkpoint at the run's own knobs lands on its training record's key:
            # keep what only training could measure (updates/s, training metrics, diagnostics).
            trained = self.read_record(record["step"], record.get("knobs", {}))
            if trained is not None:
                record = {**{k: v for k, v in trained.items()
                             if k in TRAINING_ONLY_FIELDS or k.startswith("diagnostics/")}, **record}
        atomic_write_json(path, record)
        return path

    def read_record(self, step: int, knobs: dict[str, Any]) -> dict[str, Any] | None:
        """The run's record at `step` with `knobs`, or None when there is none or it is damaged
        (a damaged record counts as not written: the run evaluates it again)."""
        path = self.record_path(step, knobs)
        try:
            return read_record(path)
        except (StoreError, FileNotFoundError):
            return None

    def has_record(self, step: int, knobs: dict[str, Any]) -> bool:
        return self.read_record(step, knobs) is not None

    def append_metrics(self, line: dict[str, Any]) -> None:
        self.path.mkdir(parents=True, exist_ok=True)
        with open(self.metrics_path, "a") as fh:
            fh.write(json.dumps(line, sort_keys=True, default=_json_default) + "\n")
            fh.flush()

    def rewind_metrics(self, step: int) -> None:
        """Drop the metrics lines past `step` (and a torn last line): a run resuming from its
        checkpoint at `step` writes them again, so each step is logged once."""
        try:
            lines = self.metrics_path.read_bytes().splitlines(keepends=True)
        except FileNotFoundError:
            return
        kept = []
        for line in lines:
            try:
                entry = json.loads(line)
            except (json.JSONDecodeError, UnicodeDecodeError):
                continue
            if isinstance(entry, dict) and isinstance(entry.get("step"), int) and entry["step"] <= step:
                kept.append(line if line.endswith(b"\n") else line + b"\n")
        if kept != lines:
            atomic_write_bytes(self.metrics_path, b"".join(kept))

    def mark_diverged(self, payload: dict[str, Any]) -> None:
        atomic_write_json(self.diverged_path, {"run_id": self.run_id, **payload})

    def log_attempt(self, line: dict[str, Any]) -> None:
        """One line of the sweep's attempt log (start, skip, end of a run), fsync'ed."""
        self.path.mkdir(parents=True, exist_ok=True)
        with open(self.attempts_path, "a") as fh:
            fh.write(json.dumps(line, sort_keys=True, default=str) + "\n")
            fh.flush()
            os.fsync(fh.fileno())

    @classmethod
    def of_checkpoint(cls, root: Path | str, run: Mapping[str, Any]) -> RunStore:
        """The run folder under `root` of the run a checkpoint's payload describes (its own run id,
        wherever the checkpoint file lies)."""
        return cls(root, run.get("run_id") if isinstance(run, Mapping) else None)


def stored_runs(root: Path | str) -> Iterator[RunStore]:
    """Every run folder with a config.json under `root` (nested roots included), in path order."""
    for config in sorted(Path(root).glob(f"**/{RUNS_DIR}/*/{RUN_FILES['config']}")):
        yield RunStore(config.parent.parent.parent, config.parent.name)


def profile_key(record: Mapping[str, Any]) -> str:
    """File stem of a profile record: re-measuring the same setting replaces its record."""
    return f"{record['method']}__{record['setting']}__{stable_hash({k: record[k] for k in PROFILE_IDENTITY})}"


def write_profile(root: Path | str, record: dict[str, Any]) -> Path:
    """Write one profile record under <root>/profiles/ (stamped, checked, atomic)."""
    record = {"git_revision": git_revision(), **record, "schema_version": SCHEMA_VERSION, "kind": "profile"}
    _check(record, "profile", f"profile record of {record.get('method', '?')}")
    path = Path(root) / KINDS["profile"] / f"{profile_key(record)}.json"
    atomic_write_json(path, record)
    return path


# ---------------------------------------------------------------------- reading


@dataclass(frozen=True)
class DamagedRecord:
    """A stored file that is not a record the schema accepts: where, which field, what is wrong."""

    path: Path
    field: str  # the offending field, or "file" when the file itself cannot be read as a JSON object
    problem: str

    def line(self) -> str:
        return f"{self.path}: {self.field}: {self.problem}"


class DamagedRecordError(StoreError):
    """One record cannot be read as the schema says (`damaged` names the file and the field)."""

    def __init__(self, damaged: DamagedRecord):
        super().__init__(f"damaged record {damaged.line()}; delete it (its run evaluates it again on resume) "
                         "or move it out of the store")
        self.damaged = damaged


def _read_json_object(path: Path) -> dict[str, Any] | None:
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return None
    return value if isinstance(value, dict) else None


def read_record(path: Path | str, kind: str | None = None) -> dict[str, Any]:
    """One stored record, checked against the schema and upgraded to the current schema's shape
    (see the module docstring). A file that is not such a record is a DamagedRecordError naming
    the file and the field; a record of a newer schema is a StoreError (update ModeBench)."""
    path = Path(path)

    def damaged(field: str, problem: str) -> DamagedRecordError:
        return DamagedRecordError(DamagedRecord(path, field, problem))

    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise
    except IsADirectoryError:
        raise damaged("file", "is a folder, not a record") from None
    except UnicodeDecodeError as err:
        raise damaged("file", f"not UTF-8 text ({err.reason} at byte {err.start})") from None
    except json.JSONDecodeError as err:  # atomic writes make this a foreign or damaged file
        raise damaged("file", f"not JSON ({err.msg} at line {err.lineno} column {err.colno})") from None
    except OSError as err:
        raise damaged("file", f"cannot be read ({err.strerror or err})") from None
    if not isinstance(record, dict):
        raise damaged("file", f"is JSON {type(record).__name__}, not an object")
    version = record.get("schema_version", 1)
    if not _is(version, _INT) or version < 1:
        raise damaged("schema_version", f"must be an integer >= 1, got {version!r}")
    if version > SCHEMA_VERSION:
        raise StoreError(f"record {path} has schema_version {version!r}, newer than this reader's {SCHEMA_VERSION}: "
                         "update ModeBench to read it")
    record.setdefault("kind", "evaluation")
    if record["kind"] not in KINDS:
        raise damaged("kind", f"{record['kind']!r} is not one of {', '.join(KINDS)}")
    if kind is not None and record["kind"] != kind:
        return record
    if record["kind"] == "evaluation":
        record.setdefault("protocol", LEGACY_PROTOCOL)
        if "eval_episodes" not in record and isinstance(record.get("episodes"), list) and record["episodes"]:
            record["eval_episodes"] = len(record["episodes"])  # counted, not guessed
        missing = [k for k in UPGRADE_MARKED if k not in record]
        for key in missing:
            record[key] = None
        if missing:
            record["missing_fields"] = missing
    problem = record_problem(record, record["kind"])
    if problem is not None:
        raise damaged(*problem)
    if record["kind"] == "evaluation":
        record.setdefault("status", "ok" if scores_finite(record) else "non_finite")
    return record


@dataclass
class StoreScan:
    """Everything one reading of a results root found: the valid records of a kind, in path order,
    and the damaged files, each named with its field (`DamagedRecord.line()`)."""

    records: list[tuple[Path, dict[str, Any]]] = field(default_factory=list)
    damaged: list[DamagedRecord] = field(default_factory=list)

    def summary(self) -> str:
        """One line for a table's or a report's footer; empty when nothing is damaged."""
        if not self.damaged:
            return ""
        return f"{len(self.damaged)} damaged records (left out): " + "; ".join(d.line() for d in self.damaged)


def scan_store(root: Path | str = DEFAULT_ROOT, kind: str = "evaluation") -> StoreScan:
    """THE store reader: every record of `kind` under `root` (runs and sweeps, nested roots read
    once), each checked against the schema; damaged files are listed in `.damaged`, never raised,
    never silently dropped. A record newer than this reader is still a StoreError (update ModeBench)."""
    if kind not in KINDS:
        raise StoreError(f"unknown record kind {kind!r}; choose from {', '.join(KINDS)}")
    scan = StoreScan()
    root = Path(root)
    if not root.exists():
        return scan
    seen: set[str] = set()
    for path in sorted(root.glob(f"**/{KINDS[kind]}/*.json")):
        # A key names one evaluation (run id, step, knobs): the same run stored under two roots
        # nested in this one (a bench run that the claims harness also holds) is counted once.
        if path.name in seen:
            continue
        try:
            record = read_record(path, kind)
        except DamagedRecordError as err:
            scan.damaged.append(err.damaged)
            continue
        if record["kind"] == kind:
            seen.add(path.name)
            scan.records.append((path, record))
    return scan


def iter_stored(root: Path | str = DEFAULT_ROOT, kind: str = "evaluation",
                damaged: list[DamagedRecord] | None = None) -> Iterator[tuple[Path, dict[str, Any]]]:
    """(path, record) for every valid record of `kind` under `root`, in path order (scan_store).
    Damaged files are appended to `damaged` when a list is given; without one, the first damaged
    file is a DamagedRecordError (a reader must say what it left out)."""
    scan = scan_store(root, kind)
    if damaged is not None:
        damaged.extend(scan.damaged)
    elif scan.damaged:
        raise DamagedRecordError(scan.damaged[0])
    yield from scan.records


def iter_records(root: Path | str = DEFAULT_ROOT, kind: str = "evaluation",
                 damaged: list[DamagedRecord] | None = None) -> Iterator[dict[str, Any]]:
    """Every valid record of `kind` ("evaluation" or "profile") under `root` (iter_stored)."""
    for _, record in iter_stored(root, kind, damaged):
        yield record


def run_config(record_path: Path | str) -> dict[str, Any] | None:
    """The config.json of the run an evaluation record belongs to, or None when it has none."""
    return _read_json_object(Path(record_path).parent.parent / RUN_FILES["config"])
