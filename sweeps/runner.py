"""The sweep driver: plan a grid's trials against the results store, run the unfinished ones
under Ray Tune, and clean up.

    run_sweep("gem-table1", out="/shared/results", address="auto", resume=True)

- A trial is one method x training combination x task with all the grid's seeds (one run per
  seed, trained together: sweeps.trial). Planning reads the results store per run: a trial whose
  runs are all finished (every final-step record present) or diverged is not submitted again;
  the plan, one row per run, is written to <out>/sweeps/<name>/plan.json.
- Trials run through `ray.tune.Tuner` with per-trial resources from the grid
  (`tune.with_resources`), `FailureConfig(max_failures)` (a trial whose process dies restarts
  from its last checkpoint) and `CheckpointConfig(num_to_keep=1)`; Tune's own state and
  checkpoints go to `storage` (default <out>/sweeps/<name>/ray; any pyarrow URI such as
  s3://bucket/path works there).
- `resume=True` restores Tune's experiment (`Tuner.restore`, errored trials restarted) when it
  can, then runs whatever the store still lacks in a fresh Tuner: Ray's experiment state may be
  seconds behind after a SIGKILL, the store is not.
- Without `address` the driver starts a Ray node with all cores (and GPUs) of this machine and
  removes every process of it afterwards, also after SIGKILL (sweeps.reaper). With `address`
  it joins that cluster and starts nothing.
"""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from modebench.algorithms.config import ConfigError
from modebench.sweeps import reaper
from modebench.sweeps.grid import Grid, load_grid
from modebench.sweeps.trial import (
    PlannedRun,
    PlannedTrial,
    plan,
    resolve_task_fields,
    run_trial,
)


@dataclass
class SweepSummary:
    name: str
    root: Path
    trials: int
    runs: int = 0  # trials x seeds
    statuses: Counter = field(default_factory=Counter)  # per run: finished / diverged / todo (after the run)
    skipped: int = 0  # runs finished or diverged before this run started
    errors: dict[str, str] = field(default_factory=dict)  # run_id -> Tune's error for the runs of trials that failed
    diverged: dict[str, str] = field(default_factory=dict)  # run_id -> reason
    wall_time: float = 0.0
    restored: bool = False

    @property
    def ok(self) -> bool:
        return self.statuses.get("todo", 0) == 0 and not self.errors


def sweep_dir(root: Path, grid: Grid) -> Path:
    """Tune's state of a grid; a published-protocol sweep of the same grid keeps its own."""
    return root / "sweeps" / (grid.name if grid.protocol == "controlled" else f"{grid.name}-{grid.protocol}")


def plan_grid(grid: Grid, root: Path, seeds: list[int] | None = None, steps: int | None = None) -> list[PlannedTrial]:
    tasks = {task: resolve_task_fields(task) for task in grid.expand_tasks()}
    planned = []
    for spec in grid.trials(seeds, steps):
        spec.task_fields = tasks[spec.task]
        spec.out = str(root)
        planned.append(plan(spec))
    labels = [t.spec.label for t in planned]
    if len(set(labels)) != len(labels):
        raise ConfigError(f"grid {grid.name}: trial names repeat: {sorted({x for x in labels if labels.count(x) > 1})}")
    seen: dict[str, str] = {}
    for trial in planned:
        for run in trial.runs:
            if run.run_id in seen:
                raise ConfigError(
                    f"grid {grid.name}: trials {seen[run.run_id]} and {trial.spec.label} resolve to the same run "
                    f"({run.run_id}); a training axis has no effect or repeats a value"
                )
            seen[run.run_id] = trial.spec.label
    return planned


def planned_runs(planned: list[PlannedTrial]) -> list[PlannedRun]:
    return [run for trial in planned for run in trial.runs]


def write_plan(path: Path, grid: Grid, planned: list[PlannedTrial]) -> None:
    """plan.json: `runs`, one row per run (seed) with its trial's label; `trials`, one row per
    trial with its seeds and run ids."""
    from modebench.benchmarks.store import atomic_write_json

    atomic_write_json(path, {
        "grid": grid.name, "grid_file": str(grid.path), "created": time.time(),
        "runs": [
            {"label": t.spec.label, "run_id": r.run_id, "method": t.spec.method, "task": t.spec.task,
             "seed": r.seed, "steps": t.spec.steps, "train": t.spec.train_combo, "settings": t.settings,
             "record_keys": r.final_keys()}
            for t in planned for r in t.runs
        ],
        "trials": [
            {"label": t.spec.label, "method": t.spec.method, "task": t.spec.task, "train": t.spec.train_combo,
             "seeds": [r.seed for r in t.runs], "run_ids": t.run_ids}
            for t in planned
        ],
    })


def _jobs(trials: list[PlannedTrial], grid: Grid) -> dict[str, dict[str, Any]]:
    return {t.spec.label: {"trial": t.spec.to_dict(), "resources": dict(grid.resources)} for t in trials}


def _trainable(jobs: dict[str, dict[str, Any]], grid: Grid):
    from ray import tune

    return tune.with_resources(tune.with_parameters(run_trial, jobs=jobs), {"cpu": grid.resources["cpu"], "gpu": grid.resources["gpu"]})


def _tune_run(trainable, trials: list[PlannedTrial], grid: Grid, name: str, storage: str, verbose: int,
              max_concurrent: int | None, restore_path: str | None = None):
    from ray import tune

    if restore_path is not None:
        tuner = tune.Tuner.restore(restore_path, trainable=trainable, resume_unfinished=True, restart_errored=True)
    else:
        tuner = tune.Tuner(
            trainable,
            param_space={"job": tune.grid_search([t.spec.label for t in trials])},
            tune_config=tune.TuneConfig(
                max_concurrent_trials=max_concurrent,
                reuse_actors=True,  # one worker process runs trial after trial: no re-import of torch per trial
                trial_name_creator=lambda t: t.config["job"],
                trial_dirname_creator=lambda t: f"{t.config['job']}_{t.trial_id}",
            ),
            run_config=tune.RunConfig(
                name=name,
                storage_path=storage,
                failure_config=tune.FailureConfig(max_failures=grid.max_failures),
                checkpoint_config=tune.CheckpointConfig(num_to_keep=1),
                verbose=verbose,
            ),
        )
    return tuner.fit()


class _Terminated(KeyboardInterrupt):
    """SIGTERM, handled like Ctrl-C: stored evaluations stay, the same command resumes."""


def _on_sigterm(signum, frame):  # let `finally` blocks run (ray.shutdown, process cleanup)
    raise _Terminated(f"signal {signum}")


def run_sweep(
    grid_ref: str | Path,
    out: str | Path | None = None,
    address: str | None = None,
    seeds: list[int] | None = None,
    resume: bool = False,
    storage: str | None = None,
    steps: int | None = None,
    num_cpus: int | None = None,
    max_concurrent: int | None = None,
    dry_run: bool = False,
    verbose: int = 1,
    log=print,
    protocol: str | None = None,
) -> SweepSummary:
    """`protocol` overrides the grid file's `protocol:` (published | controlled)."""
    from modebench.benchmarks.run.spec import check_protocol
    from modebench.benchmarks.store import DEFAULT_ROOT, atomic_write_json

    start = time.time()
    grid = load_grid(grid_ref)
    if protocol is not None:
        grid = dataclasses.replace(grid, protocol=check_protocol(protocol))
    grid.validate(check_tasks=True)
    root = Path(out or DEFAULT_ROOT).expanduser().resolve()
    state = sweep_dir(root, grid)
    planned = plan_grid(grid, root, seeds, steps)
    runs = planned_runs(planned)
    before = {r.run_id: r.status() for r in runs}
    todo = [t for t in planned if any(before[r] == "todo" for r in t.run_ids)]
    summary = SweepSummary(name=grid.name, root=root, trials=len(planned), runs=len(runs),
                           skipped=sum(s != "todo" for s in before.values()))
    n_records = sum(len(t.settings) * len(t.runs) for t in planned)
    log(f"sweep {grid.name}: {len(planned)} trials, {len(runs)} runs ({n_records} final records) -> {root}; "
        f"{summary.skipped} runs already finished or diverged, {len(todo)} trials to run")
    if dry_run:
        for t in planned:
            log(f"  [{t.status():8s}] {t.spec.label}  {len(t.settings)} settings")
            for r in t.runs:
                log(f"      [{before[r.run_id]:8s}] seed {r.seed}  {r.run_id}")
        summary.statuses = Counter(before.values())
        return summary
    state.mkdir(parents=True, exist_ok=True)
    write_plan(state / "plan.json", grid, planned)
    if todo:
        summary.restored = _run_todo(grid, planned, todo, state, storage, address, resume, num_cpus,
                                     max_concurrent or grid.max_concurrent, verbose, summary, log)
    if grid.select_with:  # the selection axis: GEM's rule over every trial's proposals (benchmarks/run/compose.py)
        from modebench.benchmarks.run.compose import select_stored

        select_stored(root, [m.name for m in grid.methods], grid.select_with, selector="gem", run_ids={r.run_id for r in runs},
                      episodes=grid.eval_episodes, device=grid.device or "auto", log=log)
    after = {r.run_id: r.status() for r in runs}
    summary.statuses = Counter(after.values())
    for r in runs:
        if after[r.run_id] == "diverged":
            summary.diverged[r.run_id] = json.loads(r.diverged_path.read_text()).get("reason", "")
    summary.wall_time = time.time() - start
    atomic_write_json(state / "summary.json", {
        "grid": grid.name, "trials": summary.trials, "runs": summary.runs,
        "run_status": after,  # one row per run (seed)
        "statuses": dict(summary.statuses), "skipped": summary.skipped,
        "errors": summary.errors, "diverged": summary.diverged, "wall_time": summary.wall_time,
        "finished_at": time.time(), "restored_tune_state": summary.restored,
    })
    return summary


def _claim(state: Path, log) -> None:
    """Refuse to run beside a live driver of the same sweep; clean up after a dead one."""
    lock = state / "driver.json"
    if not lock.exists():
        return
    try:
        info = json.loads(lock.read_text())
    except (OSError, json.JSONDecodeError):
        return
    if info.get("host") == os.uname().nodename and reaper.alive(int(info["pid"]), info.get("pid_start")):
        raise ConfigError(f"sweep {state.name} is already running (driver pid {info['pid']}); wait for it or stop it")
    if info.get("token"):
        killed = reaper.kill_marked(f"{reaper.TOKEN_VAR}={info['token']}")
        if killed:
            log(f"stopped {len(killed)} leftover Ray processes of the previous driver (pid {info['pid']})")


def _run_todo(grid: Grid, all_planned: list[PlannedTrial], todo: list[PlannedTrial], state: Path, storage: str | None, address: str | None,
              resume: bool, num_cpus: int | None, max_concurrent: int | None, verbose: int,
              summary: SweepSummary, log) -> bool:
    from modebench.benchmarks.store import atomic_write_json

    _claim(state, log)
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    # Tune saves its experiment state at most every N s ("auto": ~10 s); the store is the source
    # of truth, this only makes Tuner.restore lose less.
    os.environ.setdefault("TUNE_GLOBAL_CHECKPOINT_S", "2")
    # a snapshot per trial checkpoint is what CheckpointConfig(num_to_keep=1) asks for: no warning
    os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")
    import ray
    from ray import tune

    token = None
    watchdog = None
    previous = None
    restored = False
    try:
        data_env = _data_env()
        os.environ.update(data_env)  # absolute: trials chdir into their own folders
        if address:
            # the data locations travel to every worker of the job (nodes may not set them)
            try:
                ray.init(address=address, log_to_driver=verbose > 0, runtime_env={"env_vars": data_env} if data_env else None)
            except ConnectionError as err:
                hint = ("; if the cluster uses token authentication (Ray's default), an explicit address needs "
                        "RAY_AUTH_MODE=token and the cluster's token (~/.ray/auth_token or RAY_AUTH_TOKEN)"
                        if address != "auto" and "RAY_AUTH_MODE" not in os.environ else "")
                raise ConfigError(f"--address {address}: no Ray cluster reachable ({err}){hint}; start one with "
                                  "`ray start --head` / `ray up`, or leave --address out for a local run") from None
        else:
            token = uuid.uuid4().hex
            os.environ[reaper.TOKEN_VAR] = token  # inherited by every process of the node we start
            watchdog = reaper.spawn_watchdog(token, state / "reaper.log")
            try:
                # address="local": always a new node of our own, never a `ray start` cluster found on
                # this machine; num_cpus=None lets Ray count every core (cgroup limits included)
                ray.init(address="local", num_cpus=num_cpus, include_dashboard=False, log_to_driver=verbose > 0)
            finally:
                os.environ.pop(reaper.TOKEN_VAR, None)
        if _main_thread():  # after ray.init: Ray's core installs its own SIGTERM handler (it aborts)
            previous = signal.signal(signal.SIGTERM, _on_sigterm)
        atomic_write_json(state / "driver.json", {
            "pid": os.getpid(), "pid_start": reaper.start_time(os.getpid()), "host": os.uname().nodename,
            "token": token, "address": address, "started": time.time(),
        })
        by_label = {t.spec.label: t for t in all_planned}
        # every planned trial's job, so a restored experiment finds its trials' specs too
        trainable = _trainable(_jobs(all_planned, grid), grid)
        storage_path = storage or str(state / "ray")
        experiment = f"{storage_path.rstrip('/')}/{grid.name}"
        if resume and tune.Tuner.can_restore(experiment):
            log(f"resuming Tune experiment {experiment}")
            results = _tune_run(trainable, todo, grid, grid.name, storage_path, verbose, max_concurrent, experiment)
            restored = True
            _collect_errors(results, summary, by_label)
            todo = [t for t in todo if t.status() == "todo" and not any(r in summary.errors for r in t.run_ids)]
            if todo:
                log(f"{len(todo)} trials are still unfinished in the results store; running them")
        elif resume:
            log(f"no restorable Tune state at {experiment}; running the {len(todo)} unfinished trials afresh")
        if todo:
            results = _tune_run(trainable, todo, grid, grid.name, storage_path, verbose, max_concurrent)
            _collect_errors(results, summary, by_label)
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
        try:
            ray.shutdown()
        finally:
            if token is not None:
                reaper.kill_marked(f"{reaper.TOKEN_VAR}={token}")
            if watchdog is not None:
                watchdog.terminate()
                watchdog.wait(timeout=10)
            (state / "driver.json").unlink(missing_ok=True)
    return restored


DATA_ENV_VARS = ("MINARI_DATASETS_PATH", "D4RL_DATASET_DIR", "OGBENCH_DATASET_DIR")


def _data_env() -> dict[str, str]:
    """The dataset locations set in this environment, as absolute paths."""
    out = {}
    for name in DATA_ENV_VARS:
        value = os.environ.get(name)
        if value and "://" not in value:
            out[name] = str(Path(value).expanduser().resolve())
    return out


def _collect_errors(results, summary: SweepSummary, planned: dict[str, PlannedTrial]) -> None:
    """Errors per run id: a trial's error (or failure) is every one of its runs the store still
    lacks; a trial the plan does not know is named by its Tune label."""
    for result in results:
        metrics = result.metrics or {}
        label = (result.config or {}).get("job", "?")
        trial = planned.get(label)
        todo = [r.run_id for r in trial.runs if r.status() == "todo"] if trial else [label]
        if result.error is not None:
            lines = str(result.error).strip().splitlines() or [""]
            message = f"{type(result.error).__name__}: {lines[-1][:300]}"
        elif metrics.get("status") == "failed":
            message = metrics.get("reason", "failed")
        elif metrics.get("status") in ("finished", "diverged") and trial is not None and todo:
            message = (
                f"the trial finished on {metrics.get('hostname', 'a worker')} but its records are not under "
                f"{trial.root}: on a cluster --results must be a file system every node and the driver mount"
            )
        else:
            continue
        for run_id in todo or (trial.run_ids if trial else [label]):
            summary.errors[run_id] = message


def _main_thread() -> bool:
    import threading

    return threading.current_thread() is threading.main_thread()


def print_summary(summary: SweepSummary, log=print) -> None:
    counts = ", ".join(f"{n} {s}" for s, n in sorted(summary.statuses.items()))
    log(f"sweep {summary.name}: {summary.trials} trials, {summary.runs} runs: {counts} "
        f"({summary.skipped} runs were done before this run); "
        f"{summary.wall_time:.0f} s; records under {summary.root / 'runs'}")
    for run_id, reason in summary.diverged.items():
        log(f"  diverged  {run_id}: {reason}")
    for run_id, error in summary.errors.items():
        log(f"  FAILED    {run_id}: {error}")
    if summary.statuses.get("todo"):
        log("  unfinished runs remain: run the same command with --resume")

