"""Names become folders, and --overwrite deletes only a run this project wrote: nothing of the user's is
deleted through a name such as `.`, `..` or an absolute path, a symlink, or a folder that is not a run."""

from __future__ import annotations

import dataclasses
import json

import pytest

from search import cli, experiments, run, run_folder
from search.config import UserError
from search.lock import LOCK

BAD_NAMES = [".", "..", "../x", "../..", "/tmp/x", "a/b", "", "-x", " a", "a b", "x" * 101, "a;rm", "é"]


@pytest.mark.parametrize("name", BAD_NAMES)
def test_a_name_that_is_not_one_safe_folder_name_is_refused(name):
    with pytest.raises(UserError, match="a name becomes a folder"):
        run_folder.check_name(name)


@pytest.mark.parametrize("name", ["a", "lr-sweep.2", "20261207-021000", "A_b-c.d", "x" * 100])
def test_safe_names_pass(name):
    assert run_folder.check_name(name) == name


@pytest.mark.parametrize("name", experiments.names())
def test_every_registered_experiment_has_a_safe_name(name):
    assert run_folder.NAME.fullmatch(experiments.get(name).name)


def test_an_experiment_named_like_a_path_is_refused():
    with pytest.raises(UserError, match="experiment name"):
        dataclasses.replace(experiments.get("shapes"), name="../shapes")


def a_run(results, experiment, name, **record):
    folder = results / experiment / name
    folder.mkdir(parents=True)
    (folder / "run.json").write_text(json.dumps({"experiment": experiment, "name": name, **record}))
    (folder / "trials.csv").write_text("precious\n")
    return folder


def snapshot(root):
    return sorted((str(p.relative_to(root)), p.read_text() if p.is_file() else None) for p in root.rglob("*"))


@pytest.mark.parametrize("name", [".", "..", "../..", "/abs", "a/b"])
@pytest.mark.parametrize("mode", [["--overwrite"], ["--resume"], []])
def test_a_path_as_name_deletes_nothing(tmp_path, name, mode, capsys):
    results = tmp_path / "results"
    a_run(results, "shapes", "earlier")
    a_run(results, "digit_pairs", "other")
    before = snapshot(tmp_path)
    code = cli.run(run.main, ["shapes", "--smoke", "--results", str(results), "--name", name, *mode])
    err = capsys.readouterr().err
    assert code == 2 and "a name becomes a folder" in err and err.count("\n") == 1, err
    assert snapshot(tmp_path) == before


def test_settings_names_are_checked_too(tmp_path, capsys):
    code = cli.run(run.main, ["shapes", "--settings", "cls,cnt", "--results", str(tmp_path), "--name", ".."])
    assert code == 2 and "a name becomes a folder" in capsys.readouterr().err


@pytest.fixture(autouse=True)
def no_search(monkeypatch):
    """Every command here must be refused before it runs a stage."""
    monkeypatch.setattr(run, "run_stages", lambda *a: pytest.fail("a stage ran"))


def overwrite(results, name):
    return cli.run(run.main, ["shapes", "--smoke", "--results", str(results), "--name", name, "--overwrite"])


@pytest.mark.parametrize("damage, says", [
    (lambda f: (f / "run.json").unlink(), "holds no run.json"),
    (lambda f: (f / "run.json").write_text('{"experiment": "sha'), "is damaged"),
    (lambda f: (f / "run.json").write_text("[1, 2]"), "is not a run of shapes named r"),
    (lambda f: (f / "run.json").write_text(json.dumps({"experiment": "shapes", "name": "q"})),
     "is not a run of shapes named r"),
    (lambda f: (f / "run.json").write_text(json.dumps({"experiment": "facades", "name": "r"})),
     "is not a run of shapes named r"),
])
def test_overwrite_refuses_a_folder_that_is_not_this_run(tmp_path, damage, says, capsys):
    folder = a_run(tmp_path, "shapes", "r")
    damage(folder)
    before = snapshot(tmp_path)
    assert overwrite(tmp_path, "r") == 2
    err = capsys.readouterr().err
    assert says in err and "nothing deleted" in err and err.count("\n") == 1, err
    assert snapshot(tmp_path) == before


def test_overwrite_never_follows_a_symlink_out_of_the_results_root(tmp_path, capsys):
    outside = a_run(tmp_path / "elsewhere", "shapes", "r")  # a run.json that would pass, reached by a link
    results = tmp_path / "results"
    (results / "shapes").mkdir(parents=True)
    (results / "shapes" / "r").symlink_to(outside)
    (tmp_path / "linked").mkdir()
    (tmp_path / "linked" / "shapes").symlink_to(outside.parent)  # the experiment's folder itself a link
    before = snapshot(tmp_path / "elsewhere")
    assert overwrite(results, "r") == 2
    assert overwrite(tmp_path / "linked", "r") == 2
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 2 and all("through a symlink" in line for line in err), err
    assert snapshot(tmp_path / "elsewhere") == before


def test_replace_deletes_the_run_and_unlinks_links_inside_without_following_them(tmp_path):
    keep = tmp_path / "users-data"
    keep.mkdir()
    (keep / "thesis.tex").write_text("years of work")
    folder = a_run(tmp_path / "results", "shapes", "r")
    (folder / "tune").mkdir()
    (folder / "tune" / "data").symlink_to(keep)
    (folder / "link").symlink_to(keep)
    (folder / LOCK).write_text("")
    deleted = run_folder.replace(folder.resolve(), keep=(LOCK,))
    assert sorted(deleted) == ["link", "run.json", "trials.csv", "tune/"]
    assert sorted(p.name for p in folder.iterdir()) == [LOCK]
    assert (keep / "thesis.tex").read_text() == "years of work"


def test_the_already_exists_check_is_repeated_under_the_lock(tmp_path, generated_cache, monkeypatch, capsys):
    """Two commands started on one new name: the second passed the first check before the first wrote its
    run.json; under the lock it must see the run and refuse, not write over it."""
    monkeypatch.setenv("VISION_HPSEARCH_CACHE", str(generated_cache))
    folder = tmp_path / "shapes" / "r"
    real = run.checked_request

    def first_check_then_the_other_run_writes(exp, args, argv):
        request = real(exp, args, argv)
        a_run(tmp_path, "shapes", "r")  # the other process, between our check and our lock
        return request

    monkeypatch.setattr(run, "checked_request", first_check_then_the_other_run_writes)
    code = cli.run(run.main, ["shapes", "--smoke", "--results", str(tmp_path), "--name", "r"])
    assert code == 2 and "already exists" in capsys.readouterr().err
    assert (folder / "trials.csv").read_text() == "precious\n"
