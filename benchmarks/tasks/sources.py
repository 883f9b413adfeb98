"""Dataset and environment sources of the real suites (registered into benchmarks.tasks.suites).

Dataset sources (`dataset: {source: KIND, ...}` in a suite file):
- `d4rl`: an ORIGINAL D4RL HDF5 file by name (`hopper-medium-v2`), looked up in
  $D4RL_DATASET_DIR or ~/.d4rl/datasets (D4RL's own cache layout), or given by `path`;
  `modebench datasets download` fetches it from D4RL's URL.
- `ogbench`: an OGBench single-task dataset by name (`antmaze-large-navigate-singletask-task1-v0`),
  read from ~/.ogbench/data (OGBench's cache; `dataset_dir` or $OGBENCH_DATASET_DIR to change)
  or `path`, with OGBench's own loader and single-task reward relabelling; with
  `local: {preset, seed}` the npz is the one the offline generator writes (generated on first use).
- `generated`: a Minari dataset written by an offline generator (benchmarks/tasks/generators),
  generated on first use under a file lock (parallel bench workers wait for one generator).
- the core's `minari` (`id` of a published Minari dataset, or a local path) and `d4rl-file`.

Environment sources (`env: {source: KIND, ...}`), every one accepting `mass_scale` (GEM A.4
MassScale, benchmarks/tasks/wrappers.py; also `mass_bodies`, `scale_inertia`):
- `gymnasium`: `gym.make(id, **kwargs)` with gymnasium-robotics and OGBench registered, dict
  observations flattened (in the order the Minari loader flattens data).
- `ogbench`: an OGBench env id (`<env>-singletask-taskN-v0`: the task's fixed start and goal).
- `minari-recorded`: the evaluation env a published Minari dataset records
  (`recover_environment(eval_env=True)`), needing the dataset on disk; `env_id` / `env_kwargs`
  name that env so checks can build it without the data (`declared_env`).
- `generated`: the evaluation env an offline generator records in its datasets (no data needed).
- the core's `gym` and `minari` (wrapped here to accept `mass_scale`).

Missing data is a `MissingDatasetError` naming the download command and the nearest suite that
runs offline; `check_tasks` / `require_datasets` find every missing dataset of a suite before
any work starts (call it before spawning workers).
"""

from __future__ import annotations

import functools
import os
import socket
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import gymnasium as gym

from algorithms.config import ConfigError
from benchmarks.data.dataset import TransitionDataset
from benchmarks.data.loaders import MissingDatasetError
from benchmarks.tasks.suites import (
    DATASET_SOURCES,
    ENV_SOURCES,
    Task,
    dataset_source,
    env_source,
)
from benchmarks.tasks.wrappers import apply_mass_scale

D4RL_URL = "http://rail.eecs.berkeley.edu/datasets/offline_rl/gym_mujoco_v2"
NETWORK_TIMEOUT_S = 20.0  # per connection attempt: an offline machine fails fast, never hangs

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


# ---------------------------------------------------------------- environments


def import_robotics():
    """gymnasium_robotics, registered, without the version notice it prints to stderr on import
    (its Adroit reward-change notice: documented in benchmarks/tasks/suites/adroit.yaml)."""
    import contextlib
    import io

    with contextlib.redirect_stderr(io.StringIO()):
        import gymnasium_robotics
    gym.register_envs(gymnasium_robotics)
    return gymnasium_robotics


def _register_all() -> None:
    """gymnasium-robotics and OGBench register their envs on import (lazily: both are slow)."""
    import benchmarks.tasks.toy  # noqa: F401
    from benchmarks.tasks.generators.ogbench_gen import import_ogbench

    import_ogbench()

    import_robotics()


def flatten_dict_obs(env: gym.Env) -> gym.Env:
    if isinstance(env.observation_space, gym.spaces.Dict):
        return gym.wrappers.FlattenObservation(env)
    return env


def with_mass_scale(factory: Callable[..., gym.Env]) -> Callable[..., gym.Env]:
    """A factory that also accepts `mass_scale`, `mass_bodies` and `scale_inertia` (MassScale)."""
    if getattr(factory, "_accepts_mass_scale", False):
        return factory

    @functools.wraps(factory)
    def make(*args, mass_scale: float | None = None, mass_bodies: list[str] | None = None,
             scale_inertia: bool = True, **params) -> gym.Env:
        return apply_mass_scale(factory(*args, **params), mass_scale, mass_bodies, scale_inertia)

    make._accepts_mass_scale = True  # type: ignore[attr-defined]
    return make


@env_source("gymnasium")
def _gymnasium_env(id: str, **kwargs) -> gym.Env:
    from benchmarks.tasks.generators.ogbench_gen import quiet_ogbench

    _register_all()
    with quiet_ogbench():
        return flatten_dict_obs(gym.make(id, **kwargs))


@env_source("ogbench")
def _ogbench_env(id: str, **kwargs) -> gym.Env:
    from benchmarks.tasks.generators.ogbench_gen import make_env

    if "singletask" not in id:
        raise ConfigError(f"OGBench env {id!r}: the suites evaluate OGBench's single-task envs ('<env>-singletask[-taskN]-v0')")
    return make_env(id, **kwargs)


@env_source("minari-recorded")
def _minari_recorded_env(dataset: str, env_id: str | None = None, env_kwargs: dict | None = None,
                         eval_env: bool = True) -> gym.Env:
    import warnings

    from benchmarks.data.loaders import recover_env

    _register_all()
    env = recover_env(dataset, eval_env=eval_env)
    recorded = env.spec.id if env.spec is not None else None
    if env_id and recorded and recorded != env_id:
        warnings.warn(f"{dataset}: the dataset records env {recorded!r}, the suite declares {env_id!r}; "
                      "evaluating in the recorded one (fix the suite file)", stacklevel=2)
    return env


@env_source("generated")
def _generated_env(generator: str) -> gym.Env:
    from benchmarks.tasks.generators import make_eval_env

    return flatten_dict_obs(make_eval_env(generator))


def declared_env(task: Task) -> gym.Env:
    """The task's evaluation env, built without its dataset (for checks on machines without data):
    `minari-recorded` tasks use the `env_id` / `env_kwargs` they declare."""
    params = dict(task.env)
    kind = params.pop("source")
    if kind == "minari-recorded":
        if not params.get("env_id"):
            raise ConfigError(f"{task.id}: a minari-recorded env must declare env_id (the env the dataset records)")
        extra = {k: params[k] for k in ("mass_scale", "mass_bodies", "scale_inertia") if k in params}
        return ENV_SOURCES["gymnasium"](id=params["env_id"], **dict(params.get("env_kwargs") or {}), **extra)
    return task.make_env()


# ---------------------------------------------------------------- datasets: D4RL files


def d4rl_dir() -> Path:
    return Path(os.environ.get("D4RL_DATASET_DIR", "~/.d4rl/datasets")).expanduser()


def d4rl_url(name: str) -> str:
    """D4RL's URL of a v2 gym-mujoco dataset: hopper-medium-replay-v2 -> .../hopper_medium_replay-v2.hdf5."""
    env, rest = name.split("-", 1)
    stem, version = rest.rsplit("-", 1)
    return f"{D4RL_URL}/{env}_{stem.replace('-', '_')}-{version}.hdf5"


def d4rl_file(name: str, path: str | None = None) -> Path:
    return Path(path).expanduser() if path else d4rl_dir() / d4rl_url(name).rsplit("/", 1)[1]


@dataset_source("d4rl")
def _d4rl_dataset(name: str, path: str | None = None) -> TransitionDataset:
    from benchmarks.data.loaders import load_d4rl_file

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


# ---------------------------------------------------------------- datasets: OGBench


def ogbench_dir(dataset_dir: str | None = None) -> Path:
    return Path(dataset_dir or os.environ.get("OGBENCH_DATASET_DIR", "~/.ogbench/data")).expanduser()


def ogbench_file(name: str, path: str | None = None, local: dict | None = None, dataset_dir: str | None = None) -> Path:
    from benchmarks.tasks.generators.ogbench_gen import (
        npz_path,
        parse_name,
        recipe_for_dataset,
    )

    if path:
        return Path(path).expanduser()
    if local is not None:
        found = recipe_for_dataset(name)
        if found is None:
            raise ConfigError(f"{name}: no offline generator for this OGBench dataset (local: needs one of the ogbench-* generators)")
        preset = local.get("preset", "small")
        return npz_path(found[0], preset if "size" not in local else f"n{local['size']}", int(local.get("seed", 0)))
    return ogbench_dir(dataset_dir) / f"{parse_name(name)['dataset']}.npz"


def _ensure_local_ogbench(name: str, local: dict) -> None:
    from benchmarks.tasks.generators import generate
    from benchmarks.tasks.generators.ogbench_gen import recipe_for_dataset

    generator = recipe_for_dataset(name)[0]  # type: ignore[index]
    generate(generator, local.get("preset", "small"), int(local.get("seed", 0)), size=local.get("size"))


@dataset_source("ogbench")
def _ogbench_dataset(name: str, path: str | None = None, local: dict | None = None, dataset_dir: str | None = None) -> TransitionDataset:
    from benchmarks.tasks.generators.ogbench_gen import (
        load_singletask,
        parse_name,
        to_flat,
    )

    if local is not None and path is None:
        _ensure_local_ogbench(name, local)
    file = ogbench_file(name, path, local, dataset_dir)
    if not file.exists():
        base = parse_name(name)["dataset"]
        raise MissingDatasetError(
            f"OGBench dataset {base!r} is not on this machine (looked for {file}). Download it with "
            f"`modebench datasets download {name}` (needs network), or run the `{OGBENCH_LOCAL_SUITE}` suite, "
            "built offline with OGBench's own recipes (`modebench bench --suite ogbench-local`)."
        )
    raw, env = load_singletask(name, file)
    env.close()
    metadata = {"source": "ogbench", "ogbench_name": name, "path": str(file), "local": local is not None}
    data = TransitionDataset.from_flat(to_flat(raw), name=name if local is None else f"{name}[local:{file.stem}]",
                                       metadata=metadata)
    return data


# ---------------------------------------------------------------- datasets: offline generators


@dataset_source("generated")
def _generated_dataset(generator: str, preset: str = "small", seed: int = 0, size: int | None = None) -> TransitionDataset:
    from benchmarks.data.loaders import load_minari
    from benchmarks.tasks.generators import generate

    result = generate(generator, preset, seed, size=size)
    data = load_minari(result.name)
    data.metadata.update({"local": True, "generator": generator, "preset": preset, "seed": seed})
    return data


# ---------------------------------------------------------------- the core's sources, with MassScale

for _kind in list(ENV_SOURCES):
    ENV_SOURCES[_kind] = with_mass_scale(ENV_SOURCES[_kind])


# ---------------------------------------------------------------- availability and downloads


@dataclass
class DatasetStatus:
    task: str
    kind: str
    name: str
    available: bool
    local: bool  # generated on this machine (never a download)
    where: str
    download: str  # the command that gets it (or generates it)

    def line(self) -> str:
        state = "present" if self.available else ("generated on first use" if self.local else "MISSING")
        return f"{self.task:48s} {self.kind:10s} {self.name:52s} {state}"


def dataset_status(task: Task) -> DatasetStatus:
    """Whether a task's dataset is on this machine, without loading it."""
    params = dict(task.dataset)
    kind = params.pop("source")
    suite_cmd = f"modebench datasets download --suite {task.suite}"
    if kind == "d4rl":
        file = d4rl_file(params["name"], params.get("path"))
        return DatasetStatus(task.id, kind, params["name"], file.exists(), False, str(file), suite_cmd)
    if kind == "ogbench":
        local = params.get("local")
        file = ogbench_file(params["name"], params.get("path"), local, params.get("dataset_dir"))
        exists = file.exists() and (local is None or file.with_suffix(".json").exists())
        cmd = f"modebench datasets generate --suite {task.suite}" if local is not None else suite_cmd
        return DatasetStatus(task.id, kind, params["name"], exists, local is not None, str(file), cmd)
    if kind == "generated":
        from benchmarks.tasks.generators import is_generated, output_id

        args = (params["generator"], params.get("preset", "small"), int(params.get("seed", 0)), params.get("size"))
        return DatasetStatus(task.id, kind, output_id(*args)["minari"], is_generated(*args), True,
                             output_id(*args)["minari"], f"modebench datasets generate --suite {task.suite}")
    if kind == "minari":
        from benchmarks.tasks.generators.common import minari_dataset_dir

        ident = params.get("path") or params.get("id")
        path = Path(ident).expanduser()
        where = path if path.exists() else minari_dataset_dir(ident)
        return DatasetStatus(task.id, kind, ident, (Path(where) / "data").exists() or (Path(where) / "metadata.json").exists(),
                             False, str(where), suite_cmd)
    if kind == "d4rl-file":
        file = Path(params["path"]).expanduser()
        return DatasetStatus(task.id, kind, params["path"], file.exists(), False, str(file), suite_cmd)
    if kind == "toy":
        return DatasetStatus(task.id, kind, params.get("task", ""), True, True, "generated in memory", "")
    return DatasetStatus(task.id, kind, str(params), True, False, "unknown source: not checked", "")


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
                if status.local and not status.available:
                    print(f"{task.id}: generating the local dataset {status.name} (once; cached in {status.where})", flush=True)
                    _generate_for(task)
        return
    names = ", ".join(s.name for s in missing[:6]) + (f" and {len(missing) - 6} more" if len(missing) > 6 else "")
    raise MissingDatasetError(
        f"suite {suite!r}: {len(missing)} dataset(s) are not on this machine ({names}). "
        f"Download them with `modebench datasets download --suite {suite}` (needs network), "
        f"or run a suite built offline: `modebench bench --suite {nearest_local_suite(suite)}`."
    )


def _generate_for(task: Task) -> None:
    """Generate a local task's dataset (no-op when it is already complete)."""
    from benchmarks.tasks.generators import generate

    params = dict(task.dataset)
    kind = params.pop("source")
    if kind == "generated":
        generate(params["generator"], params.get("preset", "small"), int(params.get("seed", 0)), size=params.get("size"))
    elif kind == "ogbench" and params.get("local") is not None:
        _ensure_local_ogbench(params["name"], params["local"])


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


def download_task(task: Task, force: bool = False) -> str:
    """Fetch a task's dataset (minari / ogbench / D4RL URL); generate it for local suites."""
    params = dict(task.dataset)
    kind = params.pop("source")
    status = dataset_status(task)
    if status.available and not force:
        return f"{task.id}: already present ({status.where})"
    if kind == "d4rl":
        if params.get("path"):
            raise MissingDatasetError(f"{task.id}: the suite names a local file {params['path']}; put the D4RL .hdf5 there")
        file = _fetch(d4rl_url(params["name"]), d4rl_file(params["name"]), f"D4RL {params['name']}", task.suite)
        return f"{task.id}: downloaded {file}"
    if kind == "ogbench" and params.get("local") is None:
        from benchmarks.tasks.generators.ogbench_gen import parse_name

        base = parse_name(params["name"])["dataset"]
        directory = ogbench_dir(params.get("dataset_dir"))
        import ogbench.utils as og_utils

        for suffix in ("", "-val"):
            file = directory / f"{base}{suffix}.npz"
            if not file.exists() or force:
                _fetch(f"{og_utils.DATASET_URL}/{base}{suffix}.npz", file, f"OGBench {base}{suffix}", task.suite)
        return f"{task.id}: downloaded {directory / (base + '.npz')}"
    if kind == "minari":
        ident = params.get("id")
        if not ident:
            raise MissingDatasetError(f"{task.id}: the suite names a local Minari path {params.get('path')}; nothing to download")
        return f"{task.id}: {download_minari(ident, task.suite, force)}"
    if kind in ("generated", "ogbench"):
        _generate_for(task)  # file-locked
        return f"{task.id}: generated locally ({dataset_status(task).where})"
    raise MissingDatasetError(f"{task.id}: dataset source {kind!r} has no download; see the suite file")


def download_minari(dataset_id: str, suite: str | None = None, force: bool = False) -> str:
    import minari

    try:
        import huggingface_hub  # noqa: F401  (minari's remote storage backend)
    except ImportError:
        raise MissingDatasetError(
            f"downloading Minari dataset {dataset_id!r} needs huggingface_hub: `pip install \"minari[hf]\"`"
        ) from None
    previous = socket.getdefaulttimeout()
    socket.setdefaulttimeout(NETWORK_TIMEOUT_S)
    try:
        minari.download_dataset(dataset_id, force_download=force)
    except (TimeoutError, OSError, ConnectionError) as err:
        raise OfflineError(_offline_message(f"Minari {dataset_id}", "Minari's remote", err, suite)) from None
    except Exception as err:  # minari wraps network failures in its own / huggingface errors
        if "connect" in str(err).lower() or "resolve" in str(err).lower() or "offline" in str(err).lower():
            raise OfflineError(_offline_message(f"Minari {dataset_id}", "Minari's remote", err, suite)) from None
        raise
    finally:
        socket.setdefaulttimeout(previous)
    return f"downloaded Minari {dataset_id}"


def registered_kinds() -> dict[str, list[str]]:
    return {"dataset": sorted(DATASET_SOURCES), "env": sorted(ENV_SOURCES)}
