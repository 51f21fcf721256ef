"""Checkpoint folders a SIGKILL left in /dev/shm (Ray never deleted them) are cleaned at the next start;
a live trial's, or a fresh one whose process id may be reused, stay."""

from __future__ import annotations

import os
import subprocess
import sys
import time

from search import trial


def test_only_old_folders_of_dead_processes_are_deleted(tmp_path, monkeypatch):
    monkeypatch.setattr(trial, "SHARED_MEMORY", tmp_path / "shm")
    monkeypatch.setattr(trial.tempfile, "gettempdir", lambda: str(tmp_path / "tmp"))
    dead = int(subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                              text=True).stdout)
    old = time.time() - trial.STALE_AFTER_S - 60
    folders = {}
    for where, name in [("shm", f"hpsearch-{dead}-a"), ("tmp", f"hpsearch-{dead}-b"), ("shm", f"hpsearch-{dead}-new"),
                        ("shm", f"hpsearch-{os.getpid()}-live"), ("shm", "hpsearch-x-other"), ("shm", "mine")]:
        folder = tmp_path / where / name
        folder.mkdir(parents=True)
        (folder / "state.pt").write_bytes(b"x")
        if not name.endswith("new"):
            os.utime(folder, (old, old))
        folders[name] = folder
    gone = trial.clean_stale_checkpoints()
    assert sorted(p.name for p in gone) == [f"hpsearch-{dead}-a", f"hpsearch-{dead}-b"]
    assert [n for n, f in folders.items() if f.exists()] == [f"hpsearch-{dead}-new", f"hpsearch-{os.getpid()}-live",
                                                             "hpsearch-x-other", "mine"]


def test_a_checkpoint_folder_names_its_process(tmp_path, monkeypatch):
    monkeypatch.setattr(trial, "SHARED_MEMORY", tmp_path)
    folder = trial.written_checkpoint(lambda snapshot: {"history": [], "w": 1})
    try:
        assert os.path.basename(folder.name).startswith(f"hpsearch-{os.getpid()}-")
    finally:
        folder.cleanup()
