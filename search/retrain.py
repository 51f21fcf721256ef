"""Retrain the best configurations of a finished search on fresh seeds, score them once on the held-out split.

    python -m search.retrain results/shapes/NAME [--top-k K] [--seeds S] [--epochs E]

The retrain and report stages of search/stages.py on a run whose search is done (what
`python -m search.run` does after its search), with other numbers if you like. Finished retrain
runs are kept: after an interruption the same command goes on with the others.
"""

from __future__ import annotations

import os
import shlex
import sys
from pathlib import Path

import ray

from search import cli, ray_session, stages
from search.config import UserError
from search.lock import RunLock
from search.record import FILE


def main(argv: list[str]) -> int:
    p = cli.ArgumentParser(prog="python -m search.retrain", description=__doc__.split("\n\n")[0])
    p.add_argument("run_dir", type=Path, help="a finished search, e.g. results/shapes/NAME")
    p.add_argument("--top-k", type=cli.whole(1),
                   help="configs to retrain besides the baseline (default: the run's plan)")
    p.add_argument("--seeds", type=cli.whole(1), help="fresh seeds per config (default: the run's plan)")
    p.add_argument("--epochs", type=cli.whole(1), help="epochs per run (default: the run's plan)")
    p.add_argument("--cpus-per-run", type=cli.number(), help="CPUs per run (default: the search's per-trial share)")
    p.add_argument("--gpus-per-run", type=cli.number(zero=True), help="GPU share per run (default: the search's)")
    p.add_argument("--allow-unauthenticated", action="store_true",
                   help="run although Ray's token authentication is off (RAY_AUTH_MODE=disabled)")
    args = p.parse_args(argv)
    ray_session.check_auth(args.allow_unauthenticated)
    address = os.environ.get("RAY_ADDRESS")
    if address:  # a ConnectionError traceback after a long wait otherwise
        ray_session.check_reachable(address)
    run_dir = args.run_dir.expanduser().resolve()
    if not (run_dir / FILE).is_file() or not (run_dir / "trials.csv").is_file():
        raise UserError(f"{run_dir}: not a finished search (no run.json and trials.csv there)")
    with RunLock(run_dir):  # not while the search (or another retraining) writes this run
        ctx = stages.finished_run(run_dir)
        # $RAY_ADDRESS's cluster, else a new local Ray (not one whose address `ray start` left behind)
        ray.init(address=os.environ.get("RAY_ADDRESS") or "local", include_dashboard=False, log_to_driver=False,
                 configure_logging=True, logging_level="WARNING")
        cli.stop_on_sigterm()
        try:
            if not args.allow_unauthenticated and not ray_session.token_auth_on():
                raise UserError(ray_session.UNAUTHENTICATED)
            stages.retrain(ctx, top_k=args.top_k, seeds=args.seeds, epochs=args.epochs, cpus=args.cpus_per_run,
                           gpus=args.gpus_per_run)
        except KeyboardInterrupt:  # each finished run is kept: the same command goes on with the others
            print(f"interrupted; the finished runs are kept; continue with:\n  python -m search.retrain "
                  f"{shlex.join(argv)}", file=sys.stderr)
            return 130
        finally:
            ray.shutdown()
        stages.report(ctx)
    return 0


if __name__ == "__main__":
    raise SystemExit(cli.run(main, sys.argv[1:]))
