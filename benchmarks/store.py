"""The results store: the one contract between writers (runs, sweeps, profiling) and readers (analysis).

Layout under a results root (default `results/`, or $MODEBENCH_RESULTS):

    runs/<run_id>/config.json           the full resolved run (method, task, config, knobs, data)
    runs/<run_id>/checkpoint.pt         latest checkpoint (written by benchmarks/run/checkpoints.py)
    runs/<run_id>/metrics.jsonl         training metrics, one line per logging interval
    runs/<run_id>/records/<key>.json    one evaluation record (training step x knob setting)
    runs/<run_id>/writer.lock           held (flock) by the one process writing the run (RunStore.writing)
    profiles/<key>.json                 one profile record (method x setting x device x batch)

Sweeps write the same layout under their own root; readers glob `**/records/*.json` and
`**/profiles/*.json` under any root.

A record's file name is a stable hash of its identity (for evaluations: run, step, knobs), so
writing the same evaluation twice (a resumed run, a retried sweep trial) replaces it with the
same content and every evaluation is stored exactly once. Writes go to a temporary file in the
same folder, are fsync'ed and renamed into place: a crash never leaves a half-written record.

Schema (SCHEMA_VERSION = 2; every field is documented in EVALUATION_FIELDS and PROFILE_FIELDS):

- v2 added `kind`, `protocol`, `suite_default`, `default_knobs`, `data`, `task_default`,
  `task_order`, the `diagnostics/<name>` values (evaluation records) and profile records.
  Version 1 records (written before) are READ, not refused: `read_record` fills what the run
  identity implies (`kind = "evaluation"`, `protocol = LEGACY_PROTOCOL`) and sets each field of
  UPGRADE_MARKED that the record lacks to None, listing it under `missing_fields`, so a reader
  sees "unknown" rather than a guess. Analysis documents what it does with each missing field
  (analysis/records.py).
- A record of a NEWER schema than this reader is refused with a one-line StoreError.

This module imports nothing of the project and no torch: analysis reads the store through it alone.
"""

from __future__ import annotations

import hashlib
import json
import os
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from functools import lru_cache
from pathlib import Path
from typing import Any

SCHEMA_VERSION = 2
DEFAULT_ROOT = Path(os.environ.get("MODEBENCH_RESULTS", "results"))

# ModeBench's distribution name (pyproject.toml [project] name; `modebench` on the public package index is
# an unrelated project): what `pip install` takes and what provenance reads the version of. The import
# name and the command stay `modebench`.
DISTRIBUTION = "modebench-rl"
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
    "data": "dict: the run's data settings (observation normalisation, reward transform, clipping)",
    "task_default": "bool: the suite marks this task its default (DROL Table 4's (*) rows)",
    "task_order": "int | None: position of the task in its suite file (table row order); None for ad-hoc datasets",
    # scores of the evaluation
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
    # provenance
    "git_revision": "str: source revision that wrote the record ('+dirty' with uncommitted changes)",
    "device": "str: torch device of the run",
    "compiled": "bool: the loss pass was torch.compile'd",
    "timestamp": "float: Unix time the record was written",
    "missing_fields": "list[str]: set by the READER: fields an older record lacks (see UPGRADE_MARKED)",
}
REQUIRED_EVALUATION = ("method", "base_method", "suite", "task", "dataset", "seed", "step", "total_steps", "source",
                       "knobs", "config", "normalized_score")
# What only the training run measures: a later evaluation at the same key keeps it (RunStore.write_record).
TRAINING_ONLY_FIELDS = ("updates_per_second", "train_wall_time", "training_metrics")
UPGRADE_MARKED = ("suite_default", "task_order")  # fields a reader marks missing (None) rather than guesses
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


def atomic_write_bytes(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
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
def git_revision() -> str:
    """The source revision of this checkout (with '+dirty' for uncommitted changes)."""
    here = Path(__file__).resolve().parent
    try:
        rev = subprocess.run(["git", "rev-parse", "HEAD"], check=False, cwd=here, capture_output=True, text=True, timeout=5)
        if rev.returncode != 0:
            return "unknown"
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], check=False, cwd=here, capture_output=True, text=True, timeout=5)
        return rev.stdout.strip() + ("+dirty" if dirty.stdout.strip() else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def record_key(run_id: str, step: int, knobs: dict[str, Any]) -> str:
    """File stem of the evaluation record of `run_id` at `step` with `knobs`."""
    return f"step{step:09d}-{stable_hash({'run_id': run_id, 'step': step, 'knobs': knobs})}"


def _check(record: Mapping[str, Any], required: tuple[str, ...], what: str) -> None:
    missing = [k for k in required if k not in record]
    if missing:
        raise StoreError(f"{what} lacks required field(s) {missing}; see benchmarks/store.py for the schema")
    protocol = record.get("protocol")
    if protocol is not None and protocol not in PROTOCOLS:
        raise StoreError(f"{what}: protocol {protocol!r} is not one of {', '.join(PROTOCOLS)}")
    if record.get("suite_default") is not None and not isinstance(record["suite_default"], bool):
        raise StoreError(f"{what}: suite_default must be true or false, got {record['suite_default']!r}")


class RunStore:
    """The folder of one run: config, checkpoint, metrics and evaluation records."""

    def __init__(self, root: Path | str, run_id: str):
        self.root = Path(root)
        self.run_id = run_id
        self.path = self.root / "runs" / run_id

    @property
    def checkpoint_path(self) -> Path:
        return self.path / "checkpoint.pt"

    @property
    def records_dir(self) -> Path:
        return self.path / KINDS["evaluation"]

    @property
    def lock_path(self) -> Path:
        return self.path / "writer.lock"

    @contextmanager
    def writing(self, wait: float = 0.0) -> Iterator[RunStore]:
        """Hold the run folder's writer lock: every process that writes a run (training, a
        checkpoint's evaluation, a sweep trial) does it inside this block, so two processes never
        write one run folder, even when two drivers (or two hosts on a shared file system) start
        the same run. Another process holding it: RunBusyError after `wait` seconds of retrying.

        An exclusive flock on `writer.lock`: the kernel drops it when its holder exits in any way
        (SIGKILL included), so a dead writer never leaves a stale lock, and the file is never
        deleted (deleting a lock file lets two processes lock two different files). Re-entrant
        within a process (a sweep trial holds it around train(), which takes it again). On NFS
        (v4, or v3 with lockd) Linux maps flock to a byte-range lock the server arbitrates."""
        key = str(self.lock_path.resolve())
        with _HELD_GUARD:
            held = _HELD.get(key)
            if held is not None:
                held[1] += 1
        if held is None:
            handle = self._lock(wait)
            with _HELD_GUARD:
                held = _HELD[key] = [handle, 1]
        try:
            yield self
        finally:
            with _HELD_GUARD:
                held[1] -= 1
                last = held[1] == 0
                if last:
                    del _HELD[key]
            if last:
                held[0].close()  # closing the descriptor releases the flock

    def _lock(self, wait: float):
        import fcntl  # POSIX; imported here so that readers of the store import nothing they do not use

        self.path.mkdir(parents=True, exist_ok=True)
        handle = open(self.lock_path, "a+")  # noqa: SIM115 -- held open for the lock's lifetime, closed by writing()
        deadline = time.monotonic() + wait
        while True:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    handle.seek(0)
                    holder = handle.read().strip() or "another process"
                    handle.close()
                    raise RunBusyError(f"run {self.run_id} is being written by {holder}; not writing it twice "
                                       "(wait for that process to end, or stop it)") from None
                time.sleep(min(1.0, max(0.05, deadline - time.monotonic())))
        handle.seek(0)
        handle.truncate()
        handle.write(f"pid {os.getpid()} on {socket.gethostname()} (since {time.strftime('%Y-%m-%d %H:%M:%S')})\n")
        handle.flush()
        return handle

    def write_config(self, config: dict[str, Any]) -> None:
        atomic_write_json(self.path / "config.json", config)

    def write_record(self, record: dict[str, Any]) -> Path:
        """Stamp the schema version, kind and run id, check the required fields, write atomically."""
        record = {**record, "schema_version": SCHEMA_VERSION, "kind": "evaluation", "run_id": self.run_id}
        _check(record, REQUIRED_EVALUATION, f"evaluation record of {self.run_id}")
        path = self.records_dir / f"{record_key(self.run_id, record['step'], record.get('knobs', {}))}.json"
        if path.exists() and record.get("source") != "train":
            # Re-evaluating a checkpoint at the run's own knobs lands on its training record's key:
            # keep what only training could measure (updates/s, training metrics, diagnostics).
            trained = read_record(path)
            record = {**{k: v for k, v in trained.items() if k in TRAINING_ONLY_FIELDS or k.startswith("diagnostics/")},
                      **record}
        atomic_write_json(path, record)
        return path

    def has_record(self, step: int, knobs: dict[str, Any]) -> bool:
        return (self.records_dir / f"{record_key(self.run_id, step, knobs)}.json").exists()

    def append_metrics(self, line: dict[str, Any]) -> None:
        self.path.mkdir(parents=True, exist_ok=True)
        with open(self.path / "metrics.jsonl", "a") as fh:
            fh.write(json.dumps(line, sort_keys=True, default=_json_default) + "\n")
            fh.flush()


def profile_key(record: Mapping[str, Any]) -> str:
    """File stem of a profile record: re-measuring the same setting replaces its record."""
    return f"{record['method']}__{record['setting']}__{stable_hash({k: record[k] for k in PROFILE_IDENTITY})}"


def write_profile(root: Path | str, record: dict[str, Any]) -> Path:
    """Write one profile record under <root>/profiles/ (stamped, checked, atomic)."""
    record = {"git_revision": git_revision(), **record, "schema_version": SCHEMA_VERSION, "kind": "profile"}
    _check(record, REQUIRED_PROFILE, f"profile record of {record.get('method', '?')}")
    path = Path(root) / KINDS["profile"] / f"{profile_key(record)}.json"
    atomic_write_json(path, record)
    return path


# ---------------------------------------------------------------------- reading


def read_record(path: Path | str) -> dict[str, Any]:
    """One stored record, upgraded to the current schema's shape (see the module docstring)."""
    path = Path(path)
    try:
        record = json.loads(path.read_text())
    except json.JSONDecodeError as err:  # atomic writes make this a foreign or damaged file
        raise StoreError(f"damaged record {path}: {err}; delete it (its run re-evaluates on resume)") from err
    if not isinstance(record, dict):
        raise StoreError(f"record {path} is not a JSON object; delete it or move it out of the store")
    version = record.get("schema_version", 1)
    if not isinstance(version, int) or version > SCHEMA_VERSION:
        raise StoreError(f"record {path} has schema_version {version!r}, newer than this reader's {SCHEMA_VERSION}: "
                         "update ModeBench to read it")
    record.setdefault("kind", "evaluation")
    if record["kind"] == "evaluation":
        record.setdefault("protocol", LEGACY_PROTOCOL)
        missing = [k for k in UPGRADE_MARKED if k not in record]
        for key in missing:
            record[key] = None
        if missing:
            record["missing_fields"] = missing
    return record


def iter_stored(root: Path | str = DEFAULT_ROOT, kind: str = "evaluation") -> Iterator[tuple[Path, dict[str, Any]]]:
    """(path, record) for every record of `kind` under `root`, in path order (deterministic)."""
    if kind not in KINDS:
        raise StoreError(f"unknown record kind {kind!r}; choose from {', '.join(KINDS)}")
    root = Path(root)
    if not root.exists():
        return
    seen: set[str] = set()
    for path in sorted(root.glob(f"**/{KINDS[kind]}/*.json")):
        # A key names one evaluation (run id, step, knobs): the same run stored under two roots
        # nested in this one (a bench run that the claims harness also holds) is counted once.
        if path.name in seen:
            continue
        record = read_record(path)
        if record["kind"] == kind:
            seen.add(path.name)
            yield path, record


def iter_records(root: Path | str = DEFAULT_ROOT, kind: str = "evaluation") -> Iterator[dict[str, Any]]:
    """Every record of `kind` ("evaluation" or "profile") under `root` (runs and sweeps alike)."""
    for _, record in iter_stored(root, kind):
        yield record


def run_config(record_path: Path | str) -> dict[str, Any] | None:
    """The config.json of the run an evaluation record belongs to, or None when it has none."""
    path = Path(record_path).parent.parent / "config.json"
    if not path.exists():
        return None
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError:
        return None
