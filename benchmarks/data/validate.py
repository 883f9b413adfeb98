"""The one check of a dataset's arrays as the user stored them, before any field is derived.

Every loader runs its raw arrays through `check_arrays` with the layout of its format (D4RL-style
flat files, OGBench npz files, one Minari episode), so a NaN in `observations[99]` is reported
as `observations` index 99 -- not as the `next_observations[98]` derived from it -- and an
integer action array is refused before it is silently cast to float. `check_task_data` then
holds the loaded dataset against the task it trains for: the evaluation env's observation and
action spaces and the reference returns of the normalised score.

Each message is one line: the file (or dataset id), the field, the index where relevant, and
what to do about it.
"""

from __future__ import annotations

import difflib
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

import numpy as np

if TYPE_CHECKING:
    import gymnasium as gym
    from modebench.benchmarks.data.dataset import TransitionDataset
    from modebench.benchmarks.tasks.suites import Task


ACTION_TOLERANCE = 1e-4  # float32 round trips of a box's edge
MIN_TRANSITIONS = 2  # one transition is a truncated file or a wrong slice, never a training set


class DatasetError(ValueError):
    """A dataset is malformed; the message names the file, the field, the index and the fix."""


@dataclass(frozen=True)
class Field:
    """What one stored array must be.

    kind: "action" (floating point: the methods need continuous actions), "real" (any real
    number type: observations, rewards), "flag" (only 0 and 1: terminals, timeouts).
    rank: 2 for [N, dim]; 1 for [N] ([N, 1] is accepted too)."""

    kind: Literal["action", "real", "flag"]
    rank: Literal[1, 2]
    required: bool = True


# D4RL-style .npz / .hdf5 (d4rl.qlearning_dataset's fields).
FLAT_FIELDS = {
    "observations": Field("real", 2),
    "actions": Field("action", 2),
    "rewards": Field("real", 1),
    "terminals": Field("flag", 1),
    "timeouts": Field("flag", 1, required=False),
    "next_observations": Field("real", 2, required=False),
}
# OGBench's npz: `terminals` marks every episode's last step; rewards and masks are relabelled
# per task on load, and qpos/qvel/button_states feed that relabelling.
OGBENCH_FIELDS = {
    "observations": Field("real", 2),
    "actions": Field("action", 2),
    "terminals": Field("flag", 1),
    "next_observations": Field("real", 2, required=False),
    "rewards": Field("real", 1, required=False),
    "masks": Field("flag", 1, required=False),
    "qpos": Field("real", 2, required=False),
    "qvel": Field("real", 2, required=False),
    "button_states": Field("real", 2, required=False),
}
# One Minari episode: T + 1 observations for T steps.
EPISODE_FIELDS = {
    "observations": Field("real", 2),
    "actions": Field("action", 2),
    "rewards": Field("real", 1),
    "terminations": Field("flag", 1),
    "truncations": Field("flag", 1),
}


def check_arrays(
    arrays: Mapping[str, np.ndarray],
    fields: Mapping[str, Field],
    where: str,
    *,
    unknown_keys: bool = False,
    episode_ends: tuple[str, ...] = (),
    action_box: tuple[np.ndarray, np.ndarray] | None = None,
    box_owner: str = "the dataset",
    extra_rows: Mapping[str, int] | None = None,
    min_rows: int = MIN_TRANSITIONS,
) -> int:
    """Check stored arrays against a layout; return their row count N.

    unknown_keys: refuse keys the layout does not name (a misspelt optional field such as
    'timeout' would otherwise be ignored). episode_ends: flag fields of which at least one must
    be set somewhere (else no episode ever ends). action_box: (low, high) the raw actions must
    lie in. extra_rows: fields with more rows than N (a Minari episode's T + 1 observations)."""
    arrays = {k: np.asarray(v) for k, v in arrays.items()}
    missing = [k for k, f in fields.items() if f.required and k not in arrays]
    if missing:
        raise DatasetError(f"{where}: missing field(s) {missing}; this format needs {_required(fields)}"
                           f"{_optional(fields)}{_unknown_hint(arrays, fields)}")
    if unknown_keys:
        unknown = sorted(k for k in arrays if k not in fields)
        if unknown:
            raise DatasetError(f"{where}: unknown field(s) {unknown}{_close(unknown, fields)}; "
                               f"rename or remove them (accepted: {list(fields)})")
    present = [k for k in fields if k in arrays]
    for name in present:
        _check_dtype_and_rank(arrays[name], name, fields[name], where)
    extra_rows = dict(extra_rows or {})
    anchor = present[0]
    n = int(arrays[anchor].shape[0]) - extra_rows.get(anchor, 0)
    for name in present:
        rows, expected = int(arrays[name].shape[0]), n + extra_rows.get(name, 0)
        if rows != expected:
            layout = ", one more than the steps" if extra_rows.get(anchor) else ""
            raise DatasetError(f"{where}: field '{name}' has {rows} rows, expected {expected} (as '{anchor}' has "
                               f"{n + extra_rows.get(anchor, 0)}{layout}); every field needs one row per transition: "
                               "the file is truncated or its fields come from different datasets")
    if n < min_rows:
        raise DatasetError(f"{where}: {_count(n)}; training needs at least {min_rows}"
                           " (a file this small is almost surely truncated or a wrong slice)")
    for name in present:
        arr = arrays[name]
        if fields[name].kind == "flag":
            _check_flags(arr, name, where)
        else:
            check_finite(arr, name, where)
    if episode_ends and not any(arrays[k].any() for k in episode_ends if k in arrays):
        names = " and ".join(f"'{k}'" for k in episode_ends if k in arrays)
        fix = (f"set {episode_ends[0]}=1 at the last step of every episode" if len(episode_ends) == 1 else
               f"set {episode_ends[0]}=1 where the env terminated and {episode_ends[1]}=1 at the last step of every other episode")
        raise DatasetError(f"{where}: no episode ever ends ({names} {'is' if ' and ' not in names else 'are'} 0 in all {n} rows); {fix}")
    if action_box is not None and "actions" in arrays:
        check_action_box(arrays["actions"], "actions", where, *action_box, owner=box_owner)
    return n


def check_action_box(actions: np.ndarray, name: str, where: str, low, high, owner: str) -> None:
    """Refuse raw actions outside [low, high] (with the tolerance of float32 round trips)."""
    # a scalar bound holds for every dimension; an array bound is the space's, dimension by dimension
    low, high = (np.full(actions.shape[1], bound, np.float64) if np.ndim(bound) == 0
                 else np.asarray(bound, np.float64).reshape(-1) for bound in (low, high))
    if actions.shape[1] != low.shape[0]:
        raise DatasetError(f"{where}: field '{name}' has {actions.shape[1]} columns but the action space of {owner} has "
                           f"{low.shape[0]}; the data was collected in another env")
    out = (actions < low - ACTION_TOLERANCE) | (actions > high + ACTION_TOLERANCE)
    if out.any():
        row, col = (int(i) for i in np.argwhere(out)[0])
        raise DatasetError(
            f"{where}: field '{name}' at index {row} (column {col}) is {float(actions[row, col]):.6g}, outside the "
            f"action box [{_fmt(low)}, {_fmt(high)}] of {owner}; clip the actions to the box, or evaluate in the env "
            "the data was collected in"
        )


def check_task_data(task: Task, dataset: TransitionDataset) -> None:
    """The dataset fits the task's evaluation env (observation and action dimensions, action box)
    and the task's reference returns define a score (random < expert). Call it before anything
    of a run is written: a mismatch found only at the first evaluation would leave a half run."""
    import gymnasium as gym

    where = dataset.source
    env = task.make_env()
    try:
        env_name = env.spec.id if env.spec is not None else type(env.unwrapped).__name__
        obs_dim = gym.spaces.flatdim(env.observation_space)
        if dataset.obs_dim != obs_dim:
            raise DatasetError(
                f"{where}: field 'observations' has {dataset.obs_dim} columns but the evaluation env {env_name} "
                f"observes {obs_dim}; train on data recorded in that env, or evaluate in the env the data comes from"
            )
        _check_action_space(env.action_space, dataset, where, env_name)
    finally:
        env.close()
    low, high = task.reference_returns(dataset)
    if not (math.isfinite(low) and math.isfinite(high) and low < high):
        origin = ("the dataset's metadata ref_min_score / ref_max_score" if task.score.get("kind") == "dataset"
                  else "--ref-min / --ref-max (or the suite file's score: {random, expert})")
        raise DatasetError(
            f"{where}: the reference returns random={low:g}, expert={high:g} from {origin} define no score; "
            "the random-policy return must be finite and below the expert return"
        )


def _check_action_space(space: gym.Space, dataset: TransitionDataset, where: str, env_name: str) -> None:
    import gymnasium as gym

    if not isinstance(space, gym.spaces.Box):
        raise DatasetError(f"{where}: the evaluation env {env_name} has a {type(space).__name__} action space; "
                           "the methods need a continuous (Box) action space")
    low, high = space.low.reshape(-1), space.high.reshape(-1)
    if dataset.act_dim != low.shape[0]:
        raise DatasetError(
            f"{where}: field 'actions' has {dataset.act_dim} columns but the evaluation env {env_name} acts in "
            f"{low.shape[0]} dimensions; train on data recorded in that env, or evaluate in the env the data comes from"
        )
    data_low = dataset.action_low if dataset.action_low is not None else -np.ones(dataset.act_dim)
    data_high = dataset.action_high if dataset.action_high is not None else np.ones(dataset.act_dim)
    if not (np.allclose(data_low, low, atol=1e-5) and np.allclose(data_high, high, atol=1e-5)):
        raise DatasetError(
            f"{where}: the data's action box [{_fmt(data_low)}, {_fmt(data_high)}] is not the "
            f"evaluation env {env_name}'s [{_fmt(low)}, {_fmt(high)}]; the policy's actions would be mapped into "
            "the wrong range: evaluate in the env the data was collected in"
        )


# ---------------------------------------------------------------- single checks


def _check_dtype_and_rank(arr: np.ndarray, name: str, field: Field, where: str) -> None:
    dtype = arr.dtype
    real = dtype == np.bool_ or np.issubdtype(dtype, np.integer) or np.issubdtype(dtype, np.floating)
    if not real:
        raise DatasetError(f"{where}: field '{name}' has dtype {dtype}, not a real number type; store it as float32")
    if field.kind == "action" and not np.issubdtype(dtype, np.floating):
        raise DatasetError(
            f"{where}: field '{name}' has dtype {dtype}; actions must be floating point (the methods need "
            "continuous actions; a discrete action space is not supported): store them as float32"
        )
    if field.rank == 2 and arr.ndim != 2:
        shape = "[N, 1] for one dimension" if arr.ndim == 1 else "[N, dim] (flatten each row)"
        raise DatasetError(f"{where}: field '{name}' has shape {arr.shape}; it must be [N, dim]: store it as {shape}")
    if field.rank == 1 and not (arr.ndim == 1 or (arr.ndim == 2 and arr.shape[1] == 1)):
        raise DatasetError(f"{where}: field '{name}' has shape {arr.shape}; it must be [N], one value per transition")


def check_finite(arr: np.ndarray, name: str, where: str) -> None:
    if not np.issubdtype(arr.dtype, np.floating):
        return
    bad = ~np.isfinite(arr)
    if bad.any():
        first = np.argwhere(bad)[0]
        row = int(first[0])
        column = f" (column {int(first[1])})" if arr.ndim == 2 and arr.shape[1] > 1 else ""
        raise DatasetError(f"{where}: field '{name}' is {arr[tuple(first)]} (not finite) at index {row}{column}; "
                           "repair or drop that transition before training")


def _check_flags(arr: np.ndarray, name: str, where: str) -> None:
    bad = (arr != 0) & (arr != 1)
    if bad.any():
        row = int(np.argwhere(bad)[0][0])
        raise DatasetError(f"{where}: field '{name}' is {arr.reshape(arr.shape[0], -1)[row, 0]} at index {row}; "
                           "episode flags must be 0 or 1 (or booleans)")


# ---------------------------------------------------------------- message parts


def one_line(err: BaseException, limit: int = 160) -> str:
    """The first line of a library's error (h5py's, torch's run to many lines), for a one-line message."""
    lines = str(err).strip().splitlines()
    return (lines[0][:limit] if lines else "") or type(err).__name__


def _required(fields: Mapping[str, Field]) -> list[str]:
    return [k for k, f in fields.items() if f.required]


def _optional(fields: Mapping[str, Field]) -> str:
    optional = [k for k, f in fields.items() if not f.required]
    return f" (optional: {optional})" if optional else ""


def _unknown_hint(arrays: Mapping[str, np.ndarray], fields: Mapping[str, Field]) -> str:
    unknown = sorted(k for k in arrays if k not in fields)
    return f"; the file has {unknown}{_close(unknown, fields)}" if unknown else ""


def _close(unknown: list[str], fields: Mapping[str, Field]) -> str:
    guesses = {k: difflib.get_close_matches(k, list(fields), n=1) for k in unknown}
    hints = [f"'{k}' -> '{g[0]}'" for k, g in guesses.items() if g]
    return f" (did you mean {', '.join(hints)}?)" if hints else ""


def _count(n: int) -> str:
    return "it holds no transitions" if n == 0 else f"it holds only {n} transition{'s' * (n != 1)}"


def _fmt(arr) -> str:
    values = np.asarray(arr, dtype=np.float64).reshape(-1)
    if np.all(values == values[0]):
        return f"{values[0]:g}"
    return "[" + ", ".join(f"{v:g}" for v in values) + "]"
