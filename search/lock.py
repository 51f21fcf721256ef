"""One process at a time per run directory: an OS lock (flock) on a file in the run folder.

Two commands writing the same run (a search started twice with the same --name, a retraining
while the search still runs) would interleave their CSVs and checkpoints. The kernel holds the
lock (fcntl.flock on `.lock`) and drops it when the process dies however it dies, so there is no
stale-lock guessing and no race between two processes taking over: exactly one gets it. The file
also names its owner (host, pid, start time) for the error message the other one prints.

The lock file is unlinked on release (a run that failed before writing leaves no folder). That is
safe because an acquirer checks, once it holds the lock, that the path still names the file it
locked; if a releaser unlinked it in between, it locks the new file instead.

A file naming a live process on this host that holds no lock (a run of a version before flock),
or a process on another host (a shared folder whose file system may not carry locks across hosts),
is refused all the same, with the way out in the message.
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
import sys
import time
from pathlib import Path

from search.config import UserError

LOCK = ".lock"


def process_alive(pid: int) -> bool:
    """Whether a process of this id runs on this host (whoever owns it)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


def _owner(fd: int) -> dict:
    """What the lock file says of its owner; {} when empty or cut (its owner is still writing it, or died)."""
    try:
        text = os.pread(fd, 4096, 0).decode()
        owner = json.loads(text) if text.strip() else {}
    except (OSError, ValueError):
        return {}
    return owner if isinstance(owner, dict) else {}


class RunLock:
    def __init__(self, run_dir: Path):
        self.run_dir, self.path, self.created_dir, self.fd = run_dir, run_dir / LOCK, False, None

    @property
    def held(self) -> bool:
        return self.fd is not None

    def acquire(self) -> RunLock:
        if not self.run_dir.exists():
            self.run_dir.mkdir(parents=True)
            self.created_dir = True
        for _ in range(100):  # a retry only when a releaser unlinked the file we had opened
            fd = os.open(self.path, os.O_CREAT | os.O_RDWR, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                owner = _owner(fd)
                os.close(fd)
                self.created_dir = False  # we made the folder but lost the race for it: the winner keeps it
                raise UserError(self._in_use(owner)) from None
            try:
                same = os.fstat(fd).st_ino == os.stat(self.path).st_ino
            except FileNotFoundError:
                same = False
            if not same:
                os.close(fd)
                continue
            try:
                self._check_previous_owner(_owner(fd))
            except UserError:
                os.close(fd)
                raise
            me = {"pid": os.getpid(), "host": socket.gethostname(), "started": time.strftime("%Y-%m-%d %H:%M:%S")}
            os.ftruncate(fd, 0)
            os.pwrite(fd, json.dumps(me).encode(), 0)
            self.fd = fd
            return self
        raise UserError(f"{self.run_dir}: could not take its lock {self.path}; delete it if no run uses this folder")

    def _in_use(self, owner: dict) -> str:
        pid, host, since = owner.get("pid"), owner.get("host"), owner.get("started")
        who = f"process {pid}" + (f" on {host}" if host not in (None, socket.gethostname()) else "")
        # Its holder has not written its name yet: the file is empty, cut, or still names the dead owner whose
        # stale lock it took over (measured: 1 of 6 racers read it between the takeover and the new name).
        stale = host in (None, socket.gethostname()) and isinstance(pid, int) and not process_alive(pid)
        who = "another process" if pid is None or stale else who
        return (f"{self.run_dir} is in use by {who}" + (f" (since {since})" if since else "")
                + "; wait for it to end, or pick another --name")

    def _check_previous_owner(self, owner: dict) -> None:
        """The file's last owner holds no lock (we have it). It died, or ran a version before flock."""
        pid, host = owner.get("pid"), owner.get("host")
        if not owner:
            return
        if host not in (None, socket.gethostname()):
            raise UserError(f"{self.run_dir} is in use by process {pid} on {host} (since {owner.get('started')}); "
                            f"if that run is gone, delete {self.path}")
        if isinstance(pid, int) and pid != os.getpid() and process_alive(pid):
            raise UserError(f"{self.run_dir} is in use by process {pid} (since {owner.get('started')}); "
                            f"wait for it to end, or pick another --name (if no run uses it, delete {self.path})")
        print(f"warning: taking over a stale lock of {self.run_dir} (process {pid} is gone)", file=sys.stderr)

    def release(self) -> None:
        if self.fd is None:
            return
        # unlink while still holding the lock: a process waiting on this file sees it is gone and retries
        try:
            if os.stat(self.path).st_ino == os.fstat(self.fd).st_ino:  # ours, not one made after a hand deletion
                self.path.unlink()
        except FileNotFoundError:
            pass
        os.close(self.fd)
        self.fd = None
        if self.created_dir:
            try:
                self.run_dir.rmdir()  # failed before writing anything: leave no empty run behind
            except OSError:
                pass  # not empty (or another process's lock file is in it already): keep it

    def __enter__(self) -> RunLock:
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()


def check_free(run_dir: Path) -> None:
    """Refuse now, before the data loads or Ray starts, when a live process holds the run's lock; the
    command takes the lock for real afterwards (and may still lose it to a process that started meanwhile)."""
    if (run_dir / LOCK).exists():
        RunLock(run_dir).acquire().release()
