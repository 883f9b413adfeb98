"""Dataset, environment and score sources: one class per kind, registered in one explicit list.

A suite file names a task's data as `dataset: {source: KIND, ...}`, its evaluation env as
`env: {source: KIND, ...}` and its score normalisation as `score: {kind: KIND, ...}`. Each
source kind is ONE `Source` subclass below, which implements the parts that apply to it:

    load(**params) -> TransitionDataset         the dataset (dataset kinds)
    status(task_id, suite, **params)            whether the data is here, without loading it
    download(task_id, suite, force, **params)   fetch it (or generate it, for local kinds)
    generator_job(**params)                     the offline generator run that writes it, if any
    make_env(**params) -> gym.Env               the evaluation env (env kinds)

and the kind is one entry of `SOURCES`; score kinds are `Score` subclasses listed in
`SCORES`. Nothing registers itself on import: adding a kind is one class and one list entry.

Dataset kinds:
- `toy`: a toy-suite dataset generated in memory (benchmarks/tasks/toy.py).
- `minari`: a published Minari dataset (`id`) or a local path.
- `d4rl-file`: a D4RL-layout .hdf5 / .npz file given by `path`.
- `d4rl`: an ORIGINAL D4RL HDF5 file by name (`hopper-medium-v2`), looked up in
  $D4RL_DATASET_DIR or ~/.d4rl/datasets (D4RL's own cache layout), or given by `path`;
  `modebench datasets download` fetches it from D4RL's URL.
- `ogbench`: an OGBench single-task dataset by name (`antmaze-large-navigate-singletask-task1-v0`),
  read from ~/.ogbench/data (OGBench's cache; `dataset_dir` or $OGBENCH_DATASET_DIR to change)
  or `path`, with OGBench's own loader and single-task reward relabelling; with
  `local: {preset, seed}` the npz is the one the offline generator writes (generated on first use).
- `generated`: a Minari dataset written by an offline generator (benchmarks/tasks/generators),
  generated on first use under a file lock (parallel bench workers wait for one generator).

Environment kinds, every one accepting `mass_scale` (GEM A.4 MassScale, benchmarks/tasks/wrappers.py;
also `mass_bodies`, `scale_inertia`), applied in `make_env` for all kinds:
- `gym`: `gym.make(id, **kwargs)` with the toy envs registered.
- `gymnasium`: `gym.make(id, **kwargs)` with gymnasium-robotics and OGBench registered.
- `ogbench`: an OGBench env id (`<env>-singletask-taskN-v0`: the task's fixed start and goal).
- `minari`: the env a Minari dataset records.
- `minari-recorded`: the evaluation env a published Minari dataset records
  (`recover_environment(eval_env=True)`), needing the dataset on disk; `env_id` / `env_kwargs`
  name that env so checks can build it without the data (`declared_env`).
- `generated`: the evaluation env an offline generator records in its datasets (no data needed).

Score kinds: `reference` (given random / expert returns), `dataset` (the dataset's recorded
ref_min_score / ref_max_score), `success` (success rate x 100). Each names its normaliser for the
records (`normaliser`: d4rl | minari | ogbench-success | toy | user, and `source`: where the
reference numbers come from); the kind's default stands where the suite file names none.

Dict observations (gymnasium-robotics' mazes and kitchen, their Minari datasets) reach the policy
as the task's observation layout (suites.py `ObservationLayout`): `load_dataset` and `make_env`
take its keys and cut data and env alike (benchmarks/data/loaders.py); a source whose
observations are not dicts refuses a layout that names keys.

Missing data is a `MissingDatasetError` naming the download command and the nearest suite that
runs offline; `check_tasks` / `require_datasets` find every missing dataset of a suite before
any work starts (call it before spawning workers).
"""

from __future__ import annotations

import os
import socket
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import gymnasium as gym
import numpy as np
from modebench.algorithms.config import ConfigError
from modebench.benchmarks.data.dataset import (
    TransitionDataset,
    array_digest,
    content_digest,
)
from modebench.benchmarks.data.loaders import MissingDatasetError
from modebench.benchmarks.tasks.wrappers import apply_mass_scale

if TYPE_CHECKING:  # annotations only: suites.py imports this module, never the other way round
    from modebench.benchmarks.tasks.suites import Task

D4RL_URL = "http://rail.eecs.berkeley.edu/datasets/offline_rl/gym_mujoco_v2"
# D4RL's Adroit -v1 files (d4rl hand_manipulation_suite DATASET_URLS), the data FQL / DROL / ISEP
# trained on; Minari's D4RL/<env>/<kind>-v2 re-records them in gymnasium-robotics' AdroitHand*-v1.
D4RL_ADROIT_URL = "http://rail.eecs.berkeley.edu/datasets/offline_rl/hand_dapg_v1"
D4RL_ADROIT_ENVS = ("pen", "door", "hammer", "relocate")
NETWORK_TIMEOUT_S = 20.0  # per connection attempt: an offline machine fails fast, never hangs
MASS_SCALE_KEYS = ("mass_scale", "mass_bodies", "scale_inertia")

# The suite to try when a suite's data is not on this machine (it runs offline).
NEAREST_LOCAL_SUITE = {
    "antmaze": "maze2d-local",
    "maze2d": "maze2d-local",
    "locomotion": "toy",
    "minari-mujoco": "toy",
    "adroit": "toy",
    "kitchen": "ogbench-local",
}
OGBENCH_LOCAL_SUITE = "ogbench-local"


def nearest_local_suite(suite: str) -> str:
    if suite in NEAREST_LOCAL_SUITE:
        return NEAREST_LOCAL_SUITE[suite]
    if suite.startswith("ogbench"):
        return OGBENCH_LOCAL_SUITE
    return "toy"


def register_envs() -> None:
    """The toy envs, gymnasium-robotics and OGBench into gymnasium's registry (lazily: the last
    two are slow to import), before a `gym.make` by id."""
    from modebench.benchmarks.tasks import toy
    from modebench.benchmarks.tasks.generators.common import import_robotics
    from modebench.benchmarks.tasks.generators.ogbench_gen import import_ogbench

    toy.register_envs()
    import_ogbench()
    import_robotics()


# `module:Env` ids the user typed on this process's command line (`--env`). gymnasium imports the
# module before the colon; an id read from a checkpoint, a config or a suite file never may.
_ENV_MODULES_ALLOWED: set[str] = set()


def allow_env_module(env_id: str) -> None:
    """Let this process import the module of `env_id` (a `module:Env` id the user typed)."""
    _ENV_MODULES_ALLOWED.add(env_id)


def check_env_id(env_id: str) -> str:
    """`env_id`, unless it names a module to import (`module:Env`) that the user did not type."""
    if ":" in str(env_id) and env_id not in _ENV_MODULES_ALLOWED:
        raise ConfigError(f"env id {env_id!r} would import the module {env_id.split(':', 1)[0]!r}; an env id from a "
                          f"file never imports code: pass --env {env_id} on the command line to allow it")
    return env_id


@dataclass
class DatasetStatus:
    task: str
    kind: str
    name: str
    available: bool
    local: bool  # generated on this machine (never a download)
    where: str
    download: str  # the command that gets it (or generates it)
    record: str | None = None  # the generator's record of a local dataset (recipe, references), when written

    def line(self) -> str:
        state = "present" if self.available else ("generated on first use" if self.local else "MISSING")
        return f"{self.task:48s} {self.kind:10s} {self.name:52s} {state}"


# ---------------------------------------------------------------- the interface


class Source:
    """One source kind. A kind implements the dataset side (`load`, `status`, and `download` or
    `generator_job`), the environment side (`make_env`), or both; what it lacks is a clear error.
    `make_env` returns the env's own observations (dicts stay dicts: the caller cuts them to the
    task's layout); a dataset kind whose observations can be dicts sets `dict_observations` and
    takes the layout's `keys` in `load`."""

    kind: ClassVar[str]
    dict_observations: ClassVar[bool] = False

    @property
    def has_dataset(self) -> bool:
        return type(self).load is not Source.load

    @property
    def has_env(self) -> bool:
        return type(self).make_env is not Source.make_env

    def load(self, **params: Any) -> TransitionDataset:
        raise ConfigError(f"{self.kind!r} is not a dataset source; dataset sources: {', '.join(dataset_kinds())}")

    def status(self, task_id: str, suite: str, **params: Any) -> DatasetStatus:
        return DatasetStatus(task_id, self.kind, str(params), True, False, "not checked", "")

    def fingerprint(self, **params: Any) -> str | None:
        """A digest of the dataset's content for a run's identity, where the params alone do not
        name the content (a user's file, a local folder, data generated here); None where they do
        (a published id with its version)."""
        return None

    def generator_job(self, **params: Any) -> tuple[str, str, int, int | None] | None:
        """(generator, preset, seed, size) of the offline generator run that writes the data; None
        when the data is not generated here."""
        return None

    def download(self, task_id: str, suite: str, force: bool = False, **params: Any) -> str:
        job = self.generator_job(**params)
        if job is None:
            raise MissingDatasetError(f"{task_id}: dataset source {self.kind!r} has no download; see the suite file")
        from modebench.benchmarks.tasks.generators import generate

        generate(job[0], job[1], job[2], size=job[3])  # file-locked
        return f"{task_id}: generated locally ({self.status(task_id, suite, **params).where})"

    def make_env(self, **params: Any) -> gym.Env:
        raise ConfigError(f"{self.kind!r} is not an environment source; environment sources: {', '.join(env_kinds())}")

    def declared_env(self, **params: Any) -> gym.Env:
        """The env built without the dataset (for checks on machines without data)."""
        return self.make_env(**params)


def _download_cmd(suite: str) -> str:
    return f"modebench datasets download --suite {suite}"


def _generate_cmd(suite: str) -> str:
    return f"modebench datasets generate --suite {suite}"


# ---------------------------------------------------------------- the kinds


class ToySource(Source):
    kind = "toy"

    def load(self, task: str, size: int = 10_000, seed: int = 0, noise: float = 0.08) -> TransitionDataset:
        from modebench.benchmarks.tasks import toy

        return toy.generate(task, size=size, seed=seed, noise=noise)

    def fingerprint(self, **params):
        return _toy_digest(tuple(sorted(params.items())))

    def status(self, task_id, suite, **params):
        return DatasetStatus(task_id, self.kind, params.get("task", ""), True, True, "generated in memory", "")


@cache
def _toy_digest(params: tuple) -> str:
    """The arrays are the content of data generated in memory from code (the same within a process:
    `bench` resolves each task once per seed)."""
    return array_digest(ToySource().load(**dict(params)))


class GymSource(Source):
    kind = "gym"

    def make_env(self, id: str, **kwargs) -> gym.Env:
        from modebench.benchmarks.tasks import toy

        toy.register_envs()
        return gym.make(check_env_id(id), **kwargs)


class MinariSource(Source):
    kind = "minari"
    dict_observations = True

    def load(self, id: str | None = None, path: str | None = None, keys: list[str] | None = None) -> TransitionDataset:
        from modebench.benchmarks.data.loaders import load_minari

        return load_minari(path or id, keys)

    def fingerprint(self, id: str | None = None, path: str | None = None, **_):
        return content_digest(path) if path else None

    def status(self, task_id, suite, id: str | None = None, path: str | None = None, **_):
        from modebench.benchmarks.tasks.generators.common import minari_dataset_dir

        ident = path or id
        where = Path(ident).expanduser()
        if not where.exists():
            where = minari_dataset_dir(ident)
        present = (where / "data").exists() or (where / "metadata.json").exists()
        return DatasetStatus(task_id, self.kind, ident, present, False, str(where), _download_cmd(suite))

    def download(self, task_id, suite, force=False, id: str | None = None, path: str | None = None, **_):
        if not id:
            raise MissingDatasetError(f"{task_id}: the suite names a local Minari path {path}; nothing to download")
        return f"{task_id}: {download_minari(id, suite, force)}"

    def make_env(self, id: str | None = None, path: str | None = None, eval_env: bool = True) -> gym.Env:
        from modebench.benchmarks.data.loaders import recorded_env

        return recorded_env(path or id, eval_env=eval_env)


class D4RLFileSource(Source):
    kind = "d4rl-file"

    def load(self, path: str, name: str | None = None, action_box: dict | None = None) -> TransitionDataset:
        from modebench.benchmarks.data.loaders import load_d4rl_file

        return load_d4rl_file(path, name=name, action_box=action_box)

    def fingerprint(self, path: str, **_):
        return content_digest(path)

    def status(self, task_id, suite, path: str, **_):
        file = Path(path).expanduser()
        return DatasetStatus(task_id, self.kind, path, file.exists(), False, str(file), _download_cmd(suite))


def d4rl_dir() -> Path:
    return Path(os.environ.get("D4RL_DATASET_DIR", "~/.d4rl/datasets")).expanduser()


def d4rl_url(name: str) -> str:
    """D4RL's URL of a v2 gym-mujoco dataset: hopper-medium-replay-v2 -> .../hopper_medium_replay-v2.hdf5,
    or of an Adroit -v1 one: pen-human-v1 -> .../hand_dapg_v1/pen-human-v1.hdf5."""
    env, rest = name.split("-", 1)
    if env in D4RL_ADROIT_ENVS:
        return f"{D4RL_ADROIT_URL}/{name}.hdf5"
    stem, version = rest.rsplit("-", 1)
    return f"{D4RL_URL}/{env}_{stem.replace('-', '_')}-{version}.hdf5"


def d4rl_file(name: str, path: str | None = None) -> Path:
    return Path(path).expanduser() if path else d4rl_dir() / d4rl_url(name).rsplit("/", 1)[1]


class D4RLSource(Source):
    kind = "d4rl"

    def load(self, name: str, path: str | None = None) -> TransitionDataset:
        from modebench.benchmarks.data.loaders import load_d4rl_file

        file = d4rl_file(name, path)
        if not file.exists():
            raise MissingDatasetError(
                f"D4RL dataset {name!r} is not on this machine (looked for {file}). Download it with "
                f"`modebench datasets download {name}` (needs network; from {d4rl_url(name)}), or give the path of the "
                "original D4RL .hdf5 in the suite file (dataset: {source: d4rl, name: ..., path: FILE})."
            )
        data = load_d4rl_file(str(file), name=name)
        data.metadata.update({"source": "d4rl", "d4rl_name": name, "url": d4rl_url(name)})
        return data

    def status(self, task_id, suite, name: str, path: str | None = None, **_):
        file = d4rl_file(name, path)
        return DatasetStatus(task_id, self.kind, name, file.exists(), False, str(file), _download_cmd(suite))

    def download(self, task_id, suite, force=False, name: str = "", path: str | None = None, **_):
        if path:
            raise MissingDatasetError(f"{task_id}: the suite names a local file {path}; put the D4RL .hdf5 there")
        file = _fetch(d4rl_url(name), d4rl_file(name), f"D4RL {name}", suite)
        return f"{task_id}: downloaded {file}"


def ogbench_dir(dataset_dir: str | None = None) -> Path:
    return Path(dataset_dir or os.environ.get("OGBENCH_DATASET_DIR", "~/.ogbench/data")).expanduser()


def ogbench_file(name: str, path: str | None = None, local: dict | None = None, dataset_dir: str | None = None) -> Path:
    from modebench.benchmarks.tasks.generators.ogbench_gen import npz_path, parse_name

    if path:
        return Path(path).expanduser()
    if local is not None:
        generator = _ogbench_generator(name)
        preset = local.get("preset", "small")
        return npz_path(generator, preset if "size" not in local else f"n{local['size']}", int(local.get("seed", 0)))
    return ogbench_dir(dataset_dir) / f"{parse_name(name)['dataset']}.npz"


def _ogbench_generator(name: str) -> str:
    from modebench.benchmarks.tasks.generators.ogbench_gen import recipe_for_dataset

    found = recipe_for_dataset(name)
    if found is None:
        raise ConfigError(f"{name}: no offline generator for this OGBench dataset (local: needs one of the ogbench-* generators)")
    return found[0]


class OGBenchSource(Source):
    kind = "ogbench"

    def load(self, name: str, path: str | None = None, local: dict | None = None,
             dataset_dir: str | None = None) -> TransitionDataset:
        from modebench.benchmarks.data.loaders import check_ogbench_file
        from modebench.benchmarks.tasks.generators.ogbench_gen import (
            load_singletask,
            parse_name,
            to_flat,
        )

        if local is not None and path is None:
            self._generate(name, local)
        file = ogbench_file(name, path, local, dataset_dir)
        if not file.exists():
            base = parse_name(name)["dataset"]
            raise MissingDatasetError(
                f"OGBench dataset {base!r} is not on this machine (looked for {file}). Download it with "
                f"`modebench datasets download {name}` (needs network), or run the `{OGBENCH_LOCAL_SUITE}` suite, "
                "built offline with OGBench's own recipes (`modebench bench --suite ogbench-local`)."
            )
        check_ogbench_file(file)  # the npz as stored, before OGBench's loader casts and derives fields
        raw, env = load_singletask(name, file)
        env.close()
        metadata = {"source": "ogbench", "ogbench_name": name, "path": str(file), "local": local is not None}
        return TransitionDataset.from_flat(to_flat(raw), name=name if local is None else f"{name}[local:{file.stem}]",
                                           metadata=metadata)

    def fingerprint(self, name: str, path: str | None = None, local: dict | None = None,
                    dataset_dir: str | None = None):
        if path is None and local is None:
            return None  # published: the name carries its version
        if local is not None and path is None:
            self._generate(name, local)
        return content_digest(ogbench_file(name, path, local, dataset_dir))

    def _generate(self, name: str, local: dict) -> None:
        from modebench.benchmarks.tasks.generators import generate

        generate(*self.generator_job(name=name, local=local))  # type: ignore[misc]

    def generator_job(self, name: str = "", local: dict | None = None, **_):
        if local is None:
            return None
        return _ogbench_generator(name), local.get("preset", "small"), int(local.get("seed", 0)), local.get("size")

    def status(self, task_id, suite, name: str, path: str | None = None, local: dict | None = None,
               dataset_dir: str | None = None):
        file = ogbench_file(name, path, local, dataset_dir)
        record = file.with_suffix(".json")
        exists = file.exists() and (local is None or record.exists())
        cmd = _generate_cmd(suite) if local is not None else _download_cmd(suite)
        return DatasetStatus(task_id, self.kind, name, exists, local is not None, str(file), cmd,
                             str(record) if local is not None else None)

    def download(self, task_id, suite, force=False, name: str = "", local: dict | None = None,
                 dataset_dir: str | None = None, **params):
        if local is not None:
            return super().download(task_id, suite, force, name=name, local=local, dataset_dir=dataset_dir, **params)
        import ogbench.utils as og_utils
        from modebench.benchmarks.tasks.generators.ogbench_gen import parse_name

        base = parse_name(name)["dataset"]
        directory = ogbench_dir(dataset_dir)
        for suffix in ("", "-val"):
            file = directory / f"{base}{suffix}.npz"
            if not file.exists() or force:
                _fetch(f"{og_utils.DATASET_URL}/{base}{suffix}.npz", file, f"OGBench {base}{suffix}", suite)
        return f"{task_id}: downloaded {directory / (base + '.npz')}"

    def make_env(self, id: str, **kwargs) -> gym.Env:
        from modebench.benchmarks.tasks.generators.ogbench_gen import make_env

        if "singletask" not in id:
            raise ConfigError(f"OGBench env {id!r}: the suites evaluate OGBench's single-task envs ('<env>-singletask[-taskN]-v0')")
        return make_env(id, **kwargs)


class GeneratedSource(Source):
    kind = "generated"
    dict_observations = True

    def load(self, generator: str, preset: str = "small", seed: int = 0, size: int | None = None,
             keys: list[str] | None = None) -> TransitionDataset:
        from modebench.benchmarks.data.loaders import load_minari
        from modebench.benchmarks.tasks.generators import generate

        result = generate(generator, preset, seed, size=size)
        data = load_minari(result.name, keys)
        data.metadata.update({"local": True, "generator": generator, "preset": preset, "seed": seed})
        return data

    def generator_job(self, generator: str = "", preset: str = "small", seed: int = 0, size: int | None = None, **_):
        return generator, preset, int(seed), size

    def fingerprint(self, generator: str, preset: str = "small", seed: int = 0, size: int | None = None, **_):
        from modebench.benchmarks.tasks.generators import generate
        from modebench.benchmarks.tasks.generators.common import minari_dataset_dir

        return content_digest(minari_dataset_dir(generate(generator, preset, seed, size=size).name))

    def status(self, task_id, suite, **params):
        from modebench.benchmarks.tasks.generators import is_generated, output_id
        from modebench.benchmarks.tasks.generators.common import (
            MARKER,
            minari_dataset_dir,
        )

        job = self.generator_job(**params)
        name = output_id(*job)["minari"]
        return DatasetStatus(task_id, self.kind, name, is_generated(*job), True, name, _generate_cmd(suite),
                             str(minari_dataset_dir(name) / MARKER))

    def make_env(self, generator: str) -> gym.Env:
        from modebench.benchmarks.tasks.generators import make_eval_env

        return make_eval_env(generator)


class GymnasiumSource(Source):
    kind = "gymnasium"

    def make_env(self, id: str, **kwargs) -> gym.Env:
        from modebench.benchmarks.tasks.generators.ogbench_gen import quiet_ogbench

        register_envs()
        with quiet_ogbench():
            return gym.make(check_env_id(id), **kwargs)


class MinariRecordedSource(Source):
    kind = "minari-recorded"

    def make_env(self, dataset: str, env_id: str | None = None, env_kwargs: dict | None = None,
                 eval_env: bool = True) -> gym.Env:
        import warnings

        from modebench.benchmarks.data.loaders import recorded_env

        register_envs()
        env = recorded_env(dataset, eval_env=eval_env)
        recorded = env.spec.id if env.spec is not None else None
        if env_id and recorded and recorded != env_id:
            warnings.warn(f"{dataset}: the dataset records env {recorded!r}, the suite declares {env_id!r}; "
                          "evaluating in the recorded one (fix the suite file)", stacklevel=2)
        return env

    def declared_env(self, dataset: str = "", env_id: str | None = None, env_kwargs: dict | None = None, **_) -> gym.Env:
        if not env_id:
            raise ConfigError(f"{dataset}: a minari-recorded env must declare env_id (the env the dataset records)")
        return GymnasiumSource().make_env(id=env_id, **dict(env_kwargs or {}))


# The one explicit registry of source kinds: a new kind is a class above and one entry here.
SOURCES: tuple[Source, ...] = (
    ToySource(), GymSource(), MinariSource(), D4RLFileSource(), D4RLSource(), OGBenchSource(),
    GeneratedSource(), GymnasiumSource(), MinariRecordedSource(),
)


# ---------------------------------------------------------------- score kinds


NORMALISERS = ("d4rl", "minari", "ogbench-success", "toy", "user")


class Score:
    """One score kind: the (random, expert) returns of the normalised score
    100 (R - random) / (expert - random), or its own normalisation."""

    kind: ClassVar[str]
    default_normaliser: ClassVar[str]
    default_source: ClassVar[str]

    def declared(self, task_id: str, params: dict[str, Any]) -> tuple[str, str]:
        """(normaliser kind, source) as the suite file declares them (no data needed)."""
        kind = params.get("normaliser", self.default_normaliser)
        if kind not in NORMALISERS:
            raise ConfigError(f"{task_id}: unknown score normaliser {kind!r}; valid: {', '.join(NORMALISERS)}")
        return kind, params.get("source", self.default_source)

    def normaliser(self, task_id: str, params: dict[str, Any], dataset: Callable[[], TransitionDataset]) -> dict[str, Any]:
        """{kind, ref_min, ref_max, source}: the reference a score is normalised with (records keep it)."""
        kind, source = self.declared(task_id, params)
        low, high = self.reference_returns(task_id, params, dataset)
        return {"kind": kind, "ref_min": low, "ref_max": high, "source": source}

    def reference_returns(self, task_id: str, params: dict[str, Any],
                          dataset: Callable[[], TransitionDataset]) -> tuple[float, float]:
        raise NotImplementedError

    def normalize(self, task_id: str, params: dict[str, Any], returns, successes,
                  dataset: Callable[[], TransitionDataset]) -> np.ndarray:
        low, high = self.reference_returns(task_id, params, dataset)
        return 100.0 * (np.asarray(returns, dtype=np.float64) - low) / (high - low)


class ReferenceScore(Score):
    kind = "reference"
    default_normaliser = "user"
    default_source = "the suite file's random / expert returns"

    def reference_returns(self, task_id, params, dataset):
        return float(params["random"]), float(params["expert"])


class DatasetScore(Score):
    kind = "dataset"
    default_normaliser = "minari"
    default_source = "the dataset's recorded ref_min_score / ref_max_score (Minari metadata)"

    def reference_returns(self, task_id, params, dataset):
        meta = dataset().metadata
        low, high = meta.get("ref_min_score"), meta.get("ref_max_score")
        if low is None or high is None:
            raise ConfigError(
                f"{task_id}: the dataset records no ref_min_score/ref_max_score; "
                "give `score: {kind: reference, random: .., expert: ..}` in the suite file"
            )
        return float(low), float(high)


class SuccessScore(Score):
    kind = "success"
    default_normaliser = "ogbench-success"
    default_source = "success rate x 100 (the env's info['success'] at the episode's end; OGBench's metric)"

    def reference_returns(self, task_id, params, dataset):
        return 0.0, 1.0

    def normalize(self, task_id, params, returns, successes, dataset):
        return 100.0 * np.asarray(successes, dtype=np.float64)


# The one explicit registry of score kinds.
SCORES: tuple[Score, ...] = (ReferenceScore(), DatasetScore(), SuccessScore())


# ---------------------------------------------------------------- lookups and task-level operations


def _find(table: Iterable, key: str, what: str, names: list[str]):
    for entry in table:
        if entry.kind == key:
            return entry
    raise ConfigError(f"unknown {what} {key!r}; valid: {names}")


def dataset_kinds() -> list[str]:
    return sorted(s.kind for s in SOURCES if s.has_dataset)


def env_kinds() -> list[str]:
    return sorted(s.kind for s in SOURCES if s.has_env)


def score_kinds() -> list[str]:
    return sorted(s.kind for s in SCORES)


def _dataset_source(spec: dict[str, Any]) -> tuple[Source, dict[str, Any]]:
    params = dict(spec)
    kind = params.pop("source")
    return _find(SOURCES, kind, "dataset source", dataset_kinds()), params


def _env_source(spec: dict[str, Any]) -> tuple[Source, dict[str, Any], dict[str, Any]]:
    params = dict(spec)
    kind = params.pop("source")
    scale = {k: params.pop(k) for k in MASS_SCALE_KEYS if k in params}
    return _find(SOURCES, kind, "environment source", env_kinds()), params, scale


def score(spec: dict[str, Any]) -> Score:
    return _find(SCORES, spec.get("kind", "reference"), "score kind", score_kinds())


def dataset_fingerprint(spec: dict[str, Any]) -> str | None:
    """The content digest of the dataset a suite's `dataset:` block names (Source.fingerprint)."""
    source, params = _dataset_source(spec)
    return source.fingerprint(**params)


def load_dataset(spec: dict[str, Any], keys: list[str] | None = None) -> TransitionDataset:
    """The dataset a suite's `dataset: {source: KIND, ...}` names, checked; dict observations cut
    to `keys` (the task's observation layout; every key when None)."""
    source, params = _dataset_source(spec)
    if not source.has_dataset:
        source.load()  # the kind's one-line error
    if source.dict_observations:
        params["keys"] = keys
    elif keys is not None:
        raise ConfigError(f"dataset source {source.kind!r} holds flat observations; an observation layout cannot "
                          f"select keys {keys} from it (drop the task's `observation:` block)")
    return source.load(**params).validate()


def make_env(spec: dict[str, Any], keys: list[str] | None = None) -> gym.Env:
    """The env a suite's `env: {source: KIND, ...}` names, with MassScale when asked for and dict
    observations cut to `keys` like the data (benchmarks/data/loaders.py observation_view)."""
    from modebench.benchmarks.data.loaders import observation_view

    source, params, scale = _env_source(spec)
    return observation_view(_mass_scaled(source.make_env(**params), scale), keys)


def declared_env(task: Task, keys: list[str] | None = None, raw: bool = False) -> gym.Env:
    """The task's evaluation env, built without its dataset (for checks on machines without data):
    `minari-recorded` tasks use the `env_id` / `env_kwargs` they declare. Dict observations are
    cut to `keys`, or left as dicts with `raw` (to read the layout's parts from the space)."""
    from modebench.benchmarks.data.loaders import observation_view

    source, params, scale = _env_source(task.env)
    env = _mass_scaled(source.declared_env(**params), scale)
    return env if raw else observation_view(env, keys)


def _mass_scaled(env: gym.Env, scale: dict[str, Any]) -> gym.Env:
    return apply_mass_scale(env, scale.get("mass_scale"), scale.get("mass_bodies"), scale.get("scale_inertia", True))


def dataset_status(task: Task) -> DatasetStatus:
    """Whether a task's dataset is on this machine, without loading it."""
    source, params = _dataset_source(task.dataset)
    return source.status(task.id, task.suite, **params)


def generator_job(task: Task) -> tuple[str, str, int, int | None] | None:
    """The offline generator run (generator, preset, seed, size) that writes a task's dataset, if any."""
    source, params = _dataset_source(task.dataset)
    return source.generator_job(**params)


def check_tasks(tasks: Iterable[Task]) -> list[DatasetStatus]:
    """The statuses of the tasks whose data is missing and cannot be generated here."""
    return [s for s in (dataset_status(t) for t in tasks) if not s.available and not s.local]


def require_datasets(suite: str, tasks: Iterable[Task], generate_local: bool = True) -> None:
    """Raise one clear MissingDatasetError listing every missing dataset of `tasks` (call it in
    the main process before spawning bench workers: the failure then takes seconds, not a pool).
    With `generate_local`, local datasets not yet generated are generated here, once, with their
    progress bars, instead of inside the first worker that needs them."""
    tasks = list(tasks)
    missing = check_tasks(tasks)
    if not missing:
        if generate_local:
            for task in tasks:
                status = dataset_status(task)
                job = generator_job(task)
                if status.local and not status.available and job is not None:
                    from modebench.benchmarks.tasks.generators import generate

                    print(f"{task.id}: generating the local dataset {status.name} (once; cached in {status.where})", flush=True)
                    generate(job[0], job[1], job[2], size=job[3])
        return
    names = ", ".join(s.name for s in missing[:6]) + (f" and {len(missing) - 6} more" if len(missing) > 6 else "")
    raise MissingDatasetError(
        f"suite {suite!r}: {len(missing)} dataset(s) are not on this machine ({names}). "
        f"Download them with `modebench datasets download --suite {suite}` (needs network), "
        f"or run a suite built offline: `modebench bench --suite {nearest_local_suite(suite)}`."
    )


def download_task(task: Task, force: bool = False) -> str:
    """Fetch a task's dataset (minari / ogbench / D4RL URL); generate it for local suites."""
    source, params = _dataset_source(task.dataset)
    status = source.status(task.id, task.suite, **params)
    if status.available and not force:
        return f"{task.id}: already present ({status.where})"
    return source.download(task.id, task.suite, force, **params)


# ---------------------------------------------------------------- downloads


class OfflineError(MissingDatasetError):
    """A download could not reach its server."""


def _offline_message(what: str, url: str, err: BaseException, suite: str | None) -> str:
    hint = f" Offline, run `modebench bench --suite {nearest_local_suite(suite)}` instead." if suite else ""
    reason = getattr(err, "reason", err)
    return f"could not download {what} from {url}: {reason}. This machine looks offline (or the server is down).{hint}"


def _fetch(url: str, dest: Path, what: str, suite: str | None) -> Path:
    """Download `url` to `dest` (atomic, progress bar, short connect timeout)."""
    from tqdm.auto import tqdm

    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(dest.name + ".part")
    try:
        with urllib.request.urlopen(url, timeout=NETWORK_TIMEOUT_S) as response, open(tmp, "wb") as out:
            total = int(response.headers.get("Content-Length") or 0) or None
            with tqdm(total=total, unit="B", unit_scale=True, desc=dest.name) as bar:
                while chunk := response.read(1 << 20):
                    out.write(chunk)
                    bar.update(len(chunk))
    except (TimeoutError, urllib.error.URLError, ConnectionError, OSError) as err:
        tmp.unlink(missing_ok=True)
        raise OfflineError(_offline_message(what, url, err, suite)) from None
    tmp.replace(dest)
    return dest


def minari_remote() -> tuple[str, str]:
    """(remote, host): the remote minari downloads from ($MINARI_REMOTE, else minari's default
    hf://farama-minari) and the host it reaches (Hugging Face's, or $HF_ENDPOINT's)."""
    from minari.storage.remotes import DEFAULT_REMOTE

    remote = os.environ.get("MINARI_REMOTE", DEFAULT_REMOTE)
    if remote.startswith("hf://"):
        endpoint = os.environ.get("HF_ENDPOINT", "https://huggingface.co")
        return remote, urllib.parse.urlsplit(endpoint).hostname or "huggingface.co"
    return remote, "storage.googleapis.com"  # gcp://


def _unreachable(host: str, port: int = 443) -> OSError | None:
    """None when a TCP connection to host:port opens within NETWORK_TIMEOUT_S, else the error."""
    try:
        socket.create_connection((host, port), timeout=NETWORK_TIMEOUT_S).close()
    except OSError as err:
        return err
    return None


# Exception classes (by name, so no client library is imported for the check) that mean the
# remote was not reached: huggingface_hub 2.x raises httpx2's, 0.x/1.x requests' or its own.
NETWORK_ERRORS = frozenset({
    "ConnectError", "ConnectTimeout", "NetworkError", "TransportError", "TimeoutException",
    "ConnectionError", "LocalEntryNotFoundError", "OfflineModeIsEnabled",
})
NETWORK_OS_ERRORS = (ConnectionError, TimeoutError, socket.gaierror, urllib.error.URLError)  # not disk errors


def download_minari(dataset_id: str, suite: str | None = None, force: bool = False) -> str:
    import minari

    try:
        import huggingface_hub  # noqa: F401  (minari's remote storage backend, a project dependency)
    except ImportError:
        raise MissingDatasetError(
            f"downloading Minari dataset {dataset_id!r} needs huggingface_hub, which the project installs: "
            "`pip install -e .` (or `pip install \"minari[hf]\"`)"
        ) from None
    remote, host = minari_remote()
    retry = f" Run `modebench datasets download {dataset_id}` again on a machine with network."

    def offline(err: BaseException) -> OfflineError:
        return OfflineError(_offline_message(f"Minari {dataset_id}", f"{remote} ({host})", err, suite) + retry)

    # Probe first: offline, huggingface_hub retries each request with backoff (~30 s) before failing.
    if (err := _unreachable(host)) is not None:
        raise offline(err)
    previous = socket.getdefaulttimeout()
    socket.setdefaulttimeout(NETWORK_TIMEOUT_S)
    try:
        minari.download_dataset(dataset_id, force_download=force)
    except Exception as err:  # minari passes its client's network errors through
        if isinstance(err, NETWORK_OS_ERRORS) or NETWORK_ERRORS & {c.__name__ for c in type(err).__mro__}:
            raise offline(err) from None
        raise
    finally:
        socket.setdefaulttimeout(previous)
    return f"downloaded Minari {dataset_id}"
