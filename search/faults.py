"""Fault injection for tests: make chosen trials fail the way real ones do, inside real Ray workers.

Set HPSEARCH_FAULT before the search starts (Ray workers inherit the driver's environment):
    KIND@EPOCH[:KEY=VALUE]      e.g. "nan@2:optimizer=sgd"
KIND is nan (the loss becomes NaN), error (RuntimeError), oom (torch.OutOfMemoryError, as CUDA
raises it) or kill (the worker process is SIGKILLed); EPOCH is the epoch during which it happens;
the optional KEY=VALUE limits it to trials whose config has that value. Unset: no effect at all.
"""

from __future__ import annotations

import math
import os
import signal
from dataclasses import dataclass
from typing import Any

import torch

ENV = "HPSEARCH_FAULT"
KINDS = ("nan", "error", "oom", "kill")


@dataclass(frozen=True)
class Fault:
    kind: str
    epoch: int
    key: str | None = None
    value: str | None = None

    @classmethod
    def parse(cls, text: str) -> Fault:
        head, _, cond = text.partition(":")
        kind, _, epoch = head.partition("@")
        if kind not in KINDS or not epoch.isdigit():
            raise ValueError(f"{ENV}={text!r}: expected KIND@EPOCH[:KEY=VALUE] with KIND in {KINDS}")
        key, _, value = cond.partition("=")
        return cls(kind, int(epoch), key or None, value if key else None)

    def applies(self, config: dict[str, Any]) -> bool:
        return self.key is None or str(config.get(self.key)) == self.value


def from_env(config: dict[str, Any]) -> Fault | None:
    text = os.environ.get(ENV)
    if not text:
        return None
    fault = Fault.parse(text)
    return fault if fault.applies(config) else None


class FaultyTask:
    """Wraps a Task; fires the fault at the first training batch of `fault.epoch`."""

    def __init__(self, task, fault: Fault, batches_per_epoch: int, start_epoch: int = 1):
        self.task, self.fault, self.per_epoch = task, fault, batches_per_epoch
        self.batches = (start_epoch - 1) * batches_per_epoch

    def __getattr__(self, name):
        return getattr(self.task, name)

    def prepare(self, x, y, config, generator):
        if generator is not None:  # a training batch
            epoch = self.batches // self.per_epoch + 1
            self.batches += 1
            if epoch == self.fault.epoch:
                self._fire()
        return self.task.prepare(x, y, config, generator)

    def loss(self, outputs, y, config):
        loss = self.task.loss(outputs, y, config)
        epoch = (self.batches - 1) // self.per_epoch + 1
        return loss * math.nan if self.fault.kind == "nan" and epoch == self.fault.epoch else loss

    def _fire(self) -> None:
        if self.fault.kind == "error":
            raise RuntimeError(f"injected error ({ENV})")
        if self.fault.kind == "oom":
            raise torch.OutOfMemoryError(f"CUDA out of memory. Injected by {ENV}")
        if self.fault.kind == "kill":
            os.kill(os.getpid(), signal.SIGKILL)
