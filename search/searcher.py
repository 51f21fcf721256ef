"""Optuna TPE through Ray's OptunaSearch, with early-stopped and failed trials told honestly.

Ray's OptunaSearch tells Optuna COMPLETE for any trial that ends with a result, so a trial the
scheduler stopped after 2 of 30 epochs enters TPE's model as if its 2-epoch score were final, and a trial
that raised after some epochs also counts as complete. Here the trial marks its last report
`finished=True` only when it ran to its end (all epochs, or its own patience); any other ending
is told as PRUNED (its per-epoch values were already reported as intermediate values, which is
what TPE uses to rank pruned trials), and errors as FAIL without a value.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import optuna
from ray import tune
from ray.tune.search.optuna import OptunaSearch

from search.experiment import Choice, Dim, Float, Int
from search.protocol import FINISHED


def to_tune(space: Mapping[str, Dim]) -> dict[str, Any]:
    """Our space (data) -> Ray Tune domains; OptunaSearch turns them into Optuna distributions."""
    out: dict[str, Any] = {}
    for key, dim in space.items():
        if isinstance(dim, Float):
            out[key] = (tune.loguniform if dim.log else tune.uniform)(dim.low, dim.high)
        elif isinstance(dim, Int):
            out[key] = (tune.lograndint if dim.log else tune.randint)(dim.low, dim.high + 1)  # high exclusive
        elif isinstance(dim, Choice):
            out[key] = tune.choice(list(dim.options))
        else:
            raise TypeError(f"{key}: unknown dimension {dim!r}")
    return out


class HonestOptunaSearch(OptunaSearch):
    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
        if trial_id in self._completed_trials or trial_id not in self._ot_trials:
            return
        ot_trial = self._ot_trials[trial_id]
        value = None if result is None else result.get(self.metric)
        finite = isinstance(value, (int, float)) and math.isfinite(value)
        if error or (result is not None and result.get(FINISHED) and not finite):
            state, value = optuna.trial.TrialState.FAIL, None
        elif result is None or not result.get(FINISHED):
            state, value = optuna.trial.TrialState.PRUNED, None
        else:
            state = optuna.trial.TrialState.COMPLETE
        self._ot_study.tell(ot_trial, value, state=state)
        self._completed_trials.add(trial_id)

    def on_trial_result(self, trial_id: str, result: dict) -> None:
        value = result.get(self.metric)
        if isinstance(value, (int, float)) and math.isfinite(value):  # NaN never reaches Optuna
            super().on_trial_result(trial_id, result)

    @property
    def study(self) -> optuna.Study:
        return self._ot_study


def make_searcher(seed: int, warm_start: list[dict[str, Any]], metric: str, mode: str,
                  trials: int) -> HonestOptunaSearch:
    """TPE seeded by `seed`, learning from `metric`; the warm-start points (the hand-tuned baseline and
    its variants) are evaluated first, then random draws (a fifth of the trials, at least 3), then TPE.
    The space comes from the Tuner's param_space (see `to_tune`)."""
    startup = len(warm_start) + max(3, trials // 5)
    sampler = optuna.samplers.TPESampler(seed=seed, n_startup_trials=startup)
    return HonestOptunaSearch(sampler=sampler, points_to_evaluate=warm_start or None, metric=metric, mode=mode)
