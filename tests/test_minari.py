"""`--dataset` on a Minari dataset built locally with minari's own writer (no download)."""

import numpy as np
import pytest
from modebench.benchmarks.data.loaders import load_minari, recover_env
from modebench.benchmarks.tasks import toy

from modebench.cli import main


@pytest.fixture
def local_minari(tmp_path, monkeypatch):
    import minari
    from minari.data_collector import EpisodeBuffer

    monkeypatch.setenv("MINARI_DATASETS_PATH", str(tmp_path / "minari"))
    env = toy.ObstacleNavigation()
    rng = np.random.default_rng(0)
    buffers = []
    for ep in range(12):
        obs, _ = env.reset(seed=ep)
        observations, actions, rewards, terms, truncs = [obs], [], [], [], []
        for t in range(env.HORIZON):
            action = np.clip(env.expert_action(obs, "left" if ep % 2 else "right") + 0.1 * rng.normal(size=2), -1, 1).astype(np.float32)
            obs, reward, terminated, truncated, _ = env.step(action)
            truncated = truncated or t == env.HORIZON - 1
            observations.append(obs); actions.append(action); rewards.append(reward)
            terms.append(terminated); truncs.append(truncated and not terminated)
            if terminated or truncated:
                break
        buffers.append(EpisodeBuffer(id=ep, observations=np.array(observations), actions=np.array(actions),
                                     rewards=rewards, terminations=terms, truncations=truncs, infos={}))
    dataset = minari.create_dataset_from_buffers(
        dataset_id="modebench-local/obstacle-expert-v0", buffer=buffers, env="modebench/ObstacleNavigation-v0",
        algorithm_name="scripted waypoint expert", ref_min_score=0.0, ref_max_score=1.0,
        description="local test dataset (not published)",
    )
    return dataset


def test_load_minari_by_id_and_path(local_minari):
    by_id = load_minari("modebench-local/obstacle-expert-v0").validate()
    by_path = load_minari(str(local_minari.storage.data_path)).validate()
    assert len(by_id) == len(by_path) == local_minari.total_steps
    assert by_id.metadata["ref_max_score"] == 1.0
    assert by_id.num_episodes == 12
    env = recover_env("modebench-local/obstacle-expert-v0")
    obs, _ = env.reset(seed=0)
    assert obs.shape == (2,)


def test_train_on_any_minari_dataset(local_minari, tmp_path, capsys):
    code = main(["train", "--algo", "bc", "--dataset", "modebench-local/obstacle-expert-v0", "--steps", "40",
                 "--results", str(tmp_path / "res"), "--eval-episodes", "4", "--no-progress"])
    assert code == 0
    out = capsys.readouterr().out.strip().splitlines()
    assert out[-1].startswith("normalized_score ")
    # the score is the dataset's ref_min/max normalisation of the recovered env's return
    returns_line = next(line for line in out if line.startswith("return "))
    ret = float(returns_line.split()[1])
    assert float(out[-1].split()[1]) == pytest.approx(100 * ret, abs=1e-3)
