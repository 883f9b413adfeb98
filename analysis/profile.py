"""The deployment profile: `act` latency, peak memory and parameter count of every method (GEM Table 3).

    python -m analysis.profile [--devices cpu,cuda] [--batch-sizes 1,64] [--repeats 50] [--methods a,b]
    modebench profile ...

One harness, the same conditions for every registered base method (algorithms.registry.METHODS
entries without preset overrides): the method is built from its config class's defaults with
random weights and an EnvSpec at paper sizes (obs 17, act 6: halfcheetah; horizon 1000), put in
eval mode, and `act` is called under `torch.no_grad()` on a fixed batch of random normalised
states at random episode steps. Per setting: `warmup` untimed calls, then up to `repeats` timed
calls (CUDA synchronised before and after each; a slow setting stops after `max_seconds` with at
least 3 calls); the table reports the median with the interquartile range, and the mean ± std as
GEM Table 3 does.

Settings: candidate methods (a knob `N`) at N in {1, 64, 1024, 2048}; iterative samplers (a knob
`T`) at T in {10, 20, 50, 100}; every other method once at its defaults. (GEM Table 3 repeats the
unaffected methods' numbers under every setting; we measure only the settings that exist.)

Memory: on CUDA the allocator's peak allocated / reserved bytes during the timed calls (weights
included, as GEM reports); on CPU the peak of live tensor bytes during one call, from the torch
profiler's allocation events, plus the weights and the input (no allocator reservation on CPU).

Also written: the NLL-gap table (GEM Table 9) for every stored run whose method reports an NLL
gap in `diagnostics()` (GEM: `diagnostics/behavior_gap`, Eq. 72-75), computed from its checkpoint
on its whole dataset -- no training -- or read from records that carry diagnostics.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from analysis.render import Cell, Table, num

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


def base_method_names() -> list[str]:
    from algorithms.registry import METHODS

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
    from algorithms.base import EnvSpec
    from algorithms.registry import get_method

    cls = get_method(name).load()
    torch.manual_seed(cfg.seed)
    algo = cls(cls.config_class(), EnvSpec(cfg.obs_dim, cfg.act_dim, cfg.horizon), device)
    algo.to(device)
    algo.eval()
    return algo


def profile_method(name: str, device: torch.device, cfg: ProfileConfig, log: Callable[[str], None] = print) -> list[dict[str, Any]]:
    from algorithms.config import from_dict

    algo = build(name, cfg, device)
    params = sum(p.numel() for p in algo.parameters())
    weight_bytes = sum(p.numel() * p.element_size() for p in algo.parameters()) + sum(
        b.numel() * b.element_size() for b in algo.buffers())
    rows = []
    gen = torch.Generator().manual_seed(cfg.seed)
    for batch in cfg.batch_sizes:
        obs = torch.randn(batch, cfg.obs_dim, generator=gen).to(device)
        t = torch.randint(0, cfg.horizon, (batch,), generator=gen).to(device)
        for setting, values in settings_for(type(algo.default_knobs()), cfg):
            knobs = from_dict(type(algo.default_knobs()), values, base=algo.default_knobs(), what=f"{name} knob")

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
                alloc = (weight_bytes + obs.numel() * 4 + t.numel() * 8 + _cpu_peak_bytes(call)) / 2**20
                reserved = math.nan
            q1, q3 = np.percentile(times, [25, 75])
            rows.append({
                "method": name, "setting": setting, "device": str(device), "batch": batch,
                "latency_ms_median": statistics.median(times), "latency_ms_iqr_low": q1, "latency_ms_iqr_high": q3,
                "latency_ms_mean": float(np.mean(times)), "latency_ms_std": float(np.std(times, ddof=1)),
                "peak_alloc_mb": alloc, "peak_reserved_mb": reserved, "params_m": params / 1e6,
                "repeats": len(times), "warmup": cfg.warmup, "threads": torch.get_num_threads(),
            })
            log(f"profile: {name:10s} {setting:8s} {device} batch {batch:4d}: {statistics.median(times):8.3f} ms median, "
                f"peak {alloc:8.2f} MB, {params / 1e6:.3f} M params")
    del algo
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return rows


def profile_table(frame: pd.DataFrame, device: str) -> Table:
    part = frame[frame["device"] == device]
    name = "latency_" + device.replace(":", "")
    title = f"Deployment profile of act on {device} (GEM Table 3 layout)"
    header = ["Method", "Setting", "Batch", "Latency (ms) median [IQR]", "Latency (ms) mean ± std", "Peak alloc (MB)",
              "Peak reserved (MB)", "Params (M)"]
    table = Table(name, title, header)
    for r in part.itertuples(index=False):
        table.add(Cell(r.method), Cell(r.setting), Cell(str(r.batch)),
                  Cell(f"{num(r.latency_ms_median, 3)} [{num(r.latency_ms_iqr_low, 3)}, {num(r.latency_ms_iqr_high, 3)}]"),
                  Cell(f"{num(r.latency_ms_mean, 3)} ± {num(r.latency_ms_std, 3)}"), Cell(num(r.peak_alloc_mb, 2)),
                  Cell(num(r.peak_reserved_mb, 2)), Cell(num(r.params_m, 3)))
    table.data = part.reset_index(drop=True)
    first = part.iloc[0] if len(part) else None
    table.notes = [
        f"Up to {int(part['repeats'].max())} timed calls ({int(part['repeats'].min())} for the slowest settings, capped by time) "
        f"after {int(first.warmup)} warm-up calls per setting; random weights, config-class defaults, "
        f"obs 17 / act 6, torch {torch.__version__}, {int(first.threads)} CPU thread(s)." if first is not None else "",
        "Peak alloc: CUDA allocator peak (weights included) on GPU; on CPU the weights + input + peak live tensor bytes of one call.",
        ("Published GEM Table 3 (their GPU, batch not stated): GEM 1.25-1.33 ms for N = 1..2048 with peak alloc 20.76 -> 80.83 MB; "
        "IDQL 2.04 -> 20.37 ms for T = 10 -> 100. Compare shapes across N and T, not absolute milliseconds across machines."),
    ]
    return table


# ------------------------------------------------------------------------ NLL gap (GEM Table 9)


def _gap_from_checkpoint(path: Path, device: str = "cpu", chunk: int = 4096) -> dict[str, float]:
    from algorithms.config import from_dict
    from benchmarks.data.dataset import DataConfig
    from benchmarks.data.replay import DeviceReplay
    from benchmarks.run.checkpoints import load_checkpoint
    from benchmarks.run.train import rebuild

    payload = load_checkpoint(path)
    algorithm, task, normalizer, _ = rebuild(payload, device)
    dataset = task.load_dataset()
    replay = DeviceReplay(dataset, from_dict(DataConfig, payload["run"].get("data", {}), what="data"), normalizer,
                          torch.device(device), 0)
    totals: dict[str, float] = {}
    for start in range(0, replay.size, chunk):
        idx = torch.arange(start, min(start + chunk, replay.size), device=replay.device)
        for key, value in algorithm.diagnostics(replay.batch(idx)).items():
            totals[key] = totals.get(key, 0.0) + float(value) * len(idx)
    return {k: v / replay.size for k, v in totals.items()}


def nll_gap_frame(root: Path, log: Callable[[str], None] = print, device: str = "cpu") -> pd.DataFrame:
    """Per run: the NLL-gap diagnostics (keys ending in `_gap`) from records, else from the checkpoint."""
    from analysis.records import load_records

    frame = load_records(root)
    if frame.empty:
        return pd.DataFrame()
    rows = []
    for run_id, group in frame.groupby("run_id", sort=True):
        first = group.iloc[-1]
        recorded = {c: group[c].dropna().iloc[-1] for c in group if c.startswith("diagnostics/") and c.endswith("_gap")
                    and group[c].notna().any()}
        if not recorded:
            method = str(first["base_method"])
            from algorithms.base import Algorithm
            from algorithms.registry import METHODS

            if method not in METHODS or METHODS[method].load().diagnostics is Algorithm.diagnostics:
                continue  # a method without dataset diagnostics (or one not registered here)
            checkpoint = Path(first["path"]).parent.parent / "checkpoint.pt"
            if not checkpoint.exists():
                continue
            try:
                recorded = {k: v for k, v in _gap_from_checkpoint(checkpoint, device).items() if k.endswith("_gap")}
            except Exception as err:  # noqa: BLE001 -- an old checkpoint or a missing dataset must not stop the table
                log(f"profile: NLL gap of {run_id} not computed: {type(err).__name__}: {err}")
                continue
        if recorded:
            rows.append({"run_id": run_id, "method": first["method"], "task": first["task"], "dataset": first["dataset"],
                         "seed": int(first["seed"]), **recorded})
    return pd.DataFrame(rows)


def nll_gap_table(per_run: pd.DataFrame) -> Table:
    from analysis.reference import read_reference, reference_id

    gaps = [c for c in per_run if c.endswith("_gap")]
    primary = "diagnostics/behavior_gap" if "diagnostics/behavior_gap" in gaps else gaps[0]
    paper = read_reference("gem_table9_nll_gap").set_index("dataset_id")
    header = ["Task", "Method"] + [f"{g.split('/')[-1]} mean ± std" for g in gaps] + ["seeds", "paper gap", "Δ"]
    table = Table("nll_gap", "Multimodality diagnostic: dataset NLL gap = NLL_top1 - NLL_gmm (GEM Table 9 layout)", header)
    rows = []
    for (task, method), group in per_run.groupby(["task", "method"], sort=False):
        ref = reference_id(task, group["dataset"].iloc[0])
        cells = [Cell(task), Cell(method)]
        row: dict[str, Any] = {"task": task, "method": method, "reference_id": ref or "", "seeds": len(group)}
        for g in gaps:
            mean, std = float(group[g].mean()), float(group[g].std(ddof=1)) if len(group) > 1 else math.nan
            cells.append(Cell(num(mean, 3) + (f" ± {num(std, 3)}" if not math.isnan(std) else "")))
            row[f"{g}_mean"], row[f"{g}_std"] = mean, std
        pvalue = float(paper.loc[ref, "gap_mean"]) if ref is not None and ref in paper.index else math.nan
        delta = row[f"{primary}_mean"] - pvalue
        cells += [Cell(str(len(group))), Cell(num(pvalue, 2)), Cell(num(delta, 2, signed=True))]
        row.update({"paper_gap": pvalue, "delta": delta})
        table.add(*cells)
        rows.append(row)
    table.data = pd.DataFrame(rows)
    table.notes = [
        ("gap = NLL_top1 - NLL_gmm on the dataset's actions (GEM Eq. 72-75): NLL_top1 uses only the most-weighted component "
        "k*(s) without its weight. behavior_gap is the fitted behaviour GMM's (GEM Table 9); actor_gap is the actor GMM's."),
        (f"Mean ± sample std over seeds; paper gap and Δ (= ours - paper) compare {primary.split('/')[-1]} with GEM Table 9 "
        "(empty for tasks it does not report, e.g. toy tasks)."),
    ]
    return table


# ------------------------------------------------------------------------ entry point


def run_profile(out: Path, methods: Sequence[str] | None = None, devices: Sequence[str] | None = None,
                cfg: ProfileConfig | None = None, root: Path | None = None, nll_gap: bool = True,
                log: Callable[[str], None] = print) -> list[Path]:
    cfg = cfg or ProfileConfig()
    methods = list(methods) if methods else base_method_names()
    if devices is None:
        devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    for device in devices:
        if device.startswith("cuda") and not torch.cuda.is_available():
            from algorithms.config import ConfigError

            raise ConfigError("--devices cuda was asked for but no CUDA device is available")
    previous_threads = torch.get_num_threads()
    torch.set_num_threads(cfg.threads)
    rows: list[dict[str, Any]] = []
    failures = []
    try:
        for device in devices:
            for name in methods:
                try:
                    rows += profile_method(name, torch.device(device), cfg, log)
                except Exception as err:  # noqa: BLE001 -- one broken method must not hide the others' numbers
                    failures.append(f"{name} on {device}: {type(err).__name__}: {err}")
                    log(f"profile: {name} on {device} FAILED: {type(err).__name__}: {err}")
    finally:
        torch.set_num_threads(previous_threads)
    out.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    frame = pd.DataFrame(rows)
    if not frame.empty:
        frame.to_csv(out / "latency.csv", index=False)
        written.append(out / "latency.csv")
        for device in frame["device"].unique():
            table = profile_table(frame, device)
            if failures:
                table.notes.append("Failed: " + "; ".join(failures))
            written += table.write(out)
            log("\n" + table.markdown())
    if nll_gap and root is not None:
        per_run = nll_gap_frame(root, log)
        if per_run.empty:
            log(f"profile: NLL-gap table skipped: no stored run under {root}/ reports an NLL gap (GEM runs with checkpoints do)")
        else:
            per_run.to_csv(out / "nll_gap_runs.csv", index=False)
            table = nll_gap_table(per_run)
            written += [out / "nll_gap_runs.csv"] + table.write(out)
            log("\n" + table.markdown())
    return written


def main_from_args(args: argparse.Namespace) -> int:
    from algorithms.config import ConfigError
    from analysis.records import default_root

    def ints(text: str, what: str) -> tuple[int, ...]:
        try:
            values = tuple(int(v) for v in text.split(",") if v.strip())
        except ValueError:
            raise ConfigError(f"{what} {text!r}: expected comma-separated integers") from None
        if not values or min(values) < 1:
            raise ConfigError(f"{what} {text!r}: values must be >= 1")
        return values

    for name in ("repeats", "threads"):
        if getattr(args, name) < 1:
            raise ConfigError(f"--{name} must be >= 1, got {getattr(args, name)}")
    if args.warmup < 0:
        raise ConfigError(f"--warmup must be >= 0, got {args.warmup}")
    root = Path(args.root) if args.root else default_root()
    if args.max_seconds <= 0:
        raise ConfigError(f"--max-seconds must be > 0, got {args.max_seconds}")
    cfg = ProfileConfig(batch_sizes=ints(args.batch_sizes, "--batch-sizes"), repeats=args.repeats, warmup=args.warmup,
                        threads=args.threads, max_seconds=args.max_seconds)
    methods = [m.strip() for m in args.methods.split(",")] if args.methods else None
    if methods:
        from algorithms.registry import get_method

        for m in methods:
            get_method(m)
    devices = [d.strip() for d in args.devices.split(",")] if args.devices else None
    written = run_profile(Path(args.out) if args.out else root / "profile", methods, devices, cfg, root, not args.no_nll_gap)
    print(f"profile: {len(written)} files -> {Path(args.out) if args.out else root / 'profile'}/")
    return 0


def main(argv: list[str] | None = None) -> int:
    from analysis.cli import profile_arguments

    parser = argparse.ArgumentParser(prog="python -m analysis.profile", description=__doc__.split("\n\n")[0])
    profile_arguments(parser)
    args = parser.parse_args(argv)
    from algorithms.config import ConfigError
    from algorithms.registry import UnknownMethodError

    try:
        return main_from_args(args)
    except (ConfigError, UnknownMethodError) as err:
        print(f"profile: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
