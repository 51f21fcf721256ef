"""Numbers the report states about a study: which best values sit near a search bound, which
hyperparameters mattered (Optuna's importance), and whether the ranking of trials at an early
epoch (a scheduler's rung) agreed with their final scores (rank correlation)."""

from __future__ import annotations

import math
import warnings
from typing import Any

import optuna
import pandas as pd

from search.analyse import Run
from search.experiment import Choice, Dim, Float, Int, matches, warm_start
from search.searcher import distribution
from search.stats import rank_corr

NEAR_BOUND = 0.05  # a value in the outer 5% of its range (in log space for log dimensions) is "near a bound"
MIN_TRIALS_IMPORTANCE = 5


def position(value: float, dim: Float | Int) -> float:
    """Where `value` sits in the range of `dim`: 0 at the low bound, 1 at the high one."""
    lo, hi, v = dim.low, dim.high, min(max(float(value), dim.low), dim.high)
    if dim.log:
        lo, hi, v = math.log(lo), math.log(hi), math.log(v)
    return (v - lo) / (hi - lo) if hi > lo else 0.5


def bound_flags(run: Run, space: dict[str, Dim], limits: dict[str, Any] | None = None, top: int = 3) -> list[str]:
    """Sentences for each numeric hyperparameter whose best trial lies near a bound of its range,
    with how many of the `top` best trials are there too (a sign the range should be widened,
    unless the bound is also the end of the valid values, e.g. a probability of 0)."""
    ranked = run.ranked()
    ranked = ranked[ranked[f"best_{run.objective}"].notna()] if not ranked.empty else ranked
    if ranked.empty:
        return []
    best, leaders = ranked.iloc[0], ranked.head(top)
    base = run.record.base_config
    best_is_baseline = all(k in base for k in space) and matches(best, warm_start(dict(base), space))
    flags = []
    for key, dim in space.items():
        if isinstance(dim, Choice):
            continue
        p = position(best[key], dim)
        if NEAR_BOUND < p < 1 - NEAR_BOUND:
            continue
        if best_is_baseline and not dim.contains(base[key]):  # not a preference: the baseline's own value
            continue  # (e.g. weight_decay 0) lies outside the range, and its trial ran at the nearest bound
        side, bound = ("lower", dim.low) if p <= NEAR_BOUND else ("upper", dim.high)
        at_side = (lambda q: q <= NEAR_BOUND) if side == "lower" else (lambda q: q >= 1 - NEAR_BOUND)
        near = sum(at_side(position(v, dim)) for v in leaders[key])
        limit = (limits or {}).get(key)
        hard = limit is not None and bound == (limit.low if side == "lower" else limit.high)
        advice = (f"{bound:g} is also the {'lowest' if side == 'lower' else 'highest'} valid value, so the range "
                  "cannot widen: the search prefers this end." if hard else
                  f"widen the range past {bound:g}, or accept that the optimum may lie outside it.")
        flags.append(f"**{key}**: the best trial's value {best[key]:.3g} is near the {side} bound {bound:g} "
                     f"({near} of the top {len(leaders)} trials are there); {advice}")
    return flags


def _param(value: Any, dim: Dim) -> Any:
    if isinstance(dim, Choice):  # CSV gives 64 or "64" or "adam": match the option by its text
        return next(o for o in dim.options if str(o) == str(value))
    clipped = min(max(float(value), dim.low), dim.high)  # the warm start may sit just outside (weight_decay 0)
    return int(round(clipped)) if isinstance(dim, Int) else clipped


def importance(run: Run, space: dict[str, Dim]) -> tuple[dict[str, float], str]:
    """(importance per hyperparameter, a note on how it was computed or why not). Optuna's
    PED-ANOVA evaluator over a study rebuilt from trials.csv: every trial with a value counts, early-
    stopped ones at their best value (which favours hyperparameters that learn fast)."""
    column = f"best_{run.objective}"
    usable = run.trials[(run.trials["status"] != "failed") & run.trials[column].notna()] if not run.trials.empty \
        else run.trials
    if len(usable) < MIN_TRIALS_IMPORTANCE:
        return {}, f"not computed: {len(usable)} trials with a value, at least {MIN_TRIALS_IMPORTANCE} are needed."
    varied = {k: d for k, d in space.items() if usable[k].nunique() > 1}
    optuna.logging.set_verbosity(optuna.logging.WARNING)  # no "A new study created" line in the output
    study = optuna.create_study(direction="maximize" if run.mode == "max" else "minimize")
    dists = {k: distribution(d) for k, d in varied.items()}
    for _, row in usable.iterrows():
        study.add_trial(optuna.trial.create_trial(params={k: _param(row[k], d) for k, d in varied.items()},
                                                  distributions=dists, value=float(row[column])))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # ExperimentalWarning: PED-ANOVA is marked experimental
        try:
            values = optuna.importance.get_param_importances(
                study, evaluator=optuna.importance.PedAnovaImportanceEvaluator(), normalize=True)
        except (ValueError, RuntimeError) as e:
            return {}, f"not computed: Optuna's evaluator refused these trials ({e})."
    note = (f"Optuna's PED-ANOVA evaluator over {len(usable)} trials (the top 10% against all), normalised to "
            "sum to 1; early-stopped trials enter at their best value.")
    if len(usable) < 30:
        note += f" With {len(usable)} trials this is a rough guide, not a measurement."
    return {k: float(v) for k, v in values.items()}, note


def rung_correlation(run: Run, milestones: list[int], ranked_on: str | None = None,
                     ranked_mode: str | None = None) -> pd.DataFrame:
    """Per rung (an epoch where a scheduler judges trials): trials that reached it, trials stopped
    there, and two rank correlations of the value the scheduler ranked on at the rung (`ranked_on`,
    default the objective; sign-flipped when its mode differs, so agreement is positive): with the
    best objective of the trials that ran all epochs (few, on a small budget), and with the objective
    at the next rung (or the last epoch) of the trials that got there."""
    rows, h, t = [], run.history, run.trials
    if h.empty or t.empty:
        return pd.DataFrame()
    ranked_on = ranked_on if ranked_on in h else run.objective
    sign = -1.0 if ranked_on != run.objective and (ranked_mode or run.mode) != run.mode else 1.0
    full = t[(t["status"] == "completed") & t[f"best_{run.objective}"].notna()].set_index("trial_id")
    for i, r in enumerate(milestones):
        at = sign * h[h["epoch"] == r].set_index("trial_id")[ranked_on]
        both = at.index.intersection(full.index)
        nxt = milestones[i + 1] if i + 1 < len(milestones) else run.plan.max_epochs
        later = h[h["epoch"] == nxt].set_index("trial_id")[run.objective]
        reached = at.index.intersection(later.index)
        stopped = int(((t["status"] == "stopped") & (t["epochs_run"] == r)).sum())
        rows.append({"rung (epoch)": r, "trials reached": len(at), "stopped here": stopped,
                     "vs final: trials": len(both),
                     "vs final: rank corr.": rank_corr(at[both], full.loc[both, f"best_{run.objective}"]),
                     "vs next: epoch": nxt, "vs next: trials": len(reached),
                     "vs next: rank corr.": rank_corr(at[reached], later[reached])})
    return pd.DataFrame(rows)
