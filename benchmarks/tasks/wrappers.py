"""Test-time environment perturbations.

MassScale (GEM, Appendix A.4): "scale MuJoCo body masses at test time, with all learned
networks fixed and no retraining". A suite task asks for it in its environment spec,
`env: {source: ..., mass_scale: 1.5}`, and every environment source accepts the key
(benchmarks/tasks/sources.py). The paper does not say whether inertias follow the masses; by
default they do (the same bodies made of a denser material, which keeps each body's
inertia consistent with its mass); `scale_inertia: false` scales the masses alone.
"""

from __future__ import annotations

from collections.abc import Sequence

import gymnasium as gym
import numpy as np
from modebench.algorithms.config import ConfigError


def mujoco_model(env: gym.Env):
    """The MjModel behind a gymnasium MuJoCo env (gymnasium, gymnasium-robotics, OGBench)."""
    base = env.unwrapped
    for attr in ("model", "_model"):
        model = getattr(base, attr, None)
        if model is not None and hasattr(model, "body_mass"):
            return model
    raise ConfigError(
        f"mass_scale needs a MuJoCo environment; {type(base).__name__} exposes no MjModel (.model or ._model)"
    )


class MassScale(gym.Wrapper):
    """Multiply the masses (and by default the inertias) of MuJoCo bodies by `scale`.

    `bodies`: body names to scale (default: every body but the world body). The nominal
    values are kept, so scaling is never compounded across resets; the scaled model is in
    place from construction on (the model is re-scaled at every reset in case the env
    rebuilt it).
    """

    def __init__(self, env: gym.Env, scale: float, bodies: Sequence[str] | None = None, scale_inertia: bool = True):
        if not (np.isfinite(scale) and scale > 0):
            raise ConfigError(f"mass_scale must be a positive finite number, got {scale}")
        super().__init__(env)
        self.scale = float(scale)
        self.scale_inertia = bool(scale_inertia)
        self.body_names = list(bodies) if bodies is not None else None
        self._apply()

    def _indices(self, model) -> np.ndarray:
        if self.body_names is None:
            return np.arange(1, model.nbody)  # body 0 is the world
        import mujoco

        ids = []
        for name in self.body_names:
            idx = mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_BODY, name)
            if idx < 0:
                raise ConfigError(f"mass_bodies: no body named {name!r} in {type(self.env.unwrapped).__name__}")
            ids.append(idx)
        return np.asarray(ids, dtype=np.int64)

    def _apply(self) -> None:
        model = mujoco_model(self.env)
        if getattr(self, "_model_ref", None) is not model:
            self._model_ref = model
            self._idx = self._indices(model)
            self.nominal_mass = model.body_mass[self._idx].copy()
            self.nominal_inertia = model.body_inertia[self._idx].copy()
        model.body_mass[self._idx] = self.nominal_mass * self.scale
        if self.scale_inertia:
            model.body_inertia[self._idx] = self.nominal_inertia * self.scale

    def reset(self, **kwargs):
        self._apply()
        return self.env.reset(**kwargs)


def apply_mass_scale(env: gym.Env, mass_scale: float | None, mass_bodies: Sequence[str] | None = None,
                     scale_inertia: bool = True) -> gym.Env:
    """`env` wrapped in MassScale, or `env` itself when no scale (or 1.0 with every body) is asked."""
    if mass_scale is None or (float(mass_scale) == 1.0 and mass_bodies is None):
        return env
    return MassScale(env, float(mass_scale), mass_bodies, scale_inertia)
