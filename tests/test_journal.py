"""A journal torn by a write cut short (then glued to by later appends) is cut back to its whole records
before anything reads it, the rest kept beside it; Optuna then reads the study as it stood."""

from __future__ import annotations

import optuna
import pytest

from search import journal as study_journal
from search.searcher import STUDY_NAME, journal


def study_of(path, trials=4):
    study = optuna.create_study(study_name=STUDY_NAME, storage=journal(path))
    for i in range(trials):
        study.add_trial(optuna.trial.create_trial(params={"x": float(i)},
                                                  distributions={"x": optuna.distributions.FloatDistribution(0, 9)},
                                                  value=float(i)))
    return path.read_bytes()


def load(path):
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    storage = JournalStorage(JournalFileBackend(str(path)))  # Optuna's own reader, as optuna-dashboard opens it
    return optuna.load_study(study_name=STUDY_NAME, storage=storage).trials


@pytest.mark.parametrize("cut_from_end", [1, 7, 40])
def test_a_torn_line_glued_to_by_later_appends_is_cut_and_kept(tmp_path, cut_from_end, capsys):
    path = tmp_path / "optuna.journal"
    whole = study_of(path)
    lines = whole.splitlines(keepends=True)
    torn = whole[:-cut_from_end]  # the last record cut short...
    later = b'{"op_code":5,"worker_id":"w","trial_id":3,"state":1,"values":[1.0],"datetime_complete":null}\n'
    path.write_bytes(torn + later + later)  # ...the next append glued to it, and one more after
    with pytest.raises(ValueError):  # what --resume and optuna.load_study hit for ever before
        load(path)
    said = study_journal.repair(path)
    assert said and "cut short" in said
    assert path.read_bytes() == b"".join(lines[:-1])  # every whole record, nothing after the tear
    assert [t.value for t in load(path)][:3] == [0.0, 1.0, 2.0]
    cut = list(tmp_path.glob("optuna.journal.cut-*"))
    assert len(cut) == 1 and cut[0].read_bytes() == (torn + later + later)[len(b"".join(lines[:-1])):]
    assert study_journal.repair(path) is None  # whole now


def test_a_whole_journal_is_left_alone_and_opening_one_repairs_it(tmp_path, capsys):
    path = tmp_path / "optuna.journal"
    whole = study_of(path)
    assert study_journal.repair(path) is None and path.read_bytes() == whole
    path.write_bytes(whole + b'{"op_code":4,"worker')  # a kill mid-append
    study = optuna.load_study(study_name=STUDY_NAME, storage=journal(path))  # the project's opener
    assert [t.value for t in study.trials] == [0.0, 1.0, 2.0, 3.0]
    assert path.read_bytes() == whole and "cut short" in capsys.readouterr().err
    assert study_journal.repair(tmp_path / "absent.journal") is None


def study_with_running_trials(path):
    """A study as a stopped search leaves it: one trial done, one cut mid-way (two epochs reported), one
    asked for but never started; the last two still RUNNING in the journal."""
    study = optuna.create_study(study_name=STUDY_NAME, storage=journal(path))
    for reported in ([0.5, 0.4, 0.3], [0.6, 0.5], []):
        trial = study.ask({"x": optuna.distributions.FloatDistribution(0, 9)})
        for epoch, value in enumerate(reported, start=1):
            trial.report(value, epoch)
        if len(reported) == 3:
            study.tell(trial, 0.3)


def test_an_ended_searchs_running_trials_are_stopped_or_lost_in_the_stored_study(tmp_path):
    """optuna.load_study and optuna-dashboard would show them running for ever."""
    from search.searcher import LOST, RAY_TRIAL_ID, STOPPED, settle_running

    path = tmp_path / "optuna.journal"
    study_with_running_trials(path)
    storage = journal(path)
    cut_id = optuna.load_study(study_name=STUDY_NAME, storage=storage).trials[1]._trial_id
    storage.set_trial_user_attr(cut_id, RAY_TRIAL_ID, "ray-b")
    # its third epoch reached trials.csv but not Optuna (the search ended first): told, so it ranks by it
    assert settle_running(path, ended=True, last={"ray-b": (3, 0.45), "ray-z": (1, 0.1)}) == 2
    done, cut, never = load(path)
    assert done.state.name == "COMPLETE" and not {LOST, STOPPED} & set(done.user_attrs)
    assert cut.state.name == "PRUNED" and "stopped after epoch 3" in cut.user_attrs[STOPPED]
    assert cut.intermediate_values == {1: 0.6, 2: 0.5, 3: 0.45}
    assert never.state.name == "FAIL" and "ended before it ran" in never.user_attrs[LOST]
    assert settle_running(path, ended=True) == 0  # nothing left running


def test_an_interrupted_searchs_running_trials_stay_running_with_when_it_stopped(tmp_path):
    """--resume continues them and tells their results, which Optuna takes only from a running trial."""
    from search.searcher import INTERRUPTED, settle_running

    path = tmp_path / "optuna.journal"
    study_with_running_trials(path)
    assert settle_running(path, ended=False) == 2
    done, cut, never = load(path)
    assert [t.state.name for t in (done, cut, never)] == ["COMPLETE", "RUNNING", "RUNNING"]
    assert INTERRUPTED not in done.user_attrs
    assert all("interrupted at" in t.user_attrs[INTERRUPTED] and "--resume" in t.user_attrs[INTERRUPTED]
               for t in (cut, never))
    assert settle_running(path, ended=False) == 2  # interrupted again after a resume: the last time
    assert settle_running(tmp_path / "none.journal", ended=True) == 0  # a run without a study yet
