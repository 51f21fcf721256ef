"""ASHA with a synchronous first rung: the search's first N trials are screened together.

Asynchronous successive halving (Ray's ASHAScheduler) judges a trial at a rung against the trials
that reached it before: the first ones there have nothing to be compared with and go on unjudged.
On a small budget that is most of it. Measured on the real shapes data (3 search seeds, 80 epochs,
2 trials at once): ASHA's first 40 epochs ran 2 or 3 trials to their end, exactly as random search
did, while the trial best at epoch 4 was the best after 10 in each seed's 8 random configs.
Synchronous successive halving compares them all first; this does that at the first rung only:

- each of the first `screen` trials is paused (its state checkpointed) when it reaches the first
  rung, and its CPU goes to the next of them; no later trial starts before the verdict (it would
  hold a CPU the promoted ones need: measured, such a trial ran to its end before the best resumed);
- once `screen` trials have reached it (or ended before it), the best 1/reduction_factor of them
  resume, the best first, before any new trial starts, and the others stop;
- every later trial, and every later rung, is plain ASHA;
- a resumed or grown search does not screen again: Ray restarts its paused trials, and each of them
  is judged at its next epoch against every value at the rung (`resume_from`).

Paused trials must not count against the searcher's concurrency limit, or no new trial would start
while they wait: `ParkingLimiter` is Ray's ConcurrencyLimiter, less the trials parked here, and
closed to trials beyond the screening until its verdict.
"""

from __future__ import annotations

import copy

from ray.tune.experiment import Trial
from ray.tune.schedulers import ASHAScheduler, TrialScheduler
from ray.tune.search import ConcurrencyLimiter, Searcher

from search import compat


class ScreeningASHA(ASHAScheduler):
    def __init__(self, screen: int, **kwargs):
        super().__init__(**kwargs)
        self.screen = screen  # trials compared together at the first rung
        self.waiting: dict[str, Trial] = {}  # paused at the first rung, awaiting the verdict, by trial id
        self.to_resume: list[Trial] = []  # promoted while paused: they run before any new trial, best first
        self.lost: set[str] = set()  # screened trials that ended before the rung (failed, or their own patience)
        # at the rung without a verdict (a pause that failed, a resumed search's trials): judged on their next result
        self.unjudged: set[str] = set()
        self.screened = False
        self.added: set[str] = set()  # every trial seen (a retried one once)

    @property
    def parked(self) -> set[str]:
        """The ids of the trials waiting at the rung: the limiter does not count them."""
        return set(self.waiting)

    def first_rung(self) -> tuple[float, dict[str, float]]:
        """(epoch, {trial id: value signed so that larger is better}); Ray lists rungs last first."""
        return compat.asha_first_rung(self)

    def resume_from(self, history) -> None:
        """A resumed or grown search (history.csv's rows, carried over into the rungs first) does not
        screen again: Ray brings its paused trials back as pending, and starts them. Those that had
        stopped at the rung are judged on their next result, against every value recorded there."""
        if history.empty:
            return
        self.screened = True
        epoch, recorded = self.first_rung()
        last = history.groupby("trial_id")["epoch"].max()
        self.unjudged = {str(t) for t, e in last.items() if e == epoch and str(t) in recorded}

    def admits_new_trial(self) -> bool:
        """No trial beyond the screened ones starts before the verdict."""
        return self.screened or len(self.added) < self.screen

    def on_trial_add(self, tune_controller, trial: Trial) -> None:
        super().on_trial_add(tune_controller, trial)
        self.added.add(trial.trial_id)
        self.lost.discard(trial.trial_id)  # a failed trial Ray retries comes back through here

    def on_trial_result(self, tune_controller, trial: Trial, result: dict) -> str:
        if self._time_attr not in result or self._metric not in result:
            return super().on_trial_result(tune_controller, trial, result)
        epoch, recorded = self.first_rung()
        if trial.trial_id in self.unjudged and result[self._time_attr] > epoch and self.screened:
            self.unjudged.discard(trial.trial_id)
            if recorded[trial.trial_id] < compat.asha_cutoff(self, recorded):
                self._num_stopped += 1
                return TrialScheduler.STOP
        if self.screened or result[self._time_attr] >= self._max_t:  # (a rung at the last epoch: nothing to wait for)
            return super().on_trial_result(tune_controller, trial, result)
        if result[self._time_attr] < epoch:
            return TrialScheduler.CONTINUE
        # (a trial Ray retried may reach the rung twice: its first value stands)
        recorded.setdefault(trial.trial_id, self._metric_op * result[self._metric])
        if len(recorded) + len(self.lost) < self.screen:
            self.waiting[trial.trial_id] = trial
            return TrialScheduler.PAUSE
        return self._judge(tune_controller, current=trial)

    def _judge(self, tune_controller, current: Trial | None) -> str:
        """The screening's verdict: the best 1/rf go on (at least one), the others stop."""
        self.screened = True
        _, recorded = self.first_rung()
        cutoff = compat.asha_cutoff(self, recorded)
        # no longer waiting, a promoted trial counts against the limit again at once, so no new trial
        # gets ahead of it
        waiting, self.waiting = self.waiting, {}
        for trial_id, trial in sorted(waiting.items(), key=lambda kv: -recorded[kv[0]]):
            if recorded[trial_id] >= cutoff:
                self.to_resume.append(trial)
            else:
                self._num_stopped += 1
                if trial.status == Trial.PAUSED or trial.is_saving:
                    tune_controller.stop_trial(trial)
        if current is None or recorded[current.trial_id] >= cutoff:
            return TrialScheduler.CONTINUE
        self._num_stopped += 1
        return TrialScheduler.STOP

    def _ended(self, trial: Trial) -> None:
        """A trial ended, or failed (Ray may retry it: it then comes back through on_trial_add). One
        that was waiting at the rung gets its verdict if it reports again; one that ended before the
        rung during the screening is not waited for (choose_trial_to_run judges once the rest are in)."""
        if self.waiting.pop(trial.trial_id, None) is not None:
            self.unjudged.add(trial.trial_id)
        elif not self.screened and trial.trial_id not in self.first_rung()[1]:
            self.lost.add(trial.trial_id)

    def on_trial_complete(self, tune_controller, trial: Trial, result: dict) -> None:
        self._ended(trial)
        if trial.trial_id in self._trial_info:
            super().on_trial_complete(tune_controller, trial, result)

    def on_trial_error(self, tune_controller, trial: Trial) -> None:
        self._ended(trial)
        super().on_trial_error(tune_controller, trial)

    def on_trial_remove(self, tune_controller, trial: Trial) -> None:
        self._ended(trial)
        if trial.trial_id in self._trial_info:
            super().on_trial_remove(tune_controller, trial)

    def choose_trial_to_run(self, tune_controller) -> Trial | None:
        """The screening's promoted trials first (best first), then new trials, then any other paused
        trial; never one awaiting the verdict. Ray calls this every step: the verdict is given here
        when the screened trials that ended before the rung leave no more to wait for, or when nothing
        runs and the searcher will propose no more (fewer trials than the screening)."""
        trials = tune_controller.get_trials()
        if self.waiting and not self.screened and (
                len(self.first_rung()[1]) + len(self.lost) >= self.screen
                or (_search_finished(tune_controller)
                    and not any(t.status in (Trial.RUNNING, Trial.PENDING) for t in trials))):
            self._judge(tune_controller, current=None)
        self.to_resume = [t for t in self.to_resume if t.status not in (Trial.TERMINATED, Trial.ERROR)]
        for trial in self.to_resume:
            if trial.status == Trial.PAUSED:
                return trial
        for trial in trials:
            if trial.status == Trial.PENDING:
                return trial
        for trial in trials:
            if trial.status == Trial.PAUSED and trial.trial_id not in self.waiting:
                return trial
        return None


def _search_finished(tune_controller) -> bool:
    """Whether the searcher will propose no more trials (Ray's SearchGenerator reached num_samples)."""
    search_alg = getattr(tune_controller, "search_alg", None)
    return search_alg is not None and search_alg.is_finished()


class ParkingLimiter(ConcurrencyLimiter):
    """At most `max_concurrent` live trials the searcher proposed, not counting those the scheduler
    parked, and none beyond the screened ones before its verdict."""

    def __init__(self, searcher: Searcher, max_concurrent: int, scheduler: ScreeningASHA):
        super().__init__(searcher, max_concurrent=max_concurrent)
        self.scheduler = scheduler

    def suggest(self, trial_id: str) -> dict | None:
        if not self._limit_concurrency:  # the searcher limits itself (it cannot tell parked trials apart)
            return self.searcher.suggest(trial_id)
        if (not self.scheduler.admits_new_trial()
                or len(self.live_trials - self.scheduler.parked) >= self.max_concurrent):
            return None
        suggestion = self.searcher.suggest(trial_id)
        if suggestion not in (None, Searcher.FINISHED):
            self.live_trials.add(trial_id)
            self.num_unfinished_live_trials += 1
        return suggestion

    def get_state(self) -> dict:
        """ConcurrencyLimiter's state (a deep copy of its fields but the searcher), less the scheduler."""
        return copy.deepcopy({k: v for k, v in self.__dict__.items() if k not in ("searcher", "scheduler")})

    def set_state(self, state: dict) -> None:
        """A resumed search restores the counts, not the link: `scheduler` stays the new one."""
        super().set_state({k: v for k, v in state.items() if k != "scheduler"})


def parking_limiter(search_alg) -> ParkingLimiter | None:
    """The ParkingLimiter inside Ray's wrappers of a searcher (SearchGenerator), if any."""
    while search_alg is not None and not isinstance(search_alg, ParkingLimiter):
        search_alg = getattr(search_alg, "searcher", None)
    return search_alg
