"""One process per run directory: a live lock refuses, a stale one is taken over, and an existing
run is only replaced with --overwrite."""

from __future__ import annotations

import json
import socket
import subprocess
import sys

import pytest

from search import cli, retrain, run
from search.config import UserError
from search.lock import LOCK, RunLock


@pytest.fixture
def other_process():
    """A live process that is not us, to own a lock."""
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    yield proc.pid
    proc.kill()
    proc.wait()


def write_lock(run_dir, pid, host=None):
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / LOCK).write_text(json.dumps({"pid": pid, "host": host or socket.gethostname(), "started": "then"}))


def test_a_live_lock_refuses_and_a_released_one_is_gone(tmp_path, other_process):
    write_lock(tmp_path / "r", other_process)
    with pytest.raises(UserError, match=f"in use by process {other_process}"):
        RunLock(tmp_path / "r").acquire()
    (tmp_path / "r" / LOCK).unlink()
    with RunLock(tmp_path / "r") as lock:
        assert json.loads(lock.path.read_text())["pid"] != other_process
    assert not (tmp_path / "r" / LOCK).exists()


def test_a_stale_lock_is_taken_over_with_a_warning(tmp_path, capsys):
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    write_lock(tmp_path / "r", int(dead.stdout))
    with RunLock(tmp_path / "r"):
        assert "stale lock" in capsys.readouterr().err


def test_a_lock_from_another_host_names_it(tmp_path):
    write_lock(tmp_path / "r", 1, host="elsewhere.example")
    with pytest.raises(UserError, match="on elsewhere.example"):
        RunLock(tmp_path / "r").acquire()


def test_a_run_that_fails_before_writing_leaves_no_folder(tmp_path):
    with pytest.raises(RuntimeError), RunLock(tmp_path / "new"):
        raise RuntimeError("failed early")
    assert not (tmp_path / "new").exists()


def test_search_and_retrain_refuse_a_run_in_use(tmp_path, other_process, capsys):
    run_dir = tmp_path / "shapes" / "busy"
    (run_dir / "tune").mkdir(parents=True)
    from search import experiments
    from search.plan import Hardware, make_plan
    from search.record import RunRecord

    plan = make_plan(experiments.get("shapes"), Hardware(cpus=2, gpus=0), trials=2, max_epochs=1,
                     time_budget_min=None, concurrency=None, cpus_per_trial=None, gpus_per_trial=None, smoke=True)
    RunRecord(experiment="shapes", name="busy", plan=plan, argv=["shapes", "--smoke", "--name", "busy"],
              search_done=True).write(run_dir)
    (run_dir / "trials.csv").write_text("trial_id\n")
    write_lock(run_dir, other_process)
    before = sorted(p.name for p in run_dir.iterdir())
    assert cli.run(run.main, ["shapes", "--name", "busy", "--resume", "--results", str(tmp_path)]) == 2
    assert cli.run(retrain.main, [str(run_dir)]) == 2
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 2 and all(f"in use by process {other_process}" in line for line in err)
    assert sorted(p.name for p in run_dir.iterdir()) == before


@pytest.mark.slow
def test_an_existing_run_is_replaced_only_with_overwrite(tmp_path, generated_cache, monkeypatch, capsys):
    monkeypatch.setenv("VISION_HPSEARCH_CACHE", str(generated_cache))
    old = tmp_path / "shapes" / "x"
    old.mkdir(parents=True)
    (old / "run.json").write_text(json.dumps({"experiment": "shapes", "name": "x"}))  # a run of ours: replaceable
    (old / "trials.csv").write_text("precious\n")
    argv = ["shapes", "--smoke", "--trials", "1", "--max-epochs", "1", "--no-retrain", "--results", str(tmp_path),
            "--name", "x"]
    assert cli.run(run.main, argv) == 2
    assert "--overwrite" in capsys.readouterr().err and (old / "trials.csv").read_text() == "precious\n"
    assert cli.run(run.main, [*argv, "--trials", "0", "--overwrite"]) == 2  # a bad option: nothing replaced yet
    assert (old / "trials.csv").read_text() == "precious\n"
    capsys.readouterr()
    code = cli.run(run.main, [*argv, "--overwrite"])
    assert code == 0, capsys.readouterr().err[-2000:]
    assert "precious" not in (old / "trials.csv").read_text(), (old / "trials.csv").read_text()
    assert not (old / LOCK).exists()


HOLD = """
import sys, time
from pathlib import Path
from search.lock import RunLock
lock = RunLock(Path(sys.argv[1]))
start = float(sys.argv[2])
while time.time() < start:
    time.sleep(0.001)
try:
    lock.acquire()
except Exception as e:
    print("lost", e, flush=True)
    sys.exit(0)
print("won", flush=True)
time.sleep(float(sys.argv[3]))
lock.release()
"""


def holders(run_dir, n, hold_s, start_in_s=1.5):
    """`n` processes that each try to take the lock of `run_dir` at one instant and hold it `hold_s` seconds."""
    import time

    from conftest import REPO

    start = time.time() + start_in_s
    return [subprocess.Popen([sys.executable, "-c", HOLD, str(run_dir), str(start), str(hold_s)], cwd=REPO,
                             stdout=subprocess.PIPE, text=True) for _ in range(n)]


def test_of_processes_racing_for_one_stale_lock_exactly_one_wins(tmp_path):
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    write_lock(tmp_path / "r", int(dead.stdout))  # a killed run's lock: every racer may take it over
    racers = holders(tmp_path / "r", 6, hold_s=2)
    said = [p.communicate(timeout=60)[0] for p in racers]
    assert sum(s.startswith("won") for s in said) == 1, said
    # a loser names the winner, or "another process" while the winner has yet to write its name over the dead one's
    dead_pid = f"process {int(dead.stdout)}"
    assert all(s.startswith("won") or ("is in use by" in s and dead_pid not in s) for s in said), said


def test_a_lock_whose_owner_has_not_written_its_name_yet_is_held(tmp_path):
    """The owner holds the OS lock from the first instant; an empty lock file is no sign of a dead owner."""
    import fcntl
    import os

    (tmp_path / "r").mkdir()
    fd = os.open(tmp_path / "r" / LOCK, os.O_CREAT | os.O_RDWR)
    fcntl.flock(fd, fcntl.LOCK_EX)  # another owner (this process, another file description), file still empty
    try:
        with pytest.raises(UserError, match="in use by another process"):
            RunLock(tmp_path / "r").acquire()
    finally:
        os.close(fd)
    with RunLock(tmp_path / "r"):  # its owner gone, the empty file is ours without a word
        pass


def test_release_leaves_a_lock_it_does_not_own(tmp_path):
    first = RunLock(tmp_path / "r").acquire()
    (tmp_path / "r" / LOCK).unlink()  # deleted by hand while held ...
    second = RunLock(tmp_path / "r").acquire()  # ... so a second run takes a new one
    first.release()
    assert (tmp_path / "r" / LOCK).exists()
    with pytest.raises(UserError, match="in use"):
        RunLock(tmp_path / "r").acquire()  # the second still holds it
    second.release()
    assert not (tmp_path / "r" / LOCK).exists()


def test_a_search_started_on_a_name_a_live_run_holds_gets_one_line(tmp_path, capsys):
    run_dir = tmp_path / "shapes" / "busy"
    [holder] = holders(run_dir, 1, hold_s=30, start_in_s=0)
    try:
        assert holder.stdout.readline().startswith("won")
        assert cli.run(run.main, ["shapes", "--smoke", "--name", "busy", "--results", str(tmp_path)]) == 2
    finally:
        holder.kill()
        holder.wait()
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and f"in use by process {holder.pid}" in err[0], err
