"""Asynchronous successive halving (`asha`), and `screen`: ASHA whose first rung waits for the first trials."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import pandas as pd
from ray.tune.schedulers import ASHAScheduler, TrialScheduler

from search import compat
from search.experiment import Dim
from search.plan import Plan
from search.protocol import EPOCH_CLOCK
from search.schedulers import screening
from search.schedulers.base import Scheduler


def halving_epochs(plan) -> list[int]:
    """ASHA's milestones (epochs) below the full budget: grace, grace*rf, grace*rf^2, ... (`plan`: a
    Plan or run.json's dict, both read by key). Also where a FIFO search's report judges early rankings."""
    out, r = [], int(plan["grace_epochs"])
    while r < int(plan["max_epochs"]):
        out.append(r)
        r *= int(plan["reduction_factor"])
    return out


class Asha(Scheduler):
    name = "asha"
    summary = "asynchronous successive halving: trials are compared at rungs and the worse ones stopped"
    stopped_label = "stopped by ASHA"

    def build(self, plan: Plan, metric: str, mode: str, space: dict[str, Dim] | None = None) -> TrialScheduler:
        return ASHAScheduler(time_attr=EPOCH_CLOCK, max_t=plan.max_epochs, metric=metric, mode=mode,
                             grace_period=plan.grace_epochs, reduction_factor=plan.reduction_factor)

    def carry_over(self, built: TrialScheduler, history: pd.DataFrame, metric: str, mode: str) -> None:
        """Each trial's value at each rung it reached, recorded as ASHA records it (its first result at or
        past the rung's epoch, signed so that larger is better), so a later trial is cut against them."""
        if history.empty or metric not in history:
            return
        sign = 1.0 if mode == "max" else -1.0
        rows = history.sort_values("epoch", kind="stable")
        for milestone, recorded in compat.asha_rungs(built):
            for trial_id, reached in rows[rows["epoch"] >= milestone].groupby("trial_id", sort=False):
                value = reached[metric].iloc[0]
                if isinstance(value, (int, float)) and math.isfinite(value):
                    recorded[trial_id] = sign * float(value)

    def decision_epochs(self, plan) -> list[int]:
        return halving_epochs(plan)

    def stop_reason(self, epochs: int) -> str:
        return f"ASHA stopped it after epoch {epochs}"

    def stop_reason_in(self, plan: Any) -> Callable[[int], str]:
        """ASHA stops trials at its rungs only: one that ended between them was cut by the time budget
        or an interruption (a 90-minute search's guard cut a trial at epoch 28 of rungs 10 and 20)."""
        rungs = set(self.decision_epochs(plan))
        return lambda epochs: self.stop_reason(epochs) if epochs in rungs else Scheduler.stop_reason(self, epochs)

    def describe(self, plan: Plan) -> str:
        return f"ASHA from epoch {plan.grace_epochs} (keeps 1/{plan.reduction_factor})"

    def search_epochs(self, plan: Plan) -> float:
        """If ASHA keeps 1/reduction_factor of the trials past each rung. The first trials have no
        rung to be compared against, so they run to the end."""
        first = min(plan.concurrency, plan.trials)
        epochs, alive, rung = float(first * plan.max_epochs), float(plan.trials - first), plan.grace_epochs
        done = 0
        while done < plan.max_epochs:
            step_to = min(rung, plan.max_epochs)
            epochs += alive * (step_to - done)
            done, alive, rung = step_to, alive / plan.reduction_factor, rung * plan.reduction_factor
        return epochs


class Screen(Asha):
    name = "screen"
    summary = ("ASHA whose first rung is synchronous for the first trials: they all reach it (paused there) "
               "before the best 1/reduction_factor go on, the best first; then asynchronous halving")
    checkpoints_every_epoch = True  # a trial paused at the rung resumes from that epoch's state
    SCREEN_SHARE = 0.25  # of the search's expected epochs, spent screening at the first rung

    def screen(self, plan: Plan) -> int:
        """Trials compared together at the first rung: a quarter of the search's epochs (16 trials of
        up to 10 epochs, rung at 4, 2 at once: 7), at least one more than run at once, at most all."""
        share = round(self.SCREEN_SHARE * self.search_epochs(plan) / max(1, plan.grace_epochs))
        return max(1, min(plan.trials, max(plan.concurrency + 1, share)))

    def build(self, plan: Plan, metric: str, mode: str, space: dict[str, Dim] | None = None) -> TrialScheduler:
        return screening.ScreeningASHA(self.screen(plan), time_attr=EPOCH_CLOCK, max_t=plan.max_epochs,
                                       metric=metric, mode=mode, grace_period=plan.grace_epochs,
                                       reduction_factor=plan.reduction_factor)

    def carry_over(self, built: TrialScheduler, history: pd.DataFrame, metric: str, mode: str) -> None:
        super().carry_over(built, history, metric, mode)
        built.resume_from(history)

    def limit(self, built: TrialScheduler, searcher, concurrency: int | None) -> tuple[Any, int | None]:
        return screening.ParkingLimiter(searcher, concurrency, built), None

    def relink(self, tuner, built: TrialScheduler) -> None:
        limiter = screening.parking_limiter(compat.tune_config(tuner).search_alg)
        if limiter is not None:
            limiter.scheduler = built

    def describe(self, plan: Plan) -> str:
        return (f"ASHA from epoch {plan.grace_epochs} (keeps 1/{plan.reduction_factor}), its first "
                f"{self.screen(plan)} trials compared together there")
