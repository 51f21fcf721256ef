"""The training loop shared by every experiment: `train_epoch()`, `evaluate()` and `fit()`.

Plain PyTorch, no Ray: `search.trial` wraps `fit` for Ray Tune, `search.train` calls it
directly. Data lives on the device as tensors; a batch is an index slice of them, so there is
no DataLoader and no per-sample Python in the loop. What differs between experiments (model,
batch preparation and augmentation, loss, metrics) comes from its `Task`.
"""

from __future__ import annotations

import contextlib
import copy
import itertools
import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

import torch
from torch import nn


def flush_denormals() -> None:
    """Compute numbers below float32's smallest normal (1.2e-38) as zero, on this CPU thread and on
    the intra-op threads torch starts after it; threads it started earlier keep their mode. Trained
    in float32 on a CPU without it, the shapes net's epochs took 1.2-1.8x as long from epoch 5 on
    (9,000 images, 1 thread: 23-25 s, then 29-42 s), for the same losses to 4 decimals
    (benchmarks/denormals.py). GPUs compute denormals at full speed; this flag is the host's only
    (it flushes Python's and numpy's float arithmetic on these threads too)."""
    torch.set_flush_denormal(True)


# At import, before the process loads data: loading builds torch's thread pool, whose threads would
# not follow a flag set later (search.train, the benchmarks). fit() sets it again on the thread that
# trains (Ray Tune runs a trial in a thread of its own; the threads the search's tail adds later
# inherit it).
flush_denormals()


class Task(Protocol):
    """What one experiment tells the loop. `outputs` is whatever its model returns."""

    def build_model(self, config: dict) -> nn.Module: ...

    def prepare(self, x: torch.Tensor, y: torch.Tensor, config: dict,
                generator: torch.Generator | None) -> tuple[torch.Tensor, torch.Tensor]:
        """Stored batch -> model input (float) and targets; augments when a generator is given."""

    def loss(self, outputs: Any, y: torch.Tensor, config: dict) -> torch.Tensor: ...

    def metrics(self, outputs: Any, y: torch.Tensor, config: dict) -> dict[str, float]:
        """Metrics of a whole evaluation split (outputs concatenated over batches), no prefix."""

    # Optional: training_pool(train, config) -> Split, the split training epochs draw from when it is more
    # than the training split (e.g. shapes' generated images). An epoch still draws len(train) of them.


@dataclass
class Split:
    """Stored inputs (any dtype, e.g. uint8 images) and targets, first dimension = samples."""

    x: torch.Tensor
    y: torch.Tensor

    def __len__(self) -> int:
        return self.x.shape[0]

    def to(self, device: torch.device | str) -> Split:
        return Split(self.x.to(device, non_blocking=True), self.y.to(device, non_blocking=True))


class NonFiniteError(RuntimeError):
    """A loss or metric became NaN or infinite: the configuration diverged."""


@dataclass
class FitResult:
    history: list[dict[str, float]] = field(default_factory=list)
    best: dict[str, float] | None = None  # the epoch row with the best objective
    stopped_early: bool = False
    model: nn.Module | None = None  # weights of the best epoch when keep_best, else the last
    config: dict | None = None  # the config trained with, including what task.statistics() added


EVAL_BATCH = 1000  # samples per forward pass in evaluation (no gradients: memory is small)


def autocast(precision: str, device: torch.device) -> contextlib.AbstractContextManager:
    """fp32 or bf16 (bf16 keeps fp32's exponent range, so no loss scaling is needed; fp16 would need a
    GradScaler and is not offered: experiment.LOOP_LIMITS)."""
    if precision == "fp32":
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype={"bf16": torch.bfloat16}[precision])


def resolve_precision(precision: str, device: torch.device) -> str:
    """'auto' -> bf16 only where the hardware does it natively (Ampere+ GPU; CPU with AVX512-BF16 or
    AMX). Emulated bf16 is slower than fp32: 0.6x on an AVX-512 CPU without the bf16 extension."""
    if precision != "auto":
        return precision
    if device.type == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported(including_emulation=False) else "fp32"
    if device.type == "cpu":
        native = (getattr(torch.cpu, "_is_avx512_bf16_supported", lambda: False)()
                  or getattr(torch.cpu, "_is_amx_tile_supported", lambda: False)())
        return "bf16" if native else "fp32"
    return "fp32"


def make_optimizer(model: nn.Module, config: dict) -> torch.optim.Optimizer:
    """`momentum` is SGD's momentum and Adam's beta1, so one searched key serves both.

    'adam' is AdamW (decoupled weight decay); with weight_decay=0 it is exactly Adam.
    """
    # Fused kernels: one pass over the weights instead of several (AdamW step on the shapes model,
    # 12.9M parameters, 2 CPU threads: 10 ms fused against 54 ms with the default foreach kernels).
    fused = {"fused": True} if next(model.parameters()).device.type in ("cpu", "cuda") else {}
    if config["optimizer"] == "sgd":
        return torch.optim.SGD(model.parameters(), lr=config["lr"], momentum=config["momentum"],
                               weight_decay=config["weight_decay"], **fused)
    if config["optimizer"] == "adam":
        return torch.optim.AdamW(model.parameters(), lr=config["lr"], betas=(config["momentum"], 0.999),
                                 weight_decay=config["weight_decay"], **fused)
    raise ValueError(f"unknown optimizer {config['optimizer']!r}")


# Learning-rate schedules, keyed to the run's planned steps (config["epochs"] x batches per epoch),
# never to how far a scheduler lets a trial go. `lr` is the peak rate in every schedule.
SCHEDULES = ("constant", "cosine", "onecycle")
COSINE_WARMUP = 0.05  # cosine: linear warm-up over the first 5% of the steps, then cosine to 0
ONECYCLE_RISE, ONECYCLE_START, ONECYCLE_END = 0.3, 1 / 25, 1 / 1e4  # PyTorch OneCycleLR's defaults


def lr_at(schedule: str, lr: float, step: int, total: int) -> float:
    """The learning rate of optimiser step `step` (0-based) of `total`. A pure function of the step,
    so a run resumed from a checkpoint continues the same curve without a scheduler state."""
    if schedule == "constant":
        return lr
    if schedule == "cosine":
        warmup = max(1, round(COSINE_WARMUP * total))
        if step < warmup:
            return lr * (step + 1) / warmup
        return lr * 0.5 * (1 + math.cos(math.pi * min(1.0, (step - warmup) / max(1, total - warmup))))
    if schedule == "onecycle":
        t = min(step, total - 1) / max(1, total - 1)  # 0 at the first step, 1 at the last
        if t < ONECYCLE_RISE:
            lo, hi, u = lr * ONECYCLE_START, lr, t / ONECYCLE_RISE
        else:
            lo, hi, u = lr, lr * ONECYCLE_END, (t - ONECYCLE_RISE) / (1 - ONECYCLE_RISE)
        return hi + (lo - hi) * 0.5 * (1 + math.cos(math.pi * u))  # cosine from lo (u=0) to hi (u=1)
    raise ValueError(f"unknown schedule {schedule!r}; known: {', '.join(SCHEDULES)}")


def apply_config(model: nn.Module, optimizer: torch.optim.Optimizer, config: dict) -> None:
    """Make a built model and its optimiser run with `config`'s hyperparameters. Needed after
    `optimizer.load_state_dict` (which brings back the saved lr, momentum and weight decay: a trial
    Population Based Training cloned and mutated would otherwise train on with its donor's values) and
    when a replayed schedule changes them mid-run. Every model of the project uses one dropout rate for
    all its Dropout layers (tests/test_pbt.py checks it), so `dropout` sets them all."""
    for group in optimizer.param_groups:
        group["lr"] = config["lr"]  # a non-constant schedule overrides it per step (train_epoch)
        group["weight_decay"] = config["weight_decay"]
        if "betas" in group:
            group["betas"] = (config["momentum"], group["betas"][1])
        elif "momentum" in group:
            group["momentum"] = config["momentum"]
    if "dropout" in config:
        for module in model.modules():
            if isinstance(module, nn.modules.dropout._DropoutNd):
                module.p = config["dropout"]


# A replayed schedule of hyperparameters (Population Based Training's, retrained on fresh seeds):
# [[first epoch, {key: value, ...}], ...], each entry holding from its epoch until the next one.
Changes = list[tuple[int, dict[str, Any]]]


def config_at(config: dict, changes: Changes | None, epoch: int) -> dict:
    """`config` with every change whose first epoch is <= `epoch` applied, in order."""
    out = dict(config)
    for first, values in changes or ():
        if first <= epoch:
            out.update(values)
    return out


def changes_of(history: list[dict[str, Any]], keys: list[str]) -> Changes:
    """The schedule the epochs of `history` ran with: the values of `keys` at the first epoch, then
    each epoch where one of them changed (the rows hold the values, see `fit(tracked=...)`)."""
    out: Changes = []
    current: dict[str, Any] = {}
    for row in history:
        values = {k: row[k] for k in keys if k in row}
        changed = {k: v for k, v in values.items() if current.get(k) != v}
        if changed:
            out.append((int(row["epoch"]), changed if out else values))
            current.update(values)
    return out


def stretch(changes: Changes, epochs_from: int, epochs_to: int) -> Changes:
    """A schedule found over `epochs_from` epochs, replayed over `epochs_to`: each change keeps its
    place as a fraction of the run (epoch 1 stays epoch 1)."""
    if epochs_from == epochs_to:
        return list(changes)
    return [(1 + round((first - 1) * epochs_to / epochs_from), values) for first, values in changes]


def steps_per_epoch(n: int, batch_size: int) -> int:
    return -(-n // batch_size)


def train_step(task: Task, model: nn.Module, optimizer: torch.optim.Optimizer, x: torch.Tensor, y: torch.Tensor,
               config: dict, generator: torch.Generator | None, precision: str) -> torch.Tensor:
    """One optimiser step on one stored batch; returns the batch's loss, still on the device (reading
    it would wait for the device: the caller sums it there)."""
    x, y = task.prepare(x, y, config, generator)
    with autocast(precision, x.device):
        loss = task.loss(model(x), y, config)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    return loss.detach()


def train_epoch(task: Task, model: nn.Module, optimizer: torch.optim.Optimizer, data: Split,
                config: dict, generator: torch.Generator, precision: str, epoch: int = 1,
                size: int | None = None) -> float:
    """Epoch `epoch` (1-based): `size` images of `data` (default: all of it, one pass) in a random order,
    without repeats, each step at the schedule's learning rate; returns the mean training loss."""
    model.train()
    device = data.x.device
    size = len(data) if size is None else min(size, len(data))
    order = torch.randperm(len(data), generator=generator, device=device)[:size]
    batch_size = config["batch_size"]
    schedule = config.get("schedule", "constant")
    per_epoch = steps_per_epoch(size, batch_size)
    total_steps, step = per_epoch * config["epochs"], per_epoch * (epoch - 1)
    total = torch.zeros((), device=device)  # summed on the device: no host sync per step
    for start in range(0, size, batch_size):
        if schedule != "constant":  # a Python float: setting it costs no device sync
            for group in optimizer.param_groups:
                group["lr"] = lr_at(schedule, config["lr"], step, total_steps)
        index = order[start:start + batch_size]
        loss = train_step(task, model, optimizer, data.x[index], data.y[index], config, generator, precision)
        total += loss * index.numel()
        step += 1
    return total.item() / size


def images_per_second(task: Task, config: dict, x: torch.Tensor, y: torch.Tensor, threads: float,
                      device: torch.device, batches: int = 3) -> float:
    """Throughput of one trial: a few `train_step`s of the task's model on one stored batch
    (the first is a warm-up), median time per step; images per second."""
    previous = torch.get_num_threads()
    torch.set_num_threads(max(1, int(threads)))
    try:
        model = task.build_model(config).to(device)
        model.train()
        optimizer = make_optimizer(model, config)
        precision = resolve_precision(config["precision"], device)
        config = with_statistics(task, config, Split(x, y))  # as fit() does: e.g. normalisation
        x, y = x.to(device), y.to(device)
        times = []
        for _ in range(batches + 1):
            t = time.perf_counter()
            train_step(task, model, optimizer, x, y, config, None, precision)
            if device.type == "cuda":
                torch.cuda.synchronize()
            times.append(time.perf_counter() - t)
        return config["batch_size"] / sorted(times[1:])[len(times[1:]) // 2]
    finally:
        torch.set_num_threads(previous)


@torch.no_grad()
def predict(task: Task, model: nn.Module, data: Split, config: dict, precision: str) -> Any:
    """Model outputs over a whole split, concatenated (tuples element-wise). A task that declares
    `eval_forward(model, x, config)` computes them itself (e.g. averaged over the input's symmetries)."""
    model.eval()
    forward = getattr(task, "eval_forward", None)
    chunks = []
    for start in range(0, len(data), EVAL_BATCH):
        x, _ = task.prepare(data.x[start:start + EVAL_BATCH], data.y[start:start + EVAL_BATCH], config, None)
        with autocast(precision, data.x.device):
            chunks.append(forward(model, x, config) if forward else model(x))
    if isinstance(chunks[0], tuple):
        return tuple(torch.cat([c[k].float() for c in chunks]) for k in range(len(chunks[0])))
    if isinstance(chunks[0], dict):
        return {k: torch.cat([c[k].float() for c in chunks]) for k in chunks[0]}
    return torch.cat([c.float() for c in chunks])


def evaluate(task: Task, model: nn.Module, data: Split, config: dict, precision: str,
             prefix: str = "val_") -> dict[str, float]:
    return scores(task, predict(task, model, data, config, precision), data, config, prefix)


def scores(task: Task, outputs: Any, data: Split, config: dict, prefix: str) -> dict[str, float]:
    metrics = {"loss": task.loss(outputs, data.y, config).item(), **task.metrics(outputs, data.y, config)}
    return {prefix + k: v for k, v in metrics.items()}


DECODED = "decoded_"  # a history row's decoded_<key>: the decoding its validation metrics were read with


@dataclass(frozen=True)
class Decoding:
    """Keys that change how a trained model is read, not how it trains (e.g. shapes' test-time
    augmentation and joint decoding), with the values to try, the plain reading first. Rather than
    spend trials on them, a search can read each trial's last epoch every way and keep the best
    (`choose_decoding`). `forward`: keys the forward pass reads (each combination costs a pass over
    the split); `outputs`: keys that only read its outputs (free once the outputs exist); `tie_break`:
    (metric, "min" | "max") pairs that decide between readings equal on the objective, in order (a key
    the objective cannot see, e.g. how shapes reads its counts, is chosen on them)."""
    forward: Mapping[str, tuple] = field(default_factory=dict)
    outputs: Mapping[str, tuple] = field(default_factory=dict)
    tie_break: tuple[tuple[str, str], ...] = ()

    def options(self) -> dict[str, tuple]:
        return {**self.forward, **self.outputs}

    @property
    def keys(self) -> tuple[str, ...]:
        return tuple(self.options())

    def unpinned(self, pinned: Mapping[str, Any]) -> Decoding | None:
        """Without the keys `--set` pinned (they keep their value); None when none is left to choose."""
        forward = {k: v for k, v in self.forward.items() if k not in pinned}
        outputs = {k: v for k, v in self.outputs.items() if k not in pinned}
        return Decoding(forward, outputs, self.tie_break) if forward or outputs else None


def _combinations(options: Mapping[str, tuple]) -> list[dict[str, Any]]:
    return [dict(zip(options, values, strict=True)) for values in itertools.product(*options.values())]


def choose_decoding(task: Task, model: nn.Module, data: Split, config: dict, precision: str, decoding: Decoding,
                    objective: tuple[str, str]) -> dict[str, Any]:
    """The validation metrics of the decoding best on the objective, then on decoding.tie_break, with
    its values as DECODED keys. Ties on all keep the earlier combination: the plainer reading."""
    judged = (objective, *decoding.tie_break)
    rank = lambda row: tuple(row[m] if mode == "max" else -row[m] for m, mode in judged)  # noqa: E731
    best = None
    for forward in _combinations(decoding.forward):
        outputs = predict(task, model, data, {**config, **forward}, precision)
        for read in _combinations(decoding.outputs):
            chosen = {**forward, **read}
            row = scores(task, outputs, data, {**config, **chosen}, "val_")
            if best is None or rank(row) > rank(best):
                best = {**row, **{DECODED + k: v for k, v in chosen.items()}}
    return best


def _check_finite(row: dict[str, float]) -> None:
    bad = [k for k, v in row.items() if isinstance(v, float) and not math.isfinite(v)]
    if bad:
        shown = ", ".join(f"{k}={row[k]}" for k in bad[:2]) + (f" and {len(bad) - 2} more" if len(bad) > 2 else "")
        raise NonFiniteError(f"not finite at epoch {row.get('epoch')}: {shown}; the configuration diverged")


def use_fast_convolutions(device: torch.device) -> None:
    """On a GPU, let cuDNN time its convolution algorithms once per input shape and keep the fastest
    (every batch of a run has the same shape, but for the last). The seeds still fix the configs and
    the data order; the chosen algorithms may differ in the last bits between runs, as GPU sums do."""
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True


def training_pool(task: Task, config: dict, train: Split) -> Split:
    """What the epochs draw their images from: the task's pool where it declares one, else `train`."""
    pool = getattr(task, "training_pool", None)
    return train if pool is None else pool(train, config)


def with_statistics(task: Task, config: dict, train: Split) -> dict:
    """The config plus what the task derives from its training split (e.g. normalisation), if it
    declares `statistics(train)`; the values travel in the config to prepare() and are saved."""
    statistics = getattr(task, "statistics", None)
    return config if statistics is None else {**config, **statistics(train)}


def fit(task: Task, config: dict, train: Split, val: Split | None, *, device: torch.device,
        objective: tuple[str, str] = ("val_acc", "max"),
        on_epoch: Callable[[dict[str, float], Callable[..., dict], bool], None] | None = None,
        state: dict | None = None, keep_best: bool = False, changes: Changes | None = None,
        tracked: tuple[str, ...] = (), decoding: Decoding | None = None) -> FitResult:
    """Train one configuration for config['epochs'] epochs, early-stopping on the objective (after
    config['patience'] epochs without a better value, under a constant learning rate only).

    on_epoch(row, checkpoint, last) is called after every epoch with the metrics row; calling
    checkpoint() returns everything needed to resume (pass it back as `state`); `last` is True
    when this epoch ends the run by itself (all epochs done, or patience exhausted).
    `changes` replays a schedule of hyperparameters (see `config_at`); each history row holds the
    values of the `tracked` keys that epoch ran with (a history restored from `state` keeps those of
    the run it came from, so it is the whole schedule of the weights trained).
    With `decoding` and a validation split, the run's last epoch is scored with the decoding best on the
    objective (`choose_decoding`), the others with the config's; every row names its decoding.
    """
    precision = resolve_precision(config["precision"], device)
    use_fast_convolutions(device)
    flush_denormals()
    config = with_statistics(task, config, train)
    # An epoch is as long as the training split, whatever the pool holds: a config costs the same with or
    # without the task's extra images, so epochs, rungs and time budgets compare across configs.
    epoch_size, train = len(train), training_pool(task, config, train)
    torch.manual_seed(config["seed"])  # model init and dropout
    model = task.build_model(config).to(device)
    optimizer = make_optimizer(model, config)
    generator = torch.Generator(device=device).manual_seed(config["seed"] + 1)  # order, augmentation
    train, val = train.to(device), (val.to(device) if val is not None else None)
    result = FitResult()
    metric, mode = objective
    sign = 1.0 if mode == "max" else -1.0
    bad_epochs, elapsed, first_epoch = 0, 0.0, 1
    best_weights = None
    if state is not None:
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        generator.set_state(state["generator"].cpu())  # generator states are CPU byte tensors
        torch.set_rng_state(state["torch_rng"].cpu())  # a CPU byte tensor, even if loaded onto a GPU
        if device.type == "cuda" and "cuda_rng" in state:  # dropout on a GPU draws from the CUDA generator
            torch.cuda.set_rng_state(state["cuda_rng"].cpu(), device)
        result.history = list(state["history"])
        result.best = state["best"]
        bad_epochs, elapsed, first_epoch = state["bad_epochs"], state["elapsed"], state["epoch"] + 1
    base = config
    config = config_at(base, changes, first_epoch)
    apply_config(model, optimizer, config)  # the restored optimiser state holds the saved hyperparameters

    def checkpoint(snapshot: bool = True) -> dict:
        # A snapshot: state_dict()s and the history list are live references that later epochs change.
        # snapshot=False skips the copy (0.07 s for the shapes net) for a caller that serialises it at once.
        state = {"model": model.state_dict(), "optimizer": optimizer.state_dict(), "epoch": epoch,
                 "generator": generator.get_state(), "torch_rng": torch.get_rng_state(),
                 "history": result.history, "best": result.best, "bad_epochs": bad_epochs, "elapsed": elapsed}
        if device.type == "cuda":
            state["cuda_rng"] = torch.cuda.get_rng_state(device)
        return copy.deepcopy(state) if snapshot else state

    def better(row: dict) -> bool:
        return metric in row and (result.best is None or sign * (row[metric] - result.best[metric]) > 0)

    for epoch in range(first_epoch, config["epochs"] + 1):
        t0 = time.perf_counter()
        if changes:
            config = config_at(base, changes, epoch)
            apply_config(model, optimizer, config)
        row: dict[str, float] = {"epoch": epoch, **{k: config[k] for k in tracked}}
        row["train_loss"] = train_epoch(task, model, optimizer, train, config, generator, precision, epoch,
                                        epoch_size)
        # seconds of this epoch's training alone (time_s adds the evaluations): a retraining's speed
        row["train_s"] = time.perf_counter() - t0
        if val is not None:
            row.update(evaluate(task, model, val, config, precision))
            if decoding is not None:
                row.update({DECODED + k: config[k] for k in decoding.keys})
        _check_finite(row)  # a diverged run is not read every way first
        bad_epochs = 0 if better(row) else bad_epochs + 1  # patience counts the plain reading's epochs
        # Early stopping needs a validation split; without one (retraining) every epoch runs. It waits
        # for a plateau only under a constant rate: a decaying schedule gains most in its low-rate end,
        # which a plateau of the noisy top-1 would cut off (the seed's shapes config under a 40-epoch
        # cosine was stopped at epoch 22, val 0.436; under one-cycle it ran all 40, to 0.469).
        patience = config["patience"] if config.get("schedule", "constant") == "constant" else 0
        result.stopped_early = (val is not None and patience > 0 and bad_epochs >= patience
                                and epoch < config["epochs"])
        if decoding is not None and val is not None and (result.stopped_early or epoch == config["epochs"]):
            # every metric of the row, the ranking metric's too, is now the chosen reading's
            row.update(choose_decoding(task, model, val, config, precision, decoding, objective))
        elapsed += time.perf_counter() - t0
        row["time_s"] = elapsed
        result.history.append(row)
        if better(row):
            result.best = row
            if keep_best:
                best_weights = copy.deepcopy(model.state_dict())
        if on_epoch is not None:
            on_epoch(row, checkpoint, result.stopped_early or epoch == config["epochs"])
        if result.stopped_early:
            break
    if best_weights is not None:
        model.load_state_dict(best_weights)
    result.model, result.config = model, config
    return result
