"""Seed-batched training: the S seeds of one run as one model with a leading seed axis.

Adam is elementwise, so S copies of a method whose parameters are stacked along a new first
axis, trained on the sum of their S losses, are exactly S independent trainings, while one
forward and one backward per update serve all of them (one batched matmul per layer instead of
S small ones: on small networks the per-operator overhead, not the arithmetic, sets the speed).

How a method takes part (one code path for one seed and for S):
- its networks are built as usual for one seed; `stack_algorithms([algo_s ...])` turns S
  single-seed copies (each built under its own seed, so each keeps its own initialisation) into
  one model whose every parameter, buffer, target network and optimizer state is the stack of
  theirs. Leaf layers become their seed-batched forms (`SeedLinear`, `SeedLayerNorm`,
  `SeedEmbedding`); every other module is copied with its parameters and buffers stacked and
  `seeds` = S set, which a module whose forward reads its parameters directly checks (the
  ensemble layers fold the seed axis into the member axis);
- its losses are written over tensors whose leading axes are `lead` = () for one seed and (S,)
  for S seeds: the minibatch is [*lead, B, ...], reductions are per seed (`seed_mean`), and the
  loss it returns is one value per seed ([S], summed by the base class before the backward);
- every random draw of its losses goes through `self.rng` (`SeedRandom`): one generator per
  seed, so seed s draws exactly the numbers it draws when trained alone;
- a free parameter read in the losses is broadcast with `seed_view(p, like)`.
`unstack_into(batched, s, single)` copies seed s back into a single-seed model (its optimizer,
scheduler and random state included) for evaluation and per-seed checkpoints.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from modebench.algorithms.optim import make_adam
from torch import nn


class SeedBatchingError(ValueError):
    """A model that cannot be stacked over seeds (the caller trains its seeds one after another)."""


class SeedRandom:
    """The random draws of a method's updates: one generator per seed (one, without a seed axis,
    when training a single seed). Host draws (a gate decided on the CPU) and device draws keep
    the separate streams torch's global generators give them."""

    def __init__(self, host: Sequence[torch.Generator], device: Sequence[torch.Generator] | None = None, stacked: bool = False):
        self.host = list(host)
        self.device = list(device) if device is not None else self.host
        self.stacked = stacked
        if not stacked and len(self.host) != 1:
            raise ValueError("an unstacked SeedRandom has exactly one generator")

    @classmethod
    def from_global(cls, device: torch.device | str) -> SeedRandom:
        """A generator continuing torch's global stream (as after `torch.manual_seed(seed)` and the
        networks' initialisation): the same draws an unmodified single-seed run takes."""
        device = torch.device(device)
        host = torch.Generator()
        host.set_state(torch.get_rng_state())
        if device.type == "cpu":
            return cls([host])
        on_device = torch.Generator(device=device)
        if device.type == "cuda":
            on_device.set_state(torch.cuda.get_rng_state(device))
        else:
            on_device.manual_seed(torch.initial_seed())
        return cls([host], [on_device])

    @classmethod
    def stack(cls, randoms: Sequence[SeedRandom]) -> SeedRandom:
        return cls([r.host[0] for r in randoms], [r.device[0] for r in randoms], stacked=True)

    def __getitem__(self, s: int) -> SeedRandom:
        return SeedRandom([self.host[s]], [self.device[s]])

    def _gens(self, device: torch.device | str | None) -> list[torch.Generator]:
        return self.host if device is None or torch.device(device).type == "cpu" else self.device

    def _draw(self, device, fn: Callable[[torch.Generator], torch.Tensor]) -> torch.Tensor:
        gens = self._gens(device)
        if not self.stacked:
            return fn(gens[0])
        return torch.stack([fn(g) for g in gens])

    def randn(self, *shape: int, device=None, dtype=None) -> torch.Tensor:
        """N(0, 1) draws of `shape` per seed: [*lead, *shape]."""
        return self._draw(device, lambda g: torch.randn(*shape, generator=g, device=device, dtype=dtype))

    def rand(self, *shape: int, device=None, dtype=None) -> torch.Tensor:
        return self._draw(device, lambda g: torch.rand(*shape, generator=g, device=device, dtype=dtype))

    def randint(self, low: int, high: int, shape: Sequence[int], device=None) -> torch.Tensor:
        return self._draw(device, lambda g: torch.randint(low, high, tuple(shape), generator=g, device=device))

    def randn_like(self, x: torch.Tensor) -> torch.Tensor:
        """N(0, 1) of x's shape, x being [*lead, ...]."""
        return self.randn(*(x.shape[1:] if self.stacked else x.shape), device=x.device, dtype=x.dtype)

    def multinomial(self, probs: torch.Tensor, n: int, replacement: bool = True) -> torch.Tensor:
        """`torch.multinomial` per seed on probs [*lead, R, K] -> [*lead, R, n]."""
        gens = self._gens(probs.device)
        if not self.stacked:
            return torch.multinomial(probs, n, replacement, generator=gens[0])
        return torch.stack([torch.multinomial(p, n, replacement, generator=g) for p, g in zip(probs, gens)])

    def get_state(self) -> dict[str, list[torch.Tensor]]:
        return {"host": [g.get_state() for g in self.host],
                "device": [] if self.device is self.host else [g.get_state() for g in self.device]}

    def set_state(self, state: dict[str, list[torch.Tensor]]) -> None:
        for g, s in zip(self.host, state["host"]):
            g.set_state(s)
        if self.device is not self.host:
            for g, s in zip(self.device, state["device"]):
                g.set_state(s)


class PickedRows:
    """The rows a host bool mask [*lead, B] picks, per seed, as one dense block [*lead, K, ...]: each
    seed's picked rows first (in row order), padded with its unpicked rows up to the largest count
    of the batch K = max_s |rows_s| (for one seed, K is its own count: exactly its picked rows).
    Work on a random subset of a batch (ISEP-FM samples its policy only on the gated rows) is
    then written once, for one seed: `take` the rows, compute, `put` the results back; padded rows
    get results nobody reads, and `mean` averages over each seed's own rows only."""

    def __init__(self, picked: torch.Tensor, device: torch.device | str):
        self.counts = picked.sum(-1)  # [*lead], on the host
        self.count_list = self.counts.reshape(-1).tolist()
        self.k = max(self.count_list)
        self.device = device
        rows = torch.argsort(~picked, dim=-1, stable=True)[..., : self.k]
        self.index = rows.unsqueeze(-1).to(device, non_blocking=True)  # [*lead, K, 1]

    @property
    def every_seed_picked(self) -> bool:
        return min(self.count_list) > 0

    def take(self, x: torch.Tensor) -> torch.Tensor:
        """x [*lead, B, d] -> its picked rows [*lead, K, d]."""
        return torch.take_along_dim(x, self.index, dim=-2)

    def put(self, x: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
        """x [*lead, B, d] with its picked rows replaced by `rows` [*lead, K, d] (a new tensor)."""
        return x.scatter(-2, self.index.expand(*self.index.shape[:-1], x.shape[-1]), rows)

    def randn(self, rng: SeedRandom, d: int, like: torch.Tensor) -> torch.Tensor:
        """N(0, 1) for the picked rows, [*lead, K, d]: seed s draws its own count of rows from its own
        generator (what it draws alone), zero rows pad it to K."""
        draws = []
        for s, c in enumerate(self.count_list):  # ragged per seed: SeedRandom's draws share one shape
            x = rng[s].randn(c, d, device=like.device, dtype=like.dtype) if c else like.new_zeros(0, d)
            draws.append(x if c == self.k else torch.cat([x, x.new_zeros(self.k - c, d)]))
        return torch.stack(draws) if rng.stacked else draws[0]

    def mean(self, values: torch.Tensor) -> torch.Tensor:
        """The mean of `values` [*lead, K] over each seed's picked rows (padding counts for nothing): [*lead]."""
        if min(self.count_list) < self.k:
            valid = torch.arange(self.k, device=values.device) < self.counts.to(values.device, non_blocking=True).unsqueeze(-1)
            return (values * valid).sum(-1) / self.counts.to(values.device, values.dtype, non_blocking=True)
        return values.mean(-1)


def seed_mean(x: torch.Tensor, seeds: int | None) -> torch.Tensor:
    """The mean over everything but the seed axis: a scalar for one seed, [S] for S."""
    return x.mean() if seeds is None else x.mean(dim=tuple(range(1, x.dim())))


def seed_view(p: torch.Tensor, like: torch.Tensor, seeds: int | None, param_dims: int | None = None) -> torch.Tensor:
    """A free parameter (single-seed shape P, stacked [S, *P]) viewed to broadcast against
    `like` ([S, ..., *P] when stacked): the seed axis first, ones between. `param_dims`: how many
    trailing dims are the parameter's own (default: all of a single seed's)."""
    if seeds is None:
        return p
    own = p.dim() - 1 if param_dims is None else param_dims
    return p.reshape(seeds, *([1] * (like.dim() - 1 - own)), *p.shape[1:])


class SeedLinear(nn.Module):
    """S independent nn.Linear layers as one batched matmul: [S, ..., in] -> [S, ..., out].

    The weight is held as [S, in, out] and the bias as [S, 1, out], the layouts `baddbmm` takes
    as they are: no transpose or unsqueeze per call, and gradients arrive in the parameters' own
    layout (a transposed view would cost a copy per update). Its state dict shows nn.Linear's
    layout stacked ([S, out, in], [S, out]), so seed s of it is an nn.Linear's state dict
    (`unstack_into`); the optimizer-state conversion is `seed_layout` on each parameter. A stacked
    model is only ever built from single-seed ones, never loaded from a state dict."""

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor | None):
        super().__init__()
        self.weight = nn.Parameter(weight.transpose(1, 2).contiguous())
        self.weight.seed_layout = (lambda t: t.transpose(1, 2).contiguous(), lambda t: t.transpose(1, 2))
        self.bias = None
        if bias is not None:
            self.bias = nn.Parameter(bias.unsqueeze(1).contiguous())
            self.bias.seed_layout = (lambda t: t.unsqueeze(1).contiguous(), lambda t: t.squeeze(1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        flat = x if x.dim() == 3 else x.reshape(x.shape[0], -1, x.shape[-1])
        out = torch.bmm(flat, self.weight) if self.bias is None else torch.baddbmm(self.bias, flat, self.weight)
        return out if x.dim() == 3 else out.reshape(*x.shape[:-1], out.shape[-1])

    def _save_to_state_dict(self, destination, prefix, keep_vars):
        for name, param in self._parameters.items():
            if param is not None:
                value = param if keep_vars else param.detach()
                destination[prefix + name] = param.seed_layout[1](value)


class SeedLayerNorm(nn.Module):
    """S LayerNorms with their own scale and bias ([S, width] each) over [S, ..., width]."""

    def __init__(self, width: int, eps: float, weight: torch.Tensor, bias: torch.Tensor | None):
        super().__init__()
        self.width, self.eps = width, eps
        self.weight = nn.Parameter(weight)
        self.bias = nn.Parameter(bias) if bias is not None else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = x.shape[0]
        y = F.layer_norm(x, (self.width,), eps=self.eps)
        mid = [1] * (x.dim() - 2)
        w = self.weight.reshape(s, *mid, self.width)
        return y * w if self.bias is None else torch.addcmul(self.bias.reshape(s, *mid, self.width), y, w)


class SeedEmbedding(nn.Module):
    """S embedding tables [S, N, d]; indices [S, ...] -> [S, ..., d]."""

    def __init__(self, weight: torch.Tensor):
        super().__init__()
        self.weight = nn.Parameter(weight)

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        s = idx.shape[0]
        offsets = (torch.arange(s, device=idx.device) * self.weight.shape[1]).reshape(s, *([1] * (idx.dim() - 1)))
        return F.embedding(idx + offsets, self.weight.reshape(-1, self.weight.shape[-1]))


def _stack(tensors: Sequence[torch.Tensor]) -> torch.Tensor:
    return torch.stack([t.detach() for t in tensors])


def _stack_linear(modules: Sequence[nn.Linear]) -> SeedLinear:
    first = modules[0]
    layer = SeedLinear(_stack([m.weight for m in modules]), None if first.bias is None else _stack([m.bias for m in modules]))
    layer.requires_grad_(first.weight.requires_grad)
    return layer


def _stack_layer_norm(modules: Sequence[nn.LayerNorm]) -> nn.Module:
    first = modules[0]
    if not first.elementwise_affine:
        return copy.copy(first)  # nothing per seed
    if len(first.normalized_shape) != 1:
        raise SeedBatchingError("seed batching supports LayerNorm over the last dimension only")
    norm = SeedLayerNorm(first.normalized_shape[0], first.eps, _stack([m.weight for m in modules]),
                         None if first.bias is None else _stack([m.bias for m in modules]))
    norm.requires_grad_(first.weight.requires_grad)
    return norm


def _stack_embedding(modules: Sequence[nn.Embedding]) -> SeedEmbedding:
    table = SeedEmbedding(_stack([m.weight for m in modules]))
    table.requires_grad_(modules[0].weight.requires_grad)
    return table


LEAVES: dict[type, Callable[[Sequence[Any]], nn.Module]] = {
    nn.Linear: _stack_linear,
    nn.LayerNorm: _stack_layer_norm,
    nn.Embedding: _stack_embedding,
}


def stack_modules(modules: Sequence[nn.Module]) -> nn.Module:
    """One module holding S single-seed modules of the same structure (parameters and buffers
    stacked along a new first axis). The result is marked with `seeds = S`."""
    first = modules[0]
    if any(type(m) is not type(first) for m in modules):
        raise TypeError("seed batching stacks modules of one type")
    cls = type(first)
    if cls in LEAVES:
        return LEAVES[cls](modules)
    if isinstance(first, nn.Dropout) and first.p > 0:
        raise SeedBatchingError("dropout inside a network (its masks come from torch's global generator, not one per seed)")
    # A shallow copy keeps the module's own attributes (config, sizes, flags); its parameters,
    # buffers and submodules are then registered anew, stacked, through torch's public API (the
    # copy starts from empty registries: the ones it shares with `first` are left untouched).
    stacked = copy.copy(first)
    stacked._parameters, stacked._buffers, stacked._modules = {}, {}, {}
    stacked._non_persistent_buffers_set = set()
    for name, p in first._parameters.items():
        stacked.register_parameter(name, None if p is None else nn.Parameter(
            _stack([getattr(m, name) for m in modules]), requires_grad=p.requires_grad))
    for name, b in first._buffers.items():
        stacked.register_buffer(name, None if b is None else _stack([getattr(m, name) for m in modules]),
                                persistent=name not in first._non_persistent_buffers_set)
    for name, sub in first._modules.items():
        stacked.add_module(name, None if sub is None else stack_modules([getattr(m, name) for m in modules]))
    stacked.seeds = len(modules)
    if hasattr(stacked, "reset_caches"):
        stacked.reset_caches()
    return stacked


def unstack_state(state: dict[str, torch.Tensor], s: int) -> dict[str, torch.Tensor]:
    """Seed s's entries of a stacked state dict."""
    return {key: value[s] for key, value in state.items()}


def _same(t: torch.Tensor) -> torch.Tensor:
    return t


def _layout(param: torch.Tensor):
    """(stacked single-seed layout -> the parameter's, and back): identity unless the seed-batched
    layer keeps its own (SeedLinear)."""
    return getattr(param, "seed_layout", (_same, _same))


def _single_optimizer(algorithm: nn.Module) -> None:
    extra = [name for name, value in vars(algorithm).items()
             if isinstance(value, (torch.optim.Optimizer, torch.optim.lr_scheduler.LRScheduler))
             and name not in ("optimizer", "scheduler")]
    if extra:
        raise SeedBatchingError(f"seed batching rebuilds `optimizer` and `scheduler` only; {type(algorithm).__name__} also holds {extra}")
    if algorithm.scheduler is not None and not isinstance(algorithm.scheduler, torch.optim.lr_scheduler.LambdaLR):
        raise SeedBatchingError(f"seed batching rebuilds LambdaLR schedulers only, not {type(algorithm.scheduler).__name__}")


def stack_algorithms(algorithms: Sequence[Any]) -> Any:
    """One Algorithm training the S given single-seed copies at once (built with one config, each
    under its own seed, possibly restored from its own checkpoint): stacked parameters, buffers,
    optimizer state and random generators; `seeds` = S."""
    first = algorithms[0]
    _single_optimizer(first)
    batched = stack_modules(algorithms)
    batched._compiled_losses = None
    batched.rng = SeedRandom.stack([a.rng for a in algorithms])
    names = {id(p): name for name, p in first.named_parameters()}
    params = dict(batched.named_parameters())
    groups = []
    for group in first.optimizer.param_groups:
        entry = {k: v for k, v in group.items() if k not in ("params", "initial_lr")}
        entry["lr"] = group.get("initial_lr", group["lr"])
        entry["params"] = [params[names[id(p)]] for p in group["params"]]
        groups.append(entry)
    batched.optimizer = make_adam(groups, first.optimizer.defaults["lr"], batched.device)
    if first.scheduler is not None:
        batched.scheduler = torch.optim.lr_scheduler.LambdaLR(batched.optimizer, first.scheduler.lr_lambdas)
        batched.scheduler.load_state_dict(first.scheduler.state_dict())
    states = [a.optimizer.state_dict() for a in algorithms]
    layouts = [_layout(p)[0] for group in batched.optimizer.param_groups for p in group["params"]]
    stacked_state = {
        index: {key: value if key == "step" else layouts[index](_stack([s["state"][index][key] for s in states]))
                for key, value in entry.items()}
        for index, entry in states[0]["state"].items()
    }
    batched.optimizer.load_state_dict({"state": stacked_state, "param_groups": states[0]["param_groups"]})
    return batched


def unstack_into(batched: Any, s: int, single: Any) -> None:
    """Seed s of a seed-batched Algorithm into a single-seed one of the same method and config:
    weights, buffers, optimizer and scheduler state, random generators."""
    single.load_state_dict(unstack_state(batched.state_dict(), s))
    state = batched.optimizer.state_dict()
    layouts = [_layout(p)[1] for group in batched.optimizer.param_groups for p in group["params"]]
    single.optimizer.load_state_dict({
        "state": {index: {key: value if key == "step" else layouts[index](value)[s].clone() for key, value in entry.items()}
                  for index, entry in state["state"].items()},
        "param_groups": state["param_groups"],
    })
    if batched.scheduler is not None:
        single.scheduler.load_state_dict(batched.scheduler.state_dict())
    single.rng.set_state(batched.rng[s].get_state())
