"""`--scheduler screen`: ASHA whose first rung waits for the first trials. Driven here the way Ray's
controller drives a scheduler (results in, PAUSE/CONTINUE/STOP out, stop_trial on paused trials,
choose_trial_to_run for the next slot), with stand-in trials; tests/test_search.py runs it in Ray."""

from __future__ import annotations

import pandas as pd
import pytest
from ray.tune.schedulers import TrialScheduler
from ray.tune.search import Searcher

from search import schedulers
from search.experiments import shapes
from search.plan import Hardware, make_plan
from search.schedulers.screening import ParkingLimiter, ScreeningASHA

CONTINUE, PAUSE, STOP = TrialScheduler.CONTINUE, TrialScheduler.PAUSE, TrialScheduler.STOP


class Trial:
    def __init__(self, trial_id: str):
        self.trial_id, self.status, self.is_saving = trial_id, "PENDING", False


class Controller:
    """What the scheduler asks of Ray's TuneController: the trials, and stopping one."""

    def __init__(self, scheduler: ScreeningASHA):
        self.scheduler, self.trials = scheduler, []
        self.search_alg = self  # Ray's SearchGenerator: is_finished once num_samples trials exist
        self.finished = False

    def is_finished(self) -> bool:
        return self.finished

    def add(self, trial_id: str) -> Trial:
        trial = Trial(trial_id)
        self.trials.append(trial)
        self.scheduler.on_trial_add(self, trial)
        return trial

    def get_trials(self) -> list[Trial]:
        return self.trials

    def stop_trial(self, trial: Trial) -> None:  # as Ray does for a paused trial
        self.scheduler.on_trial_remove(self, trial)
        trial.status = "TERMINATED"

    def report(self, trial: Trial, epoch: int, acc: float) -> str:
        trial.status = "RUNNING"
        action = self.scheduler.on_trial_result(self, trial, {"training_iteration": epoch, "acc": acc})
        trial.status = {PAUSE: "PAUSED", STOP: "TERMINATED"}.get(action, "RUNNING")
        return action


def screening(screen: int = 3) -> tuple[ScreeningASHA, Controller]:
    scheduler = ScreeningASHA(screen, time_attr="training_iteration", max_t=8, metric="acc", mode="max",
                              grace_period=2, reduction_factor=2)
    return scheduler, Controller(scheduler)


def test_the_first_trials_wait_at_the_first_rung_then_the_best_half_go_on_best_first():
    scheduler, ray = screening(screen=3)
    a, b, c = ray.add("a"), ray.add("b"), ray.add("c")
    assert ray.report(a, 1, 0.1) == CONTINUE  # before the rung
    assert ray.report(a, 2, 0.3) == PAUSE and ray.report(b, 2, 0.5) == PAUSE
    assert scheduler.parked == {"a", "b"}
    assert ray.scheduler.choose_trial_to_run(ray) is c  # the waiting ones never run; the new one does
    assert ray.report(c, 2, 0.1) == STOP  # the third decides: median 0.3, so c (0.1) stops, a and b go on
    assert a.status == b.status == "PAUSED"  # promoted, to be resumed
    assert ray.scheduler.choose_trial_to_run(ray) is b  # best first, before any new trial
    b.status = "RUNNING"
    ray.add("d")
    assert ray.scheduler.choose_trial_to_run(ray) is a and scheduler.parked == set()
    a.status = "RUNNING"
    assert ray.report(a, 3, 0.35) == CONTINUE and ray.report(b, 4, 0.6) == CONTINUE  # past the rung: plain ASHA


def test_a_loser_still_paused_is_stopped_when_the_last_one_arrives():
    scheduler, ray = screening(screen=3)
    a, b, c = ray.add("a"), ray.add("b"), ray.add("c")
    assert ray.report(a, 2, 0.05) == PAUSE and ray.report(b, 2, 0.5) == PAUSE
    assert ray.report(c, 2, 0.4) == CONTINUE  # c decides, above the median (0.4)
    assert a.status == "TERMINATED" and "a" not in scheduler.parked and scheduler.to_resume == [b]


def test_after_the_screening_later_trials_meet_the_rung_asynchronously():
    scheduler, ray = screening(screen=2)
    a, b = ray.add("a"), ray.add("b")
    assert ray.report(a, 2, 0.3) == PAUSE and ray.report(b, 2, 0.2) == STOP  # b decides: the best half is a
    assert scheduler.screened and scheduler.to_resume == [a]
    late_bad, late_good = ray.add("e"), ray.add("f")
    assert ray.report(late_bad, 2, 0.01) == STOP and ray.report(late_good, 2, 0.9) == CONTINUE  # no pause


def test_a_trial_that_ends_before_the_rung_is_not_waited_for_and_one_ray_retries_is():
    """It failed for good (or its own patience ended it): the others are judged at the next step.
    One that Ray retries comes back through on_trial_add, and is waited for."""
    scheduler, ray = screening(screen=3)
    a, b, c = ray.add("a"), ray.add("b"), ray.add("c")
    assert ray.report(a, 2, 0.3) == PAUSE and ray.report(b, 2, 0.1) == PAUSE
    c.status = "ERROR"
    scheduler.on_trial_error(ray, c)  # Ray retries it: error, then the trial is added again
    scheduler.on_trial_add(ray, c)
    c.status = "PENDING"
    assert scheduler.choose_trial_to_run(ray) is c and not scheduler.screened
    c.status = "ERROR"
    scheduler.on_trial_error(ray, c)  # for good this time
    assert scheduler.choose_trial_to_run(ray) is a and scheduler.screened and b.status == "TERMINATED"


def test_a_waiting_trial_that_failed_gets_its_verdict_when_it_reports_again():
    scheduler, ray = screening(screen=3)
    a, b, c = ray.add("a"), ray.add("b"), ray.add("c")
    assert ray.report(a, 2, 0.05) == PAUSE
    scheduler.on_trial_error(ray, a)  # its pause failed; Ray retries it from its checkpoint
    scheduler.on_trial_add(ray, a)
    assert ray.report(b, 2, 0.5) == PAUSE and ray.report(c, 2, 0.4) == CONTINUE  # verdict: median 0.4
    assert scheduler.to_resume == [b] and ray.report(a, 3, 0.06) == STOP  # a, below it, stops on its next result


def test_when_no_more_trials_will_come_the_waiting_ones_are_judged():
    """A grown search with fewer new trials than the screening: once nothing runs and the searcher is
    done, the trials waiting at the rung are judged instead of waiting forever."""
    scheduler, ray = screening(screen=3)
    a, b = ray.add("a"), ray.add("b")
    assert ray.report(a, 2, 0.3) == PAUSE and ray.report(b, 2, 0.1) == PAUSE
    assert scheduler.choose_trial_to_run(ray) is None and not scheduler.screened  # more may come: wait
    ray.finished = True
    assert scheduler.choose_trial_to_run(ray) is a and b.status == "TERMINATED"


def test_the_limiter_does_not_count_parked_trials_nor_admit_one_beyond_the_screening():
    class Draws(Searcher):
        def suggest(self, trial_id):
            return {"lr": 0.1}

        def on_trial_complete(self, trial_id, result=None, error=False):
            pass

    scheduler, ray = screening(screen=3)
    limiter = ParkingLimiter(Draws(metric="acc", mode="max"), max_concurrent=2, scheduler=scheduler)
    assert limiter.suggest("a") and limiter.suggest("b") and limiter.suggest("c") is None
    a, b = ray.add("a"), ray.add("b")
    assert ray.report(a, 2, 0.3) == PAUSE  # a waits at the rung: its slot goes to a new trial
    assert limiter.suggest("c") and limiter.suggest("d") is None
    ray.add("c")
    assert ray.report(b, 2, 0.1) == PAUSE  # a slot is free, but 3 trials are all the screening takes
    assert limiter.suggest("d") is None
    assert ray.report(ray.trials[2], 2, 0.2) == CONTINUE  # the verdict: a resumes, c goes on, b stops
    limiter.on_trial_complete("b")
    assert scheduler.parked == set() and limiter.suggest("d") is None  # a and c hold both slots
    limiter.on_trial_complete("c")
    assert limiter.suggest("d") and limiter.suggest("e") is None
    restored = ParkingLimiter(Draws(metric="acc", mode="max"), max_concurrent=2, scheduler=screening()[0])
    restored.set_state(limiter.get_state())  # a resumed search: the counts come back, the link stays
    assert restored.live_trials == {"a", "d"} and restored.scheduler is not scheduler


def test_the_registry_entry_sizes_the_screening_and_carries_it_over():
    p = make_plan(shapes.EXPERIMENT, Hardware(cpus=2, gpus=0), trials=None, max_epochs=None, time_budget_min=None,
                  concurrency=None, cpus_per_trial=None, gpus_per_trial=None, smoke=False, scheduler="screen")
    screen = schedulers.get("screen")
    # a quarter of ASHA's expected epochs (16 trials of up to 10, rungs at 4 and 8, 2 at once) spent at epoch 4
    expected = round(0.25 * schedulers.get("asha").search_epochs(p) / p.grace_epochs)
    assert screen.screen(p) == expected == 7 and f"first {expected} trials" in screen.describe(p)
    p.trials, p.grace_epochs = 2, 2
    assert screen.screen(p) == 2  # never more than the search has
    built = screen.build(p, "acc", "max")
    assert isinstance(built, ScreeningASHA) and screen.checkpoints_every_epoch
    history = pd.DataFrame({"trial_id": ["a", "a", "a", "a", "b", "b"], "epoch": [1, 2, 3, 4, 1, 2],
                            "acc": [0.1, 0.2, 0.3, 0.4, 0.1, 0.3]})
    screen.carry_over(built, history, "acc", "max")  # a resumed search: a went on, b was paused at the rung
    assert built.screened and set(built.first_rung()[1]) == {"a", "b"} and built.unjudged == {"b"}
    b = Trial("b")
    built.on_trial_add(None, b)  # Ray brings it back pending and starts it: judged on its next epoch
    assert built.on_trial_result(None, b, {"epoch": 3, "training_iteration": 3, "acc": 0.35}) == CONTINUE  # 0.3 >= 0.25
    fresh = screen.build(p, "acc", "max")
    screen.carry_over(fresh, history.iloc[:0], "acc", "max")
    assert not fresh.screened  # a new search screens


@pytest.mark.parametrize("name", ["asha", "fifo"])
def test_other_schedulers_keep_rays_own_concurrency_limit(name):
    searcher = object()
    assert schedulers.get(name).limit(None, searcher, 2) == (searcher, 2)


def test_the_tuner_wires_the_limiter_to_the_schedulers_parked_trials(tmp_path):
    from search import run
    from search.tuner import new_tuner

    p = make_plan(shapes.EXPERIMENT, Hardware(cpus=2, gpus=0), trials=4, max_epochs=2, time_budget_min=None,
                  concurrency=None, cpus_per_trial=None, gpus_per_trial=None, smoke=True, scheduler="screen")
    space = run.searched_space(shapes.EXPERIMENT, {})
    tuner = new_tuner(shapes.EXPERIMENT, lambda config: None, {**shapes.DEFAULTS, "epochs": 2, "seed": 0}, space,
                      p, schedulers.of_plan(p), 0, "x", str(tmp_path), [], tmp_path)
    config = tuner._local_tuner._tune_config
    assert isinstance(config.search_alg, ParkingLimiter) and config.max_concurrent_trials is None
    assert config.search_alg.scheduler is config.scheduler and config.search_alg.max_concurrent == p.concurrency


@pytest.mark.slow
def test_in_ray_no_trial_passes_the_first_rung_before_the_screened_ones_reach_it(tmp_path, generated_cache):
    """A real search of 3 trials (2 at once): all report epoch 1 before any reports epoch 2,
    the paused ones resume from their epoch-1 state (no epoch twice), and every trial ends."""
    from search import cli, run

    assert cli.run(run.main, ["shapes", "--smoke", "--scheduler", "screen", "--trials", "3", "--max-epochs", "2",
                              "--grace-epochs", "1", "--no-retrain", "--results", str(tmp_path), "--name", "s"]) == 0
    history = pd.read_csv(tmp_path / "shapes" / "s" / "history.csv")
    assert not history.duplicated(["trial_id", "epoch"]).any()
    rung = history[history["epoch"] == 1]["timestamp"].sort_values()
    assert (history[history["epoch"] == 2]["timestamp"] >= rung.iloc[2]).all()  # (timestamps in whole seconds)
    assert (history.groupby("trial_id")["epoch"].max() == 1).any()  # the screening stopped one
    trials = pd.read_csv(tmp_path / "shapes" / "s" / "trials.csv")
    assert set(trials["status"]) <= {"completed", "stopped"} and len(trials) == 3


def test_the_status_line_counts_paused_trials_apart(tmp_path):
    from search.progress import Progress

    progress = Progress(tmp_path, tmp_path, {"epochs": 10}, ["lr"], "val_acc", "max", 16, schedulers.get("screen"),
                        print_fn=lambda *a: None)
    trials = [Trial(str(i)) for i in range(4)]
    for trial, status in zip(trials, ("RUNNING", "RUNNING", "PAUSED", "PAUSED"), strict=True):
        trial.status = status
    assert "2 running, 2 paused;" in progress.status_line(trials)
    assert "paused" not in progress.status_line(trials[:2])
