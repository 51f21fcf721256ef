"""Shared fixtures: the real GSN zip (never skipped in CI), per-test caches, small generated data sets."""

from __future__ import annotations

import ast
import contextlib
import errno
import io
import os
import shutil
from pathlib import Path

import pytest

from datasets import shapes
from datasets.shapes_generator import write_dataset

REPO = Path(__file__).resolve().parents[1]
DEFAULT_ZIP = REPO.parent / "shared" / "data" / "gsn" / "data_gsn.zip"
# Fixtures that start Ray and run a whole search, shared by the tests that read it: every test using one is
# slow (`pytest -m "not slow"` leaves them out; tests that start Ray themselves carry @pytest.mark.slow).
# The suite runs on two pytest-xdist workers (pyproject's addopts; `-n 0` runs it in one process). A shared
# run is built once per worker that needs it, so the tests of one run go to one worker together; where a
# test uses several, the first of these names its group.
SHARED_RUNS = ("smoke_run_story", "smoke_run", "finished_run", "settings_run", "digits_run", "pbt_run",
               "fault_search")  # the last: tests/test_faults.py's own


NETWORK = "network"  # tests that read every listening socket or start cluster nodes: never two at once


def pytest_itemcollected(item):
    if set(SHARED_RUNS) & set(getattr(item, "fixturenames", ())):
        item.add_marker(pytest.mark.slow)


def _xdist_group(node: ast.expr) -> str | None:
    """The name in a `pytest.mark.xdist_group("name")` expression, else None."""
    if isinstance(node, ast.Call) and getattr(node.func, "attr", None) == "xdist_group" and node.args \
            and isinstance(node.args[0], ast.Constant):
        return str(node.args[0].value)
    return None


def xdist_groups(folder: Path = REPO / "tests") -> dict[str, str]:
    """{test nodeid without parameters: group}, read from the test files' source: an xdist_group mark
    (the test's, or its file's `pytestmark`), else the shared run a test takes (directly or through a
    fixture of its file). xdist's own `--dist loadgroup` reads marks through an attribute pytest 9 no
    longer has (measured: each shared run was built on both workers), so the scheduler below groups."""
    groups = {}
    for path in sorted(folder.glob("test_*.py")):
        tree = ast.parse(path.read_text())
        functions = [n for n in tree.body if isinstance(n, ast.FunctionDef)]
        marks_all = next((_xdist_group(n.value) for n in tree.body if isinstance(n, ast.Assign)
                          and any(getattr(t, "id", None) == "pytestmark" for t in n.targets)), None)
        takes = {f.name: {a.arg for a in f.args.args} for f in functions}
        shared = set(SHARED_RUNS)
        for _ in range(3):  # fixtures of the file that take a shared run are shared too
            shared |= {name for name, args in takes.items() if not name.startswith("test_") and args & shared}
        for f in functions:
            if not f.name.startswith("test_"):
                continue
            marked = next((g for g in map(_xdist_group, f.decorator_list) if g), None)
            run = next((r for r in SHARED_RUNS if r in takes[f.name]), None)
            local = min(takes[f.name] & shared, default=None)
            group = marked or marks_all or run or (f"{path.name}:{local}" if local else None)
            if group:
                groups[f"tests/{path.name}::{f.name}"] = group
    return groups


def pytest_xdist_make_scheduler(config, log):
    from xdist.scheduler import LoadScopeScheduling

    groups = xdist_groups()

    class SharedRunScheduling(LoadScopeScheduling):
        """Each group's tests on one worker; every other test is its own unit, as `--dist load` sends them."""

        def _split_scope(self, nodeid: str) -> str:
            return groups.get(nodeid.split("[", 1)[0], nodeid)

    return SharedRunScheduling(config, log)


def pytest_configure(config):
    """Ray writes ~/.ray/auth_token the first time a local Ray starts without one. Two workers doing so
    at once can each start a Ray with its own token while the file keeps the other's, and that Ray's
    workers, reading the file, are then refused: make the token once, before the workers start."""
    if hasattr(config, "workerinput") or os.environ.get("RAY_AUTH_TOKEN"):
        return  # an xdist worker (the controller made it), or a token given in the environment
    try:
        from ray._private.authentication.authentication_token_setup import (
            _get_default_token_path,
            generate_and_save_token,
        )
    except ImportError:  # a Ray without token authentication
        return
    if not _get_default_token_path().is_file():
        generate_and_save_token()


@pytest.fixture(autouse=True)
def _per_test_cache(request, tmp_path_factory, monkeypatch):
    """Every test gets its own cache: nothing depends on (or writes to) ~/.cache. It goes after the test
    (a generated data set is 48 MB; 560 of them filled 1.4 GB). A fast test's starts empty; a slow
    test's (it runs searches on the default data) holds the generated data set, linked from the
    session's `generated_cache`: generating it costs about 10 s, which 40 slow tests paid each."""
    cache = tmp_path_factory.mktemp("cache")
    if request.node.get_closest_marker("slow"):
        for entry in request.getfixturevalue("generated_cache").iterdir():  # its folder and decoded tensors
            if entry.is_dir():
                (cache / entry.name).symlink_to(entry, target_is_directory=True)
            else:
                os.link(entry, cache / entry.name)
    monkeypatch.setenv("VISION_HPSEARCH_CACHE", str(cache))
    yield
    shutil.rmtree(cache, ignore_errors=True)


@pytest.fixture(scope="session")
def real_zip() -> Path:
    """Path of the course's data_gsn.zip ($GSN_DATA_ZIP overrides). CI always has it: there a missing
    file is a failure, not a skip; elsewhere the tests that need it are skipped."""
    path = Path(os.environ.get("GSN_DATA_ZIP") or DEFAULT_ZIP)
    if not path.is_file():
        if os.environ.get("CI"):
            pytest.fail(f"real GSN data missing at {path} (CI is set, so this must not be skipped); "
                        "set GSN_DATA_ZIP or put data_gsn.zip there")
        pytest.skip(f"real GSN data not found at {path} (set GSN_DATA_ZIP)")
    return path


@pytest.fixture(scope="session")
def real_cache(tmp_path_factory) -> Path:
    """The session's own decoded-tensor cache for the real zip."""
    return tmp_path_factory.mktemp("real-cache")


@pytest.fixture(scope="session")
def real_data(real_zip, real_cache) -> shapes.ShapesData:
    """The real data set, decoded once per session (about 2.5 s)."""
    return shapes.load(real_zip, cache_dir=real_cache)


@pytest.fixture(scope="session")
def _small_base(tmp_path_factory) -> Path:
    base = tmp_path_factory.mktemp("small") / "gsn"
    write_dataset(base, 12, seed=3)
    return base


@pytest.fixture
def small_folder(_small_base, tmp_path) -> Path:
    """A fresh, writable copy of a valid 12-image data set in the course layout (generated)."""
    dest = tmp_path / "gsn"
    shutil.copytree(_small_base, dest)
    return dest


@pytest.fixture(scope="session")
def generated_cache(tmp_path_factory) -> Path:
    """A cache dir holding the default generated data set (10,000 images, seed 0), built once (~5 s):
    point VISION_HPSEARCH_CACHE at it to run commands on the offline default data."""
    cache = tmp_path_factory.mktemp("generated-cache")
    shapes.generated(cache_dir=cache)
    return cache


# --choose-decoding: the runs shared by the retrain, report and analysis tests read each trial every way
SMOKE_ARGS = ["shapes", "--smoke", "--trials", "4", "--max-epochs", "1", "--top-k", "2", "--seeds", "2",
              "--choose-decoding"]


@pytest.fixture(scope="session")
def smoke_run(tmp_path_factory, generated_cache):
    """A finished smoke run (search of 4 trials, retraining of 2 configs + baseline on 2 seeds, report),
    uninterrupted, shared by the retrain, report and analysis tests: (exit code, run directory)."""
    from search import cli, run

    results = tmp_path_factory.mktemp("results")
    with pytest.MonkeyPatch.context() as mp, contextlib.redirect_stdout(io.StringIO()):
        mp.setenv("VISION_HPSEARCH_CACHE", str(generated_cache))
        code = cli.run(run.main, [*SMOKE_ARGS, "--results", str(results), "--name", "r"])
    return code, results / "shapes" / "r"


@pytest.fixture(scope="session")
def smoke_run_story(tmp_path_factory, generated_cache) -> dict:
    """Its own smoke run, its 3 retrain epochs cut to fit --retrain-minutes 0.01 (0.6 s: 1 epoch), killed
    with SIGTERM right after its second retrain run is saved; resumed onto
    a full disk (the first retrain file written fails with ENOSPC); then resumed again to the end. What
    was seen at each step is kept for the two tests of tests/test_retrain.py that read it (the other
    tests share the uninterrupted `smoke_run`, so a failure here stays here)."""
    import signal

    from search import cli, retraining, run
    from search import io as search_io

    results = tmp_path_factory.mktemp("results")
    run_dir = results / "shapes" / "r"
    story: dict = {"saved": []}
    original = retraining.save_job

    def save_then_kill(run_dir, job, out):
        original(run_dir, job, out)
        story["saved"].append(job.name)
        if len(story["saved"]) == 2:
            signal.raise_signal(signal.SIGTERM)  # as `kill PID` would: routed to the Ctrl-C path

    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("VISION_HPSEARCH_CACHE", str(generated_cache))
        mp.setattr(retraining, "save_job", save_then_kill)
        with contextlib.redirect_stderr(io.StringIO()) as err, contextlib.redirect_stdout(io.StringIO()) as out:
            story["killed_code"] = cli.run(run.main, [*SMOKE_ARGS, "--retrain-epochs", "3", "--retrain-minutes",
                                                      "0.01", "--results", str(results), "--name", "r"])
        story["killed_err"], story["killed_out"] = err.getvalue(), out.getvalue()
        story["files_at_kill"] = sorted(p.name for p in run_dir.iterdir())
        story["trials_at_kill"] = (run_dir / "trials.csv").read_bytes()
        story["mtimes_at_kill"] = {n: (run_dir / "retrain" / n / "model.pt").stat().st_mtime_ns
                                   for n in story["saved"]}
        mp.setattr(retraining, "save_job", original)

        def disk_full(dest, write):  # the disk fills up as the resumed retraining writes its first file
            if "retrain" in Path(dest).parts:
                raise OSError(errno.ENOSPC, "No space left on device", str(dest))
            return real_write(dest, write)

        real_write = search_io.atomic_write
        mp.setattr(search_io, "atomic_write", disk_full)
        with contextlib.redirect_stderr(io.StringIO()) as err, contextlib.redirect_stdout(io.StringIO()):
            story["full_code"] = cli.run(run.main, ["shapes", "--results", str(results), "--name", "r", "--resume"])
        story["full_err"] = err.getvalue()
        story["tmp_files_after_full"] = sorted(str(p) for p in run_dir.rglob("*.tmp"))
        mp.setattr(search_io, "atomic_write", real_write)
        with contextlib.redirect_stdout(io.StringIO()) as out:
            story["code"] = cli.run(run.main, ["shapes", "--results", str(results), "--name", "r", "--resume"])
        story["resumed_out"] = out.getvalue()
    story["run_dir"] = run_dir
    return story
