"""The driver/worker protocol of a search, in one place: the keys a trial reports beside its
metrics, the keys Ray adds, how a trial's ending is named (status and reason), and how its error
is read. The trial (search/trial.py) writes these; the live progress (search/progress.py), the
tables rebuilt from Ray's folders (search/tables.py) and the searcher read them."""

from __future__ import annotations

import json
import os
import re
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from search.cli import DISK_FULL as DISK_FULL_ERRNOS
from search.loop import DECODED

# Reported by the trial with every epoch's metrics.
FINISHED = "finished"  # True on the report that ends the trial by itself (all epochs, or its own patience)
# The clock of the schedulers that stop trials early (search/schedulers/) and of the intermediate values told to
# Optuna: the epoch a report names, which is its restored state's, not Ray's count of the trial's reports
# (training_iteration). Equal while a trial runs on, as it reports once an epoch; Ray's count runs ahead
# once a trial restarts from an older checkpoint or from epoch 1 (search/ray_state.py, trial.read_state),
# and would stop it at max_t epochs short. Population Based Training keeps Ray's count: a clone takes on
# another trial's weights, and its epochs with them, while PBT's intervals are the trial's own.
EPOCH_CLOCK = "epoch"
NODE = "node"  # the Ray node that ran the trial (a trials.csv column): a cluster has several
# Under a scheduler that changes configs mid-run: the schedule the epoch's weights were trained with, as
# JSON [[first epoch, {key: value}], ...] (search/loop.py changes_of); history.csv keeps it per epoch.
CHANGES = "config_changes"
# Beside the state in every trial checkpoint: the rows of its history (written by the trial, read by the tables).
HISTORY_FILE = "history.json"
ENDED_FILE = "ended"  # in the checkpoint of a trial's last epoch, which holds its history but no weights

# Keys Ray adds to every result: bookkeeping, not metrics of ours.
RAY_KEYS = {
    "timestamp", "date", "hostname", "node_ip", "pid", "time_this_iter_s", "time_total_s", "time_since_restore",
    "iterations_since_restore", "checkpoint_dir_name", "done", "training_iteration", "trial_id", "config",
    "should_checkpoint", "experiment_tag", FINISHED,
}
STATUSES = ("completed", "stopped", "failed", "running")

# A trial's error line naming a full disk (or quota), as Python prints an OSError.
DISK_FULL = re.compile("|".join(rf"\[Errno {n}\]|{re.escape(os.strerror(n))}" for n in DISK_FULL_ERRNOS))


def trained_schedule(row: Mapping[str, Any]) -> list[tuple[int, dict[str, Any]]]:
    """The schedule of hyperparameters a trial's last weights were trained with (a trials.csv row's
    last CHANGES), empty when the scheduler changed no config mid-run. Its first entry holds the
    values at epoch 1, which a cloned trial inherited from the trials it was cloned from."""
    text = row.get(f"last_{CHANGES}")
    if not isinstance(text, str) or not text:
        return []
    return [(int(first), values) for first, values in json.loads(text)]


def chosen_decoding(row: Mapping[str, Any], defaults: Mapping[str, Any]) -> dict[str, Any]:
    """The decoding a trial's best epoch was read with, where the search chose it per trial (search/loop.py
    choose_decoding): a trials.csv row's best_decoded_<key> values, typed as the key's default; {} where
    the search did not choose it."""
    prefix = f"best_{DECODED}"
    chosen = {k[len(prefix):]: plain(v) for k, v in row.items() if k.startswith(prefix) and v == v}  # not NaN
    return {k: type(defaults[k])(v) if k in defaults else v for k, v in chosen.items()}


def trial_config(row: Mapping[str, Any], defaults: Mapping[str, Any]) -> dict[str, Any]:
    """The config a trials.csv row's best epoch was trained and read with: its params (a key the
    experiment gained after the run takes its default), then the decoding chosen for it, if any."""
    config = {k: plain(row[k]) if k in row else v for k, v in defaults.items()}
    return {**config, **chosen_decoding(row, defaults)}


def trial_status(last: Mapping[str, Any], planned_epochs: int, stop_reason: Callable[[int], str], *,
                 failed_with: str | None = None, running: bool = False,
                 recovered_from: str | None = None) -> tuple[str, str | None]:
    """(status, reason) of a trial from its last report. `stop_reason(epochs)` is the scheduler's
    words for a trial it stopped; `failed_with` the error that ended the trial; `recovered_from` an
    earlier error a retry (--max-failures) got past."""
    epochs = int(last.get("epoch", 0))
    if failed_with is not None:
        return "failed", failed_with
    if last.get(FINISHED):
        reason = "all epochs" if epochs >= planned_epochs else "early stopping (patience)"
    elif running:
        return "running", None
    else:
        reason = stop_reason(epochs) if last else "never started"
    return "completed" if last.get(FINISHED) else "stopped", reason + (
        f"; recovered from {recovered_from}" if recovered_from else "")


def error_line(path: str | Path | None) -> str | None:
    """The exception line of a failed trial's error file (the last line of a Python traceback names
    the exception and its message), or None without a readable file."""
    try:
        lines = [ln.strip() for ln in Path(path).read_text(errors="replace").splitlines() if ln.strip()]
    except (OSError, TypeError):
        return None
    return lines[-1][:300] if lines else "error"


def plain(v: Any) -> Any:
    """numpy/pandas scalars -> Python ones (JSON, and configs that round-trip)."""
    return v.item() if hasattr(v, "item") else v
