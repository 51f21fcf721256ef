"""Every place the search relies on a private part of Ray Tune or Optuna, named once, for the versions
constraints.txt pins (PINNED). Ray and Optuna offer no public way to do these things; each function
says why it is needed. tests/test_compat.py checks each reach-in on the installed versions, so an
upgrade that breaks one fails there, by name, instead of a search failing mid-run.

Two homes besides this one: the classes that subclass Ray's (SUBCLASSED below lists the private
attributes they read), and search/ray_state.py, which reads and repairs the layout of the files Ray
Tune keeps on disk (its own tests check that layout on a real run)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

PINNED = {"ray": "2.60.0", "optuna": "5.0.0"}  # what constraints.txt pins (tests/test_compat.py keeps them equal)

# Private attributes of the Ray classes the search subclasses: screening.ScreeningASHA (ASHA that waits
# at its first rung), searcher.HonestOptunaSearch (tells Optuna a stopped trial's last value, keeps NaN
# out, its study in the run folder), tuner._KeepLocalRows (Ray's loggers, which erased PBT's rows).
SUBCLASSED = {
    "ray.tune.schedulers.AsyncHyperBandScheduler": ("_brackets", "_time_attr", "_metric", "_max_t", "_metric_op",
                                                    "_num_stopped"),
    "ray.tune.search.optuna.OptunaSearch": ("_ot_trials", "_completed_trials", "_ot_study", "_setup_study"),
    "ray.tune.logger.json.JsonLoggerCallback": ("_restore_from_remote",),
    "ray.tune.logger.csv.CSVLoggerCallback": ("_restore_from_remote",),
}


# ---------------------------------------------------------------- Ray Tune: a Tuner's config


def tune_config(tuner) -> Any:
    """The TuneConfig inside a Tuner. Tuner.restore rebuilds the scheduler as it was pickled at the start
    (empty rungs), and its searcher must be found to save the study: Tuner has no accessor for either."""
    return tuner._local_tuner._tune_config


def set_callbacks(tuner, callbacks: list) -> None:
    """A restored Tuner's callbacks: Tuner.restore brings back those pickled at the start, clocks and all."""
    tuner._local_tuner._run_config.callbacks = callbacks


# ---------------------------------------------------------------- Ray Tune: ASHA's rungs


def asha_rungs(scheduler) -> list[tuple[float, dict[str, float]]]:
    """(milestone epoch, {trial id: value signed so that larger is better}) of every rung of every bracket,
    as ASHA records them. A resumed search fills them from history.csv (Ray restores them empty)."""
    return [rung for bracket in scheduler._brackets for rung in bracket._rungs]


def asha_first_rung(scheduler) -> tuple[float, dict[str, float]]:
    """The first rung of the first bracket (Ray lists rungs last first)."""
    return scheduler._brackets[0]._rungs[-1]


def asha_cutoff(scheduler, recorded: dict[str, float]) -> float | None:
    """The value a trial must reach at a rung to go on, as ASHA computes it from the values recorded there."""
    return scheduler._brackets[0].cutoff(recorded)


# ---------------------------------------------------------------- Optuna: a study's storage


def study_storage(study) -> Any:
    """The storage behind a study: the one object its trials write through (Study offers none)."""
    return study._storage


def trial_id(frozen) -> int:
    """A FrozenTrial's id in its storage, which the storage's setters take (the trial's number is not it)."""
    return frozen._trial_id


def repoint_journal(study, path: Path) -> None:
    """Make an unpickled study's journal read and write `path`: a resumed run moved to another folder
    carries the old path inside its pickled searcher. Unpickled, the storage has read nothing yet
    (JournalStorage.__setstate__), so its next read replays the new file from the start."""
    from optuna.storages.journal import JournalFileBackend

    study._storage._backend = JournalFileBackend(str(path))


# ---------------------------------------------------------------- Ray: the session


def token_auth_enabled() -> bool:
    """Whether the Ray this process runs with (or would start) checks tokens; False for a Ray without
    token authentication at all. Ray has no public query for it."""
    try:
        from ray._private.authentication.authentication_utils import is_token_auth_enabled
    except ImportError:
        return False
    return is_token_auth_enabled()


def session_logs_dir() -> str | None:
    """Where this process's Ray session keeps its logs on this machine; None without one."""
    try:
        import ray._private.worker as worker

        return worker._global_node.get_logs_dir_path() if worker._global_node else None
    except (ImportError, AttributeError):
        return None
