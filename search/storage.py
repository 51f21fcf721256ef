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
import re
from pathlib import Path

from search.config import UserError

# The files of a trial folder the tables read (search/tables.py); checkpoints' weights stay remote.
TABLE_FILES = ("params.json", "result.json", "error.txt", "history.json")


def is_uri(location: str | os.PathLike) -> bool:
    return "://" in str(location)


def _split_query(uri: str) -> tuple[str, str]:
    """(the URI before its query, "?query" or ""): an S3-compatible store is reached through its query
    (s3://bucket/p?endpoint_override=host:9000&scheme=http), which pyarrow (and Ray, through it) reads as
    the file system's options; the paths inside go before it."""
    base, sep, query = uri.partition("?")
    return base, sep + query


def location(storage: str) -> str:
    """--storage as Ray gets it: a URI as typed (its query kept), a local folder absolute."""
    if not is_uri(storage):
        return str(Path(storage).expanduser().resolve())
    base, query = _split_query(storage)
    return base.rstrip("/") + query


def join(base: str, *parts: str) -> str:
    """A path under `base`; `base` is absolute (see `location`) or a URI, so "/" joins both, before a query."""
    head, query = _split_query(base) if is_uri(base) else (base, "")
    return "/".join([head.rstrip("/"), *parts]) + query


# Query keys whose values are secrets (pyarrow's S3 and GCS options, and the usual names elsewhere).
SECRET_KEY = re.compile(r"secret|token|password|passwd|credential|signature|access_key|session", re.IGNORECASE)
USERINFO = re.compile(r"(://[^/@:?#\s]*):[^/@?#\s]*@")  # scheme://user:PASSWORD@host
QUERY_PAIR = re.compile(r"([?&])([^=&#\s]+)=([^&#\s]*)")


def redact(text: str) -> str:
    """`text` (a URI, a command line, a message) with the secrets a storage URI may carry replaced by ***:
    the password of user:password@, and the values of secret-looking query keys. The rest stays readable."""
    text = USERINFO.sub(r"\1:***@", str(text))
    return QUERY_PAIR.sub(lambda m: f"{m[1]}{m[2]}=***" if SECRET_KEY.search(m[2]) else m[0], text)


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
        raise UserError(f"--storage {redact(storage)}: cannot write there ({redact(first)}); give a folder every node "
                        "sees, or a URI pyarrow opens (s3://, gs://, file://) with its credentials set") from None


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
