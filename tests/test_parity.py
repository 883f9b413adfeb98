"""The parity harness's own pieces (issue 26): flax <-> torch weight layouts, draw injection, the
comparison and its command line; without jax. The comparison with the authors' code itself needs
their checkouts and `make jax-venv`: those tests skip, naming the command that runs them."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch
from modebench.algorithms.base import Batch, EnvSpec
from modebench.algorithms.drol import DROL, DROLConfig
from modebench.algorithms.fql import FQL, FQLConfig
from modebench.algorithms.nets import MLP, EnsembleMLP

from parity.__main__ import main as parity_main
from parity.convert import flatten, flax_layers, flax_to_torch, torch_to_flax, unflatten
from parity.harness import (
    Draw,
    ScriptedRandom,
    export_flax,
    load_flax,
    relative_difference,
    scripted_torch_draws,
    torch_layers,
    well_conditioned,
)
from parity.methods import METHODS

ROOT = Path(__file__).resolve().parent.parent
JAX_PYTHON = ROOT / ".venv-jax" / "bin" / "python"


def flax_forward(mlp: dict, x: np.ndarray, act, eps: float = 1e-6) -> np.ndarray:
    """What flax's MLP computes (utils/networks.py): Dense -> act -> LayerNorm(scale, bias) per
    hidden layer, x @ kernel + bias; vmapped (ensemble) when the kernels have a member axis."""
    layers = flax_layers(mlp)
    dense = [p for _, kind, p in layers if kind == "dense"]
    norms = [p for _, kind, p in layers if kind == "norm"]
    for i, p in enumerate(dense):
        x = np.matmul(x, p["kernel"]) + (p["bias"][:, None, :] if p["kernel"].ndim == 3 else p["bias"])
        if i + 1 < len(dense):
            x = act(x)
            if norms:
                n = norms[i]
                scale, bias = (n["scale"][:, None, :], n["bias"][:, None, :]) if n["scale"].ndim == 2 else (n["scale"], n["bias"])
                x = (x - x.mean(-1, keepdims=True)) / np.sqrt(x.var(-1, keepdims=True) + eps) * scale + bias
    return x


def relu(x):
    return np.maximum(x, 0.0)


def randomised(module: torch.nn.Module) -> torch.nn.Module:
    """Every parameter random (LayerNorm scales and biases too, which start at ones and zeros)."""
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn_like(p) * 0.3)
    return module


def to_flax(module: torch.nn.Module) -> dict:
    names = {"dense": "Dense", "norm": "LayerNorm"}
    counts = {"dense": 0, "norm": 0}
    out = {}
    for kind, ensemble, m in torch_layers(module):
        out[f"{names[kind]}_{counts[kind]}"] = torch_to_flax(kind, {"weight": m.weight.detach().numpy(), "bias": m.bias.detach().numpy()}, ensemble)
        counts[kind] += 1
    return out


@pytest.mark.parametrize("ensemble", [False, True])
def test_torch_to_flax_layout_computes_what_flax_computes_and_converts_back(ensemble):
    torch.manual_seed(0)
    net = (EnsembleMLP(2, 5, (7, 7), 3, "relu", True, "post_act") if ensemble
           else MLP(5, (7, 7), 3, "relu", True, "post_act"))
    randomised(net)
    flax_mlp = to_flax(net)
    assert sorted(flax_mlp) == ["Dense_0", "Dense_1", "Dense_2", "LayerNorm_0", "LayerNorm_1"]
    x = np.random.default_rng(0).standard_normal((4, 5)).astype(np.float32)
    ours = net(torch.as_tensor(x)).detach().numpy()
    theirs = flax_forward(flax_mlp, np.broadcast_to(x, (2, 4, 5)) if ensemble else x, relu)
    np.testing.assert_allclose(ours, theirs, rtol=1e-5, atol=1e-5)
    for (kind, ens, m), (_, fkind, params) in zip(torch_layers(net), flax_layers(flax_mlp)):
        assert kind == fkind and ens == ensemble
        back = flax_to_torch(kind, params, ens)
        np.testing.assert_array_equal(back["weight"], m.weight.detach().numpy())
        np.testing.assert_array_equal(back["bias"], m.bias.detach().numpy())


def test_flax_layers_run_in_numeric_order_dense_before_its_layer_norm():
    mlp = {f"Dense_{i}": {"kernel": np.zeros((1, 1)), "bias": np.zeros(1)} for i in range(12)}
    mlp.update({f"LayerNorm_{i}": {"scale": np.ones(1), "bias": np.zeros(1)} for i in range(11)})
    names = [name for name, _, _ in flax_layers(mlp)]
    assert names[:4] == ["Dense_0", "LayerNorm_0", "Dense_1", "LayerNorm_1"]
    assert names[-3:] == ["Dense_10", "LayerNorm_10", "Dense_11"]
    with pytest.raises(ValueError, match="unexpected flax layer"):
        flax_layers({"Conv_0": {}})


def test_load_and_export_flax_round_trip_through_a_model():
    torch.manual_seed(1)
    source = randomised(EnsembleMLP(2, 4, (6,), 1, "gelu", True, "post_act"))
    flax_mlp = to_flax(source)
    target = EnsembleMLP(2, 4, (6,), 1, "gelu", True, "post_act")
    load_flax(target, flax_mlp)
    for a, b in zip(source.parameters(), target.parameters()):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    exported = export_flax(target, flax_mlp)
    assert flatten(exported).keys() == flatten(flax_mlp).keys()
    for key, value in flatten(flax_mlp).items():
        np.testing.assert_array_equal(flatten(exported)[key], value)
    bad = dict(flax_mlp, Dense_0={"kernel": np.zeros((2, 5, 6)), "bias": np.zeros((2, 6))})
    with pytest.raises(ValueError, match="Dense_0.weight"):
        load_flax(target, bad)


def test_flatten_unflatten_round_trip():
    tree = {"a": {"b": {"c": np.ones(2)}, "d": np.zeros(1)}}
    flat = flatten(tree)
    assert sorted(flat) == ["a/b/c", "a/d"]
    again = unflatten({f"init/{k}": v for k, v in flat.items()}, "init/")
    np.testing.assert_array_equal(again["a"]["b"]["c"], np.ones(2))


def small_batch(b: int = 8, o: int = 3, d: int = 2) -> Batch:
    g = torch.Generator().manual_seed(0)
    return Batch(torch.randn(b, o, generator=g), torch.rand(b, d, generator=g) * 2 - 1, torch.randn(b, generator=g),
                 torch.randn(b, o, generator=g), torch.zeros(b), torch.zeros(b, d))


def fql_draws(b: int, d: int, seed: int = 0) -> dict[str, Draw]:
    rng = np.random.default_rng(seed)
    return {role: Draw(kind, (rng.standard_normal(shape) if kind == "normal" else rng.uniform(size=shape)).astype(np.float32))
            for role, (kind, shape) in METHODS["fql"].draws(b, d).items()}


def test_scripted_draws_reach_fql_losses_in_our_order():
    """FQL's update takes exactly x0, t, z, z' from self.rng; the flow loss is the scripted one."""
    torch.manual_seed(0)
    algo = FQL(FQLConfig(hidden_dims=(8,)), EnvSpec(3, 2, 10, 100))
    batch = small_batch()
    draws = fql_draws(8, 2)
    algo.rng = ScriptedRandom([draws[r] for r in METHODS["fql"].our_order])
    _, metrics = algo.losses(batch, 0)
    algo.rng.done()
    x0, t = torch.as_tensor(draws["x0"].value), torch.as_tensor(draws["t"].value)
    expected = algo.flow_bc_loss(batch.observations, batch.actions, x0, t)
    torch.testing.assert_close(metrics["training/flow_bc_loss"], expected.detach())
    # the same draws in another order is another loss: the injection decides what the update sees
    algo.rng = ScriptedRandom([draws[r] for r in ["z", "t", "x0", "next_z"]])
    _, swapped = algo.losses(batch, 0)
    assert not torch.allclose(swapped["training/flow_bc_loss"], metrics["training/flow_bc_loss"])


def test_scripted_random_refuses_a_wrong_kind_shape_or_count():
    script = ScriptedRandom([Draw("normal", np.zeros((2, 3), np.float32))])
    with pytest.raises(RuntimeError, match="uniform"):
        script.rand(2, 3)
    script = ScriptedRandom([Draw("normal", np.zeros((2, 3), np.float32))])
    with pytest.raises(RuntimeError, match=r"normal\(2, 4\)"):
        script.randn(2, 4)
    with pytest.raises(RuntimeError, match="beyond"):
        ScriptedRandom().randn(1)
    with pytest.raises(RuntimeError, match="not taken"):
        ScriptedRandom([Draw("normal", np.zeros(1, np.float32))]).done()


def test_scripted_torch_draws_drive_act():
    """`act` samples from torch's global generator: inside the context it takes the scripted latent."""
    torch.manual_seed(0)
    fql = FQL(FQLConfig(hidden_dims=(8,)), EnvSpec(3, 2, 10, 100))
    obs, z = torch.randn(5, 3), np.random.default_rng(0).standard_normal((5, 2)).astype(np.float32)
    with scripted_torch_draws(ScriptedRandom([Draw("normal", z)])):
        actions = fql.act(obs, torch.zeros(5), fql.default_knobs()).actions
    torch.testing.assert_close(actions, fql.onestep_actions(obs, torch.as_tensor(z)).clamp(-1, 1))
    assert torch.randn(1).shape == (1,)  # restored
    drol = DROL(DROLConfig(hidden_dims=(8,)), EnvSpec(3, 2, 10, 100))
    g, u = np.ones((5, 2), np.float32), np.full((5, 1), 0.25, np.float32)
    with scripted_torch_draws(ScriptedRandom([Draw("normal", g), Draw("uniform", u)])):
        actions = drol.act(obs, torch.zeros(5), drol.default_knobs()).actions
    radius = np.sqrt(2) * 0.25 ** 0.5  # R u^(1/d) along g / |g|
    torch.testing.assert_close(actions, drol.policy(obs, torch.full((5, 2), radius / np.sqrt(2))))


def test_relative_difference_and_the_conditioning_mask():
    assert relative_difference(np.array([1.0, 2.0]), np.array([1.0, 4.0])) == 0.5
    assert relative_difference(np.array(3.0), np.array(2.0)) == 0.5
    assert relative_difference(np.zeros(2), np.zeros(2)) == 0.0
    where = np.array([True, False])
    assert relative_difference(np.array([1.0, 9.0]), np.array([1.0, 4.0]), where) == 0.0
    grad = np.array([1e-3, 1e-9, -5e-4, 0.0, 1e-6])
    assert well_conditioned(grad).tolist() == [True, False, True, False, False]


def test_command_line_errors_are_one_line_exit_2(capsys, tmp_path):
    assert parity_main([]) == 2
    assert "pass --fql-repo" in capsys.readouterr().err
    assert parity_main(["--fql-repo", str(tmp_path), "--jax-python", str(tmp_path / "none")]) == 2
    assert "make jax-venv" in capsys.readouterr().err
    if not torch.cuda.is_available():
        assert parity_main(["--fql-repo", str(tmp_path), "--device", "cuda"]) == 2
        assert "no CUDA device" in capsys.readouterr().err


@pytest.mark.parametrize("method", sorted(METHODS))
def test_one_update_matches_the_authors_code(method):
    """Needs the authors' checkout and the reference interpreter; a few updates (make parity runs 100)."""
    from parity.harness import check

    spec = METHODS[method]
    variable = f"PARITY_{method.upper()}_REPO"
    repo = os.environ.get(variable)
    if not repo or not (spec.torch_reference or JAX_PYTHON.exists()):
        venv = "" if spec.torch_reference else "make jax-venv && "
        pytest.skip(f"needs a checkout of {spec.owner_repo}{'' if spec.torch_reference else ' and the reference venv'}: "
                    f"{venv}{variable}=/path/to/checkout .venv/bin/python -m pytest tests/test_parity.py")
    result = check(spec, str(JAX_PYTHON), repo, updates=2)
    assert result.holds(), result.comparison.worst()


def test_torch_reference_nets_stack_into_our_ensemble():
    """LOM's code keeps K separate Q nets (nn.Sequential): exported in the flax layout and stacked,
    they load into our ensemble, member k computing what net k computes."""
    from parity.reference_lom import mlp, stacked

    torch.manual_seed(2)
    nets = [torch.nn.Sequential(torch.nn.Linear(5, 7), torch.nn.ReLU(), torch.nn.Linear(7, 7), torch.nn.ReLU(),
                                torch.nn.Linear(7, 1)) for _ in range(3)]
    ours = EnsembleMLP(3, 5, (7, 7), 1, "relu")
    load_flax(ours, stacked([mlp(net) for net in nets]))
    x = torch.randn(4, 5)
    out = ours(x)
    for k, net in enumerate(nets):
        torch.testing.assert_close(out[k], net(x))
    exported = mlp(nets[0])
    with torch.no_grad():
        nets[0][0].weight.add_(1.0)  # an export is a copy, not a view of the live weights
    assert not np.allclose(exported["Dense_0"]["kernel"], nets[0][0].weight.detach().numpy().T)
