"""Each method next to its authors' agent: configs that mean the same, which network is which,
the random draws of one update by role and the order each side takes them, loss-term names.

Every "by design" factor below is a documented difference (docs/parity.md), not a tolerance.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Callable, Iterator

from torch import nn

from parity.harness import MethodSpec


@contextlib.contextmanager
def flax_gelu() -> Iterator[None]:
    """Our "gelu" as flax's nn.gelu (the tanh approximation) while the check builds and runs ours.
    ModeBench's default is the exact erf GELU (algorithms/nets.py: up to 4.7e-4 apart): a
    documented numerics choice, measured separately (`--exact-gelu`)."""
    from modebench.algorithms import nets

    exact = nets.ACTIVATIONS["gelu"]
    nets.ACTIVATIONS["gelu"] = functools.partial(nn.GELU, approximate="tanh")
    try:
        yield
    finally:
        nets.ACTIVATIONS["gelu"] = exact


def _critic_loss_scale(num_q: int) -> float:
    # TDCritic sums the squared TD error over its heads, the code averages: ours = num_q x theirs
    return float(num_q)


def critic_adam_eps(num_q: int) -> Callable[[nn.Module], None]:
    """Our critic's Adam eps x num_q: with its loss num_q x theirs (a power of two, so exactly),
    num_q g / (num_q |g| + num_q eps) is their g / (|g| + eps), bit for bit. Without it the two
    differ only for gradient entries of the order of eps (1e-8): measured by `--no-adjust`."""

    def adjust(algorithm: nn.Module) -> None:
        critic = {id(p) for p in algorithm.critic.q.parameters()}
        for group in algorithm.optimizer.param_groups:
            if all(id(p) in critic for p in group["params"]):
                group["eps"] *= num_q
    return adjust


TARGET_LAG = ("the authors' target_update reads self.network.params, the critic BEFORE this update's "
              "step (a one-update lag); ours Polyak-averages the critic after the step")


FQL = MethodSpec(
    name="fql",
    owner_repo="seohongpark/fql",
    reference_module="agents.fql",
    reference_class="FQLAgent",
    task="antmaze-large-navigate-singletask (README: --agent.q_agg=min --agent.alpha=10)",
    reference_config={"q_agg": "min", "alpha": 10.0},
    our_config={"q_agg": "min", "alpha": 10.0, "layer_norm_placement": "post_act"},
    networks={
        "modules_critic/value_net": "critic.q.net",
        "modules_target_critic/value_net": "critic.q_target.net",
        "modules_actor_bc_flow/mlp": "flow.net",
        "modules_actor_onestep_flow/mlp": "onestep",
    },
    # critic_loss: the TD target's next action (sample_actions); actor_loss: x0, t, z, and one
    # more sample_actions for its 'mse' metric (ours has no such metric: that draw is theirs only)
    draws=lambda b, d: {"next_z": ("normal", (b, d)), "x0": ("normal", (b, d)), "t": ("uniform", (b, 1)),
                        "z": ("normal", (b, d)), "mse_z": ("normal", (b, d))},
    reference_order=["next_z", "x0", "t", "z", "mse_z"],
    our_order=["x0", "t", "z", "next_z"],
    act_draws=lambda b, d: {"z": ("normal", (b, d))},
    act_reference_order=["z"],
    act_our_order=["z"],
    losses={
        "critic/critic_loss": ("training/q_loss", _critic_loss_scale(2)),
        "critic/q_mean": ("training/q_mean", 1.0),
        "actor/bc_flow_loss": ("training/flow_bc_loss", 1.0),
        "actor/distill_loss": ("training/distill_loss", 1.0),
        "actor/q_loss": ("training/actor_q_loss", 1.0),
        "actor/q": ("training/q_pi", 1.0),
        "actor/actor_loss": ("training/actor_loss", 1.0),
    },
    grad_scale={"modules_critic/value_net": _critic_loss_scale(2)},
    targets={"modules_target_critic/value_net": "modules_critic/value_net"},
    patches=flax_gelu,
    adjust=critic_adam_eps(2),
    listed={"param modules_target_critic": TARGET_LAG},
)

DROL = MethodSpec(
    name="drol",
    owner_repo="muzhancun/DROL",
    reference_module="agents.drol",
    reference_class="DROLAgent",
    task="antmaze-large-navigate-singletask (scripts/production_run_commands.sh: bc_coef 0.03, K 16, "
         "discount 0.995, q_agg min)",
    reference_config={"bc_coef": 0.03, "num_candidates": 16, "discount": 0.995, "q_agg": "min"},
    our_config={"alpha": 0.03, "num_candidates": 16, "discount": 0.995, "q_agg": "min", "layer_norm_placement": "post_act"},
    networks={
        "modules_critic/value_net": "critic.q.net",
        "modules_target_critic/value_net": "critic.q_target.net",
        "modules_actor_onestep_flow/mlp": "actor",
    },
    # a latent in the ball: a normal direction, then a uniform radius. critic_loss draws the TD
    # target's latent first, actor_loss the K candidates' and one more for its 'mse' metric
    draws=lambda b, d: {"next_g": ("normal", (b, d)), "next_u": ("uniform", (b, 1)),
                        "g": ("normal", (b, 16, d)), "u": ("uniform", (b, 16, 1)),
                        "mse_g": ("normal", (b, d)), "mse_u": ("uniform", (b, 1))},
    reference_order=["next_g", "next_u", "g", "u", "mse_g", "mse_u"],
    our_order=["g", "u", "next_g", "next_u"],
    act_draws=lambda b, d: {"g": ("normal", (b, d)), "u": ("uniform", (b, 1))},
    act_reference_order=["g", "u"],
    act_our_order=["g", "u"],
    losses={
        "critic/critic_loss": ("training/q_loss", _critic_loss_scale(2)),
        "critic/q_mean": ("training/q_mean", 1.0),
        "actor/bc_loss": ("training/bc_loss", 1.0),
        "actor/q_loss": ("training/actor_q_loss", 1.0),
        "actor/q": ("training/q_pi", 1.0),
        "actor/actor_loss": ("training/actor_loss", 1.0),
        "actor/candidate_divergence": ("training/candidate_divergence", 1.0),
        "actor/best_idx_entropy": ("training/winner_usage_entropy", 1.0),
        "actor/best_idx_max_prob": ("training/winner_usage_max", 1.0),
    },
    grad_scale={"modules_critic/value_net": _critic_loss_scale(2)},
    targets={"modules_target_critic/value_net": "modules_critic/value_net"},
    patches=flax_gelu,
    adjust=critic_adam_eps(2),
    listed={"param modules_target_critic": TARGET_LAG},
)

METHODS: dict[str, MethodSpec] = {"fql": FQL, "drol": DROL}
