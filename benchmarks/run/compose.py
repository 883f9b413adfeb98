"""Candidate selection as a composition at evaluation time: one method proposes, another selects.

`modebench eval --checkpoint PROPOSER --select-with SELECTOR [--knob N=1,16] [--knob lambda=...]`
evaluates the policy that scores the PROPOSER's candidates (its own action and `propose(s, N)`
samples) by the SELECTOR's rule. Both are reached through the plugin interface only
(algorithms/base.py): the proposer through `can_propose` / `propose` / `own_action`, the selector
through `can_select` / `selection_candidates` / `select` (GEM is the one method that scores
candidates today: LCB over its critic ensemble, z-scored support under its behaviour density; see
its docstrings for the candidate set and why GEM selecting for itself is GEM, bitwise). The core
never names or imports a method.

The knobs are the selector's (its knobs class, defaults = the selector run's own knobs); the
proposer acts and proposes with its run's own knobs. Both checkpoints must come from the same
task, data settings and observation normaliser (the selector's networks read the same inputs).

Records go into the PROPOSER's run folder with source 'select'. Their knobs are the proposer's
own plus {"selection": {"selector": <selector run id>, <every selection knob>}}, so they never
pass for the proposer's own-knob evaluations in the main tables; the top-level `selection` entry
names both checkpoints (run ids and paths). `select_stored` runs the composition for every
proposer run x matching selector run of a results store (the `cross-select` study,
studies/cross_select.py, and a sweep grid's select_with axis; studies/budget.py renders the table).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from modebench.algorithms.base import ActOutput, Algorithm
from modebench.algorithms.config import ConfigError, to_dict
from modebench.benchmarks.run.evaluation import evaluate
from modebench.benchmarks.run.spec import record_fields
from modebench.benchmarks.run.train import (
    LoadedRun,
    expand_grid,
    knob_settings,
    load_run,
)
from modebench.benchmarks.store import RunStore, results_root
from modebench.benchmarks.store import stored_runs as store_runs
from torch import nn
from tqdm.auto import tqdm

SOURCE = "select"  # the `source` of a composed evaluation's record


def _same(a: Any, b: Any) -> bool:
    return json.dumps(a, sort_keys=True, default=str) == json.dumps(b, sort_keys=True, default=str)


def _same_array(a: np.ndarray | None, b: np.ndarray | None) -> bool:
    return (a is None) == (b is None) and (a is None or (a.shape == b.shape and bool(np.array_equal(a, b))))


def check_compatible(proposer: LoadedRun, selector: LoadedRun) -> None:
    """One ConfigError line when the selector cannot score candidates, the proposer cannot propose,
    or the two checkpoints differ in task, dataset, data settings, observation normaliser or action box."""
    sel, prop = f"--select-with {selector.path}", f"--checkpoint {proposer.path}"
    if not type(selector.algorithm).can_select:
        raise ConfigError(f"{sel} is a {selector.run['method']} checkpoint, which cannot score candidates; the selector "
                          f"must be a checkpoint of a method with select() ({', '.join(methods_that('can_select'))})")
    if not type(proposer.algorithm).can_propose:
        raise ConfigError(f"{prop} is a {proposer.run['method']} checkpoint, which cannot propose candidate actions; "
                          f"give a checkpoint of a method with propose() ({', '.join(methods_that('can_propose'))})")
    checks = [
        ("task", proposer.run["task"]["id"], selector.run["task"]["id"]),
        ("dataset", proposer.run["dataset_name"], selector.run["dataset_name"]),
        ("task horizon", proposer.task.horizon, selector.task.horizon),
        ("data settings", proposer.run.get("data"), selector.run.get("data")),
        ("observation/action sizes", [proposer.run["obs_dim"], proposer.run["act_dim"]], [selector.run["obs_dim"], selector.run["act_dim"]]),
    ]
    for what, mine, theirs in checks:
        if not _same(mine, theirs):
            raise ConfigError(f"{prop} and {sel} differ in {what} ({mine} vs {theirs}); the selector must be a run "
                              "trained on the proposer's task with the same data settings")
    p, s = proposer.normalizer, selector.normalizer
    if not (_same_array(np.asarray(p.mean), np.asarray(s.mean)) and _same_array(np.asarray(p.std), np.asarray(s.std))):
        raise ConfigError(f"{prop} and {sel} normalise observations differently (another dataset or normalize_obs "
                          "setting); the selector must be a run trained on the proposer's data")
    if not (_same_array(proposer.action_low, selector.action_low) and _same_array(proposer.action_high, selector.action_high)):
        raise ConfigError(f"{prop} and {sel} map actions to different boxes; the selector must be a run on the proposer's data")
    if proposer.algorithm.device != selector.algorithm.device:
        raise ConfigError(f"{prop} and {sel} were loaded on different devices ({proposer.algorithm.device} vs {selector.algorithm.device})")


def methods_that(capability: str) -> list[str]:
    """The registered base methods whose class has `capability` (a class flag of the plugin interface)."""
    from modebench.algorithms.registry import METHODS

    return [name for name, entry in METHODS.items() if entry.is_base and getattr(entry.load(), capability)]


class SelectedProposals(nn.Module):
    """The proposer's candidates scored by the selector's rule: a policy `evaluate` can run.

    `act(obs, t, knobs)` takes the selector's knobs; the proposer uses `proposer_knobs`."""

    def __init__(self, proposer: Algorithm, selector: Algorithm, proposer_knobs: Any = None):
        super().__init__()
        self.proposer = proposer
        self.selector = selector
        self.proposer_knobs = proposer_knobs if proposer_knobs is not None else proposer.default_knobs()
        self.spec = selector.spec
        self.device = selector.device

    def default_knobs(self) -> Any:
        return self.selector.default_knobs()

    @torch.no_grad()
    def candidates(self, obs: torch.Tensor, t: torch.Tensor, knobs: Any) -> torch.Tensor:
        """The candidate set the selector builds from the proposer's actions, [B, |C|, d]."""
        return self.selector.selection_candidates(self.proposer, obs, t, self.proposer_knobs, knobs)

    @torch.no_grad()
    def act(self, obs: torch.Tensor, t: torch.Tensor, knobs: Any = None) -> ActOutput:
        knobs = knobs if knobs is not None else self.default_knobs()
        return self.selector.select(obs, t, self.candidates(obs, t, knobs), knobs)


def selection_settings(selector: LoadedRun, knob_grid: dict[str, list[Any]] | None) -> list[Any]:
    """The selector run's own knobs, varied over the grid (`--knob N=1,16 --knob lambda=0,1`)."""
    base = to_dict(selector.knobs)
    algorithm = selector.algorithm
    settings = knob_settings(
        type(algorithm).knobs_class, base, knob_grid, "selection knob",
        lambda unknown: f"unknown selection knob(s) {unknown}; with --select-with the knobs are the selector's "
                        f"({selector.run['method']}): {sorted(base)}")
    for knobs in settings:
        algorithm.check_selection_knobs(knobs)
    return settings


def selection_record_knobs(proposer: LoadedRun, selector: LoadedRun, knobs: Any) -> dict[str, Any]:
    """The record's knobs: the proposer's own plus the selection (selector run id and every knob)."""
    return {**to_dict(proposer.knobs), "selection": {"selector": selector.run_id, **to_dict(knobs)}}


def evaluate_selection(
    proposer_checkpoint: str | Path,
    selector_checkpoint: str | Path,
    knob_grid: dict[str, list[Any]] | None = None,
    episodes: int | None = None,
    seed: int | None = None,
    out: str | Path | None = None,
    device: str = "auto",
    progress: bool = False,
    skip_stored: bool = False,
) -> list[dict[str, Any]]:
    """Evaluate the proposer's candidates under the selector's rule at every setting of the
    grid (no retraining); one record each in the proposer's run folder. `skip_stored`: leave out
    settings already recorded (a resumed cross-select)."""
    proposer = load_run(proposer_checkpoint, device)
    selector = load_run(selector_checkpoint, device)
    check_compatible(proposer, selector)
    settings = selection_settings(selector, knob_grid)
    policy = SelectedProposals(proposer.algorithm, selector.algorithm, proposer.knobs)
    eval_seed = proposer.run["seed"] if seed is None else seed
    store = RunStore(results_root(out), proposer.run_id)  # the proposer's own run folder under the results root
    names = {
        "proposer_run_id": proposer.run_id, "proposer_checkpoint": str(proposer.path), "proposer_method": proposer.run["method"],
        "proposer_step": proposer.step, "proposer_knobs": to_dict(proposer.knobs),
        "selector_run_id": selector.run_id, "selector_checkpoint": str(selector.path), "selector_method": selector.run["method"],
        "selector_step": selector.step,
    }
    if skip_stored:
        settings = [k for k in settings if not store.has_record(proposer.step, selection_record_knobs(proposer, selector, k))]
    records = []
    with store.writing():
        for knobs in tqdm(settings, desc="selection grid", disable=not progress or len(settings) == 1):
            result = evaluate(policy, proposer.task, knobs, episodes or proposer.task.eval_episodes, eval_seed,
                              proposer.normalizer, proposer.action_low, proposer.action_high)
            record = {**record_fields(proposer.run, proposer.step, selection_record_knobs(proposer, selector, knobs)),
                      "source": SOURCE, "eval_seed": eval_seed, "selection": {**names, "knobs": to_dict(knobs)},
                      **result.summary()}
            store.write_record(record)
            records.append(record)
    return records


# ----------------------------------------------------------------------------- cross-select


@dataclass(frozen=True)
class StoredRun:
    run_id: str
    checkpoint: Path
    config: dict[str, Any]

    @property
    def pairing(self) -> str:
        """What a proposer and its selector must share: task, dataset, data settings, protocol, seed, steps."""
        c = self.config
        return json.dumps([c["task"]["id"], c["dataset_name"], c.get("data"), c.get("protocol"), c["seed"], c["steps"]],
                          sort_keys=True, default=str)


def stored_runs(root: str | Path) -> list[StoredRun]:
    """Every run folder under `root` with a readable config.json and a checkpoint (store.stored_runs)."""
    out = []
    for run in store_runs(root):
        config = run.read_config()
        if config is not None and run.checkpoint_path.exists():
            out.append(StoredRun(run.run_id, run.checkpoint_path, config))
    return out


def cross_pairs(runs: list[StoredRun], proposers: list[str], selector: str,
                suite: str | None = None) -> list[tuple[StoredRun, StoredRun]]:
    """(proposer run, selector run) pairs: every run of a proposer method with the selector-method
    run on the same task, dataset, data settings, protocol, seed and number of updates; where a
    method has a run at the suite's default config there, its other configs are left out."""
    chosen = [r for r in runs if suite is None or r.config["task"].get("suite") == suite]
    selectors: dict[str, list[StoredRun]] = {}
    for r in chosen:
        if r.config["method"] == selector:
            selectors.setdefault(r.pairing, []).append(r)
    defaults = {(r.config["method"], r.pairing) for r in chosen if r.config.get("suite_default")}
    pairs = []
    for r in chosen:
        if r.config["method"] not in proposers:
            continue
        if (r.config["method"], r.pairing) in defaults and not r.config.get("suite_default"):
            continue  # a training-grid variant beside the method's default-config run
        matches = selectors.get(r.pairing, [])
        if len(matches) > 1:
            raise ConfigError(f"{r.run_id}: {len(matches)} {selector} runs share its task, data, seed and steps "
                              f"({', '.join(m.run_id for m in matches)}); keep one per results root (--results)")
        if matches:
            pairs.append((r, matches[0]))
    return pairs


def select_stored(root: str | Path, proposers: list[str], grid: dict[str, list[Any]], *, selector: str, suite: str | None = None,
                  run_ids: set[str] | None = None, episodes: int | None = None, device: str = "auto",
                  log: Callable[[str], None] = print) -> int:
    """Every stored proposer run under `root` (of `suite`, among `run_ids` when given) with the
    selection of the `selector` method's run beside it at each setting of `grid`; settings already
    recorded are kept. Returns the number of pairs."""
    import time

    pairs = [(p, s) for p, s in cross_pairs(stored_runs(root), proposers, selector, suite=suite)
             if run_ids is None or p.run_id in run_ids]
    if not pairs:
        raise ConfigError(f"no proposer run under {root}/ has a {selector} run with the same task, data, seed and steps; "
                          f"train both first (e.g. `modebench bench --suite toy --methods {selector},{proposers[0]}`)")
    start = time.perf_counter()
    for proposer, selector_run in tqdm(pairs, desc="cross-select"):
        for record in evaluate_selection(proposer.checkpoint, selector_run.checkpoint, grid, episodes, out=root, device=device,
                                         skip_stored=True):
            n = record["selection"]["knobs"]["N"]
            log(f"{record['method']} {record['task']} seed {record['seed']} N={n} normalized_score {record['normalized_score']:.4f}")
    log(f"cross-select: {len(pairs)} proposer runs x {len(expand_grid(grid))} settings (stored ones kept) in "
        f"{time.perf_counter() - start:.0f} s -> {root}/")
    return len(pairs)
