"""The results store: one JSON record per evaluation, written atomically; checkpoints beside them.

Layout under a results root (default `results/`):

    runs/<run_id>/config.json           the full resolved config of the run
    runs/<run_id>/checkpoint.pt         latest checkpoint (tensors only; weights_only=True)
    runs/<run_id>/metrics.jsonl         training metrics, one line per logging interval
    runs/<run_id>/records/<key>.json    one evaluation record (training step x knob setting)

A record's file name is a hash of (run_id, step, knobs): writing the same evaluation twice
(a resumed run, a retried sweep trial) replaces it with identical content, so every
evaluation is stored exactly once. Writes go to a temporary file in the same folder, are
fsync'ed and renamed into place, so a crash never leaves a half-written record. Single runs and
sweeps write the same format; analysis reads `**/records/*.json` under any root.
"""

from __future__ import annotations

import json
import os
import subprocess
import tempfile
from collections.abc import Iterator
from functools import lru_cache
from pathlib import Path
from typing import Any

from algorithms.config import config_hash

SCHEMA_VERSION = 1
DEFAULT_ROOT = Path(os.environ.get("MODEBENCH_RESULTS", "results"))


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
    return f"step{step:09d}-{config_hash({'run_id': run_id, 'step': step, 'knobs': knobs})}"


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
        return self.path / "records"

    def write_config(self, config: dict[str, Any]) -> None:
        atomic_write_json(self.path / "config.json", config)

    def read_config(self) -> dict[str, Any]:
        return json.loads((self.path / "config.json").read_text())

    def write_record(self, record: dict[str, Any]) -> Path:
        record = {"schema_version": SCHEMA_VERSION, "run_id": self.run_id, **record}
        path = self.records_dir / f"{record_key(self.run_id, record['step'], record.get('knobs', {}))}.json"
        atomic_write_json(path, record)
        return path

    def has_record(self, step: int, knobs: dict[str, Any]) -> bool:
        return (self.records_dir / f"{record_key(self.run_id, step, knobs)}.json").exists()

    def append_metrics(self, line: dict[str, Any]) -> None:
        self.path.mkdir(parents=True, exist_ok=True)
        with open(self.path / "metrics.jsonl", "a") as fh:
            fh.write(json.dumps(line, sort_keys=True, default=_json_default) + "\n")
            fh.flush()


def iter_records(root: Path | str = DEFAULT_ROOT) -> Iterator[dict[str, Any]]:
    """Every evaluation record under `root` (runs and sweeps alike)."""
    for path in sorted(Path(root).glob("**/records/*.json")):
        try:
            yield json.loads(path.read_text())
        except json.JSONDecodeError as err:  # atomic writes make this a foreign or damaged file
            raise ValueError(f"damaged record {path}: {err}") from err
