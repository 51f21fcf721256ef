"""--warm-start-from tells Optuna only trials that trained as this search's trials do: an earlier trial of
another optimiser, other data or a smoke run is left out with its reason, one of another horizon enters
as pruned, never as complete."""

from __future__ import annotations

import pandas as pd

from search import experiments, warm
from search.plan import Hardware, make_plan
from search.record import RunRecord

EXP = experiments.get("shapes")
SPACE = {k: EXP.space[k] for k in ("lr", "dropout")}
DATA = {"source": "generated", "train": 9000, "val": 1000}


def earlier_run(folder, epochs=8, data=DATA, searched=("lr", "dropout"), rows=None):
    folder.mkdir(parents=True)
    plan = make_plan(EXP, Hardware(cpus=2, gpus=0), trials=2, max_epochs=epochs, time_budget_min=None,
                     concurrency=None, cpus_per_trial=None, gpus_per_trial=None, smoke=False)
    RunRecord(experiment="shapes", name=folder.name, plan=plan, searched=list(searched), data=dict(data),
              base_config={**EXP.defaults, "epochs": epochs, "seed": 0}).write(folder)
    rows = rows or [{"trial_id": "a", "lr": 2e-3, "dropout": 0.3}]
    trials = [{**r, "status": "completed", "last_val_acc": 0.4} for r in rows]
    pd.DataFrame(trials).to_csv(folder / "trials.csv", index=False)
    pd.DataFrame([{"trial_id": r["trial_id"], "epoch": e, "val_acc": 0.1 * e} for r in rows
                  for e in range(1, epochs + 1)]).to_csv(folder / "history.csv", index=False)
    return folder


def tell(folder, epochs=8, data=DATA):
    base = {**EXP.defaults, "epochs": epochs, "seed": 1}
    return warm.earlier_trials([folder], EXP, SPACE, {}, "val_acc", base, data)


def test_a_trial_trained_as_this_search_s_enters_complete(tmp_path):
    told, lines = tell(earlier_run(tmp_path / "same"))
    assert [t.state.name for t in told] == ["COMPLETE"] and "1 trials" in lines[0] and "left out" not in lines[0]


def test_a_full_space_trial_of_another_optimiser_is_left_out_with_why(tmp_path):
    other = "sgd" if EXP.defaults["optimizer"] != "sgd" else "adam"
    folder = earlier_run(tmp_path / "full", searched=("lr", "dropout", "optimizer"),
                         rows=[{"trial_id": "a", "lr": 2e-3, "dropout": 0.3, "optimizer": other},
                               {"trial_id": "b", "lr": 3e-3, "dropout": 0.2, "optimizer": EXP.defaults["optimizer"]}])
    told, lines = tell(folder)
    assert [t.user_attrs[warm.FROM_TRIAL] for t in told] == ["b"]
    assert f"1 left out: optimizer={other} (this search: {EXP.defaults['optimizer']})" in lines[0]


def test_a_smoke_or_other_data_run_is_left_out(tmp_path):
    told, lines = tell(earlier_run(tmp_path / "smoke", data={**DATA, "train": 256, "val": 256}))
    assert told == [] and "1 left out: other data" in lines[0]


def test_a_trial_of_another_horizon_enters_as_pruned_with_its_epochs(tmp_path):
    told, lines = tell(earlier_run(tmp_path / "short", epochs=2), epochs=8)
    assert [t.state.name for t in told] == ["PRUNED"] and told[0].intermediate_values == {1: 0.1, 2: 0.2}
    assert "taken as pruned, not complete: trained for 2 epochs (this search: 8)" in lines[0]
