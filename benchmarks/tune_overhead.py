"""Ray Tune's overhead in a finished search: wall time against the trials' own training time.

    python benchmarks/tune_overhead.py results/shapes/NAME [...]

Training time of a trial = its last `time_s` (our loop's own clock: training + validation epochs,
no Ray). Ideal wall time = summed training time / concurrency. Overhead = 1 - ideal / actual.
Goal: under 10%.

The slot-seconds (wall time x concurrency) not spent training are split by where they went, from
each epoch's report time (Ray's `timestamp`) and the loop's own clock:
  start     before the first trial began (Ray Tune and the searcher starting, the first actor)
  per epoch inside trials, around the training loop (reporting, checkpoints, the first batch)
  between   slots idle between one trial's end and the next one's start (actor reuse, proposals)
  tail      slots idle after the last trial started: the last trials running while others wait
  end       after the last report (Tune's last experiment checkpoint, shutdown)
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import pandas as pd

from search.io import read_csv


def intervals(history: pd.DataFrame) -> pd.DataFrame:
    """One row per trial: when its training loop started and when it last reported (Unix s)."""
    rows = []
    for trial_id, h in history.groupby("trial_id", sort=False):
        h = h.sort_values("timestamp")
        first = h.iloc[0]
        # time_s is cumulative from the trial's (re)start; a trial resumed from a checkpoint would bias this
        rows.append({"trial_id": trial_id, "start": first["timestamp"] - first["time_s"],
                     "end": h["timestamp"].iloc[-1], "train": h["time_s"].iloc[-1]})
    return pd.DataFrame(rows).sort_values("start").reset_index(drop=True)


def idle_between(spans: pd.DataFrame, t0: float, t1: float, slots: int, step: float = 0.05) -> float:
    """Slot-seconds in [t0, t1) with fewer than `slots` trials running (sampled every `step` s)."""
    if t1 <= t0:
        return 0.0
    grid = pd.Series(range(int((t1 - t0) / step))) * step + t0
    running = sum(((grid >= s) & (grid < e)).astype(int) for s, e in zip(spans["start"], spans["end"], strict=True))
    return float((slots - running).clip(lower=0).sum() * step)


def report(run_dir: Path) -> None:
    info = json.loads((run_dir / "run.json").read_text())
    trials = read_csv(run_dir / "trials.csv")
    history = read_csv(run_dir / "history.csv")
    wall, slots = info["search_wall_s"], info["plan"]["concurrency"]
    train = trials["last_time_s"].fillna(0).sum()
    ideal = train / slots
    epochs = int(trials["epochs_run"].sum())
    print(f"{run_dir}: {len(trials)} trials, {epochs} epochs, concurrency {slots}")
    print(f"search wall time   {wall:8.1f} s")
    print(f"summed training    {train:8.1f} s  (/ {slots} = {ideal:.1f} s)")
    print(f"overhead           {1 - ideal / wall:8.1%}  ({(wall - ideal) / max(1, len(trials)):.1f} s per trial)")
    if "timestamp" not in history or "finished" not in info:
        return
    spans = intervals(history)
    end = time.mktime(time.strptime(info["finished"], "%Y-%m-%d %H:%M:%S")) + 0.5  # written to the second
    start = end - wall
    parts = {
        "start": (spans["start"].min() - start) * slots,
        "per epoch": float((spans["end"] - spans["start"]).sum() - train),
        "between": idle_between(spans, spans["start"].min(), spans["start"].max(), slots),
        "tail": idle_between(spans, spans["start"].max(), spans["end"].max(), slots),
        "end": (end - spans["end"].max()) * slots,
    }
    lost = wall * slots - train
    print(f"slot-seconds not training: {lost:.1f} of {wall * slots:.1f} (+-{slots} s: times to the second)")
    for name, value in parts.items():
        print(f"  {name:<10} {value:7.1f} s  {value / (wall * slots):6.1%} of the slot time")


def main() -> None:
    for path in sys.argv[1:]:
        report(Path(path))


if __name__ == "__main__":
    main()
