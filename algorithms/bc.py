"""BC: Gaussian behaviour cloning, L = -E[log pi(a | s)], evaluated at the mean.

The baseline that exposes the multimodal failure: a unimodal Gaussian fit to a multimodal
action distribution puts its mean between the modes.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from modebench.algorithms.base import ActOutput, AlgoConfig, Algorithm, Batch, EnvSpec
from modebench.algorithms.config import MAX_WIDTH, field
from modebench.algorithms.nets import GaussianPolicy
from modebench.algorithms.optim import make_adam
from modebench.algorithms.seeds import seed_mean


@dataclass
class BCConfig(AlgoConfig):
    hidden_dims: tuple[int, ...] = field((256, 256), help="actor MLP widths", ge=1, le=MAX_WIDTH)
    lr: float = field(3e-4, help="Adam learning rate", gt=0.0)


class BC(Algorithm):
    name = "bc"
    config_class = BCConfig
    can_propose = True

    def __init__(self, config: BCConfig, spec: EnvSpec, device="cpu"):
        super().__init__(config, spec, device)
        self.actor = GaussianPolicy(spec.obs_dim, spec.act_dim, config.hidden_dims)
        self.to(self.device)
        self.optimizer = make_adam(self.actor.parameters(), config.lr, self.device)

    def losses(self, batch: Batch, step: int) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        loss = -seed_mean(self.actor.log_prob(batch.observations, batch.actions), self.seeds)
        return loss, {"training/actor_loss": loss.detach()}

    @torch.no_grad()
    def act(self, obs: torch.Tensor, t: torch.Tensor, knobs) -> ActOutput:
        return ActOutput(self.actor(obs).mean.clamp(-1.0, 1.0))

    @torch.no_grad()
    def propose(self, obs: torch.Tensor, n: int) -> torch.Tensor:
        return self.actor(obs).sample((n,)).transpose(0, 1).clamp(-1.0, 1.0)
