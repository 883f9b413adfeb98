"""Seed-batched training (algorithms/seeds.py): seed s trained in a batch of S seeds matches the
same seed trained alone, update for update, for every registered method and preset."""

from __future__ import annotations

import pytest
import torch
from modebench.algorithms.base import EnvSpec
from modebench.algorithms.config import ConfigError
from modebench.algorithms.registry import METHODS
from modebench.algorithms.seeds import stack_algorithms, unstack_state
from modebench.benchmarks.data.dataset import DataConfig, Normalizer
from modebench.benchmarks.data.replay import DeviceReplay, SeedReplays
from modebench.benchmarks.run.checkpoints import load_checkpoint
from modebench.benchmarks.run.spec import resolve_method, resolve_run
from modebench.benchmarks.run.train import seed_everything, train, train_seeds
from modebench.benchmarks.tasks.suites import get_task

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


def _specs(method: str, seeds, steps: int = 300):
    return [resolve_run(method, "toy/four-goal", seed=s, steps=steps, eval_every=150, eval_episodes=20) for s in seeds]


def _weights(checkpoint) -> dict[str, torch.Tensor]:
    return load_checkpoint(checkpoint)["model"]


def _assert_same_weights(ours, theirs, what: str) -> None:
    assert ours.keys() == theirs.keys()
    for key in ours:
        torch.testing.assert_close(ours[key], theirs[key], rtol=1e-4, atol=1e-5, msg=lambda m, k=key: f"{what} {k}: {m}")


def test_train_seeds_gives_each_seed_its_own_run_as_if_trained_alone(tmp_path):
    specs = _specs("iql", (0, 1, 2))
    batched = train_seeds(specs, out=tmp_path / "batched")
    alone = [train(spec, out=tmp_path / "alone") for spec in specs]
    for spec, ours, theirs in zip(specs, batched, alone):
        assert ours.run_dir.name == theirs.run_dir.name == spec.run_id
        assert [r["step"] for r in ours.records] == [r["step"] for r in theirs.records] == [150, 300]
        for mine, other in zip(ours.records, theirs.records):
            assert mine["seed"] == spec.seed
            assert mine["return_mean"] == pytest.approx(other["return_mean"], rel=1e-4, abs=1e-4)
            assert mine["training_metrics"]["training/q_loss"] == pytest.approx(other["training_metrics"]["training/q_loss"], rel=1e-3)
        _assert_same_weights(_weights(ours.checkpoint), _weights(theirs.checkpoint), f"seed {spec.seed}")
        assert (ours.run_dir / "metrics.jsonl").exists()
    # the three seeds are different runs
    assert not torch.equal(_weights(batched[0].checkpoint)["actor.log_std"], _weights(batched[1].checkpoint)["actor.log_std"])


class _Interrupt(Exception):
    pass


def test_an_interrupted_batch_resumes_each_seed_from_its_own_checkpoint(tmp_path):
    """Interrupted after seeds 0 and 1 stored their step-150 record (and checkpoint) but before
    seed 2 did: the rerun trains seed 2 from 0 and seeds 0-1 from 150, and every seed ends with
    the weights and records of an uninterrupted batch (resume is exact: optimizer, scheduler,
    minibatch and update generators per seed: FQL draws noise in every update)."""
    specs = _specs("fql", (0, 1, 2))
    reference = train_seeds(specs, out=tmp_path / "reference")

    def interrupt(record):
        if record["seed"] == 1 and record["step"] == 150:
            raise _Interrupt

    with pytest.raises(_Interrupt):
        train_seeds(specs, out=tmp_path / "resumed", on_evaluation=interrupt)
    stored = {spec.seed: (tmp_path / "resumed" / "runs" / spec.run_id / "checkpoint.pt").exists() for spec in specs}
    assert stored == {0: True, 1: True, 2: False}
    resumed = train_seeds(specs, out=tmp_path / "resumed")
    for spec, ours, theirs in zip(specs, resumed, reference):
        assert [r["step"] for r in ours.records] == ([150, 300] if spec.seed == 2 else [300])
        assert ours.records[-1]["return_mean"] == pytest.approx(theirs.records[-1]["return_mean"], rel=1e-4, abs=1e-4)
        _assert_same_weights(_weights(ours.checkpoint), _weights(theirs.checkpoint), f"seed {spec.seed}")
    # a finished batch is read back, not trained again
    again = train_seeds(specs, out=tmp_path / "resumed")
    assert [r.records[-1]["step"] for r in again] == [300, 300, 300]


def test_train_seeds_refuses_specs_of_different_runs():
    specs = [resolve_run("bc", "toy/four-goal", seed=0, steps=300), resolve_run("bc", "toy/four-goal", seed=1, steps=400)]
    with pytest.raises(ConfigError, match="differ in more than their seed"):
        train_seeds(specs)
    with pytest.raises(ConfigError, match="given twice"):
        train_seeds([specs[0], specs[0]])


def test_a_diverged_seed_leaves_the_batch_and_the_others_train_on(tmp_path):
    """The divergence guard's FloatingPointError for seed 1 at step 150 (raised here from the
    record hook, which runs inside the same logging step) takes seed 1 out; seeds 0 and 2 are
    restacked and end exactly as in a batch where nothing diverged."""
    specs = _specs("iql", (0, 1, 2))
    reference = train_seeds(specs, out=tmp_path / "reference")

    def diverge(record):
        if record["seed"] == 1 and record["step"] == 150:
            raise FloatingPointError("seed 1: non-finite training metric (simulated)")

    results = train_seeds(specs, out=tmp_path / "diverged", on_evaluation=diverge)
    assert isinstance(results[1], FloatingPointError)
    for index in (0, 2):
        assert [r["step"] for r in results[index].records] == [150, 300]
        _assert_same_weights(_weights(results[index].checkpoint), _weights(reference[index].checkpoint), f"seed {index}")
    with pytest.raises(FloatingPointError):  # one run alone still raises
        train(specs[1], out=tmp_path / "alone", on_evaluation=diverge)


def test_modebench_train_seeds_trains_one_run_folder_per_seed(tmp_path, capsys):
    from modebench.cli import main

    status = main(["train", "--algo", "bc", "--task", "toy/four-goal", "--seeds", "3,5", "--steps", "40",
                   "--eval-episodes", "5", "--no-progress", "--results", str(tmp_path)])
    out = capsys.readouterr().out
    assert status == 0, out
    assert "seed 3:" in out and "seed 5:" in out
    for seed in (3, 5):
        run_id = resolve_run("bc", "toy/four-goal", seed=seed, steps=40, eval_episodes=5).run_id  # episodes name the run
        (record,) = [p for p in (tmp_path / "runs" / run_id / "records").glob("*.json")]
        assert f'"seed": {seed}' in record.read_text()
    for bad, why in (("0,0", "distinct"), ("0,x", "integer")):
        assert main(["train", "--algo", "bc", "--task", "toy/four-goal", "--seeds", bad, "--results", str(tmp_path)]) == 2
        assert why in capsys.readouterr().err


def test_seeds_that_cannot_be_stacked_train_one_after_another(tmp_path, capsys):
    """IQL's actor dropout (published Adroit/Kitchen settings) draws its masks from torch's global
    generator, which has no per-seed stream: train_seeds says so in one line and trains each seed
    alone, with the numbers `train` gives it."""
    specs = [resolve_run("iql", "toy/four-goal", seed=s, steps=60, eval_every=60, eval_episodes=5,
                         config={"actor_dropout": 0.1}) for s in (0, 1)]
    together = train_seeds(specs, out=tmp_path / "together")
    assert "seeds trained one after another" in capsys.readouterr().out + capsys.readouterr().err
    for spec, result in zip(specs, together):
        alone = train(spec, out=tmp_path / "alone")
        _assert_same_weights(_weights(result.checkpoint), _weights(alone.checkpoint), f"seed {spec.seed}")
