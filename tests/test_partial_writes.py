"""Real partial writes: the file-size limit (RLIMIT_FSIZE, set in a child process) cuts a write short, as a
full disk or a quota does. Every file the project writes whole (run.json, trials.csv, a checkpoint) keeps
its old content, and no temporary file is left behind."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
LIMIT = 64 * 1024  # bytes any one file may grow to in the child

CHILD = textwrap.dedent("""
    import errno, resource, signal, sys
    from pathlib import Path
    import torch
    from datasets.files import atomic_write
    from search.io import write_csv, write_json

    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # the write then fails with EFBIG instead of killing us
    resource.setrlimit(resource.RLIMIT_FSIZE, ({limit}, {limit}))
    folder = Path(sys.argv[1])
    writes = {{
        "run.json": lambda: write_json(folder / "run.json", {{"argv": ["x" * 1000] * 200}}),
        "trials.csv": lambda: write_csv(folder / "trials.csv", [{{"trial_id": i, "c": "y" * 99}} for i in range(2000)]),
        "state.pt": lambda: atomic_write(folder / "state.pt", lambda f: torch.save(torch.zeros(100_000), f)),
    }}
    for name, write in writes.items():
        try:
            write()
        except OSError as e:
            assert e.errno == errno.EFBIG, e
            print(name)
        except RuntimeError as e:  # torch.save's zip writer reports the short write its own way
            print(name)
""")


@pytest.mark.skipif(sys.platform != "linux", reason="RLIMIT_FSIZE and SIGXFSZ as on Linux")
def test_a_write_cut_short_by_the_file_size_limit_leaves_the_old_file_whole(tmp_path):
    old = {"run.json": b'{"argv": ["old"]}\n', "trials.csv": b"trial_id\nold\n", "state.pt": b"old weights"}
    for name, data in old.items():
        (tmp_path / name).write_bytes(data)
    child = subprocess.run([sys.executable, "-c", CHILD.format(limit=LIMIT), str(tmp_path)], cwd=REPO,
                           capture_output=True, text=True, timeout=120)
    assert child.returncode == 0, child.stderr[-2000:]
    assert sorted(child.stdout.split()) == sorted(old)  # every write was refused by the limit
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == old  # the old files, and nothing else
