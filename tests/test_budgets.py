"""Named budgets (`--budget NAME`): the plan takes every number from the named budget, options typed on
the command line still win, and an unknown name is refused."""

from __future__ import annotations

import pytest

from search.config import UserError
from search.experiments import digit_pairs, shapes
from search.plan import CPU_SEARCH_SUBSET, Hardware, make_plan

LAPTOP = Hardware(cpus=2, gpus=0)


def plan(budget=None, exp=shapes.EXPERIMENT, **options):
    given = dict(trials=None, max_epochs=None, time_budget_min=None, concurrency=None, cpus_per_trial=None,
                 gpus_per_trial=None, smoke=False)
    return make_plan(exp, LAPTOP, budget_name=budget, **{**given, **options})


def test_the_90_minute_budget_sizes_the_whole_run():
    named, default = plan("90min"), plan()
    budget = shapes.EXPERIMENT.budgets["90min"]
    assert (named.trials, named.max_epochs, named.grace_epochs) == (budget.trials, budget.max_epochs,
                                                                     budget.grace_epochs)
    assert (named.retrain_seeds, named.retrain_epochs) == (3, budget.max_epochs)  # retrained as searched
    assert named.subset is None and default.subset == CPU_SEARCH_SUBSET  # trials see the whole split
    assert named.time_budget_min == budget.time_budget_min and default.time_budget_min is None
    assert (named.rank_metric, named.rank_mode) == ("val_acc", "max")  # joint_decode moves top-1, not the NLL
    assert (default.rank_metric, default.rank_mode) == ("val_rank_loss", "min")
    assert {"tta", "joint_decode"} <= set(named.searched) and "tta" not in default.searched
    assert named.budget == "90min" and default.budget is None and named.why == budget.why


def test_options_typed_beside_a_budget_win():
    p = plan("90min", time_budget_min=30.0, rank_on="smooth", trials=5, max_epochs=12)
    assert (p.time_budget_min, p.rank_metric, p.trials, p.max_epochs) == (30.0, "val_rank_loss", 5, 12)
    # the budget's own retraining horizon, not the typed search horizon
    assert p.retrain_epochs == shapes.EXPERIMENT.budgets["90min"].retrain_epochs != 12
    assert plan("90min", smoke=True).time_budget_min is None  # a smoke run is a smoke run


@pytest.mark.parametrize("exp, name, message", [
    (shapes.EXPERIMENT, "nosuch", "--budget nosuch: shapes has the budgets 90min"),
    (digit_pairs.EXPERIMENT, "90min", "digit-pairs has no named budget; drop --budget"),
])
def test_an_unknown_budget_is_refused_naming_the_known_ones(exp, name, message):
    with pytest.raises(UserError, match=message):
        plan(name, exp=exp)


@pytest.mark.parametrize("budget_s, expected", [(None, "about 55.0 min left"),
                                                (600.0, "5.0 min left in the time budget")])
def test_the_status_line_never_promises_more_than_the_time_budget_left(tmp_path, budget_s, expected):
    """Two long first trials make trials-left x time-per-trial overshoot; Tune ends the search at its budget."""
    from search import schedulers
    from search.progress import Progress

    progress = Progress(tmp_path, tmp_path, {"epochs": 30}, ["lr"], "val_acc", "max", 24, schedulers.get("asha"),
                        print_fn=lambda *a: None, time_budget_s=budget_s)
    progress.ended, progress.start = 2, progress.start - 300  # 2 trials ended after 5 minutes
    assert progress.status_line([]).endswith(expected)
