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


class SixModeBandit:
    """A held-out one-step bandit (not a toy-suite task): six action modes on a circle of radius 0.6,
    the first worth 1, the others 0.5, each a disc of radius 0.2; 2-d observations are zeros. Built
    on the toy bandits' env class; registered nowhere: Minari datasets record it by entry point
    (`helpers:SixModeBandit`), so a process that runs one needs tests/ on its path."""

    ANGLES = tuple(k * 60.0 for k in range(6))
    RADIUS, DISC, NOISE = 0.6, 0.2, 0.05
    VALUES = (1.0, 0.5, 0.5, 0.5, 0.5, 0.5)

    def __new__(cls):
        import math

        import numpy as np
        from modebench.benchmarks.tasks import toy

        centers = np.array([[cls.RADIUS * math.cos(math.radians(a)), cls.RADIUS * math.sin(math.radians(a))]
                            for a in cls.ANGLES], np.float32)
        values = np.array(cls.VALUES, np.float32)

        class _SixModeBandit(toy.BanditEnv):
            success_reward = 1.0

            def reward(self, obs, action):
                return toy._disc_reward(action, centers, values, cls.DISC)

        env = _SixModeBandit()
        env.centers = centers
        return env


def write_six_mode_minari(dataset_id: str, episodes: int = 20_000, seed: int = 0):
    """`SixModeBandit` data written as a standard Minari dataset by minari's own writer (under
    $MINARI_DATASETS_PATH): one-step episodes, the six modes equally often, actions N(mode, 0.05^2)
    clipped to the box; normalised scores 0 (no disc hit) to 100 (the best mode every time)."""
    import gymnasium as gym
    import minari
    import numpy as np
    from minari.data_collector import EpisodeBuffer

    env = SixModeBandit()
    rng = np.random.default_rng(seed)
    modes = env.centers[rng.integers(0, 6, episodes)]
    actions = np.clip(modes + SixModeBandit.NOISE * rng.standard_normal(modes.shape), -1.0, 1.0).astype(np.float32)
    zeros = np.zeros((2, 2), np.float32)
    buffers = [EpisodeBuffer(id=i, observations=zeros, actions=actions[i:i + 1],
                             rewards=[env.reward(zeros[0], actions[i])], terminations=[True], truncations=[False],
                             infos={}) for i in range(episodes)]
    spec = gym.envs.registration.EnvSpec("SixModeBandit-v0", entry_point="helpers:SixModeBandit", max_episode_steps=1)
    return minari.create_dataset_from_buffers(
        dataset_id=dataset_id, buffer=buffers, env=spec, algorithm_name="six equal modes, N(mode, 0.05^2)",
        ref_min_score=0.0, ref_max_score=1.0, description="held-out six-mode bandit (tests/helpers.py)",
    )


def expand_samples(gmm, n: int):
    """The same mixtures with a new axis of size n before the component axis (log_prob of [..., n, d])."""
    from modebench.algorithms.nets import DiagonalGMM

    return DiagonalGMM(
        gmm.log_weights.unsqueeze(-2).expand(*gmm.log_weights.shape[:-1], n, -1),
        gmm.means.unsqueeze(-3).expand(*gmm.means.shape[:-2], n, *gmm.means.shape[-2:]),
        gmm.log_stds.unsqueeze(-3).expand(*gmm.log_stds.shape[:-2], n, *gmm.log_stds.shape[-2:]),
    )
