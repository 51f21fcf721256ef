"""Ray's saved state of a search, checked before `--resume` hands it back to Ray.

Ray saves its experiment state (trials, searcher, search generator, callbacks) into a staging
folder under its temp dir, each file written whole and then renamed, and copies that folder into
the run's tune/ with pyarrow, which empties each file before writing it. A kill -9 during that copy
leaves files in tune/ cut short. Ray's restore then fails, logs it (below what we show), and starts
the experiment over with a searcher that has no search space: the resume died with "no search
space has been defined" (seen once, under load, in the suite's kill -9 test). The staging folder
survives a kill on the same machine and its files are whole: they replace tune/'s that are not.
"""

from __future__ import annotations

import json
from pathlib import Path

from datasets.files import atomic_write
from search.config import UserError

# The files of one save, newest by name (they are named after the Ray session that wrote them).
PATTERNS = ("experiment_state-*.json", "search_gen_state-*.json", "searcher-state-*.pkl", "callback-states-*.pkl")
STAGING_RECORD = "ray_staging.txt"  # in the run folder: where this session's Ray stages the state


def record_staging(run_dir: Path, staging: Path) -> None:
    atomic_write(Path(run_dir) / STAGING_RECORD, lambda f: f.write(str(staging).encode()))


def newest(folder: Path, pattern: str) -> Path | None:
    return max(folder.glob(pattern), key=lambda p: p.name, default=None)


def whole(path: Path) -> bool:
    """A pickle (Ray pickles some of its .json files too) that ends with its STOP opcode, read without
    running it; JSON that parses."""
    data = path.read_bytes()
    if not data:
        return False
    if data[:1] == b"\x80":  # a pickle's protocol opcode
        return data.endswith(b".")
    try:
        json.loads(data)
    except ValueError:
        return False
    return True


def cut_short(folder: Path) -> list[Path]:
    return [p for p in (newest(folder, pattern) for pattern in PATTERNS) if p is not None and not whole(p)]


def repair(tune_dir: Path, run_dir: Path) -> list[str]:
    """The names of the files of tune/ that were cut short and are now the staging folder's whole
    copies (the whole save, so that they match each other); [] when nothing was cut short."""
    bad = cut_short(tune_dir)
    if not bad:
        return []
    names = ", ".join(p.name for p in bad)
    record = Path(run_dir) / STAGING_RECORD
    staging = Path(record.read_text().strip()) if record.is_file() else None
    saved = [newest(staging, pattern) for pattern in PATTERNS] if staging and staging.is_dir() else []
    saved = [p for p in saved if p is not None]
    if not saved or cut_short(staging) or {p.name for p in bad} - {p.name for p in saved}:
        raise UserError(f"--resume: Ray's saved state in {tune_dir} was cut short by a hard kill ({names}) and no "
                        "whole copy is left in Ray's temp folder; this search cannot go on: start it again "
                        "under a new --name")
    for source in saved:
        atomic_write(tune_dir / source.name, lambda f, source=source: f.write(source.read_bytes()))
    return [p.name for p in bad]
