"""The numbers the report states: bound checks, importance, ASHA rung correlation; which configs
are retrained. On hand-built frames, where the right answer is known."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from search import retraining, schedulers, study_stats
from search.analyse import Run
from search.experiment import PROBABILITY, Choice, Float
from search.io import write_json

# A whole plan as run.json holds it; the tests vary its scheduler's part.
ASHA = schedulers.get("asha")
PLAN = {"trials": 5, "max_epochs": 4, "grace_epochs": 1, "reduction_factor": 2, "concurrency": 1,
        "cpus_per_trial": 1.0, "gpus_per_trial": 0.0, "subset": None, "time_budget_min": None}
SPACE = {"lr": Float(1e-4, 1e-1, log=True), "dropout": Float(0.0, 0.5), "opt": Choice(("adam", "sgd"))}


def make_run(trials: pd.DataFrame, history: pd.DataFrame | None = None, plan: dict | None = None) -> Run:
    info = {"experiment": "shapes", "name": "r", "objective": "val_acc", "mode": "max", "searched": list(SPACE),
            "plan": {**PLAN, **(plan or {})}}
    return Run(Path("."), info, trials, history if history is not None else pd.DataFrame())


def test_position_is_linear_or_logarithmic():
    assert study_stats.position(1e-2, SPACE["lr"]) == pytest.approx(2 / 3)  # 1e-4 .. 1e-1: three decades
    assert study_stats.position(0.25, SPACE["dropout"]) == pytest.approx(0.5)


def test_bound_flags_name_the_hyperparameter_at_a_bound_only():
    trials = pd.DataFrame({"trial_id": ["a", "b", "c", "d"], "status": ["completed"] * 4,
                           "best_val_acc": [0.9, 0.8, 0.7, 0.1], "lr": [0.099, 0.095, 1e-3, 1e-4],
                           "dropout": [0.25, 0.3, 0.2, 0.0], "opt": ["adam"] * 4})
    flags = study_stats.bound_flags(make_run(trials), SPACE)
    assert len(flags) == 1 and "**lr**" in flags[0] and "upper bound 0.1" in flags[0]
    assert "2 of the top 3" in flags[0] and "widen the range" in flags[0]
    # a bound that is also the end of the valid values (a probability of 0) cannot be widened
    at_zero = trials.assign(lr=[1e-2] * 4, dropout=[0.0, 0.01, 0.2, 0.3])
    (flag,) = study_stats.bound_flags(make_run(at_zero), SPACE, {"dropout": PROBABILITY})
    assert "**dropout**" in flag and "cannot widen" in flag
    inside = trials.assign(lr=[1e-2, 1e-2, 1e-3, 1e-4])
    assert study_stats.bound_flags(make_run(inside), SPACE) == []


def test_no_bound_flag_when_the_best_is_the_baseline_run_at_a_bound_its_own_value_lies_past():
    """A baseline lr of 0.5 (outside 1e-4 .. 0.1) runs its warm-start trial at 0.1: that it sits there is
    not the search preferring the bound, so no advice to widen the range."""
    trials = pd.DataFrame({"trial_id": ["w", "b"], "status": ["completed"] * 2, "best_val_acc": [0.9, 0.8],
                           "lr": [0.1, 1e-3], "dropout": [0.25, 0.3], "opt": ["adam"] * 2})
    run = make_run(trials)
    run.record.base_config = {"lr": 0.5, "dropout": 0.25, "opt": "adam"}
    assert study_stats.bound_flags(run, SPACE) == []
    run.record.base_config = {"lr": 0.1, "dropout": 0.25, "opt": "adam"}  # its own value: the bound
    assert len(study_stats.bound_flags(run, SPACE)) == 1


def test_importance_ranks_the_parameter_that_decides_the_objective_first():
    rng = np.random.default_rng(0)
    n = 40
    lr = 10 ** rng.uniform(-4, -1, n)
    trials = pd.DataFrame({"trial_id": [f"t{i}" for i in range(n)], "status": ["completed"] * n,
                           "lr": lr, "dropout": rng.uniform(0, 0.5, n), "opt": rng.choice(["adam", "sgd"], n),
                           "best_val_acc": -np.abs(np.log10(lr) + 2.5)})  # best at lr = 10^-2.5, noise-free
    values, note = study_stats.importance(make_run(trials), SPACE)
    assert max(values, key=values.get) == "lr"
    assert sum(values.values()) == pytest.approx(1.0)
    assert "40 trials" in note
    few, why = study_stats.importance(make_run(trials.head(3)), SPACE)
    assert few == {} and "3 trials" in why


def test_rungs_follow_asha_milestones():
    assert ASHA.decision_epochs({"grace_epochs": 2, "max_epochs": 6, "reduction_factor": 2}) == [2, 4]
    assert ASHA.decision_epochs({"grace_epochs": 5, "max_epochs": 40, "reduction_factor": 3}) == [5, 15]
    assert ASHA.decision_epochs({"grace_epochs": 1, "max_epochs": 1, "reduction_factor": 2}) == []


def test_rank_correlation_per_rung():
    # four trials ran all 4 epochs; their epoch-1 order agrees with their final order except one swap
    final = {"a": 0.9, "b": 0.8, "c": 0.7, "d": 0.6}
    at1 = {"a": 0.5, "b": 0.4, "c": 0.2, "d": 0.3, "e": 0.1}
    rows = [{"trial_id": t, "epoch": 1, "val_acc": v} for t, v in at1.items()]
    rows += [{"trial_id": t, "epoch": e, "val_acc": final[t] - (4 - e) * 0.01} for t in final for e in (2, 3, 4)]
    trials = pd.DataFrame({"trial_id": list(at1), "status": ["completed"] * 4 + ["stopped"],
                           "epochs_run": [4, 4, 4, 4, 1], "best_val_acc": [*final.values(), 0.1]})
    run = make_run(trials, pd.DataFrame(rows))
    table = study_stats.rung_correlation(run, schedulers.get("asha").decision_epochs(run.plan))
    r1 = table.set_index("rung (epoch)").loc[1]
    assert r1["trials reached"] == 5 and r1["stopped here"] == 1 and r1["vs final: trials"] == 4
    assert r1["vs final: rank corr."] == pytest.approx(0.8)  # 1 - 6*(1+1)/(4*15)
    assert r1["vs next: epoch"] == 2 and r1["vs next: trials"] == 4  # e was stopped at epoch 1
    assert r1["vs next: rank corr."] == pytest.approx(0.8)  # epoch 2 keeps the final order
    r2 = table.set_index("rung (epoch)").loc[2]
    assert r2["vs final: rank corr."] == pytest.approx(1.0)
    assert r2["vs next: epoch"] == 4 and r2["vs next: rank corr."] == pytest.approx(1.0)
    assert math.isnan(study_stats.rank_corr(pd.Series([1.0, 2.0]), pd.Series([2.0, 1.0])))  # too few


def test_retrained_top_configs_skip_the_warm_start_and_duplicates():
    from search import experiments

    exp = experiments.get("shapes")
    searched = list(exp.space)
    base = {**exp.defaults}
    warm = {**base, "weight_decay": 1e-6}  # the warm-start point: weight_decay 0 moved into the log range
    other = {**base, "lr": 3e-3}
    trials = pd.DataFrame([{**warm, "trial_id": "w", "status": "completed", "best_val_acc": 0.9},
                           {**other, "trial_id": "x", "status": "stopped", "best_val_acc": 0.8},
                           {**other, "trial_id": "x2", "status": "completed", "best_val_acc": 0.7},
                           {**base, "lr": 5e-3, "trial_id": "y", "status": "failed", "best_val_acc": 0.95},
                           {**base, "lr": 2e-4, "trial_id": "z", "status": "completed", "best_val_acc": 0.5}])
    picked = retraining.top_configs(trials, exp, searched, 3, warm)
    assert [tid for tid, _, _ in picked] == ["x", "z"]
    assert picked[0][1]["lr"] == 3e-3 and picked[0][2] == []


def test_a_pbt_trial_is_retrained_as_the_schedule_its_weights_had():
    """Under PBT a trial's weights may come from another trial's: its config at epoch 1 is the
    schedule's first entry (not its own params), the later entries are replayed, and the warm-start
    trial counts as tuned once its schedule changed something."""
    import json

    from search import experiments
    from search.protocol import CHANGES

    exp = experiments.get("shapes")
    searched = ["lr", "dropout"]
    base = {**exp.defaults, "weight_decay": 1e-6}
    lineage = [[1, {"lr": 2e-3, "dropout": 0.3}], [5, {"lr": 4e-4}]]
    trials = pd.DataFrame([
        {**base, "trial_id": "w", "status": "completed", "best_val_acc": 0.9, f"last_{CHANGES}": json.dumps(lineage)},
        {**base, "trial_id": "v", "status": "completed", "best_val_acc": 0.8,
         f"last_{CHANGES}": json.dumps([[1, {"lr": base["lr"], "dropout": base["dropout"]}]])}])
    picked = retraining.top_configs(trials, exp, searched, 3, {k: base[k] for k in searched})
    assert [tid for tid, _, _ in picked] == ["w"]  # v never changed: it is the baseline
    _, config, changes = picked[0]
    assert (config["lr"], config["dropout"]) == (2e-3, 0.3) and changes == [(5, {"lr": 4e-4})]


def test_a_trial_is_retrained_read_as_its_best_epoch_was_scored():
    """Where the search chose the decoding per trial, a trials.csv row's best_decoded_<key> columns name
    it; its retraining is read the same way (typed as the defaults: tta an int), and a trial without
    them (stopped before its last epoch) keeps its config's reading."""
    from search import experiments

    exp = experiments.get("shapes")
    searched = ["lr", "dropout"]
    base = {**exp.defaults}
    trials = pd.DataFrame([
        {**base, "lr": 3e-3, "trial_id": "a", "status": "completed", "best_val_acc": 0.9,
         "best_decoded_tta": 1.0, "best_decoded_joint_decode": 0.75},
        # stopped before its last epoch: every row names the plain reading
        {**base, "lr": 2e-3, "trial_id": "b", "status": "stopped", "best_val_acc": 0.8,
         "best_decoded_tta": 0.0, "best_decoded_joint_decode": 0.0},
        # a trial of an earlier round of a grown run, which did not choose: no value
        {**base, "lr": 5e-4, "trial_id": "c", "status": "completed", "best_val_acc": 0.7, "tta": 1,
         "best_decoded_tta": float("nan"), "best_decoded_joint_decode": float("nan")}])
    (_, decoded, _), (_, plain_read, _), (_, own, _) = retraining.top_configs(trials, exp, searched, 3,
                                                                                 {k: base[k] for k in searched})
    assert (decoded["tta"], decoded["joint_decode"]) == (1, 0.75) and type(decoded["tta"]) is int
    assert (plain_read["tta"], plain_read["joint_decode"]) == (0, 0.0) and type(plain_read["tta"]) is int
    assert own["tta"] == 1  # its own config's


def test_a_finished_retrain_run_with_another_config_is_redone(tmp_path):
    defaults = {"lr": 1e-3, "count_decode": 0.0}
    job = retraining.Job("top1", {"lr": 1e-3, "seed": 1000}, 1000, "t")
    assert not retraining.done_before(tmp_path, job, defaults)
    write_json(tmp_path / "retrain" / job.name / "metrics.json", {"config": {"lr": 1e-3, "seed": 1000}})
    assert retraining.done_before(tmp_path, job, defaults)
    write_json(tmp_path / "retrain" / job.name / "metrics.json", {"config": {"lr": 2e-3, "seed": 1000}})
    assert not retraining.done_before(tmp_path, job, defaults)


def test_a_retrain_run_done_before_the_experiment_gained_a_key_is_kept_at_its_default(tmp_path):
    """A run retrained before shapes had count_decode read its counts as count_decode 0 does: resumed
    after the upgrade, it is not trained again; one the key would change is."""
    defaults = {"lr": 1e-3, "count_decode": 0.0}
    same = retraining.Job("top1", {"lr": 1e-3, "seed": 1000, "count_decode": 0.0}, 1000, "t")
    other = retraining.Job("top1", {"lr": 1e-3, "seed": 1000, "count_decode": 1.0}, 1000, "t")
    write_json(tmp_path / "retrain" / same.name / "metrics.json", {"config": {"lr": 1e-3, "seed": 1000}})
    assert retraining.done_before(tmp_path, same, defaults) and not retraining.done_before(tmp_path, other, defaults)
