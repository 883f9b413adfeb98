"""Each method next to its authors' agent: configs that mean the same, which network is which,
the random draws of one update by role and the order each side takes them, loss-term names.

Every "by design" factor below is a documented difference (docs/parity.md), not a tolerance.
"""

from __future__ import annotations

import contextlib
import dataclasses
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

IQL = MethodSpec(
    name="iql",
    owner_repo="seohongpark/fql",
    reference_module="agents.iql",
    reference_class="IQLAgent",
    task="antmaze-large-navigate-singletask (OGBench's published IQL: expectile 0.9, AWR alpha 10, discount 0.99)",
    reference_config={"expectile": 0.9, "alpha": 10.0, "actor_loss": "awr"},
    # FQL's IQL agent as our IQL's options say it (IQLConfig: each field names the code it follows)
    our_config={"expectile": 0.9, "beta": 10.0, "hidden_dims": (512, 512, 512, 512), "activation": "gelu",
                "actor_tanh_mean": False, "actor_std": "constant", "log_std_min": -5.0, "log_std_max": 2.0,
                "advantage_q": "online", "actor_cosine_lr": False, "critic_layer_norm": True,
                "layer_norm_placement": "post_act"},
    networks={
        "modules_value/value_net": "critic.v",
        "modules_critic/value_net": "critic.q.net",
        "modules_target_critic/value_net": "critic.q_target.net",
        "modules_actor/actor_net+modules_actor/mean_net": "actor.net",
    },
    draws=lambda b, d: {},  # an AWR update draws nothing
    reference_order=[],
    our_order=[],
    # evaluation: sample_actions(temperature=0) is the mean (a std-0 sample of one normal draw), ours the mean
    act_draws=lambda b, d: {"z": ("normal", (b, d))},
    act_reference_order=["z"],
    act_our_order=[],
    reference_act_kwargs={"temperature": 0.0},
    losses={
        "value/value_loss": ("training/value_loss", 1.0),
        "value/v_mean": ("training/v_mean", 1.0),
        "critic/critic_loss": ("training/q_loss", 1.0),
        "actor/actor_loss": ("training/actor_loss", 1.0),
    },
    grad_scale={},
    targets={"modules_target_critic/value_net": "modules_critic/value_net"},
    patches=flax_gelu,
    listed={"param modules_target_critic": TARGET_LAG},
    # our registry's IQL is CORL's sizes (2 x 256, no LayerNorm): the reference times at those
    throughput_config={"actor_hidden_dims": [256, 256], "value_hidden_dims": [256, 256], "layer_norm": False},
)

METHODS["iql"] = IQL


def zero_learning_rates(*networks: str) -> Callable[[nn.Module], None]:
    """Learning rate 0 for the parameter groups of our `networks` (attribute names)."""

    def adjust(algorithm: nn.Module) -> None:
        for name in networks:
            ids = {id(p) for p in getattr(algorithm, name).parameters()}
            for group in algorithm.optimizer.param_groups:
                if all(id(p) in ids for p in group["params"]):
                    group["lr"] = 0.0
    return adjust


LOM_TASK = "hopper-full-replay-v2"  # the code's hyperparams row: K 2, M 10, beta 5, ac_rand 0, smooth_noise 0.2, C 50
LOM_NETWORKS = {"gmm": "mdn.net", "q": "critic.q.net", "q_target": "critic.q_target.net",
                "mode_net": "hyper_q.net", "policy": "actor.net"}
LOM_SEQUENTIAL = ("the code steps Q, then the hyper-Q with the new Q, then the policy with both new nets (train_models); "
                  "ours steps all three at once from the pre-update nets (LOM docstring: the one-step lag)")
LOM_DRIFT = MethodSpec(
    name="lom-code",
    owner_repo="MianchuWang/LOM",
    reference_module="agents.lom",
    reference_class="LOM",
    task=f"{LOM_TASK} (agents/lom.py hyperparams)",
    reference_config={"env_name": LOM_TASK, "mdn_steps": 1, "compare_steps": [0, 1]},
    our_config={"num_modes": 10, "num_q": 2, "beta": 5.0, "max_weight": 50.0, "imitation_noise": 0.0,
                "sarsa_noise": 0.2, "mdn_steps": 1, "mdn_init_mean_spread": 0.0,
                "clip_hyper_q_samples": False, "imitation_target_clip": "before_noise"},
    networks=LOM_NETWORKS,
    # train_value_function: the smoothing noise on a'; train_mode_function: one sample of every
    # mode; get_mode_actions: the greedy mode's sample; train_policy: ac_rand's noise (x 0 here)
    draws=lambda b, d: {"sarsa": ("normal", (b, d)), "hyper": ("normal", (b, 10, d)), "a_hat": ("normal", (b, d)),
                        "imitation": ("normal", (b, d))},
    reference_order=["sarsa", "hyper", "a_hat", "imitation"],
    our_order=["sarsa", "hyper", "a_hat"],
    act_draws=lambda b, d: {},
    act_reference_order=[],
    act_our_order=[],
    losses={
        "gmm_policy/loss": ("training/mdn_nll", 1.0),
        "mode_function/mode_loss": ("training/hyper_q_loss", 1.0),
        "policy/loss": ("training/actor_loss", 1.0),
        "policy/weights": ("training/adv_weight_mean", 1.0),
    },
    grad_scale={},
    targets={"q_target": "q"},
    width_keys=((), "hidden_dims"),  # the code's widths are literals (512 MDN, 256 the rest)
    reference_script="reference_lom.py",
    compare_steps=(0, 1),
    draw_free_steps=1,
    skip_grads={1: ("gmm",)},  # the MDN is frozen after its phase; the code's .grad keeps its last step's
    listed={"param q_target": "the code's first Polyak update comes after its first Q step (training_steps 0 % 2), "
                              "ours after the second (Algorithm 1's i = 2)"},
)
# The one-update check: Q's and the hyper-Q's learning rates 0 on both sides, so the code's order
# (Q, then hyper-Q reading the new Q, then policy reading both) is the same update as ours (all
# three from the pre-update nets) and every loss and gradient compares; the MDN's log-std head
# starts at -1 on both sides, below the code's clamp at 0 that its greedy-mode sample skips.
# The drift run (LOM_DRIFT) has neither control.
LOM = dataclasses.replace(
    LOM_DRIFT,
    reference_config={**LOM_DRIFT.reference_config, "zero_lr": ["q", "mode"], "log_std_bias": -1.0},
    adjust=zero_learning_rates("critic", "hyper_q"),
    drift=LOM_DRIFT,
)
METHODS["lom"] = LOM
