"""Cleaning up the Ray processes a sweep started, even when its driver is killed with SIGKILL.

A local sweep starts its own Ray node (GCS, raylet, agents, workers). ray.shutdown() stops
them on a normal exit, but after SIGKILL of the driver Ray 2.60 leaves its DashboardAgent and
RuntimeEnvAgent running as orphans (measured). So the driver marks every process of its node:
it sets MODEBENCH_SWEEP_TOKEN=<random> in the environment the node is started with (every Ray
process inherits it), and starts this watchdog in its own session:

    python -m modebench.sweeps.reaper DRIVER_PID DRIVER_START_TIME TOKEN [LOG]

which waits for the driver to end, however it ends, then terminates every process of this
user that carries the token (SIGTERM, then SIGKILL after a grace period), and every process it
saw below the driver in the process tree while the driver ran (same PID and start time): Ray's
agents rename themselves with setproctitle, which can overwrite the start of their environment
block and the token with it (measured: an orphaned DashboardAgent and RuntimeEnvAgent whose
/proc environ had lost the token but kept variables after it), and an orphan's parent is init,
so only ancestry recorded beforehand still finds it. Processes are found by their environment
and ancestry, never by name, so other users' and other sweeps' Ray processes are untouched. The
driver runs the token cleanup itself after ray.shutdown().
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

TOKEN_VAR = "MODEBENCH_SWEEP_TOKEN"


def _stat(pid: int) -> list[str] | None:
    """The fields of /proc/PID/stat after the command name (state [0], parent [1], start time
    [19]), or None once the process is gone."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None


def start_time(pid: int) -> int | None:
    """The process's start time in clock ticks since boot (/proc/PID/stat field 22), or None."""
    fields = _stat(pid)
    return int(fields[19]) if fields and len(fields) > 19 else None


def alive(pid: int, started: int | None = None) -> bool:
    """True while the process runs (a zombie has ended; only its parent's wait() is missing)."""
    fields = _stat(pid)
    if not fields or len(fields) <= 19:
        return False
    return fields[0] != "Z" and (started is None or int(fields[19]) == started)


def processes_with(marker: str, exclude: set[int] | None = None) -> list[int]:
    """PIDs of this user's processes whose environment contains `marker` (e.g. NAME=VALUE)."""
    needle = marker.encode()
    skip = {os.getpid()} | (exclude or set())
    uid = os.getuid()
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) in skip:
            continue
        try:
            if os.stat(f"/proc/{entry}").st_uid != uid:
                continue
            env = Path(f"/proc/{entry}/environ").read_bytes()
        except OSError:
            continue
        if needle in env.split(b"\0") and alive(int(entry)):
            found.append(int(entry))
    return found


def descendants(root: int) -> list[int]:
    """PIDs of every process below `root` in the process tree (children, theirs, ...)."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        fields = _stat(int(entry)) if entry.isdigit() else None
        if fields:
            children.setdefault(int(fields[1]), []).append(int(entry))
    found, todo = [], [root]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def _targets(marker: str, known: dict[int, int | None] | None, exclude: set[int] | None = None) -> dict[int, int | None]:
    """PID -> start time of every process carrying `marker` and every `known` one still running."""
    skip = exclude or set()
    found = {pid: start_time(pid) for pid in processes_with(marker, skip)}
    found.update({pid: t for pid, t in (known or {}).items() if pid not in found and pid not in skip and alive(pid, t)})
    return found


def kill_marked(
    marker: str, grace: float = 3.0, exclude: set[int] | None = None, rounds: int = 5,
    known: dict[int, int | None] | None = None,
) -> list[int]:
    """SIGTERM every process carrying `marker` and every `known` process (PID -> start time) still
    running, SIGKILL what is left after `grace` s, and repeat for processes that appeared
    meanwhile (a raylet starting a worker); returns the PIDs."""
    killed: list[int] = []
    for _ in range(rounds):
        started = _targets(marker, known, exclude)
        pids = list(started)
        if not pids:
            break
        for pid in pids:
            _signal(pid, signal.SIGTERM)
        deadline = time.monotonic() + grace
        while time.monotonic() < deadline and any(alive(p, started[p]) for p in pids):
            time.sleep(0.1)
        for pid in pids:
            if alive(pid, started[pid]):
                _signal(pid, signal.SIGKILL)
        killed += [p for p in pids if p not in killed]
    return killed


def _signal(pid: int, sig: int) -> None:
    try:
        os.kill(pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def spawn_watchdog(token: str, log: Path | None = None) -> subprocess.Popen:
    """Start the watchdog for this process (the driver); it outlives a SIGKILL of the driver."""
    env = {k: v for k, v in os.environ.items() if k != TOKEN_VAR}
    return subprocess.Popen(
        [sys.executable, "-m", "modebench.sweeps.reaper", str(os.getpid()), str(start_time(os.getpid())), token,
         *([str(log)] if log else [])],
        env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        start_new_session=True, close_fds=True,
    )


def watch(driver: int, driver_started: int, token: str, log: str | None = None, poll: float = 0.5) -> int:
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))  # the driver cleaned up itself
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    known: dict[int, int | None] = {}  # the driver's descendants seen while it ran
    while alive(driver, driver_started):
        for pid in descendants(driver):
            if pid != os.getpid() and pid not in known:
                known[pid] = start_time(pid)
        time.sleep(poll)
    marker = f"{TOKEN_VAR}={token}"
    killed: list[int] = []
    for _ in range(3):  # a process may still be starting when the first pass runs
        killed += kill_marked(marker, known=known)
        time.sleep(1.0)
        if not _targets(marker, known):
            break
    if log:
        left = sorted(_targets(marker, known))
        with open(log, "a") as fh:
            fh.write(f"{time.time():.1f} driver {driver} ended; stopped {sorted(set(killed))}; left {left}\n")
    return 0


if __name__ == "__main__":
    sys.exit(watch(int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4] if len(sys.argv) > 4 else None))
