"""Timing `act` is a run: latency, peak memory and parameter count of every method (GEM Table 3).

    modebench profile [--devices cpu,cuda] [--batch-sizes 1,64] [--repeats 50] [--methods a,b] [--results DIR]

One harness, the same conditions for every registered base method (algorithms.registry.METHODS
entries without preset overrides): the method is built from its config class's defaults with
random weights and an EnvSpec at paper sizes (obs 17, act 6: halfcheetah; horizon 1000), put in
eval mode, and `act` is called under `torch.no_grad()` on a fixed batch of random normalised
states at random episode steps. Per setting: `warmup` untimed calls, then up to `repeats` timed
calls (CUDA synchronised before and after each; a slow setting stops after `max_seconds` with at
least MIN_REPEATS calls).

Settings: candidate methods (a knob `N`) at N in {1, 64, 1024, 2048}; iterative samplers (a knob
`T`) at T in {10, 20, 50, 100}; every other method once at its defaults. `--knob NAME=VALUE`
fixes another knob for every method that has it (e.g. ISEP-FM's guidance `w=1`: one branch
instead of two). GEM Table 3 repeats the unaffected methods' numbers under every setting; we
measure only the settings that exist.

Memory: on CUDA the allocator's peak allocated / reserved bytes during the timed calls (weights
included, as GEM reports); on CPU the peak of live tensor bytes during one call, from the torch
profiler's allocation events, plus the weights and the input (no allocator reservation on CPU).

Each setting is one profile record in the results store (`<out>/profiles/`, schema in
benchmarks/store.py); `modebench tables` renders them (analysis never re-measures).
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from modebench.algorithms.config import ConfigError, from_dict, parse_assignments
from modebench.benchmarks.store import DEFAULT_ROOT, write_profile

MIN_REPEATS = 3
N_VALUES = (1, 64, 1024, 2048)
T_VALUES = (10, 20, 50, 100)


@dataclass
class ProfileConfig:
    obs_dim: int = 17  # paper sizes (halfcheetah)
    act_dim: int = 6
    horizon: int = 1000
    batch_sizes: tuple[int, ...] = (1, 64)  # states per act call: one environment, and a vectorised evaluation
    warmup: int = 5  # untimed calls before timing
    repeats: int = 50  # timed calls; the median is reported
    max_seconds: float = 10.0  # stop a setting's timing early after this long (at least MIN_REPEATS calls)
    threads: int = 1  # CPU threads (torch.set_num_threads), the same for every method
    seed: int = 0
    n_values: tuple[int, ...] = N_VALUES
    t_values: tuple[int, ...] = T_VALUES
    fixed_knobs: dict[str, str] = field(default_factory=dict)  # --knob NAME=VALUE for every method that has NAME


def base_method_names() -> list[str]:
    from modebench.algorithms.registry import METHODS

    return [name for name, entry in METHODS.items() if not entry.config and not entry.knobs]


def settings_for(knobs_class: type, cfg: ProfileConfig | None = None) -> list[tuple[str, dict[str, Any]]]:
    """N-sweep for candidate methods (knob N), T-sweep for iterative samplers (knob T), else defaults."""
    cfg = cfg or ProfileConfig()
    names = {f.name for f in dataclasses.fields(knobs_class)}
    out: list[tuple[str, dict[str, Any]]] = []
    if "N" in names:
        out += [(f"N{n}", {"N": n}) for n in cfg.n_values]
    if "T" in names:
        out += [(f"T{t}", {"T": t}) for t in cfg.t_values]
    return out or [("default", {})]


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _cpu_peak_bytes(fn: Callable[[], Any]) -> int:
    """Peak of live tensor bytes allocated during fn() on CPU (profiler allocation events, in time order)."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        fn()
    events = sorted((e for e in prof.events() if e.self_cpu_memory_usage), key=lambda e: e.time_range.start)
    live = peak = 0
    for event in events:
        live += event.self_cpu_memory_usage
        peak = max(peak, live)
    return peak


def build(name: str, cfg: ProfileConfig, device: torch.device):
    """The registered method with its config class's defaults and random weights, in eval mode."""
    from modebench.algorithms.base import EnvSpec
    from modebench.algorithms.registry import get_method

    cls = get_method(name).load()
    torch.manual_seed(cfg.seed)
    algo = cls(cls.config_class(), EnvSpec(cfg.obs_dim, cfg.act_dim, cfg.horizon), device)
    algo.to(device)
    algo.eval()
    return algo


def profile_method(name: str, device: torch.device, cfg: ProfileConfig, log: Callable[[str], None] = print) -> list[dict[str, Any]]:
    """One profile record (not yet stored) per (batch size, setting) of `name` on `device`."""
    algo = build(name, cfg, device)
    params = sum(p.numel() for p in algo.parameters())
    weight_bytes = sum(p.numel() * p.element_size() for p in algo.parameters()) + sum(
        b.numel() * b.element_size() for b in algo.buffers())
    knobs_class = type(algo.default_knobs())
    fixed = {k: v for k, v in cfg.fixed_knobs.items() if k in {f.name for f in dataclasses.fields(knobs_class)}}
    rows = []
    gen = torch.Generator().manual_seed(cfg.seed)
    for batch in cfg.batch_sizes:
        obs = torch.randn(batch, cfg.obs_dim, generator=gen).to(device)
        t = torch.randint(0, cfg.horizon, (batch,), generator=gen).to(device)
        for setting, values in settings_for(knobs_class, cfg):
            knobs = from_dict(knobs_class, {**fixed, **values}, base=algo.default_knobs(), what=f"{name} knob")

            def call(algo=algo, obs=obs, t=t, knobs=knobs) -> None:
                with torch.no_grad():
                    algo.act(obs, t, knobs)

            for _ in range(cfg.warmup):
                call()
            _sync(device)
            if device.type == "cuda":
                torch.cuda.reset_peak_memory_stats(device)
            times: list[float] = []
            began = time.perf_counter()
            while len(times) < cfg.repeats and (len(times) < MIN_REPEATS or time.perf_counter() - began < cfg.max_seconds):
                _sync(device)
                start = time.perf_counter()
                call()
                _sync(device)
                times.append((time.perf_counter() - start) * 1e3)
            if device.type == "cuda":
                alloc = torch.cuda.max_memory_allocated(device) / 2**20
                reserved = torch.cuda.max_memory_reserved(device) / 2**20
            else:
                alloc = (weight_bytes + obs.numel() * obs.element_size() + t.numel() * t.element_size()
                         + _cpu_peak_bytes(call)) / 2**20
                reserved = math.nan
            q1, q3 = np.percentile(times, [25, 75])
            rows.append({
                "method": name, "setting": setting + "".join(f",{k}={v}" for k, v in sorted(fixed.items())),
                "knobs": dataclasses.asdict(knobs), "device": str(device), "batch": batch,
                "obs_dim": cfg.obs_dim, "act_dim": cfg.act_dim, "horizon": cfg.horizon,
                "latency_ms_median": statistics.median(times), "latency_ms_iqr_low": float(q1), "latency_ms_iqr_high": float(q3),
                "latency_ms_mean": float(np.mean(times)), "latency_ms_std": float(np.std(times, ddof=1)),
                "peak_alloc_mb": alloc, "peak_reserved_mb": reserved, "params_m": params / 1e6,
                "repeats": len(times), "warmup": cfg.warmup, "threads": torch.get_num_threads(),
                "torch_version": torch.__version__, "timestamp": time.time(),
            })
            log(f"profile: {name:10s} {rows[-1]['setting']:8s} {device} batch {batch:4d}: {statistics.median(times):8.3f} ms "
                f"median, peak {alloc:8.2f} MB, {params / 1e6:.3f} M params")
    del algo
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return rows


def run_profile(root: Path | str, methods: Sequence[str] | None = None, devices: Sequence[str] | None = None,
                cfg: ProfileConfig | None = None, log: Callable[[str], None] = print) -> tuple[list[Path], list[str]]:
    """Profile every method on every device and store one record per setting under <root>/profiles/.
    Returns (written record paths, failures); one broken method does not hide the others' numbers."""
    cfg = cfg or ProfileConfig()
    methods = list(methods) if methods else base_method_names()
    if devices is None:
        devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    for device in devices:
        if device.startswith("cuda") and not torch.cuda.is_available():
            raise ConfigError("--devices cuda was asked for but no CUDA device is available; use --devices cpu")
    if cfg.fixed_knobs:
        from modebench.algorithms.registry import get_method

        known = {f.name for m in methods for f in dataclasses.fields(get_method(m).load().knobs_class)}
        unknown = sorted(set(cfg.fixed_knobs) - known)
        if unknown:
            raise ConfigError(f"--knob {', '.join(unknown)}: no profiled method has such a knob (theirs: {', '.join(sorted(known))})")
    previous_threads = torch.get_num_threads()
    torch.set_num_threads(cfg.threads)
    written: list[Path] = []
    failures: list[str] = []
    try:
        for device in devices:
            for name in methods:
                try:
                    rows = profile_method(name, torch.device(device), cfg, log)
                except Exception as err:  # noqa: BLE001 -- one broken method must not hide the others' numbers
                    failures.append(f"{name} on {device}: {type(err).__name__}: {err}")
                    log(f"profile: {name} on {device} FAILED: {type(err).__name__}: {err}")
                    continue
                written += [write_profile(root, row) for row in rows]
    finally:
        torch.set_num_threads(previous_threads)
    return written, failures


# ---------------------------------------------------------------------- the `modebench profile` subcommand


def _ints(text: str, what: str) -> tuple[int, ...]:
    try:
        values = tuple(int(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise ConfigError(f"{what} {text!r}: expected comma-separated integers, e.g. 1,64") from None
    if not values or min(values) < 1:
        raise ConfigError(f"{what} {text!r}: values must be integers >= 1")
    return values


def cmd_profile(args: argparse.Namespace) -> int:
    """`modebench profile` (its options: benchmarks/cli.py)."""
    if args.max_seconds <= 0:
        raise ConfigError(f"--max-seconds must be > 0, got {args.max_seconds}")
    methods = args.methods
    if methods:
        from modebench.algorithms.registry import get_method

        for m in methods:
            get_method(m)  # an unknown name is a one-line error before anything is timed
    cfg = ProfileConfig(batch_sizes=_ints(args.batch_sizes, "--batch-sizes"), repeats=args.repeats, warmup=args.warmup,
                        threads=args.threads, max_seconds=args.max_seconds,
                        fixed_knobs=parse_assignments(args.knob, "--knob"))
    devices = [d.strip() for d in args.devices.split(",") if d.strip()] if args.devices else None
    root = Path(args.results) if args.results else DEFAULT_ROOT
    written, failures = run_profile(root, methods, devices, cfg)
    print(f"profile: {len(written)} profile records -> {root}/profiles/; `modebench tables` renders them"
          + (f"; FAILED: {'; '.join(failures)}" if failures else ""))
    return 1 if failures else 0
