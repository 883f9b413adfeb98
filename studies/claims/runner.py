"""Run claims: train every run the chosen claims declare (each (run, seed) once, in worker
processes of one thread each), then measure every (claim, seed) and store one record per pair.

Layout under the results root:

    claims/runs/<run_id>/...                                  the claims' training runs (the core's layout)
    claims/measurements/<claim>__<scale>__seed<s>.json        one measurement record, `kind: "claim"`

A measurement record carries the claim's metadata, the seed's number and the numbers behind it,
the run ids it read and the command that reproduces it, so studies/claims/render.py renders the report
from these records alone. Runs already in the store are not trained again (the core resumes or
skips them by run id); measurements are always taken again.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path
from typing import Any

from modebench.benchmarks.run.workers import stop_workers, worker_pool
from modebench.benchmarks.store import SCHEMA_VERSION, atomic_write_json, git_revision
from modebench.studies.claims.catalog import claim_names, select_claims
from modebench.studies.claims.spec import (
    FULL,
    QUICK,
    Claim,
    Scale,
    Trial,
    resolve_spec,
)

CLAIMS_DIR = "claims"
MEASUREMENTS_DIR = "measurements"
RECORD_KIND = "claim"
SCALES = {scale.name: scale for scale in (FULL, QUICK)}


def claims_store(root: str | Path) -> Path:
    return Path(root) / CLAIMS_DIR


def measurement_path(root: str | Path, claim_id: str, scale: Scale, seed: int) -> Path:
    return claims_store(root) / MEASUREMENTS_DIR / f"{claim_id}__{scale.name}__seed{seed}.json"


def reproduce_command(claim_id: str, seeds: int, scale: Scale) -> str:
    return f"modebench claims --claims {claim_id} --num-seeds {seeds}" + (" --quick" if scale is QUICK else "")


def _train(spec, store: Path) -> tuple[str, str | None]:
    """(run id, None) once trained, or (run id, why) when the divergence guard stopped it."""
    from modebench.benchmarks.run.train import train

    try:
        train(spec, out=store)
    except FloatingPointError as err:
        return spec.run_id, str(err)
    return spec.run_id, None


def _measure(claim: Claim, seed: int, seeds: int, root: Path, scale: Scale, device: str,
             diverged: dict[str, str]) -> dict[str, Any]:
    trial = Trial(claim, seed, claims_store(root), scale, device, diverged)
    measurement = claim.measure(trial)
    specs = {name: trial.spec(name) for name in claim.runs}
    record = {
        "kind": RECORD_KIND,
        "schema_version": SCHEMA_VERSION,
        **claim.metadata(),
        "order": claim_names().index(claim.id) if claim.id in claim_names() else len(claim_names()),
        "seed": seed,
        "scale": scale.name,
        "value": float(measurement.value),
        "details": {k: float(v) for k, v in measurement.details.items()},
        "runs": {name: {"run_id": s.run_id, "method": s.method, "task": s.task.id, "steps": s.steps} for name, s in specs.items()},
        "command": reproduce_command(claim.id, seeds, scale),
        "git_revision": git_revision(),
        "timestamp": time.time(),
    }
    atomic_write_json(measurement_path(root, claim.id, scale, seed), record)
    return record


def _measure_by_id(claim_id: str, *args) -> dict[str, Any]:
    """The worker's entry: claims travel by id (their measurements are closures)."""
    (claim,) = select_claims(claim_id)
    return _measure(claim, *args)


def _map(fn: Callable, calls: Iterable[tuple], jobs: int, pool: ProcessPoolExecutor | None, label: Callable[[Any], str]) -> list:
    """fn(*call) for every call, in the pool when there is one; results in completion order."""
    results = []
    calls = list(calls)
    if pool is None:
        for call in calls:
            start = time.perf_counter()
            results.append(fn(*call))
            print(f"  {label(results[-1])} ({time.perf_counter() - start:.0f} s)", flush=True)
        return results
    futures = [pool.submit(fn, *call) for call in calls]
    for future in as_completed(futures):
        results.append(future.result())
        print(f"  {label(results[-1])}", flush=True)
    return results


def run_claims(
    claims: list[Claim],
    seeds: int,
    root: str | Path,
    scale: Scale = FULL,
    jobs: int = 1,
    device: str = "cpu",
) -> list[dict[str, Any]]:
    """Train, measure and store the claims over seeds 0..seeds-1; returns the measurement records.
    jobs > 1 uses that many worker processes of one thread each (claims from the catalogue only)."""
    root = Path(root)
    start = time.perf_counter()
    specs = {}
    for claim in claims:
        for seed in range(seeds):
            for run in claim.runs.values():
                spec = resolve_spec(run, seed, scale, device)
                specs.setdefault(spec.run_id, spec)
    order = sorted(specs.values(), key=lambda s: -s.steps)  # long runs first: the workers finish together
    pool = None
    if jobs > 1:
        pool = worker_pool(jobs, threads=1)  # workers die with this process, SIGKILL included
    try:
        print(f"claims: {len(claims)} claims x {seeds} seeds ({scale.name}): {len(order)} training runs, {jobs} worker(s)", flush=True)
        trained = _map(_train, [(spec, claims_store(root)) for spec in order], jobs, pool,
                       lambda r: f"trained {r[0]}" + (f" -- diverged: {r[1]}" if r[1] else ""))
        diverged = {run_id: why for run_id, why in trained if why}
        print(f"claims: measuring ({time.perf_counter() - start:.0f} s so far)", flush=True)
        measure = _measure if pool is None else _measure_by_id
        calls = [(claim if pool is None else claim.id, seed, seeds, root, scale, device, diverged)
                 for claim in claims for seed in range(seeds)]
        records = _map(measure, calls, jobs, pool, lambda r: f"measured {r['claim']} seed {r['seed']}: {r['value']:.4g}")
    except BaseException:
        if pool is not None:  # stored runs and records stay; stop the workers so none outlives the command
            stop_workers(pool)
        raise
    if pool is not None:
        pool.shutdown()
    print(f"claims: done in {time.perf_counter() - start:.0f} s", flush=True)
    return records


def measurements_dir(root: str | Path) -> Path:
    return claims_store(root) / MEASUREMENTS_DIR


def run_from_args(args) -> tuple[Path, Scale]:
    """Run what `modebench claims` asked for; (results root, scale) for the renderer."""
    from modebench.algorithms.config import ConfigError
    from modebench.benchmarks.store import DEFAULT_ROOT

    if args.seeds is not None and args.seeds != list(range(len(args.seeds))):
        raise ConfigError(f"claims are measured on seeds 0..N-1: give --num-seeds N, not --seeds {','.join(map(str, args.seeds))}")
    root = Path(args.results) if args.results else DEFAULT_ROOT
    scale = QUICK if args.quick else FULL
    claims = select_claims(args.claims)
    if not args.render_only:
        run_claims(claims, len(args.seeds) if args.seeds else args.num_seeds or 3, root, scale, args.jobs, args.device)
    return root, scale
