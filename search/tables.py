"""trials.csv and history.csv, rebuilt from Ray Tune's own trial folders (the record of truth).

Ray writes, per trial, `params.json` (the sampled config) and `result.json` (one JSON object per
reported epoch). Reading those, rather than keeping state in the driver, makes the tables right
after a crash and a `--resume` too.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import pandas as pd

from search.protocol import ENDED_FILE, FINISHED, HISTORY_FILE, NODE, RAY_KEYS, error_line, trial_status


def _read_results(trial_dir: Path) -> list[dict[str, Any]]:
    path = trial_dir / "result.json"
    if not path.is_file():
        return []
    rows = []
    for line in path.read_text().splitlines():
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:  # a line cut by a crash mid-write: the rows before it stand
            break
    return rows


def _latest_per_epoch(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per epoch, the last reported: a trial restarted from epoch 1 (its checkpoint was
    unreadable) reports its early epochs again, and the rerun is what its later epochs built on."""
    if not rows or "epoch" not in rows[0]:
        return rows
    start = max(i for i, r in enumerate(rows) if i == 0 or r.get("epoch", 0) <= rows[i - 1].get("epoch", 0))
    return rows[start:]


def _with_checkpointed_epochs(rows: list[dict[str, Any]], *trial_dirs: Path) -> list[dict[str, Any]]:
    """Ray copies a trial's result.json to the run folder every few checkpoints, not at each: a run
    interrupted in between loses the newest rows there, though the trial's checkpoint (and, after
    --resume, its training) went past them. The checkpoint holds its history (HISTORY_FILE):
    epochs missing from result.json are taken from it. (Under Population Based Training, epochs a
    trial skipped by taking an older trial's weights come from that lineage.) `trial_dirs`: the
    trial's folder where result.json was read (Ray's staging folder, during a search) and its folder
    in the run's storage, where Ray writes the checkpoints."""
    checkpoints = sorted({p for d in trial_dirs for p in d.glob(f"checkpoint_*/{HISTORY_FILE}")},
                         key=lambda p: p.parent.name)
    if not checkpoints or (rows and "epoch" not in rows[0]):
        return rows
    try:
        saved = json.loads(checkpoints[-1].read_text())
    except (OSError, json.JSONDecodeError):
        return rows
    if not isinstance(saved, list):
        return rows
    have = {r.get("epoch") for r in rows}
    missing = [r for r in saved if isinstance(r, dict) and r.get("epoch") not in have]
    if not missing:
        return rows
    merged = sorted(rows + missing, key=lambda r: r.get("epoch", 0))
    if merged[-1] is missing[-1] and (checkpoints[-1].parent / ENDED_FILE).is_file():
        # the last epoch only the checkpoint kept (result.json lost or behind after a kill): the last
        # checkpoint of a trial that ended by itself says so (search/trial.py history_checkpoint)
        merged[-1] = {**merged[-1], FINISHED: True}
    return merged


def _reported_after(last: Mapping[str, Any], error_file: Path) -> bool:
    """Whether the trial reported again after its last error: it was retried and went on (the
    scheduler may then have stopped it), so that error did not end it."""
    stamp = last.get("timestamp")
    return isinstance(stamp, (int, float)) and stamp > error_file.stat().st_mtime


# Ray names trial folders "<trainable>_<trial id>_<index>_<params>_<date>"; index = creation order.
TRIAL_DIR = re.compile(r"_([0-9a-f]{5,})_(\d+)_")


def trial_dirs(tune_dir: Path, staging: Path | None = None) -> list[Path]:
    """Trial folders in the order the trials were created (the warm-start trial first). During a
    search Ray writes them first in the driver's staging folder and copies that to `tune_dir`
    every so often: a trial found in `staging` is read from there, as it is newer."""
    def order(p: Path) -> tuple[int, str]:
        m = TRIAL_DIR.search(p.name)
        return (int(m.group(2)), p.name) if m else (1 << 30, p.name)
    def folders(parent: Path) -> dict[str, Path]:  # either file may be missing after a kill (see _params)
        return {p.parent.name: p.parent for name in ("params.json", "result.json") for p in parent.glob(f"*/{name}")}
    found = folders(tune_dir)
    if staging is not None and staging != tune_dir:
        found.update(folders(staging))
    return sorted(found.values(), key=order)


def folder_trial_id(name: str) -> str | None:
    """The trial id in the name of a trial's folder (TRIAL_DIR), or None."""
    m = TRIAL_DIR.search(name)
    return m.group(1) if m else None


def _trial_id(trial_dir: Path, rows: list[dict[str, Any]]) -> str | None:
    """From the trial's reports (`rows`, its result.json), else from its folder's name."""
    if rows and rows[0].get("trial_id"):
        return rows[0]["trial_id"]
    return folder_trial_id(trial_dir.name)


def _params(trial_dir: Path, reported: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The trial's config: params.json, or where a kill cut it short as Ray copied it (and no whole
    copy was left: search/ray_state.py), the config Ray put in its last report."""
    try:
        params = json.loads((trial_dir / "params.json").read_text())
    except (json.JSONDecodeError, OSError):
        params = reported[-1].get("config") if reported else None
    return params if isinstance(params, dict) else None


def collect(tune_dir: Path, base: Mapping[str, Any], objective: str, mode: str, stop_reason: Callable[[int], str],
            running: set[str] = frozenset(),
            latest: Mapping[str, Mapping[str, Any]] | None = None,
            staging: Path | None = None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(trials, history) frames of one search. `stop_reason(epochs)` words a trial the scheduler
    stopped; `running` names trials still in progress; `latest` holds the driver's newest result per
    trial, which Ray may not have written to disk yet; `staging` is Ray's driver staging folder of
    the experiment (see trial_dirs)."""
    trials, history = [], []
    for trial_dir in trial_dirs(tune_dir, staging):
        reported = _read_results(trial_dir)
        trial_id = _trial_id(trial_dir, reported)
        # a running trial's params.json may be mid-write (Ray rewrites it at each start): skipped this time
        params = _params(trial_dir, reported if trial_id not in running else [])
        if params is None:
            continue  # a trial Ray is creating right now: its params.json is not written yet
        rows = _with_checkpointed_epochs(_latest_per_epoch(reported), trial_dir, tune_dir / trial_dir.name)
        newest = (latest or {}).get(trial_id)
        if newest is not None and newest.get("epoch", 0) > (rows[-1].get("epoch", 0) if rows else 0):
            rows.append(dict(newest))
        error = error_line(trial_dir / "error.txt")  # the last failure; a retry (--max-failures) may have recovered
        last = rows[-1] if rows else {}
        ended_by_error = (error is not None and not last.get(FINISHED) and trial_id not in running
                          and not _reported_after(last, trial_dir / "error.txt"))
        status, reason = trial_status(last, base.get("epochs", 0), stop_reason, running=trial_id in running,
                                      failed_with=error if ended_by_error else None,
                                      recovered_from=None if ended_by_error else error)
        # Ray's `timestamp` (Unix seconds when the epoch was reported) kept: best-so-far against wall time.
        metrics = [{**{k: v for k, v in r.items() if k not in RAY_KEYS and k != NODE},
                    "timestamp": r.get("timestamp")} for r in rows]
        for m in metrics:
            history.append({"trial_id": trial_id, **m})
        row: dict[str, Any] = {"trial_id": trial_id, "status": status, "reason": reason, "epochs_run": len(rows),
                               NODE: last.get(NODE), **{**base, **params}}
        if metrics:
            frame = pd.DataFrame(metrics)
            values = frame[objective].where(frame[objective].map(lambda v: isinstance(v, float) and math.isfinite(v)))
            best_at = values.idxmax() if mode == "max" else values.idxmin()
            best_at = 0 if pd.isna(best_at) else best_at
            row["best_epoch"] = int(frame["epoch"][best_at])
            for k in frame.columns:
                if k in ("epoch", "timestamp"):
                    continue
                row[f"best_{k}"] = frame[k][best_at]  # every metric at the epoch best on the objective
                row[f"last_{k}"] = frame[k].iloc[-1]
        trials.append(row)
    return pd.DataFrame(trials), pd.DataFrame(history)


def collect_rounds(tune_dirs: list[Path], base: Mapping[str, Any], objective: str, mode: str,
                   stop_reason: Callable[[int], str]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(trials, history) of the finished rounds of a grown search, one Ray experiment folder each, in order."""
    frames = [collect(d, base, objective, mode, stop_reason) for d in tune_dirs]
    return (pd.concat([t for t, _ in frames], ignore_index=True) if frames else pd.DataFrame(),
            pd.concat([h for _, h in frames], ignore_index=True) if frames else pd.DataFrame())


def best_trial(trials: pd.DataFrame, objective: str, mode: str) -> pd.Series | None:
    """The trial whose best epoch is best on the objective (failed trials excluded)."""
    column = f"best_{objective}"
    if trials.empty or column not in trials:
        return None
    usable = trials[(trials["status"] != "failed") & trials[column].notna()]
    if usable.empty:
        return None
    return usable.loc[usable[column].idxmax() if mode == "max" else usable[column].idxmin()]
