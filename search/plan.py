"""The run's plan: hardware found, budgets sized from it (or given), resources per trial, estimate."""

from __future__ import annotations

import math
import os
import time
from dataclasses import asdict, dataclass

import torch

from search.config import UserError
from search.experiment import Experiment

SMOKE_SUBSET = 256  # training images of a --smoke search
CPU_SEARCH_SUBSET = 4000  # training images per search trial on a CPU-only machine: halves epoch time


@dataclass
class Hardware:
    cpus: float
    gpus: float
    nodes: int = 1

    def describe(self) -> str:
        gpu = f"{self.gpus:g} GPU" + ("s" if self.gpus != 1 else "") if self.gpus else "no GPU"
        return f"{self.cpus:g} CPUs, {gpu}" + (f" on {self.nodes} nodes" if self.nodes > 1 else "")


@dataclass
class Plan:
    trials: int
    max_epochs: int
    grace_epochs: int
    reduction_factor: int
    concurrency: int
    cpus_per_trial: float
    gpus_per_trial: float
    subset: int | None  # training images per trial (None: the whole search-train split)
    time_budget_min: float | None
    retrain_top_k: int = 1  # configs retrained besides the baseline
    retrain_seeds: int = 2
    retrain_epochs: int = 8
    retrain_subset: int | None = None  # training images per retrain run (smoke only)
    max_failures: int = 2  # retries of a failed trial, each from its last checkpoint
    grow_tail: bool = False  # the last trials take the CPUs idle slots leave (search/tail_resources.py)
    estimate_min: float | None = None

    def as_dict(self) -> dict:
        return asdict(self)


def local_hardware() -> Hardware:
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return Hardware(cpus=cpus, gpus=torch.cuda.device_count())


def make_plan(exp: Experiment, hw: Hardware, *, trials: int | None, max_epochs: int | None,
              time_budget_min: float | None, concurrency: int | None, cpus_per_trial: float | None,
              gpus_per_trial: float | None, smoke: bool, top_k: int | None = None,
              seeds: int | None = None, max_failures: int = 2) -> Plan:
    for name, value in (("--trials", trials), ("--max-epochs", max_epochs), ("--concurrency", concurrency),
                        ("--top-k", top_k), ("--seeds", seeds)):
        if value is not None and value < 1:
            raise UserError(f"{name} {value}: give a whole number of at least 1")
    for name, value in (("--time-budget", time_budget_min), ("--cpus-per-trial", cpus_per_trial)):
        if value is not None and value <= 0:
            raise UserError(f"{name} {value}: give a positive number")
    if max_failures < 0:
        raise UserError(f"--max-failures {max_failures}: give 0 (no retry) or more")
    if gpus_per_trial is not None and gpus_per_trial < 0:
        raise UserError(f"--gpus-per-trial {gpus_per_trial}: give 0 or a positive fraction like 0.25")
    if gpus_per_trial and gpus_per_trial > hw.gpus:
        raise UserError(f"--gpus-per-trial {gpus_per_trial:g}: only {hw.gpus:g} GPUs found; "
                        "use a smaller share or --gpus-per-trial 0")

    budget = exp.budget_gpu if hw.gpus else exp.budget_cpu
    gpt = (0.5 if hw.gpus else 0.0) if gpus_per_trial is None else gpus_per_trial  # two trials share a GPU
    if gpt > 0:
        slots = math.floor(hw.gpus / gpt + 1e-9)
        cpt = cpus_per_trial or max(1.0, math.floor(hw.cpus / slots))
    else:
        cpt = cpus_per_trial or 1.0  # small models: one thread per trial beats threads per trial
        slots = max(1, math.floor(hw.cpus / cpt + 1e-9))
    if cpt > hw.cpus:
        raise UserError(f"--cpus-per-trial {cpt:g}: only {hw.cpus:g} CPUs found")
    plan = Plan(
        trials=trials or (4 if smoke else budget.trials),
        max_epochs=max_epochs or (2 if smoke else budget.max_epochs),
        grace_epochs=1 if smoke else budget.grace_epochs,
        reduction_factor=2 if (smoke or not hw.gpus) else 3,
        concurrency=min(concurrency or slots, slots),
        cpus_per_trial=cpt, gpus_per_trial=gpt,
        subset=SMOKE_SUBSET if smoke else (None if hw.gpus else CPU_SEARCH_SUBSET),
        time_budget_min=time_budget_min,
        # On a CPU the default run must stay within ~20 minutes: one tuned config and two seeds.
        retrain_top_k=top_k or budget.retrain_top_k or (3 if hw.gpus else 1),
        retrain_seeds=seeds or budget.retrain_seeds or (3 if hw.gpus else 2),
        retrain_subset=SMOKE_SUBSET if smoke else None, max_failures=max_failures,
    )
    plan.grace_epochs = min(plan.grace_epochs, plan.max_epochs)
    plan.grow_tail = not gpt and hw.nodes == 1 and plan.concurrency > 1
    plan.retrain_epochs = plan.max_epochs  # the budget the search compared configurations at
    return plan


def measure_images_per_second(exp: Experiment, config: dict, x: torch.Tensor, y: torch.Tensor, threads: float,
                              device: torch.device, batches: int = 3) -> float:
    """A few training steps of the experiment's model on one batch: images/s of one trial."""
    from search.trainer import Split, autocast, make_optimizer, resolve_precision, with_statistics

    previous = torch.get_num_threads()
    torch.set_num_threads(max(1, int(threads)))
    try:
        model = exp.task.build_model(config).to(device)
        opt = make_optimizer(model, config)
        precision = resolve_precision(config["precision"], device)
        config = with_statistics(exp.task, config, Split(x, y))  # as fit() does: e.g. normalisation
        x, y = exp.task.prepare(x.to(device), y.to(device), config, None)
        times = []
        for _ in range(batches + 1):
            t = time.perf_counter()
            with autocast(precision, device):
                loss = exp.task.loss(model(x), y, config)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            if device.type == "cuda":
                torch.cuda.synchronize()
            times.append(time.perf_counter() - t)
        return config["batch_size"] / sorted(times[1:])[len(times[1:]) // 2]
    finally:
        torch.set_num_threads(previous)


def estimate_minutes(plan: Plan, train_size: int, val_size: int, full_train_size: int,
                     images_per_second: float) -> float | None:
    """Wall time of search and retraining, if ASHA keeps 1/reduction_factor of trials past each rung."""
    if not math.isfinite(images_per_second) or images_per_second <= 0:
        return None
    # The first trials have no rung to be compared against, so they run to the end.
    first = min(plan.concurrency, plan.trials)
    epochs, alive, rung = float(first * plan.max_epochs), float(plan.trials - first), plan.grace_epochs
    done = 0
    while done < plan.max_epochs:
        step_to = min(rung, plan.max_epochs)
        epochs += alive * (step_to - done)
        done, alive, rung = step_to, alive / plan.reduction_factor, rung * plan.reduction_factor
    seconds_per_epoch = (train_size + val_size / 3) / images_per_second  # evaluation ~ 1/3 of a step
    search = epochs * seconds_per_epoch / plan.concurrency * 1.1  # +10% for Tune's own overhead
    retrain_images = (plan.retrain_top_k + 1) * plan.retrain_seeds * plan.retrain_epochs * (
        plan.retrain_subset or full_train_size)
    return (search + retrain_images / images_per_second / plan.concurrency) / 60
