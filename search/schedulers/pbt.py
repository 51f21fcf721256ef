"""Population Based Training (`pbt`): the worse quarter of the trials takes a better one's weights and
hyperparameters, perturbed, every few epochs."""

from __future__ import annotations

from collections.abc import Callable

from ray.tune.schedulers import PopulationBasedTraining, TrialScheduler

from search.config import UserError
from search.experiment import Dim, Float
from search.plan import Plan
from search.protocol import EPOCH_CLOCK
from search.schedulers.base import Scheduler
from search.searcher import to_tune


def mutable_keys(space: dict[str, Dim]) -> list[str]:
    """What Population Based Training may change mid-run: the continuous keys (rates, probabilities,
    weights). Choices and integers (architecture, batch size, schedule) shape the model or its steps
    and stay as sampled."""
    return [k for k, d in space.items() if isinstance(d, Float)]


def clipped_to(space: dict[str, Dim]) -> Callable[[dict], dict]:
    """PBT's explore step multiplies a value by 0.8 or 1.2: keep it inside the searched range (a
    dropout of 0.7 * 1.2 would not build)."""
    bounds = {k: (d.low, d.high) for k, d in space.items() if isinstance(d, Float)}

    def clip(config: dict) -> dict:
        return {**config, **{k: min(max(config[k], lo), hi) for k, (lo, hi) in bounds.items() if k in config}}
    return clip


class _PopulationBasedTraining(PopulationBasedTraining):
    """Ray's PBT, except at a trial's last epoch: Ray would still clone and perturb it there, and the
    trial, ending anyway, would show a config it never trained with."""

    def __init__(self, last_epoch: int, **kwargs):
        super().__init__(**kwargs)
        self.last_epoch = last_epoch

    def on_trial_result(self, tune_controller, trial, result: dict) -> str:
        if result.get(EPOCH_CLOCK, 0) >= self.last_epoch:
            return TrialScheduler.CONTINUE
        return super().on_trial_result(tune_controller, trial, result)


class Pbt(Scheduler):
    name = "pbt"
    summary = ("population based training: every few epochs the worse quarter of the trials takes a better "
               "one's weights and hyperparameters, perturbed, and trains on")
    proposes_configs = True
    changes_config = True
    clones_checkpoints = True
    checkpoints_every_epoch = True
    stopped_label = "ended early"  # PBT stops no trial: only a time budget or an interruption does

    def build(self, plan: Plan, metric: str, mode: str, space: dict[str, Dim] | None = None) -> TrialScheduler:
        mutable = {k: space[k] for k in mutable_keys(space or {})}
        if not mutable:
            raise UserError("--scheduler pbt: nothing searched that it can change mid-run (it perturbs the "
                            "continuous keys: learning rate, dropout, loss weights, probabilities); search one")
        return _PopulationBasedTraining(
            # the epoch, not Ray's count of reports, which runs ahead of it after a trial restarts
            plan.max_epochs, time_attr=EPOCH_CLOCK, metric=metric, mode=mode,
            perturbation_interval=plan.grace_epochs, burn_in_period=plan.grace_epochs,
            hyperparam_mutations=to_tune(mutable), custom_explore_fn=clipped_to(mutable),
            quantile_fraction=0.25, resample_probability=0.25, log_config=True)

    def checkpoints_to_keep(self, plan: Plan) -> int:
        """A trial may clone the checkpoint another saved at its last perturbation, up to one interval
        (plus the epoch in flight) before that trial's latest: older ones may be deleted."""
        return plan.grace_epochs + 2

    def decision_epochs(self, plan) -> list[int]:
        every, end = int(plan["grace_epochs"]), int(plan["max_epochs"])
        return list(range(every, end, every))

    def describe(self, plan: Plan) -> str:
        return (f"population based training, the worse quarter exploits a better trial every "
                f"{plan.grace_epochs} epochs")
