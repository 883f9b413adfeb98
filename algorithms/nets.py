"""Networks shared by every method: MLPs, a vectorised ensemble, GMM and Gaussian heads, flow nets.

Nothing here knows about a particular method. The ensemble critic evaluates its M heads in
one batched matmul per layer (weights stacked as [M, in, out]), never a Python loop over heads.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Literal

import torch
import torch.nn.functional as F
from modebench.algorithms.seeds import seed_view
from torch import nn


class Mish(nn.Mish):
    """x tanh(softplus(x)). ATen's CPU mish and mish_backward are scalar loops, so on CPU it is
    composed from vectorised kernels, equal to ATen's within 2.4e-6 (tested): without a graph
    (flow sampling: T velocity calls per state) from exp/mul/div, 2.5-4x faster; with one (the
    flow-matching loss) as x * tanh(softplus(x)), whose forward and backward together run 2x
    (4 x 512 nets) to 10x (128 wide) faster. On an accelerator it is ATen's."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.device.type != "cpu":
            return F.mish(x)
        if torch.is_grad_enabled():
            return x * torch.tanh(F.softplus(x))  # softplus returns x above 20, where tanh is 1.0 in float
        # tanh(softplus(x)) = n / (n + 2), n = e^x (e^x + 2); in place: fresh buffers cost more
        # than the arithmetic at 512 wide
        e = x.clamp(max=20.0).exp_()
        n = (e + 2.0).mul_(e)
        return n.div_(n + 2.0).mul_(x)


ACTIVATIONS: dict[str, Callable[[], nn.Module]] = {
    "relu": nn.ReLU,
    # exact (erf) GELU. The JAX codebases (FQL / OGBench, CFGRL) use flax nn.gelu, the tanh
    # approximation: at most 4.7e-4 apart, and ATen's CPU tanh form is 2-4x slower.
    "gelu": nn.GELU,
    "mish": Mish,
    "tanh": nn.Tanh,
    "silu": nn.SiLU,
}


def activation(name: str) -> nn.Module:
    try:
        return ACTIVATIONS[name]()
    except KeyError as err:
        raise ValueError(f"unknown activation {name!r}; valid: {sorted(ACTIVATIONS)}") from err


# Where a hidden layer's LayerNorm goes (the output layer never has one):
#   "pre_act":  Linear -> LayerNorm -> activation. ModeBench's original layout; the MLP's LayerNorm
#               has a learned scale and bias, the ensemble critic's has none (elementwise_affine=False).
#   "post_act": Linear -> activation -> LayerNorm with a learned scale and bias (per member in an
#               ensemble), eps 1e-6: flax's nn.LayerNorm defaults, as the FQL / DROL / CFGRL MLPs
#               (utils/networks.py: Dense -> act -> nn.LayerNorm()) build every hidden layer.
LayerNormPlacement = Literal["pre_act", "post_act"]
LAYER_NORM_PLACEMENTS: tuple[str, ...] = ("pre_act", "post_act")
FLAX_LAYER_NORM_EPS = 1e-6  # flax.linen.LayerNorm's default epsilon (torch's is 1e-5)


def _check_placement(placement: str) -> None:
    if placement not in LAYER_NORM_PLACEMENTS:
        raise ValueError(f"unknown layer_norm_placement {placement!r}; valid: {list(LAYER_NORM_PLACEMENTS)}")


def hidden_block(
    linear: nn.Module, width: int, act: str, layer_norm: bool, placement: str, pre_act_affine: bool,
    make_norm: Callable[[int], nn.Module] | None = None, dropout: float = 0.0,
) -> list[nn.Module]:
    """One hidden layer: `linear`, the activation, the LayerNorm where `placement` puts it, then
    dropout (after the activation, as the IQL authors' MLP). `make_norm(width)` builds the
    post-activation LayerNorm (default: nn.LayerNorm with flax's eps)."""
    _check_placement(placement)
    layers = [linear]
    if layer_norm and placement == "pre_act":
        layers.append(nn.LayerNorm(width, elementwise_affine=pre_act_affine))
    layers.append(activation(act))
    if layer_norm and placement == "post_act":
        layers.append(make_norm(width) if make_norm else nn.LayerNorm(width, eps=FLAX_LAYER_NORM_EPS))
    if dropout > 0:
        layers.append(nn.Dropout(dropout))
    return layers


class MLP(nn.Sequential):
    """Hidden layers Linear -> activation with an optional LayerNorm (`layer_norm_placement`) and
    dropout (active in train mode only); a plain linear output layer."""

    def __init__(
        self,
        in_dim: int,
        hidden_dims: Sequence[int],
        out_dim: int,
        act: str = "relu",
        layer_norm: bool = False,
        layer_norm_placement: LayerNormPlacement = "pre_act",
        dropout: float = 0.0,
    ):
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout}")
        layers: list[nn.Module] = []
        last = in_dim
        for width in hidden_dims:
            layers += hidden_block(nn.Linear(last, width), width, act, layer_norm, layer_norm_placement,
                                   pre_act_affine=True, dropout=dropout)
            last = width
        layers.append(nn.Linear(last, out_dim))
        super().__init__(*layers)


class EnsembleLinear(nn.Module):
    """M independent linear layers applied as one batched matmul: [M, B, in] -> [M, B, out].
    Seed-batched (`seeds` = S, weights [S, M, in, out]): the S x M members as one batch, [S M, B, ...]."""

    seeds: int | None = None

    def __init__(self, num_members: int, in_dim: int, out_dim: int):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(num_members, in_dim, out_dim))
        self.bias = nn.Parameter(torch.empty(num_members, 1, out_dim))
        bound = 1.0 / math.sqrt(in_dim)
        # Same init distribution as nn.Linear, drawn independently per member so heads differ.
        nn.init.uniform_(self.weight, -bound, bound)
        nn.init.uniform_(self.bias, -bound, bound)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.seeds is not None:
            return torch.baddbmm(self.bias.flatten(0, 1), x, self.weight.flatten(0, 1))
        return torch.baddbmm(self.bias, x, self.weight)


class EnsembleLayerNorm(nn.Module):
    """LayerNorm over the last dim of [M, B, width] with a learned scale and bias PER MEMBER
    ([M, 1, width]; ones and zeros at init), as a vmapped flax nn.LayerNorm gives each member.
    Seed-batched (`seeds` = S, [S, M, 1, width]): over the S x M members of [S M, B, width]."""

    seeds: int | None = None

    def __init__(self, num_members: int, width: int, eps: float = FLAX_LAYER_NORM_EPS):
        super().__init__()
        self.width, self.eps = width, eps
        self.weight = nn.Parameter(torch.ones(num_members, 1, width))
        self.bias = nn.Parameter(torch.zeros(num_members, 1, width))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        weight, bias = self.weight, self.bias
        if self.seeds is not None:
            weight, bias = weight.flatten(0, 1), bias.flatten(0, 1)
        return torch.addcmul(bias, F.layer_norm(x, (self.width,), eps=self.eps), weight)


class EnsembleMLP(nn.Module):
    """An ensemble of MLPs with stacked weights. Input [B, in] (shared) or [M, B, in] -> [M, B, out].
    Seed-batched (algorithms/seeds.py): [S, B, in] (shared by the members) -> [M, S, B, out]. Every
    ensemble output is member-first, [M, *lead, ...], so a reduction over members is over dim 0
    whatever the lead (critics.aggregate)."""

    seeds: int | None = None

    def __init__(
        self,
        num_members: int,
        in_dim: int,
        hidden_dims: Sequence[int],
        out_dim: int,
        act: str = "relu",
        layer_norm: bool = False,
        layer_norm_placement: LayerNormPlacement = "pre_act",
    ):
        super().__init__()
        self.num_members = num_members
        layers: list[nn.Module] = []
        last = in_dim
        for width in hidden_dims:
            layers += hidden_block(EnsembleLinear(num_members, last, width), width, act, layer_norm,
                                   layer_norm_placement, pre_act_affine=False,
                                   make_norm=lambda w: EnsembleLayerNorm(num_members, w))
            last = width
        layers.append(EnsembleLinear(num_members, last, out_dim))
        self.layers = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        m = self.num_members
        if self.seeds is None:
            if x.dim() == 2:
                x = x.unsqueeze(0).expand(m, -1, -1)
            return self.layers(x)
        x = x.unsqueeze(1).expand(-1, m, -1, -1)  # [S, M, B, in]: the layers batch the S x M members
        out = self.layers(x.reshape(self.seeds * m, *x.shape[2:]))
        return out.reshape(self.seeds, m, *out.shape[1:]).transpose(0, 1)


class EnsembleCritic(nn.Module):
    """Q_1..Q_M(s, a) as one network: forward returns [M, *lead, ...] for inputs [*lead, ..., d]
    (lead = (S,) seed-batched): member-first, as every ensemble output (EnsembleMLP)."""

    seeds: int | None = None

    def __init__(
        self,
        obs_dim: int,
        act_dim: int,
        hidden_dims: Sequence[int] = (256, 256),
        num_members: int = 2,
        act: str = "relu",
        layer_norm: bool = False,
        layer_norm_placement: LayerNormPlacement = "pre_act",
    ):
        super().__init__()
        self.num_members = num_members
        self.net = EnsembleMLP(num_members, obs_dim + act_dim, hidden_dims, 1, act, layer_norm, layer_norm_placement)

    def forward(self, obs: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        lead = obs.shape[:-1]
        width = obs.shape[-1] + actions.shape[-1]
        x = torch.cat([obs, actions], dim=-1)
        if self.seeds is None:
            return self.net(x.reshape(-1, width)).squeeze(-1).reshape(self.num_members, *lead)
        q = self.net(x.reshape(self.seeds, -1, width)).squeeze(-1)  # [M, S, N]
        return q.reshape(self.num_members, *lead)


class DiagonalGMM:
    """A batch of diagonal Gaussian mixtures: log-weights [..., K], means and log-stds [..., K, d].

    `log_stds` may be given in any shape that broadcasts against the means (a state-independent
    [K, d], or [S, 1, K, d] for S stacked seeds): `self.log_stds` is its expanded view, and the
    densities do their per-component work (exp, sum over d) on the compact tensor, once per
    distinct value instead of once per state; the values are the same either way."""

    def __init__(self, log_weights: torch.Tensor, means: torch.Tensor, log_stds: torch.Tensor):
        self.log_weights = log_weights
        self.means = means
        self.compact_log_stds = log_stds
        self.log_stds = log_stds.expand_as(means)

    @property
    def weights(self) -> torch.Tensor:
        return self.log_weights.exp()

    def component_log_probs(self, actions: torch.Tensor) -> torch.Tensor:
        """log N(a; mu_k, Sigma_k) for every component: actions [..., d] -> [..., K]."""
        log_stds = self.compact_log_stds
        z = (actions.unsqueeze(-2) - self.means) * torch.exp(-log_stds)
        d = self.means.shape[-1]
        return -0.5 * (z * z).sum(-1) - log_stds.sum(-1) - 0.5 * d * math.log(2 * math.pi)

    def joint_log_probs(self, actions: torch.Tensor) -> torch.Tensor:
        """u_k = log w_k + log N(a; mu_k, Sigma_k), [..., K]."""
        return self.log_weights + self.component_log_probs(actions)

    def log_prob(self, actions: torch.Tensor) -> torch.Tensor:
        return torch.logsumexp(self.joint_log_probs(actions), dim=-1)

    def sample(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """n samples per mixture: [..., n, d]."""
        lead = self.log_weights.shape[:-1]
        probs = self.log_weights.exp().reshape(-1, self.log_weights.shape[-1])
        idx = torch.multinomial(probs, n, replacement=True, generator=generator)  # [L, n]
        d = self.means.shape[-1]
        means = self.means.reshape(-1, *self.means.shape[-2:])
        log_stds = self.log_stds.reshape(-1, *self.log_stds.shape[-2:])
        gather = idx.unsqueeze(-1).expand(-1, -1, d)
        mu = torch.gather(means, 1, gather)
        std = torch.gather(log_stds, 1, gather).exp()
        noise = torch.randn(mu.shape, generator=generator, device=mu.device, dtype=mu.dtype)
        return (mu + std * noise).reshape(*lead, n, d)

    def gating_entropy(self) -> torch.Tensor:
        """H(w) = -sum_k w_k log(w_k + 1e-6), [...]."""
        w = self.weights
        return -(w * torch.log(w + 1e-6)).sum(-1)


class GMMPolicy(nn.Module):
    """s -> DiagonalGMM with K components. Log-stds are state-independent parameters by default."""

    seeds: int | None = None

    def __init__(
        self,
        obs_dim: int,
        act_dim: int,
        num_components: int,
        hidden_dims: Sequence[int] = (256, 256),
        act: str = "relu",
        state_dependent_std: bool = False,
        log_std_min: float = -5.0,
        log_std_max: float = 2.0,
        tanh_means: bool = True,
        init_log_std: float = 0.0,
    ):
        super().__init__()
        self.k, self.d = num_components, act_dim
        self.state_dependent_std = state_dependent_std
        self.log_std_min, self.log_std_max = log_std_min, log_std_max
        self.tanh_means = tanh_means
        out = num_components * (1 + act_dim + (act_dim if state_dependent_std else 0))
        self.net = MLP(obs_dim, hidden_dims, out, act)
        if not state_dependent_std:
            self.log_std = nn.Parameter(torch.full((num_components, act_dim), float(init_log_std)))

    def forward(self, obs: torch.Tensor) -> DiagonalGMM:
        out = self.net(obs)
        k, d = self.k, self.d
        logits = out[..., :k]
        means = out[..., k : k + k * d].unflatten(-1, (k, d))
        if self.tanh_means:
            means = torch.tanh(means)
        if self.state_dependent_std:
            log_std = out[..., k + k * d :].unflatten(-1, (k, d))
        else:
            # clamped before it is broadcast over the states (DiagonalGMM keeps the compact [K, d],
            # or [S, 1, K, d] stacked): the same values for a fraction of the work
            log_std = seed_view(self.log_std, means, self.seeds, param_dims=2)
        log_std = log_std.clamp(self.log_std_min, self.log_std_max)
        return DiagonalGMM(F.log_softmax(logits, dim=-1), means, log_std)


class GaussianPolicy(nn.Module):
    """Diagonal Gaussian with a tanh (or plain) mean and a state-independent log-std, learned
    (CORL's and the IQL authors' IQL actor) or constant at 0 (FQL's IQL actor, `learn_std=False`)."""

    seeds: int | None = None

    def __init__(
        self,
        obs_dim: int,
        act_dim: int,
        hidden_dims: Sequence[int] = (256, 256),
        act: str = "relu",
        log_std_min: float = -20.0,
        log_std_max: float = 2.0,
        tanh_mean: bool = True,
        dropout: float = 0.0,
        learn_std: bool = True,
    ):
        super().__init__()
        self.net = MLP(obs_dim, hidden_dims, act_dim, act, dropout=dropout)  # dropout: train mode only
        if learn_std:
            self.log_std = nn.Parameter(torch.zeros(act_dim))
        else:  # a constant std of 1 (FQL's Actor const_std=True): a buffer, never trained
            self.register_buffer("log_std", torch.zeros(act_dim))
        self.log_std_min, self.log_std_max = log_std_min, log_std_max
        self.tanh_mean = tanh_mean

    def mean(self, obs: torch.Tensor) -> torch.Tensor:
        mean = self.net(obs)
        return torch.tanh(mean) if self.tanh_mean else mean

    def forward(self, obs: torch.Tensor) -> torch.distributions.Normal:
        mean = self.mean(obs)
        std = seed_view(self.log_std.clamp(self.log_std_min, self.log_std_max).exp(), mean, self.seeds).expand_as(mean)
        return torch.distributions.Normal(mean, std, validate_args=False)

    def log_prob(self, obs: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        """sum_i log N(a_i; mu_i(s), sigma_i), written out (no distribution object in the hot loop)."""
        log_std = seed_view(self.log_std.clamp(self.log_std_min, self.log_std_max), actions, self.seeds)
        z = (actions - self.mean(obs)) * torch.exp(-log_std)
        return (-0.5 * z * z - log_std).sum(-1) - 0.5 * math.log(2 * math.pi) * actions.shape[-1]


# How a JAX code initialises its Dense layers (biases at zero in both):
#   "orthogonal": orthogonal kernels with gain sqrt(2) (the IQL authors' common.py default_init,
#                 every layer of actor, critic and value, the mean head too);
#   "fan_avg":    uniform in +-sqrt(3 s / ((fan_in + fan_out) / 2)), s = 1 (flax variance_scaling(1,
#                 'fan_avg', 'uniform'): FQL utils/networks.py default_init; its Actor's mean head s = 1e-2).
# "torch" keeps PyTorch's own Linear default.
INIT_SCHEMES = ("torch", "orthogonal", "fan_avg")


@torch.no_grad()
def init_linear_layers(module: nn.Module, scheme: str, output: nn.Module | None = None, output_scale: float = 1.0) -> None:
    """Re-initialise every nn.Linear / EnsembleLinear of `module` by `scheme` (INIT_SCHEMES), the
    layer `output` with its scale times `output_scale` (orthogonal: the gain, fan_avg: s)."""
    if scheme not in INIT_SCHEMES:
        raise ValueError(f"unknown init scheme {scheme!r}; valid: {list(INIT_SCHEMES)}")
    if scheme == "torch":
        return
    for layer in module.modules():
        if not isinstance(layer, (nn.Linear, EnsembleLinear)):
            continue
        scale = output_scale if layer is output else 1.0
        weight = layer.weight  # nn.Linear [out, in]; EnsembleLinear [M, in, out] (flax's kernel layout per member)
        fan_in, fan_out = (weight.shape[1], weight.shape[0]) if isinstance(layer, nn.Linear) else weight.shape[-2:]
        for kernel in (weight.reshape(-1, *weight.shape[-2:])):  # one 2-D kernel per member
            if scheme == "orthogonal":
                nn.init.orthogonal_(kernel, gain=math.sqrt(2.0) * scale)
            else:
                limit = math.sqrt(3.0 * scale / ((fan_in + fan_out) / 2.0))
                nn.init.uniform_(kernel, -limit, limit)
        layer.bias.zero_()


class FlowVelocityNet(nn.Module):
    """v(x_t, t, s[, token]) for conditional flow matching; tokens are learned embeddings."""

    def __init__(
        self,
        obs_dim: int,
        act_dim: int,
        hidden_dims: Sequence[int] = (512, 512, 512, 512),
        act: str = "gelu",
        num_tokens: int = 0,
        token_dim: int = 16,
        layer_norm: bool = False,
        layer_norm_placement: LayerNormPlacement = "pre_act",
    ):
        super().__init__()
        self.num_tokens = num_tokens
        self.token_embedding = nn.Embedding(num_tokens, token_dim) if num_tokens else None
        in_dim = obs_dim + act_dim + 1 + (token_dim if num_tokens else 0)
        self.net = MLP(in_dim, hidden_dims, act_dim, act, layer_norm, layer_norm_placement)

    def forward(
        self, x_t: torch.Tensor, t: torch.Tensor, obs: torch.Tensor, token: torch.Tensor | None = None
    ) -> torch.Tensor:
        if t.dim() == x_t.dim() - 1:
            t = t.unsqueeze(-1)
        parts = [obs, x_t, t.expand(*x_t.shape[:-1], 1)]
        if self.token_embedding is not None:
            if token is None:
                raise ValueError("this velocity net is token-conditioned: pass a token")
            parts.append(self.token_embedding(token))
        return self.net(torch.cat(parts, dim=-1))


def euler_integrate(
    velocity: Callable[[torch.Tensor, torch.Tensor], torch.Tensor], x0: torch.Tensor, steps: int
) -> torch.Tensor:
    """Integrate dx/dt = velocity(x, t) from t=0 to 1 with `steps` Euler steps."""
    x = x0
    dt = 1.0 / steps
    for i in range(steps):
        t = torch.full(x.shape[:-1], i * dt, device=x.device, dtype=x.dtype)
        x = x + dt * velocity(x, t)
    return x


def sample_ball(shape: Sequence[int], dim: int, radius: float, generator=None, device=None) -> torch.Tensor:
    """Exact uniform samples in the `dim`-ball: R * U^{1/d} * g / |g|, g ~ N(0, I), U ~ U(0, 1)."""
    g = torch.randn(*shape, dim, generator=generator, device=device)
    u = torch.rand(*shape, 1, generator=generator, device=device)
    return radius * u.pow(1.0 / dim) * g / g.norm(dim=-1, keepdim=True).clamp_min(1e-12)
