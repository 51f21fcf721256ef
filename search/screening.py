"""ASHA with a synchronous first rung: the search's first N trials are screened together.

Asynchronous successive halving (Ray's ASHAScheduler) judges a trial at a rung against the trials
that reached it before: the first ones there have nothing to be compared with and go on unjudged.
On a small budget that is most of it. Measured on the real shapes data (3 search seeds, 80 epochs,
2 trials at once): ASHA's first 40 epochs ran 2 or 3 trials to their end, exactly as random search
did, while the trial best at epoch 4 was the best after 10 in each seed's 8 random configs.
Synchronous successive halving compares them all first; this does that at the first rung only:

- each of the first `screen` trials is paused (its state checkpointed) when it reaches the first
  rung, and its CPU goes to the next trial;
- once `screen` trials have reached it (or ended before it), the best 1/reduction_factor of them
  resume, the best first, before any new trial starts, and the others stop;
- every later trial, and every later rung, is plain ASHA.

Paused trials must not count against the searcher's concurrency limit, or no new trial would start
while they wait: `ParkingLimiter` is Ray's ConcurrencyLimiter, less the trials parked here.
"""

from __future__ import annotations

from ray.tune.experiment import Trial
from ray.tune.schedulers import ASHAScheduler, TrialScheduler
from ray.tune.search import ConcurrencyLimiter, Searcher


class ScreeningASHA(ASHAScheduler):
    def __init__(self, screen: int, **kwargs):
        super().__init__(**kwargs)
        self.screen = screen  # trials compared together at the first rung
        self.parked: set[str] = set()  # trial ids paused at the first rung, not yet resumed (read by the limiter)
        self.waiting: dict[str, Trial] = {}  # paused there, awaiting the screening's verdict
        self.to_resume: list[Trial] = []  # promoted while paused: they run before any new trial, best first
        self.lost = 0  # screened trials that ended before the rung (failed, or their own patience)
        self.screened = False

    def first_rung(self) -> tuple[float, dict[str, float]]:
        """(epoch, {trial id: value signed so that larger is better}); Ray lists rungs last first."""
        return self._brackets[0]._rungs[-1]

    def mark_screened_if_done(self) -> None:
        """After a resumed search's history is carried over (schedulers.Screen.carry_over)."""
        self.screened = self.screened or len(self.first_rung()[1]) >= self.screen

    def on_trial_result(self, tune_controller, trial: Trial, result: dict) -> str:
        if (self.screened or self._time_attr not in result or self._metric not in result
                or result[self._time_attr] >= self._max_t):  # (a first rung at the last epoch: nothing to wait for)
            return super().on_trial_result(tune_controller, trial, result)
        milestone, recorded = self.first_rung()
        if result[self._time_attr] < milestone:
            return TrialScheduler.CONTINUE
        # (a trial resumed after an interruption may be past the rung already: its first value there,
        # carried over from history.csv, stands)
        recorded.setdefault(trial.trial_id, self._metric_op * result[self._metric])
        if len(recorded) + self.lost < self.screen:
            self.waiting[trial.trial_id] = trial
            self.parked.add(trial.trial_id)
            return TrialScheduler.PAUSE
        return self._judge(tune_controller, current=trial)

    def _judge(self, tune_controller, current: Trial | None) -> str:
        """The screening's verdict: the best 1/rf go on (at least one), the others stop."""
        self.screened = True
        _, recorded = self.first_rung()
        cutoff = self._brackets[0].cutoff(recorded)
        for trial_id, trial in sorted(self.waiting.items(), key=lambda kv: -recorded[kv[0]]):
            if recorded[trial_id] >= cutoff:
                self.to_resume.append(trial)
            else:
                self.parked.discard(trial_id)
                self._num_stopped += 1
                if trial.status == Trial.PAUSED or trial.is_saving:
                    tune_controller.stop_trial(trial)
        self.waiting.clear()
        if current is None or recorded[current.trial_id] >= cutoff:
            return TrialScheduler.CONTINUE
        self._num_stopped += 1
        return TrialScheduler.STOP

    def _ended(self, tune_controller, trial: Trial) -> None:
        """A trial ended other than by this scheduler's verdict: one not yet at the first rung during
        the screening will never get there, so it is not waited for."""
        self.parked.discard(trial.trial_id)
        self.waiting.pop(trial.trial_id, None)
        if not self.screened and trial.trial_id not in self.first_rung()[1]:
            self.lost += 1
            if self.waiting and len(self.first_rung()[1]) + self.lost >= self.screen:
                self._judge(tune_controller, current=None)

    def on_trial_complete(self, tune_controller, trial: Trial, result: dict) -> None:
        self._ended(tune_controller, trial)
        if trial.trial_id in self._trial_info:
            super().on_trial_complete(tune_controller, trial, result)

    def on_trial_error(self, tune_controller, trial: Trial) -> None:
        self._ended(tune_controller, trial)
        super().on_trial_error(tune_controller, trial)

    def on_trial_remove(self, tune_controller, trial: Trial) -> None:
        self._ended(tune_controller, trial)
        if trial.trial_id in self._trial_info:
            super().on_trial_remove(tune_controller, trial)

    def choose_trial_to_run(self, tune_controller) -> Trial | None:
        """The screening's promoted trials first (best first), then new trials, then any other paused
        trial (one restored after an interruption); never one still awaiting the verdict."""
        trials = tune_controller.get_trials()
        if (self.waiting and not self.screened and _search_finished(tune_controller)
                and not any(t.status in (Trial.RUNNING, Trial.PENDING) for t in trials)):
            # fewer trials than the screening (a grown search, failures before the rung): no more will come
            self._judge(tune_controller, current=None)
        self.to_resume = [t for t in self.to_resume if t.status not in (Trial.TERMINATED, Trial.ERROR)]
        for trial in self.to_resume:
            if trial.status == Trial.PAUSED:
                self.parked.discard(trial.trial_id)
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
    """At most `max_concurrent` live trials the searcher proposed, not counting those `parked`."""

    def __init__(self, searcher: Searcher, max_concurrent: int, parked: set[str]):
        super().__init__(searcher, max_concurrent=max_concurrent)
        self.parked = parked

    def suggest(self, trial_id: str) -> dict | None:
        if len(self.live_trials - self.parked) >= self.max_concurrent:
            return None
        suggestion = self.searcher.suggest(trial_id)
        if suggestion not in (None, Searcher.FINISHED):
            self.live_trials.add(trial_id)
            self.num_unfinished_live_trials += 1
        return suggestion

    def get_state(self) -> dict:
        state = super().get_state()
        state.pop("parked", None)
        return state

    def set_state(self, state: dict) -> None:
        """A resumed search restores the counts, not the link: `parked` stays the new scheduler's."""
        super().set_state({k: v for k, v in state.items() if k != "parked"})


def parking_limiter(search_alg) -> ParkingLimiter | None:
    """The ParkingLimiter inside Ray's wrappers of a searcher (SearchGenerator), if any."""
    while search_alg is not None and not isinstance(search_alg, ParkingLimiter):
        search_alg = getattr(search_alg, "searcher", None)
    return search_alg
