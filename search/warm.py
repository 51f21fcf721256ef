"""`--warm-start-from RUN_DIR ...`: a new study starts from what earlier runs of the same experiment
learned. Their finished trials whose configs fit the new space (and its pins) are told to Optuna
before the first proposal, as they ended: a completed trial with its last value on the ranking
metric, a trial stopped early as pruned with its per-epoch values (what TPE ranks pruned trials
by). Failed trials carry no value and are left out; trials that do not fit are counted and named.
"""

from __future__ import annotations

import math
from collections import Counter
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


def _same(a: Any, b: Any) -> bool:
    """Equal as configs compare: 0.001 from JSON and "0.001" from a CSV are one value."""
    try:
        return float(a) == float(b)
    except (TypeError, ValueError):
        return str(a) == str(b)


def other_setup(earlier: record.RunRecord, data: dict[str, Any] | None) -> str | None:
    """Why none of an earlier run's trials trained as this search's do (other data, smoke), or None."""
    if data is not None and earlier.data and dict(earlier.data) != dict(data):
        return "other data (run.json's data differs: another data set, split or --smoke)"
    return None


def other_fixed_value(effective: dict[str, Any], fixed: dict[str, Any]) -> str | None:
    """The first value a trial trained with that differs from this search's fixed one, as a reason."""
    for key, value in fixed.items():
        if key in effective and not _same(effective[key], value):
            return f"{key}={effective[key]} (this search: {value})"
    return None


def earlier_trials(run_dirs: list[Path], exp: Experiment, space: dict[str, Dim], pinned: dict[str, Any],
                   metric: str, base: dict[str, Any] | None = None,
                   data: dict[str, Any] | None = None) -> tuple[list[optuna.trial.FrozenTrial], list[str]]:
    """(the trials to tell Optuna, one line per earlier run saying what was taken and what left out, and
    why); the runs passed `check_runs`. A trial is taken only where it trained as this search's trials do
    but for the searched keys: the same data (`data`, run.json's data info), the same values of every key
    this search holds fixed (`base`: its pins, the budget's values such as generated images, the optimiser
    a --full-space run searched...; a trial from before a key existed had its default). One trained for
    another number of epochs enters as pruned with its per-epoch values, never as complete: its last value
    is not what this search's horizon (and the schedules stretched to it) would give."""
    told, lines = [], []
    dists = {k: distribution(d) for k, d in space.items()}
    budget_keys = {k for b in (exp.budget_cpu, exp.budget_gpu, *exp.budgets.values()) for k in b.tuned_with}
    held = {k: base[k] for k in budget_keys if base is not None and k in base and k not in pinned}
    fixed = {k: v for k, v in (base or {}).items() if k not in space and k not in ("seed", "epochs")}
    for run_dir in run_dirs:
        earlier = record.RunRecord.read(run_dir) if record.exists(run_dir) else None
        trials = read_csv(run_dir / "trials.csv")
        history = read_csv(run_dir / "history.csv") if (run_dir / "history.csv").is_file() else pd.DataFrame()
        horizon = int(earlier.base_config.get("epochs", 0)) if earlier is not None else None
        other_horizon = base is not None and horizon is not None and horizon != int(base.get("epochs", horizon))
        setup = other_setup(earlier, data) if earlier is not None else None
        taken, outside, no_value, reasons = 0, 0, 0, Counter()
        for _, row in trials.iterrows():
            params = {k: _param(row[k], d) if k in row else None for k, d in space.items()}
            pins_hold = (all(k not in row or str(row[k]) == str(v) for k, v in pinned.items())
                         and all(str(row.get(k, exp.defaults[k])) == str(v) for k, v in held.items()))
            if any(v is None for v in params.values()) or not pins_hold:
                outside += 1
                continue
            if earlier is not None:
                effective = {**exp.defaults, **earlier.base_config,
                             **{k: row[k] for k in earlier.searched if k in row and pd.notna(row[k])}}
                why = setup or other_fixed_value(effective, fixed)
                if why:
                    reasons[why] += 1
                    continue
            attrs = {FROM_RUN: str(run_dir), FROM_TRIAL: str(row["trial_id"])}
            last = row.get(f"last_{metric}")
            h = history[history["trial_id"].astype(str) == str(row["trial_id"])] if metric in history else None
            steps = ({int(e): float(v) for e, v in zip(h["epoch"], h[metric], strict=True) if _finite(v)}
                     if h is not None else {})
            if row["status"] == "completed" and _finite(last) and not other_horizon:
                told.append(optuna.trial.create_trial(params=params, distributions=dists, value=float(last),
                                                      user_attrs=attrs))
            elif row["status"] in ("stopped", "completed") and steps:
                told.append(optuna.trial.create_trial(params=params, distributions=dists, user_attrs=attrs,
                                                      intermediate_values=steps,
                                                      state=optuna.trial.TrialState.PRUNED))
            else:
                no_value += 1
                continue
            taken += 1
        if other_horizon and taken:
            reasons[f"taken as pruned, not complete: trained for {horizon} epochs (this search: {base['epochs']})"] \
                = taken
        lines.append(f"warm start: {taken} trials of {run_dir} told to Optuna"
                     + (f"; {outside} left out (a value outside this space or another pinned value)" if outside else "")
                     + "".join(f"; {n} {'left out: ' if not why.startswith('taken') else ''}{why}"
                               for why, n in reasons.items())
                     + (f"; {no_value} without a value on {metric} (failed, or an older run)" if no_value else ""))
    return told, lines
