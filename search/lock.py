"""One process at a time per run directory: a lock file, released on exit, stale locks detected.

Two commands writing the same run (a search started twice with the same --name, a retraining
while the search still runs) would interleave their CSVs and checkpoints. The lock is a file
created with O_EXCL holding the owner's host and pid; a lock whose process is gone (killed with
SIGKILL, machine rebooted) is stale and taken over with a warning.
"""

from __future__ import annotations

import json
import os
import socket
import sys
import time
from pathlib import Path

from search.config import UserError

LOCK = ".lock"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


class RunLock:
    def __init__(self, run_dir: Path):
        self.run_dir, self.path, self.created_dir, self.held = run_dir, run_dir / LOCK, False, False

    def acquire(self) -> RunLock:
        if not self.run_dir.exists():
            self.run_dir.mkdir(parents=True)
            self.created_dir = True
        me = {"pid": os.getpid(), "host": socket.gethostname(), "started": time.strftime("%Y-%m-%d %H:%M:%S")}
        for _ in range(2):
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                self._check_stale()
                continue
            with os.fdopen(fd, "w") as f:
                json.dump(me, f)
            self.held = True
            return self
        raise UserError(f"{self.run_dir}: could not take its lock {self.path}; delete it if no run uses this folder")

    def _check_stale(self) -> None:
        try:
            owner = json.loads(self.path.read_text())
        except (OSError, ValueError):
            owner = {}  # a lock cut by a crash between create and write: nobody holds it
        pid, host = owner.get("pid"), owner.get("host")
        if host not in (None, socket.gethostname()):
            raise UserError(f"{self.run_dir} is in use by process {pid} on {host} (since {owner.get('started')}); "
                            f"if that run is gone, delete {self.path}")
        if isinstance(pid, int) and pid != os.getpid() and _alive(pid):
            raise UserError(f"{self.run_dir} is in use by process {pid} (since {owner.get('started')}); "
                            "wait for it to end, or pick another --name")
        print(f"warning: taking over a stale lock of {self.run_dir} (process {pid} is gone)", file=sys.stderr)
        self.path.unlink(missing_ok=True)

    def release(self) -> None:
        if not self.held:
            return
        self.path.unlink(missing_ok=True)
        self.held = False
        if self.created_dir and not any(self.run_dir.iterdir()):
            self.run_dir.rmdir()  # failed before writing anything: leave no empty run behind

    def __enter__(self) -> RunLock:
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()
