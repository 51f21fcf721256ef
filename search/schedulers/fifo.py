"""No early stopping (`fifo`): every trial runs until its own end."""

from __future__ import annotations

from ray.tune.schedulers import FIFOScheduler, TrialScheduler

from search.experiment import Dim
from search.plan import Plan
from search.schedulers.base import Scheduler


class Fifo(Scheduler):
    name = "fifo"
    summary = "no early stopping: every trial runs until its own end (all epochs, or its patience)"

    def build(self, plan: Plan, metric: str, mode: str, space: dict[str, Dim] | None = None) -> TrialScheduler:
        return FIFOScheduler()

    def describe(self, plan: Plan) -> str:
        return "no early stopping"
