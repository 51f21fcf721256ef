"""What a grown search keeps of the search it grew from, and how an abandoned growth is rolled back.

`--resume --trials N` grows a finished search: a new round of trials, then a new retraining and report.
When the winner changes, the retraining redoes retrain/top1-*, and verdict.csv and report.md are
written anew: the finished search's results were lost. So before a round starts, the results of the
rounds before it are kept in round-<k>/ (k: the rounds they cover): the tables, the retraining, the
verdict, the report and its figures. And the study's journal length is recorded, so that
`--resume --trials <the trials before>` on a growth that has not finished rolls it back: the results
come back from round-<k>/, the journal is cut back to where it was, and the growth's Ray folder is
kept aside as <name>.abandoned-<time>.
"""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

from search.config import UserError
from search.record import FILE, RunRecord

# The run folder's entries that are the search's state, not its results: never archived or restored.
STATE = {FILE, ".lock", "optuna.journal", "ray_staging.txt", ".storage-copy", "tail_threads.json", "diverged"}
WEIGHTS = "model.pt"  # written whole by rename (atomic_write): a hard link in the archive stays the old file


def archive_dir(run_dir: Path, rounds: int) -> Path:
    return Path(run_dir) / f"round-{rounds}"


def _results(run_dir: Path) -> list[Path]:
    return sorted(p for p in Path(run_dir).iterdir() if p.name not in STATE
                  and not p.name.startswith(("tune", "round-", ".")))


def _copy(source: Path, dest: Path) -> None:
    """A file copied; retrained weights hard-linked where the file system allows (tens of MB each)."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    if source.name == WEIGHTS:
        try:
            os.link(source, dest)
            return
        except OSError:
            pass
    shutil.copy2(source, dest)


def keep_results(run_dir: Path, rounds: int) -> Path | None:
    """Copy the results of the search's first `rounds` rounds into round-<rounds>/ (once); None when
    there are none (a growth of a search that was never retrained nor reported still has its tables)."""
    target = archive_dir(run_dir, rounds)
    entries = _results(run_dir)
    if target.exists() or not entries:
        return target if target.exists() else None
    partial = target.with_name(target.name + ".partial")  # renamed whole when complete: never half an archive
    shutil.rmtree(partial, ignore_errors=True)
    for entry in entries:
        files = [entry] if entry.is_file() else sorted(p for p in entry.rglob("*") if p.is_file())
        for file in files:
            _copy(file, partial / file.relative_to(run_dir))
    os.replace(partial, target)
    return target


def journal_size(run_dir: Path) -> int:
    path = Path(run_dir) / "optuna.journal"
    return path.stat().st_size if path.is_file() else 0


def roll_back(run_dir: Path, record: RunRecord, tune_folder: Path | None) -> str:
    """Undo the last growth, which has not finished: its trials go from the study and the tables, the
    results of the rounds before come back. `tune_folder`: the growth's Ray folder where it is local."""
    growth = record.grown[-1]
    rounds = record.rounds - 1
    archive = archive_dir(run_dir, rounds)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    if "journal_bytes" not in growth:
        raise UserError(f"--trials {growth['trials_before']}: {run_dir.name} was grown by a version that did not "
                        "record where its study stood; finish the growth with --resume alone")
    for entry in _results(run_dir):  # the growth's tables and whatever it wrote
        shutil.rmtree(entry) if entry.is_dir() and not entry.is_symlink() else entry.unlink()
    if archive.is_dir():
        for entry in sorted(archive.iterdir()):
            os.replace(entry, run_dir / entry.name)
        archive.rmdir()
    journal = run_dir / "optuna.journal"
    if journal.is_file() and journal.stat().st_size > growth["journal_bytes"]:
        with journal.open("r+b") as f:  # the growth's trials were appended after this point
            f.truncate(growth["journal_bytes"])
            os.fsync(f.fileno())
    aside = ""
    if tune_folder is not None and tune_folder.is_dir():
        aside = f"{tune_folder.name}.abandoned-{stamp}"
        os.replace(tune_folder, tune_folder.with_name(aside))
    record.plan.trials = growth["trials_before"]
    record.update(run_dir, plan=record.plan, search_done=True, grown=record.grown[:-1])
    return (f"rolled back the growth to {growth['trials']} trials: {run_dir.name} is its finished search of "
            f"{growth['trials_before']} trials again" + (f"; the growth's trials are kept aside in {aside}"
                                                         if aside else ""))
