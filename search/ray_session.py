"""Where the search's Ray runs: a local Ray of our own, or an existing cluster joined with --address.

Token authentication stays on (Ray's default), the dashboard is off unless asked for and then on
127.0.0.1 only, and worker output is not mixed into ours.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import os
import re
import socket
from collections.abc import Iterator

import ray

from search import cli, compat
from search.config import UserError
from search.plan import Hardware, cluster_hardware


def check_reachable(address: str, timeout_s: float = 3.0) -> None:
    """Fail fast on a HOST:PORT nobody answers at: Ray itself retries for minutes before giving up."""
    if address in ("auto", "local") or "://" in address:
        return
    host, sep, port = address.rpartition(":")
    if not sep or not port.isdigit():
        raise UserError(f"--address {address}: write it as HOST:PORT, e.g. 10.0.0.5:6379")
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=timeout_s).close()
    except OSError as e:
        raise UserError(f"--address {address}: cannot join that Ray cluster (nothing answers: {e.strerror or e}); "
                        "check `ray status` on the head node, or leave --address out to run locally") from None


# Ray's token authentication: a client without the cluster's token is refused, with errors that do not
# say so plainly (InvalidAuthToken, Unauthenticated) or after a long wait.
AUTH_ERROR = re.compile(r"auth|token|unauthenticated", re.IGNORECASE)
TOKEN_HINT = ("if its nodes run with token authentication (RAY_AUTH_MODE=token), set RAY_AUTH_MODE=token here too "
              "and give this machine the head's token (its ~/.ray/auth_token copied here, or RAY_AUTH_TOKEN); "
              "`ray status` here must work first")


# Ray 2.60's servers (GCS, raylet, workers, object manager) listen on every interface, whatever
# node_ip_address says (measured: `ss -ltnp` shows *:port with _node_ip_address="127.0.0.1"), so token
# authentication is what keeps the rest of a network out of a local run.
UNAUTHENTICATED = ("Ray's token authentication is off (RAY_AUTH_MODE=disabled), and Ray's servers listen on "
                   "every network interface of this machine: anyone who reaches it could run code here; unset "
                   "RAY_AUTH_MODE, or pass --allow-unauthenticated on a network you trust")


def token_auth_on() -> bool:
    """Whether the Ray this process runs with (or would start) checks tokens."""
    return compat.token_auth_enabled()


def check_auth(allow_unauthenticated: bool) -> None:
    """Refuse to run without token authentication unless the user said so (--allow-unauthenticated)."""
    if not allow_unauthenticated and os.environ.get("RAY_AUTH_MODE", "").strip().lower() == "disabled":
        raise UserError(UNAUTHENTICATED)


@contextlib.contextmanager
def ray_session(args: argparse.Namespace, hw: Hardware) -> Iterator[Hardware]:
    """Join --address, or start a local Ray: token auth on (Ray's default; without it refused unless
    --allow-unauthenticated), dashboard off unless asked for and then on 127.0.0.1 only, worker output not
    mixed into ours. Yields what Ray has."""
    allow = getattr(args, "allow_unauthenticated", False)
    check_auth(allow)
    if args.dashboard and importlib.util.find_spec("aiohttp") is None:
        raise UserError("--dashboard needs Ray's dashboard packages, which ray[tune] leaves out: "
                        "pip install 'ray[default]', or run without --dashboard")
    common = {"include_dashboard": args.dashboard, "dashboard_host": "127.0.0.1", "log_to_driver": False,
              "configure_logging": True, "logging_level": "WARNING"}
    try:
        if args.address:
            ray.init(address=args.address, **common)
        else:
            # "local": a new Ray of our own, even where `ray start` left a cluster's address behind
            ray.init(address="local", num_cpus=int(hw.cpus), num_gpus=int(hw.gpus), **common)
    except (ConnectionError, RuntimeError, ValueError) as e:
        if args.address:
            first = (str(e).strip().splitlines() or [type(e).__name__])[0]
            raise UserError(f"--address {args.address}: cannot join that Ray cluster ({first}); "
                            + (TOKEN_HINT if AUTH_ERROR.search(str(e)) or not os.environ.get("RAY_AUTH_MODE") else
                               "check `ray status` there, or leave --address out to run locally")) from None
        raise
    try:
        if not allow and not token_auth_on():  # however it was turned off (a config, a cluster's setting)
            raise UserError(UNAUTHENTICATED)
        cli.stop_on_sigterm()
        yield cluster_hardware(ray.nodes())
    finally:
        ray.shutdown()


def ray_logs() -> str | None:
    """Where this run's Ray session keeps its logs (on this machine; a cluster's nodes keep their own)."""
    return compat.session_logs_dir()
