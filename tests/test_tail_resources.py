"""The search's tail: once every trial exists and none is pending, running trials share the idle CPUs."""

from __future__ import annotations

from search import tail_resources as tail


def test_no_sharing_while_trials_are_still_to_come():
    assert tail.tail_threads(["RUNNING", "TERMINATED"], 10, 1, 2) is None  # 8 more to be created
    assert tail.tail_threads(["RUNNING", "PENDING", "TERMINATED"], 3, 1, 2) is None  # one waits for a slot
    assert tail.tail_threads(["RUNNING", "PAUSED", "TERMINATED"], 3, 1, 2) is None  # PBT paused one: it goes on


def test_a_lone_last_trial_takes_every_idle_cpu():
    statuses = ["TERMINATED"] * 9 + ["RUNNING"]
    assert tail.tail_threads(statuses, 10, 1, 2) == 2
    assert tail.tail_threads(statuses, 10, 1, 4) == 4


def test_idle_cpus_are_split_between_the_last_running_trials():
    assert tail.tail_threads(["RUNNING", "RUNNING", "TERMINATED"], 3, 1, 4) == 2
    assert tail.tail_threads(["RUNNING", "RUNNING", "RUNNING"], 3, 1, 4) is None  # 4 / 3 rounds down to 1: no gain
    assert tail.tail_threads(["RUNNING", "RUNNING"], 2, 1, 2) is None  # every slot busy
    assert tail.tail_threads(["TERMINATED", "ERROR"], 2, 1, 2) is None  # nothing running


def test_the_threads_file_round_trips_and_bad_content_means_no_change(tmp_path):
    assert tail.read_threads(tmp_path) is None
    tail.write_threads(tmp_path, 2)
    assert tail.read_threads(tmp_path) == 2
    for junk in ("", "{", '{"threads": 0}', '{"threads": "2"}', "[2]"):
        (tmp_path / tail.THREADS_FILE).write_text(junk)
        assert tail.read_threads(tmp_path) is None, junk
    tail.clear(tmp_path)
    assert not (tmp_path / tail.THREADS_FILE).exists()
