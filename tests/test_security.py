"""What a local run exposes: Ray's token authentication stays on, and no dashboard listens unless
--dashboard asks for it, and then only on 127.0.0.1."""

from __future__ import annotations

import argparse
import socket
import time
from pathlib import Path

import pytest

from search import ray_session, run
from search.plan import Hardware

# Tests that read every listening socket of the machine, or start nodes that listen: never two at once
# (pytest-xdist runs the suite on two workers; the cluster tests of test_search.py share this group).
pytestmark = pytest.mark.xdist_group("network")

DASHBOARD_PORT = 8265  # Ray's default


def listening() -> set[tuple[str, int]]:
    """(address, port) of every listening TCP socket on this machine, from /proc/net/tcp{,6}."""
    out = set()
    for name, family in (("tcp", socket.AF_INET), ("tcp6", socket.AF_INET6)):
        path = Path("/proc/net") / name
        if not path.exists():
            continue
        for line in path.read_text().splitlines()[1:]:
            fields = line.split()
            if fields[3] != "0A":  # LISTEN
                continue
            addr_hex, port_hex = fields[1].split(":")
            raw = bytes.fromhex(addr_hex)
            # the kernel prints each 32-bit word in host (little-endian) order
            raw = b"".join(raw[i:i + 4][::-1] for i in range(0, len(raw), 4))
            out.add((socket.inet_ntop(family, raw), int(port_hex, 16)))
    return out


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/net/tcp").exists(), reason="needs Linux /proc/net")
def test_no_dashboard_by_default_and_token_auth_on(monkeypatch):
    monkeypatch.delenv("RAY_AUTH_MODE", raising=False)
    before = {port for _, port in listening()}
    session = ray_session.ray_session(argparse.Namespace(dashboard=False, address=None), Hardware(cpus=1, gpus=0))
    session.__enter__()  # Ray runs until the session exits
    try:
        ports = {port for _, port in listening()} - before
        assert ports, "Ray started no listener at all: the check would be vacuous"
        assert DASHBOARD_PORT not in {port for _, port in listening()}
        from ray._private import worker

        assert not worker._global_node.address_info.get("webui_url")
        assert ray_session.token_auth_on()  # what the Ray running here checks, not what an env var says
    finally:
        session.__exit__(None, None, None)


def test_listening_parser_finds_a_loopback_listener():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        assert ("127.0.0.1", s.getsockname()[1]) in listening()


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/net/tcp").exists(), reason="needs Linux /proc/net")
def test_dashboard_asked_for_listens_on_loopback_only(monkeypatch):
    """Needs Ray's dashboard packages (`pip install -e ".[dashboard]"`); skipped without them."""
    pytest.importorskip("aiohttp")
    from ray._private import worker

    monkeypatch.delenv("RAY_AUTH_MODE", raising=False)
    session = ray_session.ray_session(argparse.Namespace(dashboard=True, address=None), Hardware(cpus=1, gpus=0))
    session.__enter__()  # Ray runs until the session exits
    try:
        url = worker._global_node.address_info.get("webui_url")
        assert url, "no dashboard started: the check would be vacuous"
        port = int(url.rsplit(":", 1)[1])
        deadline = time.monotonic() + 30
        while not any(p == port for _, p in listening()) and time.monotonic() < deadline:
            time.sleep(0.5)  # the dashboard process binds a moment after ray.init returns
        addresses = {addr for addr, p in listening() if p == port}
        assert addresses == {"127.0.0.1"}, addresses
    finally:
        session.__exit__(None, None, None)


@pytest.mark.slow
def test_dashboard_without_its_packages_is_a_one_line_error(tmp_path, capsys):
    import importlib.util

    from search import cli

    if importlib.util.find_spec("aiohttp") is not None:
        pytest.skip("ray[default] is installed here: the dashboard can start")
    code = cli.run(run.main, ["shapes", "--smoke", "--dashboard", "--results", str(tmp_path), "--name", "d"])
    err = capsys.readouterr().err
    assert code == 2 and "ray[default]" in err and err.count("\n") == 1
    assert not (tmp_path / "shapes" / "d").exists()


@pytest.mark.parametrize("command", ["search", "retrain"])
def test_token_authentication_turned_off_is_refused_unless_allowed(tmp_path, monkeypatch, command, capsys):
    """Ray's servers listen on every interface (Ray 2.60 cannot bind them to 127.0.0.1): with its token
    authentication off, anyone on the network could run code in a local run. Refused before Ray starts."""
    from search import cli, retrain

    monkeypatch.setenv("RAY_AUTH_MODE", "disabled")
    monkeypatch.setattr(ray_session.ray, "init", lambda **kw: pytest.fail("Ray started"))
    if command == "search":
        code = cli.run(run.main, ["shapes", "--smoke", "--results", str(tmp_path), "--name", "a"])
    else:
        run_dir = tmp_path / "shapes" / "a"
        run_dir.mkdir(parents=True)
        (run_dir / "run.json").write_text("{}")
        (run_dir / "trials.csv").write_text("trial_id\n")
        code = cli.run(retrain.main, [str(run_dir)])
    err = capsys.readouterr().err
    assert code == 2 and "RAY_AUTH_MODE=disabled" in err and "--allow-unauthenticated" in err and err.count("\n") == 1
    assert (tmp_path / "shapes" / "a" / "run.json").exists() == (command == "retrain")  # nothing written
    ray_session.check_auth(allow_unauthenticated=True)  # the user's explicit word


def test_retrain_with_an_unreachable_ray_address_is_one_line(tmp_path, monkeypatch, capsys):
    from search import cli, retrain

    monkeypatch.setenv("RAY_ADDRESS", "127.0.0.1:1")  # nothing listens on port 1
    assert cli.run(retrain.main, [str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "cannot join that Ray cluster" in err and err.count("\n") == 1 and "Traceback" not in err
