"""Every malformed dataset or checkpoint is one line naming the file, the field, the index and the
fix (exit status 2, no traceback), and leaves no run folder or record behind (issue 20).

Each case writes one malformed file the way a user, a half-finished download or another tool
would, and runs `modebench train --dataset FILE ...` (or `modebench eval --checkpoint FILE`)
in-process. OGBench npz files have no ad-hoc CLI route (a suite names them), so their cases go
through the same loader a suite task uses, `sources.load_dataset`.
"""

from __future__ import annotations

import json
import pickle
import shutil
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
from modebench.benchmarks.data.dataset import DatasetError
from modebench.benchmarks.data.validate import check_task_data
from modebench.benchmarks.tasks import sources

from modebench.cli import main

N = 120  # two Pendulum episodes of 60 steps (Pendulum-v1: 3-d observations, 1-d torque in [-2, 2])


def pendulum_arrays(n: int = N) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    timeouts = np.zeros(n, bool)
    timeouts[n // 2 - 1] = timeouts[n - 1] = True
    return {
        "observations": rng.normal(size=(n, 3)).astype(np.float32),
        "actions": rng.uniform(-2, 2, (n, 1)).astype(np.float32),
        "rewards": rng.normal(size=n).astype(np.float32),
        "terminals": np.zeros(n, bool),
        "timeouts": timeouts,
    }


def edited(arrays: dict[str, np.ndarray], **fields) -> dict[str, np.ndarray]:
    """`arrays` with some fields replaced: by a value, by a function of all arrays, or dropped (None)."""
    for key, value in fields.items():
        if value is None:
            arrays.pop(key)
        else:
            arrays[key] = value(arrays) if callable(value) else value
    return arrays


def changed(**fields) -> dict[str, np.ndarray]:
    return edited(pendulum_arrays(), **fields)


def put(index, value) -> Callable[[np.ndarray], np.ndarray]:
    """A copy of an array with one entry set (its dtype widened to hold the value)."""

    def change(arr):
        arr = arr.astype(np.result_type(arr.dtype, type(value)), copy=True)
        arr[index] = value
        return arr

    return change


def at(field: str, index, value) -> Callable[[dict], np.ndarray]:
    return lambda arrays: put(index, value)(arrays[field])


def write_npz(path: Path, arrays: dict) -> Path:
    np.savez(path, **arrays)
    return path


def write_hdf5(path: Path, arrays: dict) -> Path:
    with h5py.File(path, "w") as h5:
        for key, value in arrays.items():
            h5[key] = value
        h5.create_group("infos")["qpos"] = np.zeros((1, 1))  # D4RL side information: a group, never a field
    return path


def truncated(writer, arrays):
    def write(path: Path) -> Path:
        writer(path, arrays)
        data = path.read_bytes()
        path.write_bytes(data[: len(data) // 2])
        return path

    return write


def npz_with_damaged_member(path: Path) -> Path:
    """A bit flipped inside the stored 'observations.npy' (its CRC no longer matches)."""
    write_npz(path, pendulum_arrays())
    with zipfile.ZipFile(path) as archive:
        offset = archive.getinfo("observations.npy").header_offset
    data = bytearray(path.read_bytes())
    data[offset + 300] ^= 0xFF
    path.write_bytes(bytes(data))
    return path


@dataclass
class Case:
    kind: str
    file: str
    write: Callable[[Path], Path]
    expect: tuple[str, ...]  # substrings of the one-line message besides the file's path
    args: tuple[str, ...] = ()


def npz(arrays):
    return lambda path: write_npz(path, arrays)


def hdf5(arrays):
    return lambda path: write_hdf5(path, arrays)


FILE_CASES = [
    Case("file that does not exist", "gone.npz", lambda p: p, ("no such file or folder",)),
    Case("not HDF5 but named .hdf5", "d.hdf5", lambda p: (p.write_text("<html>404 Not Found</html>"), p)[1],
         ("cannot read the HDF5 file", "file signature not found")),
    Case("truncated HDF5", "d.hdf5", truncated(write_hdf5, pendulum_arrays()), ("cannot read the HDF5 file", "truncated")),
    Case("truncated npz", "d.npz", truncated(write_npz, pendulum_arrays()), ("cannot read the .npz archive",)),
    Case("npz with a damaged member", "d.npz", npz_with_damaged_member, ("field 'observations'", "Bad CRC-32")),
    Case("empty file", "d.npz", lambda p: (p.write_bytes(b""), p)[1], ("cannot read the .npz archive",)),
    Case("a bare .npy named .npz", "d.npz", lambda p: (np.save(p.with_suffix(".npy"), np.zeros(3)), p.with_suffix(".npy").rename(p), p)[2],
         ("one bare array", "np.savez")),
    Case("pickled objects in a field", "d.npz", npz(changed(rewards=np.array([{"r": 1.0}] * N, dtype=object))),
         ("field 'rewards'", "Object arrays cannot be loaded")),
    Case("missing key", "d.npz", npz(changed(rewards=None)), ("missing field(s) ['rewards']",)),
    Case("misspelt optional key", "d.npz", npz(changed(timeouts=None, timeout=pendulum_arrays()["timeouts"])),
         ("unknown field(s) ['timeout']", "'timeout' -> 'timeouts'")),
    Case("integer actions", "d.npz", npz(changed(actions=np.ones((N, 1), np.int64))), ("field 'actions' has dtype int64", "float32")),
    Case("boolean actions", "d.hdf5", hdf5(changed(actions=np.ones((N, 1), bool))), ("field 'actions' has dtype bool",)),
    Case("text rewards", "d.npz", npz(changed(rewards=np.array(["1.0"] * N))), ("field 'rewards' has dtype <U3", "not a real number")),
    Case("actions of rank 1", "d.npz", npz(changed(actions=lambda a: a["actions"][:, 0])), ("field 'actions' has shape (120,)", "[N, 1]")),
    Case("image observations of rank 3", "d.npz", npz(changed(observations=np.zeros((N, 3, 1), np.float32))),
         ("field 'observations' has shape (120, 3, 1)", "flatten")),
    Case("rewards of another rank", "d.npz", npz(changed(rewards=np.zeros((N, 2), np.float32))), ("field 'rewards' has shape (120, 2)",)),
    Case("row counts disagree", "d.npz", npz(changed(rewards=lambda a: a["rewards"][:-1])), ("field 'rewards' has 119 rows, expected 120 (as 'observations' has 120)",)),
    Case("empty dataset", "d.npz", npz({k: v[:0] for k, v in pendulum_arrays().items()}), ("it holds no transitions", "at least 2")),
    Case("a single transition", "d.npz", npz(pendulum_arrays(1)), ("it holds only 1 transition", "at least 2")),
    Case("NaN in the last observation", "d.npz", npz(changed(observations=at("observations", (N - 1, 1), np.nan))),
         ("field 'observations' is nan (not finite) at index 119 (column 1)",)),
    Case("inf reward", "d.hdf5", hdf5(changed(rewards=at("rewards", 7, np.inf))), ("field 'rewards' is inf (not finite) at index 7",)),
    Case("NaN in stored next observations", "d.hdf5",
         hdf5(changed(next_observations=at("observations", (5, 0), np.nan))), ("field 'next_observations' is nan", "index 5")),
    Case("terminal flag 2", "d.npz", npz(changed(terminals=at("terminals", 10, 2))), ("field 'terminals' is 2 at index 10", "0 or 1")),
    Case("timeout flag 0.5", "d.npz", npz(changed(timeouts=at("timeouts", 3, 0.5))), ("field 'timeouts' is 0.5 at index 3",)),
    Case("episodes that never end", "d.npz", npz(changed(timeouts=np.zeros(N, bool))), ("no episode ever ends ('terminals' and 'timeouts' are 0 in all 120 rows)", "timeouts=1")),
    Case("action outside the env's box", "d.npz", npz(changed(actions=at("actions", (3, 0), 2.5))),
         ("field 'actions' at index 3 (column 0) is 2.5, outside the action box [-2, 2] of the env Pendulum-v1",)),
    Case("action dimension not the env's", "d.npz", npz(changed(actions=np.zeros((N, 2), np.float32))),
         ("field 'actions' has 2 columns but the action space of the env Pendulum-v1 has 1;",)),
    Case("observation dimension not the env's", "d.npz", npz(changed(observations=np.zeros((N, 4), np.float32))),
         ("field 'observations' has 4 columns but the evaluation env Pendulum-v1 observes 3",)),
    Case("reference returns with min >= max", "d.npz", npz(pendulum_arrays()), ("random=5, expert=5", "--ref-min"),
         ("--ref-min", "5", "--ref-max", "5")),
    Case("env with discrete actions", "d.npz",
         npz(changed(observations=np.zeros((N, 4), np.float32), actions=lambda a: a["actions"] / 2)),
         ("Discrete action space", "Box"), ("--env", "CartPole-v1")),
]


def run_cli(argv: list[str], capsys) -> str:
    code = main(argv)
    captured = capsys.readouterr()
    assert code == 2, captured.out + captured.err
    assert "Traceback" not in captured.err
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1, captured.err
    return lines[0]


def assert_nothing_written(out: Path) -> None:
    runs = out / "runs"
    assert not runs.exists() or not any(runs.iterdir()), f"a run folder was left behind: {list(runs.iterdir())}"
    assert not list(out.glob("**/records/*.json"))


def train_argv(dataset: Path, out: Path, extra: tuple[str, ...] = ()) -> list[str]:
    options = {"--env": "Pendulum-v1", "--ref-min": "0", "--ref-max": "1"}
    for flag, value in zip(extra[::2], extra[1::2]):
        options[flag] = value
    argv = ["train", "--algo", "bc", "--dataset", str(dataset), "--steps", "10", "--results", str(out), "--no-progress"]
    for flag, value in options.items():
        argv += [flag, value]
    return argv


def test_at_least_twenty_kinds():
    assert len(FILE_CASES) + len(MINARI_CASES) + len(OGBENCH_CASES) + len(CHECKPOINT_CASES) >= 20
    assert len({c.kind for c in FILE_CASES}) == len(FILE_CASES)


@pytest.mark.parametrize("case", FILE_CASES, ids=[c.kind for c in FILE_CASES])
def test_malformed_file_is_one_line_naming_it(case, tmp_path, capsys):
    path = case.write(tmp_path / case.file)
    out = tmp_path / "results"
    line = run_cli(train_argv(path, out, case.args), capsys)
    assert line.startswith("modebench train: error: ")
    assert str(path.resolve()) in line
    for part in case.expect:
        assert part in line, line
    assert_nothing_written(out)


def test_the_valid_file_trains(tmp_path, capsys):
    """The baseline every case corrupts is accepted, and a Pendulum file's torques in [-2, 2]
    reach the method rescaled to [-1, 1] (taken in --env's action units)."""
    from modebench.benchmarks.tasks.adhoc import task_from_dataset

    path = write_npz(tmp_path / "d.npz", pendulum_arrays())
    task = task_from_dataset(str(path), "Pendulum-v1", 0.0, 1.0)
    data = task.load_dataset()
    assert task.horizon == 200 and data.action_low.tolist() == [-2.0]
    stored = pendulum_arrays()
    kept = ~stored["timeouts"]  # no next observation is stored after a timeout: those rows are dropped
    assert np.allclose(data.actions[:, 0], stored["actions"][kept, 0] / 2, atol=1e-6)
    assert len(data) == N - 2 and data.num_episodes == 2
    check_task_data(task, data)  # and it fits Pendulum-v1's spaces


def test_a_dataset_whose_action_box_is_not_the_envs_is_refused():
    """A dataset rescaled from its own box [-2, 2] cannot be evaluated in an env acting in [-1, 1]:
    the policy's actions would be mapped back into the wrong range."""
    from modebench.benchmarks.tasks import toy
    from modebench.benchmarks.tasks.suites import get_task

    data = toy.generate("four-goal", size=50, seed=0)
    data.action_low, data.action_high = np.full(2, -2.0, np.float32), np.full(2, 2.0, np.float32)
    with pytest.raises(DatasetError, match=r"the data's action box \[-2, 2\] is not the evaluation env "
                                           r"modebench/FourGoalBandit-v0's \[-1, 1\]"):
        check_task_data(get_task("toy/four-goal"), data)


def test_unknown_env_is_one_line(tmp_path, capsys):
    path = write_npz(tmp_path / "d.npz", pendulum_arrays())
    line = run_cli(train_argv(path, tmp_path / "results", ("--env", "NoSuchEnv-v0")), capsys)
    assert "--env NoSuchEnv-v0" in line


# ---------------------------------------------------------------- Minari datasets (by path)


@pytest.fixture(scope="module")
def minari_folder(tmp_path_factory) -> Path:
    """A tiny valid Minari dataset written by minari's own API (3 episodes of 5 steps)."""
    import os

    import minari
    from minari.data_collector import EpisodeBuffer
    from modebench.benchmarks.tasks import toy

    toy.register_envs()
    root = tmp_path_factory.mktemp("minari")
    previous = os.environ.get("MINARI_DATASETS_PATH")
    os.environ["MINARI_DATASETS_PATH"] = str(root)
    try:
        rng = np.random.default_rng(0)
        buffers = [
            EpisodeBuffer(id=ep, observations=rng.normal(size=(6, 2)).astype(np.float32),
                          actions=rng.uniform(-1, 1, (5, 2)).astype(np.float32), rewards=list(rng.normal(size=5)),
                          terminations=[False] * 4 + [ep == 0], truncations=[False] * 4 + [ep != 0], infos={})
            for ep in range(3)
        ]
        dataset = minari.create_dataset_from_buffers(
            dataset_id="modebench-test/malformed-v0", buffer=buffers, env="modebench/ObstacleNavigation-v0",
            algorithm_name="random", ref_min_score=0.0, ref_max_score=1.0,
        )
        return Path(dataset.storage.data_path).parent
    finally:
        if previous is None:
            os.environ.pop("MINARI_DATASETS_PATH")
        else:
            os.environ["MINARI_DATASETS_PATH"] = previous


def edit_episode(episode: int, field: str, value: Callable[[np.ndarray], np.ndarray]):
    def edit(folder: Path) -> None:
        with h5py.File(folder / "data" / "main_data.hdf5", "r+") as h5:
            key = f"episode_{episode}/{field}"
            new = value(h5[key][()])
            del h5[key]
            h5[key] = new

    return edit


def record_missing_env(folder: Path) -> None:
    """The dataset was recorded in an env whose package is not installed here."""
    meta = folder / "data" / "metadata.json"
    content = json.loads(meta.read_text())
    spec = {**json.loads(content["env_spec"]), "id": "NoSuchPackage/Env-v0", "entry_point": "no_such_package.envs:Env"}
    meta.write_text(json.dumps({**content, "env_spec": json.dumps(spec)}))


def edit_metadata(**entries):
    def edit(folder: Path) -> None:
        meta = folder / "data" / "metadata.json"
        meta.write_text(json.dumps({**json.loads(meta.read_text()), **entries}))

    return edit


MINARI_CASES = [
    Case("Minari: episode file not HDF5", "", lambda f: (f / "data" / "main_data.hdf5").write_text("partial download"),
         ("cannot read the Minari dataset", "file signature not found")),
    Case("Minari: metadata not JSON", "", lambda f: (f / "data" / "metadata.json").write_text("{truncated"),
         ("cannot read the Minari dataset",)),
    Case("Minari: NaN observation", "", edit_episode(1, "observations", put((2, 1), np.nan)),
         ("episode 1: field 'observations' is nan (not finite) at index 2 (column 1)",)),
    Case("Minari: integer actions", "", edit_episode(0, "actions", lambda a: np.round(a).astype(np.int32)),
         ("episode 0: field 'actions' has dtype int32",)),
    Case("Minari: action outside its space", "", edit_episode(2, "actions", put((4, 0), 1.5)),
         ("episode 2: field 'actions' at index 4 (column 0) is 1.5, outside the action box [-1, 1] of the dataset's action space",)),
    Case("Minari: termination before the last step", "", edit_episode(1, "terminations", put(1, True)),
         ("episode 1: field 'terminations' is set at index 1, before the episode's last step 4",)),
    Case("Minari: one observation short", "", edit_episode(2, "observations", lambda o: o[:-1]),
         ("episode 2: field 'actions' has 5 rows, expected 4 (as 'observations' has 5, one more than the steps)",)),
    Case("Minari: recorded env not installed", "", record_missing_env,
         ("records the env NoSuchPackage/Env-v0, which cannot be made here", "No module named 'no_such_package'", "--env")),
    Case("Minari: reference returns with min >= max", "", edit_metadata(ref_min_score=3.0, ref_max_score=1.0),
         ("random=3, expert=1", "ref_min_score")),
]


def test_the_valid_minari_folder_loads(minari_folder):
    from modebench.benchmarks.data.loaders import load_minari

    data = load_minari(str(minari_folder)).validate()
    assert len(data) == 15 and data.num_episodes == 3
    assert data.terminals.sum() == 1 and data.timeouts.sum() == 2


@pytest.mark.parametrize("case", MINARI_CASES, ids=[c.kind for c in MINARI_CASES])
def test_malformed_minari_dataset_is_one_line_naming_it(case, minari_folder, tmp_path, capsys):
    folder = tmp_path / "malformed-v0"
    shutil.copytree(minari_folder, folder)
    case.write(folder)
    out = tmp_path / "results"
    line = run_cli(["train", "--algo", "bc", "--dataset", str(folder), "--steps", "10", "--results", str(out), "--no-progress"], capsys)
    assert str(folder) in line
    for part in case.expect:
        assert part in line, line
    assert_nothing_written(out)


def test_malformed_minari_dataset_by_id_is_one_line_naming_it(minari_folder, tmp_path, monkeypatch, capsys):
    """The same loader behind an id: a half-written copy in MINARI_DATASETS_PATH."""
    root = tmp_path / "minari"
    shutil.copytree(minari_folder, root / "modebench-test" / "malformed-v0")
    (root / "modebench-test" / "malformed-v0" / "data" / "main_data.hdf5").write_bytes(b"\x89HDF")
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(root))
    out = tmp_path / "results"
    line = run_cli(["train", "--algo", "bc", "--dataset", "modebench-test/malformed-v0", "--steps", "10", "--results", str(out),
                    "--no-progress"], capsys)
    assert "malformed-v0" in line and "cannot read the Minari dataset" in line, line
    assert_nothing_written(out)


# ---------------------------------------------------------------- OGBench npz (the suite loader)


OGBENCH_NAME = "antmaze-large-navigate-singletask-task1-v0"


def ogbench_arrays(n: int = 40) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    terminals = np.zeros(n, np.float32)
    terminals[n // 2 - 1] = terminals[-1] = 1.0
    return {"observations": rng.normal(size=(n, 29)).astype(np.float32), "actions": rng.uniform(-1, 1, (n, 8)).astype(np.float32),
            "terminals": terminals, "qpos": np.zeros((n, 15), np.float32), "qvel": np.zeros((n, 14), np.float32)}


def og(**fields):
    return npz(edited(ogbench_arrays(), **fields))


OGBENCH_CASES = [
    Case("OGBench: truncated npz", "og.npz", truncated(write_npz, ogbench_arrays()), ("cannot read the .npz archive",)),
    Case("OGBench: missing terminals", "og.npz", og(terminals=None), ("missing field(s) ['terminals']",)),
    Case("OGBench: NaN in the last observation", "og.npz", og(observations=at("observations", (39, 3), np.nan)),
         ("field 'observations' is nan (not finite) at index 39 (column 3)",)),
    Case("OGBench: integer actions", "og.npz", og(actions=np.zeros((40, 8), np.int8)), ("field 'actions' has dtype int8",)),
    Case("OGBench: episodes that never end", "og.npz", og(terminals=np.zeros(40, np.float32)), ("no episode ever ends ('terminals' is 0 in all 40 rows); set terminals=1 at the last step of every episode",)),
    Case("OGBench: action outside [-1, 1]", "og.npz", og(actions=at("actions", (7, 2), -3.0)),
         ("field 'actions' at index 7 (column 2) is -3, outside the action box [-1, 1] of OGBench's envs",)),
]


@pytest.mark.parametrize("case", OGBENCH_CASES, ids=[c.kind for c in OGBENCH_CASES])
def test_malformed_ogbench_npz_is_one_line_naming_it(case, tmp_path):
    path = case.write(tmp_path / case.file)
    with pytest.raises(DatasetError) as err:
        sources.load_dataset({"source": "ogbench", "name": OGBENCH_NAME, "path": str(path)})
    message = str(err.value)
    assert "\n" not in message and str(path) in message
    for part in case.expect:
        assert part in message, message


# ---------------------------------------------------------------- checkpoints


@pytest.fixture(scope="module")
def trained_runs(tmp_path_factory) -> dict[str, Path]:
    """Two finished toy runs (bc, 10 and 12 updates): their folders to copy and damage."""
    import io
    from contextlib import redirect_stdout

    root = tmp_path_factory.mktemp("runs")
    runs = {}
    for steps in ("10", "12"):
        with redirect_stdout(io.StringIO()):
            assert main(["train", "--algo", "bc", "--task", "toy/four-goal", "--steps", steps, "--results", str(root),
                         "--eval-episodes", "2", "--no-progress"]) == 0
        runs[steps] = next(p for p in (root / "runs").iterdir() if p.name not in {r.name for r in runs.values()})
    return runs


class CodeOnLoad:
    """What an arbitrary pickle may carry: a call made when it is unpickled (here: touching a file)."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return Path.touch, (self.marker,)


def foreign_pickle(run: Path, other: Path) -> None:
    (run / "checkpoint.pt").write_bytes(pickle.dumps({"model": CodeOnLoad(run / "UNPICKLED")}))


def other_keys(run: Path, other: Path) -> None:
    torch.save({"state_dict": {"weight": torch.zeros(2)}, "epoch": 3}, run / "checkpoint.pt")


def truncate_checkpoint(run: Path, other: Path) -> None:
    data = (run / "checkpoint.pt").read_bytes()
    (run / "checkpoint.pt").write_bytes(data[: len(data) // 3])


def swap_checkpoint(run: Path, other: Path) -> None:
    shutil.copy(other / "checkpoint.pt", run / "checkpoint.pt")


def other_method_config(run: Path, other: Path) -> None:
    config = json.loads((run / "config.json").read_text())
    (run / "config.json").write_text(json.dumps({**config, "method": "iql"}))


def drop_a_weight(run: Path, other: Path) -> None:
    payload = torch.load(run / "checkpoint.pt", weights_only=True)
    payload["model"].pop(next(iter(payload["model"])))
    torch.save(payload, run / "checkpoint.pt")


def reshape_a_weight(run: Path, other: Path) -> None:
    payload = torch.load(run / "checkpoint.pt", weights_only=True)
    key = next(iter(payload["model"]))
    payload["model"][key] = torch.zeros(3, 3, 3)
    torch.save(payload, run / "checkpoint.pt")


def future_format(run: Path, other: Path) -> None:
    payload = torch.load(run / "checkpoint.pt", weights_only=True)
    torch.save({**payload, "format": 99}, run / "checkpoint.pt")


CHECKPOINT_CASES = [
    # (kind, damage, command, expected substrings)
    ("truncated checkpoint", truncate_checkpoint, "eval", ("cannot be read", "truncated or damaged")),
    ("foreign pickle", foreign_pickle, "eval", ("not a ModeBench checkpoint", "never unpickled")),
    ("torch file with other keys", other_keys, "eval", ("not a ModeBench checkpoint", "'epoch', 'state_dict'")),
    ("config.json of another method beside it", other_method_config, "eval", ("belongs to another run", "method 'bc' vs 'iql'")),
    ("another run's checkpoint in the folder", swap_checkpoint, "eval", ("belongs to another run", "steps 12 vs 10")),
    ("resuming onto another run's checkpoint", swap_checkpoint, "train", ("belongs to another run", "steps 12 vs 10")),
    ("resuming from weights that do not fit", drop_a_weight, "train", ("weights do not fit BC (missing [",)),
    ("weights of another shape", reshape_a_weight, "eval", ("weights do not fit BC (size mismatch for",)),
    ("evaluating weights that do not fit", drop_a_weight, "eval", ("weights do not fit BC (missing [",)),
    ("checkpoint of a future format", future_format, "eval", ("checkpoint format 99 is not 1",)),
]


@pytest.mark.parametrize("kind,damage,command,expect", CHECKPOINT_CASES, ids=[c[0] for c in CHECKPOINT_CASES])
def test_malformed_checkpoint_is_one_line_naming_it(kind, damage, command, expect, trained_runs, tmp_path, capsys):
    run = tmp_path / "runs" / trained_runs["10"].name
    shutil.copytree(trained_runs["10"], run)
    damage(run, trained_runs["12"])
    records_before = sorted(p.name for p in (run / "records").iterdir())
    checkpoint = run / "checkpoint.pt"
    if command == "eval":
        argv = ["eval", "--checkpoint", str(checkpoint), "--eval-episodes", "2"]
    else:  # the run's own command again: it resumes from the (damaged) checkpoint in its folder
        argv = ["train", "--algo", "bc", "--task", "toy/four-goal", "--steps", "10", "--results", str(tmp_path),
                "--eval-episodes", "2", "--no-progress"]
    line = run_cli(argv, capsys)
    assert line.startswith(f"modebench {command}: error: {checkpoint}"), line
    for part in expect:
        assert part in line, line
    assert sorted(p.name for p in (run / "records").iterdir()) == records_before
    assert not (run / "UNPICKLED").exists()  # weights_only: the foreign pickle's call never ran
