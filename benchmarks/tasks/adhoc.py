"""Ad-hoc tasks for `--dataset ID_OR_PATH`: a dataset that no suite file names."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from modebench.algorithms.config import ConfigError
from modebench.benchmarks.tasks.suites import Task


def task_from_dataset(
    dataset: str, env: str | None = None, ref_min: float | None = None, ref_max: float | None = None,
    horizon: int | None = None, eval_episodes: int = 10,
) -> Task:
    """An ad-hoc task for `--dataset ID_OR_PATH`: a Minari dataset (evaluated in the env it
    records, scored with its ref_min/max_score) or a D4RL-style .npz/.hdf5 file (give --env).
    A file's actions are taken in the units of that env's action box (rescaled to [-1, 1] on
    load, mapped back at evaluation), so a Pendulum file stores torques in [-2, 2]."""
    path = Path(dataset).expanduser()
    if path.suffix in (".npz", ".hdf5", ".h5"):
        if env is None:
            raise ConfigError(f"{dataset}: a D4RL-style file records no environment; pass --env GYM_ID to evaluate in")
        if ref_min is None or ref_max is None:
            raise ConfigError(f"{dataset}: pass --ref-min and --ref-max (random / expert returns) for the normalised score")
        task = Task(
            suite="dataset", name=path.stem, dataset={"source": "d4rl-file", "path": str(path.resolve())},
            env={"source": "gym", "id": env}, horizon=horizon or 1000,
            score={"kind": "reference", "random": ref_min, "expert": ref_max}, eval_episodes=eval_episodes,
        )
        spec = _env_facts(task, env)
        task.dataset["action_box"] = spec["action_box"]
        task.horizon = horizon or spec["max_episode_steps"] or 1000
        return task
    from modebench.benchmarks.data.loaders import max_episode_steps

    source = {"source": "minari", "path": str(path.resolve())} if path.exists() else {"source": "minari", "id": dataset}
    score: dict[str, Any] = {"kind": "dataset"}
    if ref_min is not None and ref_max is not None:
        score = {"kind": "reference", "random": ref_min, "expert": ref_max}
    name = path.name if path.exists() else dataset.replace("/", "-")
    task = Task(suite="dataset", name=name, dataset=source, env={"source": "gym", "id": env} if env else dict(source),
                horizon=horizon or 1000, score=score, eval_episodes=eval_episodes)
    if horizon is None:  # the episode limit of the env evaluated in: --env's, else the one the data records
        task.horizon = (_env_facts(task, env)["max_episode_steps"] if env else max_episode_steps(dataset)) or 1000
    return task


def _env_facts(task: Task, env_id: str) -> dict[str, Any]:
    """The action box (None unless a Box: the train-time check names the space) and episode
    limit of `--env`, read from one instance of it; an unknown id is a one-line error."""
    import gymnasium as gym

    try:
        env = task.make_env()
    except gym.error.Error as err:
        raise ConfigError(f"--env {env_id}: {err}; give a registered gymnasium id such as Pendulum-v1") from None
    try:
        space = env.action_space
        box = None
        if isinstance(space, gym.spaces.Box):
            box = {"env": env_id, "low": space.low.reshape(-1).tolist(), "high": space.high.reshape(-1).tolist()}
        return {"action_box": box, "max_episode_steps": env.spec.max_episode_steps if env.spec is not None else None}
    finally:
        env.close()
