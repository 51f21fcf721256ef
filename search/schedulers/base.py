"""What every trial scheduler of the registry (search/schedulers/__init__.py) declares."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pandas as pd
from ray.tune.schedulers import TrialScheduler

from search.experiment import Dim
from search.plan import Plan
from search.trial import CHECKPOINT_SHARE


class Scheduler:
    name = ""
    summary = ""
    proposes_configs = False  # True: it proposes configs itself, and Ray refuses a searcher beside it
    changes_config = False  # True: a trial's hyperparameters may change between epochs
    # True: a paused trial may be restored from another trial's checkpoint (PBT's exploit), so an ended
    # trial's weights stay until the search ends (search/progress.py drop_weights)
    clones_checkpoints = False
    stopped_label = "stopped early"  # legend of the trials it stopped, in every plot
    # True: it may clone or pause a trial at any epoch, so each epoch writes the trial's state (else
    # search/trial.py's CheckpointClock spaces the writes)
    checkpoints_every_epoch = False

    def build(self, plan: Plan, metric: str, mode: str, space: dict[str, Dim] | None = None) -> TrialScheduler:
        """Ray's scheduler, ranking trials on `metric` (the plan's ranking metric); `space` is the
        searched space (a scheduler that changes configs mutates within it)."""
        raise NotImplementedError

    def carry_over(self, built: TrialScheduler, history: pd.DataFrame, metric: str, mode: str) -> None:
        """Give `built` (from `build`) what the trials in `history` (history.csv's rows) reported before
        it existed: Ray keeps a scheduler's state in memory only, so a resumed search (Tuner.restore
        restores the searcher, not the scheduler) and a grown one would otherwise judge their new
        results against nothing. A scheduler without state keeps this."""

    def limit(self, built: TrialScheduler, searcher, concurrency: int | None) -> tuple[Any, int | None]:
        """(the search algorithm, max_concurrent_trials) for TuneConfig: Ray's own concurrency limit
        unless the scheduler parks trials that must not count against it."""
        return searcher, concurrency

    def relink(self, tuner, built: TrialScheduler) -> None:
        """After Tuner.restore gave the run a new `built` scheduler: reconnect what the restored
        searcher shares with it (nothing, unless the scheduler parks trials)."""

    @property
    def checkpoint_share(self) -> float | None:
        """run_trial's `checkpoint_share`: None (a checkpoint every epoch) where the scheduler needs one."""
        return None if self.checkpoints_every_epoch else CHECKPOINT_SHARE

    def checkpoints_to_keep(self, plan: Plan) -> int:
        """Checkpoints Ray keeps per trial: the latest only (a resumed or retried trial needs no
        other; each holds the model and optimiser, 155 MB for shapes)."""
        return 1

    def decision_epochs(self, plan: Any) -> list[int]:
        """Epochs below the full budget at which it may stop (or change) a trial."""
        return []

    def stop_reason(self, epochs: int) -> str:
        """Why a trial ended before its last epoch. A scheduler that stops nothing itself (FIFO, PBT)
        keeps this: such a trial was ended by the time budget or an interruption."""
        return f"stopped after epoch {epochs} (time budget or interruption)"

    def stop_reason_in(self, plan: Any) -> Callable[[int], str]:
        """`stop_reason` for one run's plan (a Plan or run.json's dict)."""
        return self.stop_reason

    def describe(self, plan: Plan) -> str:
        """Its part of the plan line, e.g. 'no early stopping'."""
        raise NotImplementedError

    def search_epochs(self, plan: Plan) -> float:
        """Epochs the whole search is expected to train (for the time estimate)."""
        return float(plan.trials * plan.max_epochs)
