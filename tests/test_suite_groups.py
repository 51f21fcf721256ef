"""The suite's own xdist scheduling (tests/conftest.py): tests of one shared run on one worker, the
socket-scanning and cluster tests never two at once. A wrong group costs a run built twice, or a
security test that sees another test's cluster listening."""

from __future__ import annotations

from conftest import NETWORK, xdist_groups


def test_groups_follow_the_shared_run_a_test_takes_directly_or_through_a_fixture(tmp_path):
    (tmp_path / "test_a.py").write_text('''
import pytest

@pytest.fixture
def its_run(smoke_run):
    return smoke_run

def test_direct(smoke_run_story, smoke_run): pass
def test_through_a_fixture(its_run): pass
def test_alone(tmp_path): pass

@pytest.mark.slow
@pytest.mark.xdist_group("network")
def test_cluster(tmp_path): pass
''')
    (tmp_path / "test_b.py").write_text('''
import pytest

pytestmark = pytest.mark.xdist_group("network")

def test_sockets(): pass
''')
    assert xdist_groups(tmp_path) == {
        "tests/test_a.py::test_direct": "smoke_run_story",  # the first shared run it names in SHARED_RUNS
        "tests/test_a.py::test_through_a_fixture": "test_a.py:its_run",
        "tests/test_a.py::test_cluster": NETWORK,
        "tests/test_b.py::test_sockets": NETWORK,
    }


def test_the_suites_own_network_and_shared_run_tests_are_grouped():
    groups = xdist_groups()
    assert groups["tests/test_security.py::test_no_dashboard_by_default_and_token_auth_on"] == NETWORK
    assert groups["tests/test_search.py::test_two_nodes_started_with_ray_start_as_the_readme_says"] == NETWORK
    assert groups["tests/test_report.py::test_report_states_the_verdict_from_the_retrain_table"] == "smoke_run"
    assert groups["tests/test_search.py::test_trials_and_history_tables"] == "finished_run"
