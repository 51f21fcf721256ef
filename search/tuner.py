"""Build and run the Ray Tune search: Optuna TPE proposals, the plan's trial scheduler, our callback."""

from __future__ import annotations

import logging
import os
import random
import secrets
import signal
import threading
import urllib.parse
from pathlib import Path
from typing import Any

import numpy as np
import optuna
import pandas as pd
from ray import tune
from ray.tune.logger import CSVLoggerCallback, JsonLoggerCallback, TBXLoggerCallback
from ray.tune.search.basic_variant import BasicVariantGenerator

from search import compat, ray_state, schedulers, tables, tail_resources
from search import journal as study_journal
from search import storage as trial_storage
from search.experiment import Data, Dim, Experiment, warm_start
from search.io import write_csv
from search.loop import Decoding
from search.plan import Plan
from search.progress import Progress
from search.searcher import HonestOptunaSearch, make_searcher, to_tune
from search.trial import DIVERGED, run_trial
from search.watchdog import HangWatch

STUDY_FILE = "optuna.journal"  # the run's Optuna study (searcher.journal): optuna.load_study opens it


class _KeepLocalRows:
    """Ray's JSON and CSV loggers copy a restarting trial's file back from the run's storage, which Ray
    syncs only every so often. Population Based Training pauses and restarts trials all the time: that
    copy erased the rows written since the last sync (a 4-epoch trial kept 1 of its 4). The local
    file, where this session has one, is the newer: keep it."""

    def _restore_from_remote(self, file_name: str, trial) -> None:
        if not Path(trial.local_path, file_name).is_file():
            super()._restore_from_remote(file_name, trial)


class JsonLogger(_KeepLocalRows, JsonLoggerCallback):
    pass


class CsvLogger(_KeepLocalRows, CSVLoggerCallback):
    pass


def storage_folder(experiment: str, name: str) -> str:
    """A new run's own folder under --storage, recorded in its run.json: <experiment>-<name>-<8 hex>.
    Unique, so that neither the same --name under another --results root, nor a run named like another
    run's growth (a-2 beside a's round 2), nor a run --overwrite replaced shares a folder (or a table)."""
    return f"{experiment}-{name}-{secrets.token_hex(4)}"


def tune_location(run_dir: Path, storage: str | None, tune_round: int = 1, folder: str = "") -> tuple[str, str]:
    """(storage_path, experiment name): Ray's folder is run_dir/tune unless --storage moves it (to a
    folder or a URI, search/storage.py), there named `folder` (run.json's storage_folder; runs from before
    it was recorded: <experiment>-<name>). A grown search (`--resume --trials N`) runs each growth as a
    new Ray experiment beside it: tune-2, tune-3..."""
    suffix = "" if tune_round == 1 else f"-{tune_round}"
    if storage is None:
        return str(run_dir), "tune" + suffix
    return trial_storage.location(storage), (folder or f"{run_dir.parent.name}-{run_dir.name}") + suffix


def tune_dirs(run_dir: Path, storage: str | None, rounds: int, folder: str = "") -> list[str]:
    """Ray's experiment folders (paths or URIs) of a search, in the order they ran."""
    return [trial_storage.join(*tune_location(run_dir, storage, k, folder)) for k in range(1, rounds + 1)]


def local_folder(tune_uri: str) -> Path | None:
    """Ray's experiment folder as a local path: the run folder's tune/, a --storage folder (a cluster's shared
    file system), a file:// URI; None for an object store (s3://, gs://), whose objects are written whole."""
    parsed = urllib.parse.urlparse(tune_uri)
    if not trial_storage.is_uri(tune_uri):
        return Path(tune_uri)
    return Path(urllib.parse.unquote(parsed.path)) if parsed.scheme == "file" else None


def repair_saved_state(tune_uri: str, run_dir: Path, say) -> None:
    """Before Ray restores a search killed hard: its saved state and trial files cut short by the kill are
    taken whole from Ray's staging copy, and a checkpoint Ray deleted before saving the state that names it
    is refilled from the trial's newest (search/ray_state.py). Wherever Ray's folder is a local one."""
    tune_dir = local_folder(tune_uri)
    if tune_dir is None or not tune_dir.is_dir():
        return
    repaired = ray_state.repair(tune_dir, run_dir)
    if repaired:
        say(f"resume: Ray's saved state was cut short by the kill ({', '.join(repaired)}): "
            "taken whole from its staging copy")
    refilled = ray_state.refill_lost_checkpoints(tune_dir)
    if refilled:
        say(f"resume: the kill came as Ray replaced a trial's checkpoint ({'; '.join(refilled)}): going on from "
            "the newest")


def readable(tune_dir: str, run_dir: Path) -> Path:
    """A local folder to build the tables from: Ray's folder itself, or a copy of a URI's small files."""
    return trial_storage.local_copy(tune_dir, run_dir / ".storage-copy" / Path(tune_dir).name)


def quiet() -> None:
    """Our callback prints the progress; silence Ray's tables and Optuna's per-trial log lines."""
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")  # the old reporter honours verbose=0
    # Checkpointing every epoch is intended; Ray would warn that experiment snapshots are frequent.
    os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    # A failed trial is reported by our callback in one line; its traceback stays in its error.txt.
    for name in ("ray.tune.execution.tune_controller", "ray.tune.tune"):
        logging.getLogger(name).setLevel(logging.CRITICAL)


def run_search(exp: Experiment, data: Data, base: dict[str, Any], space: dict[str, Dim], plan: Plan,
               run_dir: Path, *, seed: int, resume: bool = False, storage: str | None = None,
               print_fn=None, prior: list | None = None, tune_round: int = 1,
               decoding: Decoding | None = None, folder: str = "") -> tune.ResultGrid:
    """Run round `tune_round` of the search (1, or a growth: `--resume --trials N`), or continue it.
    `decoding`: the ways each trial's last epoch is read, the best kept (search/loop.py choose_decoding);
    `folder`: the run's own folder under --storage (run.json's storage_folder)."""
    storage_path, name = tune_location(run_dir, storage, tune_round, folder)
    tune_uri = trial_storage.join(storage_path, name)  # a local path unless --storage is a URI
    tune_dir = readable(tune_uri, run_dir)
    scheduler = schedulers.of_plan(plan)
    metric, mode = plan.rank_metric or exp.objective, plan.rank_mode or exp.mode
    stop_reason = scheduler.stop_reason_in(plan)
    rounds_before = tune_dirs(run_dir, storage, tune_round, folder)[:-1]
    earlier = tables.collect_rounds([readable(d, run_dir) for d in rounds_before], base, exp.objective, exp.mode,
                                    stop_reason)
    trainable = tune.with_resources(
        tune.with_parameters(run_trial, experiment=exp.name, base=base, train=data.train, val=data.val,
                             # with --storage (a cluster), where every node's retry of a trial sees them
                             marker_dir=trial_storage.join(tune_uri if storage else str(run_dir), DIVERGED),
                             tail_dir=str(run_dir) if plan.grow_tail else None,
                             tracked=tuple(space) if scheduler.changes_config else (),
                             checkpoint_share=scheduler.checkpoint_share,
                             decoding=decoding),
        {"cpu": plan.cpus_per_trial, "gpu": plan.gpus_per_trial})  # always a CPU share, even with a GPU
    progress = Progress(run_dir, tune_dir, base, list(space), exp.objective, exp.mode, plan.trials, scheduler,
                        print_fn, tail=(plan.cpus_per_trial, plan.concurrency) if plan.grow_tail else None,
                        earlier=earlier, time_budget_s=plan.time_budget_s, stop_reason=stop_reason)
    tail_resources.clear(run_dir)
    # Ray's loggers first, so each trial's result.json has its last epoch before our callback reads it.
    # the watchdog before the progress, so that a hung trial's error line says so when the progress prints it
    callbacks = [JsonLogger(), CsvLogger(), TBXLoggerCallback(), HangWatch(print_fn=print_fn or print), progress]
    quiet()

    if resume:  # with --storage too: a cluster's runs are the ones whose driver gets killed
        repair_saved_state(tune_uri, run_dir, print_fn or print)
        torn = study_journal.repair(run_dir / STUDY_FILE)  # before Ray's restore reads the study
        if torn:
            (print_fn or print)(f"resume: {torn}")
    if resume and tune.Tuner.can_restore(tune_uri):
        tuner = tune.Tuner.restore(tune_uri, trainable=trainable, resume_unfinished=True,
                                   resume_errored=False, restart_errored=False)
        # The restored run config holds the callback pickled at the start: give it a fresh clock.
        compat.set_callbacks(tuner, callbacks)
        optuna_search = base_searcher(compat.tune_config(tuner).search_alg)
        if isinstance(optuna_search, HonestOptunaSearch):  # this folder's study, wherever the run was started
            optuna_search.journal_path = run_dir / STUDY_FILE
        trials, history = tables.collect(tune_dir, base, exp.objective, exp.mode, stop_reason)
        if not trials.empty:
            progress.ended = progress.ended_before = (
                progress.ended + int(trials["status"].isin(["completed", "failed"]).sum()))
        if not scheduler.proposes_configs:  # PBT's state is its trials' (restored with them)
            # Ray restores the searcher's state but the scheduler as it was pickled at the start, so the
            # trials left would be judged against empty rungs. Rebuilt from what they all reported.
            compat.tune_config(tuner).scheduler = rebuilt = scheduler.build(plan, metric, mode, space)
            scheduler.carry_over(rebuilt, pd.concat([earlier[1], history], ignore_index=True), metric, mode)
            scheduler.relink(tuner, rebuilt)
    else:
        tuner = new_tuner(exp, trainable, base, space, plan, scheduler, seed, name, storage_path, callbacks, run_dir,
                          prior, tune_round=tune_round, earlier=earlier)
    sigint = signal.getsignal(signal.SIGINT)
    try:
        results = tuner.fit()
    finally:  # Tune leaves its own Ctrl-C handler behind, which would swallow a Ctrl-C during retraining
        if threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGINT, sigint)
        tail_resources.clear(run_dir)
    save_study(compat.tune_config(tuner).search_alg, run_dir)
    return results


def base_searcher(searcher):
    """The searcher inside Ray's wrappers (ConcurrencyLimiter, SearchGenerator, screening), or None."""
    while searcher is not None and not hasattr(searcher, "study"):
        searcher = getattr(searcher, "searcher", None)
    return searcher


def save_study(searcher, run_dir: Path) -> None:
    """optuna_trials.csv: what Optuna was told about each trial (state, value, intermediate values)."""
    searcher = base_searcher(searcher)
    if searcher is not None and searcher.study is not None:
        frame = searcher.study.trials_dataframe(attrs=("number", "value", "state", "params", "intermediate_values"))
        write_csv(run_dir / "optuna_trials.csv", frame)


def warm_points(exp: Experiment, base: dict[str, Any], space: dict[str, Dim],
                variants: bool = True) -> list[dict[str, Any]]:
    """The baseline first, then (unless `variants` is False) the experiment's variants of it that change
    something searched."""
    points = [warm_start(base, space)]
    for variant in exp.warm_variants if variants else ():
        changes = {k: v for k, v in variant.items() if k in space}
        point = warm_start({**base, **changes}, space)
        if changes and point not in points:
            points.append(point)
    return points


def new_tuner(exp: Experiment, trainable, base: dict[str, Any], space: dict[str, Dim], plan: Plan,
              scheduler: schedulers.Scheduler, seed: int, name: str, storage_path: str, callbacks: list,
              run_dir: Path, prior: list | None = None, tune_round: int = 1,
              earlier: tuple[pd.DataFrame, pd.DataFrame] | None = None) -> tune.Tuner:
    """A new Ray experiment: the search's first round, or a growth of a finished search (`tune_round` > 1),
    which runs the trials beyond the `earlier` rounds' (trials, history), continues the same Optuna study
    (TPE learns from every earlier trial) and gives the scheduler the earlier trials' rungs."""
    # Both rank on the plan's ranking metric (smoother than the objective early on, where the experiment
    # declares one); given to each, not to TuneConfig, which would pass the objective to both.
    metric, mode = plan.rank_metric or exp.objective, plan.rank_mode or exp.mode
    earlier_trials, earlier_history = earlier or (pd.DataFrame(), pd.DataFrame())
    # the baseline and its variants were the first round's first trials
    warm = warm_points(exp, base, space, plan.warm_variants) if tune_round == 1 else []
    if scheduler.proposes_configs:
        # Population based: Ray refuses TPE beside it. The population is the warm start and its variants,
        # then seeded random draws; all trials exist from the start, and the scheduler takes turns
        # between them as slots free up, so no concurrency limit (it would shrink the population).
        searcher, concurrency = BasicVariantGenerator(points_to_evaluate=warm, random_state=seed), None
        random.seed(seed)  # PBT's explore draws from Python's and NumPy's global generators
        np.random.seed(seed)
    else:
        # a growth's sampler draws from its own seeded stream, not again from the first round's
        searcher = make_searcher(seed + 1000 * (tune_round - 1), warm_start=warm, metric=metric, mode=mode,
                                 trials=plan.trials, study=run_dir / STUDY_FILE, prior=prior,
                                 concurrency=plan.concurrency)
        concurrency = plan.concurrency
    built = scheduler.build(plan, metric, mode, space)
    scheduler.carry_over(built, earlier_history, metric, mode)
    searcher, concurrency = scheduler.limit(built, searcher, concurrency)
    return tune.Tuner(
        trainable,
        param_space=to_tune(space),
        tune_config=tune.TuneConfig(
            search_alg=searcher, scheduler=built,
            num_samples=plan.trials - len(earlier_trials), max_concurrent_trials=concurrency, reuse_actors=True,
            time_budget_s=plan.time_budget_s,
        ),
        run_config=tune.RunConfig(
            name=name, storage_path=storage_path, callbacks=callbacks, verbose=0,
            # The latest only, unless the scheduler clones older ones: an unreadable one restarts the trial
            # (trial.read_state), and each holds the model and optimiser (155 MB for shapes): two per trial
            # made a default run 4.6 GB.
            checkpoint_config=tune.CheckpointConfig(num_to_keep=scheduler.checkpoints_to_keep(plan)),
            # a crashed, killed or out-of-memory trial restarts from its last checkpoint this many times
            failure_config=tune.FailureConfig(max_failures=plan.max_failures),
        ),
    )
