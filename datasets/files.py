"""Files written whole or not at all, and the per-user cache directory."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import IO


def cache_dir() -> Path:
    """$VISION_HPSEARCH_CACHE, else $XDG_CACHE_HOME/vision-hpsearch, else ~/.cache/vision-hpsearch."""
    base = os.environ.get("VISION_HPSEARCH_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "vision-hpsearch")
    return Path(base)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write(dest: Path, write: Callable[[IO[bytes]], object]) -> None:
    """Call write(file) on a temp file beside dest, then rename it over dest: readers see the old
    file or the new one, never half of it, even if the process dies in between."""
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; results are ordinary files
        os.replace(tmp, dest)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    _fsync_dir(dest.parent)  # the rename itself on disk: after a power cut the new file, not the old or none


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return  # a folder we may write but not open (rare): the rename stands, only not yet on disk
    try:
        os.fsync(fd)
    except OSError:
        pass  # some file systems (network ones) refuse fsync on a folder
    finally:
        os.close(fd)
