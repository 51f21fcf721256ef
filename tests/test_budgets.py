"""Named budgets (`--budget NAME`): the plan takes every number from the named budget, options typed on
the command line still win, and an unknown name is refused."""

from __future__ import annotations

import pytest

from search import experiments
from search.config import UserError
from search.experiments import digit_pairs, shapes
from search.plan import (
    CPU_SEARCH_SUBSET,
    OUTSIDE_MIN,
    RUN_OVERHEAD_S,
    SIDE_BY_SIDE,
    SLOWER_OF_A_WAVE,
    Hardware,
    estimate_minutes,
    fitted_retrain_epochs,
    make_plan,
    retrain_minutes_left,
    split_total,
)

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
    assert named.total_min == budget.total_minutes and default.total_min is None  # split once the speed is timed
    assert (named.rank_metric, named.rank_mode) == (default.rank_metric, default.rank_mode) == ("val_rank_loss", "min")
    assert named.searched == default.searched == ["lr", "schedule", "dropout", "weight_decay", "lambda_cnt"]
    assert named.choose_decoding and not default.choose_decoding  # the decoding is chosen per trial, not searched
    gpu = make_plan(shapes.EXPERIMENT, Hardware(cpus=8, gpus=1), trials=None, max_epochs=None, time_budget_min=None,
                    concurrency=None, cpus_per_trial=None, gpus_per_trial=None, smoke=False)
    assert gpu.choose_decoding and set(gpu.searched) == set(shapes.EXPERIMENT.space) - {"tta", "joint_decode"}
    assert named.budget == "90min" and default.budget is None and named.why == budget.why


@pytest.mark.parametrize("options", [dict(full_space=True), dict(smoke=True)])
def test_a_budget_that_chooses_the_decoding_never_also_searches_it(options):
    """--full-space would search every key: the decoding keys stay chosen per trial, not searched too;
    a smoke run is a smoke run (its whole space, nothing chosen)."""
    p = plan("90min", **options)
    decoding = set(shapes.EXPERIMENT.decoding.keys)
    if options.get("smoke"):
        assert not p.choose_decoding and p.searched is None
    else:
        assert p.choose_decoding and p.searched and not decoding & set(p.searched)
        assert set(p.searched) == set(shapes.EXPERIMENT.space) - decoding


def test_retrain_epochs_fitted_to_minutes():
    # 6 runs, 2 at once: 3 waves; an epoch of 9,000 images at 2 ms each is 18 s, a wave's slower run's longer
    fit = dict(planned=40, seconds_per_image=0.002, images=9000, runs=6, concurrency=2)
    epoch = 18 * SLOWER_OF_A_WAVE  # seconds of one epoch of a wave
    assert fitted_retrain_epochs(minutes=60, **fit) == 40  # 40 x 3 x 19 s + overhead fits: never more than asked
    assert fitted_retrain_epochs(minutes=20, **fit) == (20 * 60 - 3 * RUN_OVERHEAD_S) // (3 * epoch) == 19
    assert fitted_retrain_epochs(minutes=20, **{**fit, "concurrency": 3}) == (1200 - 2 * RUN_OVERHEAD_S) // (2 * epoch)
    assert fitted_retrain_epochs(minutes=20, **{**fit, "runs": 5}) == 19  # 5 runs, 2 at once: 3 waves too
    assert fitted_retrain_epochs(minutes=10, **{**fit, "runs": 1}) == (600 - RUN_OVERHEAD_S) // 18  # alone: its pace
    assert fitted_retrain_epochs(minutes=0.01, **fit) == 1  # at least one epoch, however short the time


def timed(p, images_per_second):
    split_total(p, images_per_second, retrain_images=9000)
    return p


def test_the_90_minute_budget_sets_the_retraining_aside_first():
    runs = (plan("90min").retrain_top_k + 1) * plan("90min").retrain_seeds
    # Timed alone before the search: an Intel Xeon without bf16 (fp32) ~413 images/s, an AMD EPYC with it ~650.
    slow, fast = timed(plan("90min"), 413.0), timed(plan("90min"), 650.0)
    for p, ips in ((slow, 413.0), (fast, 650.0)):
        assert p.time_budget_min + p.retrain_minutes + OUTSIDE_MIN == pytest.approx(p.total_min)
        # the retraining's minutes hold all its epochs at the speed two trials side by side train
        per_image = 1 / (ips * SIDE_BY_SIDE)
        assert fitted_retrain_epochs(40, p.retrain_minutes, per_image, 9000, runs, p.concurrency) == p.retrain_epochs
        assert fitted_retrain_epochs(40, p.retrain_minutes - 1.0, per_image, 9000, runs, p.concurrency) < 40
    assert 30 < slow.time_budget_min < 40 < 50 < fast.time_budget_min  # the slower machine searches less
    # the estimate counts the split, not what an untimed search would take
    assert estimate_minutes(slow, 8000, 1000, 9000, 413.0, search_epochs=1000) == pytest.approx(
        slow.total_min - OUTSIDE_MIN, abs=0.1)
    # once the search has ended, the retraining gets what it left of the total, never less than set aside
    assert retrain_minutes_left(slow, search_wall_s=slow.time_budget_min * 60 + 30) == slow.retrain_minutes
    assert retrain_minutes_left(slow, search_wall_s=20 * 60) == pytest.approx(slow.total_min - OUTSIDE_MIN - 20)
    assert retrain_minutes_left(plan("90min", retrain_minutes=20), search_wall_s=60) == 20  # no total: as typed
    # so slow that the retraining would take the whole run: the search keeps a third, the retraining is cut
    crawl = timed(plan("90min"), 100.0)
    assert crawl.time_budget_min == pytest.approx(crawl.total_min / 3, abs=0.1)
    assert fitted_retrain_epochs(40, crawl.retrain_minutes, 1 / (100 * SIDE_BY_SIDE), 9000, runs, 2) < 40
    # typed minutes or epochs are kept as typed: nothing to split
    for typed in (dict(time_budget_min=30.0), dict(retrain_minutes=20), dict(retrain_epochs=30)):
        p = timed(plan("90min", **typed), 413.0)
        assert p.total_min is None and p.time_budget_min == typed.get("time_budget_min")
    assert timed(plan(), 413.0).time_budget_min is None  # the default budget has no total
    assert plan("90min", retrain_epochs=30, retrain_minutes=20).retrain_minutes == 20
    with pytest.raises(UserError, match="--retrain-minutes"):
        plan("90min", retrain_minutes=0)


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


# ---------------------------------------------------------------- a budget's values for the tuned configs only


def record_with_trials(tmp_path, p, pinned=None):
    """A run folder whose search tried the warm start (best) and one other config; its run.json's record."""
    import pandas as pd

    from search.record import RunRecord

    exp = shapes.EXPERIMENT
    searched = list(p.searched)
    pinned = pinned or {}
    base = {**exp.defaults, **pinned, **{k: v for k, v in p.tuned_with.items() if k not in pinned},
            "epochs": p.max_epochs, "seed": 0}
    warm = {**base, "weight_decay": 1e-6}  # weight_decay 0 moved into the log range, as the search runs it
    pd.DataFrame([{**warm, "trial_id": "w", "status": "completed", "best_val_acc": 0.5},
                  {**warm, "lr": 3e-3, "trial_id": "o", "status": "completed", "best_val_acc": 0.4}]
                 ).to_csv(tmp_path / "trials.csv", index=False)
    return RunRecord(experiment="shapes", name="r", plan=p, searched=searched, base_config=base, pinned=pinned)


def test_the_90_minute_budget_trains_the_tuned_configs_with_generated_images_and_the_baseline_without(tmp_path):
    """Its warm-start trial is the baseline's values plus generated images, so it is a tuned config like any
    other: retrained beside the baseline when it wins, never read as "the search kept the baseline"."""
    from search import analyse, retraining
    from search.io import read_csv
    from search.stages import search_base

    named = plan("90min")
    generated = named.tuned_with["generated"]
    assert set(named.tuned_with) == {"generated"} and generated > 0
    assert plan().tuned_with == {} and plan("90min", smoke=True).tuned_with == {}
    defaults = dict(shapes.EXPERIMENT.defaults)
    assert search_base(defaults, {}, named, 7) == {**defaults, "generated": generated, "epochs": named.max_epochs,
                                                "seed": 7}
    assert search_base({**defaults, "generated": 0.5}, {"generated": 0.5}, named, 7)["generated"] == 0.5  # --set wins
    assert search_base(defaults, {}, plan(), 7)["generated"] == 0.0  # the default budget trains on real images
    record = record_with_trials(tmp_path, named)
    assert record.tuned_with == {"generated": generated} and not record.warm_start_is_baseline
    jobs = retraining.plan_jobs(tmp_path, record, shapes.EXPERIMENT, top_k=1, seeds=1, epochs=3)
    by_label = {job.label: job for job in jobs}
    assert by_label["baseline"].config["generated"] == 0.0  # as the seeds ran it
    assert by_label["top1"].trial_id == "w" and by_label["top1"].config["generated"] == generated
    assert not analyse.kept_baseline(read_csv(tmp_path / "trials.csv"), record)


def test_pinning_a_budget_value_applies_it_to_the_baseline_too(tmp_path):
    """--set generated=0.5 pins it for every config, the baseline's included: the warm start is the baseline
    again, so it is left out of the tuned configs and its win means keeping the baseline."""
    from search import analyse, retraining
    from search.io import read_csv

    record = record_with_trials(tmp_path, plan("90min"), pinned={"generated": 0.5})
    assert record.tuned_with == {} and record.warm_start_is_baseline
    jobs = retraining.plan_jobs(tmp_path, record, shapes.EXPERIMENT, top_k=1, seeds=1, epochs=3)
    by_label = {job.label: job for job in jobs}
    assert by_label["baseline"].config["generated"] == 0.5
    assert by_label["top1"].trial_id == "o"
    assert analyse.kept_baseline(read_csv(tmp_path / "trials.csv"), record)


@pytest.mark.parametrize("name", experiments.names())
def test_every_budget_s_own_values_are_valid_config_values_outside_its_search(name):
    exp = experiments.get(name)
    for budget in (exp.budget_cpu, exp.budget_gpu, *exp.budgets.values()):
        assert set(budget.tuned_with) <= set(exp.defaults)  # a typo would add an unknown key
        exp.check({**exp.defaults, **budget.tuned_with})
        assert not set(budget.tuned_with) & set(budget.searched or exp.space)


@pytest.mark.parametrize("name", experiments.names())
def test_every_budget_s_narrower_ranges_lie_inside_its_space_and_hold_the_baseline(name):
    """A narrower range of a budget's own (Budget.ranges) is a numeric key it searches, inside the experiment's
    range, holding the baseline's point: the warm start and the retrained baseline are the same either way."""
    from search.experiment import Choice, warm_start

    exp = experiments.get(name)
    for budget in (exp.budget_cpu, exp.budget_gpu, *exp.budgets.values()):
        baseline = warm_start(dict(exp.defaults), exp.space)
        for key, (low, high) in budget.ranges.items():
            dim = exp.space[key]
            assert key in (budget.searched or exp.space) and not isinstance(dim, Choice)
            assert dim.low <= low < high <= dim.high and low <= baseline[key] <= high


def test_the_90_minute_budget_draws_lr_from_its_narrower_range_and_says_so(tmp_path):
    """The trials' space, run.json and what the report and the analysis read back all take the budget's
    range; --full-space and a smoke run search the experiment's whole range."""
    from search.experiment import Float
    from search.record import RunRecord
    from search.stages import budget_space

    named = plan("90min")
    low, high = shapes.EXPERIMENT.budgets["90min"].ranges["lr"]
    assert named.ranges == {"lr": [low, high]} and shapes.EXPERIMENT.space["lr"].low < low
    space = budget_space(dict(shapes.EXPERIMENT.space), named)
    assert space["lr"] == Float(low, high, log=True) and set(space) == set(named.searched)
    assert space["dropout"] == shapes.EXPERIMENT.space["dropout"]  # the others as the experiment has them
    assert plan("90min", full_space=True).ranges == {} and plan("90min", smoke=True).ranges == {}
    assert plan().ranges == {}
    record = RunRecord(experiment="shapes", name="r", plan=named, searched=list(space))
    record.write(tmp_path)
    assert RunRecord.read(tmp_path).searched_space(shapes.EXPERIMENT) == space  # as resume and the report read it


def test_a_run_started_before_a_key_existed_resumes_with_its_default():
    from search.stages import same_base

    exp = shapes.EXPERIMENT
    base = {**exp.defaults, "epochs": 40, "seed": 0}
    old = {k: v for k, v in base.items() if k != "generated"}  # run.json written before `generated` existed
    assert same_base(exp, old, base)
    assert not same_base(exp, old, {**base, "generated": 1.0})  # it trained without generated images
    assert not same_base(exp, {**old, "lr": 3e-3}, base)  # a changed default is refused


def test_warm_start_takes_only_earlier_trials_trained_with_this_search_s_budget_values(tmp_path):
    """TPE must not learn from trials whose data differed: a 90min search (generated 1) takes a 90min
    run's trials, not those of a default run (generated 0, or no column: from before the key existed)."""
    import pandas as pd

    from search import warm

    exp = shapes.EXPERIMENT
    space = {k: exp.space[k] for k in ("lr", "dropout")}
    rows = [{**exp.defaults, "trial_id": f"t{g}", "status": "completed", "last_val_acc": 0.3, "generated": g}
            for g in (0.0, 1.0)]
    pd.DataFrame(rows).to_csv(tmp_path / "trials.csv", index=False)
    told = lambda base: [t.user_attrs[warm.FROM_TRIAL] for t in
                         warm.earlier_trials([tmp_path], exp, space, {}, "val_acc", base)[0]]
    assert told({**exp.defaults, "generated": 1.0}) == ["t1.0"]
    assert told(dict(exp.defaults)) == ["t0.0"]
    pd.DataFrame(rows[:1]).drop(columns="generated").to_csv(tmp_path / "trials.csv", index=False)
    assert told({**exp.defaults, "generated": 1.0}) == [] and told(dict(exp.defaults)) == ["t0.0"]


def test_a_local_cpu_run_times_its_throughput_here_and_a_gpu_run_in_a_ray_task(monkeypatch):
    """The estimate's images/s: on a Ray of our own without GPUs for the trials, timed in this process
    (a Ray worker started for four steps cost ~5 s of every run); with a GPU per trial or a cluster,
    in a Ray task that gets a trial's device."""
    from datasets.shapes import generated_tensors
    from search import stages

    class RayTask(Exception):
        pass

    asked = []

    def remote(**resources):
        asked.append(resources)
        raise RayTask

    monkeypatch.setattr(stages.ray, "remote", remote)
    x, y = generated_tensors(64, 0)
    config = {**shapes.EXPERIMENT.defaults, "seed": 0}
    local = plan(smoke=True)
    assert stages.measured_throughput(shapes.EXPERIMENT, config, x, y, local, local=True) > 0 and not asked
    gpu = make_plan(shapes.EXPERIMENT, Hardware(cpus=2, gpus=1), trials=None, max_epochs=None, time_budget_min=None,
                    concurrency=None, cpus_per_trial=None, gpus_per_trial=0.5, smoke=True)
    for p, is_local in ((gpu, True), (local, False)):
        with pytest.raises(RayTask):
            stages.measured_throughput(shapes.EXPERIMENT, config, x, y, p, local=is_local)
    assert [a["num_gpus"] for a in asked] == [0.5, 0]


def test_every_budget_knob_is_a_budget_field_with_its_flag_on_the_command_line():
    """One home per knob: a field of Budget, one line of plan.KNOBS; run.py's parser offers each with the
    field's name as its dest, which is how the overrides reach make_plan."""
    from dataclasses import fields

    from search import run
    from search.experiment import Budget
    from search.plan import KNOBS, OVERRIDABLE

    budget_fields = {f.name for f in fields(Budget)}
    assert OVERRIDABLE <= budget_fields, OVERRIDABLE - budget_fields
    by_flag = {a.option_strings[0]: a.dest for a in run.parser()._actions if a.option_strings}
    assert all(by_flag.get(k.flag) == k.name for k in KNOBS), [(k.flag, by_flag.get(k.flag)) for k in KNOBS]


def test_the_reduction_factor_comes_from_the_budget_the_flag_or_the_hardware():
    import dataclasses

    from search.experiment import Budget

    assert plan().reduction_factor == 2  # a CPU: keep half at each rung
    assert make_plan(shapes.EXPERIMENT, Hardware(cpus=16, gpus=1)).reduction_factor == 3
    assert plan(reduction_factor=4).reduction_factor == 4
    three = dataclasses.replace(shapes.EXPERIMENT, budget_cpu=Budget(trials=8, max_epochs=6, grace_epochs=2,
                                                                     reduction_factor=3))
    assert make_plan(three, LAPTOP).reduction_factor == 3 and make_plan(three, LAPTOP, reduction_factor=2) \
        .reduction_factor == 2
    with pytest.raises(UserError, match="--reduction-factor 1: give a whole number of at least 2"):
        plan(reduction_factor=1)


def test_an_unknown_knob_is_refused_by_name():
    with pytest.raises(TypeError, match=r"unknown budget knob\(s\) \['trails'\]"):
        plan(trails=3)


def test_the_retrainings_baseline_point_is_the_baseline_in_the_budgets_ranges(tmp_path):
    """A budget whose lr range leaves out the baseline's 1e-3 runs the warm start at the range's bound, 2e-3:
    retraining, the verdict and the report find that trial as the baseline's through the run record (its
    searched space in the plan's ranges), not through the experiment's wider range, where 1e-3 lies inside."""
    import dataclasses

    import pandas as pd

    from search import analyse, report, retraining
    from search.analyse import Run
    from search.io import read_csv

    narrow = dataclasses.replace(plan("90min"), ranges={"lr": [2e-3, 1e-2]})
    record = record_with_trials(tmp_path, narrow, pinned={"generated": 0.5})
    assert record.warm_start_is_baseline and shapes.EXPERIMENT.space["lr"].contains(1e-3)
    point = record.warm_start_point(shapes.EXPERIMENT)
    assert point["lr"] == 2e-3 and point["weight_decay"] == 1e-6
    trials = read_csv(tmp_path / "trials.csv")
    trials.loc[trials["trial_id"] == "w", "lr"] = 2e-3  # the warm start as the search ran it
    trials.to_csv(tmp_path / "trials.csv", index=False)
    jobs = retraining.plan_jobs(tmp_path, record, shapes.EXPERIMENT, top_k=1, seeds=1, epochs=3)
    assert {j.label: j.trial_id for j in jobs}["top1"] == "o"  # w is the baseline: retrained as such anyway
    assert analyse.kept_baseline(trials, record)
    assert report._baseline_trial(Run(tmp_path, record, trials, pd.DataFrame()), shapes.EXPERIMENT) == "w"
