"""The Optuna searcher without Ray: what a resume restores, and where it writes."""

from __future__ import annotations

import shutil

import optuna

from search.experiment import Float
from search.protocol import FINISHED
from search.searcher import STUDY_NAME, journal, make_searcher, to_tune
from search.tuner import STUDY_FILE


def _searcher(run_dir):
    searcher = make_searcher(0, [], "val_acc", "max", trials=8, study=run_dir / STUDY_FILE)
    searcher.set_search_properties("val_acc", "max", to_tune({"dropout": Float(0.0, 0.7)}))
    return searcher


def _trials(run_dir) -> list[optuna.trial.FrozenTrial]:
    return optuna.load_study(study_name=STUDY_NAME, storage=journal(run_dir / STUDY_FILE)).trials


def test_a_moved_run_folder_resumes_into_its_own_study_not_the_one_it_came_from(tmp_path):
    """Ray pickles the searcher with the journal's absolute path: a run folder moved (or copied) and
    resumed would go on telling the study of the folder it came from."""
    first = tmp_path / "first"
    first.mkdir()
    searcher = _searcher(first)
    searcher.suggest("t1")
    searcher.on_trial_complete("t1", {"val_acc": 0.5, FINISHED: True})
    searcher.save(str(first / "searcher.pkl"))
    moved = tmp_path / "moved"
    shutil.copytree(first, moved)

    resumed = _searcher(first)  # as Ray unpickles it from the moved folder: made for the first folder
    resumed.journal_path = moved / STUDY_FILE  # what tuner.run_search sets on --resume
    resumed.restore(str(moved / "searcher.pkl"))
    resumed.suggest("t2")
    resumed.on_trial_complete("t2", {"val_acc": 0.6, FINISHED: True})

    assert [t.value for t in _trials(moved)] == [0.5, 0.6]
    assert [t.value for t in _trials(first)] == [0.5]  # the folder it came from is left as it was
    assert resumed.journal_path == moved / STUDY_FILE  # and stays set for the next save and resume
