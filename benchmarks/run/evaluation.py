"""The evaluation loop shared by every method.

Many episodes at once through a gymnasium vector env, one batched `act` per step for all
live environments, per-episode records (return, length, success, the method's audits averaged
over the episode's steps), the normalised score and a progress bar. Seeds are deterministic:
episode i of an evaluation with seed s resets with seed s * 100_003 + i.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from modebench.algorithms.base import Algorithm
from modebench.benchmarks.data.dataset import Normalizer
from modebench.benchmarks.tasks.suites import Task
from tqdm.auto import tqdm

MAX_PARALLEL_ENVS = 50


@dataclass
class Policy:
    """A trained method plus the maps between the environment's and the method's spaces."""

    algorithm: Algorithm
    normalizer: Normalizer
    action_low: np.ndarray | None = None
    action_high: np.ndarray | None = None

    def __call__(self, obs: np.ndarray, t: np.ndarray, knobs: Any) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        device = self.algorithm.device
        obs_t = torch.as_tensor(self.normalizer(obs), device=device)
        t_t = torch.as_tensor(t, device=device, dtype=torch.long)
        out = self.algorithm.act(obs_t, t_t, knobs)
        actions = out.actions.detach().float().cpu().numpy()
        if self.action_low is not None:
            actions = self.action_low + (actions + 1.0) * 0.5 * (self.action_high - self.action_low)
        audits = {k: v.detach().float().cpu().numpy() for k, v in out.audits.items()}
        return actions, audits


@dataclass
class EvalResult:
    returns: np.ndarray
    lengths: np.ndarray
    successes: np.ndarray
    normalized: np.ndarray
    audits: dict[str, np.ndarray] = field(default_factory=dict)  # per-episode means
    wall_time: float = 0.0
    env_steps: int = 0

    @property
    def normalized_score(self) -> float:
        return float(np.mean(self.normalized))

    def summary(self) -> dict[str, Any]:
        return {
            "eval_episodes": len(self.returns),
            "return_mean": float(np.mean(self.returns)),
            "return_std": float(np.std(self.returns)),
            "normalized_score": self.normalized_score,
            "normalized_std": float(np.std(self.normalized)),
            "success_rate": float(np.mean(self.successes)),
            "episode_length_mean": float(np.mean(self.lengths)),
            "audits": {k: float(np.nanmean(v)) for k, v in self.audits.items()},
            "eval_wall_time": self.wall_time,
            "eval_env_steps_per_second": self.env_steps / max(self.wall_time, 1e-9),
            "episodes": [
                {
                    "return": float(self.returns[i]),
                    "length": int(self.lengths[i]),
                    "success": bool(self.successes[i]),
                    "normalized_score": float(self.normalized[i]),
                    **{f"audit/{k}": float(v[i]) for k, v in self.audits.items()},
                }
                for i in range(len(self.returns))
            ],
        }


def _success_flags(infos: dict, n: int) -> np.ndarray:
    for key in ("success", "is_success"):
        if key in infos:
            values = np.asarray(infos[key], dtype=np.float64).reshape(n)
            mask = np.asarray(infos.get(f"_{key}", np.ones(n, bool)), dtype=bool).reshape(n)
            return (values > 0) & mask
    return np.zeros(n, bool)


def run_episodes(
    policy: Policy,
    task: Task,
    knobs: Any,
    episodes: int,
    seed: int = 0,
    progress: bool = False,
    dataset=None,
) -> EvalResult:
    """Roll out `episodes` episodes in waves of up to MAX_PARALLEL_ENVS vectorised environments."""
    start = time.perf_counter()
    returns, lengths, successes = [], [], []
    audit_sums: dict[str, list[np.ndarray]] = {}
    env_steps = 0
    bar = tqdm(total=episodes, desc=f"eval {task.id}", disable=not progress, leave=False)
    done_episodes = 0
    while done_episodes < episodes:
        n = min(MAX_PARALLEL_ENVS, episodes - done_episodes)
        envs = gym.vector.SyncVectorEnv([task.make_env for _ in range(n)])
        try:
            seeds = [seed * 100_003 + done_episodes + i for i in range(n)]
            obs, _ = envs.reset(seed=seeds)
            alive = np.ones(n, bool)
            ep_return = np.zeros(n)
            ep_len = np.zeros(n, np.int64)
            ep_success = np.zeros(n, bool)
            ep_audits: dict[str, np.ndarray] = {}
            t = np.zeros(n, np.int64)
            while alive.any():
                actions, audits = policy(np.asarray(obs, np.float32), t, knobs)
                obs, rewards, terminated, truncated, infos = envs.step(actions)
                env_steps += int(alive.sum())
                ep_return += np.where(alive, rewards, 0.0)
                ep_len += alive
                ep_success |= alive & _success_flags(infos, n)
                for key, value in audits.items():
                    ep_audits.setdefault(key, np.zeros(n))
                    ep_audits[key] += np.where(alive, value, 0.0)
                t += 1
                finished = alive & (terminated | truncated | (t >= task.horizon))
                alive &= ~finished
                bar.update(int(finished.sum()))
        finally:
            envs.close()
        returns.append(ep_return)
        lengths.append(ep_len)
        successes.append(ep_success)
        for key, total in ep_audits.items():
            audit_sums.setdefault(key, []).append(total / np.maximum(ep_len, 1))
        done_episodes += n
    bar.close()
    returns_a = np.concatenate(returns)
    successes_a = np.concatenate(successes)
    return EvalResult(
        returns=returns_a,
        lengths=np.concatenate(lengths),
        successes=successes_a,
        normalized=np.asarray(task.normalize(returns_a, successes_a, dataset=dataset), dtype=np.float64),
        audits={k: np.concatenate(v) for k, v in audit_sums.items()},
        wall_time=time.perf_counter() - start,
        env_steps=env_steps,
    )


def evaluate(
    algorithm: Algorithm,
    task: Task,
    knobs: Any = None,
    episodes: int | None = None,
    seed: int = 0,
    normalizer: Normalizer | None = None,
    action_low: np.ndarray | None = None,
    action_high: np.ndarray | None = None,
    progress: bool = False,
    dataset=None,
) -> EvalResult:
    """Evaluate a method on a task (default knobs, the task's number of episodes)."""
    if normalizer is None:
        normalizer = Normalizer(np.zeros(algorithm.spec.obs_dim, np.float32), np.ones(algorithm.spec.obs_dim, np.float32))
    policy = Policy(algorithm, normalizer, action_low, action_high)
    was_training = algorithm.training
    algorithm.eval()
    devices = [algorithm.device] if algorithm.device.type == "cuda" else []
    # A stochastic act (sampled candidates, latents, flow noise) draws from the RNG seeded with the
    # evaluation seed, so knob grids are reproducible; the training RNG stream is left untouched.
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        try:
            return run_episodes(
                policy, task, knobs if knobs is not None else algorithm.default_knobs(),
                episodes or task.eval_episodes, seed, progress, dataset,
            )
        finally:
            algorithm.train(was_training)
