"""The `toy` suite: small tasks where the multimodal failure is known, generated offline in seconds.

Each task is a gymnasium env, a seeded dataset generator and reference returns
(random policy: measured in closed form or by the test suite; optimal: by construction).

- four-goal: LOM's Fetch setting as a one-step 2D bandit. Data: four modes at (+-1, +-1);
  reaching (1, 1) pays 2, the others 1, anything else 0. The average action (0, 0) pays 0.
- sparse-optimum: ISEP's Sec. 4.5 bandit. 90% of the data at a suboptimal mode (reward 1),
  10% at the optimum (reward 2), a danger zone (reward -1) between them, background 0.
- branch: LOM Appendix A. State s ~ U[-1, 1]; data actions +-f(s); reward 1 when (s, a) is in
  the first or third quadrant (sign(a) = sign(s)), else 0. The average action 0 earns nothing.
- obstacle: a 2D point moves from the bottom to a goal at the top around a disc obstacle; the
  data passes it on the left or on the right, and the average of the two (straight up) collides.
"""

from __future__ import annotations

import math
from typing import Any, ClassVar

import gymnasium as gym
import numpy as np
from gymnasium import spaces
from modebench.benchmarks.data.dataset import TransitionDataset

MODE_RADIUS = 0.25


class BanditEnv(gym.Env):
    """A one-step episode: observe a state, act once, get the reward, terminate."""

    metadata: ClassVar[dict[str, Any]] = {"render_modes": []}
    obs_dim = 2

    def __init__(self) -> None:
        self.observation_space = spaces.Box(-np.inf, np.inf, (self.obs_dim,), np.float32)
        self.action_space = spaces.Box(-1.0, 1.0, (2,), np.float32)
        self._obs = np.zeros(self.obs_dim, np.float32)

    def sample_state(self) -> np.ndarray:
        return np.zeros(self.obs_dim, np.float32)

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        self._obs = self.sample_state()
        return self._obs.copy(), {}

    def reward(self, obs: np.ndarray, action: np.ndarray) -> float:
        raise NotImplementedError

    def step(self, action):
        action = np.clip(np.asarray(action, np.float32), -1.0, 1.0)
        r = float(self.reward(self._obs, action))
        return self._obs.copy(), r, True, False, {"success": r >= self.success_reward}

    success_reward = math.inf


def _disc_reward(action: np.ndarray, centers: np.ndarray, values: np.ndarray, radius: float = MODE_RADIUS) -> float:
    dist = np.linalg.norm(centers - action[None], axis=1)
    hit = np.flatnonzero(dist < radius)
    return float(values[hit[0]]) if hit.size else 0.0


class FourGoalBandit(BanditEnv):
    GOALS = np.array([[1.0, 1.0], [-1.0, 1.0], [-1.0, -1.0], [1.0, -1.0]], np.float32)
    VALUES = np.array([2.0, 1.0, 1.0, 1.0], np.float32)
    # Uniform actions on [-1, 1]^2 hit each corner's quarter-disc with prob (pi r^2 / 4) / 4.
    REF_RANDOM = float(VALUES.sum()) * float(math.pi * MODE_RADIUS**2 / 16.0)
    REF_OPTIMAL = 2.0
    success_reward = 2.0

    def reward(self, obs, action):
        return _disc_reward(action, self.GOALS, self.VALUES)


class SparseOptimumBandit(BanditEnv):
    SUBOPTIMAL = np.array([-0.5, -0.5], np.float32)
    OPTIMUM = np.array([0.5, 0.5], np.float32)
    DANGER = np.array([0.0, 0.0], np.float32)
    CENTERS = np.stack([OPTIMUM, SUBOPTIMAL, DANGER])
    VALUES = np.array([2.0, 1.0, -1.0], np.float32)
    # Three discs fully inside the box: P(hit each) = pi r^2 / 4.
    REF_RANDOM = float(VALUES.sum()) * float(math.pi * MODE_RADIUS**2 / 4.0)
    REF_OPTIMAL = 2.0
    success_reward = 2.0

    def reward(self, obs, action):
        return _disc_reward(action, self.CENTERS, self.VALUES)


def branch_magnitude(s: np.ndarray) -> np.ndarray:
    """f(s): the data's action magnitude at state s."""
    return 0.3 + 0.5 * np.abs(s)


class BranchBandit(BanditEnv):
    """One-step MDP with a 1D state and a 1D action (LOM Appendix A, Fig. 5f)."""

    obs_dim = 1
    REF_RANDOM = 0.5  # a uniform action has the state's sign half of the time
    REF_OPTIMAL = 1.0
    success_reward = 1.0

    def __init__(self) -> None:
        super().__init__()
        self.action_space = spaces.Box(-1.0, 1.0, (1,), np.float32)

    def sample_state(self) -> np.ndarray:
        return self.np_random.uniform(-1.0, 1.0, size=1).astype(np.float32)

    def reward(self, obs, action):
        return 1.0 if float(obs[0]) * float(action[0]) > 0 else 0.0


class ObstacleNavigation(gym.Env):
    """2D point: x <- x + 0.1 a; start near (0, -1), goal disc at (0, 1), obstacle disc at (0, 0).
    Reward 1 and termination on reaching the goal; touching the obstacle terminates with 0."""

    metadata: ClassVar[dict[str, Any]] = {"render_modes": []}
    START = np.array([0.0, -1.0], np.float32)
    GOAL = np.array([0.0, 1.0], np.float32)
    GOAL_RADIUS = 0.2
    OBSTACLE_RADIUS = 0.4
    STEP = 0.1
    HORIZON = 60
    REF_RANDOM = 0.0  # measured by tests: a uniform random walk essentially never arrives
    REF_OPTIMAL = 1.0
    WAYPOINTS: ClassVar[dict[str, np.ndarray]] = {"left": np.array([-0.7, 0.0], np.float32), "right": np.array([0.7, 0.0], np.float32)}

    def __init__(self) -> None:
        self.observation_space = spaces.Box(-np.inf, np.inf, (2,), np.float32)
        self.action_space = spaces.Box(-1.0, 1.0, (2,), np.float32)
        self._pos = self.START.copy()

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        self._pos = (self.START + self.np_random.uniform(-0.05, 0.05, size=2)).astype(np.float32)
        return self._pos.copy(), {}

    def step(self, action):
        action = np.clip(np.asarray(action, np.float32), -1.0, 1.0)
        self._pos = np.clip(self._pos + self.STEP * action, -1.5, 1.5).astype(np.float32)
        collided = bool(np.linalg.norm(self._pos) < self.OBSTACLE_RADIUS)
        success = bool(np.linalg.norm(self._pos - self.GOAL) < self.GOAL_RADIUS)
        reward = 1.0 if success else 0.0
        return self._pos.copy(), reward, success or collided, False, {"success": success, "collision": collided}

    @classmethod
    def expert_action(cls, pos: np.ndarray, side: str) -> np.ndarray:
        """Head for the side waypoint until level with the obstacle, then for the goal."""
        target = cls.WAYPOINTS[side] if pos[1] < 0.0 else cls.GOAL
        direction = target - pos
        return direction / max(float(np.linalg.norm(direction)), 1e-6)


ENV_IDS = {
    "four-goal": "modebench/FourGoalBandit-v0",
    "sparse-optimum": "modebench/SparseOptimumBandit-v0",
    "branch": "modebench/BranchBandit-v0",
    "obstacle": "modebench/ObstacleNavigation-v0",
}
_CLASSES = {
    "four-goal": FourGoalBandit,
    "sparse-optimum": SparseOptimumBandit,
    "branch": BranchBandit,
    "obstacle": ObstacleNavigation,
}


def register_envs() -> None:
    for task, env_id in ENV_IDS.items():
        if env_id not in gym.registry:
            cls = _CLASSES[task]
            horizon = cls.HORIZON if cls is ObstacleNavigation else 1
            gym.register(env_id, entry_point=f"{__name__}:{cls.__name__}", max_episode_steps=horizon)


register_envs()


def reference_returns(task: str) -> tuple[float, float]:
    cls = _CLASSES[task]
    return cls.REF_RANDOM, cls.REF_OPTIMAL


def _bandit_dataset(obs: np.ndarray, actions: np.ndarray, rewards: np.ndarray, name: str) -> TransitionDataset:
    n = obs.shape[0]
    return TransitionDataset(
        observations=obs.astype(np.float32),
        actions=actions.astype(np.float32),
        rewards=rewards.astype(np.float32),
        next_observations=obs.astype(np.float32),
        terminals=np.ones(n, bool),
        timeouts=np.zeros(n, bool),
        next_actions=actions.astype(np.float32),
        episode_ids=np.arange(n, dtype=np.int64),
        name=name,
        metadata={"generator": "modebench toy", "local": True},
    )


def generate(task: str, size: int = 10_000, seed: int = 0, noise: float = 0.08) -> TransitionDataset:
    """The toy task's dataset, identical for the same (task, size, seed, noise)."""
    if task not in _CLASSES:
        raise KeyError(f"unknown toy task {task!r}; valid: {sorted(_CLASSES)}")
    rng = np.random.default_rng(seed)
    name = f"toy/{task}"
    if task == "obstacle":
        return _obstacle_dataset(rng, episodes=max(size // 25, 10), noise=noise, name=name)
    env = _CLASSES[task]()
    env.reset(seed=seed)
    if task == "four-goal":
        modes = FourGoalBandit.GOALS[rng.integers(0, 4, size)]
        obs = np.zeros((size, 2), np.float32)
    elif task == "sparse-optimum":
        optimal = rng.random(size) < 0.1
        modes = np.where(optimal[:, None], SparseOptimumBandit.OPTIMUM, SparseOptimumBandit.SUBOPTIMAL)
        obs = np.zeros((size, 2), np.float32)
    else:  # branch
        obs = rng.uniform(-1.0, 1.0, (size, 1)).astype(np.float32)
        sign = np.where(rng.random(size) < 0.5, 1.0, -1.0)
        modes = (sign * branch_magnitude(obs[:, 0]))[:, None]
    actions = np.clip(modes + noise * rng.standard_normal(modes.shape), -1.0, 1.0).astype(np.float32)
    rewards = np.array([env.reward(o, a) for o, a in zip(obs, actions)], np.float32)
    return _bandit_dataset(obs, actions, rewards, name)


def _obstacle_dataset(rng: np.random.Generator, episodes: int, noise: float, name: str) -> TransitionDataset:
    env = ObstacleNavigation()
    recorded = []
    for ep in range(episodes):
        side = "left" if ep % 2 == 0 else "right"
        obs, _ = env.reset(seed=int(rng.integers(2**31)))
        observations, actions, rewards, terms, truncs = [obs], [], [], [], []
        for t in range(env.HORIZON):
            action = env.expert_action(obs, side) + noise * rng.standard_normal(2)
            action = np.clip(action, -1.0, 1.0).astype(np.float32)
            obs, reward, terminated, _, _ = env.step(action)
            truncated = t == env.HORIZON - 1 and not terminated
            observations.append(obs)
            actions.append(action)
            rewards.append(reward)
            terms.append(terminated)
            truncs.append(truncated)
            if terminated:
                break
        recorded.append(
            dict(observations=np.array(observations), actions=np.array(actions), rewards=np.array(rewards),
                 terminations=np.array(terms), truncations=np.array(truncs))
        )
    return TransitionDataset.from_episodes(recorded, name, metadata={"generator": "modebench toy", "local": True})
