"""Per-suite / per-task method override files: every key names a real suite or task, every value
is a valid config field or knob, and the values reach the resolved method config."""

import pytest
from modebench.algorithms.config import from_dict
from modebench.algorithms.registry import get_method
from modebench.benchmarks.run.spec import resolve_method
from modebench.benchmarks.tasks.suites import (
    get_task,
    load_suite,
    override_tables,
    suite_names,
)


@pytest.mark.parametrize("file_name", sorted(override_tables()))
def test_override_keys_and_values_are_valid(file_name):
    suites = set(suite_names())
    for key, methods in override_tables()[file_name].items():
        if "/" in key:
            suite, task = key.split("/", 1)
            assert suite in suites and task in load_suite(suite), f"{file_name}: {key} is no task"
        else:
            assert key in suites, f"{file_name}: {key} is no suite"
        for method, block in methods.items():
            cls = get_method(method).load()
            assert set(block) <= {"config", "knobs", "conflicts"}, (file_name, key, method)
            from_dict(cls.config_class, block.get("config", {}))
            from_dict(cls.knobs_class, block.get("knobs", {}), what="knob")


def test_overrides_reach_the_resolved_config():
    # GEM toy knob (suite-level key) and DROL Table 3 (task-level key: adroit hammer row)
    assert resolve_method("gem", get_task("toy/four-goal")).knobs.N == 64
    hammer = override_tables()["drol_overrides.yaml"]["adroit/hammer-cloned"]["drol"]["config"]
    resolved = resolve_method("drol", get_task("adroit/hammer-cloned")).config
    assert resolved.alpha == hammer["alpha"] and resolved.num_candidates == hammer["num_candidates"]
    # a preset keeps its own fixed values over the suite's overrides for the base method
    assert resolve_method("gem-unimodal-actor", get_task("toy/four-goal")).config.num_components == 1
