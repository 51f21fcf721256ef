"""A grown search keeps the results of the search it grew from in round-<k>/, and a growth that has not
finished is rolled back with `--resume --trials <the trials before>`: study, tables, results as they were."""

from __future__ import annotations

import json

from search import cli, experiments, growth, retrain, run
from search.plan import Hardware, make_plan
from search.record import RunRecord


def finished_search(tmp_path, trials=8):
    run_dir = tmp_path / "shapes" / "g"
    (run_dir / "tune").mkdir(parents=True)
    plan = make_plan(experiments.get("shapes"), Hardware(cpus=2, gpus=0), trials=trials, max_epochs=1,
                     time_budget_min=None, concurrency=None, cpus_per_trial=None, gpus_per_trial=None, smoke=True)
    RunRecord(experiment="shapes", name="g", plan=plan, argv=["shapes", "--smoke", "--name", "g"],
              options={"seed": 0}, search_done=True).write(run_dir)
    (run_dir / "trials.csv").write_text("trial_id\n" + "".join(f"t{i}\n" for i in range(trials)))
    (run_dir / "report.md").write_text("# the first round's report\n")
    (run_dir / "verdict.csv").write_text("label,mean\ntop1,0.6\n")
    (run_dir / "retrain" / "top1-seed1000").mkdir(parents=True)
    (run_dir / "retrain" / "top1-seed1000" / "model.pt").write_bytes(b"weights")
    (run_dir / "optuna.journal").write_text('{"op": 0}\n{"op": 1}\n')
    return run_dir


def test_the_results_of_the_rounds_before_are_kept_whole(tmp_path):
    run_dir = finished_search(tmp_path)
    kept = growth.keep_results(run_dir, 1)
    assert kept == run_dir / "round-1"
    names = sorted(str(p.relative_to(kept)) for p in kept.rglob("*") if p.is_file())
    assert names == ["report.md", "retrain/top1-seed1000/model.pt", "trials.csv", "verdict.csv"]
    # the weights hard-linked: the retraining replaces its files by rename, so the kept one stays the old
    assert (kept / "retrain/top1-seed1000/model.pt").stat().st_ino == (
        run_dir / "retrain/top1-seed1000/model.pt").stat().st_ino
    (run_dir / "report.md").write_text("the grown search's report")
    assert growth.keep_results(run_dir, 1) == kept and (kept / "report.md").read_text().startswith("# the first")


def start_a_growth(run_dir):
    """What prepare does when it grows the search to 10 trials, and what the growth then writes."""
    record = RunRecord.read(run_dir)
    growth.keep_results(run_dir, 1)
    step = {"round": 2, "trials_before": 8, "trials": 10, "journal_bytes": growth.journal_size(run_dir)}
    record.plan.trials = 10
    record.update(run_dir, plan=record.plan, search_done=False, grown=[step])
    with (run_dir / "optuna.journal").open("a") as f:
        f.write('{"op": 2}\n{"op": 3')
    (run_dir / "tune-2" / "run_trial_x").mkdir(parents=True)
    (run_dir / "trials.csv").write_text("trial_id\n" + "".join(f"t{i}\n" for i in range(9)))
    (run_dir / "report.md").unlink()


def test_an_unfinished_growth_is_rolled_back(tmp_path, capsys):
    run_dir = finished_search(tmp_path)
    journal_then, trials_then = (run_dir / "optuna.journal").read_bytes(), (run_dir / "trials.csv").read_text()
    start_a_growth(run_dir)
    assert cli.run(run.main, ["shapes", "--results", str(tmp_path), "--name", "g", "--resume", "--trials", "8"]) == 0
    assert "rolled back the growth to 10 trials" in capsys.readouterr().out
    info = json.loads((run_dir / "run.json").read_text())
    assert info["search_done"] and info["plan"]["trials"] == 8 and info["grown"] == []
    assert (run_dir / "optuna.journal").read_bytes() == journal_then
    assert (run_dir / "trials.csv").read_text() == trials_then
    assert (run_dir / "report.md").read_text() == "# the first round's report\n"
    assert not (run_dir / "tune-2").exists() and len(list(run_dir.glob("tune-2.abandoned-*/run_trial_x"))) == 1
    assert not (run_dir / "round-1").exists()


def test_retraining_an_interrupted_search_is_refused(tmp_path, capsys):
    run_dir = finished_search(tmp_path)
    RunRecord.read(run_dir).update(run_dir, search_done=False)
    assert cli.run(retrain.main, [str(run_dir)]) == 2
    err = capsys.readouterr().err
    assert "its search was interrupted" in err and "--resume" in err and err.count("\n") == 1
