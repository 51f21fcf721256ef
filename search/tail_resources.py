"""The end of a search on CPUs: when the last trials run and slots sit idle, they use the idle CPUs.

With 2 trials at once, a search's last trial usually runs alone for a while: one CPU trains, the
other idles (about 10% of a default CPU search's slot time, `benchmarks/tune_overhead.py`). Once
every trial has been created and none is pending, the driver (search.progress) writes the number
of torch threads each running trial may use into the run folder; each trial reads it after every
epoch and sets its threads. No restart: Ray Tune's ResourceChangingScheduler would restart the
trial from its checkpoint and needs reuse_actors=False, which costs a worker start per trial.

Only where that is safe: CPU trials (a lone GPU trial has its whole GPU already), on a Ray instance
this run started itself on one machine (no other job can claim the idle CPUs, and the file is
visible to every trial).
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

from datasets.files import atomic_write

THREADS_FILE = "tail_threads.json"  # in the run folder: {"threads": N}


def tail_threads(statuses: list[str], total_trials: int, cpus_per_trial: float, concurrency: int) -> int | None:
    """Threads per running trial once the search is in its tail, else None. `statuses` are the
    Ray statuses (PENDING, RUNNING, TERMINATED, ERROR, ...) of every trial created so far."""
    if len(statuses) < total_trials or "PENDING" in statuses or "PAUSED" in statuses:
        return None  # more trials to come (or paused ones to go on, under PBT): they need the slots
    running = statuses.count("RUNNING")
    if running == 0:
        return None
    threads = math.floor(cpus_per_trial * concurrency / running)
    return threads if threads > int(cpus_per_trial) else None


def write_threads(run_dir: Path, threads: int) -> None:
    atomic_write(Path(run_dir) / THREADS_FILE, lambda f: f.write(json.dumps({"threads": threads}).encode()))


def clear(run_dir: Path) -> None:
    """A resumed search starts without the last session's tail."""
    (Path(run_dir) / THREADS_FILE).unlink(missing_ok=True)


def read_threads(run_dir: str | os.PathLike) -> int | None:
    """In a trial: the threads the driver allows now, or None (keep the CPUs Ray gave the trial)."""
    try:
        threads = json.loads((Path(run_dir) / THREADS_FILE).read_text())["threads"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return threads if isinstance(threads, int) and threads >= 1 else None
