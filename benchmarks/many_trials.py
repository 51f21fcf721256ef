"""Load: a search of many short trials, every trial accounted for and the driver's memory flat.

    python benchmarks/many_trials.py [--trials 200] [--max-epochs 2] [--out DIR]

Runs the real command in a subprocess (cwd the repo root, PYTHONUNBUFFERED=1):
`python -m search.run digit-pairs --source digits --trials N --max-epochs E --no-retrain --results OUT
--name load --seed 0` (800 tiny 2x14x14 pairs: an epoch takes well under a second, so Ray's per-trial
machinery dominates; no retraining, which is not what is measured). Every 0.5 s the parent samples the
driver's RSS (VmRSS of /proc/<pid>/status; the RSS of the processes it started, Ray's, is summed
apart), its CPU time, and the number of trial lines ("[12/200] completed ...") it has printed so far;
OUT/rss.csv keeps the samples, OUT/driver.log its output. The peak is the driver's VmHWM read when it
prints its last line, else the largest sample. Afterwards: exit code, wall time, trials.csv rows (must
be N), status counts, history.csv rows (must be the summed epochs_run), the trial lines' numbering
(1..N, each once), RSS when 10%, 50% and 100% of the trials had ended, and the growth between the 10%
and 100% points in MiB per 100 trials. Goal (the issue): every trial accounted for, growth small
against the RSS at 10%. Other load on the machine inflates the times (not the memory figures).
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import re
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import pandas as pd

from search.io import read_csv

ROOT = Path(__file__).resolve().parents[1]
SAMPLE_S = 0.5
TRIAL_LINE = re.compile(r"^\[(\d+)/(\d+)\] ")  # Progress's line per ended trial
LAST_LINE = "results in "  # search.run's last line: the driver exits right after it
TICKS = os.sysconf("SC_CLK_TCK")
FIELDS = ["elapsed_s", "trials_ended", "rss_mib", "ray_processes_rss_mib", "driver_cpu_s"]


def proc_status(pid: int) -> dict[str, float]:
    """VmRSS and VmHWM of a live process in MiB; {} once it has exited (a zombie has no memory lines)."""
    out = {}
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            key, _, value = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                out[key] = int(value.split()[0]) / 1024
    except (OSError, ValueError):
        return {}
    return out


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
        fields = text[text.rindex(")") + 2:].split()
        return (int(fields[11]) + int(fields[12])) / TICKS
    except (OSError, ValueError, IndexError):
        return float("nan")


def descendants(pid: int) -> list[int]:
    """Every process below pid (Ray's gcs_server, raylet, workers, ...), from /proc/*/stat."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
            ppid = int(text[text.rindex(")") + 2:].split()[1])
            children.setdefault(ppid, []).append(int(stat.parent.name))
        except (OSError, ValueError):
            continue
    out, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            out.append(child)
            todo.append(child)
    return out


class Driver:
    """The search's process, its stdout read line by line in a thread (echoed with a prefix, logged)."""

    def __init__(self, cmd: list[str], log: Path):
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        self.log = log.open("w")
        self.proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                     text=True, bufsize=1)
        self.t0 = time.monotonic()
        self.ended: list[float] = []  # seconds since start at which each trial line came
        self.numbers: list[int] = []  # the numbers the trial lines carry: [12/200] -> 12
        self.hwm: float | None = None  # VmHWM when the last line came
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self) -> None:
        for line in self.proc.stdout:
            if line.startswith(LAST_LINE):
                self.hwm = proc_status(self.proc.pid).get("VmHWM", self.hwm)
            if m := TRIAL_LINE.match(line):
                self.ended.append(time.monotonic() - self.t0)
                self.numbers.append(int(m.group(1)))
            self.log.write(line)
            print("  | " + line, end="", flush=True)
        self.log.close()


def sample(driver: Driver) -> list[dict]:
    rows = []
    pid = driver.proc.pid
    while driver.proc.poll() is None:
        status = proc_status(pid)
        if "VmRSS" in status:
            driver.hwm = max(driver.hwm or 0.0, status["VmHWM"])
            tree = sum(proc_status(p).get("VmRSS", 0.0) for p in descendants(pid))
            rows.append({"elapsed_s": round(time.monotonic() - driver.t0, 2), "trials_ended": len(driver.ended),
                         "rss_mib": round(status["VmRSS"], 1), "ray_processes_rss_mib": round(tree, 1),
                         "driver_cpu_s": round(cpu_seconds(pid), 2)})
        time.sleep(SAMPLE_S)
    driver.reader.join(timeout=30)
    return rows


def at_fraction(samples: pd.DataFrame, n: int, fraction: float) -> pd.Series | None:
    """The first sample taken once fraction x n trials had ended."""
    hit = samples[samples["trials_ended"] >= max(1, round(fraction * n))]
    return hit.iloc[0] if not hit.empty else None


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--trials", type=int, default=200)
    p.add_argument("--max-epochs", type=int, default=2)
    p.add_argument("--out", type=Path, help="results root (default: a new temporary folder)")
    args = p.parse_args()
    n = args.trials
    out = (args.out or Path(tempfile.mkdtemp(prefix="many_trials-"))).resolve()
    out.mkdir(parents=True, exist_ok=True)
    run_dir = out / "digit-pairs" / "load"
    cmd = [sys.executable, "-m", "search.run", "digit-pairs", "--source", "digits", "--trials", str(n),
           "--max-epochs", str(args.max_epochs), "--no-retrain", "--results", str(out), "--name", "load",
           "--seed", "0"] + (["--overwrite"] if run_dir.exists() else [])
    print(f"out: {out}")
    print("running: " + " ".join(cmd[1:]), flush=True)

    driver = Driver(cmd, out / "driver.log")
    rows = sample(driver)
    code, wall = driver.proc.wait(), time.monotonic() - driver.t0
    with (out / "rss.csv").open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=FIELDS)
        w.writeheader()
        w.writerows(rows)
    samples = pd.DataFrame(rows, columns=FIELDS)

    print()
    print(f"exit code          {code}")
    print(f"wall time          {wall:8.1f} s  (driver, start-up and report included)")
    complete = lines_ok = False
    if (run_dir / "trials.csv").is_file():
        info = json.loads((run_dir / "run.json").read_text())
        trials = read_csv(run_dir / "trials.csv")
        history = read_csv(run_dir / "history.csv")
        epochs = int(trials["epochs_run"].sum())
        counts = trials["status"].value_counts().to_dict()
        conc = info["plan"]["concurrency"]
        search_wall = info.get("search_wall_s", float("nan"))
        train = trials["last_time_s"].fillna(0).mean() if "last_time_s" in trials else float("nan")
        complete = (code == 0 and len(trials) == n and trials["trial_id"].nunique() == n
                    and len(history) == epochs and "running" not in counts)
        print(f"search wall time   {search_wall:8.1f} s  (run.json; concurrency {conc})")
        print(f"trials.csv         {len(trials)} rows of {n} ({trials['trial_id'].nunique()} distinct ids); "
              + ", ".join(f"{v} {k}" for k, v in counts.items()))
        print(f"history.csv        {len(history)} rows; summed epochs_run {epochs}")
        missing = sorted(set(range(1, n + 1)) - set(driver.numbers))
        extra = sorted(k for k in set(driver.numbers) if not 1 <= k <= n or driver.numbers.count(k) > 1)
        lines_ok = not missing and not extra and len(driver.numbers) == n
        print(f"trial lines        {len(driver.numbers)} printed, numbered {min(driver.numbers, default=0)}.."
              f"{max(driver.numbers, default=0)}" + ("" if lines_ok else f"; missing {missing[:10]}, out of range "
                                                     f"or repeated {extra[:10]}"))
        for _, t in trials[trials["status"] == "failed"].head(10).iterrows():
            print(f"  {t['status']:<9} {t['trial_id']}  {t['epochs_run']} epochs  {t['reason']}")
        print(f"per trial          {search_wall / n * conc:.2f} s of a slot (search wall / trials x concurrency), "
              f"of which training {train:.2f} s (mean last_time_s)")
        if len(driver.ended) >= 20:
            t = np.array(driver.ended)
            k = len(t) // 10
            print(f"trial rate         {k / (t[k] - t[0]) * 60:.0f}/min over the first 10% of trials, "
                  f"{k / (t[-1] - t[-1 - k]) * 60:.0f}/min over the last 10%")
            first, last = samples[samples["trials_ended"] <= k], samples[samples["trials_ended"] >= n - k]
            first = first[first["trials_ended"] >= 1]  # from the first trial's end: start-up excluded
            if len(first) > 1 and len(last) > 1:
                share = [(s["driver_cpu_s"].iloc[-1] - s["driver_cpu_s"].iloc[0])
                         / (s["elapsed_s"].iloc[-1] - s["elapsed_s"].iloc[0]) for s in (first, last)]
                print(f"driver CPU         {share[0]:.0%} of a core over the first 10% of trials, "
                      f"{share[1]:.0%} over the last 10%")
    else:
        print(f"trials.csv         missing in {run_dir}")

    points = {f: at_fraction(samples, n, f) for f in (0.1, 0.5, 1.0)}
    peak = max(driver.hwm or 0.0, samples["rss_mib"].max() if not samples.empty else 0.0)
    for f, s in points.items():
        print(f"RSS at {f:4.0%}        " + (f"{s['rss_mib']:8.1f} MiB  ({s['trials_ended']:.0f} trials ended, "
                                            f"{s['elapsed_s']:.0f} s; Ray's processes {s['ray_processes_rss_mib']:.0f} "
                                            "MiB)" if s is not None else "     n/a"))
    if not samples.empty:
        print(f"RSS last sample    {samples['rss_mib'].iloc[-1]:8.1f} MiB  ({samples['elapsed_s'].iloc[-1]:.0f} s)")
    print(f"peak (VmHWM)       {peak:8.1f} MiB" + ("" if driver.hwm else "  (largest sample: VmHWM not read)"))
    print(f"samples            {len(samples)} in {out / 'rss.csv'}")

    print()
    print(f"every trial accounted for: {'yes' if complete else 'no'}")
    if complete and not lines_ok:
        print("  (in trials.csv; but the driver's trial lines are not numbered 1..N once each, see above)")
    a, b = points[0.1], points[1.0]
    if a is not None and b is not None and b["trials_ended"] > a["trials_ended"]:
        growth = (b["rss_mib"] - a["rss_mib"]) / (b["trials_ended"] - a["trials_ended"]) * 100
        span = samples[(samples.index >= a.name) & (samples.index <= b.name)]
        slope = np.polyfit(span["trials_ended"], span["rss_mib"], 1)[0] * 100
        print(f"memory growth: {growth:.1f} MiB per 100 trials (RSS at 10%: {a['rss_mib']:.0f} MiB, at end: "
              f"{b['rss_mib']:.0f} MiB); {growth / a['rss_mib']:.1%} of the 10% RSS per 100 trials; "
              f"least-squares slope over the samples between: {slope:.1f} MiB per 100 trials")
    else:
        print("memory growth: n/a (no samples at the 10% and 100% points)")


if __name__ == "__main__":
    main()
