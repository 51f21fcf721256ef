"""Each run has its own folder under --storage, recorded in run.json, and a --storage run killed hard is
repaired before Ray restores it as a run in its own folder is."""

from __future__ import annotations

from pathlib import Path

from search import tuner
from search.ray_state import STAGING_RECORD


def test_every_run_gets_its_own_storage_folder(tmp_path):
    storage = str(tmp_path / "shared")
    a = tuner.storage_folder("shapes", "a")
    a_2 = tuner.storage_folder("shapes", "a-2")
    assert a.startswith("shapes-a-") and a != tuner.storage_folder("shapes", "a")  # --overwrite, or another root
    # run a grown to round 2 and a run named a-2: two folders (they were both shapes-a-2)
    grown = tuner.tune_dirs(tmp_path / "r1" / "shapes" / "a", storage, 2, a)
    other = tuner.tune_dirs(tmp_path / "r1" / "shapes" / "a-2", storage, 1, a_2)
    assert len(set(grown + other)) == 3
    # one --name under two --results roots
    assert (tuner.tune_location(tmp_path / "r1" / "shapes" / "a", storage, 1, a)
            != tuner.tune_location(tmp_path / "r2" / "shapes" / "a", storage, 1, tuner.storage_folder("shapes", "a")))
    # a run from before the folder was recorded keeps its folder
    assert tuner.tune_location(tmp_path / "shapes" / "old", storage)[1] == "shapes-old"


def test_a_storage_run_killed_hard_is_repaired_before_it_resumes(tmp_path):
    """A kill -9 during Ray's copy of its state into a --storage folder (a cluster's shared file system)
    leaves its files cut short: the staging copy replaces them, as for a run whose trials live in tune/."""
    run_dir, staging = tmp_path / "results" / "shapes" / "r", tmp_path / "ray-tmp" / "staging"
    tune_dir = tmp_path / "shared" / "shapes-r-0123abcd"
    for folder in (run_dir, staging, tune_dir):
        folder.mkdir(parents=True)
    state = "experiment_state-2026-12-07_10-00-00.json"
    (staging / state).write_text('{"trial_data": []}')
    (tune_dir / state).write_text("")  # emptied by the kill mid-copy
    (run_dir / STAGING_RECORD).write_text(str(staging))
    said = []
    for uri in (str(tune_dir), f"file://{tune_dir}"):
        (tune_dir / state).write_text("")
        tuner.repair_saved_state(uri, run_dir, said.append)
        assert (tune_dir / state).read_text() == '{"trial_data": []}'
    assert len(said) == 2 and all(state in line for line in said)
    # an object store writes each object whole: nothing to repair there, and no local folder to read
    assert tuner.local_folder("s3://bucket/p/shapes-r") is None
    assert tuner.local_folder(f"file://{tune_dir}") == Path(tune_dir)
