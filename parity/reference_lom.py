"""The authors' LOM (MianchuWang/LOM, PyTorch), run by its own code in a separate interpreter.

    python parity/reference_lom.py parity REPO MODULE CLASS IN.npz OUT.npz
    python parity/reference_lom.py serve  REPO MODULE CLASS DATA.npz CONFIG_JSON

The same protocol as parity/reference_jax.py (its docstring says what is written), for a torch
agent: `agents.lom.LOM(env_name=TASK, ...)` is built by its own __init__ (its networks, Adam
optimizers and the per-dataset `hyperparams` row) except the 200,000 MDN steps it runs there
(`tqdm` over them answers an empty range: the harness steps the MDN itself); its replay buffer
is one that hands out the harness's batch; `normalise=0` (the harness feeds both sides the same
observations). One update is its `train_models` in the same order (Q, hyper-Q, policy, Polyak
every `policy_delay`), with the harness's batch size for every loss; an MDN-phase update is its
`train_GMM`. Every `torch.randn_like` / `torch.normal` the agent calls returns the next scripted
draw. Parameters are written in the flax MLP layout (parity/convert.py), the K Q nets stacked
as one ensemble, so the harness compares them as it does the JAX references'.

Its base_agent.py imports sklearn's StandardScaler for observation normalisation; with
normalise=0 only `fit` is called, so when sklearn is absent a stand-in whose fit does nothing
is used (ModeBench's venv has no sklearn).
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
import tempfile
import time
import types
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from parity.convert import flatten, torch_to_flax
from parity.reference_jax import same_but_unit_axes


def import_lom(repo: str, module: str):
    import importlib

    sys.path.insert(0, repo)
    try:
        import sklearn.preprocessing  # noqa: F401
    except ImportError:
        class StandardScaler:  # normalise=0: fitted, never applied
            def fit(self, x):
                return self

        # only while their modules import (their base_agent binds the name); torch's own module
        # scans must not see a stand-in sklearn afterwards
        stand_in = types.ModuleType("sklearn.preprocessing")
        stand_in.StandardScaler = StandardScaler
        sys.modules["sklearn"], sys.modules["sklearn.preprocessing"] = types.ModuleType("sklearn"), stand_in
        try:
            lom = importlib.import_module(module)
        finally:
            del sys.modules["sklearn"], sys.modules["sklearn.preprocessing"]
    else:
        lom = importlib.import_module(module)
    lom.tqdm = lambda iterable, *args, **kwargs: iter(())  # the 200k MDN steps of __init__: stepped by the harness
    return lom


class Buffer:
    """Their ReplayBuffer's interface over arrays: `batch` set -> every sample returns it."""

    def __init__(self, arrays: dict[str, np.ndarray]):
        self.obs = arrays["observations"]
        self.arrays = arrays
        self.batch = None
        self.rng = np.random.default_rng(0)

    def get_bounds(self):
        return len(self.obs)

    def _rows(self, batch_size):
        if self.batch is not None:
            return self.batch
        index = self.rng.integers(0, len(self.obs), batch_size)
        return {k: v[index] for k, v in self.arrays.items()}

    def sample(self, batch_size):
        b = self._rows(batch_size)
        return b["observations"], b["actions"], b["rewards"], b["next_observations"], b["terminals"]

    def sample_with_next_action(self, batch_size):
        b = self._rows(batch_size)
        return b["observations"], b["actions"], b["rewards"], b["next_observations"], b["next_actions"], b["terminals"]


def build(repo, module, cls, config, arrays, seed):
    import torch

    lom = import_lom(repo, module)
    torch.manual_seed(seed)
    buffer = Buffer(arrays)
    with tempfile.TemporaryDirectory() as tmp, contextlib.chdir(tmp):  # __init__ saves gmm_<env>.pth to the cwd
        agent = getattr(lom, cls)(env_name=config["env_name"], replay_buffer=buffer, state_dim=arrays["observations"].shape[1],
                                  ac_dim=arrays["actions"].shape[1], device="cpu", discount=config.get("discount", 0.99), normalise=0)
    with torch.no_grad():
        if "log_std_bias" in config:  # the harness's controlled init (see parity/methods.py LOM)
            m, d = agent.params["num_mixtures"], agent.ac_dim
            agent.gmm.model[-1].bias[m * d: 2 * m * d].fill_(config["log_std_bias"])
    for name in config.get("zero_lr", []):  # the harness's controlled learning rates
        for opt in ({"q": agent.q_net_opts, "mode": [agent.mode_net_opt]}[name]):
            for group in opt.param_groups:
                group["lr"] = 0.0
    return agent, buffer


def mlp(sequential) -> dict:
    import torch

    linears = [m for m in sequential if isinstance(m, torch.nn.Linear)]
    return {f"Dense_{i}": torch_to_flax("dense", {"weight": l.weight.detach().numpy().copy(), "bias": l.bias.detach().numpy().copy()}, False)
            for i, l in enumerate(linears)}


def grads_mlp(sequential) -> dict:
    import torch

    linears = [m for m in sequential if isinstance(m, torch.nn.Linear)]
    zeros = np.zeros_like
    return {f"Dense_{i}": torch_to_flax("dense", {"weight": zeros(l.weight.detach().numpy()) if l.weight.grad is None else l.weight.grad.numpy().copy(),
                                                  "bias": zeros(l.bias.detach().numpy()) if l.bias.grad is None else l.bias.grad.numpy().copy()}, False)
            for i, l in enumerate(linears)}


def stacked(trees: list[dict]) -> dict:
    """K separate MLPs -> one ensemble MLP dict (a vmapped flax MLP's layout, members first)."""
    return {layer: {p: np.stack([t[layer][p] for t in trees]) for p in trees[0][layer]} for layer in trees[0]}


def params(agent, grads: bool = False) -> dict:
    read = grads_mlp if grads else mlp
    tree = {"gmm": read(agent.gmm.model), "q": stacked([read(q.model) for q in agent.q_nets]),
            "mode_net": read(agent.mode_net.model), "policy": read(agent.policy.model)}
    if not grads:
        tree["q_target"] = stacked([read(q.model) for q in agent.q_target_nets])
    return tree


class Draws:
    """torch.randn_like / torch.normal answer from a script (order and shape checked)."""

    def __init__(self):
        self.queue: list[np.ndarray] = []

    @contextlib.contextmanager
    def installed(self):
        import torch

        randn_like, normal = torch.randn_like, torch.normal

        def take(shape):
            if not self.queue:
                raise RuntimeError(f"the reference drew a normal{tuple(shape)} beyond the scripted draws")
            value = self.queue.pop(0)
            if not same_but_unit_axes(value.shape, tuple(shape)):
                raise RuntimeError(f"the reference drew a normal{tuple(shape)} where the script has {value.shape}")
            return torch.as_tensor(value.reshape(tuple(shape)))

        def scripted_randn_like(x, *args, **kwargs):
            return take(x.shape).to(x.dtype)

        def scripted_normal(mean, std, *args, **kwargs):  # Normal.sample: torch.normal(loc, scale)
            return mean + std * take(mean.shape)

        torch.randn_like, torch.normal = scripted_randn_like, scripted_normal
        try:
            yield
        finally:
            torch.randn_like, torch.normal = randn_like, normal
        if self.queue:
            raise RuntimeError(f"{len(self.queue)} scripted draws were not taken by the reference")


def one_update(agent, batch_size: int, mdn_phase: bool) -> dict[str, float]:
    """train_GMM, or train_models' body with `batch_size` for every loss (its order kept)."""
    if mdn_phase:
        return agent.train_GMM(batch_size=batch_size)
    value_info = agent.train_value_function(batch_size=batch_size)
    mode_info = agent.train_mode_function(batch_size=batch_size)
    policy_info = agent.train_policy(batch_size=batch_size)
    if agent.training_steps % agent.policy_delay == 0:
        agent.update_target_nets(agent.q_nets, agent.q_target_nets)
    agent.training_steps += 1
    return {**value_info, **policy_info, **mode_info}


def parity(repo: str, module: str, cls: str, in_path: str, out_path: str) -> None:
    import torch

    torch.set_num_threads(1)
    inputs = dict(np.load(in_path, allow_pickle=False))
    config = json.loads(str(inputs["config"]))
    batches = {k[len("batch/"):]: v for k, v in inputs.items() if k.startswith("batch/")}
    batches["rewards"] = batches["rewards"][..., None]
    batches["terminals"] = 1.0 - batches.pop("masks")[..., None]
    steps, batch_size = batches["observations"].shape[:2]
    agent, buffer = build(repo, module, cls, config, {k: v[0] for k, v in batches.items()}, int(inputs["seed"]))
    mdn_steps = int(config.get("mdn_steps", 0))
    out = {f"init/{k}": v for k, v in flatten(params(agent)).items()}
    losses: dict[str, np.ndarray] = {}  # NaN where an update reports no such term (the other phase's)
    draws = Draws()
    for step in range(steps):
        buffer.batch = {k: v[step] for k, v in batches.items()}
        i = 0
        while f"draw/{step}/{i}" in inputs:
            draws.queue.append(inputs[f"draw/{step}/{i}"])
            i += 1
        with draws.installed():
            info = one_update(agent, batch_size, step < mdn_steps)
        for key, value in info.items():
            losses.setdefault(key, np.full(steps, np.nan))[step] = float(value)
        if step in config.get("compare_steps", [0]):
            out.update({f"grad{step + 1}/{k}": v for k, v in flatten(params(agent, grads=True)).items()})
            out.update({f"param{step + 1}/{k}": v for k, v in flatten(params(agent)).items()})
            if step == 0:
                with torch.no_grad():
                    actions = agent.policy(torch.as_tensor(inputs["act/observations"]))[1].clamp(-1, 1)  # get_action, batched
                out["act/actions"] = actions.numpy()
    out.update({f"final/{k}": v for k, v in flatten(params(agent)).items()})
    out.update({f"losses/{k}": v for k, v in losses.items()})
    np.savez(out_path, **out)


def serve(repo: str, module: str, cls: str, data_path: str, config_json: str) -> None:
    import torch

    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    data = dict(np.load(data_path))
    arrays = {"observations": data["observations"], "actions": data["actions"], "rewards": data["rewards"][:, None],
              "next_observations": data["next_observations"], "terminals": data["terminals"][:, None],
              "next_actions": np.roll(data["actions"], -1, axis=0)}
    agent, _ = build(repo, module, cls, json.loads(config_json), arrays, 0)
    for _ in range(20):
        agent.train_models()  # their own batch sizes (256 Q / 1024 hyper-Q / 256 policy) from our arrays
    print("MODEBENCH ready", flush=True)
    for line in sys.stdin:
        updates = int(line)
        start = time.perf_counter()
        for _ in range(updates):
            agent.train_models()
        print("MODEBENCH", updates / (time.perf_counter() - start), flush=True)


if __name__ == "__main__":
    mode, *rest = sys.argv[1:]
    {"parity": parity, "serve": serve}[mode](*rest)
