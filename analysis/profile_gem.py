"""GEM deployment compute profile: decision latency and peak memory vs the candidate budget N.

The shape of the paper's Table 3 (App. A.7; results/reference/gem_table3_profile.csv): for each
N in {1, 64, 1024, 2048}, one `act` call on a batch of states (anchor + N candidates, LCB over
the critic ensemble, candidate-set z-scored behaviour support, top-k), timed after warm-up
(median, mean and std over repeats) with its peak memory:

- CUDA: torch.cuda.max_memory_allocated / max_memory_reserved after reset_peak_memory_stats
  (the paper's columns: absolute, so they include the resident weights);
- CPU: the rise of the process's peak resident set (VmHWM, reset through /proc/self/clear_refs
  before each setting) over the resident set before the call, i.e. the call's working memory.
  (tracemalloc cannot see torch's allocations, which bypass Python's allocator.)

Self-contained: GEM with random weights at the paper's sizes (obs 17, act 6, 2 x 256 MLPs by
default). GEM's cost does not depend on the diffusion-step settings T of Table 3, so those rows
are left out.

    python -m analysis.profile_gem                      # CPU, batch 1
    python -m analysis.profile_gem --batch 10 --device cuda --csv results/gem_profile.csv
"""

from __future__ import annotations

import argparse
import csv
import statistics
import sys
import time
from pathlib import Path

import torch

from algorithms.base import EnvSpec
from algorithms.gem import GEM, GEMConfig, GEMKnobs

COLUMNS = [
    "method", "setting", "device", "batch", "latency_ms_median", "latency_ms_mean", "latency_ms_std",
    "peak_alloc_mb", "peak_reserved_mb", "params_m",
]


def _status_kb(field: str) -> int | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except OSError:
        pass
    return None


def _reset_peak_rss() -> bool:
    try:
        Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM (Linux >= 4.0)
        return True
    except OSError:
        return False


def deployment_params(gem: GEM) -> int:
    """Parameters used at decision time: actor, behaviour GMM and the Q ensemble (not V, not targets)."""
    modules = (gem.actor, gem.behavior, gem.critic.q)
    return sum(p.numel() for m in modules for p in m.parameters())


def profile(
    budgets: list[int],
    batch: int = 1,
    device: str = "cpu",
    repeats: int = 50,
    warmup: int = 5,
    obs_dim: int = 17,
    act_dim: int = 6,
    hidden: tuple[int, ...] = (256, 256),
    config: dict | None = None,
    seed: int = 0,
) -> list[dict]:
    dev = torch.device(device)
    torch.manual_seed(seed)
    gem = GEM(GEMConfig(hidden_dims=hidden, **(config or {})), EnvSpec(obs_dim, act_dim, horizon=1000), dev)
    gem.eval()
    obs = torch.randn(batch, obs_dim, device=dev)
    t = torch.zeros(batch, dtype=torch.long, device=dev)
    params_m = deployment_params(gem) / 1e6
    rows = []
    for n in budgets:
        knobs = GEMKnobs(N=n)
        for _ in range(warmup):
            gem.act(obs, t, knobs)
        if dev.type == "cuda":
            torch.cuda.synchronize(dev)
            torch.cuda.reset_peak_memory_stats(dev)
        else:
            rss_before = _status_kb("VmRSS")
            can_reset = _reset_peak_rss()
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            gem.act(obs, t, knobs)
            if dev.type == "cuda":
                torch.cuda.synchronize(dev)
            times.append((time.perf_counter() - start) * 1e3)
        if dev.type == "cuda":
            alloc = torch.cuda.max_memory_allocated(dev) / 2**20
            reserved = torch.cuda.max_memory_reserved(dev) / 2**20
        else:
            peak = _status_kb("VmHWM")
            alloc = (peak - rss_before) / 1024 if (can_reset and peak is not None and rss_before is not None) else float("nan")
            reserved = float("nan")
        rows.append({
            "method": "GEM", "setting": f"N{n}", "device": dev.type, "batch": batch,
            "latency_ms_median": statistics.median(times), "latency_ms_mean": statistics.fmean(times),
            "latency_ms_std": statistics.pstdev(times), "peak_alloc_mb": alloc, "peak_reserved_mb": reserved,
            "params_m": params_m,
        })
    return rows


def format_table(rows: list[dict]) -> str:
    header = f"{'Method':<6} {'Setting':<8} {'Device':<6} {'Batch':>5} {'Latency ms (median)':>20} {'mean +- std':>16} " \
             f"{'Peak alloc MB':>14} {'Peak reserved MB':>17} {'Params (M)':>11}"
    lines = [header, "-" * len(header)]
    for r in rows:
        lines.append(
            f"{r['method']:<6} {r['setting']:<8} {r['device']:<6} {r['batch']:>5} {r['latency_ms_median']:>20.3f} "
            f"{r['latency_ms_mean']:>8.3f} +- {r['latency_ms_std']:<5.3f} {r['peak_alloc_mb']:>14.2f} "
            f"{r['peak_reserved_mb']:>17.2f} {r['params_m']:>11.3f}"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", default="1,64,1024,2048", help="candidate budgets, comma-separated")
    parser.add_argument("--batch", type=int, default=1, help="states per decision call (parallel environments)")
    parser.add_argument("--device", default="cpu", help="cpu or cuda (cuda also reports allocator peaks)")
    parser.add_argument("--repeats", type=int, default=50)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--obs-dim", type=int, default=17)
    parser.add_argument("--act-dim", type=int, default=6)
    parser.add_argument("--hidden", default="256,256", help="MLP widths of every network")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    parser.add_argument("--csv", default=None, help="also write the rows to this CSV file")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        print("CUDA requested but not available", file=sys.stderr)
        return 2
    rows = profile(
        [int(x) for x in args.n.split(",")], args.batch, args.device, args.repeats, args.warmup,
        args.obs_dim, args.act_dim, tuple(int(h) for h in args.hidden.split(",")),
    )
    memory = ("CUDA max_memory_allocated / max_memory_reserved (absolute)" if args.device.startswith("cuda")
              else "CPU: rise of peak RSS over the resident process during the calls")
    print(f"GEM decision profile: obs {args.obs_dim}, act {args.act_dim}, hidden {args.hidden}, "
          f"batch {args.batch}, {args.repeats} repeats after {args.warmup} warm-up, "
          f"torch threads {torch.get_num_threads()}; memory = {memory}")
    print(format_table(rows))
    if args.csv:
        Path(args.csv).parent.mkdir(parents=True, exist_ok=True)
        with open(args.csv, "w", newline="") as fh:
            writer = csv.DictWriter(fh, fieldnames=COLUMNS)
            writer.writeheader()
            writer.writerows(rows)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
