"""Ours next to the authors' own code: one-update parity, 100-update drift, throughput side by side.

    python -m parity --fql-repo ../refs/fql --drol-repo ../refs/DROL [--jax-python .venv-jax/bin/python]
                     [--updates 100] [--compile] [--device cpu|cuda] [--out results/parity]

For each method whose repository is given: the reference agent is built by its own code
(`get_config()` with one task's published values) in the reference interpreter (`make jax-venv`),
its initial weights are copied into ours, both take the same batches and the same random draws,
and every loss term, gradient, one-step parameter and the actions of `act` are compared
(parity/harness.py says how; the tolerance is 1e-5 relative). Then the same for `--updates`
updates: the drift. Then training throughput, ours and theirs in alternating blocks (perf/speed.py's
`measure` and block protocol), same shapes, one thread each. One line per method; exit 0 when all hold.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

from parity.harness import (
    LOSS_TOLERANCE,
    MethodSpec,
    ParityResult,
    check,
    reference_env,
)
from parity.methods import METHODS


class UsageError(ValueError):
    """A bad command line: one line naming the problem and the fix (exit 2)."""


def repository_commit(repo: Path) -> str:
    """The checkout's commit (git rev-parse HEAD)."""
    proc = subprocess.run(["git", "-C", str(repo), "rev-parse", "HEAD"], check=False, capture_output=True, text=True)
    if proc.returncode != 0:
        raise UsageError(f"{repo} is not a git checkout (git rev-parse HEAD failed): pass a clone of the authors' repository")
    return proc.stdout.strip()


def reference_server(python: str, repo: Path, spec: MethodSpec, dataset, threads: int):
    """The authors' jitted agent in its own interpreter, one timed block on request (perf/speed.py's
    D3rlpyIQL protocol: "N" in, "MODEBENCH <updates/s>" out)."""
    from perf.speed import D3rlpyIQL

    class ReferenceServer(D3rlpyIQL):
        def __init__(self):
            self._tmp = tempfile.TemporaryDirectory()
            path = Path(self._tmp.name) / "data.npz"
            np.savez(path, observations=dataset.observations, actions=dataset.actions, rewards=dataset.rewards,
                     terminals=dataset.terminals.astype(np.float32), next_observations=dataset.next_observations)
            self._stderr = open(Path(self._tmp.name) / "stderr.txt", "w+")  # noqa: SIM115 - closed in close()
            script = Path(__file__).with_name(spec.reference_script)
            interpreter = sys.executable if spec.torch_reference else python
            config = json.dumps({**(spec.drift or spec).reference_config, **spec.throughput_config})  # no check-only controls
            self.process = subprocess.Popen(
                [interpreter, str(script), "serve", str(repo), spec.reference_module, spec.reference_class, str(path), config],
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self._stderr, text=True, env=reference_env(threads))
            self._answer()

    return ReferenceServer()


def throughput(spec: MethodSpec, python: str, repo: Path, updates: int, repeats: int, device: str,
               compiled: bool) -> dict[str, float]:
    """Median over paired blocks of ours / theirs updates/s: eager, and compiled when asked."""
    import torch

    from perf.speed import measure, synthetic_dataset

    torch.set_num_threads(1)
    dataset = synthetic_dataset()
    server = reference_server(python, repo, spec, dataset, threads=1)
    ratios: dict[str, float] = {}
    try:
        for variant in (["eager", "compiled"] if compiled else ["eager"]):
            ours, theirs = measure(spec.name, dataset, updates, repeats, torch.device(device), variant == "compiled",
                                   lambda: {"theirs": server.block(updates)})
            ratios[variant] = statistics.median(a / b for a, b in zip(ours, theirs["theirs"]))
            ratios[f"{variant} ours"] = statistics.median(ours)
            ratios[f"{variant} theirs"] = statistics.median(theirs["theirs"])
    finally:
        server.close()
    return ratios


def verdict_line(method: str, spec: MethodSpec, commit: str, result: ParityResult, ratios: dict[str, float] | None) -> str:
    _, worst = result.comparison.worst()
    line = (f"parity {method.upper()} vs {spec.owner_repo}@{commit[:7]}: max relative difference {worst:.1e} "
            f"over {len(result.comparison.rows)} tensors (tolerance {LOSS_TOLERANCE:.0e}): "
            f"{'holds' if result.holds() else 'fails'}")
    if ratios is not None:
        line += f"; throughput ours/theirs {ratios['eager']:.2f}"
        if "compiled" in ratios:
            line += f" (compiled {ratios['compiled']:.2f})"
    return line


def details(result: ParityResult, drift: ParityResult | None, widths: str, controlled: bool = False) -> list[str]:
    """The figures docs/parity.md tabulates."""
    out = []
    for prefix in ("loss", "grad", "param", "act"):
        name, worst = result.comparison.worst(prefix)
        out.append(f"  {prefix:5s} {result.comparison.count(prefix):3d} tensors, worst {worst:.1e} ({name})")
    out.append(f"  one-step parameter entries left out as ill-conditioned (harness.well_conditioned): "
               f"{result.comparison.ill_conditioned}")
    for name, value in sorted(result.listed.rows.items(), key=lambda kv: -kv[1])[:1]:
        out.append(f"  listed difference, worst: {value:.1e} ({name})")
    if drift is not None:
        name, worst = drift.comparison.worst()
        what = "without the check's controls (the listed differences' size)" if controlled else f"hidden widths {widths}"
        out.append(f"  {what}: one update worst {worst:.1e} ({name})")
        name, worst = drift.drift.worst()
        out.append(f"  drift after {drift.updates} updates (widths {widths}): parameters {worst:.1e} ({name}); "
                   "loss terms, max over updates: " + ", ".join(f"{k} {v:.1e}" for k, v in sorted(drift.loss_drift.items())))
    return out


# What the one-update check controls so a listed difference does not mask the rest; --without X
# measures X's own size (docs/parity.md lists each).
CONTROLS = {
    "flax-gelu": lambda spec: dataclasses.replace(spec, patches=None),  # ours' exact erf GELU
    "adam-eps": lambda spec: dataclasses.replace(spec, adjust=None) if spec.name != "lom-code" else spec,  # eps x num_q
    "lom-controls": lambda spec: spec.drift or spec,  # LOM: Q / hyper-Q learning rates and the log-std head's start
}


def main(argv: list[str] | None = None) -> int:
    from modebench.benchmarks.run.workers import keep_freed_memory

    keep_freed_memory()
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    for name in METHODS:
        parser.add_argument(f"--{name}-repo", type=Path, default=None, help=f"a checkout of {METHODS[name].owner_repo}")
    parser.add_argument("--jax-python", default=".venv-jax/bin/python", help="the reference interpreter (make jax-venv)")
    parser.add_argument("--updates", type=int, default=100, help="updates of the drift run (0: none)")
    parser.add_argument("--drift-widths", default="64,64,64,64",
                        help="hidden widths of the drift run's MLPs, both sides (the reference runs unjitted: full width is minutes)")
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--throughput-updates", type=int, default=30, help="updates per timed block (0: no throughput)")
    parser.add_argument("--repeats", type=int, default=5, help="timed blocks per side")
    parser.add_argument("--compile", action="store_true", help="also time ours with its loss pass compiled")
    parser.add_argument("--device", default="cpu", help="our device for the throughput blocks (the JAX reference is jax[cpu])")
    parser.add_argument("--verbose", action="store_true", help="per-kind worst tensors and the drift")
    parser.add_argument("--without", choices=sorted(CONTROLS), default=None,
                        help="measure one listed difference: the one-update check without that control (no drift, no throughput)")
    args = parser.parse_args(argv)
    try:
        return run(args)
    except UsageError as err:
        print(f"parity: {err}", file=sys.stderr)
        return 2


def run(args) -> int:
    import torch

    if args.device.startswith("cuda") and not torch.cuda.is_available():
        raise UsageError("--device cuda but torch sees no CUDA device: run on a machine with a GPU or pass --device cpu")
    chosen = {name: getattr(args, f"{name}_repo") for name in METHODS if getattr(args, f"{name}_repo") is not None}
    if not chosen:
        raise UsageError("no reference checkout given: pass " + " ".join(f"--{n}-repo DIR" for n in METHODS))
    if not Path(args.jax_python).exists() and any(not METHODS[n].torch_reference for n in chosen):
        raise UsageError(f"reference interpreter {args.jax_python} not found: run `make jax-venv`")
    torch.set_num_threads(1)
    all_hold = True
    for name, repo in chosen.items():
        spec = METHODS[name]
        if not (repo / spec.reference_module.replace(".", "/")).with_suffix(".py").exists():
            raise UsageError(f"{repo} has no {spec.reference_module.replace('.', '/')}.py: pass a checkout of {spec.owner_repo}")
        commit = repository_commit(repo)
        if args.without is not None:
            result = check(CONTROLS[args.without](spec), args.jax_python, str(repo.resolve()), updates=1 + max(spec.compare_steps),
                           batch=args.batch)
            print(verdict_line(name, spec, commit, result, None) + f" (without {args.without})", flush=True)
            print("\n".join(details(result, None, "")))
            all_hold &= result.holds()
            continue
        result = check(spec, args.jax_python, str(repo.resolve()), updates=1 + max(spec.compare_steps), batch=args.batch)
        widths = tuple(int(w) for w in args.drift_widths.split(","))
        drift = (check((spec.drift or spec).narrowed(widths), args.jax_python, str(repo.resolve()), updates=args.updates, batch=args.batch)
                 if args.updates > 0 else None)
        ratios = None
        if args.throughput_updates > 0:
            ratios = throughput(spec, args.jax_python, repo.resolve(), args.throughput_updates, args.repeats,
                                args.device, args.compile)
        print(verdict_line(name, spec, commit, result, ratios), flush=True)
        if args.verbose:
            drift_spec = spec.drift or spec
            shown = "x".join(map(str, widths)) if drift_spec.narrowed(widths) is not drift_spec else "the code's own"
            print("\n".join(details(result, drift, shown, controlled=spec.drift is not None)))
            if ratios is not None:
                print("  updates/s " + ", ".join(f"{k} {v:.1f}" for k, v in ratios.items() if " " in k))
        # the drift run's own first update holds too, unless it is the uncontrolled one (LOM)
        all_hold &= result.holds() and (drift is None or spec.drift is not None or drift.holds())
    return 0 if all_hold else 1


if __name__ == "__main__":
    sys.exit(main())
