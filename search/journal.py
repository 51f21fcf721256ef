"""The run's Optuna journal (optuna.journal) mended before anything reads it.

Optuna's journal is one JSON record a line, appended. An append cut short (a full disk, a quota, a
kill -9 mid-write) leaves a last line without its newline; the next append is glued to it, and from
then on Optuna's reader raises JSONDecodeError on every read: `--resume`, `optuna.load_study` and
optuna-dashboard all failed, for ever. `repair` keeps the longest run of whole records from the start
and moves the rest (the torn record and everything after it, which may name trials the torn record
created) into optuna.journal.cut-<time> beside it: the study then reads as it stood before the tear.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

from datasets.files import atomic_write


def whole_prefix(data: bytes) -> int:
    """Bytes of `data` that are whole records: lines ending in a newline that parse as JSON objects."""
    end = 0
    for line in data.splitlines(keepends=True):
        if not line.endswith(b"\n"):
            break
        try:
            if not isinstance(json.loads(line), dict):
                break
        except ValueError:
            break
        end += len(line)
    return end


def repair(path: Path) -> str | None:
    """Cut a torn journal back to its whole records, keeping the cut bytes beside it; one line saying so,
    or None when it was whole (or is not there). Call with the run's lock held: nobody appends meanwhile."""
    path = Path(path)
    if not path.is_file():
        return None
    data = path.read_bytes()
    keep = whole_prefix(data)
    if keep == len(data):
        return None
    cut = path.with_name(f"{path.name}.cut-{time.strftime('%Y%m%d-%H%M%S')}")
    atomic_write(cut, lambda f: f.write(data[keep:]))  # first: nothing is lost if we die between the two
    with path.open("r+b") as f:
        f.truncate(keep)
        f.flush()
        os.fsync(f.fileno())
    records = data[keep:].count(b"\n") + (not data.endswith(b"\n"))
    return (f"{path.name}: a write was cut short (a full disk or a hard kill); the study is read as it stood "
            f"before it, and the {len(data) - keep} bytes after it ({records} records) are kept in {cut.name}")
