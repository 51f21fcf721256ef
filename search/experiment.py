"""What an experiment is: data, task (model, loss, metrics), baseline config, search space, budgets.

One experiment = one `Experiment` in `search.experiments`. The tuner, retraining and the report
only talk to this interface, so adding an experiment never touches them.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from search.config import UserError
from search.loop import SCHEDULES, Decoding, Split, Task
from search.run_folder import check_name

# ---------------------------------------------------------------- search-space dimensions (data)


@dataclass(frozen=True)
class Float:
    low: float
    high: float
    log: bool = False

    def contains(self, v: Any) -> bool:
        return isinstance(v, (int, float)) and self.low <= v <= self.high

    def describe(self) -> str:
        return f"{self.low:g} .. {self.high:g}" + (" (log)" if self.log else "")


@dataclass(frozen=True)
class Int:
    low: int
    high: int
    log: bool = False

    def contains(self, v: Any) -> bool:
        return isinstance(v, int) and self.low <= v <= self.high

    def describe(self) -> str:
        return f"{self.low} .. {self.high} (integer" + (", log)" if self.log else ")")


@dataclass(frozen=True)
class Choice:
    options: tuple

    def contains(self, v: Any) -> bool:
        return v in self.options

    def describe(self) -> str:
        return "{" + ", ".join(map(str, self.options)) + "}"


Dim = Float | Int | Choice


def warm_start(base: dict[str, Any], space: dict[str, Dim]) -> dict[str, Any]:
    """The baseline as a point of the space: a value outside a numeric range (weight_decay 0 on a
    log scale) moves to the nearest bound, which trains the same for all practical purposes."""
    point = {}
    for key, dim in space.items():
        value = base[key]
        if isinstance(dim, (Float, Int)) and not dim.contains(value):
            value = type(value)(min(max(value, dim.low), dim.high))
        point[key] = value
    return point


def narrowed(space: Mapping[str, Dim], ranges: Mapping[str, Any]) -> dict[str, Dim]:
    """The space with a budget's narrower (low, high) bounds for some of its numeric keys (Budget.ranges)."""
    return {k: dataclasses.replace(d, low=ranges[k][0], high=ranges[k][1]) if k in ranges else d
            for k, d in space.items()}


def matches(row: Mapping[str, Any], point: Mapping[str, Any]) -> bool:
    """Whether a trial's config (e.g. a trials.csv row, numbers possibly parsed back from text)
    is `point`: the warm-start trial is the one that matches warm_start(baseline, space)."""
    def same(a: Any, b: Any) -> bool:
        if isinstance(a, str) or isinstance(b, str):
            return str(a) == str(b)
        return math.isclose(float(a), float(b), rel_tol=1e-9)
    return all(same(row[k], v) for k, v in point.items())


# ---------------------------------------------------------------- value limits (validity, not search)


@dataclass(frozen=True)
class Limit:
    """Valid values of a config key: a numeric interval or a set of choices."""

    low: float = -math.inf
    high: float = math.inf
    low_open: bool = False
    high_open: bool = False
    choices: tuple = ()

    def check(self, key: str, v: Any) -> None:
        if self.choices:
            if v not in self.choices:
                raise UserError(f"{key}={v!r} is not one of {', '.join(map(str, self.choices))}")
            return
        below = v <= self.low if self.low_open else v < self.low
        above = v >= self.high if self.high_open else v > self.high
        if below or above:
            lo, hi = "(" if self.low_open else "[", ")" if self.high_open else "]"
            raise UserError(f"{key}={v!r} is outside its valid range {lo}{self.low:g}, {self.high:g}{hi}")


PROBABILITY = Limit(0.0, 1.0)
POSITIVE = Limit(0.0, low_open=True)
NON_NEGATIVE = Limit(0.0)
COUNT = Limit(1)

# Keys the shared training loop reads (search.loop); every experiment has them. No fp16 precision: it
# needs loss scaling (a GradScaler) the loop does not do; bf16, what `auto` picks on Ampere and newer, does not.
LOOP_LIMITS = {
    "lr": POSITIVE, "momentum": Limit(0.0, 1.0, high_open=True), "weight_decay": NON_NEGATIVE,
    "optimizer": Limit(choices=("adam", "sgd")), "batch_size": COUNT, "epochs": COUNT,
    "patience": NON_NEGATIVE, "seed": NON_NEGATIVE, "precision": Limit(choices=("auto", "fp32", "bf16")),
    "schedule": Limit(choices=SCHEDULES),
}


# ---------------------------------------------------------------- data handed to training


@dataclass
class Data:
    """Tensors of one experiment. `train`/`val` are what a search sees; `full_train`/`test` are for
    retraining and the final score (the held-out split no search ever sees)."""

    train: Split
    val: Split
    full_train: Split
    test: Split
    info: dict[str, Any] = field(default_factory=dict)  # source, sizes; printed and saved

    def limited(self, train: int | None = None, val: int | None = None, full_train: int | None = None,
                test: int | None = None) -> Data:
        """The first `train` / `val` / `full_train` / `test` samples of those splits (None: all of it). The
        one place data is cut: the plan decides the numbers (search/plan.py), the loaders never cut."""
        def cut(split: Split, n: int | None) -> Split:
            return split if n is None or n >= len(split) else Split(split.x[:n], split.y[:n])

        out = Data(cut(self.train, train), cut(self.val, val), cut(self.full_train, full_train), cut(self.test, test),
                   dict(self.info))
        # full_train and test stay the splits' sizes in `info`: a smoke run's retraining is cut, its data set is not
        out.info.update(train=len(out.train), val=len(out.val))
        return out


@dataclass(frozen=True)
class DataOptions:
    data_dir: Path | None = None  # None: the experiment's offline default
    download: bool = False
    split_seed: int = 0  # the inner train/validation split
    source: str | None = None  # which of the experiment's data sources (None: its first)
    # What the loader decided for the run being retrained or resumed (its data info in run.json), so it
    # loads the same data wherever that happens, e.g. the facades' image size, which depends on a GPU.
    recorded: dict = field(default_factory=dict)


@dataclass(frozen=True)
class Budget:
    """Default search budget for one kind of hardware: every number a run's plan starts from. The command
    line's overrides replace fields of it (search/plan.py KNOBS), then the plan sizes it to the hardware."""

    trials: int
    max_epochs: int
    grace_epochs: int  # the scheduler's first decision: no trial is stopped before this many epochs
    retrain_top_k: int | None = None  # None: the hardware's default (1 on CPU, 3 on GPU)
    retrain_seeds: int | None = None  # None: the hardware's default (2 on CPU, 3 on GPU)
    retrain_epochs: int | None = None  # None: the search's max_epochs
    # Minutes the retraining may take: its epochs are cut to fit them at the speed the search measured, so
    # a named budget holds its time on a slower machine (None: retrain_epochs, however long they take).
    retrain_minutes: float | None = None
    # Minutes the whole run may take (search and retraining): the retraining at its planned epochs is set
    # aside first, at the speed measured before the search, and the search gets the rest (plan.split_total),
    # in place of time_budget_min and retrain_minutes. None: they alone hold the time.
    total_minutes: float | None = None
    # The keys searched at this budget (None: the whole space); the others stay at the baseline. A
    # small budget cannot fit a wide space: 16 trials over 15 dimensions are mostly random draws.
    searched: tuple[str, ...] | None = None
    # Narrower (low, high) bounds of numeric searched keys at this budget, where its measurements show that the
    # rest of the range never wins: a trial drawn there is a trial lost. Each holds the baseline's value.
    ranges: Mapping[str, tuple[float, float]] = field(default_factory=dict)
    scheduler: str = "asha"  # the trial scheduler at this budget (search/schedulers/), unless --scheduler
    why: str = ""  # why this budget's scheduler and space: printed with the plan
    # Search trials train on the whole search-train split, as retraining does (False: a CPU search trains
    # on plan.CPU_SEARCH_SUBSET images, to halve its epochs' time).
    full_split: bool = False
    time_budget_min: float | None = None  # the search ends this many minutes after it starts (a guard)
    rank_on: str = "smooth"  # "objective" where the smooth metric cannot see a searched key (e.g. a decoding rule)
    # Values every config the search tries trains with at this budget, unless --set pins the key; the
    # baseline is retrained without them, as the seeds ran it (e.g. shapes' generated training images).
    tuned_with: Mapping[str, Any] = field(default_factory=dict)
    # Read each trial's last epoch every way the experiment's `decoding` offers and keep the best, instead
    # of searching those keys (they change no training: a trial spent on each value is a trial lost).
    choose_decoding: bool = False
    # The baseline's variants (Experiment.warm_variants) are tried after it before TPE proposes; False: the
    # baseline alone, where a budget's measurements show its variants never win (each costs a whole trial).
    warm_variants: bool = True
    # Early stopping keeps 1/reduction_factor of the trials at each rung (None: 2 on a CPU, 3 on a GPU).
    reduction_factor: int | None = None
    # Resources: trials at once (None: as many as fit), CPUs and GPU share per trial (None: the
    # hardware's: 1 CPU; 1/8 GPU), and retries of a crashed trial, each from its last checkpoint.
    concurrency: int | None = None
    cpus_per_trial: float | None = None
    gpus_per_trial: float | None = None
    max_failures: int = 2


@dataclass(frozen=True)
class Experiment:
    name: str
    summary: str
    task: Task
    load: Callable[[DataOptions], Data]
    defaults: Mapping[str, Any]  # the hand-tuned baseline: a complete config
    space: Mapping[str, Dim]  # searched keys; everything else stays at its default
    limits: Mapping[str, Limit]  # valid values of the experiment's own keys
    objective: str = "val_acc"
    mode: str = "max"
    # A smoother validation metric the scheduler and TPE rank trials on, with its mode, where the
    # objective is too coarse early on (135-way top-1 after 2 epochs is near chance); None: the objective.
    # Trials are still reported, picked for retraining and judged on the objective.
    rank_metric: tuple[str, str] | None = None
    # Keys that only change how a trained model is read, with the values a budget that chooses them tries.
    decoding: Decoding | None = None
    budget_cpu: Budget = Budget(trials=12, max_epochs=8, grace_epochs=2)
    budget_gpu: Budget = Budget(trials=48, max_epochs=30, grace_epochs=4)
    # Named budgets `--budget NAME` picks instead of the hardware's (e.g. one sized to 90 minutes on a laptop).
    budgets: Mapping[str, Budget] = field(default_factory=dict)
    # Changes to the baseline the search evaluates right after it, before TPE's own proposals (the
    # next guesses of a person, e.g. the seed's config under each lr schedule); keys outside the
    # searched space are ignored, and a variant that changes nothing searched is dropped.
    warm_variants: tuple[Mapping[str, Any], ...] = ()
    # Data sources `--source` picks from (the first is the default); empty: the option is refused.
    sources: tuple[str, ...] = ()
    # Keys pinned together with another key's value (e.g. lambda_cnt only matters for multitask).
    inactive: Callable[[Mapping[str, Any]], set[str]] = lambda pinned: set()
    # Test metrics in the report's tables (default: every test_ metric) and validation metrics
    # drawn per epoch beside the losses in its training curves.
    report_metrics: tuple[str, ...] = ()
    curve_metrics: tuple[str, ...] = ("val_acc",)
    # Report section on the study itself: study_extras(run (search.analyse.Run), figure folder) -> markdown.
    study_extras: Callable[[Any, Path], str] | None = None
    # Report section on the best retrained model: diagnose(model, config, test split, figure folder)
    # writes its PNGs into the folder and returns markdown linking them as "<folder name>/<file>".
    diagnose: Callable[[Any, Mapping[str, Any], Split, Path], str] | None = None

    def __post_init__(self) -> None:
        check_name(self.name, "experiment name")  # it becomes results/<name>/: one safe folder name

    def check_source(self, source: str | None) -> None:
        if source is not None and source not in self.sources:
            raise UserError(f"--source {source}: " + (f"{self.name} reads {', '.join(self.sources)}" if self.sources
                                                        else f"{self.name} has one data source; drop --source"))

    def budget(self, name: str | None, gpus: float) -> Budget:
        """The named budget, else the hardware's: the GPU one where a GPU is found."""
        if name is None:
            return self.budget_gpu if gpus else self.budget_cpu
        if name not in self.budgets:
            raise UserError(f"--budget {name}: {self.name} has " + (
                f"the budgets {', '.join(self.budgets)}" if self.budgets else "no named budget; drop --budget"))
        return self.budgets[name]

    def check(self, config: Mapping[str, Any]) -> None:
        """Raise UserError on any key whose value is invalid for this experiment."""
        limits = {**LOOP_LIMITS, **self.limits}
        for key, value in config.items():
            if key in limits:
                limits[key].check(key, value)
