"""Training throughput: updates/s of every registered method, and d3rlpy's IQL on the same data.

    python -m perf.speed [--d3rlpy-python .venv-d3rlpy/bin/python] [--repeats 5] [--compile]

All methods train at their paper defaults (network sizes, batch size) on the same synthetic
hopper-shaped dataset (17-dim observations, 6-dim actions, 100k transitions). Each figure is
the median over `--repeats` timed blocks of `--updates` updates after a warm-up, sampling
included. d3rlpy 2.8.1 pins gymnasium 1.0.0, so it runs in its own virtual environment
(`make d3rlpy-venv`) on the same arrays (saved to an .npz), in the same invocation, with the
same thread count; its timed blocks alternate with our IQL's (never overlapping), and the
script prints the median of the paired ratios, which a slow spell of a shared machine moves far
less than a ratio of two separately timed medians. A plain PyTorch IQL (`PlainIQL`, written the
way CORL's is) takes a third block in each pair, so the run also shows what the machine does
with straightforward PyTorch code. `--compile` also
measures every method with its loss pass under torch.compile (`modebench train --compile`); the
compilation itself (the first updates) is outside the timed blocks.
"""

from __future__ import annotations

import argparse
import copy
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from modebench.benchmarks.run.workers import keep_freed_memory

OBS_DIM, ACT_DIM, SIZE = 17, 6, 100_000

D3RLPY_SCRIPT = r"""
import sys, time
import numpy as np, torch, d3rlpy
torch.set_num_threads(int(sys.argv[2]))
data = np.load(sys.argv[1])
dataset = d3rlpy.dataset.MDPDataset(data["observations"], data["actions"], data["rewards"], data["terminals"], timeouts=data["timeouts"])
iql = d3rlpy.algos.IQLConfig(batch_size=256, actor_learning_rate=3e-4, critic_learning_rate=3e-4,
                             expectile=0.7, weight_temp=3.0, max_weight=100.0).create(device="cpu")
iql.build_with_dataset(dataset)
for _ in range(20):
    iql.update(dataset.sample_transition_batch(256))
print("MODEBENCH ready", flush=True)
for line in sys.stdin:  # "N": time one block of N updates, answer its rate
    updates = int(line)
    start = time.perf_counter()
    for _ in range(updates):
        iql.update(dataset.sample_transition_batch(256))
    print("MODEBENCH", updates / (time.perf_counter() - start), flush=True)
"""


def synthetic_dataset(seed: int = 0):
    from modebench.benchmarks.data.dataset import TransitionDataset

    rng = np.random.default_rng(seed)
    episode_len = 1000
    obs = rng.normal(size=(SIZE + SIZE // episode_len, OBS_DIM)).astype(np.float32)
    episodes = []
    for i in range(SIZE // episode_len):
        chunk = obs[i * (episode_len + 1) : (i + 1) * (episode_len + 1)]
        episodes.append(dict(
            observations=chunk, actions=rng.uniform(-1, 1, (episode_len, ACT_DIM)).astype(np.float32),
            rewards=rng.normal(size=episode_len).astype(np.float32),
            terminations=np.zeros(episode_len, bool), truncations=np.eye(episode_len)[-1].astype(bool),
        ))
    return TransitionDataset.from_episodes(episodes, "synthetic-hopper-shaped").validate()


def measure(
    method: str, dataset, updates: int, repeats: int, device: torch.device, compiled: bool = False,
    after_block: Callable[[], dict[str, float]] | None = None,
) -> tuple[list[float], dict[str, list[float]]]:
    """(our updates/s per timed block, {reference: its figure in the block after each of ours})."""
    from modebench.algorithms.base import EnvSpec
    from modebench.algorithms.registry import get_method
    from modebench.benchmarks.data.dataset import DataConfig, Normalizer
    from modebench.benchmarks.data.replay import DeviceReplay

    entry = get_method(method)
    cls = entry.load()
    config = cls.config_class(**entry.config) if entry.config else cls.config_class()
    replay = DeviceReplay(dataset, DataConfig(), Normalizer.fit(dataset.observations), device, seed=0)
    algorithm = cls(config, EnvSpec(OBS_DIM, ACT_DIM, 1000, 1_000_000), device)
    if compiled:
        algorithm.compile_losses()
    for step in range(max(20, updates // 10)):  # warm-up, and past any pretraining switch at step 0
        algorithm.update(replay.sample(config.batch_size), step)
    rates: list[float] = []
    others: dict[str, list[float]] = {}
    step = 10_000_000  # well past every method's pretraining phase
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        for _ in range(updates):
            metrics = algorithm.update(replay.sample(config.batch_size), step)
            step += 1
        float(next(iter(metrics.values())))  # wait for queued work before stopping the clock
        rates.append(updates / (time.perf_counter() - start))
        if after_block is not None:
            for name, rate in after_block().items():
                others.setdefault(name, []).append(rate)
    return rates, others


class PlainIQL:
    """IQL as a plain PyTorch script writes it (CORL's layout): twin Q MLPs and V and a Gaussian
    actor as nn.Sequential, three fused Adams and three backward passes per update (V, then Q,
    then the actor), Polyak by one fused lerp, minibatches by indexing the arrays: what
    straightforward PyTorch does on the machine, at the same sizes and batch. Timing only (its
    scores are never used; no actor LR schedule)."""

    def __init__(self, dataset, device: torch.device, seed: int = 0, hidden: int = 256, batch_size: int = 256,
                 expectile: float = 0.7, beta: float = 3.0, discount: float = 0.99, tau: float = 0.005):
        from torch import nn

        generator = torch.Generator().manual_seed(seed)
        obs_dim, act_dim = dataset.observations.shape[1], dataset.actions.shape[1]

        def mlp(inputs: int, outputs: int) -> nn.Module:
            return nn.Sequential(nn.Linear(inputs, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU(),
                                 nn.Linear(hidden, outputs)).to(device)

        self.q1, self.q2, self.v, self.actor = mlp(obs_dim + act_dim, 1), mlp(obs_dim + act_dim, 1), mlp(obs_dim, 1), mlp(obs_dim, act_dim)
        self.log_std = nn.Parameter(torch.zeros(act_dim, device=device))
        self.target_q1, self.target_q2 = copy.deepcopy(self.q1).requires_grad_(False), copy.deepcopy(self.q2).requires_grad_(False)
        self.q_params = [*self.q1.parameters(), *self.q2.parameters()]
        self.q_targets = [*self.target_q1.parameters(), *self.target_q2.parameters()]
        fused = device.type in ("cpu", "cuda")
        self.q_opt = torch.optim.Adam(self.q_params, 3e-4, fused=fused)
        self.v_opt = torch.optim.Adam(self.v.parameters(), 3e-4, fused=fused)
        self.actor_opt = torch.optim.Adam([*self.actor.parameters(), self.log_std], 3e-4, fused=fused)
        self.data = [torch.as_tensor(np.asarray(x, np.float32), device=device) for x in (
            dataset.observations, dataset.actions, dataset.rewards, dataset.next_observations, dataset.terminals)]
        self.generator, self.device, self.batch_size = generator, device, batch_size
        self.expectile, self.beta, self.discount, self.tau = expectile, beta, discount, tau

    def update(self) -> None:
        index = torch.randint(0, len(self.data[0]), (self.batch_size,), generator=self.generator).to(self.device)
        obs, actions, rewards, next_obs, terminals = (x[index] for x in self.data)
        obs_actions = torch.cat([obs, actions], 1)
        with torch.no_grad():
            target_q = torch.min(self.target_q1(obs_actions), self.target_q2(obs_actions)).squeeze(-1)
            next_v = self.v(next_obs).squeeze(-1)
        advantage = target_q - self.v(obs).squeeze(-1)
        weight = torch.abs(self.expectile - (advantage < 0).float())
        value_loss = (weight * advantage.pow(2)).mean()
        self.v_opt.zero_grad(set_to_none=True)
        value_loss.backward()
        self.v_opt.step()
        td_target = rewards + self.discount * (1.0 - terminals) * next_v
        q_loss = ((self.q1(obs_actions).squeeze(-1) - td_target).pow(2).mean()
                  + (self.q2(obs_actions).squeeze(-1) - td_target).pow(2).mean())
        self.q_opt.zero_grad(set_to_none=True)
        q_loss.backward()
        self.q_opt.step()
        with torch.no_grad():
            torch._foreach_lerp_(self.q_targets, self.q_params, self.tau)
        awr = torch.exp(self.beta * advantage.detach()).clamp(max=100.0)
        policy = torch.distributions.Normal(torch.tanh(self.actor(obs)), self.log_std.clamp(-20.0, 2.0).exp())
        actor_loss = -(awr * policy.log_prob(actions).sum(-1)).mean()
        self.actor_opt.zero_grad(set_to_none=True)
        actor_loss.backward()
        self.actor_opt.step()

    def block(self, updates: int) -> float:
        if self.device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        for _ in range(updates):
            self.update()
        if self.device.type == "cuda":
            torch.cuda.synchronize()
        return updates / (time.perf_counter() - start)


class D3rlpyIQL:
    """d3rlpy's IQL in its own interpreter, trained on the same arrays, one timed block on request.

    Its blocks alternate with ours (never overlapping), so a slow spell of a shared machine
    hits both sides of a pair: the ratio is the median of per-pair ratios."""

    def __init__(self, python: str, dataset, threads: int):
        self._tmp = tempfile.TemporaryDirectory()
        path = Path(self._tmp.name) / "data.npz"
        np.savez(path, observations=dataset.observations, actions=dataset.actions, rewards=dataset.rewards,
                 terminals=dataset.terminals.astype(np.float32), timeouts=dataset.timeouts.astype(np.float32))
        # a file, not a pipe nobody reads (a full pipe would stall it); closed in close()
        self._stderr = open(Path(self._tmp.name) / "stderr.txt", "w+")  # noqa: SIM115
        self.process = subprocess.Popen([python, "-c", D3RLPY_SCRIPT, str(path), str(threads)],
                                        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self._stderr, text=True)
        self._answer()  # "ready": built and warmed up

    def _answer(self) -> str:
        """The next line the script addressed to us (d3rlpy logs to stdout too)."""
        for line in self.process.stdout:
            if line.startswith("MODEBENCH "):
                return line.split(maxsplit=1)[1].strip()
        self.process.wait()
        self._stderr.seek(0)
        raise RuntimeError(f"d3rlpy run failed:\n{self._stderr.read()[-2000:]}")

    def block(self, updates: int) -> float:
        self.process.stdin.write(f"{updates}\n")
        self.process.stdin.flush()
        return float(self._answer())

    def close(self) -> None:
        if self.process.poll() is None:
            self.process.stdin.close()
            self.process.wait(timeout=60)
        self._stderr.close()
        self._tmp.cleanup()


def main(argv: list[str] | None = None) -> int:
    keep_freed_memory()  # as every modebench command and worker runs (benchmarks/run/workers.py)
    from modebench.algorithms.registry import METHODS

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--methods", default=None, help="comma-separated (default: every base method)")
    parser.add_argument("--updates", type=int, default=200, help="updates per timed block")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--d3rlpy-python", default=".venv-d3rlpy/bin/python")
    parser.add_argument("--compile", action="store_true",
                        help="also measure each method with its loss pass compiled (train --compile)")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    methods = args.methods.split(",") if args.methods else [n for n, e in METHODS.items() if not e.config and not e.knobs]
    dataset = synthetic_dataset()
    device = torch.device(args.device)
    print(f"training updates/s, median of {args.repeats} x {args.updates} updates, paper-default sizes, "
          f"obs {OBS_DIM} / act {ACT_DIM}, {args.threads} threads, {device}")
    d3rlpy = None
    if Path(args.d3rlpy_python).exists():
        d3rlpy = D3rlpyIQL(args.d3rlpy_python, dataset, args.threads)
    else:
        print(f"d3rlpy interpreter {args.d3rlpy_python} not found: run `make d3rlpy-venv` for the comparison", file=sys.stderr)
    plain = PlainIQL(dataset, device) if "iql" in methods else None
    if plain is not None:
        plain.block(20)  # warm-up: Adam's state, allocator
    variants = [False, True] if args.compile else [False]
    print(f"  {'method':24s} {'eager':>9s}" + (f" {'compiled':>9s}" if args.compile else ""))
    pairs: dict[str, tuple[list[float], dict[str, list[float]]]] = {}

    def reference_blocks() -> dict[str, float]:
        blocks = {"plain PyTorch iql": plain.block(args.updates)}
        if d3rlpy is not None:
            blocks["d3rlpy 2.8.1 iql"] = d3rlpy.block(args.updates)
        return blocks

    try:
        for method in methods:
            line = f"  {method:24s}"
            for compiled in variants:
                paired = method == "iql"
                rates, references = measure(method, dataset, args.updates, args.repeats, device, compiled,
                                            reference_blocks if paired else None)
                if paired:
                    pairs["iql compiled" if compiled else "iql"] = (rates, references)
                line += f" {statistics.median(rates):9.1f}"
            print(line, flush=True)
    finally:
        if d3rlpy is not None:
            d3rlpy.close()
    for name, (ours, references) in pairs.items():
        for reference, theirs in references.items():
            print(f"  {reference:24s} {statistics.median(theirs):9.1f}  (blocks alternating with {name})")
        for reference, theirs in references.items():
            ratios = [a / b for a, b in zip(ours, theirs)]
            target = "; target >= 3x" if reference.startswith("d3rlpy") else ""
            print(f"ratio {name} / {reference}: {statistics.median(ratios):.2f}x, median of {len(ratios)} paired blocks "
                  f"(range {min(ratios):.2f}-{max(ratios):.2f}{target})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
