"""Seed-batched training (algorithms/seeds.py): seed s trained in a batch of S seeds matches the
same seed trained alone, update for update, for every registered method and preset."""

from __future__ import annotations

import pytest
import torch

from algorithms.base import EnvSpec
from algorithms.registry import METHODS
from algorithms.seeds import stack_algorithms, unstack_state
from benchmarks.data.dataset import DataConfig, Normalizer
from benchmarks.data.replay import DeviceReplay, SeedReplays
from benchmarks.run.spec import resolve_method
from benchmarks.run.train import seed_everything
from benchmarks.tasks.suites import get_task

STEPS = 200
SEEDS = (0, 1, 2)
# Small networks and batches keep 200 updates x 4 trainings per method quick; every config that
# has these fields takes them. The phases end inside the 200 updates, so both sides of LOM's MDN
# phase and GEM's behaviour-GMM freeze are compared.
SMALL = {"hidden_dims": (32, 32), "critic_hidden_dims": (32, 32), "actor_hidden_dims": (32, 32),
         "flow_hidden_dims": (32, 32), "mdn_hidden_dims": (32, 32), "batch_size": 32,
         "mdn_steps": 100, "gmm_pretrain_steps": 100}


def _setup(name: str):
    task = get_task("toy/four-goal")
    method = resolve_method(name, task)
    overrides = {k: v for k, v in SMALL.items() if hasattr(method.config, k)}
    method = resolve_method(name, task, overrides)
    dataset = task.load_dataset()
    normalizer = Normalizer.fit(dataset.observations, True)
    return method, dataset, normalizer


def _build(method, dataset, normalizer, seed: int):
    seed_everything(seed)
    replay = DeviceReplay(dataset, DataConfig(), normalizer, torch.device("cpu"), seed)
    algorithm = method.cls(method.config, EnvSpec(dataset.obs_dim, dataset.act_dim, 50, STEPS), "cpu")
    # its generator, taken now from the stream this seed left (as train.py's prepare does): taken
    # lazily at stacking time, every seed would copy the last-built seed's global stream
    algorithm.rng  # noqa: B018
    return algorithm, replay


@pytest.mark.parametrize("name", sorted(METHODS))
def test_seed_in_a_batch_matches_the_seed_alone(name):
    method, dataset, normalizer = _setup(name)
    alone = {}
    for seed in SEEDS:
        algorithm, replay = _build(method, dataset, normalizer, seed)
        algorithm.train()
        for step in range(STEPS):
            algorithm.update(replay.sample(method.config.batch_size), step)
        alone[seed] = algorithm.state_dict()
    built = [_build(method, dataset, normalizer, seed) for seed in SEEDS]
    batched = stack_algorithms([a for a, _ in built])
    replays = SeedReplays([r for _, r in built])
    batched.train()
    for step in range(STEPS):
        metrics = batched.update(replays.sample(method.config.batch_size), step)
    assert all(v.shape == (len(SEEDS),) for v in metrics.values()), {k: v.shape for k, v in metrics.items()}
    state = batched.state_dict()
    for index, seed in enumerate(SEEDS):
        ours = unstack_state(state, index)
        assert ours.keys() == alone[seed].keys()
        for key, value in alone[seed].items():
            torch.testing.assert_close(ours[key], value, rtol=1e-4, atol=1e-5, msg=lambda m, k=key, s=seed: f"{name} seed {s} {k}: {m}")
    # the seeds really differ (each has its own initialisation and draws)
    first = next(k for k, v in alone[0].items() if v.is_floating_point())
    assert not torch.allclose(alone[0][first], alone[1][first])
