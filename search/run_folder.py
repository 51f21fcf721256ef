"""A run's folder, results/<experiment>/<name>/: names that are one safe folder name, and the
`--overwrite` that deletes only a run this project wrote there.

A name becomes a path: `--name .` was results/<experiment> itself, and `--overwrite` deleted every
run of the experiment, live ones included; `..` or an absolute path reached further. So a run name,
and an experiment's name (user-written experiments name their own), is one folder name of safe
characters, and `--overwrite` deletes a folder's contents only where its run.json says it is this
experiment's run of this name, never through a symlink.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

from search.config import UserError

# One path component: no separators, no "." or "..", no leading dash (it would read as an option),
# no spaces or shell characters; 100 characters leave room for the suffixes (-<setting>, the
# storage folder's -<id>) inside a file system's 255-byte limit.
NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}")
NAME_RULE = "1-100 letters, digits, '.', '_' or '-', starting with a letter or digit"
RECORD = "run.json"  # search/record.py's FILE (that module imports the plan; this one stays light)


def check_name(name: str, what: str = "--name") -> str:
    """`name` if it is one safe folder name, else a UserError that says the rule."""
    if not isinstance(name, str) or not NAME.fullmatch(name):
        raise UserError(f"{what} {name!r}: a name becomes a folder, so it must be {NAME_RULE} "
                        "(e.g. lr-sweep.2)")
    return name


def run_dir(results: Path, experiment: str, name: str) -> Path:
    """results/<experiment>/<name>, both names checked."""
    return Path(results) / check_name(experiment, "experiment name") / check_name(name)


def replaceable(folder: Path, keep: tuple[str, ...]) -> list[Path]:
    """What `--overwrite` would delete in `folder`, <resolved results root>/<experiment>/<name> (all but
    the entries named in `keep`: the lock held on it), checked: refused unless neither the experiment's
    folder nor the run's is a symlink (out of the results root) and the run's holds a run.json this
    project wrote for this experiment and name."""
    folder = Path(folder)
    experiment, name = folder.parent.name, folder.name
    if folder.is_symlink() or folder.resolve() != folder.absolute():
        raise UserError(f"--overwrite {folder}: it leads out of the results root {folder.parent.parent} through "
                        "a symlink; nothing deleted: remove it by hand if it is yours to remove")
    entries = sorted(p for p in folder.iterdir() if p.name not in keep) if folder.is_dir() else []
    if not entries:
        return []
    path = folder / RECORD
    try:
        recorded = json.loads(path.read_text())
    except FileNotFoundError:
        raise UserError(f"--overwrite {folder}: it holds no {RECORD}, so it is not a run this project wrote; "
                        "nothing deleted: pick another --name, or delete the folder by hand") from None
    except (OSError, ValueError) as e:
        raise UserError(f"--overwrite {folder}: its {path} is damaged ({type(e).__name__}); nothing deleted: "
                        "delete the folder by hand if you mean to replace it") from None
    found = (recorded.get("experiment"), recorded.get("name")) if isinstance(recorded, dict) else None
    if found != (experiment, name):
        raise UserError(f"--overwrite {folder}: its {RECORD} is not a run of {experiment} named {name} "
                        f"(it says {found}); nothing deleted: delete the folder by hand if you mean to replace it")
    return entries


def replace(folder: Path, keep: tuple[str, ...]) -> list[str]:
    """Empty `folder` for a new run (`--overwrite`), after the checks of `replaceable`; the names deleted."""
    entries = replaceable(folder, keep)
    deleted = [p.name + ("/" if p.is_dir() and not p.is_symlink() else "") for p in entries]
    for entry in entries:
        # a symlink inside is unlinked, never followed; rmtree does not follow the links below it either
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry)
        else:
            entry.unlink()
    return deleted
