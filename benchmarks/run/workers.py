"""Worker process pools that never outlive the command that started them (`modebench bench`,
`modebench claims`).

A driver killed with SIGKILL runs no cleanup code, so each worker watches its parent itself:

- On Linux the worker asks the kernel to SIGKILL it when its parent dies (prctl
  PR_SET_PDEATHSIG). The kernel delivers it at once, whatever the worker is doing (a long
  torch op that holds the GIL, a blocking read), with nothing to poll.
- Everywhere, a daemon thread also checks once a second that the parent is still the driver:
  the fallback where prctl does not exist, and the guard for the case PDEATHSIG is tied to
  (it fires when the *thread* that spawned the worker ends; `ProcessPoolExecutor` spawns from
  the thread that calls `submit`, here the driver's main thread, which ends with the process).
- Before either, the worker checks that its parent is still the driver: it may have died
  between the spawn and the prctl call.

SIGKILL rather than SIGTERM, which a library may catch or ignore: every write to the results
store is atomic (temporary file + rename) and a run resumes from its last checkpoint, so a
worker killed at any instant loses at most the updates since that checkpoint; and the run
folder's writer lock (benchmarks/store.py, RunStore.writing) is released by the kernel when
the worker dies, so a rerun can take the run over within the same second.
"""

from __future__ import annotations

import ctypes
import json
import math
import multiprocessing
import os
import signal
import sys
import threading
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

PR_SET_PDEATHSIG = 1  # <linux/prctl.h>
PARENT_POLL_S = 1.0


def worker_pool(jobs: int, threads: int) -> ProcessPoolExecutor:
    """`jobs` spawned worker processes of `threads` torch threads each, that die with this process."""
    return ProcessPoolExecutor(max_workers=jobs, mp_context=multiprocessing.get_context("spawn"),
                               initializer=_start_worker, initargs=(os.getpid(), threads))


def stop_workers(pool: ProcessPoolExecutor) -> None:
    """End the pool's workers now (an interrupted driver): stored results stay, runs resume."""
    for process in list((pool._processes or {}).values()):  # the executor has no public way to stop busy workers
        process.terminate()
    pool.shutdown(wait=False, cancel_futures=True)


M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3  # <malloc.h> mallopt parameters


def keep_freed_memory() -> bool:
    """Make glibc's malloc serve buffers below 256 MiB from the heap and keep up to 1 GiB of freed
    heap for reuse, instead of mapping each large buffer anew and unmapping it on free. A training
    update allocates and frees the same multi-MB activation buffers every step, more so with seeds
    stacked; with the default, adaptive thresholds every such buffer comes back as fresh pages.
    Measured on 2 cores, one thread (CPU time per update): DROL toy S = 3 11.7 -> 10.0 ms (about
    1,500 -> 0 minor page faults per update; the trim threshold alone made it worse); LOM at paper
    sizes S = 3 402 ms with 77,000 faults per update under 64 MiB / 256 MiB thresholds, 293 ms
    with 48 faults under these (single seed 99-105 ms either way). The cost: a process may hold
    up to 1 GiB of freed memory. Process-wide; called at the start of every command and worker.
    Returns whether it applied (False off glibc)."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return False
    return bool(mallopt(M_TRIM_THRESHOLD, 1 << 30)) and bool(mallopt(M_MMAP_THRESHOLD, 256 << 20))


def _start_worker(driver: int, threads: int) -> None:
    die_with_parent(driver)
    keep_freed_memory()
    import torch

    torch.set_num_threads(threads)


def die_with_parent(driver: int) -> None:
    """Make this process end (SIGKILL) when `driver`, its parent, ends."""
    if sys.platform.startswith("linux"):
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) != 0:
            raise OSError(ctypes.get_errno(), "prctl(PR_SET_PDEATHSIG) failed")
    if os.getppid() != driver:  # the driver died before the prctl call took effect
        os.kill(os.getpid(), signal.SIGKILL)
    threading.Thread(target=_watch_parent, args=(driver,), name="watch-driver", daemon=True).start()


def _watch_parent(driver: int) -> None:
    while os.getppid() == driver:  # an orphan is re-parented to init or a subreaper
        time.sleep(PARENT_POLL_S)
    os.kill(os.getpid(), signal.SIGKILL)


PROGRESS_POINTS = 20  # metrics lines per run that a driver can show progress from


def resolve_watched(*args, **kwargs):
    """`resolve_run(*args, **kwargs)` writing its training metrics about PROGRESS_POINTS times, for
    a driver that watches it from another process (JobWatch). The logging interval is no part of a
    run's identity and leaves its numbers unchanged (GEM, two seeds seed-batched: bit-identical
    weights at log_every 5 and 1000); the run's length is the protocol's, so it resolves twice."""
    from modebench.benchmarks.run.spec import resolve_run

    spec = resolve_run(*args, **kwargs)
    every = max(1, min(spec.log_every, spec.steps // PROGRESS_POINTS))
    return spec if every == spec.log_every else resolve_run(*args, **kwargs, log_every=every)


class JobWatch:
    """What a driver shows of jobs running in other processes (`bench` workers): each job's
    progress, read from the metrics.jsonl its first run appends every logging interval (the
    store is the one channel every worker already writes, so nothing else crosses processes).

    `jobs`: one (label, metrics.jsonl path, total updates) per job, in submission order."""

    def __init__(self, jobs: list[tuple[str, Path, int]]):
        self.jobs = jobs
        self.finished: set[int] = set()
        self._seen: dict[int, tuple[int, float, int]] = {}  # job -> (step, updates/s, file size) at the last read

    def _last_step(self, index: int) -> tuple[int, float]:
        """(updates done, updates/s) of a job from the last complete line of its metrics file."""
        _, path, _ = self.jobs[index]
        try:
            size = path.stat().st_size
        except OSError:
            return 0, math.nan
        if index in self._seen and self._seen[index][2] == size:
            return self._seen[index][:2]
        with open(path, "rb") as fh:
            fh.seek(max(0, size - 4096))
            lines = fh.read().decode("utf-8", "replace").splitlines()
        step, rate = 0, math.nan
        for line in reversed(lines):
            try:
                values = json.loads(line)
            except ValueError:  # the start of the window, or a line being written
                continue
            if isinstance(values, dict) and "step" in values:
                step = int(values["step"])
                rate = float(values.get("time/updates_per_second", math.nan))
                break
        self._seen[index] = (step, rate, size)
        return step, rate

    def snapshot(self) -> tuple[int, int, list[str]]:
        """(updates done over all jobs, updates in all, one 'method x task step/total, N upd/s' per job under way)."""
        done = total = 0
        running = []
        for index, (label, _, steps) in enumerate(self.jobs):
            total += steps
            if index in self.finished:
                done += steps
                continue
            step, rate = self._last_step(index)
            done += min(step, steps)
            if 0 < step < steps:
                running.append(f"{label} {step}/{steps}" + ("" if math.isnan(rate) else f" {rate:.0f} upd/s"))
        return done, total, running

    def line(self, started: float, done_at_start: int) -> str:
        """'N of M updates (P%), ETA ...; under way: ...': one progress line (ETA from the rate since `started`)."""
        done, total, running = self.snapshot()
        gained, elapsed = done - done_at_start, time.monotonic() - started
        eta = f", ETA {format_seconds(elapsed * (total - done) / gained)}" if gained > 0 and done < total else ""
        under_way = f"; under way: {'; '.join(running)}" if running else ""
        return f"{done} of {total} updates ({100 * done / max(total, 1):.0f}%){eta}{under_way}"


def format_seconds(seconds: float) -> str:
    return f"{seconds / 3600:.1f} h" if seconds >= 5400 else f"{seconds / 60:.0f} min" if seconds >= 90 else f"{seconds:.0f} s"


class ProgressLines:
    """A daemon thread that prints `watch.line(...)` every `every` seconds (to stderr) until stopped:
    progress for a driver whose own output is someone else's (a sweep under Ray Tune)."""

    def __init__(self, watch: JobWatch, prefix: str, every: float = 30.0):
        self.watch, self.prefix, self.every = watch, prefix, every
        self.stop_event = threading.Event()
        self.thread = threading.Thread(target=self._run, name="progress-lines", daemon=True)

    def _run(self) -> None:
        started, done_at_start = time.monotonic(), self.watch.snapshot()[0]
        while not self.stop_event.wait(self.every):
            print(f"{self.prefix}: {self.watch.line(started, done_at_start)}", file=sys.stderr, flush=True)

    def start(self) -> None:
        self.thread.start()

    def stop(self) -> None:
        self.stop_event.set()
        self.thread.join(timeout=5)

