"""Every registered method (presets included) passes the same plugin contract:
build from its config, update -> finite scalar metrics, act -> actions in the box (+ audits),
propose -> [B, n, d], save -> load (weights_only) -> identical actions."""

import dataclasses
import io

import pytest
import torch
from helpers import random_batch

from algorithms.base import ActOutput, EnvSpec
from algorithms.config import from_dict
from algorithms.registry import METHODS

OBS, ACT, B = 3, 2, 16


def small_config(cls, preset: dict):
    """The method's defaults and preset with narrow nets and small batches (the contract, not the scores)."""
    values = dict(preset)
    for f in dataclasses.fields(cls.config_class):
        if f.name.endswith("hidden_dims") and f.name not in preset:
            values[f.name] = (16, 16)
        if f.name == "batch_size":
            values[f.name] = B
    return from_dict(cls.config_class, values)


@pytest.mark.parametrize("name", sorted(METHODS))
def test_plugin_contract(name):
    entry = METHODS[name]
    cls = entry.load()
    torch.manual_seed(0)
    spec = EnvSpec(OBS, ACT, horizon=5, total_steps=40)
    algo = cls(small_config(cls, entry.config), spec, "cpu")
    knobs = from_dict(cls.knobs_class, entry.knobs)
    for step in list(range(6)) + [10**9, 10**9 + 1]:  # and past any pretraining phase (LOM's MDN, GEM's GMM)
        metrics = algo.update(random_batch(B, OBS, ACT, seed=step), step)
        assert metrics, f"{name}: update returned no metrics"
        for key, value in metrics.items():
            assert key.startswith("training/"), key
            assert isinstance(value, torch.Tensor) and value.numel() == 1 and not value.requires_grad, key
            assert torch.isfinite(value), f"{name}: {key} = {value}"
    obs = torch.randn(7, OBS)
    t = torch.arange(7) % spec.horizon
    torch.manual_seed(1)
    out = algo.act(obs, t, knobs)
    assert isinstance(out, ActOutput)
    assert out.actions.shape == (7, ACT) and out.actions.abs().max() <= 1.0 + 1e-6
    for key, audit in out.audits.items():
        assert audit.shape == (7,), key
    if cls.can_propose:
        proposals = algo.propose(obs, 5)
        assert proposals.shape == (7, 5, ACT) and proposals.abs().max() <= 1.0 + 1e-6
    buffer = io.BytesIO()
    torch.save(algo.state_dict(), buffer)
    buffer.seek(0)
    state = torch.load(buffer, weights_only=True)
    torch.manual_seed(123)
    fresh = cls(small_config(cls, entry.config), spec, "cpu")
    fresh.load_state_dict(state)
    algo.eval(), fresh.eval()
    torch.manual_seed(2)
    a = algo.act(obs, t, knobs).actions
    torch.manual_seed(2)
    b = fresh.act(obs, t, knobs).actions
    assert torch.equal(a, b), f"{name}: a reloaded checkpoint acts differently"


@pytest.mark.parametrize("name", sorted(METHODS))
def test_config_rejects_unknown_keys(name):
    from algorithms.config import ConfigError

    cls = METHODS[name].load()
    with pytest.raises(ConfigError, match="unknown"):
        from_dict(cls.config_class, {"no_such_field": 1})
    with pytest.raises(ConfigError, match="unknown"):
        from_dict(cls.knobs_class, {"no_such_knob": 1})
