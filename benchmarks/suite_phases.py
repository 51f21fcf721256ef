"""Where the test suite's time goes: a pytest plugin that sums the wall seconds of a run's phases.

    .venv/bin/python -m pytest -q -p benchmarks.suite_phases [--durations 40]

Wraps, for the runs the suite makes in its own process (`cli.run(run.main, ...)`; runs in a
subprocess are not seen): `run.main`, Ray's start and stop (`ray.init`, `ray.shutdown`), the stages
of `search.stages` (prepare, the throughput probe, search, retrain) and `search.report.build`.
Prints calls and seconds of each at the end, longest first, summed over pytest-xdist's workers (each
hands its sums to the controller as it ends). Nested phases overlap (prepare holds
the probe; run.main holds them all): compare a phase with itself across runs of the suite, on one
machine, not phases with each other's sum. The wrappers add microseconds per call.
"""

from __future__ import annotations

import collections
import functools
import time

TOTALS: dict[str, list[float]] = collections.defaultdict(lambda: [0, 0.0])  # phase -> [calls, seconds]


def _timed(owner, name: str, label: str) -> None:
    fn = getattr(owner, name)

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        start = time.perf_counter()
        try:
            return fn(*args, **kwargs)
        finally:
            TOTALS[label][0] += 1
            TOTALS[label][1] += time.perf_counter() - start

    setattr(owner, name, wrapper)


def pytest_configure(config) -> None:
    import ray

    from search import report, run, stages

    _timed(ray, "init", "ray.init")
    _timed(ray, "shutdown", "ray.shutdown")
    _timed(report, "build", "report.build")
    for name in ("prepare", "measured_throughput", "search", "retrain"):
        _timed(stages, name, f"stages.{name}")
    _timed(run, "main", "run.main (whole runs)")


def pytest_sessionfinish(session) -> None:
    """On a pytest-xdist worker: hand this worker's sums to the controller, which prints them all."""
    if hasattr(session.config, "workeroutput"):
        session.config.workeroutput["suite_phases"] = {k: list(v) for k, v in TOTALS.items()}


def pytest_testnodedown(node, error) -> None:
    """On the controller: add a finished worker's sums (see pytest_sessionfinish)."""
    for label, (calls, seconds) in getattr(node, "workeroutput", {}).get("suite_phases", {}).items():
        TOTALS[label][0] += calls
        TOTALS[label][1] += seconds


def pytest_terminal_summary(terminalreporter) -> None:
    terminalreporter.section("phases of the runs made by the suite's processes (wall seconds, summed over "
                             "xdist workers)")
    for label, (calls, seconds) in sorted(TOTALS.items(), key=lambda kv: -kv[1][1]):
        terminalreporter.write_line(f"{label:28s} {calls:4d} calls {seconds:8.1f} s")
