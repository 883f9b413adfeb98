"""Checkpoints: the model, optimizer states, normaliser and random states of a run, saved
atomically (tensors only) and loaded with `weights_only=True`, so resuming is exact."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

import torch

from algorithms.base import Algorithm
from benchmarks.data.dataset import Normalizer, TransitionDataset
from benchmarks.data.replay import DeviceReplay

CHECKPOINT_FORMAT = 1


def atomic_torch_save(path: Path, payload: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        torch.save(payload, tmp)
        with open(tmp, "rb") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


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
            "replay": replay.generator.get_state() if replay is not None else None,
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        },
    }
    atomic_torch_save(path, payload)


def load_checkpoint(path: Path | str) -> dict[str, Any]:
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"checkpoint {path} does not exist; `modebench train ... --out DIR` writes DIR/runs/<run>/checkpoint.pt")
    payload = torch.load(path, map_location="cpu", weights_only=True)
    if payload.get("format") != CHECKPOINT_FORMAT:
        raise ValueError(f"{path}: checkpoint format {payload.get('format')} is not {CHECKPOINT_FORMAT}")
    payload["run"] = json.loads(payload["run"])
    return payload


def restore(algorithm: Algorithm, payload: dict[str, Any], replay: DeviceReplay | None) -> None:
    algorithm.load_state_dict(payload["model"])
    for key, opt in _optimizer_like(algorithm).items():
        if key in payload["optim"]:
            opt.load_state_dict(payload["optim"][key])
    torch.set_rng_state(payload["rng"]["torch"])
    if replay is not None and payload["rng"]["replay"] is not None:
        replay.generator.set_state(payload["rng"]["replay"])
