"""perf/seeds.py (seed-batched training throughput): the table's structure, and that the batched
model it times is S different seeds really training. No timing assertions."""

from __future__ import annotations

import csv
import json
import math

import pytest
import torch
from modebench.algorithms.seeds import unstack_state
from modebench.benchmarks.tasks.suites import get_task

from perf import seeds as perf_seeds

CPU = torch.device("cpu")
TINY = {"hidden_dims": (16, 16), "batch_size": 16}


@pytest.fixture(scope="module")
def toy_data():
    return get_task(perf_seeds.TOY_TASK).load_dataset()


@pytest.fixture(scope="module")
def measured(toy_data):
    case = perf_seeds.toy_case("bc", CPU, TINY, dataset=toy_data)
    trainers: dict = {}
    row = perf_seeds.measure(case, [1, 3], repeats=1, updates=3, warmup=2, trainers=trainers)
    return case, row, trainers


def test_the_row_and_table_have_every_figure(measured, tmp_path):
    _, row, _ = measured
    assert (row.method, row.size, row.batch_size, row.error) == ("bc", "toy", 16, None)
    assert row.target == perf_seeds.TOY_TARGET
    # one repeat: two single-seed blocks around one block of each S
    assert {k: len(v) for k, v in row.blocks.items()} == {"single": 2, "S=1": 1, "S=3": 1}
    assert row.single == pytest.approx(sum(row.blocks["single"]) / 2)  # the median of two
    assert set(row.seed_rates) == set(row.ratios) == set(row.ratio_ranges) == {1, 3}
    adjacent = math.sqrt(row.blocks["single"][0] * row.blocks["single"][1])
    for s in (1, 3):
        assert row.seed_rates[s] == pytest.approx(row.blocks[f"S={s}"][0]) and row.seed_rates[s] > 0
        assert row.ratios[s] == pytest.approx(row.seed_rates[s] / adjacent)
    assert row.meets == (row.ratios[3] >= perf_seeds.TOY_TARGET)
    assert row.gpu_time_ratio is None
    lines = perf_seeds.format_table([row], [1, 3]).splitlines()
    assert len(lines) == 2
    assert "single" in lines[0] and "S=1" in lines[0] and "S=3" in lines[0] and "S=8" not in lines[0]
    assert lines[1].split()[:3] == ["bc", "toy", f"{row.single:.1f}"]
    assert f"({row.ratios[3]:.2f}x)" in lines[1]
    [verdict] = perf_seeds.verdicts([row], [1, 3])
    assert verdict.startswith("toy target") and ("holds" in verdict) == row.meets
    info = perf_seeds.machine(CPU)
    assert info["torch_threads"] == torch.get_num_threads() and info["device"] == "cpu"
    paths = perf_seeds.write_rows(tmp_path, [row], [1, 3], {"repeats": 1}, info)
    with paths[0].open() as handle:
        [record] = list(csv.DictReader(handle))
    assert record["method"] == "bc" and float(record["S3_ratio"]) == pytest.approx(row.ratios[3])
    stored = json.loads(paths[1].read_text())
    assert stored["machine"]["device"] == "cpu" and stored["rows"][0]["blocks"]["S=3"] == row.blocks["S=3"]


def test_the_timed_batched_model_trains_s_different_seeds(measured):
    case, _, trainers = measured
    single, batched = trainers["single"], trainers[3]
    assert single.model.seeds is None and batched.model.seeds == 3
    assert all(v.dim() == 0 for v in single.metrics.values())
    assert all(v.shape == (3,) for v in batched.metrics.values())
    loss, _ = batched.model.losses(batched.replay.sample(case.batch_size), batched.step)
    assert loss.shape == (3,)
    state = batched.model.state_dict()
    weights = [k for k, v in state.items() if v.is_floating_point() and v.dim() >= 2]
    assert weights and all(state[k].shape[0] == 3 for k in weights)
    for key in weights:  # each seed its own initialisation and minibatches
        assert not torch.allclose(state[key][0], state[key][1]) and not torch.allclose(state[key][1], state[key][2])
    # seed s of the timed model is seed s trained alone for the same updates (so it trained, as itself)
    for s in range(3):
        algorithm, replay = case.build(s)
        initial = {k: v.clone() for k, v in algorithm.state_dict().items()}
        alone = perf_seeds.Trainer(algorithm, replay, case, None)
        perf_seeds.warm_up(alone, 2)
        alone.updates(batched.step - alone.step)
        ours = unstack_state(state, s)
        for key in ours:
            torch.testing.assert_close(ours[key], alone.model.state_dict()[key], rtol=1e-4, atol=1e-5)
        # (the toy's first layer may see constant observations; the rest moves)
        moved = [k for k in ours if ours[k].is_floating_point() and not torch.allclose(ours[k], initial[k])]
        assert len(moved) >= len(ours) - 1, moved


def test_phases_set_where_the_timed_updates_start(toy_data):
    lom = perf_seeds.toy_case("lom", CPU, dataset=toy_data)
    assert lom.start_step == lom.config.mdn_steps > 0  # the toy suite's MDN phase, ending inside the run
    gem = perf_seeds.paper_case("gem", CPU, toy_data)
    assert gem.config == gem.cls.config_class() and gem.start_step == gem.config.gmm_pretrain_steps
    assert perf_seeds.paper_case("iql", CPU, toy_data).start_step == 0
    # warm-up crosses LOM's switch: half before it, then the timed regime
    steps = []

    class Model:
        def train(self):
            pass

        def update(self, batch, step):
            steps.append(step)
            return {}

    class Replay:
        def sample(self, n):
            return None

    trainer = perf_seeds.Trainer(Model(), Replay(), lom, None)
    perf_seeds.warm_up(trainer, 6)
    assert steps == [lom.start_step + i for i in range(-3, 3)] and trainer.step == lom.start_step + 3


def test_targets_and_the_gpu_check():
    assert [perf_seeds.target_for(m, "paper") for m in ("bc", "iql", "gem", "isep", "lom")] == [1.3] * 5
    assert [perf_seeds.target_for(m, "paper") for m in ("drol", "fql", "isep-fm")] == [1.0] * 3
    assert perf_seeds.target_for("gem-no-pw", "toy") == 2.0
    row = perf_seeds.Row("drol", "paper", 256, 10.0, {1: 9.0, 3: 9.5, 32: 100.0}, {1: 0.9, 3: 0.95, 32: 10.0},
                         {1: (0.9, 0.9), 3: (0.95, 0.95), 32: (10.0, 10.0)}, 1.0, gpu_time_ratio=2.88)
    assert row.meets is False and row.gpu_meets is True
    verdict = perf_seeds.verdicts([row], [1, 3, 32])
    assert verdict[0].startswith("paper target") and "does NOT hold" in verdict[0] and "drol 0.95x" in verdict[0]
    assert verdict[1].startswith("GPU target") and "holds" in verdict[1]
    assert "2.88x met" in perf_seeds.format_table([row], [1, 3, 32])


def test_seed_updates_and_ratios_from_the_blocks(toy_data, monkeypatch):
    """Seed-updates/s = S x the stacked model's updates/s; each ratio over the geometric mean of
    the single-seed blocks before and after (rates given, not timed)."""
    singles = iter([40.0, 90.0, 160.0])

    def block(self, n):
        return next(singles) if self.seeds is None else 10.0 * self.seeds  # batched: 10 S updates/s

    monkeypatch.setattr(perf_seeds.Trainer, "block", block)
    case = perf_seeds.toy_case("bc", CPU, TINY, dataset=toy_data)
    row = perf_seeds.measure(case, [1, 3], repeats=2, updates=1, warmup=1)
    assert row.blocks == {"single": [40.0, 90.0, 160.0], "S=1": [10.0, 10.0], "S=3": [90.0, 90.0]}
    assert row.single == 90.0 and row.seed_rates == {1: 10.0, 3: 90.0}
    assert row.ratios[3] == pytest.approx((90 / 60 + 90 / 120) / 2) and row.ratio_ranges[3] == pytest.approx((0.75, 1.5))
    assert row.meets is False
