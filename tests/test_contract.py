"""Every registered method (presets included) passes the same plugin contract:
build from its config, update -> finite scalar metrics, act -> actions in the box (+ audits),
propose -> [B, n, d], save -> load (weights_only) -> identical actions."""

import dataclasses
import io
import typing

import pytest
import torch
from helpers import random_batch
from modebench.algorithms.base import ActOutput, EnvSpec
from modebench.algorithms.config import from_dict
from modebench.algorithms.registry import METHODS

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
    if cls.can_select:  # scores any method's candidates (benchmarks/run/compose.py): its own here
        candidates = algo.selection_candidates(algo, obs, t, knobs, knobs)
        assert candidates.dim() == 3 and candidates.shape[0] == 7 and candidates.shape[2] == ACT
        picked = algo.select(obs, t, candidates, knobs).actions
        assert picked.shape == (7, ACT) and ((candidates - picked.unsqueeze(1)).abs().sum(-1) < 1e-6).any(-1).all()
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
    from modebench.algorithms.config import ConfigError

    cls = METHODS[name].load()
    with pytest.raises(ConfigError, match="unknown"):
        from_dict(cls.config_class, {"no_such_field": 1})
    with pytest.raises(ConfigError, match="unknown"):
        from_dict(cls.knobs_class, {"no_such_knob": 1})


def _config_classes():
    classes = {}
    for entry in METHODS.values():
        cls = entry.load()
        classes[cls.config_class.__name__] = cls.config_class
        classes[cls.knobs_class.__name__] = cls.knobs_class
    return [classes[name] for name in sorted(classes)]


def _violation(f, hint):
    """A value the field's declaration refuses (None when any value of its type goes)."""
    from modebench.algorithms.config import field_choices

    if field_choices(f, hint) is not None:
        return "no-such-choice"
    bounds = f.metadata.get("bounds", {})
    if "ge" in bounds:
        bad = bounds["ge"] - 1
    elif "gt" in bounds:
        bad = bounds["gt"]
    elif "le" in bounds:
        bad = bounds["le"] + 1
    else:
        return None
    return (bad,) if typing.get_origin(hint) is tuple else bad


@pytest.mark.parametrize("cls", _config_classes(), ids=lambda c: c.__name__)
def test_every_field_declares_its_help_and_the_one_checker_enforces_its_values(cls):
    from modebench.algorithms.config import ConfigError

    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        help_text = f.metadata.get("help", "")
        assert help_text and "\n" not in help_text, f"{cls.__name__}.{f.name}: no one-line help"
        bad = _violation(f, hints[f.name])
        if bad is None:
            continue
        with pytest.raises(ConfigError, match=rf"^{f.name}( \(each\))? must be "):
            from_dict(cls, {f.name: bad})
        with pytest.raises(ConfigError, match=rf"^{f.name}"):  # also when built directly, not only when loaded
            cls(**{f.name: bad})


def test_the_checker_refuses_non_integers_and_non_finite_numbers():
    from modebench.algorithms.config import ConfigError
    from modebench.algorithms.gem import GEMConfig, GEMKnobs

    with pytest.raises(ConfigError, match=r"^N must be an integer, got 2.5"):
        GEMKnobs(N=2.5)
    with pytest.raises(ConfigError, match=r"^lr must be a finite number"):
        GEMConfig(lr=float("inf"))
    with pytest.raises(ConfigError, match=r"^hidden_dims must be a non-empty list"):
        GEMConfig(hidden_dims=())
    with pytest.raises(ConfigError, match=r"^N must be >= 1 when anchor='off'"):  # a rule across fields: check()
        GEMKnobs(N=0, anchor="off")


def test_methods_command_prints_each_fields_help_default_and_source(capsys):
    from modebench.cli import main

    assert main(["methods", "gem-no-lcb"]) == 0
    out = capsys.readouterr().out
    assert "  lcb_lambda = 0.0  [preset gem-no-lcb]  lambda, pessimism of LCB = mean - lambda std (Eq. 3)" in out
    assert "  expectile = 0.7  [default]  tau of the expectile value loss (Eq. 65)" in out and "(in (0.0, 1.0))" in out
    assert "anchor = mode  [default]" in out and "(one of ['mode', 'off', 'bary'])" in out


def test_the_registry_is_built_from_the_methods_file():
    """Every method and preset of algorithms/methods.yaml is registered, presets after their method."""
    import yaml
    from modebench.algorithms.registry import METHODS_FILE, base_method

    declared = yaml.safe_load(METHODS_FILE.read_text())
    expected = [n for name, spec in declared.items() for n in [name, *(spec.get("presets") or {})]]
    assert list(METHODS) == expected
    for name, spec in declared.items():
        assert METHODS[name].is_base and METHODS[name].target == spec["class"]
        for preset in spec.get("presets") or {}:
            assert base_method(preset) == name and METHODS[preset].target == spec["class"]


@pytest.mark.parametrize("text, message", [
    ("bc: {class: 'm:BC', description: d, display: BC, color: '#000', policy_class: gaussian, colour: red}\n",
     r"methods.yaml: method 'bc': unknown key\(s\) \['colour'\]"),
    ("bc: {class: 'm:BC', description: d, display: BC, policy_class: gaussian}\n", r"method 'bc': missing key\(s\) \['color'\]"),
    ("bc: {class: m.BC, description: d, display: BC, color: '#000', policy_class: gaussian}\n", r"must be module:Class"),
    ("bc: {class: 'm:BC', description: d, display: BC, color: '#000', policy_class: gaussian, presets: {bc: {}}}\n",
     r"preset 'bc' of 'bc': missing key"),
    (("bc: {class: 'm:BC', description: d, display: BC, color: '#000', policy_class: gaussian,\n"
     "     presets: {bc: {description: d, display: B, color: '#111'}}}\n"), r"method 'bc' is declared twice"),
    (("bc: {class: 'm:BC', description: d, display: BC, color: '#000', policy_class: gaussian,\n"
     "     presets: {bc-x: {description: d, display: B, color: '#111', knob: {}}}}\n"), r"preset 'bc-x' of 'bc': unknown key"),
])
def test_a_malformed_methods_file_is_one_line_naming_the_entry(tmp_path, text, message):
    from modebench.algorithms.config import ConfigError
    from modebench.algorithms.registry import load_methods

    path = tmp_path / "methods.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=message) as err:
        load_methods(path)
    assert "\n" not in str(err.value)
