"""Weights between the authors' flax networks and ours, in numpy only (no jax, no torch needed).

A flax MLP (utils/networks.py in seohongpark/fql and muzhancun/DROL) is a dict
{"Dense_i": {"kernel", "bias"}, "LayerNorm_i": {"scale", "bias"}}; executed in the order
Dense_0, LayerNorm_0, Dense_1, ... (Dense -> act -> LayerNorm per hidden layer). Ours is the
list of its Linear / LayerNorm modules in execution order. One layer converts as:

  flax Dense kernel [in, out]          <-> nn.Linear weight [out, in]  (transposed)
  flax Dense bias [out]                <-> nn.Linear bias [out]
  vmapped (ensemble) kernel [M, in, out] <-> EnsembleLinear weight [M, in, out] (same layout)
  vmapped bias [M, out]                <-> EnsembleLinear bias [M, 1, out]
  LayerNorm scale / bias [w]           <-> nn.LayerNorm weight / bias [w]
  vmapped LayerNorm scale / bias [M, w] <-> EnsembleLayerNorm weight / bias [M, 1, w]

`flax_to_torch` / `torch_to_flax` are that one function pair (tested by round trips and by a numpy
forward pass in tests/test_parity.py); `flax_layers` orders a flax MLP dict; parity/harness.py
walks our modules.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

import numpy as np

# kind of one layer as both sides see it: "dense" / "norm", and whether it is an ensemble's
LAYER_NAME = re.compile(r"^(Dense|LayerNorm)_(\d+)$")


def flax_layers(mlp: Mapping[str, Mapping[str, np.ndarray]]) -> list[tuple[str, str, Mapping[str, np.ndarray]]]:
    """[(name, kind, params)] of a flax MLP dict in execution order (Dense_i before LayerNorm_i;
    numeric order, so Dense_10 follows Dense_9)."""
    layers = []
    for name, params in mlp.items():
        match = LAYER_NAME.match(name)
        if match is None:
            raise ValueError(f"unexpected flax layer {name!r}: expected Dense_i or LayerNorm_i")
        kind = "dense" if match.group(1) == "Dense" else "norm"
        layers.append((int(match.group(2)), kind == "norm", name, kind, params))
    return [(name, kind, params) for _, _, name, kind, params in sorted(layers, key=lambda x: x[:2])]


def flax_to_torch(kind: str, params: Mapping[str, np.ndarray], ensemble: bool) -> dict[str, np.ndarray]:
    """One flax layer's params -> our module's {"weight", "bias"} in our layout."""
    if kind == "dense":
        kernel, bias = np.asarray(params["kernel"]), np.asarray(params["bias"])
        if ensemble:
            return {"weight": kernel, "bias": bias[:, None, :]}
        return {"weight": kernel.T, "bias": bias}
    if kind == "norm":
        scale, bias = np.asarray(params["scale"]), np.asarray(params["bias"])
        if ensemble:
            return {"weight": scale[:, None, :], "bias": bias[:, None, :]}
        return {"weight": scale, "bias": bias}
    raise ValueError(f"unknown layer kind {kind!r}: dense or norm")


def torch_to_flax(kind: str, params: Mapping[str, np.ndarray], ensemble: bool) -> dict[str, np.ndarray]:
    """The inverse of `flax_to_torch`: our {"weight", "bias"} -> the flax layer's params."""
    weight, bias = np.asarray(params["weight"]), np.asarray(params["bias"])
    if kind == "dense":
        if ensemble:
            return {"kernel": weight, "bias": bias[:, 0, :]}
        return {"kernel": weight.T, "bias": bias}
    if kind == "norm":
        if ensemble:
            return {"scale": weight[:, 0, :], "bias": bias[:, 0, :]}
        return {"scale": weight, "bias": bias}
    raise ValueError(f"unknown layer kind {kind!r}: dense or norm")


def flatten(tree: Mapping, prefix: str = "") -> dict[str, np.ndarray]:
    """{"a/b/c": array} of a nested dict (how the reference process ships a flax tree in an .npz)."""
    flat: dict[str, np.ndarray] = {}
    for key, value in tree.items():
        path = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.update(flatten(value, path + "/"))
        else:
            flat[path] = np.asarray(value)
    return flat


def unflatten(flat: Mapping[str, np.ndarray], prefix: str = "") -> dict:
    """The nested dict under `prefix` of a flattened tree ("" for all of it)."""
    tree: dict = {}
    for path, value in flat.items():
        if not path.startswith(prefix):
            continue
        node = tree
        *parents, leaf = path[len(prefix):].strip("/").split("/")
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value
    return tree
