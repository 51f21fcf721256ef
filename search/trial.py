"""One trial of a search, the function Ray Tune runs: `search.loop.fit` on the sampled config.

One `tune.report` per epoch with the metrics and a checkpoint (model, optimiser, epoch, RNG
states), so a trial resumes from `tune.get_checkpoint()` after a crash or a restored run. The
data arrives through the object store (`tune.with_parameters`), never a closure; the trial
uses as many torch threads as CPUs it was given, and the GPU Ray assigned it, if any.
"""

from __future__ import annotations

import json
import math
import os
import pickle
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import ray
import torch
from ray import tune

from search import experiments, faults, tail_resources
from search import storage as trial_storage
from search.lock import process_alive
from search.loop import Decoding, NonFiniteError, Split, changes_of, fit
from search.protocol import CHANGES, ENDED_FILE, FINISHED, HISTORY_FILE, NODE

STATE_FILE = "state.pt"
# At most this share of a trial's time goes to writing its state (155 MB for shapes, about 0.2 s here):
# every epoch on a CPU, where an epoch takes seconds, and every few seconds of epochs on a GPU.
CHECKPOINT_SHARE = 0.05
DIVERGED = "diverged"  # folder of the run: <trial id>.txt says why that trial diverged (its retries fail at once)


def trial_device() -> torch.device:
    """The GPU Ray assigned this worker, or the CPU when it assigned none. Ray sets CUDA_VISIBLE_DEVICES
    to the assigned GPU(s), so ours is the first visible one; a GPU assigned to a worker whose torch
    sees no CUDA (a CPU-only torch on a GPU node) is an error, not a silent run on the CPU."""
    gpus = ray.get_gpu_ids()
    if not gpus:
        return torch.device("cpu")
    if not torch.cuda.is_available():
        visible = os.environ.get("CUDA_VISIBLE_DEVICES")
        raise RuntimeError(f"Ray assigned GPU {gpus[0]} to this trial, but torch here sees no CUDA device "
                           f"(torch {torch.__version__}, CUDA_VISIBLE_DEVICES={visible!r}): install a CUDA "
                           "build of torch on this node, or run with --gpus-per-trial 0")
    device = torch.device("cuda", 0)
    torch.cuda.set_device(device)  # kernels and allocations of this worker go to its own GPU
    return device


class CheckpointClock:
    """When a trial writes its state: after its first epoch, then once the time since the last write is
    at least the last write's cost / `share` (so writing takes at most `share` of the trial's time and
    a crash loses at most that much training); `share` None: after every epoch (Population Based
    Training clones and pauses trials at any epoch it judges). `clock`: seconds (a test's fake one)."""

    def __init__(self, share: float | None, clock=time.monotonic):
        self.share, self.clock = share, clock
        self.cost = 0.0  # seconds the last write took; none yet: the first epoch writes
        self.last = clock()

    def due(self) -> bool:
        return self.share is None or (self.clock() - self.last) * self.share >= self.cost

    def wrote(self, started: float) -> None:
        self.last = self.clock()
        self.cost = self.last - started


def ended(checkpoint: tune.Checkpoint) -> bool:
    """Whether the checkpoint is a trial's last one (its history, no weights): restored, e.g. after
    Ctrl-C between its last report and its end, the trial has nothing left to train."""
    with checkpoint.as_directory() as d:
        return (Path(d) / ENDED_FILE).is_file()


def load_state(checkpoint: tune.Checkpoint, device: torch.device) -> dict | None:
    """The trial's last state, or None (start over, with a warning in the trial's log) when the
    checkpoint is unreadable, e.g. cut short by a full disk or a crash while it was written."""
    with checkpoint.as_directory() as d:
        return read_state(Path(d) / STATE_FILE, device)


def read_state(path: Path, device: torch.device) -> dict | None:
    try:
        return torch.load(path, map_location=device, weights_only=True)
    except (OSError, RuntimeError, EOFError, ValueError, pickle.UnpicklingError) as e:
        print(f"warning: checkpoint {path} is unreadable ({type(e).__name__}: {e}); restarting this trial "
              "from epoch 1", file=sys.stderr, flush=True)
        return None


SHARED_MEMORY = Path("/dev/shm")
# A checkpoint's temporary folder names its process, so that one a SIGKILL left behind (Ray never got to
# delete it: up to 155 MB of RAM each, in /dev/shm) is told from a live trial's and cleaned at the next start.
CHECKPOINT_PREFIX = "hpsearch-"
STALE_AFTER_S = 600  # and is this old: a process id reused meanwhile, or another pid namespace, keeps it


def _prefix() -> str:
    return f"{CHECKPOINT_PREFIX}{os.getpid()}-"


def clean_stale_checkpoints(now: float | None = None) -> list[Path]:
    """Delete the checkpoint folders of dead processes of this host, in shared memory and the temp
    folder; the ones deleted. (On a cluster each node's are cleaned when a run starts there.)"""
    now = time.time() if now is None else now
    gone = []
    for parent in {SHARED_MEMORY, Path(tempfile.gettempdir())}:
        try:
            folders = list(parent.glob(f"{CHECKPOINT_PREFIX}*-*"))
        except OSError:
            continue
        for folder in folders:
            pid = folder.name[len(CHECKPOINT_PREFIX):].split("-", 1)[0]
            try:
                old = now - folder.lstat().st_mtime > STALE_AFTER_S
            except OSError:
                continue
            if pid.isdigit() and old and folder.is_dir() and not folder.is_symlink() and not process_alive(int(pid)):
                shutil.rmtree(folder, ignore_errors=True)
                gone.append(folder)
    return gone


def history_checkpoint(history: list[dict]) -> tempfile.TemporaryDirectory:
    """The checkpoint of a trial's last epoch: its history (search/tables.py reads it) and the ENDED
    mark, without the weights, which nothing reads once a trial ended."""
    folder = tempfile.TemporaryDirectory(prefix=_prefix())
    _write_history(Path(folder.name), history)
    (Path(folder.name) / ENDED_FILE).write_text("")
    return folder


def _write_history(folder: Path, history: list[dict]) -> None:
    """The rows of the state's history beside it, for search/tables.py (which does not unpickle weights)."""
    (folder / HISTORY_FILE).write_text(json.dumps(history))


def written_checkpoint(make_state) -> tempfile.TemporaryDirectory:
    """A temporary folder holding the trial's state, for Ray to copy into the run's storage. In shared
    memory (/dev/shm) where there is one and the state fits, so the 155 MB of the shapes net and its
    Adam state cross the disk once per epoch, not twice; else in the ordinary temp folder."""
    if SHARED_MEMORY.is_dir() and os.access(SHARED_MEMORY, os.W_OK):
        try:
            return _state_saved_in(SHARED_MEMORY, make_state)
        except (OSError, RuntimeError):  # shared memory full (a container's is 64 MB): torch.save raises
            pass  # RuntimeError ("file write failed"), a plain write OSError
    return _state_saved_in(None, make_state)


def _state_saved_in(parent: Path | None, make_state) -> tempfile.TemporaryDirectory:
    folder = tempfile.TemporaryDirectory(dir=parent, prefix=_prefix())
    try:
        state = make_state(snapshot=False)
        torch.save(state, Path(folder.name) / STATE_FILE)  # serialised now: no copy
        _write_history(Path(folder.name), state["history"])
    except BaseException:
        folder.cleanup()
        raise
    return folder


def run_trial(params: dict[str, Any], *, experiment: str, base: dict[str, Any], train: Split, val: Split,
              marker_dir: str | None = None, tail_dir: str | None = None, tracked: tuple[str, ...] = (),
              checkpoint_share: float | None = CHECKPOINT_SHARE, decoding: Decoding | None = None) -> None:
    """Only the search splits reach a trial: the held-out split stays with the driver. With
    `tail_dir`, the trial takes more torch threads when the driver says slots idle (search/tail_resources.py).
    With `tracked` (a scheduler that changes configs mid-run: Population Based Training), each epoch's
    row holds the values of those keys and, as CHANGES, the whole schedule its weights were trained
    with, inherited from the trials it was cloned from (retraining replays it). `checkpoint_share`:
    see CheckpointClock. `decoding`: read the trial's last epoch every way it offers and report the best
    (search/loop.py choose_decoding)."""
    exp = experiments.get(experiment)
    config = {**base, **params}
    cpus = tune.get_context().get_trial_resources().required_resources.get("CPU", 1)
    torch.set_num_threads(max(1, int(cpus)))
    device = trial_device()
    node = ray.get_runtime_context().get_node_id()[:12]  # which machine ran it (a cluster has several)
    checkpoint = tune.get_checkpoint()
    if checkpoint and ended(checkpoint):
        return  # it reported its last epoch before the run was interrupted: nothing left to train
    state = load_state(checkpoint, device) if checkpoint else None
    clock = CheckpointClock(checkpoint_share)

    def report(row: dict[str, float], make_state, last: bool) -> None:
        if tracked:  # the history of a restored state is the donor's: the schedule of these very weights
            state = make_state(snapshot=False)  # built once: the checkpoint below saves this very state
            row = {**row, CHANGES: json.dumps(changes_of(state["history"], list(tracked)))}
            make_state = lambda snapshot, state=state: state  # noqa: E731
        row = {**row, FINISHED: last, NODE: node}
        if last:
            with history_checkpoint(make_state(snapshot=False)["history"]) as d:
                tune.report(row, checkpoint=tune.Checkpoint.from_directory(d))
        elif clock.due():
            started = clock.clock()
            with written_checkpoint(make_state) as d:
                tune.report(row, checkpoint=tune.Checkpoint.from_directory(d))
            clock.wrote(started)
        else:
            tune.report(row)
        threads = tail_resources.read_threads(tail_dir) if tail_dir else None
        if threads is not None and threads > torch.get_num_threads():
            torch.set_num_threads(threads)  # the search's tail: other slots are idle

    # A diverged configuration diverges again from its checkpoint: a retry (--max-failures) after
    # a NaN fails at once instead of spending the epochs again. The marker goes to the run folder
    # (absolute, written synchronously), not the trial's folder: Ray stages that locally and syncs
    # it later, so the next attempt may not see it yet.
    diverged = trial_storage.join(marker_dir or tune.get_context().get_trial_dir(),
                                  f"{tune.get_context().get_trial_id()}.txt")  # a URI with a URI --storage
    why = trial_storage.read_text(diverged)
    if why is not None:  # only a retry of this trial sees it
        raise NonFiniteError(why)
    task = exp.task
    fault = faults.from_env(config)  # tests only: HPSEARCH_FAULT unset in real use
    if fault is not None:
        task = faults.FaultyTask(task, fault, math.ceil(len(train) / config["batch_size"]),
                                 start_epoch=state["epoch"] + 1 if state else 1, trial=faults.trial_key(config))
    try:
        fit(task, config, train, val, device=device, objective=(exp.objective, exp.mode),
            on_epoch=report, state=state, tracked=tracked, decoding=decoding)
    except NonFiniteError as e:
        trial_storage.write_text(diverged, str(e))
        raise
