"""Method registry: a plain dict from a method's name to its class and presets.

A preset is a named variant of a method (a paper ablation, a code-faithful configuration):
the same class with fixed config and knob overrides. Classes are imported lazily so that
`modebench --help` stays fast and one method's optional dependencies never block another.
This is the project's one dynamic import (`importlib.import_module` of the `target` written
in the list below, never a computed name); tests/test_imports.py allows it here and nowhere else.
Adding a method is one file and one line in METHODS.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from typing import Any

from modebench.algorithms.base import Algorithm


class UnknownMethodError(KeyError):
    def __str__(self) -> str:  # KeyError quotes its message; show it plainly
        return str(self.args[0])


@dataclass(frozen=True)
class MethodEntry:
    """Where a method's class lives, plus fixed config/knob overrides for presets."""

    target: str  # "module:ClassName"
    config: dict[str, Any] = field(default_factory=dict)
    knobs: dict[str, Any] = field(default_factory=dict)
    description: str = ""

    @property
    def is_base(self) -> bool:
        """A method's own entry, not a preset (no fixed config or knob overrides)."""
        return not self.config and not self.knobs

    def load(self) -> type[Algorithm]:
        module_name, class_name = self.target.split(":")
        return getattr(importlib.import_module(module_name), class_name)


METHODS: dict[str, MethodEntry] = {
    "bc": MethodEntry("modebench.algorithms.bc:BC", description="Gaussian behaviour cloning"),
    "iql": MethodEntry("modebench.algorithms.iql:IQL", description="Implicit Q-Learning (CORL fidelity)"),
    "gem": MethodEntry("modebench.algorithms.gem:GEM", description="GEM: guided-EM GMM actor + LCB / z-scored-support candidate selection"),
    "gem-no-pw": MethodEntry("modebench.algorithms.gem:GEM", knobs={"use_pw": False}, description="GEM Table 5 ablation: no support term (w_p = 0)"),
    "gem-no-lcb": MethodEntry("modebench.algorithms.gem:GEM", knobs={"lcb_lambda": 0.0}, description="GEM Table 5 ablation: no pessimism (lambda = 0)"),
    "gem-no-anchor": MethodEntry("modebench.algorithms.gem:GEM", knobs={"anchor": "off"}, description="GEM Table 5 ablation: no anchor a_0"),
    "gem-anchor-bary": MethodEntry("modebench.algorithms.gem:GEM", knobs={"anchor": "bary"}, description="GEM Table 5 ablation: barycentre anchor sum_k w_k mu_k"),
    "gem-unimodal-actor": MethodEntry("modebench.algorithms.gem:GEM", config={"num_components": 1}, description="GEM Table 5 ablation: K = 1 actor (retrains)"),
    "gem-behavior-candidates": MethodEntry("modebench.algorithms.gem:GEM", knobs={"candidate_source": "behavior"}, description="GEM Table 5 ablation: candidates from mu_phi only"),
    "gem-raw-support": MethodEntry("modebench.algorithms.gem:GEM", knobs={"support_mode": "raw"}, description="GEM Table 8 ablation: raw log mu_phi support (no z-score)"),
    "isep": MethodEntry("modebench.algorithms.isep:ISEP", description="ISEP (Gaussian): interpolated value Eq. 2 + stochastic action selection Eq. 5"),
    "isep-fm": MethodEntry("modebench.algorithms.isep:ISEPFM", description="ISEP-FM: interpolated value + gated CFG flow matching (Eq. 2, 6, 7)"),
    "isep-deterministic": MethodEntry(
        "modebench.algorithms.isep:ISEP", config={"selection": "deterministic"},
        description="ISEP ablation (Sec. 5.3.3): deterministic interpolation of the two targets (App. B Eq. 29)",
    ),
    "cfgrl": MethodEntry(
        "modebench.algorithms.isep:ISEPFM",
        config={
            "lam": 0.0, "expectile": 0.9, "token_rule": "ge", "token_critic": "online", "flow_activation": "gelu",
            "token_dim": 32, "critic_hidden_dims": (512, 512, 512, 512), "critic_layer_norm": True, "batch_size": 1024,
        },
        knobs={"w": 1.0, "T": 16},
        description="CFGRL as its code runs it (kvfrans/cfgrl_submit flowiql.py): ISEP-FM with lam = 0",
    ),
    "drol": MethodEntry("modebench.algorithms.drol:DROL", description="DROL: top-1 routed one-step latent actor, authors' code loss form"),
    "drol-eq8": MethodEntry(
        "modebench.algorithms.drol:DROL", config={"loss_form": "eq8", "normalize_q_loss": False},
        description="DROL with the paper's Eq. 8 loss: |a^{k*} - a|^2 - alpha Q (alpha weighs the raw Q)",
    ),
    "fql": MethodEntry("modebench.algorithms.fql:FQL", description="FQL: flow BC teacher + distilled one-step policy (seohongpark/fql)"),
    "lom": MethodEntry("modebench.algorithms.lom:LOM", description="LOM: weighted imitation on one MDN mode (paper, Eq. 14-18)"),
    "lom-code": MethodEntry(
        "modebench.algorithms.lom:LOM",
        # = algorithms.lom.CODE_PRESET (kept literal so the registry imports no method module)
        config={
            "mdn_scale": "diagonal", "mdn_tanh_means": True, "mdn_log_std_min": -15.0, "mdn_log_std_max": 0.0,
            "hidden_dims": (256, 256), "num_q": 2, "q_target_agg": "min", "q_eval": "first",
            "sarsa_noise": 0.2, "sarsa_noise_clip": 0.5, "hyper_q_input": "onehot", "hyper_q_samples": 1,
            "weight_form": "beta_times", "advantage_baseline": "policy", "imitation_noise": 0.2,
            "policy_loss": "mse",
        },
        description="LOM as the authors' public code runs it (MianchuWang/LOM agents/lom.py)",
    ),
}


def method_names() -> list[str]:
    return sorted(METHODS)


def get_method(name: str) -> MethodEntry:
    try:
        return METHODS[name]
    except KeyError:
        raise UnknownMethodError(
            f"unknown method {name!r}; registered methods: {', '.join(method_names())}"
        ) from None


def base_method(name: str) -> str:
    """The registry name of the class a preset uses (e.g. 'gem-no-pw' -> 'gem')."""
    target = get_method(name).target
    for other, entry in METHODS.items():
        if entry.target == target and not entry.config and not entry.knobs:
            return other
    return name
