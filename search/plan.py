"""The run's plan: hardware found, budgets sized from it (or given), resources per trial, estimate.

The plan decides every number of a run (trials, epochs, resources, how much data each stage
trains on) once, before anything runs; it is saved in run.json (search/record.py) and a resumed
or retrained run reads it back instead of deciding again."""

from __future__ import annotations

import argparse
import dataclasses
import math
import os
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields
from typing import Any

import torch

from search import cli
from search.config import UserError
from search.experiment import Budget, Data, Experiment

SMOKE_SUBSET = 256  # training images of a --smoke search
# Trials per GPU: 8. These nets are small (the shapes one is 12.9M parameters, 155 MB with its Adam
# state); one trial's step is bound by its one thread launching kernels, so a GPU given to 2 trials
# idles most of the time. Each of the 8 gets the node's CPUs / 8 (2 on a 16-CPU H200 box).
GPU_SHARE = 0.125
CPU_SEARCH_SUBSET = 4000  # training images per search trial on a CPU-only machine: halves epoch time


@dataclass
class Hardware:
    cpus: float
    gpus: float
    nodes: int = 1
    # On the GPU nodes: CPUs per GPU (the lowest ratio among them) and the CPUs of the largest (None: no
    # GPU). A cluster's CPU total counts a CPU-only head too, which no GPU trial can use.
    cpus_per_gpu: float | None = None
    gpu_node_cpus: float | None = None
    # (CPUs, GPUs) of each node; empty: one machine, the totals. Ray places a trial on one node, so a trial
    # fits only where one node has all it asks for, whatever the totals say.
    node_resources: tuple[tuple[float, float], ...] = ()

    def fits(self, cpus: float, gpus: float) -> bool:
        """Whether one node can run a task that needs `cpus` and `gpus`."""
        nodes = self.node_resources or ((self.cpus, self.gpus),)
        return any(cpus <= c and gpus <= g for c, g in nodes)

    def describe(self) -> str:
        gpu = f"{self.gpus:g} GPU" + ("s" if self.gpus != 1 else "") if self.gpus else "no GPU"
        return f"{self.cpus:g} CPUs, {gpu}" + (f" on {self.nodes} nodes" if self.nodes > 1 else "")


@dataclass
class Plan:
    trials: int
    max_epochs: int
    grace_epochs: int  # the scheduler's first decision: no trial is stopped or changed before this epoch
    reduction_factor: int  # a rung keeps 1/reduction_factor of the trials that reach it
    concurrency: int
    cpus_per_trial: float
    gpus_per_trial: float
    subset: int | None  # training images per trial (None: the whole search-train split)
    time_budget_min: float | None
    scheduler: str = "asha"  # a name in search/schedulers/ (runs written before it existed used this one)
    val_subset: int | None = None  # validation images per trial (smoke only; None: the whole split)
    rank_metric: str | None = None  # what the scheduler and TPE rank trials on (None: the objective)
    rank_mode: str | None = None
    searched: list[str] | None = None  # keys this budget searches (None: every key of the space)
    ranges: dict = field(default_factory=dict)  # key -> [low, high]: the budget's narrower bounds (Budget.ranges)
    tuned_with: dict = field(default_factory=dict)  # the budget's values for every searched config, not the baseline
    # Each trial's last epoch is read every way the experiment's `decoding` offers, its keys not searched
    # (a run written before this field searched them, or kept them at the baseline: False keeps that).
    choose_decoding: bool = False
    warm_variants: bool = True  # the baseline's variants follow it as first trials (Budget.warm_variants)
    retrain_top_k: int = 1  # configs retrained besides the baseline
    retrain_seeds: int = 2
    retrain_epochs: int = 8
    # Retraining fits in this many minutes: its epochs are cut, once, at the speed the search's epochs
    # ran (search/stages.py fit_retraining); retrain_fitted records that the cut was made (resume keeps it).
    retrain_minutes: float | None = None
    retrain_fitted: bool = False
    # The whole run's minutes (Budget.total_minutes): split_total sets the search's time budget and the
    # retraining's minutes from it, once, before the search (run.json keeps the split for --resume).
    total_min: float | None = None
    retrain_subset: int | None = None  # training images per retrain run (smoke only)
    # held-out images scored (smoke only: a smoke run checks the machinery); a smoke run written before
    # this field scored all of them, and its missing value (None) keeps that on --resume
    test_subset: int | None = None
    budget: str | None = None  # the named budget the plan was sized from (None: the hardware's)
    max_failures: int = 2  # retries of a failed trial, each from its last checkpoint
    grow_tail: bool = False  # the last trials take the CPUs idle slots leave (search/tail_resources.py)
    estimate_min: float | None = None
    why: str = ""  # the budget's reason for its scheduler and space (printed with the plan)

    @property
    def time_budget_s(self) -> float | None:
        """The search's time budget in seconds, as Tune takes it (None: no budget)."""
        return self.time_budget_min * 60 if self.time_budget_min else None

    def tuned_with_unpinned(self, pinned: dict) -> dict:
        """The budget's values for the tuned configs that --set did not pin (a pin holds for the baseline too)."""
        return {k: v for k, v in self.tuned_with.items() if k not in pinned}

    def as_dict(self) -> dict:
        return asdict(self)

    def __getitem__(self, key: str):
        """plan["trials"], as analysis scripts read run.json's plan before it was typed."""
        return getattr(self, key)

    @classmethod
    def from_dict(cls, d: dict) -> Plan:
        """A plan as run.json holds it; keys of another version are ignored, missing optional ones
        take their defaults."""
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in known})


def local_hardware() -> Hardware:
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    gpus = torch.cuda.device_count()
    return Hardware(cpus=cpus, gpus=gpus, cpus_per_gpu=cpus / gpus if gpus else None,
                    gpu_node_cpus=cpus if gpus else None)


def cluster_hardware(nodes: list[dict]) -> Hardware:
    """What a Ray cluster has, from ray.nodes(): totals, and the CPUs per GPU of its GPU nodes."""
    alive = [n.get("Resources", {}) for n in nodes if n.get("Alive")]
    gpu_nodes = [r for r in alive if r.get("GPU", 0) > 0]
    return Hardware(cpus=sum(r.get("CPU", 0) for r in alive), gpus=sum(r.get("GPU", 0) for r in alive),
                    nodes=len(alive),
                    cpus_per_gpu=min(r.get("CPU", 0) / r["GPU"] for r in gpu_nodes) if gpu_nodes else None,
                    gpu_node_cpus=max(r.get("CPU", 0) for r in gpu_nodes) if gpu_nodes else None,
                    node_resources=tuple((r.get("CPU", 0), r.get("GPU", 0)) for r in alive))


def cut_to_plan(data: Data, plan: Plan) -> Data:
    """The data each stage trains on, as the plan decided (below: make_plan)."""
    return data.limited(train=plan.subset, val=plan.val_subset, full_train=plan.retrain_subset,
                        test=plan.test_subset)


@dataclass(frozen=True)
class Knob:
    """A number of the budget that the command line (or a caller of make_plan) may set: a field of
    search.experiment.Budget, its flag, and what it accepts (`parse`, an argparse type of search/cli.py)."""

    name: str
    flag: str
    parse: Callable[[str], Any]
    help: str
    metavar: str = "N"


# Every budget knob a run can be given, in --help's order. A new knob: a Budget field (its default) and a
# line here; make_plan applies it to the budget, and run.py's parser offers it. (--scheduler, whose choices
# are search/schedulers/'s, is written out in run.py but goes into the overrides the same way.)
KNOBS = (
    Knob("trials", "--trials", cli.whole(1), "number of trials (default: sized to the hardware)"),
    Knob("max_epochs", "--max-epochs", cli.whole(1), "epochs of a trial that is never stopped early"),
    Knob("time_budget_min", "--time-budget", cli.number(), "end the search this long after it starts: trials "
         "still running stop there, as 'stopped (time budget)' (default: the budget's, if it has one)", "MINUTES"),
    Knob("grace_epochs", "--grace-epochs", cli.whole(1), "the scheduler's first decision: the first rung of early "
         "stopping, the interval of PBT's perturbations (default: the budget's)"),
    Knob("reduction_factor", "--reduction-factor", cli.whole(2), "early stopping keeps 1/N of the trials at each "
         "rung (default 2 on a CPU, 3 on a GPU)"),
    Knob("concurrency", "--concurrency", cli.whole(1), "trials at once (default: as many as resources allow)"),
    Knob("cpus_per_trial", "--cpus-per-trial", cli.number(), "CPUs (torch threads) per trial (default 1 on CPU)"),
    Knob("gpus_per_trial", "--gpus-per-trial", cli.number(zero=True),
         "GPU share per trial, fractions allowed (default 0.125: 8 trials per GPU)", "SHARE"),
    Knob("retrain_top_k", "--top-k", cli.whole(1),
         "best configs to retrain on fresh seeds (default 1 on CPU, 3 on GPU)"),
    Knob("retrain_seeds", "--seeds", cli.whole(1), "fresh seeds per retrained config (default 2 on CPU, 3 on GPU)"),
    Knob("retrain_epochs", "--retrain-epochs", cli.whole(1), "epochs of each retrain run (default: the experiment's "
         "budget, else --max-epochs); schedules stretch to it"),
    Knob("retrain_minutes", "--retrain-minutes", cli.number(), "cut the retrain epochs so that retraining ends within "
         "this many minutes, at the speed the search's epochs ran (default: the budget's, e.g. shapes --budget "
         "90min)", "MINUTES"),
    Knob("max_failures", "--max-failures", cli.whole(0), "retries of a crashed trial, each from its last "
         "checkpoint (default 2)"),
)
OVERRIDABLE = {k.name for k in KNOBS} | {"scheduler", "rank_on", "choose_decoding"}
# What --smoke runs: the machinery at its smallest, early stopping included (the registry's default
# scheduler), with none of a budget's space, minutes or extras; the hardware's retraining shape.
SMOKE = Budget(trials=4, max_epochs=2, grace_epochs=1)


def checked_overrides(overrides: dict[str, Any]) -> dict[str, Any]:
    """The overrides given (None: not given), each checked as its flag checks it: a caller of make_plan
    gets the command line's one-line error, and an unknown name is refused."""
    unknown = sorted(overrides.keys() - OVERRIDABLE)
    if unknown:
        raise TypeError(f"make_plan: unknown budget knob(s) {unknown}; known: {sorted(OVERRIDABLE)}")
    given = {k: v for k, v in overrides.items() if v is not None}
    for knob in KNOBS:
        if knob.name in given:
            try:
                knob.parse(str(given[knob.name]))
            except argparse.ArgumentTypeError as e:
                raise UserError(f"{knob.flag} {e}") from None
    return given


def make_plan(exp: Experiment, hw: Hardware, *, smoke: bool = False, budget_name: str | None = None,
              full_space: bool = False, **overrides: Any) -> Plan:
    """The plan: the experiment's budget for `hw` (or the one named, or SMOKE), the overrides applied to it
    with dataclasses.replace, then sized to the hardware: resources per trial, trials at once, data cut."""
    given = checked_overrides(overrides)
    if given.get("choose_decoding") and exp.decoding is None:
        raise UserError(f"--choose-decoding: {exp.name} declares no decoding keys (ways to read a trained model); "
                        "drop the option")
    budget = exp.budget(budget_name, hw.gpus)
    if smoke:
        budget = dataclasses.replace(SMOKE, retrain_top_k=budget.retrain_top_k, retrain_seeds=budget.retrain_seeds,
                                     rank_on=budget.rank_on)
    budget = dataclasses.replace(budget, **given)
    gpus_per_trial = budget.gpus_per_trial
    if gpus_per_trial and gpus_per_trial > hw.gpus:
        raise UserError(f"--gpus-per-trial {gpus_per_trial:g}: only {hw.gpus:g} GPUs found; "
                        "use a smaller share or --gpus-per-trial 0")
    gpt = (GPU_SHARE if hw.gpus else 0.0) if gpus_per_trial is None else gpus_per_trial
    if gpt > 0:
        slots = math.floor(hw.gpus / gpt + 1e-9)
        per_gpu = hw.cpus_per_gpu or hw.cpus / hw.gpus  # a GPU trial's CPUs come from its GPU's node
        cpt = budget.cpus_per_trial or max(1.0, math.floor(per_gpu * gpt + 1e-9))
        largest = hw.gpu_node_cpus or hw.cpus
        if cpt > largest + 1e-9:
            raise UserError(f"--cpus-per-trial {cpt:g}: no GPU node has that many CPUs (the largest has "
                            f"{largest:g}), so no trial would ever start; ask for at most {math.floor(largest):g}")
    else:
        cpt = budget.cpus_per_trial or 1.0  # small models: one thread per trial beats threads per trial
        slots = max(1, math.floor(hw.cpus / cpt + 1e-9))
    if cpt > hw.cpus:
        raise UserError(f"--cpus-per-trial {cpt:g}: only {hw.cpus:g} CPUs found")
    plan = Plan(
        trials=budget.trials, max_epochs=budget.max_epochs, grace_epochs=min(budget.grace_epochs, budget.max_epochs),
        reduction_factor=budget.reduction_factor or (2 if (smoke or not hw.gpus) else 3),
        concurrency=min(budget.concurrency or slots, slots),
        cpus_per_trial=cpt, gpus_per_trial=gpt,
        subset=SMOKE_SUBSET if smoke else (None if hw.gpus or budget.full_split else CPU_SEARCH_SUBSET),
        time_budget_min=budget.time_budget_min, scheduler=budget.scheduler,
        val_subset=SMOKE_SUBSET if smoke else None,
        # On a CPU the default run must stay within ~20 minutes: one tuned config and two seeds.
        retrain_top_k=budget.retrain_top_k or (3 if hw.gpus else 1),
        retrain_seeds=budget.retrain_seeds or (3 if hw.gpus else 2),
        retrain_subset=SMOKE_SUBSET if smoke else None, test_subset=SMOKE_SUBSET if smoke else None,
        max_failures=budget.max_failures, budget=budget_name, warm_variants=budget.warm_variants,
    )
    plan.grow_tail = not gpt and hw.nodes == 1 and plan.concurrency > 1
    # Retraining trains longer than a trial where the budget says so: the verdict needs trained models,
    # and each schedule stretches to the retrain horizon (it is keyed to config["epochs"]).
    plan.retrain_epochs = budget.retrain_epochs or plan.max_epochs
    # Epochs given on the command line are trained as given, unless minutes are given too.
    plan.retrain_minutes = None if "retrain_epochs" in given and "retrain_minutes" not in given \
        else budget.retrain_minutes
    # Minutes typed for either part, or epochs typed for the retraining, are kept as typed: no total to split.
    plan.total_min = None if given.keys() & {"time_budget_min", "retrain_minutes", "retrain_epochs"} \
        else budget.total_minutes
    plan.why = "" if "scheduler" in given else budget.why
    plan.searched = None if full_space or budget.searched is None else list(budget.searched)
    searched = plan.searched if plan.searched is not None else list(exp.space)
    plan.tuned_with = {k: v for k, v in budget.tuned_with.items() if k not in searched}
    plan.ranges = {} if plan.searched is None else {k: list(v) for k, v in budget.ranges.items() if k in searched}
    plan.choose_decoding = bool(budget.choose_decoding and exp.decoding)
    if plan.choose_decoding:  # chosen per trial after training: searching them too would only spend trials
        plan.searched = [k for k in searched if k not in exp.decoding.keys]
    smooth = exp.rank_metric if budget.rank_on == "smooth" else None
    plan.rank_metric, plan.rank_mode = smooth if smooth else (exp.objective, exp.mode)
    return plan


def estimate_minutes(plan: Plan, train_size: int, val_size: int, full_train_size: int,
                     images_per_second: float, search_epochs: float) -> float | None:
    """Wall time of search and retraining, given the epochs the scheduler expects the search to
    train in all (search/schedulers/)."""
    if not math.isfinite(images_per_second) or images_per_second <= 0:
        return None
    epochs = search_epochs
    seconds_per_epoch = (train_size + val_size / 3) / images_per_second  # evaluation ~ 1/3 of a step
    search = epochs * seconds_per_epoch / plan.concurrency * 1.1  # +10% for Tune's own overhead
    runs = (plan.retrain_top_k + 1) * plan.retrain_seeds
    images = (plan.retrain_subset or full_train_size) if full_train_size else 0  # 0: no retraining
    retrain = retrain_seconds(plan.retrain_epochs, 1 / side_by_side(plan, images_per_second), images, runs,
                              plan.concurrency)
    # the time budget ends the search, and the retraining's epochs are cut to its minutes
    search = min(search, plan.time_budget_s or math.inf)
    retrain = min(retrain, plan.retrain_minutes * 60 if plan.retrain_minutes else math.inf)
    return (search + retrain) / 60


# A retrain run's seconds besides its epochs: starting its worker, building its training pool, scoring
# the held-out split (shapes on a CPU: 10-20 s; counted high, so that a fitted retraining ends in time).
RUN_OVERHEAD_S = 30.0
# Runs side by side end together only as fast as the slower one: in the 90-minute run of 2026-11-30 on the
# Intel Xeon, the search's trials trained at a median 405 images/s each, the six 40-epoch retrain runs at
# 366-405 (one pair's runs: 24.6 and 22.3 s an epoch), and the retraining took 47.2 minutes where that median
# pace gave 46.0: 3% more.
SLOWER_OF_A_WAVE = 1.03


def _waves(runs: int, concurrency: int) -> tuple[int, float]:
    """How many waves `runs` retrain runs take, `concurrency` at once, and a wave's pace (see SLOWER_OF_A_WAVE)."""
    return math.ceil(runs / max(1, concurrency)), SLOWER_OF_A_WAVE if concurrency > 1 and runs > 1 else 1.0


def retrain_seconds(epochs: int, seconds_per_image: float, images: int, runs: int, concurrency: int) -> float:
    """Wall time of `runs` retrain runs of `epochs` epochs of `images` images, `concurrency` at once, each
    image taking `seconds_per_image` at the median pace (no images: no retraining, no time)."""
    if not images:
        return 0.0
    waves, pace = _waves(runs, concurrency)
    return waves * (epochs * images * seconds_per_image * pace + RUN_OVERHEAD_S)


# Two 1-thread trials side by side train slower each than the one trial the plan times alone before the
# search (Intel Xeon, shapes, fp32: 379 images/s each in the search against 413 timed alone).
SIDE_BY_SIDE = 0.92
# Minutes of a run outside its search and retraining: loading the data, timing a trial, the report (about
# half a minute in the 90-minute runs measured here), and a minute in hand.
OUTSIDE_MIN = 1.5


def side_by_side(plan: Plan, images_per_second: float) -> float:
    """A trial's speed when the plan's trials run together, from one trial's timed alone."""
    return images_per_second * (SIDE_BY_SIDE if plan.concurrency > 1 else 1.0)


def split_total(plan: Plan, images_per_second: float, retrain_images: int) -> None:
    """Share plan.total_min between search and retraining: the retraining at its planned epochs first, at
    `images_per_second` (one trial timed alone; no retrain images: no retraining), then the search gets the
    rest, at least a third of the total
    (a slower machine then retrains fewer epochs: fit_retraining cuts them at the speed the search ran).
    Why the retraining first: the search trains at the retraining's horizon so that what wins is what is
    retrained; a retraining cut short reads the winner at another horizon (on the Intel Xeon, 29 epochs
    of the 40 searched)."""
    if not plan.total_min or not math.isfinite(images_per_second) or images_per_second <= 0:
        return
    runs = (plan.retrain_top_k + 1) * plan.retrain_seeds
    speed = side_by_side(plan, images_per_second)
    reserve = retrain_seconds(plan.retrain_epochs, 1 / speed, retrain_images, runs, plan.concurrency) / 60
    search = max(plan.total_min / 3, plan.total_min - OUTSIDE_MIN - reserve)
    # tenths of a minute, rounded down: what it leaves the retraining is never less than set aside
    plan.time_budget_min = math.floor(search * 10) / 10
    plan.retrain_minutes = round(plan.total_min - OUTSIDE_MIN - plan.time_budget_min, 1)


def retrain_minutes_left(plan: Plan, search_wall_s: float) -> float | None:
    """The retraining's minutes once the search has ended: under a total, what the search left of it, never
    less than split_total set aside (a search ended early leaves more); else the plan's own."""
    if not (plan.total_min and plan.time_budget_min):
        return plan.retrain_minutes
    left = math.floor((plan.total_min - OUTSIDE_MIN - search_wall_s / 60) * 10) / 10
    return max(plan.retrain_minutes or 0.0, left)


def fitted_retrain_epochs(planned: int, minutes: float, seconds_per_image: float, images: int, runs: int,
                          concurrency: int) -> int:
    """The most epochs, at most `planned` and at least 1, in which `runs` retrain runs of `images` images
    an epoch, `concurrency` at once, end within `minutes`, each image taking `seconds_per_image` (as the
    search's trials trained, as many at once)."""
    waves, pace = _waves(runs, concurrency)  # retrain_seconds, solved for the epochs
    epochs = math.floor((minutes * 60 - waves * RUN_OVERHEAD_S) / (waves * images * seconds_per_image * pace))
    return max(1, min(planned, epochs))
