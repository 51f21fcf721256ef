"""Trial schedulers as named strategies: `--scheduler NAME` picks one from this registry.

A scheduler decides, while a search runs, which trials go on. Each entry builds Ray Tune's
scheduler from the run's plan, declares the epochs at which it judges trials (for the plan line,
the time estimate and the report), words why it stopped a trial, and writes its report section.
Nothing else in the project names a scheduler. Two flags mark schedulers that do more than stop,
as Population Based Training (`pbt`) does: `proposes_configs` (it samples and mutates configs
itself: Ray refuses a search algorithm beside it, so the tuner leaves TPE out) and
`changes_config` (a trial's config may differ from one epoch to the next: history.csv keeps the
config of each epoch, and retraining replays the best trial's schedule).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import pandas as pd
from ray.tune.schedulers import ASHAScheduler, FIFOScheduler, PopulationBasedTraining, TrialScheduler

from search import compat, pbt_report, screening, study_stats
from search.analyse import Run
from search.config import UserError
from search.experiment import Dim, Float
from search.markdown import md_table
from search.plan import Plan
from search.protocol import EPOCH_CLOCK
from search.searcher import to_tune
from search.trial import CHECKPOINT_SHARE


class Scheduler:
    name = ""
    summary = ""
    proposes_configs = False  # True: it proposes configs itself, and Ray refuses a searcher beside it
    changes_config = False  # True: a trial's hyperparameters may change between epochs
    # True: a paused trial may be restored from another trial's checkpoint (PBT's exploit), so an ended
    # trial's weights stay until the search ends (search/progress.py drop_weights)
    clones_checkpoints = False
    stopped_label = "stopped early"  # legend of the trials it stopped, in every plot
    # True: it may clone or pause a trial at any epoch, so each epoch writes the trial's state (else
    # search/trial.py's CheckpointClock spaces the writes)
    checkpoints_every_epoch = False

    def build(self, plan: Plan, metric: str, mode: str, space: dict[str, Dim] | None = None) -> TrialScheduler:
        """Ray's scheduler, ranking trials on `metric` (the plan's ranking metric); `space` is the
        searched space (a scheduler that changes configs mutates within it)."""
        raise NotImplementedError

    def carry_over(self, built: TrialScheduler, history: pd.DataFrame, metric: str, mode: str) -> None:
        """Give `built` (from `build`) what the trials in `history` (history.csv's rows) reported before
        it existed: Ray keeps a scheduler's state in memory only, so a resumed search (Tuner.restore
        restores the searcher, not the scheduler) and a grown one would otherwise judge their new
        results against nothing. A scheduler without state keeps this."""

    def limit(self, built: TrialScheduler, searcher, concurrency: int | None) -> tuple[Any, int | None]:
        """(the search algorithm, max_concurrent_trials) for TuneConfig: Ray's own concurrency limit
        unless the scheduler parks trials that must not count against it."""
        return searcher, concurrency

    def relink(self, tuner, built: TrialScheduler) -> None:
        """After Tuner.restore gave the run a new `built` scheduler: reconnect what the restored
        searcher shares with it (nothing, unless the scheduler parks trials)."""

    @property
    def checkpoint_share(self) -> float | None:
        """run_trial's `checkpoint_share`: None (a checkpoint every epoch) where the scheduler needs one."""
        return None if self.checkpoints_every_epoch else CHECKPOINT_SHARE

    def checkpoints_to_keep(self, plan: Plan) -> int:
        """Checkpoints Ray keeps per trial: the latest only (a resumed or retried trial needs no
        other; each holds the model and optimiser, 155 MB for shapes)."""
        return 1

    def decision_epochs(self, plan: Any) -> list[int]:
        """Epochs below the full budget at which it may stop (or change) a trial."""
        return []

    def stop_reason(self, epochs: int) -> str:
        """Why a trial ended before its last epoch. A scheduler that stops nothing itself (FIFO, PBT)
        keeps this: such a trial was ended by the time budget or an interruption."""
        return f"stopped after epoch {epochs} (time budget or interruption)"

    def stop_reason_in(self, plan: Any) -> Callable[[int], str]:
        """`stop_reason` for one run's plan (a Plan or run.json's dict)."""
        return self.stop_reason

    def describe(self, plan: Plan) -> str:
        """Its part of the plan line, e.g. 'no early stopping'."""
        raise NotImplementedError

    def search_epochs(self, plan: Plan) -> float:
        """Epochs the whole search is expected to train (for the time estimate)."""
        return float(plan.trials * plan.max_epochs)

    def report_section(self, run: Run) -> str:
        raise NotImplementedError


def _ranked_on(run: Run) -> str:
    metric = run.plan.rank_metric or run.objective
    return "the objective" if metric == run.objective else f"{metric} (smoother than {run.objective} early on)"


def _correlation_table(run: Run, epochs: list[int]) -> str:
    table = study_stats.rung_correlation(run, epochs, run.plan.rank_metric, run.plan.rank_mode)
    if table.empty:
        return "No epoch below the full budget to judge at, or no trials.\n"
    for kind in ("vs final", "vs next"):
        corr, n = table[f"{kind}: rank corr."], table[f"{kind}: trials"]
        table[f"{kind}: rank corr."] = ["too few trials" if math.isnan(v) else f"{v:.2f}" + (
            " (few trials: unreliable)" if k < 10 else "") for v, k in zip(corr, n, strict=True)]
    return md_table(table) + "\n"


class Asha(Scheduler):
    name = "asha"
    summary = "asynchronous successive halving: trials are compared at rungs and the worse ones stopped"
    stopped_label = "stopped by ASHA"

    def build(self, plan: Plan, metric: str, mode: str, space: dict[str, Dim] | None = None) -> TrialScheduler:
        return ASHAScheduler(time_attr=EPOCH_CLOCK, max_t=plan.max_epochs, metric=metric, mode=mode,
                             grace_period=plan.grace_epochs, reduction_factor=plan.reduction_factor)

    def carry_over(self, built: TrialScheduler, history: pd.DataFrame, metric: str, mode: str) -> None:
        """Each trial's value at each rung it reached, recorded as ASHA records it (its first result at or
        past the rung's epoch, signed so that larger is better), so a later trial is cut against them."""
        if history.empty or metric not in history:
            return
        sign = 1.0 if mode == "max" else -1.0
        rows = history.sort_values("epoch", kind="stable")
        for milestone, recorded in compat.asha_rungs(built):
            for trial_id, reached in rows[rows["epoch"] >= milestone].groupby("trial_id", sort=False):
                value = reached[metric].iloc[0]
                if isinstance(value, (int, float)) and math.isfinite(value):
                    recorded[trial_id] = sign * float(value)

    def decision_epochs(self, plan) -> list[int]:
        """ASHA's milestones (epochs) below the full budget: grace, grace*rf, grace*rf^2, ... (`plan`: a
        Plan or run.json's dict, both read by key)."""
        out, r = [], int(plan["grace_epochs"])
        while r < int(plan["max_epochs"]):
            out.append(r)
            r *= int(plan["reduction_factor"])
        return out

    def stop_reason(self, epochs: int) -> str:
        return f"ASHA stopped it after epoch {epochs}"

    def stop_reason_in(self, plan: Any) -> Callable[[int], str]:
        """ASHA stops trials at its rungs only: one that ended between them was cut by the time budget
        or an interruption (a 90-minute search's guard cut a trial at epoch 28 of rungs 10 and 20)."""
        rungs = set(self.decision_epochs(plan))
        return lambda epochs: self.stop_reason(epochs) if epochs in rungs else Scheduler.stop_reason(self, epochs)

    def describe(self, plan: Plan) -> str:
        return f"ASHA from epoch {plan.grace_epochs} (keeps 1/{plan.reduction_factor})"

    def search_epochs(self, plan: Plan) -> float:
        """If ASHA keeps 1/reduction_factor of the trials past each rung. The first trials have no
        rung to be compared against, so they run to the end."""
        first = min(plan.concurrency, plan.trials)
        epochs, alive, rung = float(first * plan.max_epochs), float(plan.trials - first), plan.grace_epochs
        done = 0
        while done < plan.max_epochs:
            step_to = min(rung, plan.max_epochs)
            epochs += alive * (step_to - done)
            done, alive, rung = step_to, alive / plan.reduction_factor, rung * plan.reduction_factor
        return epochs

    def report_section(self, run: Run) -> str:
        return "\n".join([
            "## Early stopping: did ASHA's rungs rank trials right?\n",
            f"At each rung ASHA compares trials on {_ranked_on(run)} at that epoch and stops the worse "
            f"ones. The rank correlation (Spearman) between a trial's value at the rung and its best "
            f"{run.objective} after all epochs, over the trials that ran all epochs, says whether that early "
            "ranking was right: near 1, the grace period was long enough; near 0 or below, ASHA was stopping "
            "trials on noise (raise the grace period). Few trials run all epochs on a small budget, so the "
            "objective at the next rung, over every trial that reached it, is shown too.\n",
            _correlation_table(run, self.decision_epochs(run.plan))])


class Screen(Asha):
    name = "screen"
    summary = ("ASHA whose first rung is synchronous for the first trials: they all reach it (paused there) "
               "before the best 1/reduction_factor go on, the best first; then asynchronous halving")
    checkpoints_every_epoch = True  # a trial paused at the rung resumes from that epoch's state
    SCREEN_SHARE = 0.25  # of the search's expected epochs, spent screening at the first rung

    def screen(self, plan: Plan) -> int:
        """Trials compared together at the first rung: a quarter of the search's epochs (16 trials of
        up to 10 epochs, rung at 4, 2 at once: 7), at least one more than run at once, at most all."""
        share = round(self.SCREEN_SHARE * self.search_epochs(plan) / max(1, plan.grace_epochs))
        return max(1, min(plan.trials, max(plan.concurrency + 1, share)))

    def build(self, plan: Plan, metric: str, mode: str, space: dict[str, Dim] | None = None) -> TrialScheduler:
        return screening.ScreeningASHA(self.screen(plan), time_attr=EPOCH_CLOCK, max_t=plan.max_epochs,
                                       metric=metric, mode=mode, grace_period=plan.grace_epochs,
                                       reduction_factor=plan.reduction_factor)

    def carry_over(self, built: TrialScheduler, history: pd.DataFrame, metric: str, mode: str) -> None:
        super().carry_over(built, history, metric, mode)
        built.resume_from(history)

    def limit(self, built: TrialScheduler, searcher, concurrency: int | None) -> tuple[Any, int | None]:
        return screening.ParkingLimiter(searcher, concurrency, built), None

    def relink(self, tuner, built: TrialScheduler) -> None:
        limiter = screening.parking_limiter(compat.tune_config(tuner).search_alg)
        if limiter is not None:
            limiter.scheduler = built

    def describe(self, plan: Plan) -> str:
        return (f"ASHA from epoch {plan.grace_epochs} (keeps 1/{plan.reduction_factor}), its first "
                f"{self.screen(plan)} trials compared together there")


class Fifo(Scheduler):
    name = "fifo"
    summary = "no early stopping: every trial runs until its own end (all epochs, or its patience)"

    def build(self, plan: Plan, metric: str, mode: str, space: dict[str, Dim] | None = None) -> TrialScheduler:
        return FIFOScheduler()

    def describe(self, plan: Plan) -> str:
        return "no early stopping"

    def report_section(self, run: Run) -> str:
        epochs = Asha().decision_epochs(run.plan)  # where halving would have judged these trials
        return "\n".join([
            "## Early stopping: would early rankings have held?\n",
            f"This search stopped no trial early. The rank correlation (Spearman) between each trial's "
            f"{_ranked_on(run)} at an early epoch and its best {run.objective} after all epochs says "
            "whether an early-stopping scheduler could have judged these trials that soon: near 1, yes; near 0, "
            "it would have stopped trials on noise.\n",
            _correlation_table(run, epochs)])


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

    def report_section(self, run: Run) -> str:
        return pbt_report.section(run, self.decision_epochs(run.plan))


REGISTRY: dict[str, Scheduler] = {s.name: s for s in (Asha(), Fifo(), Pbt(), Screen())}
DEFAULT = "asha"


def names() -> list[str]:
    return list(REGISTRY)


def get(name: str) -> Scheduler:
    if name not in REGISTRY:
        raise UserError(f"--scheduler {name}: unknown; known: {', '.join(REGISTRY)}")
    return REGISTRY[name]


def of_plan(plan: Any) -> Scheduler:
    """The scheduler a run's plan names (runs written before the registry used ASHA)."""
    return get((plan.get("scheduler") if isinstance(plan, dict) else plan.scheduler) or DEFAULT)

