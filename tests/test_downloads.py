"""Dataset downloads up to the network boundary (issue 15, item 6), with no network.

- The install brings what minari's default remote (hf://farama-minari) needs: huggingface_hub.
- `modebench datasets download <minari id>` runs minari's real download code and its Hugging Face
  client against a fake Hub: the client's HTTP methods are replaced by a folder on disk.
- Offline, the download fails fast (no client retries) with one line naming the command to run.
- D4RL files (the locomotion suite, Adroit -v1) come through the same fetch as any URL: a fake
  server answers urlopen.
"""

from __future__ import annotations

import io
import shutil
import socket
import time
import types
from pathlib import Path

import h5py
import numpy as np
import pytest
import tomllib
from modebench.benchmarks.tasks import sources
from modebench.benchmarks.tasks.sources import OfflineError, d4rl_url, download_minari
from modebench.benchmarks.tasks.suites import load_suite

from modebench.cli import main

REPO = Path(__file__).resolve().parents[1]
HUB_AUTHOR = "farama-minari"


def test_the_install_brings_minaris_remote_client():
    deps = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]
    assert any(d.startswith("minari[hf]==") for d in deps), deps
    assert any(d.startswith("huggingface_hub==") for d in deps), "pin the client minari[hf] leaves open"
    import huggingface_hub  # noqa: F401
    from minari.storage.remotes import DEFAULT_REMOTE, get_cloud_storage
    from minari.storage.remotes.huggingface import HuggingFaceStorage

    assert DEFAULT_REMOTE.startswith("hf://")
    assert isinstance(get_cloud_storage(), HuggingFaceStorage)  # builds the client; no request is made


# ------------------------------------------------------------------------------------ fake Hub


def make_minari_dataset(dataset_id: str) -> Path:
    """A small Minari dataset written by minari itself (Pendulum, 3 episodes of 20 steps)."""
    import gymnasium as gym
    import minari
    from minari.data_collector import EpisodeBuffer

    env = gym.make("Pendulum-v1")
    rng = np.random.default_rng(0)
    buffers = []
    for ep in range(3):
        obs, _ = env.reset(seed=ep)
        observations, actions, rewards = [obs], [], []
        for _ in range(20):
            action = rng.uniform(-2, 2, size=1).astype(np.float32)
            obs, reward, *_ = env.step(action)
            observations.append(obs)
            actions.append(action)
            rewards.append(reward)
        buffers.append(EpisodeBuffer(id=ep, observations=np.array(observations), actions=np.array(actions),
                                     rewards=rewards, terminations=[False] * 20, truncations=[False] * 19 + [True],
                                     infos={}))
    dataset = minari.create_dataset_from_buffers(dataset_id=dataset_id, buffer=buffers, env="Pendulum-v1",
                                                 algorithm_name="uniform random", description="test data",
                                                 ref_min_score=-1500.0, ref_max_score=0.0)
    return Path(dataset.storage.data_path).parent


@pytest.fixture
def fake_hub(tmp_path, monkeypatch):
    """A folder laid out as the farama-minari Hub (one repo per namespace, a namespace_metadata.json
    listing its datasets) served through huggingface_hub.HfApi's own methods; the probe of the
    host succeeds. Yields (hub root, list of the client calls)."""
    import huggingface_hub
    from huggingface_hub.errors import EntryNotFoundError

    # Build the dataset with minari's writer in a scratch store, then move it onto the "Hub".
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(tmp_path / "scratch"))
    built = make_minari_dataset("mbtest/pendulum/random-v0")
    hub = tmp_path / "hub"
    repo = hub / HUB_AUTHOR / "mbtest"
    shutil.copytree(built, repo / "pendulum" / "random-v0")
    # as on the Hub: the repo's root metadata lists its datasets and sub-namespaces, each of which has its own
    (repo / "namespace_metadata.json").write_text(
        '{"datasets": ["mbtest/pendulum/random-v0"], "namespaces": ["mbtest/pendulum"]}')
    (repo / "pendulum" / "namespace_metadata.json").write_text('{"description": "test namespace"}')
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(tmp_path / "local"))  # the user's store: empty
    calls: list[str] = []

    def list_datasets(self, author=None, dataset_name=None, **_):
        calls.append("list_datasets")
        for path in sorted((hub / author).iterdir()):
            if dataset_name is None or path.name == dataset_name:
                yield types.SimpleNamespace(id=f"{author}/{path.name}")

    def hf_hub_download(self, repo_id, filename, repo_type=None, local_dir=None, force_download=False, **_):
        calls.append(f"hf_hub_download {repo_id} {filename}")
        assert repo_type == "dataset"
        source = hub / repo_id / filename
        if not source.exists():
            raise EntryNotFoundError(f"{filename} not in {repo_id}")
        if local_dir is None:
            return str(source)
        target = Path(local_dir) / filename
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(source, target)
        return str(target)

    def snapshot_download(self, repo_id, repo_type=None, local_dir=None, allow_patterns=None, **_):
        calls.append(f"snapshot_download {repo_id} {allow_patterns}")
        prefix = allow_patterns.rstrip("*")
        for file in (hub / repo_id).rglob("*"):
            rel = file.relative_to(hub / repo_id).as_posix()
            if file.is_file() and rel.startswith(prefix):
                target = Path(local_dir) / rel
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy(file, target)
        return str(local_dir)

    for name, fn in (("list_datasets", list_datasets), ("hf_hub_download", hf_hub_download),
                     ("snapshot_download", snapshot_download)):
        monkeypatch.setattr(huggingface_hub.HfApi, name, fn)
    monkeypatch.setattr(sources, "_unreachable", lambda host, port=443: None)
    return hub, calls


def test_minari_download_goes_through_the_hf_client_to_the_store(fake_hub, capsys):
    import minari

    _, calls = fake_hub
    assert main(["datasets", "download", "mbtest/pendulum/random-v0"]) == 0
    assert "downloaded Minari mbtest/pendulum/random-v0" in capsys.readouterr().out
    assert any(c.startswith("snapshot_download farama-minari/mbtest pendulum/random-v0") for c in calls)
    dataset = minari.load_dataset("mbtest/pendulum/random-v0")  # in the user's store now
    assert dataset.total_episodes == 3 and dataset.total_steps == 60
    from modebench.benchmarks.data.loaders import load_minari

    assert len(load_minari("mbtest/pendulum/random-v0").validate()) == 60


def test_a_dataset_missing_on_the_remote_is_not_called_offline(fake_hub):
    with pytest.raises(ValueError, match="Couldn't find any version"):
        download_minari("mbtest/pendulum/expert-v0")


# ------------------------------------------------------------------------------------ offline


@pytest.fixture
def offline(monkeypatch):
    """No name resolves and no socket connects; minari's download must not even be called."""
    def no_network(*args, **kwargs):
        raise socket.gaierror(-2, "Name or service not known")

    monkeypatch.setattr(socket, "create_connection", no_network)
    monkeypatch.setattr(socket, "getaddrinfo", no_network)
    import minari

    def never(*args, **kwargs):
        raise AssertionError("minari's client was called although the remote is unreachable")

    monkeypatch.setattr(minari, "download_dataset", never)


def test_offline_minari_download_fails_fast_with_the_command(offline):
    start = time.monotonic()
    with pytest.raises(OfflineError) as err:
        download_minari("D4RL/door/human-v2", suite="adroit")
    assert time.monotonic() - start < 2.0  # no client retries with backoff
    message = str(err.value)
    assert "\n" not in message
    assert "modebench datasets download D4RL/door/human-v2" in message  # what to run once online
    assert "modebench bench --suite toy" in message  # what runs offline (adroit's nearest local suite)


def test_offline_cli_download_is_one_line_and_exit_2(offline, capsys):
    assert main(["datasets", "download", "adroit/door-human"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err
    assert "modebench datasets download D4RL/door/human-v2" in err


@pytest.mark.parametrize("exc, offline_error", [
    (type("ConnectError", (Exception,), {}), True),  # httpx2's, raised by huggingface_hub 2.x
    (type("LocalEntryNotFoundError", (Exception,), {}), True),
    (ConnectionResetError, True),
    (PermissionError, False),  # a disk problem is not a network one
    (ValueError, False),
])
def test_client_errors_are_sorted_into_network_and_other(monkeypatch, exc, offline_error):
    import minari

    def failing(*args, **kwargs):
        raise exc("boom")

    monkeypatch.setattr(sources, "_unreachable", lambda host, port=443: None)
    monkeypatch.setattr(minari, "download_dataset", failing)
    with pytest.raises(OfflineError if offline_error else exc):
        download_minari("D4RL/door/human-v2")


def test_remote_host_follows_minari_and_hf_settings(monkeypatch):
    monkeypatch.delenv("MINARI_REMOTE", raising=False)
    monkeypatch.delenv("HF_ENDPOINT", raising=False)
    assert sources.minari_remote() == ("hf://farama-minari", "huggingface.co")
    monkeypatch.setenv("HF_ENDPOINT", "https://hub.example.org")
    assert sources.minari_remote()[1] == "hub.example.org"
    monkeypatch.setenv("MINARI_REMOTE", "gcp://minari-datasets")
    assert sources.minari_remote()[1] == "storage.googleapis.com"


# ------------------------------------------------------------------------------------ D4RL files


def test_d4rl_urls():
    assert d4rl_url("hopper-medium-replay-v2").endswith("/gym_mujoco_v2/hopper_medium_replay-v2.hdf5")
    assert d4rl_url("pen-human-v1") == "http://rail.eecs.berkeley.edu/datasets/offline_rl/hand_dapg_v1/pen-human-v1.hdf5"
    assert d4rl_url("relocate-expert-v1").endswith("/hand_dapg_v1/relocate-expert-v1.hdf5")


def d4rl_hdf5_bytes(obs_dim: int, act_dim: int, n: int = 50) -> bytes:
    rng = np.random.default_rng(0)
    buffer = io.BytesIO()
    with h5py.File(buffer, "w") as f:
        f["observations"] = rng.normal(size=(n, obs_dim)).astype(np.float32)
        f["actions"] = rng.uniform(-1, 1, size=(n, act_dim)).astype(np.float32)
        f["rewards"] = rng.normal(size=n).astype(np.float32)
        f["terminals"] = np.zeros(n, dtype=bool)
        f["timeouts"] = (np.arange(n) % 25 == 24)
    return buffer.getvalue()


def test_adroit_v1_tasks_download_the_d4rl_files(tmp_path, monkeypatch, capsys):
    """The paper-version Adroit tasks (D4RL -v1 HDF5) fetch D4RL's file into $D4RL_DATASET_DIR and
    load it; the Minari -v2 tasks stay beside them, labelled."""
    suite = load_suite("adroit")
    v1 = {name: task for name, task in suite.items() if task.dataset.get("source") == "d4rl"}
    v2 = {name: task for name, task in suite.items() if task.dataset.get("source") == "minari"}
    assert len(v1) == len(v2) == 12
    for name, task in v1.items():
        assert name.endswith("-v1") and task.dataset["name"] == name and "D4RL" in task.description
        assert name[: -len("-v1")] in v2 and task.reference_returns() == v2[name[: -len("-v1")]].reference_returns()
    for task in v2.values():
        assert "Minari" in task.description and "-v2" in task.description
    monkeypatch.setenv("D4RL_DATASET_DIR", str(tmp_path / "d4rl"))
    payload = d4rl_hdf5_bytes(45, 24)  # pen's sizes
    requested = []

    class Response(io.BytesIO):
        def __init__(self, data: bytes):
            super().__init__(data)
            self.headers = {"Content-Length": str(len(data))}

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.close()

    def urlopen(url, timeout=None):
        requested.append(url)
        return Response(payload)

    monkeypatch.setattr(sources.urllib.request, "urlopen", urlopen)
    assert main(["datasets", "download", "adroit/pen-human-v1"]) == 0
    assert requested == ["http://rail.eecs.berkeley.edu/datasets/offline_rl/hand_dapg_v1/pen-human-v1.hdf5"]
    assert (tmp_path / "d4rl" / "pen-human-v1.hdf5").read_bytes() == payload
    data = suite["pen-human-v1"].load_dataset()
    # 2 episodes of 25 rows; each timeout row has no next observation in the file, so it is dropped
    assert data.observations.shape == (48, 45) and data.actions.shape == (48, 24)
