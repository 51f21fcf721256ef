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
