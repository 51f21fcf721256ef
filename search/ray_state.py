"""Ray's saved state of a search, checked before `--resume` hands it back to Ray.

Ray saves its experiment state (trials, searcher, search generator, callbacks) into a staging
folder under its temp dir, each file written whole and then renamed, and copies that folder into
the run's tune/ with pyarrow, which empties each file before writing it. A kill -9 during that copy
leaves files in tune/ cut short. Ray's restore then fails, logs it (below what we show), and starts
the experiment over with a searcher that has no search space: the resume died with "no search
space has been defined" (seen once, under load, in the suite's kill -9 test). The same copy carries
each trial's params.json and result.json: a kill during it left a finished trial's params.json
empty, and the trial vanished from trials.csv on resume (CI, stop 26). The staging folder survives a
kill on the same machine and its files are whole: they replace tune/'s that are not.

Ray keeps one checkpoint per trial here (CheckpointConfig(num_to_keep=1)): it deletes the older one
as it registers the newer, and saves the state naming the newer a moment later. A kill -9 in
between leaves a state naming a checkpoint that is gone, and Ray fails that trial on resume ("Could
not recover from checkpoint as it does not exist on storage anymore"). `refill_lost_checkpoints`
puts the trial's newest checkpoint where the state looks for it.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

from datasets.files import atomic_write
from search.config import UserError
from search.tables import folder_trial_id

# The files of one save, newest by name (they are named after the Ray session that wrote them).
PATTERNS = ("experiment_state-*.json", "search_gen_state-*.json", "searcher-state-*.pkl", "callback-states-*.pkl")
STAGING_RECORD = "ray_staging.txt"  # in the run folder: where this session's Ray stages the state
TRIAL_FILES = ("params.json", "result.json")  # what search/tables.py reads in each trial's folder


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


def whole_lines(path: Path) -> bool:
    """JSON lines (Ray's result.json: one object per epoch), each whole, the last one ended."""
    data = path.read_bytes()
    if not data.endswith(b"\n"):
        return False
    try:
        for line in data.splitlines():
            json.loads(line)
    except ValueError:
        return False
    return True


def whole_trial_file(path: Path) -> bool:
    return path.is_file() and (whole_lines(path) if path.name == "result.json" else whole(path))


def cut_short(folder: Path) -> list[Path]:
    return [p for p in (newest(folder, pattern) for pattern in PATTERNS) if p is not None and not whole(p)]


def staging_of(run_dir: Path) -> Path | None:
    record = Path(run_dir) / STAGING_RECORD
    return Path(record.read_text().strip()) if record.is_file() else None


def repair(tune_dir: Path, run_dir: Path) -> list[str]:
    """The names of the files of tune/ that were cut short and are now the staging folder's whole
    copies; [] when nothing was cut short."""
    staging = staging_of(run_dir)
    return repair_state(tune_dir, staging) + repair_trials(tune_dir, staging)


def behind(target: Path, source: Path) -> bool:
    """Whether tune/'s copy is missing, cut short, or an older copy of the staging folder's whole one
    (its bytes a prefix of it: result.json gains a line an epoch, and a kill may stop the copy
    between two lines)."""
    if not whole_trial_file(source):
        return False
    if not whole_trial_file(target):
        return True
    old, new = target.read_bytes(), source.read_bytes()
    return len(old) < len(new) and new.startswith(old)


def repair_trials(tune_dir: Path, staging: Path | None) -> list[str]:
    """Each trial folder's TRIAL_FILES that are missing, cut short or behind in tune/, copied whole
    from the staging folder where it has them. Without a copy, search/tables.py reads what is left."""
    if staging is None or not staging.is_dir():
        return []
    repaired = []
    for folder in sorted(p for p in tune_dir.iterdir() if p.is_dir() and (staging / p.name).is_dir()):
        for name in TRIAL_FILES:
            source, target = staging / folder.name / name, folder / name
            if behind(target, source):
                atomic_write(target, lambda f, source=source: f.write(source.read_bytes()))
                repaired.append(f"{folder_trial_id(folder.name) or folder.name}/{name}")
    return repaired


def repair_state(tune_dir: Path, staging: Path | None) -> list[str]:
    """Ray's state files of tune/ cut short, replaced by the staging folder's (the whole save, so
    that they match each other)."""
    bad = cut_short(tune_dir)
    if not bad:
        return []
    names = ", ".join(p.name for p in bad)
    saved = [newest(staging, pattern) for pattern in PATTERNS] if staging and staging.is_dir() else []
    saved = [p for p in saved if p is not None]
    if not saved or cut_short(staging) or {p.name for p in bad} - {p.name for p in saved}:
        raise UserError(f"--resume: Ray's saved state in {tune_dir} was cut short by a hard kill ({names}) and no "
                        "whole copy is left in Ray's temp folder; this search cannot go on: start it again "
                        "under a new --name")
    for source in saved:
        atomic_write(tune_dir / source.name, lambda f, source=source: f.write(source.read_bytes()))
    return [p.name for p in bad]


RESUMED = ("PENDING", "RUNNING", "PAUSED")  # the statuses Ray restarts on --resume, from their latest checkpoint


def recorded_checkpoints(tune_dir: Path) -> list[tuple[str, str]]:
    """(trial folder, checkpoint folder): for each trial Ray will restart, the newest checkpoint of its
    own folder that the newest saved state names (the one Ray restores it from). The state pickles each
    trial's checkpoint manager; its paths are read from the bytes, not unpickled, by their last parts
    (the run folder may have moved since). A checkpoint in another trial's folder (Population Based
    Training's clones) is left to Ray."""
    path = newest(tune_dir, "experiment_state-*.json")
    try:
        trials = json.loads(path.read_text())["trial_data"] if path else []
    except (OSError, ValueError, KeyError, TypeError):
        return []  # not Ray's JSON: Tuner.restore says what is wrong
    in_tune = re.compile(rb"/" + re.escape(tune_dir.name.encode()) + rb"/([^/]+)/(checkpoint_\d{6})")
    named = []
    for trial_json, metadata_json in trials:
        trial, manager = json.loads(trial_json), json.loads(metadata_json).get("checkpoint_manager")
        if trial.get("status") not in RESUMED or not isinstance(manager, dict):
            continue
        found = ((m.group(1).decode(errors="replace"), m.group(2).decode())
                 for m in in_tune.finditer(bytes.fromhex(manager.get("value", ""))))
        own = [(folder, name) for folder, name in found
               if folder_trial_id(folder) == trial.get("trial_id")]
        if own:
            named.append(max(own, key=lambda checkpoint: checkpoint[1]))
    return named


def refill_lost_checkpoints(tune_dir: Path) -> list[str]:
    """Each checkpoint the saved state restores a trial from that is gone, filled with a copy of the
    trial's newest one (its training goes on from there; a trial that had ended finds its end mark and
    ends); a trial with none left gets an empty one, from which it restarts at epoch 1 with a warning
    (search/trial.py read_state). Ray then counts the trial's reports from the lost checkpoint's, not
    the epochs trained: the schedulers and Optuna go by the epoch (protocol.EPOCH_CLOCK). Returns words
    for each."""
    refilled = []
    for folder, name in recorded_checkpoints(tune_dir):
        lost = tune_dir / folder / name
        if not (tune_dir / folder).is_dir() or lost.exists():
            continue
        kept = sorted((p for p in (tune_dir / folder).glob("checkpoint_*") if p.is_dir()), key=lambda p: p.name)
        staging = lost.with_name(f".{name}.tmp")  # whole or absent: the copy is renamed into place
        shutil.rmtree(staging, ignore_errors=True)
        if kept:
            shutil.copytree(kept[-1], staging)
        else:
            staging.mkdir()
        staging.rename(lost)
        refilled.append(f"{folder_trial_id(folder) or folder}: {name} "
                        + (f"from {kept[-1].name}" if kept else "gone and no other, restarts at epoch 1"))
    return refilled
