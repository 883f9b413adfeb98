"""The optimizer every method uses: torch's fused Adam, with its per-step bookkeeping cached.

torch.optim.Adam(fused=True).step re-walks every parameter group in Python on each call
(per-parameter state lookups, list building, grouping by device and dtype, one step-counter
increment per group). On the small networks of offline RL that costs as much as the fused
kernel itself (about 0.6 ms of a 1 ms step at IQL's sizes on a 2-core CPU). `FusedAdam`
calls the same kernel, `torch._fused_adam_`, with the same arguments, from lists built once
per set of parameters that have gradients, so its numbers are bitwise torch's fused Adam's
(tests/test_core_math.py). Anything outside that path (a closure, amsgrad, AdamW-style decay,
mixed devices or dtypes, parameters not yet initialised) takes torch's own step.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch
from torch import nn


class FusedAdam(torch.optim.Adam):
    """torch.optim.Adam(fused=True) whose step and zero_grad skip the Python re-walk."""

    def __init__(self, params: Iterable[Any], lr: float):
        self._plans: dict[tuple, tuple[list[tuple], list[torch.Tensor]] | None] = {}
        super().__init__(params, lr=lr, fused=True)

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        super().add_param_group(param_group)
        self._plans.clear()

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        super().load_state_dict(state_dict)
        self._plans.clear()  # the cached lists point at the replaced state tensors

    def zero_grad(self, set_to_none: bool = True) -> None:
        if not set_to_none:
            return super().zero_grad(set_to_none)
        for group in self.param_groups:
            for p in group["params"]:
                p.grad = None

    def _plan(self, key: tuple) -> tuple[list[tuple], list[torch.Tensor]] | None:
        """(per group: (params, exp_avgs, exp_avg_sqs, steps) of the parameters with gradients;
        every group's step counters in one list), or None where the fast path does not apply."""
        plan = []
        for group, has_grad in zip(self.param_groups, key):
            if group["amsgrad"] or group["capturable"] or group["differentiable"] or group.get("decoupled_weight_decay"):
                return None
            params = [p for p, active in zip(group["params"], has_grad) if active]
            states = [self.state.get(p) for p in params]
            if any(not s for s in states):
                return None  # first step of these parameters: torch's step initialises their state
            tensors = params + [s[k] for s in states for k in ("exp_avg", "exp_avg_sq", "step")]
            if len({(t.device, t.dtype) for t in tensors}) > 1:
                return None
            plan.append((params, [s["exp_avg"] for s in states], [s["exp_avg_sq"] for s in states],
                         [s["step"] for s in states]))
        return plan, [step for entry in plan for step in entry[3]]

    @torch.no_grad()
    def step(self, closure=None):
        if closure is not None:
            return super().step(closure)
        grads = [[p.grad for p in group["params"]] for group in self.param_groups]
        key = tuple(tuple(g is not None for g in group_grads) for group_grads in grads)
        if key not in self._plans:
            self._plans[key] = self._plan(key)
        plan = self._plans[key]
        if plan is None:
            super().step()
            self._plans.pop(key)  # state now exists: plan again next step
            return None
        per_group, all_steps = plan
        torch._foreach_add_(all_steps, 1)
        for group, group_grads, (params, exp_avgs, exp_avg_sqs, steps) in zip(self.param_groups, grads, per_group):
            if not params:
                continue
            beta1, beta2 = group["betas"]
            torch._fused_adam_(
                params, [g for g in group_grads if g is not None], exp_avgs, exp_avg_sqs, [], steps,
                lr=group["lr"], beta1=beta1, beta2=beta2, weight_decay=group["weight_decay"], eps=group["eps"],
                amsgrad=False, maximize=group["maximize"], grad_scale=None, found_inf=None,
            )
        return None


def make_adam(
    param_groups: Iterable[dict] | Iterable[nn.Parameter], lr: float, device: torch.device
) -> torch.optim.Adam:
    """Adam with the fused kernel (one launch for all parameters) where the device supports it."""
    groups = list(param_groups)
    if device.type in ("cpu", "cuda"):
        return FusedAdam(groups, lr)
    return torch.optim.Adam(groups, lr=lr)
