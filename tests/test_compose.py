"""Selection as a composition (benchmarks/run/compose.py): another method proposes, GEM selects.

The composition and GEM.act share GEM.select, so GEM proposing for itself is GEM, bitwise; N = 0
leaves the proposer alone; mismatched checkpoints are one-line errors."""

from __future__ import annotations

import shutil

import pytest
import torch
from modebench.algorithms.base import EnvSpec
from modebench.algorithms.config import ConfigError
from modebench.algorithms.gem import GEM, GEMConfig, GEMKnobs
from modebench.algorithms.registry import get_method
from modebench.benchmarks.run.compose import (
    SelectedProposals,
    cross_pairs,
    evaluate_selection,
    stored_runs,
)

SPEC = EnvSpec(obs_dim=3, act_dim=2, horizon=40)


def random_gem(seed: int = 0) -> GEM:
    torch.manual_seed(seed)
    gem = GEM(GEMConfig(hidden_dims=(32, 32)), SPEC)
    with torch.no_grad():  # spread the untrained heads so candidates score differently
        for p in gem.parameters():
            p.add_(0.3 * torch.randn_like(p))
    return gem.eval()


def acted(policy, obs, t, knobs, seed):
    torch.manual_seed(seed)
    return policy.act(obs, t, knobs)


KNOBS = [
    GEMKnobs(),
    GEMKnobs(N=0),
    GEMKnobs(N=32, k_smooth=4, lcb_lambda=0.5, w_end=0.1),
    GEMKnobs(N=8, anchor="off"),
    GEMKnobs(N=8, use_pw=False),
    GEMKnobs(N=8, support_mode="raw", lcb_lambda=3.0),
]


@pytest.mark.parametrize("knobs", KNOBS, ids=lambda k: f"N{k.N}-{k.anchor}-k{k.k_smooth}-pw{k.use_pw}-{k.support_mode}")
def test_gem_selecting_its_own_proposals_is_gem_act_bitwise(knobs):
    gem = random_gem()
    obs, t = torch.randn(23, SPEC.obs_dim), torch.arange(23) * 2
    own = acted(gem, obs, t, knobs, seed=7)
    composed = acted(SelectedProposals(gem, gem, GEMKnobs()), obs, t, knobs, seed=7)
    assert torch.equal(own.actions, composed.actions)
    assert own.audits.keys() == composed.audits.keys()
    for name in own.audits:
        assert torch.equal(own.audits[name], composed.audits[name]), name


def test_another_gems_selection_changes_gems_actions():
    """The selector's networks do the scoring: a different critic picks other candidates."""
    proposer, selector = random_gem(0), random_gem(1)
    obs, t = torch.randn(64, SPEC.obs_dim), torch.zeros(64, dtype=torch.long)
    own = acted(proposer, obs, t, GEMKnobs(N=64), seed=3).actions
    composed = acted(SelectedProposals(proposer, selector), obs, t, GEMKnobs(N=64), seed=3).actions
    assert not torch.equal(own, composed)


@pytest.mark.parametrize("method", ["drol", "fql", "isep-fm", "lom", "isep"])
def test_n0_returns_the_proposers_own_action(method):
    cls = get_method(method).load()
    torch.manual_seed(0)
    proposer = cls(cls.config_class(), SPEC).eval()
    knobs = proposer.default_knobs()
    obs, t = torch.randn(9, SPEC.obs_dim), torch.arange(9)
    alone = acted(proposer, obs, t, knobs, seed=5).actions
    composed = acted(SelectedProposals(proposer, random_gem(), knobs), obs, t, GEMKnobs(N=0), seed=5)
    assert torch.equal(alone, composed.actions)
    # with proposals, the executed action is one of the candidates {own action} + N samples (top-1)
    policy = SelectedProposals(proposer, random_gem(), knobs)
    torch.manual_seed(5)
    candidates = policy.candidates(obs, t, GEMKnobs(N=6))
    chosen = acted(policy, obs, t, GEMKnobs(N=6), seed=5).actions
    assert torch.equal(candidates[:, 0], alone)
    assert ((candidates - chosen.unsqueeze(1)).abs().sum(-1) == 0).any(-1).all()


# ------------------------------------------------------------------ checkpoints and the command line

TINY = {"steps": 30, "eval_episodes": 6}


def tiny_run(out, method, task="toy/four-goal", seed=0, data=None):
    from modebench.benchmarks.run.train import train

    config = {"hidden_dims": (16, 16)}
    if method == "gem":
        config["gmm_pretrain_steps"] = 20
    return train(method, task, out=out, seed=seed, config=config, data=data, device="cpu", **TINY)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    out = tmp_path_factory.mktemp("compose")
    return out, {
        "gem": tiny_run(out, "gem"),
        "drol": tiny_run(out, "drol"),
        "gem-sparse": tiny_run(out, "gem", task="toy/sparse-optimum"),
        "gem-raw-obs": tiny_run(out, "gem", seed=1, data={"normalize_obs": False}),
    }


def episodes(record):
    return [(e["return"], e["length"]) for e in record["episodes"]]


def test_eval_select_with_writes_records_naming_both_checkpoints(runs, capsys):
    from modebench.cli import main

    out, r = runs
    drol, gem = r["drol"], r["gem"]
    assert main(["eval", "--checkpoint", str(drol.checkpoint), "--select-with", str(gem.checkpoint),
                 "--knob", "N=0,4", "--knob", "lambda=0.5", "--knob", "w_end=0.2", "--knob", "k_smooth=2", "--eval-episodes", "6", "--device", "cpu",
                 "--results", str(out)]) == 0
    lines = [x for x in capsys.readouterr().out.splitlines() if "normalized_score" in x]
    assert len(lines) == 2 and all(x.split("normalized_score ")[1].split()[0] for x in lines)
    records = sorted((r for r in _records(out, drol.run_dir.name) if r["source"] == "select"), key=lambda r: r["selection"]["knobs"]["N"])
    assert [x["selection"]["knobs"]["N"] for x in records] == [0, 4]
    for rec in records:
        sel = rec["selection"]
        assert sel["proposer_run_id"] == drol.run_dir.name == rec["run_id"]
        assert sel["selector_run_id"] == gem.run_dir.name == rec["knobs"]["selection"]["selector"]
        assert sel["knobs"]["lcb_lambda"] == 0.5 and sel["knobs"]["w_end"] == 0.2 and sel["knobs"]["k_smooth"] == 2
        assert rec["method"] == "drol" and len(rec["episodes"]) == TINY["eval_episodes"]
    # a resumed run leaves stored settings alone
    assert evaluate_selection(drol.checkpoint, gem.checkpoint, {"N": ["0", "4"], "lambda": ["0.5"], "w_end": ["0.2"], "k_smooth": ["2"]},
                              episodes=6, out=out, device="cpu", skip_stored=True) == []
    # N = 0 is DROL alone: the same episodes as its own evaluation at the end of training
    own = next(x for x in _records(out, drol.run_dir.name) if x["source"] == "train")
    assert episodes(records[0]) == episodes(own)


def test_gem_selecting_for_itself_reproduces_its_own_evaluation(runs):
    out, r = runs
    gem = r["gem"]
    (record,) = evaluate_selection(gem.checkpoint, gem.checkpoint, episodes=TINY["eval_episodes"], out=out, device="cpu")
    own = next(x for x in _records(out, gem.run_dir.name) if x["source"] == "train")
    assert record["normalized_score"] == own["normalized_score"]
    assert episodes(record) == episodes(own)
    assert [e["audit/support_z"] for e in record["episodes"]] == [e["audit/support_z"] for e in own["episodes"]]


def _records(out, run_id):
    import json

    return [json.loads(p.read_text()) for p in (out / "runs" / run_id / "records").glob("*.json")]


def test_mismatches_are_one_line_errors(runs, tmp_path, monkeypatch, capsys):
    from modebench.cli import main

    _, r = runs
    drol, gem = str(r["drol"].checkpoint), str(r["gem"].checkpoint)
    cases = {
        "cannot score candidates; the selector must be a checkpoint of a method with select\\(\\) \\(gem\\)": (gem, drol),
        "differ in task": (drol, str(r["gem-sparse"].checkpoint)),
        "differ in data settings": (drol, str(r["gem-raw-obs"].checkpoint)),
    }
    for message, (proposer, selector) in cases.items():
        with pytest.raises(ConfigError, match=message):
            evaluate_selection(proposer, selector, device="cpu")
    # the same data settings but another normaliser (a hand-edited checkpoint outside its run folder)
    payload = torch.load(gem, weights_only=True)
    payload["normalizer"]["mean"] = payload["normalizer"]["mean"] + 1.0
    edited = tmp_path / "other" / "checkpoint.pt"
    edited.parent.mkdir()
    torch.save(payload, edited)
    with pytest.raises(ConfigError, match="normalise observations differently"):
        evaluate_selection(drol, edited, device="cpu")
    for knob, message in (("candidate_source=behavior", "candidates are the proposer's"), ("anchor=bary", "anchor=mode"),
                          ("beta=3", "unknown selection knob")):
        with pytest.raises(ConfigError, match=message):
            evaluate_selection(drol, gem, {knob.split("=")[0]: [knob.split("=")[1]]}, device="cpu")
    monkeypatch.setattr(type(r["drol"].algorithm), "can_propose", False)
    with pytest.raises(ConfigError, match="cannot propose"):
        evaluate_selection(drol, gem, device="cpu")
    monkeypatch.undo()
    # through the command line: exit status 2 and one line
    capsys.readouterr()
    assert main(["eval", "--checkpoint", drol, "--select-with", str(r["gem-sparse"].checkpoint), "--device", "cpu"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "differ in task" in err


def test_cross_pairs_match_task_data_seed_and_steps(runs, tmp_path):
    out, r = runs
    pairs = cross_pairs(stored_runs(out), ["drol", "gem"], "gem")
    named = {(p.run_id, s.run_id) for p, s in pairs}
    assert (r["drol"].run_dir.name, r["gem"].run_dir.name) in named
    assert all(s.config["method"] == "gem" and p.pairing == s.pairing for p, s in pairs)
    assert not any(s.run_id in (r["gem-sparse"].run_dir.name, r["gem-raw-obs"].run_dir.name) and p.run_id == r["drol"].run_dir.name
                   for p, s in pairs)
    # a training-grid variant beside the default-config run of its method is not a proposer
    from modebench.benchmarks.run.compose import StoredRun

    base = next(p for p, _ in pairs if p.run_id == r["drol"].run_dir.name)
    default = StoredRun("drol-default", base.checkpoint, {**base.config, "suite_default": True})
    variant = StoredRun("drol-k1", base.checkpoint, {**base.config, "suite_default": False})
    gem_run = next(s for p, s in pairs if p.run_id == base.run_id)
    assert [p.run_id for p, _ in cross_pairs([default, variant, gem_run], ["drol"], "gem")] == ["drol-default"]
    # two GEM runs that could both select for DROL: refused, not picked silently
    copy = tmp_path / "runs" / (r["gem"].run_dir.name + "-copy")
    shutil.copytree(r["gem"].run_dir, copy)
    shutil.copytree(r["drol"].run_dir, tmp_path / "runs" / r["drol"].run_dir.name)
    shutil.copytree(r["gem"].run_dir, tmp_path / "runs" / r["gem"].run_dir.name)
    with pytest.raises(ConfigError, match="2 gem runs share"):
        cross_pairs(stored_runs(tmp_path), ["drol"], "gem")


def test_select_stored_and_the_grid_axis(runs):
    """`modebench cross-select` and a grid's select_with run the same pass over a store."""
    from modebench.benchmarks.run.compose import select_stored
    from modebench.sweeps.grid import load_grid

    out, r = runs
    lines = []
    assert select_stored(out, ["drol"], {"N": ["2"]}, selector="gem", run_ids={r["drol"].run_dir.name}, episodes=3, device="cpu", log=lines.append) == 1
    assert any("drol toy/four-goal seed 0 N=2 normalized_score" in x for x in lines)
    with pytest.raises(ConfigError, match="no proposer run"):
        select_stored(out, ["fql"], {"N": ["2"]}, selector="gem", device="cpu", log=lines.append)
    assert load_grid("cross_selection").select_with == {"N": [0, 1, 16, 64, 256]}


def test_a_grid_selects_only_with_gem_among_its_methods(tmp_path):
    from modebench.sweeps.grid import load_grid

    grid = tmp_path / "g.yaml"
    grid.write_text("name: g\ntasks: [toy/four-goal]\nsteps: 10\nmethods: [lom, drol]\nselect_with: {N: [0, 4]}\n")
    with pytest.raises(ConfigError, match="select_with needs gem among the methods"):
        load_grid(grid)
