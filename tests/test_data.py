"""The transition store: construction, validation errors, loaders, normalisation."""

import numpy as np
import pytest
from modebench.benchmarks.data.dataset import (
    DataConfig,
    DatasetError,
    Normalizer,
    TransitionDataset,
    transform_rewards,
)
from modebench.benchmarks.data.loaders import load_d4rl_file
from modebench.benchmarks.tasks import toy


def _episodes():
    rng = np.random.default_rng(0)
    eps = []
    for length, terminal in ((4, True), (3, False)):
        eps.append(dict(
            observations=rng.normal(size=(length + 1, 3)), actions=rng.uniform(-1, 1, (length, 2)),
            rewards=np.arange(length, dtype=float), terminations=np.eye(length)[-1].astype(bool) & terminal,
            truncations=np.eye(length)[-1].astype(bool) & (not terminal),
        ))
    return eps


def test_from_episodes_layout():
    eps = _episodes()
    data = TransitionDataset.from_episodes(eps, "t").validate()
    assert len(data) == 7 and data.num_episodes == 2
    assert np.allclose(data.next_observations[0], eps[0]["observations"][1])
    assert np.allclose(data.next_actions[0], eps[0]["actions"][1])
    # the last step of an episode repeats its own action (masked by the terminal)
    assert np.allclose(data.next_actions[3], eps[0]["actions"][3])
    assert data.terminals.tolist() == [False, False, False, True, False, False, False]
    assert data.timeouts.tolist() == [False] * 6 + [True]
    assert np.allclose(data.episode_returns(), [6.0, 3.0])


def _valid():
    return TransitionDataset.from_episodes(_episodes(), "ds")


@pytest.mark.parametrize("field,index", [("observations", 2), ("rewards", 5), ("next_actions", 1)])
def test_nan_is_refused_with_field_and_index(field, index):
    data = _valid()
    getattr(data, field)[index] = np.nan
    with pytest.raises(DatasetError, match=rf"'{field}'.*index {index}"):
        data.validate()


def test_wrong_shape_is_refused():
    data = _valid()
    data.rewards = data.rewards[:-1]
    with pytest.raises(DatasetError, match=r"'rewards' has shape \(6,\), expected \(7,\)"):
        data.validate()


def test_action_out_of_bounds_is_refused_with_index():
    data = _valid()
    data.actions[4, 1] = 1.5
    with pytest.raises(DatasetError, match=r"'actions' at index 4 \(column 1\) is 1.5, outside the action box \[-1, 1\]"):
        data.validate()


def test_terminal_inside_an_episode_is_refused():
    data = _valid()
    data.terminals[1] = True
    with pytest.raises(DatasetError, match="'terminals' is set at index 1"):
        data.validate()


def test_action_box_is_rescaled_to_unit_box():
    eps = _episodes()
    for ep in eps:
        ep["actions"] = ep["actions"] * 2.0 + 1.0  # box [-1, 3]
    data = TransitionDataset.from_episodes(eps, "scaled", action_low=np.array([-1.0, -1.0]), action_high=np.array([3.0, 3.0]))
    assert np.allclose(data.actions, _episodes()[0]["actions"].tolist() + _episodes()[1]["actions"].tolist(), atol=1e-6)
    assert data.action_low.tolist() == [-1.0, -1.0]


def test_d4rl_npz_without_next_observations(tmp_path):
    obs = np.arange(12, dtype=np.float32).reshape(6, 2)
    payload = dict(observations=obs, actions=np.zeros((6, 1), np.float32), rewards=np.ones(6, np.float32),
                   terminals=np.array([0, 0, 1, 0, 0, 0], bool), timeouts=np.array([0, 0, 0, 0, 0, 1], bool))
    np.savez(tmp_path / "d.npz", **payload)
    data = load_d4rl_file(str(tmp_path / "d.npz")).validate()
    # the transition ending in a timeout has no recorded next observation: it is dropped
    assert len(data) == 5
    assert np.allclose(data.next_observations[0], obs[1])
    assert data.terminals.tolist() == [False, False, True, False, False]
    assert data.timeouts.tolist() == [False, False, False, False, True]
    assert data.episode_ids.tolist() == [0, 0, 0, 1, 1]


def test_d4rl_hdf5_with_next_observations(tmp_path):
    import h5py

    obs = np.random.default_rng(0).normal(size=(5, 3)).astype(np.float32)
    with h5py.File(tmp_path / "d.hdf5", "w") as h5:
        h5["observations"], h5["next_observations"] = obs, obs + 1
        h5["actions"] = np.zeros((5, 2), np.float32)
        h5["rewards"] = np.ones(5, np.float32)
        h5["terminals"] = np.array([0, 1, 0, 0, 0], bool)
        h5["timeouts"] = np.array([0, 0, 0, 0, 1], bool)
    data = load_d4rl_file(str(tmp_path / "d.hdf5")).validate()
    assert len(data) == 5 and np.allclose(data.next_observations, obs + 1)
    assert data.episode_ids.tolist() == [0, 0, 1, 1, 1]


def test_missing_field_in_file_is_named(tmp_path):
    np.savez(tmp_path / "bad.npz", observations=np.zeros((3, 2)), actions=np.zeros((3, 1)))
    with pytest.raises(DatasetError, match=r"missing field\(s\) \['rewards', 'terminals'\]"):
        load_d4rl_file(str(tmp_path / "bad.npz"))


def test_reward_transforms():
    data = _valid()  # episode returns 6 and 3
    assert np.allclose(transform_rewards(data, DataConfig(reward_transform="locomotion")), data.rewards * 1000 / 3)
    assert np.allclose(transform_rewards(data, DataConfig(reward_transform="antmaze")), data.rewards - 1)
    assert np.allclose(transform_rewards(data, DataConfig(reward_transform="affine", reward_scale=2, reward_shift=1)), data.rewards * 2 + 1)


def test_normalizer_keeps_constant_features():
    obs = np.stack([np.zeros(100), np.arange(100)], 1).astype(np.float32)
    norm = Normalizer.fit(obs)
    out = norm(obs)
    assert np.allclose(out[:, 0], 0.0)
    assert abs(out[:, 1].mean()) < 1e-5 and abs(out[:, 1].std() - 1) < 1e-2


def test_toy_generators_are_deterministic_and_valid():
    for task in ("four-goal", "sparse-optimum", "branch", "obstacle"):
        a, b = toy.generate(task, size=500, seed=3), toy.generate(task, size=500, seed=3)
        a.validate()
        assert np.array_equal(a.actions, b.actions) and np.array_equal(a.rewards, b.rewards)


def test_toy_data_is_multimodal_as_designed():
    four = toy.generate("four-goal", size=4000)
    # every action near one of the four corners, none near the middle
    assert np.all(np.abs(four.actions).min(axis=1) > 0.6)
    sparse = toy.generate("sparse-optimum", size=10000)
    at_opt = np.linalg.norm(sparse.actions - toy.SparseOptimumBandit.OPTIMUM, axis=1) < 0.4
    assert abs(at_opt.mean() - 0.1) < 0.02
    branch = toy.generate("branch", size=4000)
    assert abs((branch.rewards > 0).mean() - 0.5) < 0.05


@pytest.mark.parametrize("task", ["four-goal", "sparse-optimum", "branch"])
def test_toy_random_reference_returns_match_simulation(task):
    import gymnasium as gym

    env = gym.make(toy.ENV_IDS[task])
    rng = np.random.default_rng(0)
    returns = []
    for i in range(8000):
        env.reset(seed=i)
        returns.append(env.step(rng.uniform(-1, 1, env.action_space.shape))[1])
    random_ref, _ = toy.reference_returns(task)
    stderr = np.std(returns) / np.sqrt(len(returns))
    assert abs(np.mean(returns) - random_ref) < 4 * stderr


def test_obstacle_average_action_collides_and_experts_succeed():
    env = toy.ObstacleNavigation()
    obs, _ = env.reset(seed=0)
    for _ in range(env.HORIZON):
        action = 0.5 * (env.expert_action(obs, "left") + env.expert_action(obs, "right"))
        obs, _, terminated, _, info = env.step(action)
        if terminated:
            break
    assert info["collision"] and not info["success"]
    data = toy.generate("obstacle", size=2000)
    assert data.rewards.sum() >= 0.9 * data.num_episodes  # expert data reaches the goal
