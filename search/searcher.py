"""Optuna TPE through Ray's OptunaSearch, with early-stopped and failed trials told honestly.

Ray's OptunaSearch tells Optuna COMPLETE for any trial that ends with a result, so a trial the
scheduler stopped after 2 of 30 epochs enters TPE's model as if its 2-epoch score were final, and a trial
that raised after some epochs also counts as complete. Here the trial marks its last report
`finished=True` only when it ran to its end (all epochs, or its own patience); any other ending
is told as PRUNED (its per-epoch values, the last included, are its intermediate values, which is
what TPE uses to rank pruned trials), and errors as FAIL without a value. The study lives in the run
folder (`journal`): `optuna.load_study` shows each trial with the Ray trial id as a user attribute.
"""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import optuna
from optuna.storages import JournalStorage
from optuna.storages.journal import JournalFileBackend
from ray import tune
from ray.tune.search.optuna import OptunaSearch

from search import compat
from search import journal as study_journal
from search.experiment import Choice, Dim, Float, Int
from search.protocol import EPOCH_CLOCK, FINISHED


def to_tune(space: Mapping[str, Dim]) -> dict[str, Any]:
    """Our space (data) -> Ray Tune domains; OptunaSearch turns them into Optuna distributions."""
    out: dict[str, Any] = {}
    for key, dim in space.items():
        if isinstance(dim, Float):
            out[key] = (tune.loguniform if dim.log else tune.uniform)(dim.low, dim.high)
        elif isinstance(dim, Int):
            out[key] = (tune.lograndint if dim.log else tune.randint)(dim.low, dim.high + 1)  # high exclusive
        elif isinstance(dim, Choice):
            out[key] = tune.choice(list(dim.options))
        else:
            raise TypeError(f"{key}: unknown dimension {dim!r}")
    return out


def distribution(dim: Dim) -> optuna.distributions.BaseDistribution:
    """Our dimension as Optuna's distribution (for trials told to a study directly)."""
    if isinstance(dim, Float):
        return optuna.distributions.FloatDistribution(dim.low, dim.high, log=dim.log)
    if isinstance(dim, Int):
        return optuna.distributions.IntDistribution(dim.low, dim.high, log=dim.log)
    return optuna.distributions.CategoricalDistribution(list(dim.options))


# User attributes of the stored study's trials.
RAY_TRIAL_ID = "ray_trial_id"  # links an Optuna trial to its row of trials.csv
LOST = "lost"  # a trial asked for just before a hard kill, and never run
STOPPED = "stopped"  # a trial still running when its search ended (a time budget): why it is PRUNED
INTERRUPTED = "interrupted"  # when a trial's search was interrupted while it ran (--resume finishes it)
FROM_RUN, FROM_TRIAL = "warm_start_from", "warm_start_trial_id"  # a trial told from an earlier run (search/warm.py)
STUDY_NAME = "search"


def journal(path: Path) -> JournalStorage:
    """The run's Optuna study on disk, as Optuna's own tools open it: an append-only journal file
    (one writer here, the driver; it needs no database and survives a crash mid-write)."""
    torn = study_journal.repair(path)  # a torn line would make every read fail (search/journal.py)
    if torn:
        print(f"warning: {torn}", file=sys.stderr)
    return JournalStorage(JournalFileBackend(str(path)))


def settle_running(path: Path, ended: bool, last: Mapping[str, tuple[int, float]] | None = None) -> int:
    """Say in the stored study what became of the trials it still shows running once the search stopped,
    for `optuna.load_study` and optuna-dashboard, which would show them running for ever.

    An ended search's (a time budget ends trials without a completion callback; an asked trial may never
    have started): PRUNED at their last epoch, or FAIL as lost when they never reported. `last`: each Ray
    trial's last (epoch, ranked value) as trials.csv has them, told first where Optuna missed it, so a
    stopped trial is ranked by the epoch it stopped at. An interrupted search's stay running, as they are
    (`--resume` continues them and tells their results, or tells one the scheduler stopped just before
    the interrupt), with when the search last stopped. Call with the run's lock held; returns how many."""
    if not Path(path).is_file():
        return 0
    storage = journal(Path(path))
    study = optuna.load_study(study_name=STUDY_NAME, storage=storage)
    running = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,))
    when = time.strftime("%Y-%m-%d %H:%M:%S")
    for t in running:
        if not ended:
            storage.set_trial_user_attr(compat.trial_id(t), INTERRUPTED, f"running when the search was interrupted at "
                                                                  f"{when}; --resume settles it")
            continue
        epoch, value = (last or {}).get(t.user_attrs.get(RAY_TRIAL_ID), (None, None))
        if isinstance(epoch, int) and epoch not in t.intermediate_values and math.isfinite(value):
            storage.set_trial_intermediate_value(compat.trial_id(t), epoch, value)
        epochs = [*t.intermediate_values, *([epoch] if isinstance(epoch, int) else [])]
        if epochs:
            storage.set_trial_user_attr(compat.trial_id(t), STOPPED, f"running when the search ended at {when}; "
                                                              f"stopped after epoch {max(epochs)}")
            storage.set_trial_state_values(compat.trial_id(t), optuna.trial.TrialState.PRUNED)
        else:
            storage.set_trial_user_attr(compat.trial_id(t), LOST, "asked for, but the search ended before it ran")
            storage.set_trial_state_values(compat.trial_id(t), optuna.trial.TrialState.FAIL)
    return len(running)


def _step(result: Mapping[str, Any]) -> Any:
    """The step of a trial's result told to Optuna: its epoch (protocol.EPOCH_CLOCK), not Ray's count
    of its reports, which runs ahead after a restart."""
    return result.get(EPOCH_CLOCK, result.get("training_iteration"))


class HonestOptunaSearch(OptunaSearch):
    def suggest(self, trial_id: str) -> dict | None:
        config = super().suggest(trial_id)
        ot_trial = self._ot_trials.get(trial_id)
        if ot_trial is not None:
            ot_trial.set_user_attr(RAY_TRIAL_ID, trial_id)
        return config

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
        if trial_id in self._completed_trials or trial_id not in self._ot_trials:
            return
        ot_trial = self._ot_trials[trial_id]
        value = None if result is None else result.get(self.metric)
        finite = isinstance(value, (int, float)) and math.isfinite(value)
        stored = compat.study_storage(self._ot_study).get_trial(ot_trial._trial_id)
        if error or (result is not None and result.get(FINISHED) and not finite):
            state, value = optuna.trial.TrialState.FAIL, None
        elif result is None or not result.get(FINISHED):
            state, value = optuna.trial.TrialState.PRUNED, None
            # its last epoch reaches Ray as the final result, not as an intermediate one: report it, or a
            # trial stopped at its first rung would enter TPE with no value at all
            step = None if result is None else _step(result)
            if finite and isinstance(step, int) and step not in stored.intermediate_values:
                ot_trial.report(result[self.metric], step)
        else:
            state = optuna.trial.TrialState.COMPLETE
        if not stored.state.is_finished():  # told before an interruption, rerun on --resume: the journal has it
            self._ot_study.tell(ot_trial, value, state=state)
        self._completed_trials.add(trial_id)

    def __init__(self, *args, prior: list[optuna.trial.FrozenTrial] | None = None, **kwargs):
        self._prior = prior or []  # earlier runs' trials (search/warm.py), told once when the study is made
        super().__init__(*args, **kwargs)

    def _setup_study(self, mode):
        super()._setup_study(mode)
        if self._prior and not any(FROM_RUN in t.user_attrs for t in self._ot_study.get_trials(deepcopy=False)):
            self._ot_study.add_trials(self._prior)

    # The journal a resumed search writes to, set by the resume (tuner.run_search): Ray pickled this searcher
    # with the journal's absolute path, so a run folder moved or copied since would go on writing the study
    # of the folder it came from.
    journal_path: Path | None = None

    def restore(self, checkpoint_path: str) -> None:
        """On --resume. The study is read from `journal_path` where the resume set one. A search killed hard
        (kill -9) may have asked Optuna for a trial after Ray last saved this searcher: the journal has it,
        running, and Ray will never run it. Marked failed, with why, so the stored study holds no trial that
        runs forever."""
        moved_to = self.journal_path
        super().restore(checkpoint_path)  # the pickled __dict__: the study, its storage, the old journal_path
        if moved_to is not None and isinstance(compat.study_storage(self._ot_study), JournalStorage):
            # One storage object behind the study, its trials and self._storage; unpickled, it has read nothing
            # yet (JournalStorage.__setstate__), so its next read replays the new file from the start.
            compat.repoint_journal(self._ot_study, moved_to)
            self.journal_path = moved_to
        storage, known = compat.study_storage(self._ot_study), {compat.trial_id(t) for t in self._ot_trials.values()}
        for frozen in self._ot_study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)):
            if compat.trial_id(frozen) not in known:
                storage.set_trial_user_attr(compat.trial_id(frozen), LOST,
                                            "asked just before the search was killed; never run")
                storage.set_trial_state_values(compat.trial_id(frozen), optuna.trial.TrialState.FAIL)

    def on_trial_result(self, trial_id: str, result: dict) -> None:
        value = result.get(self.metric)
        if isinstance(value, (int, float)) and math.isfinite(value):  # NaN never reaches Optuna
            # Ray's OptunaSearch steps by training_iteration; ours by the epoch (_step). A restarted
            # trial's repeated epochs are ignored by Optuna: their first values stand.
            super().on_trial_result(trial_id, {**result, "training_iteration": _step(result)})

    @property
    def study(self) -> optuna.Study:
        return self._ot_study


def make_searcher(seed: int, warm_start: list[dict[str, Any]], metric: str, mode: str,
                  trials: int, study: Path | None = None,
                  prior: list[optuna.trial.FrozenTrial] | None = None, concurrency: int = 1) -> HonestOptunaSearch:
    """TPE seeded by `seed`, learning from `metric`; the warm-start points (the hand-tuned baseline and
    its variants) are evaluated first, then random draws (a fifth of the trials, at least 3), then TPE.
    The space comes from the Tuner's param_space (see `to_tune`). With `study`, the Optuna study is
    kept in that journal file (see `journal`); `prior` trials (--warm-start-from) are told first, and
    count towards the random start like any other."""
    startup = len(warm_start) + max(3, trials // 5)
    # Many trials at once (8 per GPU): TPE would propose near-copies of the same point to all of them;
    # the constant liar counts running trials as bad results, which spreads the proposals.
    sampler = optuna.samplers.TPESampler(seed=seed, n_startup_trials=startup, constant_liar=concurrency > 2)
    return HonestOptunaSearch(sampler=sampler, points_to_evaluate=warm_start or None, metric=metric, mode=mode,
                              study_name=STUDY_NAME, storage=journal(study) if study is not None else None,
                              prior=prior)
