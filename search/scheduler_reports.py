"""Each trial scheduler's section of the report (search/schedulers/ builds and runs them; this says
what they did), so that the tuner and the progress line, which load the schedulers, load no report code.
A scheduler without a section here fails the report's test (tests/test_schedulers.py), by name."""

from __future__ import annotations

import math
from collections.abc import Callable

from search import pbt_report, schedulers, study_stats
from search.analyse import Run
from search.markdown import md_table
from search.schedulers.asha import halving_epochs


def _ranked_on(run: Run) -> str:
    metric = run.plan.rank_metric or run.objective
    return "the objective" if metric == run.objective else f"{metric} (smoother than {run.objective} early on)"


def _correlation_table(run: Run, epochs: list[int]) -> str:
    table = study_stats.rung_correlation(run, epochs, run.plan.rank_metric, run.plan.rank_mode)
    if table.empty:
        return "No epoch below the full budget to judge at, or no trials.\n"
    for kind in ("vs final", "vs next"):
        corr, n = table[f"{kind}: rank corr."], table[f"{kind}: trials"]
        table[f"{kind}: rank corr."] = ["too few trials" if math.isnan(v) else f"{v:.2f}" + (
            " (few trials: unreliable)" if k < 10 else "") for v, k in zip(corr, n, strict=True)]
    return md_table(table) + "\n"


def asha_section(run: Run) -> str:
    return "\n".join([
        "## Early stopping: did ASHA's rungs rank trials right?\n",
        f"At each rung ASHA compares trials on {_ranked_on(run)} at that epoch and stops the worse "
        f"ones. The rank correlation (Spearman) between a trial's value at the rung and its best "
        f"{run.objective} after all epochs, over the trials that ran all epochs, says whether that early "
        "ranking was right: near 1, the grace period was long enough; near 0 or below, ASHA was stopping "
        "trials on noise (raise the grace period). Few trials run all epochs on a small budget, so the "
        "objective at the next rung, over every trial that reached it, is shown too.\n",
        _correlation_table(run, schedulers.of_plan(run.plan).decision_epochs(run.plan))])


def fifo_section(run: Run) -> str:
    return "\n".join([
        "## Early stopping: would early rankings have held?\n",
        f"This search stopped no trial early. The rank correlation (Spearman) between each trial's "
        f"{_ranked_on(run)} at an early epoch and its best {run.objective} after all epochs says "
        "whether an early-stopping scheduler could have judged these trials that soon: near 1, yes; near 0, "
        "it would have stopped trials on noise.\n",
        _correlation_table(run, halving_epochs(run.plan))])  # where halving would have judged these trials


def pbt_section(run: Run) -> str:
    return pbt_report.section(run, schedulers.get("pbt").decision_epochs(run.plan))


SECTIONS: dict[str, Callable[[Run], str]] = {"asha": asha_section, "screen": asha_section, "fifo": fifo_section,
                                             "pbt": pbt_section}


def section(run: Run) -> str:
    """The report section of the scheduler the run's plan names."""
    name = schedulers.of_plan(run.plan).name
    if name not in SECTIONS:
        raise KeyError(f"scheduler {name!r} has no report section: add one to search/scheduler_reports.py SECTIONS")
    return SECTIONS[name](run)
