"""Phases a method fixes in updates never silently exceed the run (issue 15, item 5), and a fit
phase that ends before its loss levelled off says so (issue 29).

The rule, for every method: a method declares its phases (`Algorithm.phases(config)`); the run
resolver (benchmarks/run/spec.py resolve_run, used by train, bench and the sweeps) calls
`check_phases`, which refuses at start, in one line naming the phase, its field and the fix, a run
whose updates do not cover them. Phases never scale with the run. What this guards against:
`modebench train --algo lom --dataset NEW --steps 10000` spent all its updates on the 200k-update
MDN fit and scored below random without a word; and a GEM run whose behaviour GMM was frozen
under-fit (`--set gmm_pretrain_steps=1000` in a 10000-update run) scored 23 instead of 82, with
nothing in its output or records to say why.
"""

from __future__ import annotations

import json
import math

import pytest
import torch
from helpers import random_batch, train_on_toy
from modebench.algorithms.base import EnvSpec
from modebench.algorithms.config import ConfigError, from_dict
from modebench.algorithms.gem import GEM, GEMConfig
from modebench.algorithms.lom import LOM, LOMConfig
from modebench.algorithms.phases import (
    LEVELLED_NATS,
    Phase,
    PublishedLength,
    check_phases,
    recommended_steps,
    summarise_curve,
)
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
        "never trains (100 updates): use --set mdn_steps=20 (the authors' code fits it for 200000 of 1000000 updates, "
        "20% of the run and 80% for the rest of the method: the same share of 100); any N <= 99 is accepted, "
        "or --steps 101 or more"
    )
    alongside = GEMConfig(gmm_pretrain_steps=100)
    check_phases(GEM, alongside, 100)  # the behaviour GMM fits for the whole run, then is frozen
    with pytest.raises(ConfigError, match=r"any N <= 99 is accepted, or --steps 100 or more"):
        check_phases(GEM, alongside, 99)
    check_phases(GEM, GEMConfig(gmm_pretrain_steps=100, gmm_freeze_after_pretrain=False), 5)  # no phase then
    check_phases(LOM, LOMConfig(mdn_steps=0), 1)


def test_refusals_recommend_a_length_with_its_reason():
    """Issue 29's run: GEM on a new dataset at 10000 updates. The recommendation is the run's
    length (the fit runs beside the method; no length is published), not the bound's small end."""
    with pytest.raises(ConfigError) as err:
        check_phases(GEM, GEMConfig(), NEW_DATASET_STEPS)
    message = str(err.value)
    assert "use --set gmm_pretrain_steps=10000 or --set gmm_freeze_after_pretrain=false (no length is published" in message
    with pytest.raises(ConfigError) as err:
        check_phases(LOM, LOMConfig(), NEW_DATASET_STEPS)
    assert "use --set mdn_steps=2000 (the authors' code fits it for 200000 of 1000000 updates" in str(err.value)


def test_recommended_length_rule():
    published = PublishedLength(200_000, 1_000_000, "a paper")
    blocking = Phase("fit", "n", 300_000, blocking=True, published=published)
    assert recommended_steps(blocking, 10_000) == 2000  # the published share of the run
    assert recommended_steps(blocking, 4_000_000) == 200_000  # capped by the published length
    assert recommended_steps(blocking, 2) == 1  # the rest of the method keeps an update
    assert recommended_steps(Phase("fit", "n", 300_000, blocking=True), 10_000) == 5000  # unpublished: half
    beside = Phase("fit", "n", 300_000, blocking=False, published=published)
    assert recommended_steps(beside, 10_000) == 10_000  # the fit needs its updates, not a share
    assert recommended_steps(beside, 4_000_000) == 200_000
    assert recommended_steps(Phase("fit", "n", 300_000, blocking=False), 10_000) == 10_000


# --------------------------------------------------------------------------- the levelled-off rule

PHASE = Phase("fit", "n", 1000, blocking=False, loss="training/nll")
ACT_DIM = 2


def exponential(steps: int, tau: float, b: float = 2.0, a: float = -1.0) -> list[float]:
    return [a + b * math.exp(-t / tau) for t in range(steps)]


def step_at_end(gain: float) -> list[float]:
    """A curve whose final rate, run as long again, gains exactly `gain` nats: 0 up to the last
    window (a quarter, 250 of 1000 updates), then -gain / 4 (rate = (gain / 4) / 250 per update)."""
    return [0.0] * 750 + [-gain / 4] * 250


def test_levelled_off_rule_on_both_sides_of_its_threshold():
    limit = LEVELLED_NATS * ACT_DIM
    assert summarise_curve(PHASE, step_at_end(limit * 0.9), ACT_DIM).converged
    assert not summarise_curve(PHASE, step_at_end(limit * 1.1), ACT_DIM).converged
    # an exponential approach passes after ~5.5 time constants, not after 3
    assert summarise_curve(PHASE, exponential(1000, tau=1000 / 6), ACT_DIM).converged
    assert not summarise_curve(PHASE, exponential(1000, tau=1000 / 3), ACT_DIM).converged
    # a steady decline never levels off, however small its share of an early fall
    early_drop_then_steady = [10.0 * math.exp(-t / 10) - 5e-4 * t for t in range(1000)]
    assert not summarise_curve(PHASE, early_drop_then_steady, ACT_DIM).converged
    # a loss that rose at the end has levelled off
    assert summarise_curve(PHASE, [1.0] * 750 + [1.5] * 250, ACT_DIM).converged
    summary = summarise_curve(PHASE, step_at_end(limit * 1.1), ACT_DIM)
    assert summary.window == 250 and summary.final_nll == pytest.approx(-limit * 1.1 / 4)
    assert summary.slope == pytest.approx(-limit * 1.1 / 4 / 250)
    assert not summarise_curve(Phase("fit", "n", 1, blocking=False), [0.0], ACT_DIM).converged  # too short to tell


def test_the_recorder_sums_what_the_rule_reads(capsys):
    """FitRecorder, fed a curve one update at a time, ends with the summary of the whole curve,
    warns once at the phase's last update, and reports nothing for updates after it."""
    from modebench.algorithms.phases import FitRecorder

    curve = exponential(1000, tau=1000 / 3)
    recorder = FitRecorder([PHASE], "m", 2000, ACT_DIM)
    ended = {}
    for step, value in enumerate(curve + [5.0] * 10):
        ended.update(recorder.observe(step, {"training/nll": torch.tensor(value, dtype=torch.float32)}))
    expected = summarise_curve(PHASE, [float(torch.tensor(v, dtype=torch.float32)) for v in curve], ACT_DIM)
    (summary,) = recorder.summaries(PHASE)
    assert summary.converged is expected.converged is False
    assert summary.final_nll == pytest.approx(expected.final_nll, abs=1e-9)
    assert summary.slope == pytest.approx(expected.slope, abs=1e-12)
    assert float(ended["fit/n/final_nll"]) == pytest.approx(expected.final_nll, rel=1e-6)
    assert float(ended["fit/n/converged"]) == 0.0
    assert capsys.readouterr().err.count("warning:") == 1
    assert recorder.record(999) == [] and recorder.record(1000) == [summary.record()]


# --------------------------------------------------------------------------- a fit phase in a run

FIT_CONFIG = {"hidden_dims": (32, 32), "lr": 1e-2, "batch_size": 128, "gmm_freeze_after_pretrain": True}


def train_gem(tmp_path, pretrain: int, steps: int):
    from modebench.benchmarks.run.train import train

    spec = resolve_run("gem", "toy/four-goal", steps=steps, seed=0, eval_every=steps, eval_episodes=4,
                       config={**FIT_CONFIG, "gmm_pretrain_steps": pretrain}, knobs={"N": 16})
    return train(spec, out=tmp_path)


def test_a_short_fit_on_a_multimodal_task_warns_once_and_marks_its_records(tmp_path, capsys):
    """Four modes, the behaviour GMM frozen after 60 updates: its NLL was still falling."""
    result = train_gem(tmp_path, pretrain=60, steps=100)
    err = capsys.readouterr().err
    warnings = [line for line in err.splitlines() if line.startswith("warning:")]
    assert len(warnings) == 1, err
    assert "gmm_pretrain_steps=60" in warnings[0]
    assert "use --set gmm_pretrain_steps=100 or --set gmm_freeze_after_pretrain=false" in warnings[0]
    (fit,) = result.records[-1]["fit_phases"]
    assert fit["field"] == "gmm_pretrain_steps" and fit["steps"] == 60 and fit["converged"] is False
    assert math.isfinite(fit["final_nll"]) and fit["slope"] < 0 and fit["window"] == 15
    metrics = [json.loads(line) for line in (result.run_dir / "metrics.jsonl").read_text().splitlines()]
    logged = next(m for m in metrics if "fit/gmm_pretrain_steps/final_nll" in m)
    assert logged["fit/gmm_pretrain_steps/converged"] == 0.0
    assert logged["fit/gmm_pretrain_steps/final_nll"] == pytest.approx(fit["final_nll"], rel=1e-5)


def test_a_fit_that_levelled_off_does_not_warn(capsys):
    """The same fit, 1000 updates long, has levelled off: no warning, `converged` in what its
    records carry (`fit_report`, the record field the run above shows)."""
    config = GEMConfig(**{**FIT_CONFIG, "gmm_pretrain_steps": 1000})
    algo = train_on_toy(GEM, config, "four-goal", 1000, size=2000)
    assert "warning:" not in capsys.readouterr().err
    (fit,) = algo.fit_report(1000)["fit_phases"]
    assert fit["converged"] is True and fit["steps"] == 1000
    assert algo.fit_report(999) == {"fit_phases": []}  # a record before the phase ended has none


def test_declared_phases_are_what_the_losses_do():
    """LOM's MDN is the only thing that trains during its phase (a blocking phase); GEM's behaviour
    GMM trains alongside the critic and actor and stops at the phase's end."""
    (mdn,) = LOM.phases(LOMConfig(mdn_steps=7))
    assert (mdn.field, mdn.steps, mdn.blocking, mdn.loss) == ("mdn_steps", 7, True, "training/mdn_nll")
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
    code = main(["train", "--algo", "lom", "--dataset", new_dataset, "--steps", "10000", "--results", str(out), "--no-progress"])
    err = "\n".join(line for line in capsys.readouterr().err.strip().splitlines() if " note: " not in line)
    assert code == 2 and len(err.splitlines()) == 1 and "Traceback" not in err
    assert "MDN fit phase (mdn_steps=200000)" in err and "use --set mdn_steps=2000 (" in err and "any N <= 9999" in err
    assert not out.exists()  # refused at start: no run folder, no update


def test_lom_on_a_new_dataset_trains_the_policy_once_the_mdn_fits(new_dataset, tmp_path, capsys):
    """The fix the message names: a shorter MDN phase; the policy then trains (tiny nets, 30 updates)."""
    out = tmp_path / "results"
    code = main(["train", "--algo", "lom", "--dataset", new_dataset, "--steps", "30", "--results", str(out),
                 "--set", "mdn_steps=10", "--set", "hidden_dims=16,16", "--set", "mdn_hidden_dims=16,16",
                 "--eval-episodes", "1", "--no-progress"])
    assert code == 0, capsys.readouterr().err
    (metrics_file,) = out.glob("runs/*/metrics.jsonl")
    keys = set().union(*(json.loads(line) for line in metrics_file.read_text().splitlines()))
    assert "training/actor_loss" in keys and "training/mdn_nll" in keys
