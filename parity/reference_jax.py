"""The authors' JAX agent, run by its own code in the reference interpreter (`make jax-venv`).

    .venv-jax/bin/python parity/reference_jax.py parity REPO MODULE CLASS IN.npz OUT.npz
    .venv-jax/bin/python parity/reference_jax.py serve  REPO MODULE CLASS DATA.npz CONFIG_JSON

Nothing of ModeBench is imported here (that venv has no torch and no modebench): only the
authors' repository (REPO on sys.path, as their main.py runs) and parity/convert.py's numpy helpers.

`parity`: builds the agent with `MODULE.get_config()` updated by IN's config, `CLASS.create(seed, ...)`,
then replays IN's batches with IN's random draws: every `jax.random.normal` / `jax.random.uniform`
the agent's code calls returns the next scripted array instead (its kind and shape are checked,
and a draw left over or missing is an error), with jit disabled so each update sees its own draws.
Writes the initial parameters, the first update's loss terms, gradients and parameters, `sample_actions`
on IN's observations after it, every update's loss terms and the parameters after the last update.

`serve`: the same agent, jitted and drawing from its own keys as the authors train it, on DATA's
arrays; answers "N" on stdin with the updates/s of N updates (perf/speed.py's block protocol).
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # parity.convert (numpy only)
from parity.convert import flatten


def load_agent(repo: str, module: str, cls: str, config: dict, example_obs, example_actions, seed: int):
    sys.path.insert(0, repo)
    import importlib

    agent_module = importlib.import_module(module)
    agent_config = agent_module.get_config()
    for key, value in config.items():
        if key not in agent_config:
            raise KeyError(f"{module}.get_config() has no key {key!r}")
        agent_config[key] = tuple(value) if isinstance(value, list) else value
    agent = getattr(agent_module, cls).create(seed, example_obs, example_actions, agent_config)
    return agent


def same_but_unit_axes(a, b) -> bool:
    """Shapes equal once their length-1 axes are dropped: the same draws laid out another way."""
    return [n for n in a if n != 1] == [n for n in b if n != 1]


class ScriptedDraws:
    """Replaces jax.random.normal / uniform with the next scripted array of the same kind and shape."""

    def __init__(self):
        self.queue: list[tuple[str, np.ndarray]] = []

    def install(self) -> None:
        import jax
        import jax.numpy as jnp

        originals = {"normal": jax.random.normal, "uniform": jax.random.uniform}

        def scripted(kind):
            def draw(key, shape=(), dtype=jnp.float32, *args, **kwargs):
                if isinstance(key, jax.core.Tracer):
                    # flax checks a stored parameter's shape by tracing its initializer
                    # (jax.eval_shape): not a draw of the agent's, whose keys are concrete here
                    return originals[kind](key, shape, dtype, *args, **kwargs)
                if not self.queue:
                    raise RuntimeError(f"the reference drew jax.random.{kind}{tuple(shape)} beyond the scripted draws")
                want_kind, value = self.queue.pop(0)
                if want_kind == kind and value.size == int(np.prod(shape)) and same_but_unit_axes(value.shape, shape):
                    value = value.reshape(shape)  # e.g. distrax's sample_shape (1,) in front
                if want_kind != kind or tuple(value.shape) != tuple(shape):
                    raise RuntimeError(f"the reference drew jax.random.{kind}{tuple(shape)} where the script has "
                                       f"{want_kind}{tuple(value.shape)}")
                return jnp.asarray(value, dtype=jnp.float32)
            return draw

        jax.random.normal = scripted("normal")
        jax.random.uniform = scripted("uniform")

    def load(self, draws: list[tuple[str, np.ndarray]]) -> None:
        if self.queue:
            raise RuntimeError(f"{len(self.queue)} scripted draws were not taken by the reference")
        self.queue = list(draws)

    def done(self) -> None:
        if self.queue:
            raise RuntimeError(f"{len(self.queue)} scripted draws were not taken by the reference: "
                               f"{[(k, v.shape) for k, v in self.queue]}")


def scripted(inputs, prefix: str) -> list[tuple[str, np.ndarray]]:
    """The draws stored under prefix/0, prefix/1, ... with their kinds."""
    draws = []
    while f"{prefix}/{len(draws)}" in inputs:
        i = len(draws)
        draws.append((str(inputs[f"{prefix}kind/{i}"]), inputs[f"{prefix}/{i}"]))
    return draws


def parity(repo: str, module: str, cls: str, in_path: str, out_path: str) -> None:
    import jax
    import jax.numpy as jnp

    inputs = dict(np.load(in_path, allow_pickle=False))
    config = json.loads(str(inputs["config"]))
    batches = {k[len("batch/"):]: v for k, v in inputs.items() if k.startswith("batch/")}
    steps = len(batches["observations"])
    agent = load_agent(repo, module, cls, config, batches["observations"][0], batches["actions"][0], int(inputs["seed"]))
    network_module = sys.modules[type(agent.network).__module__]
    captured = {}
    apply_gradients = network_module.TrainState.apply_gradients

    def capture(self, grads, **kwargs):
        captured.setdefault("grads", grads)
        return apply_gradients(self, grads=grads, **kwargs)

    network_module.TrainState.apply_gradients = capture
    draws = ScriptedDraws()
    draws.install()
    out = {f"init/{k}": v for k, v in flatten(agent.network.params).items()}
    losses: dict[str, list[float]] = {}
    with jax.disable_jit():
        for step in range(steps):
            draws.load(scripted(inputs, f"draw/{step}"))
            batch = {k: jnp.asarray(v[step]) for k, v in batches.items()}
            agent, info = agent.update(batch)
            draws.done()
            for key, value in info.items():
                losses.setdefault(key, []).append(float(value))
            if step == 0:
                out.update({f"grad1/{k}": v for k, v in flatten(captured["grads"]).items()})
                out.update({f"param1/{k}": v for k, v in flatten(agent.network.params).items()})
                out.update({f"loss1/{k}": np.float32(v) for k, v in info.items()})
                draws.load(scripted(inputs, "act/draw"))  # acting after the first update
                actions = agent.sample_actions(jnp.asarray(inputs["act/observations"]), seed=jax.random.PRNGKey(1),
                                               **json.loads(str(inputs["act/kwargs"])))
                draws.done()
                out["act/actions"] = np.asarray(actions)
    out.update({f"final/{k}": v for k, v in flatten(agent.network.params).items()})
    out.update({f"losses/{k}": np.asarray(v, np.float64) for k, v in losses.items()})
    np.savez(out_path, **out)


def serve(repo: str, module: str, cls: str, data_path: str, config_json: str) -> None:
    import jax

    data = dict(np.load(data_path))
    config = json.loads(config_json)
    batch_size = int(config.get("batch_size", 256))
    arrays = {"observations": data["observations"], "actions": data["actions"], "rewards": data["rewards"],
              "masks": 1.0 - data["terminals"], "next_observations": data["next_observations"]}
    agent = load_agent(repo, module, cls, config, arrays["observations"][:1], arrays["actions"][:1], 0)
    sampler = np.random.default_rng(0)

    def sample():  # as the authors' Dataset.sample: numpy indices, numpy arrays into the jitted update
        index = sampler.integers(0, len(arrays["observations"]), batch_size)
        return {k: v[index] for k, v in arrays.items()}

    for _ in range(20):  # compilation and warm-up
        agent, info = agent.update(sample())
    jax.block_until_ready(info)
    print("MODEBENCH ready", flush=True)
    for line in sys.stdin:
        updates = int(line)
        start = time.perf_counter()
        for _ in range(updates):
            agent, info = agent.update(sample())
        jax.block_until_ready(info)
        print("MODEBENCH", updates / (time.perf_counter() - start), flush=True)


if __name__ == "__main__":
    mode, *rest = sys.argv[1:]
    os.environ.setdefault("JAX_PLATFORMS", "cpu")
    {"parity": parity, "serve": serve}[mode](*rest)
