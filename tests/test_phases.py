"""Phases a method fixes in updates never silently exceed the run (issue 15, item 5).

The rule, for every method: a method declares its phases (`Algorithm.phases(config)`); the run
resolver (benchmarks/run/spec.py resolve_run, used by train, bench and the sweeps) calls
`check_phases`, which refuses at start, in one line naming the phase, its field and the fix, a run
whose updates do not cover them. Phases never scale with the run. What this guards against:
`modebench train --algo lom --dataset NEW --steps 10000` spent all its updates on the 200k-update
MDN fit and scored below random without a word.
"""

from __future__ import annotations

import json

import pytest
import torch
from helpers import random_batch
from modebench.algorithms.base import EnvSpec, Phase, check_phases
from modebench.algorithms.config import ConfigError, from_dict
from modebench.algorithms.gem import GEM, GEMConfig
from modebench.algorithms.lom import LOM, LOMConfig
from modebench.algorithms.registry import METHODS, get_method
from modebench.benchmarks.run.spec import resolve_run

from modebench.cli import main

NEW_DATASET_STEPS = 10_000  # what a new user runs on a new dataset


def trained_parameters(algo, steps: list[int]) -> set[str]:
    """Names of the parameters that get a nonzero gradient at any of `steps` (one batch each)."""
    names = set()
    algo.train()
    for step in steps:
        algo.zero_grad(set_to_none=True)
        loss, _ = algo.losses(random_batch(32, algo.spec.obs_dim, algo.spec.act_dim, seed=step), step)
        loss.backward()
        names |= {n for n, p in algo.named_parameters() if p.grad is not None and p.grad.abs().sum() > 0}
    return names


def network(parameter: str) -> str:
    """The network a parameter belongs to: a top-level module, or a critic's Q or V."""
    parts = parameter.split(".")
    return ".".join(parts[:2]) if parts[0] == "critic" else parts[0]


def check_run_trains_every_network(name: str, config, total_steps: int) -> None:
    """Either the run is refused by check_phases, or every network of the method gets a gradient
    at step 0 or at the run's last step (LOM's policy only trains after the MDN). Per network, not
    per parameter: lom-code's MSE policy loss never reads its actor's log-std, by design."""
    cls = get_method(name).load()
    try:
        check_phases(cls, config, total_steps, name)
    except ConfigError as err:
        message = str(err)
        assert "\n" not in message and "--set " in message and name in message
        assert any(phase.field in message for phase in cls.phases(config))
        return
    torch.manual_seed(0)
    algo = cls(config, EnvSpec(obs_dim=3, act_dim=2, horizon=10, total_steps=total_steps))
    trainable = {network(n) for n, p in algo.named_parameters() if p.requires_grad}
    missing = trainable - {network(n) for n in trained_parameters(algo, [0, total_steps - 1])}
    assert not missing, f"{name} in a {total_steps}-update run never trains {sorted(missing)[:5]}"


@pytest.mark.parametrize("name", sorted(METHODS))
def test_every_method_on_a_new_dataset_trains_everything_or_is_refused(name):
    """Paper defaults (no suite file: a new dataset), 10k updates."""
    cls = get_method(name).load()
    config = from_dict(cls.config_class, get_method(name).config)
    check_run_trains_every_network(name, config, NEW_DATASET_STEPS)


@pytest.mark.parametrize("name", sorted(METHODS))
def test_every_method_on_the_toy_bench_trains_everything(name):
    """`make bench SUITE=toy`: every method runs (nothing refused) and trains every network."""
    spec = resolve_run(name, "toy/four-goal")
    check_run_trains_every_network(name, spec.config, spec.steps)


def test_new_dataset_refusals_are_lom_and_gem_only():
    refused = []
    for name, entry in METHODS.items():
        cls = entry.load()
        try:
            check_phases(cls, from_dict(cls.config_class, entry.config), NEW_DATASET_STEPS, name)
        except ConfigError:
            refused.append(entry.target)
    assert set(refused) == {"modebench.algorithms.lom:LOM", "modebench.algorithms.gem:GEM"}


def test_boundaries_and_message():
    blocking = LOMConfig(mdn_steps=100)
    check_phases(LOM, blocking, 101)  # one update left for Q, hyper-Q and the policy
    with pytest.raises(ConfigError) as err:
        check_phases(LOM, blocking, 100, "lom-code")
    assert str(err.value) == (
        "lom-code: the MDN fit phase (mdn_steps=100) must end before the run does, or the rest of the method "
        "never trains (100 updates): pass --set mdn_steps=N with N <= 99, or --steps 101 or more"
    )
    alongside = GEMConfig(gmm_pretrain_steps=100)
    check_phases(GEM, alongside, 100)  # the behaviour GMM fits for the whole run, then is frozen
    with pytest.raises(ConfigError, match=r"gmm_pretrain_steps=N with N <= 99, or --steps 100 or more"):
        check_phases(GEM, alongside, 99)
    check_phases(GEM, GEMConfig(gmm_pretrain_steps=100, gmm_freeze_after_pretrain=False), 5)  # no phase then
    check_phases(LOM, LOMConfig(mdn_steps=0), 1)


def test_declared_phases_are_what_the_losses_do():
    """LOM's MDN is the only thing that trains during its phase (a blocking phase); GEM's behaviour
    GMM trains alongside the critic and actor and stops at the phase's end."""
    assert LOM.phases(LOMConfig(mdn_steps=7)) == [Phase("MDN fit", "mdn_steps", 7, blocking=True)]
    torch.manual_seed(0)
    lom = LOM(LOMConfig(mdn_steps=7, hidden_dims=(8,), mdn_hidden_dims=(8,)), EnvSpec(3, 2, 10, 20))
    during = trained_parameters(lom, [6])
    assert during and all(n.startswith("mdn.") for n in during)
    after = trained_parameters(lom, [7])
    assert not any(n.startswith("mdn.") for n in after) and any(n.startswith("actor.") for n in after)
    (phase,) = GEM.phases(GEMConfig(gmm_pretrain_steps=7))
    assert not phase.blocking
    gem = GEM(GEMConfig(gmm_pretrain_steps=7, hidden_dims=(8,)), EnvSpec(3, 2, 10, 20))
    assert any(n.startswith("behavior.") for n in trained_parameters(gem, [6]))
    assert not any(n.startswith("behavior.") for n in trained_parameters(gem, [7]))
    assert any(n.startswith("actor.") for n in trained_parameters(gem, [0]))


def test_resolve_run_refuses_before_anything_runs():
    with pytest.raises(ConfigError, match="mdn_steps=200000"):
        resolve_run("lom", "toy/four-goal", steps=NEW_DATASET_STEPS, config={"mdn_steps": 200_000})
    with pytest.raises(ConfigError, match="gmm_pretrain_steps=100000"):
        resolve_run("gem", "toy/four-goal", steps=50, config={"gmm_freeze_after_pretrain": True, "gmm_pretrain_steps": 100_000})


@pytest.fixture
def new_dataset(tmp_path, monkeypatch):
    from test_downloads import make_minari_dataset

    monkeypatch.setenv("MINARI_DATASETS_PATH", str(tmp_path / "minari"))
    make_minari_dataset("mbtest/pendulum/random-v0")
    return "mbtest/pendulum/random-v0"


def test_ten_thousand_update_lom_on_a_new_dataset_is_refused_in_one_line(new_dataset, tmp_path, capsys):
    out = tmp_path / "results"
    code = main(["train", "--algo", "lom", "--dataset", new_dataset, "--steps", "10000", "--out", str(out), "--no-progress"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and "Traceback" not in err
    assert "MDN fit phase (mdn_steps=200000)" in err and "--set mdn_steps=N with N <= 9999" in err
    assert not out.exists()  # refused at start: no run folder, no update


def test_lom_on_a_new_dataset_trains_the_policy_once_the_mdn_fits(new_dataset, tmp_path, capsys):
    """The fix the message names: a shorter MDN phase; the policy then trains (tiny nets, 30 updates)."""
    out = tmp_path / "results"
    code = main(["train", "--algo", "lom", "--dataset", new_dataset, "--steps", "30", "--out", str(out),
                 "--set", "mdn_steps=10", "--set", "hidden_dims=16,16", "--set", "mdn_hidden_dims=16,16",
                 "--eval-episodes", "1", "--no-progress"])
    assert code == 0, capsys.readouterr().err
    (metrics_file,) = out.glob("runs/*/metrics.jsonl")
    keys = set().union(*(json.loads(line) for line in metrics_file.read_text().splitlines()))
    assert "training/actor_loss" in keys and "training/mdn_nll" in keys
