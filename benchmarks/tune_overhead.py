"""Ray Tune's overhead in a finished search: wall time against the trials' own training time.

    python benchmarks/tune_overhead.py results/shapes/NAME

Training time of a trial = its last `time_s` (our loop's own clock: training + validation epochs,
no Ray). Ideal wall time = summed training time / concurrency. Overhead = 1 - ideal / actual:
trial start-up, checkpoints, reporting, idle slots while the last trials run. Goal: under 10%.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pandas as pd


def main() -> None:
    run_dir = Path(sys.argv[1])
    info = json.loads((run_dir / "run.json").read_text())
    trials = pd.read_csv(run_dir / "trials.csv")
    wall = info["search_wall_s"]
    concurrency = info["plan"]["concurrency"]
    train = trials["last_time_s"].fillna(0).sum()
    ideal = train / concurrency
    epochs = int(trials["epochs_run"].sum())
    print(f"{run_dir}: {len(trials)} trials, {epochs} epochs, concurrency {concurrency}")
    print(f"search wall time   {wall:8.1f} s")
    print(f"summed training    {train:8.1f} s  (/ {concurrency} = {ideal:.1f} s)")
    print(f"overhead           {1 - ideal / wall:8.1%}  ({(wall - ideal) / max(1, len(trials)):.1f} s per trial)")


if __name__ == "__main__":
    main()
