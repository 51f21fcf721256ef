"""`--warm-start-from RUN_DIR ...`: a new study starts from what earlier runs of the same experiment
learned. Their finished trials whose configs fit the new space (and its pins) are told to Optuna
before the first proposal, as they ended: a completed trial with its last value on the ranking
metric, a trial stopped early as pruned with its per-epoch values (what TPE ranks pruned trials
by). Failed trials carry no value and are left out; trials that do not fit are counted and named.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import optuna
import pandas as pd

from search import record
from search.config import UserError
from search.experiment import Choice, Dim, Experiment, Int
from search.io import read_csv
from search.searcher import FROM_RUN, FROM_TRIAL, distribution


def _param(value: Any, dim: Dim) -> Any | None:
    """The value as a point of `dim`, or None when it lies outside (CSV gives 64 or "64" or "adam")."""
    if isinstance(dim, Choice):
        return next((o for o in dim.options if str(o) == str(value)), None)
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    if not math.isfinite(number) or not dim.low <= number <= dim.high:
        return None
    return int(round(number)) if isinstance(dim, Int) else number


def _finite(v: Any) -> bool:
    return isinstance(v, (int, float)) and math.isfinite(v)


def check_runs(run_dirs: list[Path], exp: Experiment) -> None:
    """Each is a run of this experiment with trials: checked with the command line, before Ray starts."""
    for run_dir in run_dirs:
        if not record.exists(run_dir):
            raise UserError(f"--warm-start-from {run_dir}: not a run folder (no run.json there)")
        earlier = record.RunRecord.read(run_dir)
        if earlier.experiment != exp.name:
            raise UserError(f"--warm-start-from {run_dir}: a run of {earlier.experiment}, not {exp.name}")
        if not (run_dir / "trials.csv").is_file():
            raise UserError(f"--warm-start-from {run_dir}: no trials.csv yet (its search never got going)")


def earlier_trials(run_dirs: list[Path], exp: Experiment, space: dict[str, Dim], pinned: dict[str, Any],
                   metric: str, base: dict[str, Any] | None = None) -> tuple[list[optuna.trial.FrozenTrial], list[str]]:
    """(the trials to tell Optuna, one line per earlier run saying what was taken and what left out);
    the runs passed `check_runs`. Only trials that trained with this search's pins are taken, and, where
    this search or the earlier one trained with a budget's own values (e.g. generated images), with this
    search's values of those keys (`base`; a trial from before the key existed had its default)."""
    told, lines = [], []
    dists = {k: distribution(d) for k, d in space.items()}
    budget_keys = {k for b in (exp.budget_cpu, exp.budget_gpu, *exp.budgets.values()) for k in b.tuned_with}
    held = {k: base[k] for k in budget_keys if base is not None and k in base and k not in pinned}
    for run_dir in run_dirs:
        trials = read_csv(run_dir / "trials.csv")
        history = read_csv(run_dir / "history.csv") if (run_dir / "history.csv").is_file() else pd.DataFrame()
        taken, outside, no_value = 0, 0, 0
        for _, row in trials.iterrows():
            params = {k: _param(row[k], d) if k in row else None for k, d in space.items()}
            pins_hold = (all(k not in row or str(row[k]) == str(v) for k, v in pinned.items())
                         and all(str(row.get(k, exp.defaults[k])) == str(v) for k, v in held.items()))
            if any(v is None for v in params.values()) or not pins_hold:
                outside += 1
                continue
            attrs = {FROM_RUN: str(run_dir), FROM_TRIAL: str(row["trial_id"])}
            last = row.get(f"last_{metric}")
            if row["status"] == "completed" and _finite(last):
                told.append(optuna.trial.create_trial(params=params, distributions=dists, value=float(last),
                                                      user_attrs=attrs))
            elif row["status"] == "stopped" and metric in history:
                h = history[history["trial_id"].astype(str) == str(row["trial_id"])]
                steps = {int(e): float(v) for e, v in zip(h["epoch"], h[metric], strict=True) if _finite(v)}
                if not steps:
                    no_value += 1
                    continue
                told.append(optuna.trial.create_trial(params=params, distributions=dists, user_attrs=attrs,
                                                      intermediate_values=steps,
                                                      state=optuna.trial.TrialState.PRUNED))
            else:
                no_value += 1
                continue
            taken += 1
        lines.append(f"warm start: {taken} trials of {run_dir} told to Optuna"
                     + (f"; {outside} left out (a value outside this space or another pinned value)" if outside else "")
                     + (f"; {no_value} without a value on {metric} (failed, or an older run)" if no_value else ""))
    return told, lines
