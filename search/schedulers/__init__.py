"""Trial schedulers as named strategies: `--scheduler NAME` picks one from this registry.

A scheduler decides, while a search runs, which trials go on. Each entry builds Ray Tune's
scheduler from the run's plan, declares the epochs at which it judges trials (for the plan line,
the time estimate and the report), and words why it stopped a trial; its report section is
search/scheduler_reports.py's. One module per strategy: asha.py (asha, screen), fifo.py, pbt.py.
Nothing else in the project names a scheduler. Two flags mark schedulers that do more than stop,
as Population Based Training (`pbt`) does: `proposes_configs` (it samples and mutates configs
itself: Ray refuses a search algorithm beside it, so the tuner leaves TPE out) and
`changes_config` (a trial's config may differ from one epoch to the next: history.csv keeps the
config of each epoch, and retraining replays the best trial's schedule).
"""

from __future__ import annotations

import sys
from typing import Any

from search.config import UserError
from search.schedulers import screening
from search.schedulers.asha import Asha, Screen
from search.schedulers.base import Scheduler
from search.schedulers.fifo import Fifo
from search.schedulers.pbt import (
    Pbt,
    _PopulationBasedTraining,  # noqa: F401  (below)
)

# Where runs interrupted before this package existed pickled Ray's state (Tuner.restore unpickles it):
# search.screening's limiter and scheduler, search.schedulers._PopulationBasedTraining.
sys.modules.setdefault("search.screening", screening)

__all__ = ["DEFAULT", "REGISTRY", "Asha", "Fifo", "Pbt", "Scheduler", "Screen", "get", "names", "of_plan"]

REGISTRY: dict[str, Scheduler] = {s.name: s for s in (Asha(), Fifo(), Pbt(), Screen())}
DEFAULT = "asha"


def names() -> list[str]:
    return list(REGISTRY)


def get(name: str) -> Scheduler:
    if name not in REGISTRY:
        raise UserError(f"--scheduler {name}: unknown; known: {', '.join(REGISTRY)}")
    return REGISTRY[name]


def of_plan(plan: Any) -> Scheduler:
    """The scheduler a run's plan names (runs written before the registry used ASHA)."""
    return get((plan.get("scheduler") if isinstance(plan, dict) else plan.scheduler) or DEFAULT)

