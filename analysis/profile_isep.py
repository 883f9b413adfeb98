"""Latency of ISEP-FM decisions versus the Euler step count T (the iterative-inference cost
that GEM's Table 3 contrasts with candidate scoring).

One decision = `ISEPFM.act` on a batch of states: T Euler steps, each ONE forward of the
velocity net over both guidance branches (2B rows; w = 0 or 1 needs one branch, B rows), then
the clip and the advantage audit. Nets have the config's default (paper) sizes: Mish velocity
MLP 4 x 512, critics 2 x 256. Timing: `warmup` untimed calls, then the median (and quartiles)
of `repeats` timed calls; on CUDA each call is synchronised and peak memory is reported.

    python -m analysis.profile_isep                      # CPU, or CUDA when present
    python -m analysis.profile_isep --device cpu --batch 1 --threads 1
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from algorithms.base import EnvSpec
from algorithms.isep import ISEPFM, ISEPFMConfig, ISEPFMKnobs

STEPS = (10, 20, 50, 100)


def time_decisions(algo: ISEPFM, obs: torch.Tensor, knobs: ISEPFMKnobs, warmup: int, repeats: int) -> list[float]:
    t = torch.zeros(obs.shape[0], device=obs.device)
    cuda = obs.device.type == "cuda"
    for _ in range(warmup):
        algo.act(obs, t, knobs)
    if cuda:
        torch.cuda.synchronize()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        algo.act(obs, t, knobs)
        if cuda:
            torch.cuda.synchronize()
        times.append((time.perf_counter() - start) * 1e3)
    return times


def profile(device: str, batch: int, obs_dim: int, act_dim: int, guidance: list[float], steps: tuple[int, ...],
            warmup: int, repeats: int, seed: int = 0) -> list[dict]:
    torch.manual_seed(seed)
    dev = torch.device(device)
    algo = ISEPFM(ISEPFMConfig(), EnvSpec(obs_dim, act_dim), dev).eval()
    obs = torch.randn(batch, obs_dim, device=dev)
    params = sum(p.numel() for p in algo.flow.parameters()) / 1e6
    rows = []
    for w in guidance:
        for T in steps:
            if dev.type == "cuda":
                torch.cuda.reset_peak_memory_stats(dev)
            times = time_decisions(algo, obs, ISEPFMKnobs(w=w, T=T), warmup, repeats)
            q = statistics.quantiles(times, n=4)
            rows.append({
                "T": T, "w": w, "branches": 1 if w in (0.0, 1.0) else 2, "median_ms": statistics.median(times),
                "p25_ms": q[0], "p75_ms": q[2], "per_state_us": 1e3 * statistics.median(times) / batch,
                "peak_alloc_mb": torch.cuda.max_memory_allocated(dev) / 2**20 if dev.type == "cuda" else float("nan"),
                "flow_params_m": params,
            })
    return rows


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--batch", type=int, default=256, help="states per decision call")
    p.add_argument("--obs-dim", type=int, default=17, help="default: halfcheetah")
    p.add_argument("--act-dim", type=int, default=6, help="default: halfcheetah")
    p.add_argument("--w", type=float, nargs="+", default=[2.0, 1.0], help="guidance weights (2: both branches, 1: one)")
    p.add_argument("--steps", type=int, nargs="+", default=list(STEPS))
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument("--repeats", type=int, default=30)
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    rows = profile(args.device, args.batch, args.obs_dim, args.act_dim, args.w, tuple(args.steps), args.warmup, args.repeats)
    print(f"ISEP-FM decision latency: device={args.device} batch={args.batch} obs_dim={args.obs_dim} act_dim={args.act_dim} "
          f"threads={torch.get_num_threads()} warmup={args.warmup} repeats={args.repeats} "
          f"flow params={rows[0]['flow_params_m']:.2f}M (Mish 4x512)")
    print(f"{'w':>5} {'T':>5} {'branches':>8} {'median ms':>10} {'p25':>9} {'p75':>9} {'us/state':>9} {'peak MB':>8}")
    for r in rows:
        print(f"{r['w']:>5.1f} {r['T']:>5d} {r['branches']:>8d} {r['median_ms']:>10.2f} {r['p25_ms']:>9.2f} "
              f"{r['p75_ms']:>9.2f} {r['per_state_us']:>9.1f} {r['peak_alloc_mb']:>8.1f}")


if __name__ == "__main__":
    main()
