"""Checkpoints: the model, optimizer states, normaliser and random states of a run, saved
atomically (tensors only) and loaded with `weights_only=True`, so resuming is exact.

A checkpoint that is truncated, foreign (another program's pickle, a torch file with other
keys) or from another run than the folder it sits in (its config.json disagrees) is refused
with one CheckpointError line; nothing in it is unpickled beyond tensors and plain containers."""

from __future__ import annotations

import io
import json
import pickle
import warnings
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from modebench.algorithms.base import Algorithm
from modebench.benchmarks.data.dataset import Normalizer, TransitionDataset
from modebench.benchmarks.data.replay import DeviceReplay
from modebench.benchmarks.data.validate import one_line
from modebench.benchmarks.store import atomic_write_bytes

CHECKPOINT_FORMAT = 1
PAYLOAD_KEYS = ("format", "run", "step", "model", "optim", "normalizer", "action_low", "action_high", "rng")
# What names a run: a checkpoint whose run differs from its folder's config.json in any of these
# (where both record it) was trained for another method, task, seed, length or configuration.
IDENTITY = ("method", "task", "seed", "steps", "config_hash")
RETRAIN = "delete the run folder (or that checkpoint.pt) to train again, or point at the checkpoint in its own run folder"


class CheckpointError(ValueError):
    """A checkpoint is damaged, foreign or from another run; the message names the file and the fix."""


def atomic_torch_save(path: Path, payload: Any) -> None:
    """torch.save through the store's atomic writer (a crash never leaves half a checkpoint)."""
    buffer = io.BytesIO()
    torch.save(payload, buffer)
    atomic_write_bytes(path, buffer.getvalue())


def _optimizer_like(algorithm: Algorithm) -> dict[str, Any]:
    """Optimizers and LR schedulers held as attributes (saved for an exact resume)."""
    return {
        key: value
        for key, value in vars(algorithm).items()
        if isinstance(value, (torch.optim.Optimizer, torch.optim.lr_scheduler.LRScheduler))
    }


def save_checkpoint(path: Path, algorithm: Algorithm, run: dict[str, Any], step: int, normalizer: Normalizer,
                    dataset: TransitionDataset, replay: DeviceReplay | None) -> None:
    payload = {
        "format": CHECKPOINT_FORMAT,
        "run": json.dumps(run, sort_keys=True, default=str),
        "step": step,
        "model": algorithm.state_dict(),
        "optim": {k: v.state_dict() for k, v in _optimizer_like(algorithm).items()},
        "normalizer": normalizer.state_dict(),
        "action_low": None if dataset.action_low is None else torch.as_tensor(dataset.action_low),
        "action_high": None if dataset.action_high is None else torch.as_tensor(dataset.action_high),
        "rng": {
            "torch": torch.get_rng_state(),
            # the method's own draws in its updates (one generator per seed: algorithms/seeds.py)
            "losses": algorithm.rng.get_state(),
            "replay": replay.generator.get_state() if replay is not None else None,
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        },
    }
    atomic_torch_save(path, payload)


def load_checkpoint(path: Path | str) -> dict[str, Any]:
    """A checkpoint's payload (tensors only), checked: readable, ModeBench's keys and format,
    and the same run as the config.json beside it."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"checkpoint {path} does not exist; `modebench train ... --results DIR` writes DIR/runs/<run>/checkpoint.pt")
    if path.is_dir():
        raise CheckpointError(f"{path} is a folder; give its checkpoint file, DIR/runs/<run>/checkpoint.pt")
    try:
        with warnings.catch_warnings():  # torch's note on a foreign pickle's protocol: noise beside our one line
            warnings.filterwarnings("ignore", message="Detected pickle protocol", category=UserWarning)
            payload = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        raise CheckpointError(
            f"{path}: not a ModeBench checkpoint: it holds Python objects other than tensors, which are never "
            "unpickled (weights_only); give a checkpoint.pt that `modebench train` wrote"
        ) from None
    except (RuntimeError, EOFError, OSError, ValueError, zipfile.BadZipFile) as err:
        raise CheckpointError(f"{path}: cannot be read ({one_line(err)}); it is truncated or damaged (an interrupted copy?): "
                              f"copy it again, or {RETRAIN}") from None
    if not isinstance(payload, Mapping) or any(key not in payload for key in PAYLOAD_KEYS):
        found = sorted(map(str, payload)) if isinstance(payload, Mapping) else type(payload).__name__
        raise CheckpointError(f"{path}: not a ModeBench checkpoint (it holds {found}; a checkpoint holds "
                              f"{list(PAYLOAD_KEYS)}); give a checkpoint.pt that `modebench train` wrote")
    payload = dict(payload)
    if payload["format"] != CHECKPOINT_FORMAT:
        raise CheckpointError(f"{path}: checkpoint format {payload['format']!r} is not {CHECKPOINT_FORMAT} "
                              f"(written by another ModeBench version); {RETRAIN}")
    try:
        payload["run"] = json.loads(payload["run"])
    except (TypeError, json.JSONDecodeError):
        raise CheckpointError(f"{path}: its 'run' entry is not the run's JSON description; {RETRAIN}") from None
    _check_same_run(path, payload["run"])
    payload["path"] = str(path)
    return payload


def _identity(run: Mapping[str, Any]) -> dict[str, Any]:
    task = run.get("task")
    return {key: (task.get("id") if isinstance(task, Mapping) else task) if key == "task" else run.get(key)
            for key in IDENTITY}


def _check_same_run(path: Path, run: Any) -> None:
    """The checkpoint's run is the one its folder's config.json describes (when there is one)."""
    if not isinstance(run, Mapping):
        raise CheckpointError(f"{path}: its 'run' entry is not the run's JSON description; {RETRAIN}")
    config = path.parent / "config.json"
    if not config.exists():
        return
    try:
        folder_run = json.loads(config.read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise CheckpointError(f"{config}: cannot be read ({one_line(err)}); the run folder is damaged: {RETRAIN}") from None
    ours, theirs = _identity(run), _identity(folder_run) if isinstance(folder_run, Mapping) else {}
    differ = [f"{key} {ours[key]!r} vs {theirs[key]!r}" for key in IDENTITY
              if ours[key] is not None and theirs.get(key) is not None and ours[key] != theirs[key]]
    if differ:
        raise CheckpointError(f"{path}: belongs to another run than the config.json beside it "
                              f"({'; '.join(differ)}: checkpoint vs folder); {RETRAIN}")


def load_weights(algorithm: Algorithm, payload: dict[str, Any]) -> None:
    """The checkpoint's model into `algorithm`, or a CheckpointError when its tensors do not fit
    (a checkpoint edited by hand, or from another version of the method)."""
    state, expected = payload["model"], algorithm.state_dict()
    missing, unexpected = sorted(set(expected) - set(state)), sorted(set(state) - set(expected))
    reason = "; ".join(f"{what} {keys[:3]}{' ...' if len(keys) > 3 else ''}"
                       for what, keys in (("missing", missing), ("unexpected", unexpected)) if keys)
    if not reason:
        try:
            algorithm.load_state_dict(state)
            return
        except (RuntimeError, TypeError, ValueError) as err:  # torch lists the size mismatches after a heading line
            lines = str(err).strip().splitlines()
            reason = (lines[1].strip() if len(lines) > 1 else one_line(err))[:200]
    raise CheckpointError(f"{payload.get('path', 'checkpoint')}: its weights do not fit {type(algorithm).__name__} "
                          f"({reason}); {RETRAIN}")


def restore(algorithm: Algorithm, payload: dict[str, Any], replay: DeviceReplay | None) -> None:
    load_weights(algorithm, payload)
    try:
        for key, opt in _optimizer_like(algorithm).items():
            if key in payload["optim"]:
                opt.load_state_dict(payload["optim"][key])
        torch.set_rng_state(payload["rng"]["torch"])
        if "losses" in payload["rng"]:
            algorithm.rng.set_state(payload["rng"]["losses"])
        # else a checkpoint written before the updates had their own generator: they continue
        # the global stream just restored, as they did then
        if replay is not None and payload["rng"]["replay"] is not None:
            replay.generator.set_state(payload["rng"]["replay"])
    except (RuntimeError, KeyError, TypeError, ValueError) as err:
        raise CheckpointError(f"{payload.get('path', 'checkpoint')}: its optimizer or random states do not fit this run "
                              f"({one_line(err)}); {RETRAIN}") from None
