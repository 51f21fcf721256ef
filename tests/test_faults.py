"""Faults inside trials: a crash, a SIGKILLed worker, an out-of-memory error are retried from the
trial's last checkpoint up to --max-failures; a fault that persists ends the trial as failed with
its reason, the search goes on, and Optuna never receives a value for it."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from search import cli, run
from search.faults import ENV, LOG_ENV, Fault, from_env
from search.io import read_csv

# One search for the four faults a search survives: the baseline's three schedule variants (its first
# trials, dropout 0.5) and TPE's own draw (another dropout) each get one; one trial at a time, no early
# stopping (fifo), so every trial reaches its fault's epoch; one retry each (--max-failures 1).
FAULTS = ("hang@2x1:schedule=constant,dropout=0.5;"  # the baseline stops reporting in epoch 2, once
          "oom@2x1:schedule=onecycle,dropout=0.5;"  # out of memory in epoch 2 (resumes from epoch 1's checkpoint)
          "error@2:schedule=cosine,dropout=0.5;"  # an error every time in epoch 2: fails after its one retry
          "kill@1x1")  # TPE's draw: its worker SIGKILLed in epoch 1 (no checkpoint yet: it starts again)


@pytest.fixture(scope="module")
def fault_search(tmp_path_factory, generated_cache):
    """(exit code, trials.csv, history.csv, optuna_trials.csv, fault log lines, printed output, seconds)."""
    import contextlib
    import io
    import time

    from search import watchdog

    tmp_path = tmp_path_factory.mktemp("faults")
    out = io.StringIO()
    with pytest.MonkeyPatch.context() as mp, contextlib.redirect_stdout(out):
        mp.setenv("VISION_HPSEARCH_CACHE", str(generated_cache))
        mp.setenv(ENV, FAULTS)
        mp.setenv(LOG_ENV, str(tmp_path / "faults.log"))
        mp.setattr(watchdog, "HUNG_FLOOR_S", 4.0)  # a hung trial is killed after 3x its usual epoch, >= 4 s
        mp.setattr(watchdog, "HUNG_FACTOR", 3.0)
        started = time.monotonic()
        code = cli.run(run.main, ["shapes", "--smoke", "--no-retrain", "--trials", "4", "--max-epochs", "2",
                                  "--concurrency", "1", "--scheduler", "fifo", "--max-failures", "1",
                                  "--set", "optimizer=adam", "--results", str(tmp_path), "--name", "f"])
        seconds = time.monotonic() - started
    run_dir = tmp_path / "shapes" / "f"
    log = (tmp_path / "faults.log").read_text().splitlines() if (tmp_path / "faults.log").exists() else []
    return code, read_csv(run_dir / "trials.csv"), read_csv(run_dir / "history.csv"), \
        pd.read_csv(run_dir / "optuna_trials.csv"), log, out.getvalue(), seconds


def fired(log: list[str], kind: str) -> list[str]:
    """The fault log's "KIND EPOCH" of each firing of `kind`."""
    return [line.rsplit(" ", 1)[0] for line in log if line.startswith(kind + " ")]


def trial(trials: pd.DataFrame, schedule: str | None) -> pd.Series:
    """The trial of the baseline's `schedule` variant; None: TPE's own draw (dropout not 0.5)."""
    rows = trials[trials["dropout"] != 0.5] if schedule is None else \
        trials[(trials["dropout"] == 0.5) & (trials["schedule"] == schedule)]
    assert len(rows) == 1, trials[["trial_id", "dropout", "schedule", "status"]].to_string()
    return rows.iloc[0]


def test_fault_spec_parses(monkeypatch):
    assert Fault.parse("kill@2x1:optimizer=adam") == Fault("kill", 2, (("optimizer", "adam"),), 1)
    assert Fault.parse("nan@3") == Fault("nan", 3)
    assert Fault.parse("oom@2:schedule=cosine,dropout=0.5").when == (("schedule", "cosine"), ("dropout", "0.5"))
    monkeypatch.setenv(ENV, "kill@2:dropout=0.5,schedule=onecycle;oom@3")
    assert from_env({"dropout": 0.5, "schedule": "onecycle"}).kind == "kill"
    assert from_env({"dropout": 0.5, "schedule": "cosine"}).kind == "oom"  # every pair must hold
    for bad in ("kill@2xx", "kill@2:dropout"):
        with pytest.raises(ValueError):
            Fault.parse(bad)


@pytest.mark.slow
def test_transient_faults_are_retried_from_the_checkpoint(fault_search):
    """The onecycle variant runs out of memory in epoch 2 (it resumes from its epoch-1 checkpoint); TPE's
    trial's worker is SIGKILLed in epoch 1 (no checkpoint yet: it starts again)."""
    code, trials, history, study, log, _, _ = fault_search
    assert code == 0
    shown = trials[["trial_id", "status", "epochs_run", "reason"]].to_string()
    oom, killed = trial(trials, "onecycle"), trial(trials, None)
    assert oom["status"] == "completed" and killed["status"] == "completed", shown
    assert fired(log, "oom") == ["oom 2"] and fired(log, "kill") == ["kill 1"], log  # each fired once
    assert "recovered from" in oom["reason"] and "OutOfMemoryError" in oom["reason"], shown
    assert "recovered from" in killed["reason"], shown
    assert not history.duplicated(["trial_id", "epoch"]).any()  # epoch 1 of the OOM trial not run again
    assert (oom["epochs_run"], killed["epochs_run"]) == (2, 2), shown


@pytest.mark.slow
def test_a_hung_trial_is_stopped_marked_and_retried_and_the_search_goes_on(fault_search):
    """The baseline stops reporting in epoch 2 (an hour's sleep): the watchdog kills it after 3x the usual
    epoch time (at least 4 s here), Ray retries it from its epoch-1 checkpoint, trials.csv says why."""
    code, trials, history, _, log, out, seconds = fault_search
    assert code == 0 and seconds < 300  # not the hour of the hang
    shown = trials[["trial_id", "status", "epochs_run", "reason"]].to_string()
    hung = trial(trials, "constant")
    assert fired(log, "hang") == ["hang 2"], log
    assert hung["status"] == "completed" and "hung" in hung["reason"], shown
    assert trials["reason"].fillna("").str.contains("hung").sum() == 1, shown
    assert not history[history["trial_id"] == hung["trial_id"]].duplicated(["epoch"]).any()
    assert "hung: no report for" in out


@pytest.mark.slow
def test_a_persistent_fault_fails_after_max_failures_and_the_search_goes_on(fault_search):
    code, trials, history, study, log, _, _ = fault_search
    assert code == 0
    failed = trials[trials["status"] == "failed"]
    assert list(failed["schedule"]) == ["cosine"] and list(failed["dropout"]) == [0.5]  # that variant only
    assert "injected error" in failed["reason"].iloc[0]
    assert fired(log, "error") == ["error 2", "error 2"]  # the first attempt and one retry, both at epoch 2
    assert (trials["status"] == "completed").sum() == 3  # the search went on past it
    assert study.loc[study["state"] == "FAIL", "value"].isna().all() and (study["state"] == "FAIL").sum() == 1
    assert set(study["state"]) == {"COMPLETE", "FAIL"}  # no value of a failed trial reached Optuna


def test_an_unreadable_checkpoint_restarts_the_trial_with_a_warning(tmp_path, capsys):
    import torch

    from search.trial import read_state

    good = tmp_path / "state.pt"
    torch.save({"epoch": 3, "w": torch.ones(1000)}, good)
    assert read_state(good, torch.device("cpu"))["epoch"] == 3
    cut = tmp_path / "cut.pt"
    cut.write_bytes(good.read_bytes()[:200])  # a write cut short (full disk, crash)
    assert read_state(cut, torch.device("cpu")) is None
    assert "unreadable" in capsys.readouterr().err


def test_a_restarted_trial_keeps_only_its_rerun_epochs():
    from search.tables import _latest_per_epoch

    rows = [{"epoch": e, "v": i} for i, e in enumerate([1, 2, 3, 1, 2, 3, 4])]
    assert [(r["epoch"], r["v"]) for r in _latest_per_epoch(rows)] == [(1, 3), (2, 4), (3, 5), (4, 6)]
    assert _latest_per_epoch(rows[:3]) == rows[:3]


def test_epochs_ray_had_not_copied_yet_come_from_the_trials_checkpoint(tmp_path):
    """Interrupted between two of Ray's copies of result.json, a trial's newest rows are missing
    there; its checkpoint's history has them, and a row Ray did copy is kept as Ray wrote it."""
    from search.tables import _with_checkpointed_epochs

    for n in (1, 3):  # an older checkpoint, then the latest
        folder = tmp_path / f"checkpoint_{n:06d}"
        folder.mkdir()
        (folder / "history.json").write_text(json.dumps([{"epoch": e, "v": -e} for e in range(1, n + 1)]))
    rows = [{"epoch": 1, "v": 1, "timestamp": 5}, {"epoch": 2, "v": 2}]
    assert _with_checkpointed_epochs(rows, tmp_path) == [*rows, {"epoch": 3, "v": -3}]
    assert _with_checkpointed_epochs(rows, tmp_path / "none") == rows


def killed_trial_folder(parent: Path, trial_id: str, *, params: str, results: str) -> Path:
    """A finished 2-epoch trial's folder as Ray's copy into tune/ may leave it after a kill -9."""
    folder = parent / f"run_trial_{trial_id}_00001_lr=0.01_2026-11-30"
    (folder / "checkpoint_000001").mkdir(parents=True)
    (folder / "params.json").write_text(params)
    (folder / "result.json").write_text(results)
    history = [{"epoch": e, "val_acc": e / 10} for e in (1, 2)]
    (folder / "checkpoint_000001" / "history.json").write_text(json.dumps(history))
    (folder / "checkpoint_000001" / "ended").write_text("")
    return folder


REPORTS = "".join(json.dumps({"epoch": e, "val_acc": e / 10, "finished": e == 2, "trial_id": "abc12",
                              "config": {"lr": 0.01}}) + "\n" for e in (1, 2))


@pytest.mark.parametrize("params, results", [("", REPORTS), ('{"lr": 0.01}', ""), ("", "")],
                         ids=["params-cut", "results-cut", "both-cut"])
def test_a_finished_trial_whose_files_a_kill_cut_short_keeps_its_row(tmp_path, params, results):
    """A kill -9 while Ray copies its staging folder into tune/ empties files mid-copy (CI, stop 26:
    a finished trial's params.json, and the trial vanished from trials.csv on resume). The staging
    folder's whole copies replace them; without one, the tables read the config from the trial's
    reports and the epochs from its last checkpoint."""
    from search import ray_state, schedulers
    from search.tables import collect

    tune, staging = tmp_path / "tune", tmp_path / "staging"
    killed_trial_folder(tune, "abc12", params=params, results=results)
    whole = killed_trial_folder(staging, "abc12", params='{"lr": 0.01}', results=REPORTS)
    stop_reason = schedulers.get("asha").stop_reason
    if results:  # the config read from the reports, without the staging copy
        trials, _ = collect(tune, {"epochs": 2}, "val_acc", "max", stop_reason)
        assert list(trials["lr"]) == [0.01] and list(trials["status"]) == ["completed"]
    if params:  # the epochs and the ending from the last checkpoint, without the staging copy
        trials, history = collect(tune, {"epochs": 2}, "val_acc", "max", stop_reason)
        assert list(trials["status"]) == ["completed"] and list(history["epoch"]) == [1, 2]
    repaired = ray_state.repair_trials(tune, staging)
    assert repaired == [f"abc12/{n}" for n, cut in (("params.json", params), ("result.json", results)) if not cut]
    for name in ("params.json", "result.json"):
        assert (tune / whole.name / name).read_text() == (whole / name).read_text()
    trials, history = collect(tune, {"epochs": 2}, "val_acc", "max", stop_reason)
    assert list(trials["trial_id"]) == ["abc12"] and trials["best_val_acc"].iloc[0] == 0.2
    assert ray_state.repair_trials(tune, staging) == []  # whole now: nothing more to take


def test_a_whole_result_json_behind_the_staging_copy_is_brought_up_to_it(tmp_path):
    """A kill can stop Ray's copy between two lines: tune/'s result.json is whole but short of rows."""
    from search import ray_state

    tune, staging = tmp_path / "tune", tmp_path / "staging"
    first_line = REPORTS.splitlines(keepends=True)[0]
    behind = killed_trial_folder(tune, "abc12", params='{"lr": 0.01}', results=first_line)
    killed_trial_folder(staging, "abc12", params='{"lr": 0.01}', results=REPORTS)
    assert ray_state.repair_trials(tune, staging) == ["abc12/result.json"]
    assert (behind / "result.json").read_text() == REPORTS
    (staging / behind.name / "result.json").write_text('{"epoch": 9}\n')  # another history: not taken
    (behind / "result.json").write_text(first_line)
    assert ray_state.repair_trials(tune, staging) == []


def test_a_cut_copy_in_staging_is_never_taken(tmp_path):
    from search import ray_state

    tune, staging = tmp_path / "tune", tmp_path / "staging"
    cut = killed_trial_folder(tune, "abc12", params="", results=REPORTS[:-5])
    killed_trial_folder(staging, "abc12", params='{"lr": 0.0', results=REPORTS[:40])
    assert ray_state.repair_trials(tune, staging) == []
    assert (cut / "params.json").read_text() == "" and (cut / "result.json").read_text() == REPORTS[:-5]


def saved_state_naming(tune_dir: Path, checkpoints: dict[str, tuple[str, list[str]]]) -> None:
    """An experiment state as Ray saves it (Ray's own Trial serialised), naming for each trial id its
    status and the checkpoints its manager holds ("<trial folder>/<checkpoint>", the last the latest)."""
    from ray.train._internal.session import _TrainingResult
    from ray.train._internal.storage import StorageContext
    from ray.tune import Checkpoint
    from ray.tune.experiment import Trial

    data = []
    for trial_id, (status, names) in checkpoints.items():
        storage = StorageContext(storage_path=str(tune_dir.parent), experiment_dir_name=tune_dir.name,
                                 trial_dir_name=f"run_trial_{trial_id}_00001_x")
        trial = Trial("run_trial", config={}, storage=storage, trial_id=trial_id, stub=True)
        trial.status = status
        for i, name in enumerate(names):
            trial.run_metadata.checkpoint_manager.register_checkpoint(
                _TrainingResult(checkpoint=Checkpoint(str(tune_dir / name)), metrics={"training_iteration": i + 1}))
        data.append(list(trial.get_json_state()))
    (tune_dir / "experiment_state-2026-11-30_10-00-00.json").write_text(json.dumps({"trial_data": data}))


def test_a_checkpoint_ray_deleted_before_saving_its_state_is_refilled_from_the_newest(tmp_path):
    """Ray deletes a trial's older checkpoint as it registers a newer one, then saves its state: a
    kill -9 in between left a state naming a deleted checkpoint, and the trial failed on resume
    ("does not exist on storage anymore"). The newest checkpoint takes the place of the one Ray restores
    from: a trial that had ended finds its end mark, one still training goes on from its newest state."""
    from search.ray_state import refill_lost_checkpoints

    tune = tmp_path / "tune"
    kept = {"aaa11": "checkpoint_000003", "bbb22": None, "ccc33": "checkpoint_000001", "ddd44": "checkpoint_000001",
            "eee55": None}
    for trial_id, name in kept.items():
        (tune / f"run_trial_{trial_id}_00001_x").mkdir(parents=True)
        if name:
            (tune / f"run_trial_{trial_id}_00001_x" / name).mkdir()
            (tune / f"run_trial_{trial_id}_00001_x" / name / "ended").write_text(trial_id)
    folder = lambda trial_id, name: f"run_trial_{trial_id}_00001_x/{name}"  # noqa: E731
    saved_state_naming(tune, {
        # two named, both gone: only the latest, which Ray restores from, is refilled
        "aaa11": ("RUNNING", [folder("aaa11", "checkpoint_000001"), folder("aaa11", "checkpoint_000002")]),
        "bbb22": ("PAUSED", [folder("bbb22", "checkpoint_000000")]),
        "ccc33": ("RUNNING", [folder("ccc33", "checkpoint_000001")]),  # there: left alone
        "ddd44": ("TERMINATED", [folder("ddd44", "checkpoint_000000")]),  # not restarted: left alone
        # a clone's checkpoint in another trial's folder (Population Based Training): left to Ray
        "eee55": ("PAUSED", [folder("ddd44", "checkpoint_000000")])})
    assert refill_lost_checkpoints(tune) == ["aaa11: checkpoint_000002 from checkpoint_000003",
                                             "bbb22: checkpoint_000000 gone and no other, restarts at epoch 1"]
    assert (tune / folder("aaa11", "checkpoint_000002") / "ended").read_text() == "aaa11"
    assert list((tune / folder("bbb22", "checkpoint_000000")).iterdir()) == []
    assert not (tune / folder("ddd44", "checkpoint_000000")).exists()
    assert sorted(p.name for p in (tune / "run_trial_aaa11_00001_x").iterdir()) == [
        "checkpoint_000002", "checkpoint_000003"]  # the older one not refilled, no copy left half-way
    assert refill_lost_checkpoints(tune) == []


def test_a_trials_last_epoch_only_its_checkpoint_kept_says_whether_it_ended(tmp_path):
    """result.json behind its checkpoint after a kill: the epochs come from the checkpoint's history,
    and the end mark of a trial's last checkpoint makes it completed, not stopped."""
    from search.tables import _with_checkpointed_epochs

    (tmp_path / "checkpoint_000002").mkdir()
    (tmp_path / "checkpoint_000002" / "history.json").write_text(json.dumps([{"epoch": e} for e in (1, 2)]))
    rows = [{"epoch": 1, "finished": False}]
    assert _with_checkpointed_epochs(rows, tmp_path)[-1] == {"epoch": 2}  # a checkpoint mid-run
    (tmp_path / "checkpoint_000002" / "ended").write_text("")
    assert _with_checkpointed_epochs(rows, tmp_path) == [rows[0], {"epoch": 2, "finished": True}]


@pytest.mark.slow
def test_a_full_disk_in_a_trial_stops_the_search_resumably(tmp_path, monkeypatch, capsys):
    """A trial that hits a full disk fails; the next ones would too: the search stops with one line
    naming --resume instead of failing every trial, and the resumed search loses nothing."""
    monkeypatch.setenv(ENV, "disk@1")
    code = cli.run(run.main, ["shapes", "--smoke", "--no-retrain", "--trials", "2", "--max-epochs", "1",
                              "--concurrency", "1", "--max-failures", "0", "--results", str(tmp_path), "--name", "d"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2
    assert err[-1].startswith("error: no space left") and "--name d --resume" in err[-1]
    trials = read_csv(tmp_path / "shapes" / "d" / "trials.csv")  # trial ids as text, e.g. "32034258"
    assert list(trials["status"]) == ["failed"] and "No space left" in trials["reason"].iloc[0]

    monkeypatch.delenv(ENV)  # space freed: --resume runs the trial that hit the full disk again, then the rest
    assert cli.run(run.main, ["shapes", "--results", str(tmp_path), "--name", "d", "--resume"]) == 0
    after = read_csv(tmp_path / "shapes" / "d" / "trials.csv")
    assert list(after["status"]) == ["completed"] * 2 and after["trial_id"].iloc[0] == trials["trial_id"].iloc[0]


def test_a_checkpoint_that_does_not_fit_in_shared_memory_goes_to_the_temp_folder(tmp_path, monkeypatch):
    import errno
    import tempfile

    import torch

    from search import trial

    shm = tmp_path / "shm"
    shm.mkdir()
    monkeypatch.setattr(trial, "SHARED_MEMORY", shm)
    calls = []

    def make_state(snapshot):
        calls.append(snapshot)
        if len(calls) == 1:
            raise OSError(errno.ENOSPC, "No space left on device")  # shared memory full mid-write
        return {"w": torch.ones(3), "history": [{"epoch": 1, "val_acc": 0.5}]}

    with trial.written_checkpoint(make_state) as d:
        assert Path(d).parent == Path(tempfile.gettempdir())
        assert torch.load(Path(d) / trial.STATE_FILE, weights_only=True)["w"].sum() == 3
        assert json.loads((Path(d) / trial.HISTORY_FILE).read_text()) == [{"epoch": 1, "val_acc": 0.5}]
    assert calls == [False, False] and list(shm.iterdir()) == []  # no copy asked for; nothing left behind


def test_kill_stops_a_run_started_in_the_background_too():
    """A shell starts `nohup python -m search.run ... &` with SIGINT ignored: `kill` (SIGTERM, routed
    to the Ctrl-C path) must still stop it, as it does a run in a terminal."""
    import signal

    from search import cli

    previous = signal.getsignal(signal.SIGINT)
    try:
        for handler in (signal.SIG_IGN, signal.default_int_handler):
            signal.signal(signal.SIGINT, handler)
            with pytest.raises(KeyboardInterrupt):
                cli._sigterm_as_sigint(signal.SIGTERM, None)
    finally:
        signal.signal(signal.SIGINT, previous)
