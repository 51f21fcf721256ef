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


def faulty_search(tmp_path, monkeypatch, fault: str, *extra: str):
    monkeypatch.setenv(ENV, fault)
    monkeypatch.setenv(LOG_ENV, str(tmp_path / "faults.log"))
    code = cli.run(run.main, ["shapes", "--smoke", "--no-retrain", "--trials", "2", "--max-epochs", "2",
                              "--concurrency", "1", "--set", "optimizer=adam", "--results", str(tmp_path),
                              # schedule pinned: no schedule variants of the warm start, so the second trial
                              # is TPE's own draw (another dropout: the faults tell the two apart by it)
                              "--set", "schedule=constant",
                              "--name", "f", *extra])
    run_dir = tmp_path / "shapes" / "f"
    log = (tmp_path / "faults.log").read_text().splitlines() if (tmp_path / "faults.log").exists() else []
    return code, read_csv(run_dir / "trials.csv"), read_csv(run_dir / "history.csv"), \
        pd.read_csv(run_dir / "optuna_trials.csv"), log


def test_fault_spec_parses(monkeypatch):
    assert Fault.parse("kill@2x1:optimizer=adam") == Fault("kill", 2, "optimizer", "adam", 1)
    assert Fault.parse("nan@3") == Fault("nan", 3)
    monkeypatch.setenv(ENV, "kill@2:dropout=0.5;oom@3")
    assert from_env({"dropout": 0.5}).kind == "kill" and from_env({"dropout": 0.1}).kind == "oom"
    with pytest.raises(ValueError):
        Fault.parse("kill@2xx")


@pytest.mark.slow
def test_transient_faults_are_retried_from_the_checkpoint(tmp_path, monkeypatch):
    """The warm-start trial runs out of memory in epoch 2 (it resumes from its epoch-1 checkpoint);
    the other trial's worker is SIGKILLed in epoch 1 (no checkpoint yet: it starts again)."""
    code, trials, history, study, log = faulty_search(tmp_path, monkeypatch, "oom@2x1:dropout=0.5;kill@1x1")
    assert code == 0
    shown = trials[["trial_id", "status", "epochs_run", "reason"]].to_string()
    assert (trials["status"] != "failed").all(), shown  # recovered (ASHA may stop one after its restart)
    assert sorted(line.rsplit(" ", 1)[0] for line in log) == ["kill 1", "oom 2"], log  # each fired once
    reasons = trials["reason"].fillna("")
    assert reasons.str.contains("recovered from").sum() == 2, shown
    assert reasons.str.contains("OutOfMemoryError").sum() == 1, shown
    assert not history.duplicated(["trial_id", "epoch"]).any()  # epoch 1 of the OOM trial not run again
    assert set(study["state"]) <= {"COMPLETE", "PRUNED"}


@pytest.mark.slow
def test_a_persistent_fault_fails_after_max_failures_and_the_search_goes_on(tmp_path, monkeypatch):
    code, trials, history, study, log = faulty_search(tmp_path, monkeypatch, "error@2:dropout=0.5",
                                                      "--max-failures", "1")
    assert code == 0
    failed = trials[trials["status"] == "failed"]
    assert list(failed["dropout"]) == [0.5]  # the baseline (warm start) only
    assert "injected error" in failed["reason"].iloc[0]
    assert len(log) == 2  # the first attempt and one retry, both at epoch 2
    assert (trials["status"] != "failed").sum() == 1
    assert study.loc[study["state"] == "FAIL", "value"].isna().all() and (study["state"] == "FAIL").sum() == 1


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
