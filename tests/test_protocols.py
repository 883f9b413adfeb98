"""Protocols (issue 15): the published-settings table against the `published` resolution, the
controlled protocol's shared settings, provenance, errors, and the generated docs page."""

from __future__ import annotations

import json
import typing
from functools import cache

import pytest
from modebench.algorithms.config import ConfigError, coerce
from modebench.algorithms.registry import METHODS, base_method
from modebench.benchmarks.run import protocols
from modebench.benchmarks.run.protocols import (
    INFORMATIONAL_KEYS,
    PROTOCOLS,
    not_applicable,
    published_rows,
    resolve,
)
from modebench.benchmarks.tasks.suites import Task, load_suite, suite_names


@cache
def _resolved(method: str, task_id: str, protocol: str = "published"):
    return resolve(method, task_id, protocol)


def _tasks_of(scope: str) -> list[str]:
    suite, _, task = scope.partition("/")
    return [f"{suite}/{task}"] if task else [f"{suite}/{name}" for name in load_suite(suite)]


@cache
def _row_ids() -> frozenset:
    return frozenset((r.method, r.key, r.scope) for r in published_rows())


def _overridden_by_task_row(row, task_id: str) -> bool:
    """A suite row loses to a task row of the same method and key."""
    return row.scope != task_id and (row.method, row.key, task_id) in _row_ids()


def _typed(method: str, part: str, name: str, value):
    """The row's value as its field's type (ints -> floats where the field is a float)."""
    if part == "run":
        return value
    typed = coerce(value, typing.get_type_hints(protocols._part_class(method, part))[name], name)
    return list(typed) if isinstance(typed, tuple) else typed  # resolved values are plain data, as in records


def test_every_published_row_matches_the_published_resolution():
    """THE table test: each row of benchmarks/tasks/published_settings.csv, on every task its scope
    covers, is the value and the source `resolve(method, task, "published")` gives -- or its
    (method, key) is one protocols.not_applicable names, and then the resolution lists it as not applied.
    No row is skipped silently."""
    checked = not_applied = 0
    for row in published_rows():
        for task_id in _tasks_of(row.scope):
            if _overridden_by_task_row(row, task_id):
                continue
            resolved = _resolved(row.method, task_id)
            if not_applicable(row.method, row.key):
                assert (row.key, json.dumps(row.value), not_applicable(row.method, row.key)) in resolved.not_applied, (row, task_id)
                not_applied += 1
                continue
            part, name = protocols._split_key(row.method, row.key)
            setting = getattr(resolved, part)[name]
            expected = _typed(row.method, part, name, row.value)
            assert setting.value == expected, f"line {row.line}: {row.method} {task_id} {row.key}: resolved {setting.value!r}, table {expected!r}"
            assert setting.source == row.source, f"line {row.line}: {row.method} {task_id} {row.key}: source {setting.source!r}"
            checked += 1
    assert checked > 2000 and not_applied > 0  # every row expands to one check per task it covers


def test_not_applicable_entries_are_still_needed():
    """A method's published_not_applicable (algorithms/methods.yaml) names a setting ModeBench cannot
    take and that the table has; an informational key is one the table has. Once a field exists
    (e.g. an IQL actor dropout), its entry must go so its rows apply."""
    keys_in_table = {(r.method, r.key) for r in published_rows()}
    for key, reason in INFORMATIONAL_KEYS.items():
        assert reason and any(k == key for _, k in keys_in_table), f"{key}: no row uses this entry; remove it"
    entries = [(method, key, reason) for method, entry in METHODS.items() for key, reason in entry.published_not_applicable.items()]
    assert entries
    for method, key, reason in entries:
        assert reason
        assert (method, key) in keys_in_table, f"{method} {key}: no row uses this entry; remove it"
        part, _ = protocols._split_key(method, key)
        assert part is None, f"{method} now has {key!r}: remove it from its published_not_applicable so its rows apply"


def test_table_scopes_name_existing_suites_and_tasks(tmp_path, monkeypatch):
    """The whole table loads against the suites (every scope a suite or SUITE/TASK that exists), and
    a per-task row for a task the suite lacks is a one-line error naming the line and the fix."""
    assert len(published_rows()) > 1000
    bad = tmp_path / "published_settings.csv"
    bad.write_text("method,scope,key,value,source\nfql,adroit/pen-nonexistent,alpha,3.0,paper:X\n")
    monkeypatch.setattr(protocols, "PUBLISHED_TABLE", bad)
    protocols.published_rows.cache_clear()
    try:
        with pytest.raises(ConfigError, match=r"published_settings.csv:2: .*has no task 'pen-nonexistent'"):
            protocols.published_rows()
        bad.write_text("method,scope,key,value,source\nfql,adroit,no_such_key,3.0,paper:X\n")
        protocols.published_rows.cache_clear()
        with pytest.raises(ConfigError, match=r"published_settings.csv:2: fql has no setting 'no_such_key'"):
            protocols.published_rows()
    finally:
        protocols.published_rows.cache_clear()


@pytest.mark.parametrize("method,task,part,key,value", [
    # issue 15's list of differences, as the published protocol now resolves them
    ("fql", "ogbench-humanoidmaze-medium/task1", "config", "alpha", 30.0),
    ("fql", "antmaze/large-play", "config", "alpha", 3.0),
    ("fql", "antmaze/large-diverse", "config", "alpha", 3.0),
    ("fql", "adroit/pen-expert", "config", "alpha", 3000.0),
    ("fql", "adroit/door-human", "config", "alpha", 30000.0),
    ("fql", "adroit/pen-human", "config", "q_agg", "min"),
    ("fql", "antmaze/umaze", "run", "steps", 500_000),
    ("drol", "adroit/hammer-human", "run", "steps", 500_000),
    ("fql", "ogbench-cube-single/task2", "data", "normalize_obs", False),
    ("drol", "antmaze/umaze", "data", "clip_actions", 0.99999),
    ("iql", "antmaze/umaze", "data", "reward_transform", "antmaze"),
    ("iql", "locomotion/hopper-medium", "data", "reward_transform", "locomotion"),
    ("lom", "locomotion/hopper-medium", "data", "reward_transform", "none"),
    ("isep", "locomotion/hopper-medium", "run", "steps", 2_000_000),
    ("isep-fm", "locomotion/hopper-medium", "run", "eval_episodes", 20),
    ("lom", "locomotion/walker2d-medium-replay", "config", "num_modes", 10),
    ("lom-code", "locomotion/halfcheetah-medium-expert", "config", "num_modes", 1),
    ("lom-code", "locomotion/hopper-medium-expert", "config", "beta", 0.1),
    ("lom-code", "locomotion/halfcheetah-medium", "config", "max_weight", 100.0),
    ("iql", "adroit/pen-human", "config", "expectile", 0.7),
    ("iql", "kitchen/partial", "config", "beta", 0.5),
])
def test_issue_differences_are_fixed_under_published(method, task, part, key, value):
    assert getattr(_resolved(method, task), part)[key].value == value


def test_drol_eq8_never_takes_drols_bc_coefficient_as_its_q_weight():
    """The inversion: under both protocols, wherever DROL's alpha (a BC coefficient in the code
    form) comes from a published or override layer, drol-eq8's alpha is its own derived value
    alpha = d_a / bc_coef with the normalised Q, not DROL's number."""
    seen = 0
    for suite in suite_names():
        for name in load_suite(suite):
            task_id = f"{suite}/{name}"
            for protocol in PROTOCOLS:
                try:
                    drol = _resolved("drol", task_id, protocol)
                except ConfigError:
                    continue
                eq8 = _resolved("drol-eq8", task_id, protocol)
                if drol.config["alpha"].source.startswith("default:"):
                    continue
                seen += 1
                assert eq8.config["alpha"].source.startswith("derived:"), (task_id, protocol, eq8.config["alpha"])
                assert eq8.config["normalize_q_loss"].value is True
                d_a = float(eq8.config["alpha"].source.rsplit("d_a=", 1)[1].rstrip(")"))
                assert eq8.config["alpha"].value == pytest.approx(d_a / drol.config["alpha"].value, rel=1e-5)
    assert seen > 50


def test_suite_layers_merge_to_the_loaders_method_overrides():
    """protocols.suite_method_layers lists the same files in the same order as suites.load_suite."""
    from modebench.benchmarks.tasks.suites import _merge_methods

    for suite in suite_names():
        for task in load_suite(suite).values():
            merged = _merge_methods(*(block for _, block in protocols.suite_method_layers(task)))
            assert merged == task.methods, task.id


def test_controlled_protocol_is_shared_by_every_method_on_a_suite():
    """Controlled: every method on a task gets the same data, steps, episodes, schedule and seeds,
    all stated by the suite file."""
    for suite in suite_names():
        block = protocols.controlled_block(suite)
        for task in load_suite(suite).values():
            shared = None
            for method in METHODS:
                r = resolve(method, task, "controlled")
                settings = (r.values("data"), r.values("run"))
                shared = shared or settings
                assert settings == shared, (method, task.id)
                assert r.run["steps"].value == block["steps"] and r.run["seeds"].value == block["seeds"]
                assert not any(s.source.startswith(("paper:", "code:")) for s in (*r.data.values(), *r.run.values()))


def test_toy_controlled_keeps_the_toy_settings():
    """`make bench SUITE=toy` runs the controlled protocol: no published value reaches a toy run,
    so its configs are the defaults, the presets and the suite file, as before protocols."""
    for task in load_suite("toy").values():
        for method in METHODS:
            r = resolve(method, task, "controlled")
            sources = [s.source for part in ("config", "knobs", "data", "run") for s in getattr(r, part).values()]
            assert all(s.startswith(("default:", "suite:", "preset:", "controlled:", "ours:")) for s in sources), (method, sources)
    assert resolve("lom", "toy/four-goal").config["mdn_steps"].value == 500
    assert resolve("iql", "toy/four-goal").run["steps"].value == 2000


def test_every_value_has_a_source_and_user_overrides_say_so():
    r = resolve("fql", "adroit/pen-human", "published", {"config": {"alpha": "5"}, "data": {"normalize_obs": "true"},
                                                          "run": {"steps": 100}})
    assert r.config["alpha"].value == 5.0 and r.config["alpha"].source == "user:--set"
    assert r.data["normalize_obs"].value is True and r.data["normalize_obs"].source == "user:--data"
    assert r.run["steps"].source == "user:--steps"
    for part in ("config", "knobs", "data", "run"):
        assert all(s.source for s in getattr(r, part).values())


def test_errors_are_one_line_and_name_the_fix():
    with pytest.raises(ConfigError, match="unknown protocol 'paper'; valid: controlled, published"):
        resolve("fql", "toy/four-goal", "paper")
    with pytest.raises(ConfigError, match=r"unknown fql config key\(s\) \['nope'\]"):
        resolve("fql", "toy/four-goal", "controlled", {"config": {"nope": 1}})
    with pytest.raises(ConfigError, match="bc has no published protocol on toy/four-goal .*use --protocol controlled"):
        resolve("bc", "toy/four-goal", "published")
    with pytest.raises(ConfigError, match="cfgrl has no published protocol on adroit/pen-human"):
        resolve("cfgrl", "adroit/pen-human", "published")
    adhoc = Task(suite="adhoc", name="data", dataset={}, env={}, horizon=10, score={})
    with pytest.raises(ConfigError, match="ad-hoc dataset: no published protocol"):
        resolve("fql", adhoc, "published")


def test_run_length_defaults_to_the_protocols():
    from modebench.benchmarks.run.spec import resolve_run

    assert resolve_run("iql", "toy/four-goal").steps == 2000  # the toy suite's controlled steps
    published = resolve_run("fql", "antmaze/umaze", protocol="published")
    assert (published.steps, published.eval_episodes, published.eval_every) == (500_000, 50, 100_000)
    # the run trains on the method's own preprocessing (FQL: raw observations, actions clipped to 1 - 1e-5)
    assert (published.data.normalize_obs, published.data.clip_actions) == (False, 0.99999)
    assert resolve_run("fql", "antmaze/umaze").data.normalize_obs is True  # controlled: the suite's, for every method
    assert resolve_run("fql", "antmaze/umaze", protocol="published", steps=30).steps == 30
    adhoc = Task(suite="adhoc", name="data", dataset={}, env={}, horizon=10, score={})
    steps = resolve("bc", adhoc).run["steps"]
    assert steps.value == 10_000 and steps.source.startswith("ours:")


def test_presets_inherit_the_base_protocol_and_keep_their_own_values():
    r = resolve("gem-no-lcb", "locomotion/hopper-medium", "published")
    assert r.knobs["lcb_lambda"].value == 0.0 and r.knobs["lcb_lambda"].source.startswith("preset:gem-no-lcb")
    assert r.knobs["N"].value == 1024 and r.knobs["N"].source.startswith(("paper:", "code:"))


def test_config_command_json(capsys):
    from modebench.cli import main

    assert main(["config", "--algo", "fql", "--task", "adroit/pen-human", "--protocol", "published", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["protocol"] == "published"
    assert out["config"]["alpha"] == {"value": 10000.0, "source": out["config"]["alpha"]["source"]}
    assert out["config"]["alpha"]["source"].startswith("code:seohongpark/fql:README.md")
    assert set(out) == {"config", "knobs", "data", "run", "protocol", "observation"}
    assert out["observation"] == {"layout": "as-given", "keys": None, "parts": [["", 45]], "dim": 45,
                                  "source": out["observation"]["source"]}
    assert all(set(entry) - {"other"} == {"value", "source"} for part in ("config", "knobs", "data", "run")
               for entry in out[part].values())
    assert main(["config", "--algo", "fql", "--task", "toy/four-goal", "--protocol", "bogus"]) == 2
    err = capsys.readouterr().err  # one line naming the bad value and the valid ones
    assert "'bogus'" in err and "controlled" in err and "published" in err


FQL_IQL = "code:seohongpark/fql:"


def test_config_shows_the_fql_repos_iql_network_with_sources(capsys):
    """Issue 25: IQL under `published` on OGBench is FQL's agents/iql.py network, each field cited."""
    from modebench.cli import main

    assert main(["config", "--algo", "iql", "--task", "ogbench-humanoidmaze-medium/task1", "--protocol", "published",
                 "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    config = out["config"]
    assert out["observation"]["dim"] == 69 and out["observation"]["layout"] == "as-given"  # OGBench's own
    expected = {"activation": "gelu", "actor_tanh_mean": False, "actor_std": "constant", "actor_cosine_lr": False,
                "advantage_q": "online", "critic_layer_norm": True, "layer_norm_placement": "post_act",
                "hidden_dims": [512, 512, 512, 512], "actor_dropout": 0.0, "init": "fan_avg",
                "actor_head_init_scale": 0.01}
    for key, value in expected.items():
        assert config[key]["value"] == value, key
        assert config[key]["source"].startswith(FQL_IQL), (key, config[key]["source"])
    # the IQL authors' network on the D4RL suites they ran, CORL's on maze2d
    authors = resolve("iql", "antmaze/umaze", "published").config
    assert (authors["log_std_min"].value, authors["activation"].value, authors["actor_tanh_mean"].value) == (-5.0, "relu", True)
    assert authors["log_std_min"].source.startswith("code:ikostrikov/implicit_q_learning:learner.py")
    assert authors["init"].value == "orthogonal" and authors["init"].source.startswith("code:ikostrikov")
    assert resolve("iql", "maze2d/umaze", "published").config["log_std_min"].value == -20.0


def test_iql_builds_the_network_its_config_names():
    """The fields change the network: FQL's IQL has GELU, a plain mean, a constant (untrained) std
    and uses the online critic in its advantage; the authors' a tanh mean and a learned log-std."""
    import torch
    from modebench.algorithms.base import EnvSpec
    from modebench.algorithms.iql import IQL, IQLConfig

    fql = IQL(IQLConfig(activation="gelu", actor_tanh_mean=False, actor_std="constant", advantage_q="online",
                        hidden_dims=(8,)), EnvSpec(3, 2, 10, 100))
    assert any(isinstance(m, torch.nn.GELU) for m in fql.actor.modules())
    assert not any(isinstance(m, torch.nn.ReLU) for m in fql.modules())
    assert "log_std" not in dict(fql.actor.named_parameters()) and "log_std" in dict(fql.actor.named_buffers())
    obs = torch.randn(5, 3) * 10
    assert fql.actor.mean(obs).abs().max() > 1.0 or not torch.allclose(fql.actor.mean(obs), torch.tanh(fql.actor.mean(obs)))
    authors = IQL(IQLConfig(log_std_min=-5.0, hidden_dims=(8,)), EnvSpec(3, 2, 10, 100))
    with torch.no_grad():
        authors.actor.log_std.fill_(-9.0)
    assert torch.allclose(authors.actor(obs).stddev, torch.full((5, 2), float(torch.tensor(-5.0).exp())))
    assert authors.actor.mean(obs).abs().max() <= 1.0
    with pytest.raises(ConfigError, match="log_std_min"):
        IQL(IQLConfig(log_std_min=3.0, hidden_dims=(8,)), EnvSpec(3, 2, 10, 100))
    # the JAX codes' initialisations: zero biases, orthogonal (gain sqrt 2) or fan_avg with FQL's 1e-2 mean head
    orth = IQL(IQLConfig(init="orthogonal", hidden_dims=(16,)), EnvSpec(3, 2, 10, 100))
    w = orth.actor.net[0].weight
    assert torch.allclose(w.T @ w, 2.0 * torch.eye(3), atol=1e-5) and float(orth.actor.net[0].bias.abs().max()) == 0.0
    fan = IQL(IQLConfig(init="fan_avg", actor_head_init_scale=0.01, hidden_dims=(16,)), EnvSpec(3, 2, 10, 100))
    assert float(fan.actor.net[-1].weight.abs().max()) <= (3 * 0.01 / ((16 + 2) / 2)) ** 0.5
    assert float(fan.actor.net[0].weight.abs().max()) > (3 * 0.01 / ((16 + 2) / 2)) ** 0.5
    assert all(torch.equal(a, b) for a, b in zip(fan.critic.q.parameters(), fan.critic.q_target.parameters()))


# Issue 25 item 4: the conflicts between two primary sources the issue names, as the resolution shows them
ISSUE_CONFLICTS = [
    ("drol", "antmaze/umaze", "num_candidates", 16, 2),
    ("drol", "antmaze/medium-play", "num_candidates", 16, 32),
    ("drol", "adroit/pen-human", "num_candidates", 4, 16),
    ("drol", "adroit/pen-human-v1", "num_candidates", 4, 16),
    ("drol", "adroit/hammer-cloned", "num_candidates", 16, 8),
    ("drol", "adroit/hammer-expert-v1", "num_candidates", 16, 8),
    ("lom", "locomotion/halfcheetah-medium-expert", "num_modes", 1, "one of {2, 5, 10, 15, 20}"),
    ("lom-code", "locomotion/halfcheetah-medium-expert", "num_modes", 1, "one of {2, 5, 10, 15, 20}"),
]


@pytest.mark.parametrize("method,task,key,used,other", ISSUE_CONFLICTS)
def test_source_conflicts_show_both_values_under_both_protocols(method, task, key, used, other):
    for protocol in PROTOCOLS:
        setting = resolve(method, task, protocol).config[key]
        assert (setting.value, setting.other.other) == (used, other), protocol
        assert setting.other.source.startswith(("code:", "paper:")) and setting.other.why
        assert setting.as_json()["other"]["value"] == other


def test_every_recorded_conflict_is_real_and_in_the_one_docs_table(capsys):
    """Each `conflicts:` entry names a setting of its method whose used value differs from the
    other source's (else it is no conflict), and the docs page's one table lists it."""
    from modebench.cli import main

    table = "\n".join(protocols.conflict_table())
    seen = 0
    for suite in suite_names():
        for task in load_suite(suite).values():
            for method in METHODS:
                for key, (other, where) in protocols.conflicts_for(method, task).items():
                    setting = resolve(method, task, "controlled").config[key]
                    assert setting.value != other.other, where
                    assert f"| {key} | {protocols._fmt(setting.value)} |" in table, where
                    seen += 1
    assert seen >= len(ISSUE_CONFLICTS)
    assert main(["config", "--algo", "drol", "--task", "antmaze/umaze", "--protocol", "published"]) == 0
    out = capsys.readouterr().out
    assert "other source: 2 (code:muzhancun/DROL:scripts/production_run_commands.sh" in out
    assert "observation: d4rl, achieved_goal 2 + observation 27 = 29 (suite:antmaze.yaml observation.use (29-d: " in out


def test_every_method_on_every_suite_resolves_with_sources():
    """`modebench config` works for every registered method on every task under controlled."""
    for suite in suite_names():
        for task in load_suite(suite).values():
            for method in METHODS:
                r = resolve(method, task, "controlled")
                assert r.config and r.data and set(r.run) == set(protocols.RUN_KEYS) | {"normaliser"}
                assert base_method(method) in METHODS


def test_docs_page_is_current():
    """CI's staleness check: docs/run-settings.md is what the generator writes now."""
    page = protocols.DOCS_PAGE
    assert page.exists() and page.read_text() == protocols.render_docs(), (
        f"{page.name} is stale; run `{protocols.DOCS_COMMAND}` (or `make docs`) and commit it")


def test_a_controlled_block_must_name_steps_and_seeds_and_only_known_keys(monkeypatch):
    blocks = {"typo": {"steps": 10, "seeds": 3, "stpes": 5}, "partial": {"steps": 10}}
    monkeypatch.setattr(protocols, "_read_suite", lambda suite: {"controlled": blocks[suite]})
    with pytest.raises(ConfigError, match=r"suites/typo.yaml: unknown controlled: key\(s\) \['stpes'\]; valid keys"):
        protocols.controlled_block("typo")
    with pytest.raises(ConfigError, match=r"controlled: missing \['seeds'\]"):
        protocols.controlled_block("partial")
