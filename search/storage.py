"""Where Ray keeps a search's trial folders (`--storage`): a local folder, or a URI (s3://, gs://,
file://...) that Ray and this module open through pyarrow's filesystems, as Ray does.

A local path is resolved (a resumed run may start from another folder); a URI is kept as typed
(`Path` would turn "s3://bucket" into "s3:/bucket"). The few files this project itself reads or
writes there (a diverged trial's marker, the small files of each trial folder that the tables
are built from) go through `read_text`, `write_text` and `local_copy`: pyarrow's filesystems for
a URI and a local folder alike.
"""

from __future__ import annotations

import os
from pathlib import Path

from search.config import UserError

# The files of a trial folder the tables read (search/tables.py); checkpoints' weights stay remote.
TABLE_FILES = ("params.json", "result.json", "error.txt", "history.json")


def is_uri(location: str | os.PathLike) -> bool:
    return "://" in str(location)


def location(storage: str) -> str:
    """--storage as Ray gets it: a URI as typed, a local folder absolute."""
    return storage.rstrip("/") if is_uri(storage) else str(Path(storage).expanduser().resolve())


def join(base: str, *parts: str) -> str:
    """A path under `base`; `base` is absolute (see `location`) or a URI, so "/" joins both."""
    return "/".join([base.rstrip("/"), *parts])


def _fs(target: str):
    """(pyarrow filesystem, path inside it): its local filesystem for an absolute path, else the URI's."""
    import pyarrow.fs

    return pyarrow.fs.FileSystem.from_uri(target)


def check(storage: str) -> None:
    """One line, before any trial runs, if --storage cannot be opened or written (an unknown scheme,
    missing credentials, a read-only folder), instead of every trial failing at its first checkpoint."""
    probe = join(location(storage), f".write-test-{os.getpid()}")
    try:
        write_text(probe, "")
        fs, path = _fs(probe)
        fs.delete_file(path)
    except Exception as e:  # pyarrow raises ArrowInvalid, OSError and others by scheme
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise UserError(f"--storage {storage}: cannot write there ({first}); give a folder every node sees, "
                        "or a URI pyarrow opens (s3://, gs://, file://) with its credentials set") from None


def write_text(target: str, text: str) -> None:
    fs, path = _fs(target)
    fs.create_dir(path.rsplit("/", 1)[0], recursive=True)
    with fs.open_output_stream(path) as f:
        f.write(text.encode())


def read_text(target: str) -> str | None:
    """The file's text, or None when there is none."""
    import pyarrow.fs

    fs, path = _fs(target)
    if fs.get_file_info(path).type != pyarrow.fs.FileType.File:
        return None
    with fs.open_input_stream(path) as f:
        return f.read().decode()


def exists(folder: str) -> bool:
    import pyarrow.fs

    fs, path = _fs(folder)
    return fs.get_file_info(path).type == pyarrow.fs.FileType.Directory


def local_copy(folder: str, dest: Path) -> Path:
    """A local folder with the files the tables read: `folder` itself when it is local, else a copy of
    those files (not the checkpoints' weights) in `dest`, refreshed."""
    if not is_uri(folder):
        return Path(folder)
    import pyarrow.fs

    fs, root = _fs(folder)
    if fs.get_file_info(root).type != pyarrow.fs.FileType.Directory:
        return dest
    for info in fs.get_file_info(pyarrow.fs.FileSelector(root, recursive=True)):
        if info.type == pyarrow.fs.FileType.File and info.base_name in TABLE_FILES:
            target = dest / os.path.relpath(info.path, root)
            target.parent.mkdir(parents=True, exist_ok=True)
            with fs.open_input_stream(info.path) as f:
                target.write_bytes(f.read())
    return dest
