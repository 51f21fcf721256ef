"""Each private reach-in of search/compat.py, checked on the installed Ray and Optuna: an upgrade that
breaks one fails here, by name, before any search runs into it."""

from __future__ import annotations

import importlib
import re
from pathlib import Path

import optuna
import pytest
import ray
from ray import tune

from search import compat

REPO = Path(__file__).resolve().parents[1]
WHERE = "see search/compat.py, written for ray {ray} and optuna {optuna}".format(**compat.PINNED)


def test_the_pinned_versions_are_constraints_txts_and_the_installed_ones():
    pins = dict(re.findall(r"^(ray|optuna)==(\S+)$", (REPO / "constraints.txt").read_text(), re.MULTILINE))
    assert pins == compat.PINNED, "constraints.txt and search/compat.py PINNED name other versions"
    assert (ray.__version__, optuna.__version__) == (pins["ray"], pins["optuna"]), \
        f"installed ray {ray.__version__}, optuna {optuna.__version__}: check each reach-in below ({WHERE})"


def _instance(path: str):
    module, _, name = path.rpartition(".")
    cls = getattr(importlib.import_module(module), name)
    if name == "AsyncHyperBandScheduler":
        return cls(time_attr="epoch", metric="m", mode="max", max_t=4, grace_period=1, reduction_factor=2)
    if name == "OptunaSearch":
        return cls(space={"x": tune.uniform(0, 1)}, metric="m", mode="max", seed=0)
    return cls()


@pytest.mark.parametrize("path", sorted(compat.SUBCLASSED))
def test_every_private_attribute_a_subclass_reads_is_there(path):
    obj = _instance(path)
    missing = [a for a in compat.SUBCLASSED[path] if not hasattr(obj, a)]
    assert not missing, f"{path} no longer has {missing} ({WHERE})"


def test_a_tuners_config_and_callbacks_are_reached(tmp_path):
    searcher = _instance("ray.tune.search.optuna.OptunaSearch")
    tuner = tune.Tuner(lambda config: None, tune_config=tune.TuneConfig(search_alg=searcher, num_samples=1),
                       run_config=tune.RunConfig(storage_path=str(tmp_path), name="t"))
    assert compat.tune_config(tuner).search_alg is searcher, f"Tuner's TuneConfig not found ({WHERE})"
    marker = tune.Callback()
    compat.set_callbacks(tuner, [marker])
    assert tuner._local_tuner._run_config.callbacks == [marker], f"a Tuner's callbacks not set ({WHERE})"


def test_ashas_rungs_and_cutoff_are_read_as_asha_keeps_them():
    asha = _instance("ray.tune.schedulers.AsyncHyperBandScheduler")
    rungs = compat.asha_rungs(asha)
    assert [milestone for milestone, _ in rungs] == [4, 2, 1], f"ASHA's rungs, last first, not found ({WHERE})"
    epoch, recorded = compat.asha_first_rung(asha)
    assert epoch == 1 and recorded == {}
    recorded.update(a=0.9, b=0.1)  # the dict is ASHA's own: what is written here, ASHA judges on
    assert compat.asha_rungs(asha)[-1][1] == {"a": 0.9, "b": 0.1}
    assert 0.1 <= compat.asha_cutoff(asha, recorded) <= 0.9, f"ASHA's cutoff changed its meaning ({WHERE})"


def test_a_studys_storage_trial_ids_and_journal_are_reached(tmp_path):
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    first, moved = tmp_path / "a.journal", tmp_path / "b.journal"
    study = optuna.create_study(study_name="s", storage=JournalStorage(JournalFileBackend(str(first))))
    study.enqueue_trial({"x": 0.5})
    trial = study.ask()
    frozen = study.get_trials(deepcopy=False)[0]
    storage = compat.study_storage(study)
    storage.set_trial_user_attr(compat.trial_id(frozen), "note", "set through the storage")
    assert study.get_trials()[0].user_attrs == {"note": "set through the storage"}, f"storage/trial id ({WHERE})"
    study.tell(trial, 1.0)
    moved.write_bytes(first.read_bytes())
    first.unlink()
    compat.repoint_journal(study, moved)
    study.enqueue_trial({"x": 0.25})  # written to the moved file
    assert first.exists() is False and "0.25" in moved.read_text(), f"the journal's file not repointed ({WHERE})"


def test_rays_token_check_and_logs_dir_answer_without_a_session():
    assert isinstance(compat.token_auth_enabled(), bool)
    assert not ray.is_initialized() and compat.session_logs_dir() is None
