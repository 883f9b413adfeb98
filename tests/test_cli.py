"""The command line's one grammar (benchmarks/grammar.py, modebench/cli.py): every subcommand's
parser walked, the shared flags meaning the same thing everywhere, help on every option, the old
spellings as noticed aliases, one-line errors with "did you mean", `--version`, and a fast
`modebench --help` (no torch imported to build the parser)."""

from __future__ import annotations

import argparse
import json
import statistics
import struct
import subprocess
import sys
import time
from pathlib import Path

import pytest
from modebench.benchmarks.grammar import seed_list

from modebench.cli import COMMAND_ORDER, build_parser, main

# flags that more than one command takes, and what each must be everywhere: (dest, metavar)
SHARED = {
    "--results": ("results", "DIR"),
    "--seeds": ("seeds", "S1,S2,..."),
    "--num-seeds": ("num_seeds", "N"),
    "--eval-episodes": ("eval_episodes", "N"),
    "--device": ("device", "{auto,cpu,cuda,cuda:N,mps}"),
    "--protocol": ("protocol", None),
    "--methods": ("methods", "A,B,..."),
    "--jobs": ("jobs", "N"),
    "--steps": ("steps", "N"),
}


def subcommand_parsers(parser: argparse.ArgumentParser, prefix: str = "modebench") -> dict[str, argparse.ArgumentParser]:
    """Every (nested) subcommand's parser by its full name, e.g. 'modebench datasets generate'."""
    found = {}
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                found[f"{prefix} {name}"] = sub
                found.update(subcommand_parsers(sub, f"{prefix} {name}"))
    return found


PARSERS = subcommand_parsers(build_parser())


def visible_options(parser: argparse.ArgumentParser) -> list[argparse.Action]:
    return [a for a in parser._actions if a.help != argparse.SUPPRESS and not isinstance(a, (argparse._HelpAction,
                                                                                              argparse._SubParsersAction))]


def test_the_walk_sees_every_command():
    names = {name.split()[1] for name in PARSERS}
    assert set(COMMAND_ORDER) <= names
    assert {"modebench datasets generate", "modebench train", "modebench sweep"} <= set(PARSERS)


@pytest.mark.parametrize("command", sorted(PARSERS))
def test_every_option_has_help_and_shows_its_choices(command):
    for action in visible_options(PARSERS[command]):
        name = "/".join(action.option_strings) or action.dest
        assert action.help and action.help.strip(), f"{command} {name} has no help"
        if action.choices and not isinstance(action.choices, dict):
            shown = action.metavar is None or all(str(c) in f"{action.metavar} {action.help}" for c in action.choices)
            assert shown, f"{command} {name} hides its choices {list(action.choices)}"


def test_shared_flags_mean_the_same_thing_everywhere():
    seen: dict[str, dict[tuple, list[str]]] = {}
    for command, parser in PARSERS.items():
        for action in visible_options(parser):
            for flag in action.option_strings:
                signature = (action.dest, action.type, action.nargs, tuple(action.choices or ()), action.metavar)
                seen.setdefault(flag, {}).setdefault(signature, []).append(command)
    for flag, signatures in seen.items():
        assert len({sig[:2] for sig in signatures}) == 1, f"{flag} means different things: {signatures}"
        if flag in SHARED:
            assert len(signatures) == 1, f"{flag} is defined differently: {signatures}"
            (signature,) = signatures
            assert signature[0] == SHARED[flag][0] and signature[4] == SHARED[flag][1], (flag, signature)
    for flag in ("--results", "--seeds", "--eval-episodes", "--device", "--protocol"):
        assert len(next(iter(seen[flag].values()))) >= 3, f"{flag} should be shared by several commands"
    for old in ("--out", "--root", "--episodes"):  # the old spellings are hidden aliases, never visible flags
        assert old not in seen, f"{old} is still a visible flag: {seen.get(old)}"


def test_seeds_is_a_list_everywhere_and_results_names_the_root():
    for command, parser in PARSERS.items():
        flags = {f: a for a in parser._actions for f in a.option_strings}
        if "--seeds" in flags:
            assert flags["--seeds"].type is seed_list, command
        if "--results" in flags:
            assert flags["--results"].dest == "results", command
    assert {"modebench train", "modebench bench", "modebench sweep", "modebench tables", "modebench eval",
            "modebench profile", "modebench plots", "modebench report"} <= {c for c, p in PARSERS.items()
                                                                         if any("--results" in a.option_strings for a in p._actions)}


@pytest.mark.parametrize("argv, dest, value, notice", [
    (["train", "--algo", "bc", "--task", "toy/four-goal", "--out", "R"], "results", "R", "--out is deprecated; use --results"),
    (["tables", "--root", "R"], "results", "R", "--root is deprecated; use --results"),
    (["tables", "--out", "T"], "output_dir", "T", "--out is deprecated; use --output-dir"),
    (["tables", "--seed", "3"], "bootstrap_seed", 3, "--seed is deprecated; use --bootstrap-seed"),
    (["eval", "--checkpoint", "c.pt", "--episodes", "4"], "eval_episodes", 4, "--episodes is deprecated; use --eval-episodes"),
    (["eval", "--checkpoint", "c.pt", "--seed", "7"], "eval_seed", 7, "--seed is deprecated; use --eval-seed"),
    (["bench", "--out", "R"], "results", "R", "--out is deprecated; use --results"),
    (["sweep", "g", "--out", "R"], "results", "R", "--out is deprecated; use --results"),
])
def test_old_spellings_still_work_with_a_one_line_notice(argv, dest, value, notice, capsys):
    args = build_parser().parse_args(argv)
    assert getattr(args, dest) == value
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and notice in err[0]


@pytest.mark.parametrize("argv, expected", [
    (["trian"], "did you mean train?"),
    (["train", "--algo", "bc", "--task", "toy/four-goal", "--device", "gpu"], "did you mean cuda?"),
    (["train", "--algo", "bc", "--task", "toy/four-goal", "--protocol", "publishd"], "did you mean published?"),
    (["train", "--algo", "gme", "--task", "toy/four-goal", "--steps", "1"], "did you mean gem?"),
    (["train", "--algo", "bc", "--task", "toy/four-gaol", "--steps", "1"], "did you mean four-goal?"),
    (["bench", "--suite", "tyo"], "did you mean toy?"),
    (["bench", "--suite", "../../x"], "unknown suite '../../x'"),
    (["train", "--algo", "bc", "--task", "toy/four-goal", "--log", "tensorbord"], "did you mean tensorboard?"),
])
def test_a_misspelt_name_is_one_line_with_did_you_mean(argv, expected, capsys, tmp_path):
    assert main([*argv, "--results", str(tmp_path)] if argv[0] in ("train", "bench") else argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and expected in err[0], err


def test_version(capsys):
    assert main(["--version"]) == 0
    assert capsys.readouterr().out.startswith("modebench ")


def test_help_lists_commands_in_the_order_a_user_needs_them(capsys):
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    positions = [out.index(f"\n    {name}") for name in COMMAND_ORDER]
    assert positions == sorted(positions)


def test_building_the_parser_imports_no_torch():
    code = "import sys; from modebench.cli import build_parser; build_parser(); print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60)
    assert out.stdout.strip() == "False"


def test_help_is_fast():
    times = []
    for _ in range(3):
        start = time.perf_counter()
        subprocess.run([sys.executable, "-m", "modebench.cli", "--help"], capture_output=True, check=True, timeout=60)
        times.append(time.perf_counter() - start)
    assert statistics.median(times) < 0.5, f"modebench --help took {times} s"


# ------------------------------------------------------------------ metric sinks: one run per seed

SINKS_INSTALL = ".venv/bin/pip install tensorboard==2.21.0 wandb==0.31.0 (the optional extras of pyproject.toml)"


def wandb_history(path: Path) -> tuple[str, list[dict]]:
    """(run id, history rows) of an offline W&B run file: LevelDB-log records (32 KiB blocks of
    checksum, length, type headers after a 7-byte ':W&B' file header) holding wandb's protobuf Records."""
    from wandb.proto import wandb_internal_pb2

    data = path.read_bytes()
    assert data[:4] == b":W&B"
    pos, block, chunks, pending = 7, 32768, [], b""
    while pos + 7 <= len(data):
        if block - pos % block < 7:  # the block's tail is padding
            pos += block - pos % block
            continue
        _, length, kind = struct.unpack("<IHB", data[pos:pos + 7])
        chunk, pos = data[pos + 7:pos + 7 + length], pos + 7 + length
        if kind == 1:  # a whole record
            chunks.append(chunk)
        elif kind in (2, 3):  # its first or a middle part
            pending = (b"" if kind == 2 else pending) + chunk
        elif kind == 4:  # its last part
            chunks.append(pending + chunk)
    run_id, rows = "", []
    for chunk in chunks:
        record = wandb_internal_pb2.Record()
        record.ParseFromString(chunk)
        if record.WhichOneof("record_type") == "run":
            run_id = record.run.run_id
        elif record.WhichOneof("record_type") == "history":
            rows.append({item.key or "/".join(item.nested_key): json.loads(item.value_json) for item in record.history.item})
    return run_id, rows


def test_tensorboard_and_wandb_get_one_run_per_seed(tmp_path, monkeypatch, capsys):
    pytest.importorskip("tensorboard", reason=f"needs tensorboard: {SINKS_INSTALL}")
    pytest.importorskip("wandb", reason=f"needs wandb: {SINKS_INSTALL}")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    for name in ("WANDB_DIR", "WANDB_CONFIG_DIR", "WANDB_CACHE_DIR", "WANDB_DATA_DIR"):
        monkeypatch.setenv(name, str(tmp_path / "wandb-home"))
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    argv = ["train", "--algo", "bc", "--task", "toy/four-goal", "--steps", "20", "--seeds", "4,5", "--eval-episodes", "2",
            "--log", "tensorboard", "--log", "wandb", "--log-every", "5", "--no-progress", "--results", str(tmp_path / "r")]
    assert main(argv) == 0
    losses = {}
    for seed in (4, 5):
        (run,) = (tmp_path / "r" / "runs").glob(f"bc__toy-four-goal__seed{seed}__*")
        lines = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
        expected = [(m["step"], m["training/actor_loss"]) for m in lines if "training/actor_loss" in m]
        assert [step for step, _ in expected] == [5, 10, 15, 20]  # --log-every 5
        board = EventAccumulator(str(run / "tensorboard"))
        board.Reload()
        assert [(e.step, pytest.approx(e.value, rel=1e-6)) for e in board.Scalars("training/actor_loss")] == expected
        (offline,) = run.glob("wandb/offline-run-*/*.wandb")  # one W&B run in this seed's own folder
        run_id, rows = wandb_history(offline)
        assert run_id == run.name
        logged = [(row["_step"], pytest.approx(row["training/actor_loss"], rel=1e-6)) for row in rows if "training/actor_loss" in row]
        assert logged == expected, f"seed {seed}'s W&B run does not hold its own metrics"
        losses[seed] = [value for _, value in expected]
    assert losses[4] != losses[5]  # two seeds, two series: never merged
