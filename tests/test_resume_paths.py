"""--resume reads the paths a run resolved when it started, not its argv again from wherever it is typed,
and refuses to go on with data other than the data it started on, unless --force (which run.json keeps)."""

from __future__ import annotations

import dataclasses

import pytest

from search import cli, experiments, record, run, stages
from search.plan import Hardware, make_plan


@pytest.fixture
def resumable(tmp_path, monkeypatch):
    """A run started as `... --data-dir data.zip --storage shared` from tmp_path/start, interrupted; the
    stages themselves are not run: each main() call's request is captured."""
    start, elsewhere = tmp_path / "start", tmp_path / "elsewhere"
    for folder in (start, elsewhere):
        folder.mkdir()
    (start / "data.zip").write_bytes(b"the data the run started on")
    (elsewhere / "data.zip").write_bytes(b"another file of the same name")
    exp = experiments.get("shapes")
    loaded, requests = [], []
    fake = dataclasses.replace(exp, load=lambda options: loaded.append(options) or "data")
    monkeypatch.setattr(run.experiments, "get", lambda name: fake)
    monkeypatch.setattr(run, "run_stages", lambda request, args: requests.append(request) or 0)
    run_dir = tmp_path / "results" / "shapes" / "r"
    (start / "shared" / "shapes-r-0123abcd").mkdir(parents=True)
    plan = make_plan(exp, Hardware(cpus=2, gpus=0), trials=2, max_epochs=1, time_budget_min=None, concurrency=None,
                     cpus_per_trial=None, gpus_per_trial=None, smoke=True)
    argv = ["shapes", "--smoke", "--data-dir", "data.zip", "--storage", "shared", "--name", "r"]
    run_dir.mkdir(parents=True)
    record.RunRecord(experiment="shapes", name="r", plan=plan, argv=argv, storage_folder="shapes-r-0123abcd",
                     options={"data_dir": str(start / "data.zip"), "storage": str(start / "shared"), "seed": 0},
                     data={"source": "zip", "image_size": 28},
                     data_fingerprint=record.data_fingerprint(start / "data.zip")).write(run_dir)
    monkeypatch.chdir(elsewhere)  # resumed from another folder, where data.zip is another file
    return start, run_dir, loaded, requests


def resume(run_dir, *extra):
    return cli.run(run.main, ["shapes", "--name", "r", "--resume", "--results", str(run_dir.parent.parent), *extra])


def test_a_resume_from_another_folder_reads_the_runs_own_data_and_storage(resumable):
    start, run_dir, loaded, requests = resumable
    assert resume(run_dir) == 0
    assert loaded[-1].data_dir == start / "data.zip" and requests[-1].storage == str(start / "shared")
    assert loaded[-1].recorded == {"source": "zip", "image_size": 28}  # the loader's choices then (facades' size)


def test_a_resume_on_other_data_is_refused_and_force_takes_it_and_says_so(resumable, capsys):
    start, run_dir, loaded, requests = resumable
    (start / "data.zip").write_bytes(b"replaced since")
    assert resume(run_dir) == 2
    err = capsys.readouterr().err
    assert "is not the data it started on" in err and "--force" in err and err.count("\n") == 1
    assert not requests and not loaded  # refused before the data loads
    assert resume(run_dir, "--force") == 0
    forced = requests[-1].forced
    assert len(forced) == 1 and forced[0]["was"] != forced[0]["now"] == record.data_fingerprint(start / "data.zip")


def test_data_moved_elsewhere_resumes_from_its_new_path_with_the_same_fingerprint(resumable, tmp_path):
    start, run_dir, loaded, requests = resumable
    moved = tmp_path / "moved.zip"
    (start / "data.zip").rename(moved)
    assert resume(run_dir, "--data-dir", str(moved)) == 0 and loaded[-1].data_dir == moved
    recorded = record.RunRecord.read(run_dir).data_fingerprint
    assert requests[-1].forced == [] and requests[-1].data_fingerprint == recorded


def test_force_without_resume_is_refused(tmp_path, capsys):
    assert cli.run(run.main, ["shapes", "--smoke", "--force", "--results", str(tmp_path), "--name", "n"]) == 2
    assert "--force goes with --resume" in capsys.readouterr().err


def test_retraining_refuses_other_data_too(tmp_path):
    data = tmp_path / "data.zip"
    data.write_bytes(b"then")
    plan = make_plan(experiments.get("shapes"), Hardware(cpus=2, gpus=0), trials=2, max_epochs=1,
                     time_budget_min=None, concurrency=None, cpus_per_trial=None, gpus_per_trial=None, smoke=True)
    run_dir = tmp_path / "shapes" / "r"
    run_dir.mkdir(parents=True)
    record.RunRecord(experiment="shapes", name="r", plan=plan, options={"data_dir": str(data), "seed": 0},
                     data_fingerprint=record.data_fingerprint(data), search_done=True).write(run_dir)
    data.write_bytes(b"now")
    with pytest.raises(run.UserError, match="not the data it started on"):
        stages.finished_run(run_dir)
