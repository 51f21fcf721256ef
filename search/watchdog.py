"""A hung trial (a deadlock, a data loader waiting on a dead mount, a GPU that stopped answering) reports
nothing and holds its slot for ever: Ray Tune has no per-trial timeout. This callback stops a trial with
no report for HUNG_FACTOR times the usual epoch time (never before HUNG_FLOOR_S), by killing its actor:
Ray then retries it from its last checkpoint like any crashed trial (--max-failures), and a trial that
hangs again each time ends as failed. The reason is the last line of its error.txt, which trials.csv
shows, and a line is printed as it happens.
"""

from __future__ import annotations

import statistics
import time
from pathlib import Path

import ray
from ray.tune import Callback

HUNG_FACTOR = 10.0  # no report for 10x the median epoch time: hung (an epoch's time varies by 2x, not 10x)
HUNG_FLOOR_S = 600.0  # nor before 10 minutes without one: a first epoch compiles, loads data, warms caches


class HangWatch(Callback):
    def __init__(self, epoch_s_estimate: float | None = None, print_fn=print):
        self.estimate = epoch_s_estimate  # the plan's seconds per epoch, until a trial has reported one
        self.print = print_fn
        self.since: dict[str, float] = {}  # trial id -> when it started or last reported (monotonic)
        self.epoch_s: list[float] = []
        self.hung: dict[str, str] = {}  # trial id -> why it was stopped (until its error is written)

    def limit_s(self) -> float:
        usual = statistics.median(self.epoch_s[-50:]) if self.epoch_s else self.estimate
        return max(HUNG_FLOOR_S, HUNG_FACTOR * usual) if usual else HUNG_FLOOR_S * HUNG_FACTOR

    def on_trial_start(self, iteration, trials, trial, **info):
        self.since[trial.trial_id] = time.monotonic()

    on_trial_restore = on_trial_start

    def on_trial_result(self, iteration, trials, trial, result, **info):
        self.since[trial.trial_id] = time.monotonic()
        seconds = result.get("time_this_iter_s")
        if isinstance(seconds, (int, float)) and seconds > 0:
            self.epoch_s.append(float(seconds))

    def on_step_end(self, iteration, trials, **info):
        now, limit = time.monotonic(), self.limit_s()
        for trial in trials:
            started = self.since.get(trial.trial_id)
            actor = getattr(getattr(trial, "temporary_state", None), "ray_actor", None)
            if trial.status != "RUNNING" or started is None or actor is None or now - started < limit:
                continue
            why = (f"hung: no report for {now - started:.0f} s ({HUNG_FACTOR:g}x its usual epoch time, at least "
                   f"{HUNG_FLOOR_S:g} s); stopped, and retried from its last checkpoint while --max-failures allow")
            self.hung[trial.trial_id] = why
            self.since[trial.trial_id] = now  # one kill per hang: the retry gets a clock of its own
            self.print(f"trial {trial.trial_id}: {why}")
            ray.kill(actor, no_restart=True)

    def _mark(self, trial) -> None:
        """Ray has written the kill's error into error.txt: its last line says why, for trials.csv."""
        why = self.hung.pop(trial.trial_id, None)
        path = getattr(trial, "error_file", None)
        if why and path and Path(path).is_file():
            with open(path, "a") as f:
                f.write(f"\n{why}\n")

    def on_trial_recover(self, iteration, trials, trial, **info):
        self._mark(trial)

    def on_trial_error(self, iteration, trials, trial, **info):
        self._mark(trial)
