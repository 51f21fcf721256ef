"""Fault injection for tests: make chosen trials fail the way real ones do, inside real Ray workers.

Set HPSEARCH_FAULT before the search starts (Ray workers inherit the driver's environment):
    KIND@EPOCH[xTIMES][:KEY=VALUE[,KEY=VALUE...]][;...]   e.g. "nan@2:optimizer=sgd", "kill@2x1:dropout=0.5;oom@2x1"
KIND is nan (the loss becomes NaN), error (RuntimeError), oom (torch.OutOfMemoryError, as CUDA
raises it), kill (the worker process is SIGKILLed), disk (OSError ENOSPC, a full disk) or hang (the
trial stops reporting: it sleeps for an hour, for search/watchdog.py to find); EPOCH
is the epoch during which it happens; xTIMES fires it at most that many times per trial (a
transient fault: the retry succeeds); the optional KEY=VALUE pairs limit it to trials whose config
has every one of those values. HPSEARCH_FAULT_LOG names a file where each firing appends "KIND EPOCH
TRIAL" (TRIAL: a hash of the config), which is how TIMES is counted across the worker processes of
retries. Unset:
no effect at all. Several faults separated by ";": a trial gets the first one that applies to it.
"""

from __future__ import annotations

import errno
import hashlib
import math
import os
import signal
import time
from dataclasses import dataclass
from typing import Any

import torch

ENV = "HPSEARCH_FAULT"
LOG_ENV = "HPSEARCH_FAULT_LOG"
KINDS = ("nan", "error", "oom", "kill", "disk", "hang")
HANG_S = 3600.0


@dataclass(frozen=True)
class Fault:
    kind: str
    epoch: int
    when: tuple[tuple[str, str], ...] = ()  # (KEY, VALUE) pairs a trial's config must all have; (): every trial
    times: int | None = None  # None: every time the epoch is reached

    @classmethod
    def parse(cls, text: str) -> Fault:
        head, _, cond = text.partition(":")
        kind, _, when = head.partition("@")
        epoch, _, times = when.partition("x")
        pairs = tuple(tuple(c.split("=", 1)) for c in cond.split(",")) if cond else ()
        if kind not in KINDS or not epoch.isdigit() or (times and not times.isdigit()) \
                or any(len(p) != 2 or not p[0] for p in pairs):
            raise ValueError(f"{ENV}={text!r}: expected KIND@EPOCH[xTIMES][:KEY=VALUE[,KEY=VALUE...]] "
                             f"with KIND in {KINDS}")
        return cls(kind, int(epoch), pairs, int(times) if times else None)

    def applies(self, config: dict[str, Any]) -> bool:
        return all(str(config.get(key)) == value for key, value in self.when)


def from_env(config: dict[str, Any]) -> Fault | None:
    text = os.environ.get(ENV)
    if not text:
        return None
    faults = [Fault.parse(part) for part in text.split(";")]
    return next((f for f in faults if f.applies(config)), None)


def trial_key(config: dict[str, Any]) -> str:
    return hashlib.sha1(repr(sorted((k, str(v)) for k, v in config.items())).encode()).hexdigest()[:10]


def fired(trial: str) -> list[str]:
    """Lines of the fault log for one trial (empty without a log)."""
    path = os.environ.get(LOG_ENV)
    if not path or not os.path.exists(path):
        return []
    with open(path) as f:
        return [line for line in f.read().splitlines() if line.endswith(" " + trial)]


class FaultyTask:
    """Wraps a Task; fires the fault at the first training batch of `fault.epoch`."""

    def __init__(self, task, fault: Fault, batches_per_epoch: int, start_epoch: int = 1, trial: str = ""):
        self.task, self.fault, self.per_epoch, self.trial = task, fault, batches_per_epoch, trial
        self.batches = (start_epoch - 1) * batches_per_epoch
        self.armed = fault.times is None or len(fired(trial)) < fault.times
        self.logged = False

    def _log(self) -> None:
        path = os.environ.get(LOG_ENV)
        if path and not self.logged:
            with open(path, "a") as f:  # one short line per firing: appends from several processes stay whole
                f.write(f"{self.fault.kind} {self.fault.epoch} {self.trial}\n")
            self.logged = True

    def __getattr__(self, name):
        return getattr(self.task, name)

    def prepare(self, x, y, config, generator):
        if generator is not None:  # a training batch
            epoch = self.batches // self.per_epoch + 1
            self.batches += 1
            if epoch == self.fault.epoch and self.armed:
                self._fire()
        return self.task.prepare(x, y, config, generator)

    def loss(self, outputs, y, config):
        loss = self.task.loss(outputs, y, config)
        epoch = (self.batches - 1) // self.per_epoch + 1
        if self.fault.kind == "nan" and epoch == self.fault.epoch and self.armed:
            self._log()
            return loss * math.nan
        return loss

    def _fire(self) -> None:
        if self.fault.kind != "nan":
            self._log()
        if self.fault.kind == "error":
            raise RuntimeError(f"injected error ({ENV})")
        if self.fault.kind == "oom":
            raise torch.OutOfMemoryError(f"CUDA out of memory. Injected by {ENV}")
        if self.fault.kind == "kill":
            os.kill(os.getpid(), signal.SIGKILL)
        if self.fault.kind == "disk":
            raise OSError(errno.ENOSPC, "No space left on device", f"injected by {ENV}")
        if self.fault.kind == "hang":
            time.sleep(HANG_S)
