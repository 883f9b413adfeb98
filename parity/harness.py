"""One update of ours next to one of the authors', same weights, same batch, same random draws.

The reference runs in its own interpreter (parity/reference_jax.py under .venv-jax for the JAX
repositories); this side builds the inputs (batches, draws), loads the reference's initial
weights into our model (parity/convert.py), replays the same updates and compares.

What "the same draws" means: every random array an update of either side takes (flow noise,
flow times, latents, candidate directions and radii) is generated here once, by role, and handed
to each side in the order that side draws it. Ours draw from `self.rng` (algorithms/seeds.py:
SeedRandom), which `ScriptedRandom` replaces; `act` draws from torch's global generator, which
`scripted_torch_draws` replaces for the one call. No library code is changed.

Relative difference of a tensor: max_i |ours_i - theirs_i| / max_i |theirs_i| (for a scalar,
|ours - theirs| / |theirs|); a tensor whose reference is all zeros compares absolute values.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

from parity.convert import flax_layers, flax_to_torch, torch_to_flax, unflatten
from parity.reference_jax import same_but_unit_axes

LOSS_TOLERANCE = 1e-5  # relative, float32: every loss term, gradient, one-step parameter and action
SIGN_DEFINED = 1e-4  # gradient entries below this fraction of their tensor's largest: see well_conditioned
ADAM_EPS = 1e-8  # optax.adam's and torch.optim.Adam's default, both sides
DRAW_KINDS = {"normal", "uniform"}


# ---------------------------------------------------------------------------- draw injection

@dataclass
class Draw:
    kind: str  # "normal" | "uniform"
    value: np.ndarray


class ScriptedRandom:
    """Stands in for an algorithm's `self.rng` (SeedRandom's interface, single seed): each call
    returns the next scripted array, after checking that it is of the kind (randn: normal, rand:
    uniform) and shape the method asks for. Taking more or fewer draws than scripted is an error."""

    stacked = False

    def __init__(self, draws: Sequence[Draw] = ()):
        self.queue: list[Draw] = list(draws)

    def load(self, draws: Sequence[Draw]) -> None:
        self.done()
        self.queue = list(draws)

    def done(self) -> None:
        if self.queue:
            raise RuntimeError(f"{len(self.queue)} scripted draws were not taken: {[(d.kind, d.value.shape) for d in self.queue]}")

    def _next(self, kind: str, shape: Sequence[int], device=None, dtype=None) -> torch.Tensor:
        shape = tuple(int(s) for s in shape)
        if not self.queue:
            raise RuntimeError(f"drew {kind}{shape} beyond the scripted draws")
        draw = self.queue.pop(0)
        value = draw.value
        if draw.kind == kind and same_but_unit_axes(value.shape, shape):
            value = value.reshape(shape)  # the same draws with a length-1 axis more or less (LOM's n = 1)
        if draw.kind != kind or tuple(value.shape) != shape:
            raise RuntimeError(f"drew {kind}{shape} where the script has {draw.kind}{tuple(draw.value.shape)}")
        return torch.as_tensor(value, dtype=dtype or torch.float32, device=device)

    def randn(self, *shape: int, device=None, dtype=None) -> torch.Tensor:
        return self._next("normal", shape, device, dtype)

    def rand(self, *shape: int, device=None, dtype=None) -> torch.Tensor:
        return self._next("uniform", shape, device, dtype)

    def randn_like(self, x: torch.Tensor) -> torch.Tensor:
        return self._next("normal", x.shape, x.device, x.dtype)

    def rand_like(self, x: torch.Tensor) -> torch.Tensor:
        return self._next("uniform", x.shape, x.device, x.dtype)


@contextlib.contextmanager
def scripted_torch_draws(script: ScriptedRandom) -> Iterator[None]:
    """torch.randn / torch.rand (the global generator `act` samples from) answer from `script`."""
    randn, rand = torch.randn, torch.rand

    def scripted(kind):
        def draw(*shape, generator=None, device=None, dtype=None, **_):
            if len(shape) == 1 and isinstance(shape[0], (tuple, list, torch.Size)):
                shape = tuple(shape[0])
            return script._next(kind, shape, device, dtype)
        return draw

    torch.randn, torch.rand = scripted("normal"), scripted("uniform")
    try:
        yield
    finally:
        torch.randn, torch.rand = randn, rand
    script.done()


# ---------------------------------------------------------------------------- weights

def torch_layers(module: nn.Module) -> list[tuple[str, bool, nn.Module]]:
    """[(kind, ensemble, module)] of a network's Linear and LayerNorm layers in execution order."""
    from modebench.algorithms.nets import EnsembleLayerNorm, EnsembleLinear

    layers = []
    for m in module.modules():
        if isinstance(m, nn.Linear):
            layers.append(("dense", False, m))
        elif isinstance(m, EnsembleLinear):
            layers.append(("dense", True, m))
        elif isinstance(m, nn.LayerNorm):
            layers.append(("norm", False, m))
        elif isinstance(m, EnsembleLayerNorm):
            layers.append(("norm", True, m))
    return layers


def paired_layers(flax_mlp: dict, module: nn.Module) -> list[tuple[str, str, bool, nn.Module]]:
    """Zip a flax MLP's layers with ours, checking kinds and shapes line up."""
    theirs, ours = flax_layers(flax_mlp), torch_layers(module)
    if len(theirs) != len(ours):
        raise ValueError(f"layer count differs: theirs {[n for n, _, _ in theirs]}, ours {len(ours)} layers")
    pairs = []
    for (name, kind, params), (our_kind, ensemble, m) in zip(theirs, ours):
        if kind != our_kind:
            raise ValueError(f"{name} is a {kind} layer where ours is {our_kind}")
        converted = flax_to_torch(kind, params, ensemble)
        for pname, value in converted.items():
            if tuple(getattr(m, pname).shape) != value.shape:
                raise ValueError(f"{name}.{pname}: theirs {value.shape} vs ours {tuple(getattr(m, pname).shape)}")
        pairs.append((name, kind, ensemble, m))
    return pairs


@torch.no_grad()
def load_flax(module: nn.Module, flax_mlp: dict) -> None:
    """Copy a flax MLP's parameters into our network, converted layer by layer."""
    for (name, kind, ensemble, m), (_, _, params) in zip(paired_layers(flax_mlp, module), flax_layers(flax_mlp)):
        for pname, value in flax_to_torch(kind, params, ensemble).items():
            getattr(m, pname).copy_(torch.as_tensor(value))


def export_flax(module: nn.Module, flax_mlp: dict, grads: bool = False) -> dict[str, dict[str, np.ndarray]]:
    """Our network's parameters (or their gradients) in the flax MLP's layout and names."""
    out = {}
    for name, kind, ensemble, m in paired_layers(flax_mlp, module):
        tensors = {p: getattr(m, p).grad if grads else getattr(m, p) for p in ("weight", "bias")}
        arrays = {p: (np.zeros(tuple(getattr(m, p).shape), np.float32) if t is None else t.detach().cpu().numpy().copy())
                  for p, t in tensors.items()}
        out[name] = torch_to_flax(kind, arrays, ensemble)
    return out


# ---------------------------------------------------------------------------- comparison

def relative_difference(ours: np.ndarray, theirs: np.ndarray, where: np.ndarray | None = None) -> float:
    """max |ours - theirs| (over `where`, default everywhere) / max |theirs| (over the whole tensor)."""
    ours, theirs = np.asarray(ours, np.float64), np.asarray(theirs, np.float64)
    if ours.shape != theirs.shape:
        raise ValueError(f"shape {ours.shape} vs {theirs.shape}")
    diff = np.abs(ours - theirs)
    if where is not None:
        diff = diff[where]
    scale = np.abs(theirs).max() if theirs.size else 0.0
    worst = diff.max() if diff.size else 0.0
    return float(worst / scale) if scale > 0 else float(worst)


def well_conditioned(grad: np.ndarray) -> np.ndarray:
    """Elements whose first Adam step the gradients determine. Adam's first update is
    lr * g / (|g| + eps): a step of about +-lr whose sign is the gradient's. Two frameworks round
    a gradient entry differently by delta ~ 1e-6 of the tensor's largest (what the gradient rows
    show), which (a) flips the sign of an entry smaller than that (a step of +lr on one side, -lr
    on the other) and (b) moves the step by lr * eps * delta / (|g| + eps)^2. So one-step
    parameters are compared where |g| >= SIGN_DEFINED max|g| and (|g| + eps)^2 >= eps max|g|
    (there (b) is below 1e-5 lr even for delta = 1e-5 max|g|); the rest are counted
    (`Comparison.ill_conditioned`) and reported."""
    grad = np.abs(np.asarray(grad, np.float64))
    largest = grad.max() if grad.size else 0.0
    return (grad >= SIGN_DEFINED * largest) & ((grad + ADAM_EPS) ** 2 >= ADAM_EPS * largest)


@dataclass
class Comparison:
    """Every compared tensor's relative difference, by name."""

    rows: dict[str, float] = field(default_factory=dict)
    ill_conditioned: int = 0  # one-step parameter entries left out (see well_conditioned)

    def add(self, name: str, ours, theirs, where: np.ndarray | None = None) -> None:
        self.rows[name] = relative_difference(ours, theirs, where)
        if where is not None:
            self.ill_conditioned += int(where.size - where.sum())

    def worst(self, prefix: str = "") -> tuple[str, float]:
        items = [(k, v) for k, v in self.rows.items() if k.startswith(prefix)]
        return max(items, key=lambda kv: kv[1]) if items else ("", 0.0)

    def count(self, prefix: str = "") -> int:
        return sum(1 for k in self.rows if k.startswith(prefix))


# ---------------------------------------------------------------------------- one method

@dataclass
class MethodSpec:
    """How one of our methods lines up with its authors' agent."""

    name: str                      # ours, in the registry
    owner_repo: str                # "seohongpark/fql"
    reference_module: str          # "agents.fql"
    reference_class: str           # "FQLAgent"
    task: str                      # whose published per-task values these are
    reference_config: dict         # overrides of the reference's get_config()
    our_config: dict               # our config that means the same
    networks: dict[str, str]       # flax top-level module path -> attribute path of our network
    # draws of one update: role -> (kind, shape(B, d_a)); the order each side takes them
    draws: Callable[[int, int], dict[str, tuple[str, tuple[int, ...]]]]
    reference_order: list[str]
    our_order: list[str]
    act_draws: Callable[[int, int], dict[str, tuple[str, tuple[int, ...]]]]
    act_reference_order: list[str]
    act_our_order: list[str]
    losses: dict[str, tuple[str, float]]  # reference info key -> (our metric, ours / theirs by design)
    grad_scale: dict[str, float]   # flax module -> ours / theirs of its gradients by design
    targets: dict[str, str] = field(default_factory=dict)  # target network's flax path -> its online network's
    patches: Callable[[], contextlib.AbstractContextManager] | None = None  # numerics we match for the check
    # undoes a by-design factor exactly on our built model (e.g. Adam's eps scaled with a loss scale)
    adjust: Callable[[nn.Module], None] | None = None
    # compared tensors whose difference is a listed one (docs/parity.md): name prefix -> cause
    listed: dict[str, str] = field(default_factory=dict)
    # the configs' hidden-width keys (reference's, ours): the drift run uses narrower nets
    width_keys: tuple[tuple[str, ...], str] = (("actor_hidden_dims", "value_hidden_dims"), "hidden_dims")
    reference_act_kwargs: dict = field(default_factory=dict)  # e.g. temperature 0: the mean, as our act
    reference_script: str = "reference_jax.py"  # run by the JAX interpreter; reference_lom.py by this one
    compare_steps: tuple[int, ...] = (0,)  # updates (0-based) whose gradients and parameters are compared
    draw_free_steps: int = 0  # the first updates take no draws on either side (LOM's MDN phase)
    skip_grads: dict[int, tuple[str, ...]] = field(default_factory=dict)  # step -> networks whose grads are not this update's
    drift: MethodSpec | None = None  # the spec of the drift run when the one-update check controls something
    # the reference's config in the throughput blocks: the shapes of our registry default (perf.speed.measure)
    throughput_config: dict = field(default_factory=dict)

    @property
    def torch_reference(self) -> bool:
        return self.reference_script != "reference_jax.py"

    def narrowed(self, widths: tuple[int, ...] | None) -> MethodSpec:
        """The same comparison with every MLP's hidden widths set to `widths` on both sides."""
        if widths is None:
            return self
        if not self.width_keys[0]:  # widths fixed in the reference's code
            return self
        theirs, ours = self.width_keys
        return dataclasses.replace(self, reference_config={**self.reference_config, **{k: list(widths) for k in theirs}},
                                   our_config={**self.our_config, ours: tuple(widths)})

    def module(self, algorithm: nn.Module, path: str) -> nn.Module:
        for part in path.split("."):
            algorithm = getattr(algorithm, part)
        return algorithm


def make_draws(spec: dict[str, tuple[str, tuple[int, ...]]], rng: np.random.Generator) -> dict[str, Draw]:
    out = {}
    for role, (kind, shape) in spec.items():
        if kind not in DRAW_KINDS:
            raise ValueError(f"unknown draw kind {kind!r}")
        value = rng.standard_normal(shape) if kind == "normal" else rng.uniform(size=shape)
        out[role] = Draw(kind, value.astype(np.float32))
    return out


def make_batches(steps: int, batch: int, obs_dim: int, act_dim: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Hopper-shaped transitions: Gaussian observations, actions in the authors' clipped box."""
    limit = 1 - 1e-5
    return {
        "observations": rng.standard_normal((steps, batch, obs_dim)).astype(np.float32),
        "actions": rng.uniform(-limit, limit, (steps, batch, act_dim)).astype(np.float32),
        "rewards": rng.standard_normal((steps, batch)).astype(np.float32),
        "masks": (rng.uniform(size=(steps, batch)) > 0.05).astype(np.float32),
        "next_observations": rng.standard_normal((steps, batch, obs_dim)).astype(np.float32),
        "next_actions": rng.uniform(-limit, limit, (steps, batch, act_dim)).astype(np.float32),
    }


def build_ours(spec: MethodSpec, obs_dim: int, act_dim: int):
    from modebench.algorithms.base import EnvSpec
    from modebench.algorithms.registry import get_method

    entry = get_method(spec.name)
    cls = entry.load()
    config = {**(entry.config or {}), **spec.our_config}  # a preset's values, then the task's
    context = spec.patches() if spec.patches else contextlib.nullcontext()
    with context:
        algorithm = cls(cls.config_class(**config), EnvSpec(obs_dim, act_dim, 1000, 1_000_000), "cpu")
    return algorithm


def run_reference(python: str, repo: str, spec: MethodSpec, inputs: dict[str, np.ndarray], workdir: Path) -> dict[str, np.ndarray]:
    in_path, out_path = workdir / f"{spec.name}-in.npz", workdir / f"{spec.name}-out.npz"
    np.savez(in_path, **inputs)
    script = Path(__file__).with_name(spec.reference_script)
    if spec.torch_reference:  # a PyTorch reference: this interpreter
        python = sys.executable
    proc = subprocess.run([python, str(script), "parity", repo, spec.reference_module, spec.reference_class,
                           str(in_path), str(out_path)], check=False, capture_output=True, text=True,
                          env=reference_env())
    if proc.returncode != 0:
        raise RuntimeError(f"the {spec.owner_repo} reference failed:\n{proc.stderr[-3000:]}")
    return dict(np.load(out_path))


def reference_env(threads: int = 1) -> dict[str, str]:
    import os

    env = dict(os.environ)
    env.update(JAX_PLATFORMS="cpu", OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads),
               XLA_FLAGS=f"--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads={threads}")
    return env


@dataclass
class ParityResult:
    comparison: Comparison          # one update + act
    drift: Comparison               # parameters after all updates
    loss_drift: dict[str, float]    # max over updates of each loss term's relative difference
    updates: int
    listed: Comparison              # one-update rows whose difference is a listed one (spec.listed)

    def holds(self, tolerance: float = LOSS_TOLERANCE) -> bool:
        return self.comparison.worst()[1] <= tolerance


def check(spec: MethodSpec, python: str, repo: str, updates: int = 100, batch: int = 256,
          obs_dim: int = 17, act_dim: int = 6, seed: int = 0, workdir: Path | None = None) -> ParityResult:
    """Run the reference and ours on the same `updates` batches and draws; compare."""
    rng = np.random.default_rng(seed)
    batches = make_batches(updates, batch, obs_dim, act_dim, rng)
    step_draws = [make_draws(spec.draws(batch, act_dim) if step >= spec.draw_free_steps else {}, rng) for step in range(updates)]
    act_obs = rng.standard_normal((batch, obs_dim)).astype(np.float32)
    act_draws = make_draws(spec.act_draws(batch, act_dim), rng)
    inputs: dict[str, np.ndarray] = {"config": np.array(json.dumps(spec.reference_config)), "seed": np.array(seed),
                                     "act/observations": act_obs, "act/kwargs": np.array(json.dumps(spec.reference_act_kwargs))}
    inputs.update({f"batch/{k}": v for k, v in batches.items()})
    for step, draws in enumerate(step_draws):
        for i, role in enumerate(spec.reference_order if step >= spec.draw_free_steps else []):
            inputs[f"draw/{step}/{i}"] = draws[role].value
            inputs[f"draw/{step}kind/{i}"] = np.array(draws[role].kind)
    for i, role in enumerate(spec.act_reference_order):
        inputs[f"act/draw/{i}"] = act_draws[role].value
        inputs[f"act/drawkind/{i}"] = np.array(act_draws[role].kind)
    with tempfile.TemporaryDirectory() as tmp:
        ref = run_reference(python, repo, spec, inputs, Path(workdir or tmp))
    return compare(spec, ref, batches, step_draws, act_obs, act_draws, obs_dim, act_dim, updates)


def compare(spec: MethodSpec, ref: dict[str, np.ndarray], batches, step_draws, act_obs, act_draws,
            obs_dim: int, act_dim: int, updates: int) -> ParityResult:
    from modebench.algorithms.base import Batch

    torch.manual_seed(0)
    algorithm = build_ours(spec, obs_dim, act_dim)
    if spec.adjust is not None:
        spec.adjust(algorithm)
    init = unflatten(ref, "init/")
    for flax_path, ours in spec.networks.items():
        load_flax(spec.module(algorithm, ours), _subtree(init, flax_path))
    script = ScriptedRandom()
    algorithm.rng = script
    comparison, drift = Comparison(), Comparison()
    loss_drift: dict[str, float] = {}
    context = spec.patches() if spec.patches else contextlib.nullcontext()
    with context:
        for step in range(updates):
            script.load([step_draws[step][role] for role in (spec.our_order if step >= spec.draw_free_steps else [])])
            batch = Batch(*(torch.as_tensor(batches[k][step]) for k in ("observations", "actions", "rewards", "next_observations")),
                          dones=1.0 - torch.as_tensor(batches["masks"][step]), next_actions=torch.as_tensor(batches["next_actions"][step]))
            metrics = algorithm.update(batch, step)
            script.done()
            at = "" if step == 0 else f" @{step + 1}"  # rows of a later compared update say which
            for their_key, (our_key, scale) in spec.losses.items():
                theirs = float(ref.get(f"losses/{their_key}", np.full(updates, np.nan))[step])
                if our_key not in metrics or np.isnan(theirs):  # a term of another phase
                    continue
                ours = float(metrics[our_key]) / scale
                loss_drift[their_key] = max(loss_drift.get(their_key, 0.0), relative_difference(ours, theirs))
                if step in spec.compare_steps:
                    comparison.add(f"loss {their_key}{at}", ours, theirs)
            if step in spec.compare_steps:
                grads, params = unflatten(ref, f"grad{step + 1}/"), unflatten(ref, f"param{step + 1}/")
                for flax_path, ours in spec.networks.items():
                    module = spec.module(algorithm, ours)
                    online = spec.targets.get(flax_path, flax_path)  # a target moves where its source does
                    if flax_path not in spec.targets and flax_path not in spec.skip_grads.get(step, ()):
                        scale = spec.grad_scale.get(flax_path, 1.0)
                        _compare_tree(comparison, f"grad {flax_path}{at}", export_flax(module, _subtree(grads, flax_path), grads=True),
                                      _subtree(grads, flax_path), scale)
                    _compare_tree(comparison, f"param {flax_path}{at}", export_flax(module, _subtree(params, flax_path)),
                                  _subtree(params, flax_path), masks=_subtree(grads, online))
            if step == 0:
                act_script = ScriptedRandom([act_draws[role] for role in spec.act_our_order])
                with scripted_torch_draws(act_script):  # acting after the first update, as the reference does
                    actions = algorithm.act(torch.as_tensor(act_obs), torch.zeros(len(act_obs), dtype=torch.long),
                                            algorithm.default_knobs()).actions
                comparison.add("act actions", actions.numpy(), ref["act/actions"])
    final = unflatten(ref, "final/")
    for flax_path, ours in spec.networks.items():
        module = spec.module(algorithm, ours)
        _compare_tree(drift, f"param {flax_path}", export_flax(module, _subtree(final, flax_path)), _subtree(final, flax_path))
    listed = Comparison()
    for name in list(comparison.rows):
        if any(name.startswith(prefix) for prefix in spec.listed):
            listed.rows[name] = comparison.rows.pop(name)
    return ParityResult(comparison, drift, loss_drift, updates, listed)


def _subtree(tree: dict, path: str) -> dict:
    """The flax MLP dict at `path`; "a+b" appends the single Dense at b (a Gaussian actor's
    mean_net) to MLP a as its next Dense_i: the layer our one MLP runs last."""
    first, *rest = path.split("+")
    node = _walk(tree, first)
    if rest:
        node = dict(node)
        for extra in rest:
            node[f"Dense_{sum(1 for k in node if k.startswith('Dense_'))}"] = _walk(tree, extra)
    return node


def _walk(tree: dict, path: str) -> dict:
    for part in path.split("/"):
        tree = tree[part]
    return tree


def _compare_tree(comparison: Comparison, prefix: str, ours: dict, theirs: dict, scale: float = 1.0,
                  masks: dict | None = None) -> None:
    """Compare layer by layer; with `masks` (the reference's gradients), only where well_conditioned."""
    for layer, params in theirs.items():
        for pname, value in params.items():
            where = well_conditioned(masks[layer][pname]) if masks is not None else None
            comparison.add(f"{prefix}/{layer}/{pname}", ours[layer][pname] / scale, value, where)
