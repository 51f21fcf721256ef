"""What a person sees during a search: a line per ended trial, a status line every 30 s, and the
tables (trials.csv, history.csv, best_config.json) rewritten as each trial ends."""

from __future__ import annotations

import errno
import functools
import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pandas as pd
from ray.tune import Callback

from search import ray_state, tables, tail_resources
from search.config import format_config
from search.io import write_csv, write_json
from search.protocol import DISK_FULL, error_line, plain, trial_config, trial_status
from search.schedulers import Scheduler
from search.trial import STATE_FILE

STATUS_EVERY_S = 30.0


def _fmt_minutes(seconds: float) -> str:
    return f"{seconds / 60:.1f} min" if seconds >= 60 else f"{seconds:.0f} s"


class Progress(Callback):
    def __init__(self, run_dir: Path, tune_dir: Path, base: dict[str, Any], searched: list[str],
                 objective: str, mode: str, total_trials: int, scheduler: Scheduler, print_fn=None,
                 tail: tuple[float, int] | None = None, earlier: tuple[pd.DataFrame, pd.DataFrame] | None = None,
                 time_budget_s: float | None = None, stop_reason: Callable[[int], str] | None = None):
        self.run_dir, self.tune_dir, self.base, self.scheduler = run_dir, tune_dir, base, scheduler
        self.stop_reason = stop_reason or scheduler.stop_reason  # (the run's: Scheduler.stop_reason_in(plan))
        self.searched, self.objective, self.mode = searched, objective, mode
        # flush: progress must show up promptly when the output goes to a file (nohup, CI logs)
        self.total, self.print = total_trials, print_fn or functools.partial(print, flush=True)
        self.start = time.monotonic()
        self.time_budget_s = time_budget_s  # Tune ends the search this long after the start (--time-budget)
        self.last_status = self.start
        self.running: set[str] = set()
        # a grown search: the (trials, history) of its earlier rounds, which the tables keep at their head
        self.earlier = earlier or (pd.DataFrame(), pd.DataFrame())
        self.ended = self.ended_before = len(self.earlier[0])
        best = tables.best_trial(self.earlier[0], objective, mode)  # the status line's best so far
        self.best: float | None = None if best is None else float(best[f"best_{objective}"])
        self.latest: dict[str, dict[str, Any]] = {}  # newest result per trial, maybe not on disk yet
        self.trial_best: dict[str, float] = {}
        self.staging: Path | None = None
        self.tail, self.tail_threads = tail, None  # (CPUs per trial, concurrency): see search/tail_resources.py

    # ---------------------------------------------------------------- Ray's hooks

    def on_trial_start(self, iteration, trials, trial, **info):
        self.running.add(trial.trial_id)
        if getattr(trial, "local_experiment_path", None):  # where Ray writes the trial folders first
            staging = Path(trial.local_experiment_path)
            if staging != self.staging:  # a --resume finds the whole state there after a kill (search/ray_state.py)
                self.staging = staging
                ray_state.record_staging(self.run_dir, staging)

    def on_trial_result(self, iteration, trials, trial, result, **info):
        self._share_idle_cpus(trials)
        self.latest[trial.trial_id] = {k: v for k, v in result.items() if k != "config"}
        value = result.get(self.objective)
        if isinstance(value, (int, float)) and math.isfinite(value):
            old = self.trial_best.get(trial.trial_id)
            if old is None or (value > old if self.mode == "max" else value < old):
                self.trial_best[trial.trial_id] = value
            if self.best is None or (value > self.best if self.mode == "max" else value < self.best):
                self.best = value

    def on_trial_complete(self, iteration, trials, trial, **info):
        self._ended(trial, error=False)
        if not self.scheduler.clones_checkpoints:  # else a paused trial may still be restored from its weights
            drop_weights(trial)

    def on_trial_error(self, iteration, trials, trial, **info):
        self._ended(trial, error=True)
        if not self.scheduler.clones_checkpoints:  # its retries are spent, and --resume does not rerun it
            drop_weights(trial)
        if DISK_FULL.search(_error_line(trial)):  # the next trials would fail the same way: stop, resumable
            raise OSError(errno.ENOSPC, "No space left on device", f"trial {trial.trial_id}'s checkpoint folder")

    def on_step_end(self, iteration, trials, **info):
        now = time.monotonic()
        if now - self.last_status >= STATUS_EVERY_S:
            self.last_status = now
            self.print(self.status_line(trials))

    def on_experiment_end(self, trials, **info):
        # Tune's time budget ends the trials still running without a completion callback for each, but
        # marks them TERMINATED: they have ended (an interrupted search leaves them RUNNING, to resume).
        ended = [t for t in trials if t.status in ("TERMINATED", "ERROR")]
        self.running -= {t.trial_id for t in ended}
        for trial in ended:  # the cut ones (and under PBT every ended one) still hold their weights (155 MB each)
            drop_weights(trial)
        self.write_tables()

    # ---------------------------------------------------------------- ours

    def _ended(self, trial, error: bool) -> None:
        """One line from what the driver holds (Ray may not have written the trial's files yet)."""
        self.running.discard(trial.trial_id)
        self.ended += 1
        self.write_tables()
        last = self.latest.get(trial.trial_id, {})
        epochs = int(last.get("epoch", 0))
        status, why = trial_status(last, self.base["epochs"], self.stop_reason,
                                   failed_with=_error_line(trial) if error else None)
        best = self.trial_best.get(trial.trial_id)
        metric = f"{self.objective} {best:.4f}" if best is not None else "no metric"
        config = {**self.base, **trial.config}
        self.print(f"[{self.ended}/{self.total}] {status:<9} {trial.trial_id}  {metric}  {epochs} epochs  "
                   f"{format_config(config, self.searched)}  ({why})")

    def _share_idle_cpus(self, trials) -> None:
        if self.tail is None:
            return
        threads = tail_resources.tail_threads([t.status for t in trials], self.total, *self.tail)
        if threads is not None and threads != self.tail_threads:
            tail_resources.write_threads(self.run_dir, threads)
            self.tail_threads = threads

    def status_line(self, trials) -> str:
        counts = {s: 0 for s in ("running", "pending", "paused", "ended")}
        for t in trials:
            counts[t.status.lower() if t.status in ("RUNNING", "PENDING", "PAUSED") else "ended"] += 1
        elapsed = time.monotonic() - self.start
        left = ""
        if self.ended > self.ended_before:
            per_trial = elapsed / (self.ended - self.ended_before)
            estimate = per_trial * max(0, self.total - self.ended)
            if self.time_budget_s is not None and estimate > self.time_budget_s - elapsed:
                left = f", {_fmt_minutes(max(0.0, self.time_budget_s - elapsed))} left in the time budget"
            else:
                left = f", about {_fmt_minutes(estimate)} left"
        best = f"{self.best:.4f}" if self.best is not None else "-"
        paused = f", {counts['paused']} paused" if counts["paused"] else ""  # (--scheduler screen, pbt)
        return (f"status: {self.ended}/{self.total} ended, {counts['running']} running{paused}; "
                f"best {self.objective} {best}; {_fmt_minutes(elapsed)} elapsed{left}")

    def write_tables(self):
        trials, history = tables.collect(self.tune_dir, self.base, self.objective, self.mode,
                                         self.stop_reason, self.running, self.latest, self.staging)
        if not self.earlier[0].empty:
            trials = pd.concat([self.earlier[0], trials], ignore_index=True)
            history = pd.concat([self.earlier[1], history], ignore_index=True)
        if not trials.empty:
            write_csv(self.run_dir / "trials.csv", trials)
            write_csv(self.run_dir / "history.csv", history)
            best = tables.best_trial(trials, self.objective, self.mode)
            if best is not None:
                config = trial_config(best, self.base)
                write_json(self.run_dir / "best_config.json", {
                    "trial_id": best["trial_id"], self.objective: plain(best[f"best_{self.objective}"]),
                    "epoch": plain(best["best_epoch"]), "config": config})
        return trials


def drop_weights(trial) -> None:
    """An ended trial (completed, stopped or failed) is never resumed (nor cloned: PBT clones running
    trials only), so its checkpoints' weights go (155 MB each for shapes: a CPU default run left
    2.4 GB, 60 GPU trials would leave 9 GB); their history.json stays, as search/tables.py reads it.
    Retraining trains afresh from the configs."""
    folder = Path(getattr(getattr(trial, "storage", None), "trial_fs_path", "") or "")
    if not folder.is_absolute() or not folder.is_dir():
        return  # a remote storage (URI): left as Ray wrote it
    for weights in folder.glob(f"checkpoint_*/{STATE_FILE}"):
        weights.unlink(missing_ok=True)


def _error_line(trial) -> str:
    """The exception line of a failed trial (Ray keeps the traceback in the trial's error file)."""
    path = getattr(trial, "error_file", None)
    line = error_line(path)
    return f"{line}; traceback in {path}" if line else "error (see the trial's error.txt)"
