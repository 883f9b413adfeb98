"""Helpers shared by the test files (pytest puts tests/ on sys.path, so `from helpers import ...`)."""

from __future__ import annotations

import torch
from modebench.algorithms.base import Batch


def random_batch(
    n: int = 16, obs_dim: int = 3, act_dim: int = 2, seed: int = 0, action_bound: float = 1.0,
    done_rate: float | None = 0.2,
) -> Batch:
    """A seeded minibatch: standard-normal states and rewards, actions uniform in
    [-action_bound, action_bound]^d, next actions uniform in [-1, 1]^d, and terminal flags
    drawn at `done_rate` (None: no terminals, and no draw for them)."""
    g = torch.Generator().manual_seed(seed)
    observations = torch.randn(n, obs_dim, generator=g)
    actions = torch.rand(n, act_dim, generator=g) * (2 * action_bound) - action_bound
    rewards = torch.randn(n, generator=g)
    next_observations = torch.randn(n, obs_dim, generator=g)
    dones = torch.zeros(n) if done_rate is None else (torch.rand(n, generator=g) < done_rate).float()
    next_actions = torch.rand(n, act_dim, generator=g) * 2 - 1
    return Batch(observations, actions, rewards, next_observations, dones, next_actions)


def perturb_target(critic, scale: float = 0.5, seed: int = 123) -> None:
    """Make a critic's target ensemble differ from its online one (a fresh model's target is an
    exact copy, so a test on it cannot tell which network a loss reads): add seeded noise of
    std `scale` to every target parameter, in place."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in critic.q_target.parameters():
            p.add_(torch.randn(p.shape, generator=g) * scale)


def online_and_target_q(critic, obs: torch.Tensor, actions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(online, target) ensemble outputs [M, ...] under no_grad, asserting that they differ."""
    with torch.no_grad():
        online, target = critic.q(obs, actions), critic.q_target(obs, actions)
    assert not torch.allclose(online, target, atol=1e-3), "online and target critics must differ for this test"
    return online, target


def train_on_toy(cls, config, task: str, steps: int, seed: int = 0, size: int = 10_000):
    """`cls(config)` trained for `steps` updates on a toy bandit's dataset (benchmarks/tasks/toy.py,
    data seed 0), minibatches from the core replay with the given seed; one intra-op thread."""
    from modebench.algorithms.base import EnvSpec
    from modebench.benchmarks.data.dataset import DataConfig, Normalizer
    from modebench.benchmarks.data.replay import DeviceReplay
    from modebench.benchmarks.tasks import toy

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # small nets: one thread is fastest, and steady on a busy machine
    try:
        torch.manual_seed(seed)
        data = toy.generate(task, size, 0)
        replay = DeviceReplay(data, DataConfig(), Normalizer.fit(data.observations), torch.device("cpu"), seed)
        algo = cls(config, EnvSpec(data.obs_dim, data.act_dim, horizon=1, total_steps=steps))
        for step in range(steps):
            algo.update(replay.sample(config.batch_size), step)
        return algo
    finally:
        torch.set_num_threads(threads)


def bandit_actions(algo, knobs=None, n: int = 2000, seed: int = 0) -> torch.Tensor:
    """n actions of `algo` at the bandit's single (all-zero) state, seeded."""
    torch.manual_seed(seed)
    return algo.act(torch.zeros(n, 2), torch.zeros(n, dtype=torch.long), knobs).actions


def bandit_return(env_class, actions: torch.Tensor) -> float:
    """Mean reward of `actions` on a toy bandit (benchmarks/tasks/toy.py)."""
    env = env_class()
    return float(sum(env.reward(None, a) for a in actions.numpy()) / len(actions))


def fraction_in_disc(actions: torch.Tensor, center, radius: float | None = None) -> float:
    """Fraction of actions [n, 2] within `radius` (default: the toy bandits' MODE_RADIUS) of `center`."""
    from modebench.benchmarks.tasks.toy import MODE_RADIUS

    radius = MODE_RADIUS if radius is None else radius
    return float(((actions - torch.as_tensor(center, dtype=actions.dtype)).norm(dim=-1) < radius).float().mean())


def wait_for(condition, timeout: float, what: str, proc=None):
    """Poll `condition()` until it returns something truthy (returned) or `timeout` seconds pass
    (AssertionError naming `what`); fails at once with `proc`'s output when that subprocess ends first."""
    import time

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        if proc is not None and proc.poll() is not None:
            command = " ".join(str(a) for a in proc.args[2:5])
            raise AssertionError(f"{command} ended (status {proc.returncode}) before {what}:\n{proc.stdout.read()}")
        time.sleep(0.1)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")
