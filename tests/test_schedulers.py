"""The scheduler registry: each entry builds Ray's scheduler from a plan, names its decision epochs
and its stops, sizes the time estimate and writes its report section; unknown names fail loudly."""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd
import pytest
from ray.tune.schedulers import ASHAScheduler, FIFOScheduler

from search import cli, run, scheduler_reports, schedulers
from search.analyse import Run
from search.config import UserError
from search.experiments import shapes
from search.plan import Hardware, Plan, make_plan
from search.protocol import trial_status


def plan(**changes) -> Plan:
    p = make_plan(shapes.EXPERIMENT, Hardware(cpus=2, gpus=0), trials=8, max_epochs=6, time_budget_min=None,
                  concurrency=None, cpus_per_trial=None, gpus_per_trial=None, smoke=False)
    for k, v in changes.items():
        setattr(p, k, v)
    return p


def test_registry_names_and_unknown_name():
    assert schedulers.names()[:2] == ["asha", "fifo"] and schedulers.DEFAULT == "asha"
    with pytest.raises(UserError, match="known: asha, fifo"):
        schedulers.get("hyperband")


def test_each_builds_rays_scheduler_from_the_plan():
    asha = schedulers.get("asha").build(plan(), "val_acc", "max")
    assert isinstance(asha, ASHAScheduler)
    assert asha._max_t == 6 and asha._reduction_factor == 2
    assert isinstance(schedulers.get("fifo").build(plan(), "val_acc", "max"), FIFOScheduler)
    assert not schedulers.get("asha").proposes_configs and not schedulers.get("fifo").proposes_configs


def test_a_plan_names_its_scheduler_and_old_plans_meant_asha():
    """The budget picks the scheduler (shapes on a CPU: ASHA from epoch 4 with its first trials screened
    together there, with its reason); --scheduler overrides it (and the budget's reason goes); a smoke run
    keeps the registry's default."""
    assert plan().scheduler == "screen" and "Spearman" in plan().why and plan().grace_epochs == 4

    def planned(**kw):
        return make_plan(shapes.EXPERIMENT, Hardware(cpus=2, gpus=0), trials=8, max_epochs=6, time_budget_min=None,
                         concurrency=None, cpus_per_trial=None, gpus_per_trial=None, **kw)

    chosen = planned(smoke=False, scheduler="fifo")
    assert chosen.scheduler == "fifo" and chosen.why == ""
    assert planned(smoke=True).scheduler == schedulers.DEFAULT == "asha"
    gpu = make_plan(shapes.EXPERIMENT, Hardware(cpus=16, gpus=1), trials=None, max_epochs=None, time_budget_min=None,
                    concurrency=None, cpus_per_trial=None, gpus_per_trial=None, smoke=False)
    assert gpu.scheduler == "asha"
    old = {k: v for k, v in plan().as_dict().items() if k != "scheduler"}  # run.json before the registry
    assert schedulers.of_plan(old).name == "asha" and Plan.from_dict(old).scheduler == "asha"


def test_fifo_trains_every_epoch_asha_fewer():
    p = plan(trials=8, max_epochs=6, grace_epochs=2, reduction_factor=2, concurrency=2)
    assert schedulers.get("fifo").search_epochs(p) == 8 * 6
    # 2 first trials run all 6; the other 6 run 2 epochs, half of them to 4, a quarter to 6
    assert schedulers.get("asha").search_epochs(p) == pytest.approx(2 * 6 + 6 * 2 + 3 * 2 + 1.5 * 2)
    assert schedulers.get("fifo").decision_epochs(p) == [] and schedulers.get("asha").decision_epochs(p) == [2, 4]


def test_a_trial_ended_between_ashas_rungs_was_cut_not_stopped_by_asha():
    """A time budget or an interruption ends trials at any epoch; ASHA only at its rungs."""
    p = plan(max_epochs=40, grace_epochs=10, reduction_factor=2)  # rungs at 10 and 20
    for name in ("asha", "screen"):
        reason = schedulers.get(name).stop_reason_in(p)
        assert reason(10) == "ASHA stopped it after epoch 10"
        assert reason(20) == "ASHA stopped it after epoch 20"
        assert reason(28) == "stopped after epoch 28 (time budget or interruption)"
    assert schedulers.get("fifo").stop_reason_in(p)(7) == "stopped after epoch 7 (time budget or interruption)"


def test_stop_reasons_reach_the_trial_status():
    for name, words in (("asha", "ASHA stopped it after epoch 2"), ("fifo", "stopped after epoch 2")):
        status, reason = trial_status({"epoch": 2}, 6, schedulers.get(name).stop_reason)
        assert status == "stopped" and reason.startswith(words)
    assert trial_status({"epoch": 6, "finished": True}, 6, schedulers.get("fifo").stop_reason) == (
        "completed", "all epochs")


def test_report_sections_name_their_scheduler_and_show_the_correlations():
    history = pd.DataFrame([{"trial_id": t, "epoch": e, "val_acc": v * e} for t, v in
                            (("a", 0.3), ("b", 0.2), ("c", 0.1)) for e in range(1, 7)])
    trials = pd.DataFrame({"trial_id": ["a", "b", "c"], "status": ["completed"] * 3, "epochs_run": [6] * 3,
                           "best_val_acc": [1.8, 1.2, 0.6]})
    record = {"experiment": "shapes", "name": "r", "objective": "val_acc", "mode": "max",
              "plan": plan(grace_epochs=2).as_dict()}
    asha = scheduler_reports.section(Run(Path("."), {**record, "plan": {**record["plan"], "scheduler": "asha"}},
                                         trials, history))
    fifo = scheduler_reports.section(Run(Path("."), {**record, "plan": {**record["plan"], "scheduler": "fifo"}},
                                         trials, history))
    assert asha.startswith("## Early stopping: did ASHA's rungs rank trials right?")
    assert fifo.startswith("## Early stopping: would early rankings have held?")
    for text in (asha, fifo):  # rungs at epochs 2 and 4: three trials keep their order
        assert "| 2 | 3 | 0 | 3 | 1.00 (few trials: unreliable)" in text


def test_an_unknown_scheduler_on_the_command_line_is_one_line(capsys):
    assert cli.run(run.main, ["shapes", "--scheduler", "pbt2000"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--scheduler" in err and "asha" in err


@pytest.mark.parametrize("rank_on, metric, mode", [("smooth", "val_rank_loss", "min"), ("objective", "val_acc", "max")])
def test_scheduler_and_tpe_rank_on_the_plans_metric(tmp_path, rank_on, metric, mode):
    """Shapes declares a smoother ranking metric: ASHA and TPE both get it (and nothing else does:
    TuneConfig has no metric, so it cannot pass the objective to either); --rank-on objective undoes it."""
    from search.tuner import new_tuner

    p = make_plan(shapes.EXPERIMENT, Hardware(cpus=2, gpus=0), trials=4, max_epochs=2, time_budget_min=None,
                  concurrency=None, cpus_per_trial=None, gpus_per_trial=None, smoke=True, rank_on=rank_on)
    assert (p.rank_metric, p.rank_mode) == (metric, mode)
    space = run.searched_space(shapes.EXPERIMENT, {})
    tuner = new_tuner(shapes.EXPERIMENT, lambda config: None, {**shapes.DEFAULTS, "epochs": 2, "seed": 0}, space,
                      p, schedulers.of_plan(p), 0, "x", str(tmp_path), [], tmp_path)
    config = tuner._local_tuner._tune_config
    assert config.metric is None and config.mode is None
    assert (config.scheduler._metric, config.scheduler._mode) == (metric, mode)
    assert (config.search_alg._metric, config.search_alg._mode) == (metric, mode)


def test_rank_loss_ignores_lambda_and_follows_the_trained_head():
    """val_rank_loss compares configs with other loss weights: the class NLL (cls, multitask) or the
    counting loss (cnt), never weighted by lambda_cnt."""
    import torch

    task = shapes.EXPERIMENT.task
    counts = torch.tensor([[3, 7, 0, 0, 0, 0], [0, 0, 5, 5, 0, 0]])
    log_probs = torch.log_softmax(torch.randn(2, 135, generator=torch.Generator().manual_seed(0)), dim=1)
    outputs = (log_probs, counts.float() + 0.5)
    multi = task.metrics(outputs, counts, {**shapes.DEFAULTS, "lambda_cnt": 1.0})["rank_loss"]
    assert task.metrics(outputs, counts, {**shapes.DEFAULTS, "lambda_cnt": 30.0})["rank_loss"] == multi
    cls = task.metrics(outputs, counts, {**shapes.DEFAULTS, "setting": "cls"})["rank_loss"]
    cnt = task.metrics(outputs, counts, {**shapes.DEFAULTS, "setting": "cnt"})["rank_loss"]
    assert cls == pytest.approx(multi) and cnt == pytest.approx(0.125)  # smooth L1 of 0.5 everywhere


def test_the_cpu_budget_searches_its_keys_and_the_warm_start_tries_the_schedules_first():
    """Shapes on a CPU: 16 trials search five keys (the rest stay at the baseline), and the baseline is
    followed by its one-cycle and cosine variants before TPE proposes anything."""
    from search.stages import budget_space
    from search.tuner import warm_points

    exp = shapes.EXPERIMENT
    full = run.searched_space(exp, {})
    cpu = budget_space(full, plan())
    assert list(cpu) == [k for k in full if k in ("lr", "schedule", "dropout", "weight_decay", "lambda_cnt")]
    gpu = make_plan(exp, Hardware(cpus=16, gpus=1), trials=None, max_epochs=None, time_budget_min=None,
                    concurrency=None, cpus_per_trial=None, gpus_per_trial=None, smoke=False)
    # a GPU's 60 trials search everything but the decoding, which each trial's last epoch chooses
    assert budget_space(full, gpu) == {k: d for k, d in full.items() if k not in exp.decoding.keys}
    wide = make_plan(exp, Hardware(cpus=2, gpus=0), trials=None, max_epochs=None, time_budget_min=None,
                     concurrency=None, cpus_per_trial=None, gpus_per_trial=None, smoke=False, full_space=True)
    assert budget_space(full, wide) == full
    base = {**exp.defaults, "epochs": 6, "seed": 0}
    points = warm_points(exp, base, cpu)
    assert [p["schedule"] for p in points] == ["constant", "onecycle", "cosine"]
    assert all(p["lr"] == base["lr"] and p["dropout"] == base["dropout"] for p in points)
    no_schedule = {k: d for k, d in cpu.items() if k != "schedule"}  # e.g. --set schedule=onecycle
    assert len(warm_points(exp, base, no_schedule)) == 1  # variants that change nothing searched are dropped
    # the 90min budget starts from the baseline alone (its variants never won there); the CPU default keeps them
    ninety = make_plan(exp, Hardware(cpus=2, gpus=0), trials=None, max_epochs=None, time_budget_min=None,
                       concurrency=None, cpus_per_trial=None, gpus_per_trial=None, smoke=False, budget_name="90min")
    assert not ninety.warm_variants and plan().warm_variants
    assert [p["schedule"] for p in warm_points(exp, base, cpu, ninety.warm_variants)] == ["constant"]
    assert (ninety.grace_epochs, ninety.max_epochs) == (20, 40)  # one rung, past one-cycle's peak (epoch 12)


def test_grace_epochs_sets_the_schedulers_first_decision():
    """--grace-epochs: ASHA's first rung, PBT's perturbation interval; 0 or less is one line."""
    p = make_plan(shapes.EXPERIMENT, Hardware(cpus=2, gpus=0), trials=None, max_epochs=None, time_budget_min=None,
                  concurrency=None, cpus_per_trial=None, gpus_per_trial=None, smoke=False, scheduler="pbt",
                  grace_epochs=2)
    assert p.grace_epochs == 2 and schedulers.get("pbt").decision_epochs(p) == [2, 4, 6, 8]
    with pytest.raises(UserError, match="--grace-epochs 0"):
        make_plan(shapes.EXPERIMENT, Hardware(cpus=2, gpus=0), trials=None, max_epochs=None, time_budget_min=None,
                  concurrency=None, cpus_per_trial=None, gpus_per_trial=None, smoke=False, grace_epochs=0)


def test_asha_carries_over_the_rungs_of_earlier_trials():
    """Ray keeps ASHA's rungs in memory only: a resumed or grown search gives the scheduler what the
    trials reported before, and a new trial worse at a rung than the earlier ones is stopped there,
    one better goes on; epochs past a trial's last report, and NaN, record nothing."""
    from ray.tune.schedulers import TrialScheduler

    p = plan(scheduler="asha", grace_epochs=2, reduction_factor=2)  # max 6 epochs: rungs at 2 and 4
    built = schedulers.get("asha").build(p, "val_rank_loss", "min")
    rows = [("a", e, 4.0 - 0.1 * e) for e in range(1, 7)] + [("b", e, 4.5) for e in (1, 2)]
    rows += [("c", e, 4.2 if e < 4 else math.nan) for e in range(1, 5)]
    history = pd.DataFrame(rows, columns=["trial_id", "epoch", "val_rank_loss"])
    schedulers.get("asha").carry_over(built, history, "val_rank_loss", "min")
    rungs = {milestone: recorded for milestone, recorded in built._brackets[0]._rungs}
    assert rungs[2] == {"a": pytest.approx(-3.8), "b": -4.5, "c": -4.2}
    assert rungs[4] == {"a": pytest.approx(-3.6)}

    class Trial:
        def __init__(self, trial_id):
            self.trial_id = trial_id

    for trial_id, value, action in (("new-bad", 4.6, TrialScheduler.STOP), ("new-good", 3.5, TrialScheduler.CONTINUE)):
        trial = Trial(trial_id)
        built.on_trial_add(None, trial)
        result = {"epoch": 2, "training_iteration": 2, "val_rank_loss": value}
        assert built.on_trial_result(None, trial, result) == action
    assert schedulers.get("fifo").carry_over(FIFOScheduler(), history, "val_rank_loss", "min") is None


@pytest.mark.parametrize("name", ["asha", "screen"])
def test_the_schedulers_that_stop_trials_count_the_trials_own_epochs(name):
    """A trial restarted from epoch 1 (its checkpoint was unreadable or gone) goes on reporting Ray's
    count of its reports as training_iteration, ahead of its epochs: on that count it was stopped at
    max_t epochs short. Its epoch is the clock: it trains to its end."""
    from ray.tune.schedulers import TrialScheduler

    p = plan(trials=4, max_epochs=6, grace_epochs=2, concurrency=1)
    built = schedulers.get(name).build(p, "acc", "max")

    class Trial:
        def __init__(self, trial_id):
            self.trial_id = trial_id

    trial = Trial("restarted")
    built.on_trial_add(None, trial)
    restarted = {"epoch": 1, "training_iteration": 6, "acc": 0.1}  # Ray's count says max_t: not the end
    assert built.on_trial_result(None, trial, restarted) == TrialScheduler.CONTINUE
    assert built.on_trial_result(None, trial, {"epoch": 6, "training_iteration": 11, "acc": 0.5}) == TrialScheduler.STOP


@pytest.mark.parametrize("name", schedulers.names())
def test_every_registered_scheduler_has_a_report_section_and_none_loads_the_report(name):
    """The registry's schedulers build Ray's; what they did is said by the report side: each has its section,
    and the package imports nothing of the report (the tuner and the progress line load it)."""
    import ast

    from conftest import REPO

    assert name in scheduler_reports.SECTIONS, f"{name}: add its section to search/scheduler_reports.py"
    report_side = {"search.analyse", "search.study_stats", "search.pbt_report", "search.markdown", "search.report",
                   "search.report_plots", "search.plots", "search.scheduler_reports", "matplotlib"}
    for path in (REPO / "search" / "schedulers").glob("*.py"):
        tree = ast.parse(path.read_text())
        names = {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
        names |= {f"{n.module}.{a.name}" if n.module == "search" else n.module for n in ast.walk(tree)
                  if isinstance(n, ast.ImportFrom) and n.module for a in n.names}
        assert not {m for m in names if m.split(".")[0] == "matplotlib" or m in report_side}, path.name


def test_classes_pickled_by_a_run_from_before_the_package_still_load():
    """Tuner.restore unpickles the searcher and scheduler a run saved; one interrupted before
    search/schedulers/ existed named them search.screening.* and search.schedulers._PopulationBasedTraining."""
    import pickle

    from search.schedulers.pbt import _PopulationBasedTraining
    from search.schedulers.screening import ParkingLimiter, ScreeningASHA

    assert pickle.loads(b"csearch.screening\nParkingLimiter\n.") is ParkingLimiter
    assert pickle.loads(b"csearch.screening\nScreeningASHA\n.") is ScreeningASHA
    assert pickle.loads(b"csearch.schedulers\n_PopulationBasedTraining\n.") is _PopulationBasedTraining
