"""Offline generators: standard Minari / OGBench outputs that round-trip through the packages'
own loaders, deterministic by seed, with experts that reach the goal and random references below
them (all measured)."""

from __future__ import annotations

import json

import gymnasium as gym
import numpy as np
import pytest
from modebench.benchmarks.tasks.generators import (
    generate,
    get_generator,
    is_generated,
    maze2d,
    ogbench_gen,
    output_id,
)
from modebench.benchmarks.tasks.generators.common import random_policy, rollouts
from modebench.benchmarks.tasks.suites import Task


@pytest.fixture
def local_dirs(tmp_path, monkeypatch):
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(tmp_path / "minari"))
    monkeypatch.setenv("MODEBENCH_DATA", str(tmp_path / "data"))
    return tmp_path


def test_pointmaze_dataset_round_trips_through_minari(local_dirs):
    import minari
    from modebench.benchmarks.data.loaders import load_minari, recover_env

    result = generate("pointmaze-umaze", "tiny", seed=3, progress=False)
    assert result.generated and result.name == "modebench-local/pointmaze-umaze/tiny-s3-v0"
    assert is_generated("pointmaze-umaze", "tiny", 3)
    dataset = minari.load_dataset(result.name)
    meta = dataset.storage.metadata
    assert dataset.total_steps == get_generator("pointmaze-umaze").presets["tiny"] == 600
    assert meta["ref_min_score"] == pytest.approx(result.stats["random_reference"]["return_mean"])
    assert meta["ref_max_score"] == pytest.approx(result.stats["expert_reference"]["return_mean"])
    assert "LOCAL" in meta["description"]
    env = dataset.recover_environment(eval_env=True)
    expected = maze2d.eval_env_spec("umaze")
    assert env.spec.id == expected.id and env.spec.max_episode_steps == 300
    assert env.spec.kwargs["maze_map"] == expected.kwargs["maze_map"] and env.spec.kwargs["continuing_task"]
    # the core's loader and env agree on the flattened observation layout
    data = load_minari(result.name).validate()
    flat_env = recover_env(result.name)
    obs, _ = flat_env.reset(seed=0)
    assert obs.shape == (data.obs_dim,) == (8,)
    episode = next(dataset.iterate_episodes())
    first = np.concatenate([episode.observations[k][0] for k in ("achieved_goal", "desired_goal", "observation")])
    assert np.allclose(data.observations[0], first)
    # rewards are the evaluation env's sparse reward at the fixed goal the observation shows
    goal = episode.observations["desired_goal"]
    dist = np.linalg.norm(episode.observations["achieved_goal"][1:] - goal[1:], axis=1)
    assert np.array_equal(episode.rewards > 0, dist <= 0.45)
    # a second call finds it instead of regenerating; a suite task loads it as a `generated` source
    assert not generate("pointmaze-umaze", "tiny", seed=3, progress=False).generated
    task = Task("t", "umaze", {"source": "generated", "generator": "pointmaze-umaze", "preset": "tiny", "seed": 3},
                {"source": "generated", "generator": "pointmaze-umaze"}, 300, {"kind": "dataset"})
    loaded = task.load_dataset()
    assert loaded.metadata["local"] and task.reference_returns(loaded) == (meta["ref_min_score"], meta["ref_max_score"])


def test_pointmaze_generation_is_deterministic_by_seed():
    a, _ = maze2d.collect("umaze", 400, seed=5, progress=False)
    b, _ = maze2d.collect("umaze", 400, seed=5, progress=False)
    c, _ = maze2d.collect("umaze", 400, seed=6, progress=False)
    assert all(np.array_equal(x.actions, y.actions) for x, y in zip(a, b))
    assert not np.array_equal(a[0].actions, c[0].actions)


def test_pointmaze_umaze_expert_reaches_goal_and_random_is_below():
    expert = rollouts(lambda: maze2d.make_eval_env("umaze"), maze2d.expert_policy, 10, 100, 300, "expert", False)
    rand = rollouts(lambda: maze2d.make_eval_env("umaze"), random_policy, 10, 100, 300, "random", False)
    assert expert.successes.mean() >= 0.9  # measured: 1.0
    assert rand.returns.mean() < expert.returns.mean()
    # the noisy data (noise 0.5) still reaches most of the controller's targets
    _, stats = maze2d.collect("umaze", 1500, seed=0, progress=False)
    assert stats["controller_target_reach_rate"] >= 0.8  # measured: 1.0


@pytest.mark.slow
@pytest.mark.parametrize("maze", ["medium", "large"])
def test_pointmaze_expert_reaches_goal_medium_large(maze):
    horizon = maze2d.MAZES[maze].horizon
    expert = rollouts(lambda: maze2d.make_eval_env(maze), maze2d.expert_policy, 20, 100, horizon, "expert", False)
    rand = rollouts(lambda: maze2d.make_eval_env(maze), random_policy, 20, 100, horizon, "random", False)
    assert expert.successes.mean() >= 0.9 and rand.returns.mean() < expert.returns.mean()
    _, stats = maze2d.collect(maze, 3 * horizon, seed=0, progress=False)
    assert stats["controller_target_reach_rate"] >= 0.8


def test_ogbench_pointmaze_npz_loads_with_ogbench_and_minari(local_dirs):
    import minari
    import ogbench

    result = generate("ogbench-pointmaze-medium-navigate", "tiny", seed=0, progress=False)
    npz = result.paths["npz"]
    assert "--tiny-s0" in npz and npz == output_id("ogbench-pointmaze-medium-navigate", "tiny", 0)["npz"]
    with np.load(npz) as raw:
        assert set(raw.files) == {"observations", "actions", "terminals", "qpos", "qvel"}
        assert raw["terminals"].sum() == 2 and len(raw["terminals"]) == 2 * ogbench_gen.EPISODE_STEPS
    _, train, val = ogbench.make_env_and_datasets("pointmaze-medium-navigate-singletask-task1-v0", dataset_path=npz)
    assert len(train["observations"]) == 2000 and len(val["observations"]) == 1000
    assert set(np.unique(train["rewards"])) <= {-1.0, 0.0}
    stats = result.stats
    assert stats["expert_reference"]["success_rate"] >= 0.8  # measured: 1.0
    assert stats["ref_min_score"] < stats["ref_max_score"]
    assert stats["subtask_success_rate"] >= 0.8  # the noisy data reaches most of its goals
    # the suite's `ogbench` source (OGBench's loader + relabelling) on the local file
    task = Task("t", "pm", {"source": "ogbench", "name": "pointmaze-medium-navigate-singletask-task1-v0",
                            "local": {"preset": "tiny", "seed": 0}},
                {"source": "ogbench", "id": "pointmaze-medium-singletask-task1-v0"}, 1000, {"kind": "success"})
    data = task.load_dataset()
    assert len(data) == 2000 and "local" in data.name
    assert np.array_equal(data.terminals, train["masks"] == 0)
    assert np.allclose(data.rewards, train["rewards"])
    # the Minari copy of the default single task round-trips, and records the task's env
    copy = minari.load_dataset(stats["minari_id"])
    assert copy.total_steps == 2000
    assert copy.recover_environment(eval_env=True).spec.id == "pointmaze-medium-singletask-v0"
    assert json.loads((local_dirs / "data" / "ogbench" / "pointmaze-medium-navigate--tiny-s0.json").read_text())["local"]


def test_ogbench_collection_is_deterministic_by_seed():
    a, _ = ogbench_gen.collect("ogbench-pointmaze-medium-navigate", 1, seed=4, progress=False, episode_steps=200)
    b, _ = ogbench_gen.collect("ogbench-pointmaze-medium-navigate", 1, seed=4, progress=False, episode_steps=200)
    assert all(np.array_equal(a[k], b[k]) for k in a)


def test_cube_single_oracles_reach_the_goal():
    import ogbench  # noqa: F401

    # the play data's plan oracle finishes its subtasks (data_collection mode, set_new_target)
    arrays, stats = ogbench_gen.collect("ogbench-cube-single-play", 1, seed=0, progress=False, episode_steps=200)
    assert stats["subtask_success_rate"] >= 0.5 and stats["subtasks"] >= 2
    assert arrays["qpos"].shape == (200, 21)
    # the noiseless oracle solves the single task it is scored on; random does not
    make = lambda: gym.make("cube-single-singletask-v0")
    expert = rollouts(make, ogbench_gen.cube_single_expert, 3, 7, 200, "expert", False)
    rand = rollouts(make, random_policy, 1, 7, 200, "random", False)
    assert expert.successes.mean() >= 2 / 3  # measured: 1.0 on tasks 1-5
    assert rand.returns.mean() < expert.returns.mean()


@pytest.mark.slow
@pytest.mark.parametrize("name", ["ogbench-cube-single-play", "ogbench-scene-play"])
def test_ogbench_manipulation_generation_round_trips(local_dirs, name):
    import minari
    import ogbench

    result = generate(name, "tiny", seed=0, progress=False)
    recipe = ogbench_gen.RECIPES[name]
    _, train, _ = ogbench.make_env_and_datasets(recipe.singletask_dataset, dataset_path=result.paths["npz"])
    assert len(train["observations"]) == 2 * (ogbench_gen.EPISODE_STEPS - 1)
    copy = minari.load_dataset(result.stats["minari_id"])
    assert copy.recover_environment(eval_env=True).spec.id == recipe.singletask_env
    if name == "ogbench-cube-single-play":
        assert result.stats["expert_reference"]["success_rate"] >= 0.8
        assert result.stats["ref_min_score"] < result.stats["ref_max_score"]
    else:
        assert "button_states" in np.load(result.paths["npz"]).files
        assert result.stats["expert_reference"] is None  # no scripted single-task expert for scene
