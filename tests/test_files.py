"""Atomic writes on a disk that fills up: the old file stays whole, no temp file is left, one line for the user."""

from __future__ import annotations

import errno
import os

import pytest

from datasets.files import atomic_write
from search import cli


def test_a_write_that_runs_out_of_space_keeps_the_old_file(tmp_path):
    dest = tmp_path / "trials.csv"
    dest.write_text("trial_id,status\na,completed\n")

    def half_then_full(f):
        f.write(b"trial_id,status\na,comp")  # part of the new content reached the temp file
        raise OSError(errno.ENOSPC, "No space left on device")

    with pytest.raises(OSError) as e:
        atomic_write(dest, half_then_full)
    assert e.value.errno == errno.ENOSPC
    assert dest.read_text() == "trial_id,status\na,completed\n"
    assert [p.name for p in tmp_path.iterdir()] == ["trials.csv"]


@pytest.mark.parametrize("code", [errno.ENOSPC, errno.EDQUOT])
def test_any_command_reports_a_full_disk_in_one_line(capsys, code):
    def main(argv):
        raise OSError(code, "No space left on device", "/results/x/report.md")

    assert cli.run(main, []) == cli.EXIT_USER_ERROR
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "/results/x/report.md" in err and "free some space" in err


def test_other_os_errors_are_not_disguised_as_a_full_disk():
    def main(argv):
        raise PermissionError(errno.EACCES, "Permission denied", "/x")

    with pytest.raises(PermissionError):
        cli.run(main, [])


def test_atomic_write_syncs_the_file_and_then_its_folder(tmp_path, monkeypatch):
    """A rename is on disk only once its folder is synced: without it a power cut may leave the old file
    (or none) after the command said it wrote the new one."""
    import stat as stat_mod

    synced = []
    real = os.fsync
    monkeypatch.setattr(os, "fsync", lambda fd: (synced.append(stat_mod.S_ISDIR(os.fstat(fd).st_mode)), real(fd)))
    atomic_write(tmp_path / "a.json", lambda f: f.write(b"{}"))
    assert synced == [False, True] and (tmp_path / "a.json").read_bytes() == b"{}"
