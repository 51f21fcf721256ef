"""The search end to end on 2 CPUs: real Ray Tune trials, Optuna TPE, ASHA, on a small subset."""

from __future__ import annotations

import json
import math
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from search import cli, run
from search.experiments import shapes as shapes_exp
from search.faults import ENV as FAULT_ENV
from search.faults import LOG_ENV as FAULT_LOG_ENV
from search.tuner import STUDY_FILE

REPO = Path(__file__).resolve().parents[1]


def search(results: Path, name: str, *extra: str) -> int:
    """A smoke search without the retraining step (tests/test_retrain.py covers that)."""
    return cli.run(run.main, ["shapes", "--smoke", "--no-retrain", "--results", str(results), "--name", name, *extra])


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    """8 trials, up to 3 epochs, one at a time (so ASHA has finished rungs to compare against);
    `hidden` pinned; every SGD trial is made to diverge (NaN loss) in its second epoch."""
    results = tmp_path_factory.mktemp("results")
    mp = pytest.MonkeyPatch()
    mp.setenv(FAULT_ENV, "nan@2:optimizer=sgd")
    mp.setenv(FAULT_LOG_ENV, str(results / "faults.log"))
    try:
        # schedule pinned: no schedule variants of the warm start (tests/test_schedulers.py has those), so
        # every trial after the first is TPE's own draw
        code = search(results, "t", "--trials", "8", "--max-epochs", "3", "--concurrency", "1",
                      "--set", "hidden=0", "--set", "schedule=constant", "--seed", "0",
                      # evaluation-only keys pinned: TPE's seeded draws over the rest propose SGD trials
                      "--set", "tta=0", "--set", "joint_decode=0")
    finally:
        mp.undo()
    run_dir = results / "shapes" / "t"
    return code, run_dir, pd.read_csv(run_dir / "trials.csv"), pd.read_csv(run_dir / "history.csv")


def test_trials_and_history_tables(finished_run):
    code, run_dir, trials, history = finished_run
    assert code == 0
    assert len(trials) == 8 and trials["trial_id"].is_unique
    assert set(trials["status"]) <= {"completed", "stopped", "failed"}
    # history: one row per trial per epoch it ran, epochs numbered 1..n
    assert len(history) == trials["epochs_run"].sum()
    for trial_id, rows in history.groupby("trial_id"):
        assert list(rows["epoch"]) == list(range(1, len(rows) + 1))
        assert len(rows) == int(trials.loc[trials["trial_id"] == trial_id, "epochs_run"].iloc[0])
    for column in ("val_acc", "val_f1", "val_pair_acc", "val_rmse", "val_mae", "train_loss", "val_loss", "time_s"):
        assert column in history and f"best_{column}" in trials and f"last_{column}" in trials
    # the pinned value is constant and the searched ones vary
    assert (trials["hidden"] == 0).all()
    assert trials["lr"].nunique() == len(trials)
    # the warm start: the hand-tuned config is the first trial (weight decay 0 sits at the log bound)
    first = trials.iloc[0]
    for key in ("dropout", "lambda_cnt", "lr", "momentum", "optimizer", "batch_size", "p_hflip", "p_erase"):
        assert first[key] == shapes_exp.DEFAULTS[key], key
    assert first["weight_decay"] == pytest.approx(shapes_exp.SPACE["weight_decay"].low)


def test_best_config_and_run_json(finished_run):
    _, run_dir, trials, _ = finished_run
    best = json.loads((run_dir / "best_config.json").read_text())
    ok = trials[trials["status"] != "failed"]
    assert best["val_acc"] == pytest.approx(ok["best_val_acc"].max())
    assert best["config"]["hidden"] == 0 and set(best["config"]) == set(shapes_exp.DEFAULTS)
    info = json.loads((run_dir / "run.json").read_text())
    assert info["pinned"] == {"hidden": 0, "schedule": "constant", "tta": 0, "joint_decode": 0.0}
    assert "hidden" not in info["searched"] and "tta" not in info["searched"]
    assert {"torch", "ray", "optuna", "git_commit"} <= set(info["versions"])
    assert info["plan"]["trials"] == 8 and info["plan"]["max_epochs"] == 3
    assert (run_dir / "tune").is_dir()


def test_nan_trials_fail_and_never_reach_optuna_as_values(finished_run):
    _, run_dir, trials, history = finished_run
    sgd = trials[trials["optimizer"] == "sgd"]
    assert len(sgd) > 0, "the seeded search proposed no SGD trial: the fault has nothing to hit"
    reached_two = sgd[sgd["status"] != "stopped"]  # ASHA may stop one after epoch 1, before the fault
    assert len(reached_two) > 0 and (reached_two["status"] == "failed").all()
    assert reached_two["reason"].str.contains("NonFiniteError").all()
    assert history[history["trial_id"].isin(sgd["trial_id"])]["epoch"].max() <= 1  # no NaN epoch recorded
    # a divergence is not retried (--max-failures 2 by default): each diverged trial hit NaN once
    log = (run_dir.parent.parent / "faults.log").read_text().splitlines()
    assert len(log) == len(reached_two) and len(set(log)) == len(log)
    assert (trials["status"] != "failed").sum() > 0  # and the search went on
    study = pd.read_csv(run_dir / "optuna_trials.csv")
    assert study.loc[study["state"] == "FAIL", "value"].isna().all()
    assert study["value"].dropna().map(math.isfinite).all()


def test_asha_stops_reach_optuna_as_pruned(finished_run):
    _, run_dir, trials, _ = finished_run
    stopped = trials[trials["status"] == "stopped"]
    assert len(stopped) > 0, "ASHA stopped no trial"
    assert (stopped["epochs_run"] < 3).all()
    study = pd.read_csv(run_dir / "optuna_trials.csv")
    # Optuna numbers trials in the order they were asked for, as trials.csv lists them.
    expected = trials["status"].map({"completed": "COMPLETE", "stopped": "PRUNED", "failed": "FAIL"})
    assert list(study.sort_values("number")["state"]) == list(expected)
    assert study.loc[study["state"] == "COMPLETE", "value"].notna().all()


def stored_study_matches_trials_csv(run_dir: Path) -> None:
    """The run's Optuna study, opened as a user would (optuna.load_study on the journal), holds one
    trial per row of trials.csv with the same state, params and (completed) value, linked by the Ray
    trial id; a stopped trial's last epoch is among its intermediate values (what TPE ranks it by)."""
    import optuna

    from search.io import read_csv
    from search.searcher import LOST, RAY_TRIAL_ID, STUDY_NAME, journal

    trials = read_csv(run_dir / "trials.csv").set_index("trial_id")
    metric = json.loads((run_dir / "run.json").read_text())["plan"]["rank_metric"]
    study = optuna.load_study(study_name=STUDY_NAME, storage=journal(run_dir / "optuna.journal"))
    lost = [t for t in study.trials if LOST in t.user_attrs]  # asked just before a kill -9, never run
    assert all(t.state.name == "FAIL" for t in lost) and len(lost) <= 1
    # a warm-start point Optuna queued (WAITING) and no trial took is no trial
    kept = [t for t in study.trials if LOST not in t.user_attrs and t.state.name != "WAITING"]
    assert sorted(t.user_attrs[RAY_TRIAL_ID] for t in kept) == sorted(trials.index)
    state = {"completed": "COMPLETE", "stopped": "PRUNED", "failed": "FAIL"}
    for t in kept:
        row = trials.loc[t.user_attrs[RAY_TRIAL_ID]]
        assert t.state.name == state[row["status"]]
        for key, value in t.params.items():
            assert row[key] == (pytest.approx(value) if isinstance(value, float) else value)
        if row["status"] == "completed":
            assert t.value == pytest.approx(row[f"last_{metric}"])
        if row["status"] == "stopped":
            assert t.intermediate_values[int(row["epochs_run"])] == pytest.approx(row[f"last_{metric}"])


def test_ended_trials_leave_their_history_but_not_their_weights(finished_run):
    """A default CPU run left 2.4 GB of checkpoints no one would read: an ended trial is never resumed."""
    _, run_dir, trials, _ = finished_run
    checkpoints = list((run_dir / "tune").glob("*/checkpoint_*"))
    assert checkpoints and not list((run_dir / "tune").glob("*/checkpoint_*/state.pt"))
    assert all((c / "history.json").is_file() for c in checkpoints)


def test_the_stored_optuna_study_matches_trials_csv(finished_run):
    code, run_dir, trials, _ = finished_run
    assert {"completed", "stopped", "failed"} <= set(trials["status"])
    stored_study_matches_trials_csv(run_dir)


def test_warm_start_from_an_earlier_run_tells_optuna_its_finished_trials(finished_run, tmp_path, capsys):
    """The new study starts with the earlier run's completed trials (their last ranking value) and
    its stopped ones (pruned, with their epochs), linked to them; failed ones carry no value."""
    import optuna

    from search.io import read_csv
    from search.searcher import STUDY_NAME, journal
    from search.warm import FROM_RUN, FROM_TRIAL

    _, earlier, _, _ = finished_run
    trials = read_csv(earlier / "trials.csv")
    capsys.readouterr()
    assert search(tmp_path, "w", "--trials", "2", "--max-epochs", "1", "--concurrency", "1", "--set", "hidden=0",
                  "--set", "schedule=constant", "--seed", "1", "--warm-start-from", str(earlier)) == 0
    out = capsys.readouterr().out
    study = optuna.load_study(study_name=STUDY_NAME, storage=journal(tmp_path / "shapes" / "w" / "optuna.journal"))
    told = {t.user_attrs[FROM_TRIAL]: t for t in study.trials if FROM_RUN in t.user_attrs}
    usable = trials[trials["status"].isin(["completed", "stopped"])].set_index("trial_id")
    assert set(told) == set(usable.index) and len(study.trials) == len(told) + 2
    for tid, t in told.items():  # 3-epoch trials told to a 1-epoch search: pruned with their epochs, never complete
        row = usable.loc[tid]
        assert t.state.name == "PRUNED" and t.intermediate_values
        assert t.params["lr"] == pytest.approx(row["lr"])
    failed = int((trials["status"] == "failed").sum())
    assert f"warm start: {len(told)} trials of {earlier} told to Optuna" in out
    assert "taken as pruned, not complete: trained for 3 epochs (this search: 1)" in out
    assert (f"{failed} without a value" in out) == (failed > 0)


def test_warm_start_from_a_folder_that_is_not_a_run_is_one_line(tmp_path, capsys):
    assert search(tmp_path, "w", "--warm-start-from", str(tmp_path / "nothing")) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "--warm-start-from" in err and "not a run folder" in err
    assert not (tmp_path / "shapes" / "w").exists()


def test_same_seed_same_trials(finished_run, tmp_path):
    """Concurrency 1: the seeded sampler proposes the same configs in the same order."""
    _, _, trials, _ = finished_run
    assert search(tmp_path, "again", "--trials", "3", "--max-epochs", "1", "--concurrency", "1",
                  "--set", "hidden=0", "--set", "schedule=constant", "--seed", "0",
                  "--set", "tta=0", "--set", "joint_decode=0") == 0
    again = pd.read_csv(tmp_path / "shapes" / "again" / "trials.csv")
    keys = list(shapes_exp.SPACE)
    assert again[keys].iloc[:3].equals(trials[keys].iloc[:3])


def copy_run(run_dir: Path, results: Path, name: str) -> Path:
    """A finished run under another results root, as a user's folder would be (grown or refused there)."""
    import shutil

    copy = results / "shapes" / name
    shutil.copytree(run_dir, copy, ignore=shutil.ignore_patterns(".lock"))
    info = json.loads((copy / "run.json").read_text())
    info["name"], info["argv"] = name, [a if a != run_dir.name else name for a in info["argv"]]
    (copy / "run.json").write_text(json.dumps(info))
    return copy


def test_grow_a_finished_search(finished_run, tmp_path, capsys):
    """`--resume --trials 10` on a finished 8-trial search: two new trials in a new Ray experiment
    (tune-2), the same Optuna study, the first 8 trials neither rerun nor changed."""
    _, run_dir, before, history_before = finished_run
    grown = copy_run(run_dir, tmp_path, "g")
    results_before = {p.relative_to(grown): p.read_bytes() for p in (grown / "tune").glob("*/result.json")}
    capsys.readouterr()
    assert cli.run(run.main, ["shapes", "--results", str(tmp_path), "--name", "g", "--resume", "--trials", "10"]) == 0
    assert "growing the finished search from 8 to 10 trials" in capsys.readouterr().out
    after, history = pd.read_csv(grown / "trials.csv"), pd.read_csv(grown / "history.csv")
    assert len(after) == 10 and after["trial_id"].is_unique
    columns = ["trial_id", "status", "epochs_run", "best_val_acc", "lr", "dropout"]
    pd.testing.assert_frame_equal(after[columns].iloc[:8], before[columns])
    assert len(history) == after["epochs_run"].sum() and not history.duplicated(["trial_id", "epoch"]).any()
    pd.testing.assert_frame_equal(history.iloc[:len(history_before)][["trial_id", "epoch", "val_acc"]],
                                  history_before[["trial_id", "epoch", "val_acc"]])
    assert {p.relative_to(grown): p.read_bytes() for p in (grown / "tune").glob("*/result.json")} == results_before
    assert len(list((grown / "tune-2").glob("*/params.json"))) == 2
    info = json.loads((grown / "run.json").read_text())
    assert info["plan"]["trials"] == 10 and info["search_done"]
    assert [(g["round"], g["trials_before"], g["trials"]) for g in info["grown"]] == [(2, 8, 10)]
    stored_study_matches_trials_csv(grown)  # one study: the 8 earlier trials and the 2 new ones
    pd.testing.assert_frame_equal(pd.read_csv(grown / "round-1" / "trials.csv"), before)  # the search it grew from


@pytest.mark.parametrize("extra, message", [
    (["--trials", "7"], "has 8 trials already"),
    (["--trials", "6"], "a run never shrinks"),
    (["--max-epochs", "5"], "--max-epochs: --resume continues"),
    (["--set", "dropout=0.2"], "--set: --resume continues"),
])
def test_growing_or_changing_a_run_is_refused_in_one_line(finished_run, tmp_path, capsys, extra, message):
    _, run_dir, _, _ = finished_run
    copy = copy_run(run_dir, tmp_path, "x")
    record = (copy / "run.json").read_bytes()
    assert cli.run(run.main, ["shapes", "--results", str(tmp_path), "--name", "x", "--resume", *extra]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1, err
    assert (copy / "run.json").read_bytes() == record and not (copy / "tune-2").exists()


@pytest.mark.parametrize("change, message", [
    ({"search_done": False}, "interrupted; finish it first"),
    ({"plan": {"scheduler": "pbt"}}, "population is fixed"),
])
def test_an_interrupted_or_population_based_run_is_not_grown(finished_run, tmp_path, capsys, change, message):
    _, run_dir, _, _ = finished_run
    copy = copy_run(run_dir, tmp_path, "y")
    info = json.loads((copy / "run.json").read_text())
    for key, value in change.items():
        info[key] = {**info[key], **value} if isinstance(value, dict) else value
    (copy / "run.json").write_text(json.dumps(info))
    assert cli.run(run.main, ["shapes", "--results", str(tmp_path), "--name", "y", "--resume", "--trials", "12"]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1, err


def test_a_grown_search_tpe_learns_from_the_earlier_trials(tmp_path):
    """The same seed, the same earlier configs, other values: TPE's next proposal differs, so it is
    built on the earlier trials told in the run's study (what a grown search continues)."""
    import optuna

    from search.searcher import STUDY_NAME, distribution, journal, make_searcher, to_tune

    space = {k: shapes_exp.SPACE[k] for k in ("lr", "dropout")}
    dists = {k: distribution(d) for k, d in space.items()}
    rng = __import__("random").Random(0)
    points = [{"lr": 10 ** rng.uniform(-4, -2), "dropout": rng.uniform(0.0, 0.6)} for _ in range(8)]

    def proposal(values: list[float], name: str) -> dict:
        study = optuna.create_study(study_name=STUDY_NAME, storage=journal(tmp_path / f"{name}.journal"))
        study.add_trials([optuna.trial.create_trial(params=p, distributions=dists, value=v)
                          for p, v in zip(points, values, strict=True)])
        searcher = make_searcher(3, warm_start=[], metric="val_rank_loss", mode="min", trials=12,
                                 study=tmp_path / f"{name}.journal")
        searcher.set_search_properties("val_rank_loss", "min", to_tune(space))
        return searcher.suggest("t1")

    by_lr = [math.log10(p["lr"]) for p in points]  # low loss where lr is low, then where it is high
    low, high = proposal(by_lr, "a"), proposal([-v for v in by_lr], "b")
    assert low == proposal(by_lr, "c")  # seeded: the same study gives the same proposal
    assert low["lr"] < high["lr"]


def interrupted_search(tmp_path, stop) -> tuple[str, pd.DataFrame]:
    """A 5-trial smoke search stopped by `stop` once two trials have completed: (stderr, trials.csv then)."""
    cmd = [sys.executable, "-m", "search.run", "shapes", "--smoke", "--no-retrain", "--trials", "5",
           "--max-epochs", "2", "--concurrency", "1", "--results", str(tmp_path), "--name", "r"]
    proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONUNBUFFERED": "1"})
    trials_csv = tmp_path / "shapes" / "r" / "trials.csv"
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline:  # wait for two ended trials, then Ctrl-C
        if trials_csv.exists() and (pd.read_csv(trials_csv)["status"] == "completed").sum() >= 2:
            break
        time.sleep(0.5)
    proc.send_signal(stop)
    _, err = proc.communicate(timeout=120)
    if stop == signal.SIGKILL:  # no chance to clean up: a stale lock, Ray's last saved state
        assert proc.returncode == -signal.SIGKILL
    else:
        assert proc.returncode == 130, err[-2000:]
        assert f"--name r --resume --results {tmp_path}" in err  # where the run lives: not ./results
    return err, pd.read_csv(trials_csv)


def resumed_without_repeating(tmp_path, before: pd.DataFrame) -> None:
    done_before = before[before["status"] == "completed"]
    assert 2 <= len(done_before) < 5
    assert cli.run(run.main, ["shapes", "--results", str(tmp_path), "--name", "r", "--resume"]) == 0
    after = pd.read_csv(tmp_path / "shapes" / "r" / "trials.csv")
    assert len(after) == 5 and after["trial_id"].is_unique
    assert set(after["status"]) <= {"completed", "stopped"}
    kept = after.set_index("trial_id").loc[done_before["trial_id"]]
    assert list(kept["epochs_run"]) == list(done_before["epochs_run"])  # not run again
    history = pd.read_csv(tmp_path / "shapes" / "r" / "history.csv")
    assert not history.duplicated(["trial_id", "epoch"]).any()
    stored_study_matches_trials_csv(tmp_path / "shapes" / "r")


@pytest.mark.slow
def test_kill_9_then_resume_from_a_moved_copy_finishes_without_repeating(tmp_path):
    _, before = interrupted_search(tmp_path, signal.SIGKILL)
    # Resumed from a copy in another results folder, as after moving the run: the copy's own study takes the
    # trials left (Ray's pickled searcher names the first folder's journal), the first folder stays as it was.
    first = tmp_path / "shapes" / "r"
    journal_then = (first / STUDY_FILE).read_bytes()
    shutil.copytree(first, tmp_path / "moved" / "shapes" / "r", symlinks=True)
    resumed_without_repeating(tmp_path / "moved", before)
    assert (first / STUDY_FILE).read_bytes() == journal_then


def cut_rays_saved_state_short(tune_dir):
    """What a kill -9 during Ray's copy of its state into tune/ leaves: emptied files, its own and
    the trials' (the first trial has completed)."""
    state = [path for pattern in ("experiment_state-*.json", "searcher-state-*.pkl") for path in tune_dir.glob(pattern)]
    assert len(state) == 2
    first = min(tune_dir.glob("run_trial_*"), key=lambda p: int(p.name.split("_")[3]))  # run_trial_<id>_<index>_
    for path in (*state, first / "params.json", first / "result.json"):
        path.write_bytes(b"")


@pytest.mark.slow
def test_ctrl_c_then_a_resume_with_rays_saved_state_cut_short_is_refused_without_its_copy_and_takes_it_with(
        tmp_path, capsys):
    """One search stopped by `kill` (SIGTERM, which takes the Ctrl-C path: exit 130, naming --resume; the
    trial it cut still running in the stored study, saying when; test_pbt.py sends a real SIGINT), its
    saved state then cut short as a kill during Ray's copy leaves it. Without the staging copy, --resume
    says so in one line and runs nothing; with it, --resume takes the whole state from there and finishes
    without repeating a trial. (One interrupted search for these cases: each costs a search otherwise.)"""
    _, before = interrupted_search(tmp_path, signal.SIGTERM)  # as Ctrl-C: routed to Ray Tune's SIGINT handler
    # the trial cut mid-way stays running in the stored study (a resume tells its result), saying when
    import optuna

    from search.searcher import INTERRUPTED, RAY_TRIAL_ID, STUDY_NAME, journal
    study = optuna.load_study(study_name=STUDY_NAME, storage=journal(tmp_path / "shapes" / "r" / STUDY_FILE))
    # (and one ASHA stopped just before the stop may not have been told yet: the resume settles it)
    status = dict(zip(before["trial_id"], before["status"], strict=True))  # not yet reported: not there
    for t in study.trials:
        running = t.state.name == "RUNNING"
        assert running or status[t.user_attrs[RAY_TRIAL_ID]] != "running"
        assert ("interrupted at" in t.user_attrs.get(INTERRUPTED, "")) == running
    assert any(t.state.name == "RUNNING" for t in study.trials)  # one trial at a time: the next had begun
    run_dir = tmp_path / "shapes" / "r"
    tune_dir = run_dir / "tune"
    cut_rays_saved_state_short(tune_dir)
    staging = (run_dir / "ray_staging.txt").read_bytes()
    (run_dir / "ray_staging.txt").unlink()
    folders = sorted(p.name for p in tune_dir.iterdir())
    assert cli.run(run.main, ["shapes", "--results", str(tmp_path), "--name", "r", "--resume"]) == 2
    err = capsys.readouterr().err
    assert "cut short by a hard kill" in err and "new --name" in err and "Traceback" not in err
    assert sorted(p.name for p in tune_dir.iterdir()) == folders  # no trial started over
    assert pd.read_csv(run_dir / "trials.csv").equals(before)

    (run_dir / "ray_staging.txt").write_bytes(staging)  # the copy is there after all
    resumed_without_repeating(tmp_path, before)
    assert "Ray's saved state was cut short by the kill" in capsys.readouterr().out


@pytest.mark.slow
def test_a_search_ended_by_its_time_budget_is_done_with_its_cut_trials_stopped(tmp_path, capsys):
    """Tune's time budget ends the trials still running without a completion callback for each: they must
    not stay "running" in trials.csv (a run that looks interrupted), and the search counts as done."""
    assert cli.run(run.main, ["shapes", "--smoke", "--no-retrain", "--trials", "4", "--max-epochs", "5000",
                              "--scheduler", "fifo", "--set", "patience=0", "--time-budget", "0.5",
                              "--results", str(tmp_path),
                              "--name", "t"]) == 0
    trials = pd.read_csv(tmp_path / "shapes" / "t" / "trials.csv")
    cut = trials[trials["epochs_run"] < 5000]
    assert len(cut) >= 1 and set(trials["status"]) <= {"completed", "stopped"}
    assert set(cut["status"]) == {"stopped"} and cut["reason"].str.contains("time budget").all()
    # ended, so never resumed: their weights go too (their histories stay, for the tables)
    tune_dir = tmp_path / "shapes" / "t" / "tune"
    assert not list(tune_dir.rglob("state.pt")) and list(tune_dir.rglob("history.json"))
    assert json.loads((tmp_path / "shapes" / "t" / "run.json").read_text())["search_done"] is True
    assert "search done:" in capsys.readouterr().out
    # and the stored study says so too: nothing running for ever in optuna.load_study
    stored_study_matches_trials_csv(tmp_path / "shapes" / "t")

    # a budget that ends before any trial reports (Ray takes seconds to start one): one line, not a resume hint
    assert cli.run(run.main, ["shapes", "--smoke", "--no-retrain", "--time-budget", "0.005", "--results",
                              str(tmp_path), "--name", "tiny"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1] == ("error: the time budget (0.005 min) ended the search before any trial reported an epoch; "
                       "give a larger --time-budget")


@pytest.mark.slow
@pytest.mark.xdist_group("network")  # see tests/test_security.py
def test_two_node_cluster_via_address_survives_losing_the_worker_node_mid_trial(tmp_path, monkeypatch):
    """Two nodes of one CPU (a head and a worker, each its own raylet, as `ray start` makes them), a search
    through --address and --storage: one trial on each node. Once both have reported, the worker node is
    killed (SIGKILL of its raylet and workers, no goodbye); its trial is retried on the head from its last
    checkpoint in the shared storage, the search finishes, and no trial or epoch is lost or counted twice."""
    import threading

    import ray
    from ray.cluster_utils import Cluster

    # the GCS notices a silent node in about a second instead of Ray's default 30 s (environment, not
    # _system_config: a _system_config replaces the cluster's settings, token authentication with them)
    for key, value in {"initial_delay_ms": 0, "period_ms": 300, "timeout_ms": 300, "failure_threshold": 3}.items():
        monkeypatch.setenv(f"RAY_health_check_{key}", str(value))
    # Token authentication as a user's cluster has it. Left unset, Ray's test Cluster starts without it, and
    # the search rightly refuses to join; this test passed in the full suite only because an earlier test's
    # local Ray had set RAY_AUTH_MODE=token in this process's environment.
    import secrets

    from ray._private.authentication_test_utils import reset_auth_token_state

    monkeypatch.setenv("RAY_AUTH_MODE", "token")
    monkeypatch.setenv("RAY_AUTH_TOKEN", secrets.token_hex(16))
    reset_auth_token_state()  # Ray caches the mode and token per process
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1})
    worker = cluster.add_node(num_cpus=1)
    cluster.wait_for_nodes()
    shared, killed = tmp_path / "shared", threading.Event()

    def kill_worker_once_both_trials_report():
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline:
            # a trial's first checkpoint lands in the storage as it reports its first epoch (the driver's
            # progress.csv lags behind by seconds): both trials mid-way, each with a checkpoint
            if len({p.parent for p in shared.glob("*/*/checkpoint_000000")}) == 2:
                cluster.remove_node(worker, allow_graceful=False)
                killed.set()
                return
            time.sleep(0.2)

    killer = threading.Thread(target=kill_worker_once_both_trials_report, daemon=True)
    killer.start()
    try:
        code = search(tmp_path, "c", "--trials", "2", "--max-epochs", "8", "--scheduler", "fifo",
                      "--set", "patience=0", "--address", cluster.address,
                      "--storage", str(shared))  # several nodes: a folder all of them see
    finally:
        killer.join(timeout=5)
        ray.shutdown()
        cluster.shutdown()
        monkeypatch.undo()
        reset_auth_token_state()
    assert killed.is_set(), "the worker node was never killed: the trials did not both report in time"
    assert code == 0
    run_dir = tmp_path / "shapes" / "c"
    trials = pd.read_csv(run_dir / "trials.csv")
    info = json.loads((run_dir / "run.json").read_text())
    assert info["hardware"]["nodes"] == 2 and info["plan"]["concurrency"] == 2
    assert len(trials) == 2 and set(trials["status"]) == {"completed"} and (trials["epochs_run"] == 8).all()
    assert trials["node"].nunique() == 1  # the lost node's trial ended on the head: it was retried there
    history = pd.read_csv(run_dir / "history.csv")  # every epoch of both trials once, the retried one's too
    assert sorted(history.groupby("trial_id")["epoch"].apply(sorted).map(tuple)) == [tuple(range(1, 9))] * 2
    assert json.loads(run_dir.joinpath("run.json").read_text())["search_done"] is True


@pytest.mark.slow
@pytest.mark.xdist_group("network")  # see tests/test_security.py
def test_two_nodes_started_with_ray_start_as_the_readme_says(tmp_path, monkeypatch):
    """The README's cluster recipe on 127.0.0.1: a head and a worker started by `ray start` with token
    authentication (the token in RAY_AUTH_TOKEN), then a smoke search through --address and --storage
    whose two trials run one on each node."""
    import secrets
    import socket

    ray_cli = str(Path(sys.executable).parent / "ray")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setenv("RAY_AUTH_MODE", "token")
    monkeypatch.setenv("RAY_AUTH_TOKEN", secrets.token_hex(16))
    common = ["--node-ip-address", "127.0.0.1", "--num-cpus", "1", "--num-gpus", "0", "--disable-usage-stats",
              "--block"]  # --block: the node lives as long as this process, and goes with its SIGTERM
    nodes = [subprocess.Popen([ray_cli, "start", "--head", "--port", str(port), "--include-dashboard=false",
                               *common], stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)]
    try:
        address = f"127.0.0.1:{port}"
        deadline = time.monotonic() + 90
        while subprocess.run([ray_cli, "status", "--address", address], capture_output=True).returncode != 0:
            assert time.monotonic() < deadline, "the head did not start"
            time.sleep(1)
        nodes.append(subprocess.Popen([ray_cli, "start", "--address", address, *common],
                                      stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT))
        alive = [sys.executable, "-c", f"import ray; ray.init(address={address!r}, log_to_driver=False); "
                 "print(sum(n['Alive'] for n in ray.nodes()))"]
        while subprocess.run(alive, capture_output=True, text=True).stdout.strip() != "2":
            assert time.monotonic() < deadline, "the worker did not join"
            time.sleep(1)
        # a user's command, in its own process: Ray reads RAY_AUTH_MODE when it is imported
        done = subprocess.run([sys.executable, "-m", "search.run", "shapes", "--smoke", "--no-retrain", "--trials", "2",
                               "--max-epochs", "1", "--results", str(tmp_path), "--name", "c", "--address", address,
                               "--storage", str(tmp_path / "shared")], cwd=REPO, capture_output=True, text=True)
        assert done.returncode == 0, done.stderr[-2000:]
    finally:
        for node in reversed(nodes):
            node.terminate()
            node.wait(timeout=60)
    trials = pd.read_csv(tmp_path / "shapes" / "c" / "trials.csv")
    info = json.loads((tmp_path / "shapes" / "c" / "run.json").read_text())
    assert info["hardware"]["nodes"] == 2 and len(trials) == 2 and trials["node"].nunique() == 2
    assert info["storage_folder"].startswith("shapes-c-")  # the run's own folder under --storage, unique
    assert (tmp_path / "shared" / info["storage_folder"]).is_dir() and not (tmp_path / "shapes" / "c" / "tune").exists()

    # `ray start --head` left the (now stopped) cluster's address in /tmp/ray for ray.init() to join:
    # a local run (no --address) starts its own Ray all the same
    from ray._common.utils import get_ray_address_file

    left = Path(get_ray_address_file(None))  # /tmp/ray/ray_current_cluster
    assert left.read_text().strip().endswith(f":{port}")
    try:
        local_env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_AUTH")}  # its own token
        done = subprocess.run([sys.executable, "-m", "search.run", "shapes", "--smoke", "--no-retrain", "--trials", "1",
                               "--max-epochs", "1", "--results", str(tmp_path), "--name", "local"], cwd=REPO,
                              capture_output=True, text=True, env=local_env)
        assert done.returncode == 0, done.stderr[-2000:]
    finally:
        if left.is_file() and left.read_text().strip().endswith(f":{port}"):
            left.unlink()  # leave the machine as the test found it


@pytest.mark.parametrize("args, message", [
    (["--set", "nosuchkey=1"], "unknown config key nosuchkey"),
    (["--set", "dropout=0.9"], "outside the search space"),
    (["--set", "lr=abc"], "takes a float"),
    (["--trials", "0"], "--trials: 0: give a whole number of at least 1"),
    (["--max-epochs", "-1"], "--max-epochs: -1: give a whole number"),
    (["--gpus-per-trial", "0.5"], "GPUs found"),
    (["--address", "127.0.0.1:1"], "cannot join"),
    (["--budget", "nosuch"], "--budget nosuch: shapes has the budgets 90min"),
])
def test_bad_options_one_line_exit_2_nothing_written(tmp_path, capsys, args, message):
    assert cli.run(run.main, ["shapes", "--results", str(tmp_path), "--name", "x", *args]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1, err
    assert not (tmp_path / "shapes" / "x").exists()


def test_the_resume_command_names_where_the_run_lives_and_its_cluster(monkeypatch):
    """The run's own options come back from its run.json on --resume; where it lives and the cluster it
    ran on do not, so the printed command carries them where they are not the defaults."""
    import argparse

    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    exp = shapes_exp.EXPERIMENT
    assert run.resume_command(exp, "r", argparse.Namespace(results=Path("results"), address=None)) == \
        "python -m search.run shapes --name r --resume"
    elsewhere = argparse.Namespace(results=Path("/data/my runs"), address="10.0.0.1:6379")
    assert run.resume_command(exp, "r", elsewhere) == \
        "python -m search.run shapes --name r --resume --results '/data/my runs' --address 10.0.0.1:6379"
    monkeypatch.setenv("RAY_ADDRESS", "10.0.0.1:6379")  # the resume finds the cluster the same way
    assert run.resume_command(exp, "r", elsewhere).endswith("--results '/data/my runs'")


def test_unknown_experiment_lists_known_ones(capsys):
    assert cli.run(run.main, ["nosuch"]) == 2
    assert "known: shapes" in capsys.readouterr().err
    assert cli.run(run.main, ["--list"]) == 0
    assert capsys.readouterr().out.startswith("shapes")


def test_tables_skip_a_trial_whose_params_are_being_written(tmp_path):
    """Ray creates a trial folder, then writes params.json: a table rebuilt in between must not fail."""
    from search import schedulers
    from search.tables import collect

    (tmp_path / "run_trial_abc12_00001_x").mkdir()
    (tmp_path / "run_trial_abc12_00001_x" / "params.json").write_text("")
    trials, history = collect(tmp_path, {"epochs": 2}, "val_acc", "max", schedulers.get("asha").stop_reason)
    assert trials.empty and history.empty


@pytest.mark.slow
def test_a_storage_search_killed_hard_twice_at_random_points_keeps_every_trial_once(tmp_path):
    """benchmarks/driver_kills.py with 2 kills (seed 3: 1.9 s and 4.4 s after the plan is printed) of a
    --storage search: every trial once, every epoch row once, a trial completed before a kill kept as it
    was, the study as trials.csv. (The benchmark's 10-kill log: benchmarks/logs/.)"""
    import importlib.util

    spec = importlib.util.spec_from_file_location("driver_kills", REPO / "benchmarks" / "driver_kills.py")
    driver_kills = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(driver_kills)
    out = driver_kills.kill_and_resume(tmp_path, kills=2, seed=3, storage=True, trials=4)
    assert out["problems"] == []
    assert [r["landed"] for r in out["kills"]] == [True, True]
    assert json.loads((tmp_path / "shapes" / "k" / "run.json").read_text())["storage_folder"]
    stored_study_matches_trials_csv(tmp_path / "shapes" / "k")
