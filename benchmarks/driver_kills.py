"""The driver killed with SIGKILL at random points of one search, resumed after each kill: does the
finished search hold every trial once, every epoch row once, keep what had completed, and leave no
trial of its stored Optuna study running?

    python benchmarks/driver_kills.py [--kills 10] [--seed 0] [--max-delay 20] [--storage] [--trials 8]

Each round starts `python -m search.run shapes --smoke ...` (the first time) or `--resume` (after),
waits until it prints its plan (Ray up, run.json written), then a seeded random 0-20 s more (--max-delay), and sends
SIGKILL: the kills land in Ray Tune's start, mid-epoch, in checkpoint and state writes, between
trials. Once the kills are spent the search is resumed to its end. Prints one line per kill and
the checks; exit 1 when a check fails.
(tests/test_search.py runs it with 2 kills and --storage; the 10-kill run's log is in benchmarks/logs/.)
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import pandas as pd

REPO = Path(__file__).resolve().parents[1]


def command(results: Path, trials: int, storage: bool, resume: bool) -> list[str]:
    cmd = [sys.executable, "-m", "search.run", "shapes", "--results", str(results), "--name", "k"]
    if resume:
        return [*cmd, "--resume"]
    cmd += ["--smoke", "--no-retrain", "--trials", str(trials), "--max-epochs", "3", "--concurrency", "2"]
    return cmd + (["--storage", str(results / "shared")] if storage else [])


def completed(run_dir: Path) -> pd.DataFrame:
    path = run_dir / "trials.csv"
    if not path.exists():
        return pd.DataFrame(columns=["trial_id", "status", "epochs_run"])
    trials = pd.read_csv(path)
    return trials[trials["status"] == "completed"][["trial_id", "epochs_run"]]


def epoch_rows(run_dir: Path) -> int:
    path = run_dir / "history.csv"
    return len(pd.read_csv(path)) if path.exists() else 0


def study_states(run_dir: Path) -> dict[str, int]:
    """How many trials of the run's stored study (optuna.load_study on its journal) are in each state."""
    import optuna

    from search.searcher import STUDY_NAME, journal

    study = optuna.load_study(study_name=STUDY_NAME, storage=journal(run_dir / "optuna.journal"))
    return pd.Series([t.state.name for t in study.trials]).value_counts().to_dict()


def kill_and_resume(results: Path, kills: int, seed: int = 0, storage: bool = False, trials: int = 8,
                    max_delay_s: float = 8.0, log=print) -> dict:
    """Run the rounds; returns {"kills": [...], "problems": [...], "trials": DataFrame, "history": DataFrame}."""
    rng = random.Random(seed)
    run_dir = results / "shapes" / "k"
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    done_then: dict[str, int] = {}  # completed trial -> its epochs, as seen before each kill
    rounds, problems = [], []
    for k in range(kills + 1):
        resume = (run_dir / "run.json").exists()
        proc = subprocess.Popen(command(results, trials, storage, resume), cwd=REPO, env=env,
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        if k == kills:  # the last round runs to the end
            out, _ = proc.communicate(timeout=900)
            if proc.returncode != 0:
                problems.append(f"the final resume exited {proc.returncode}: {out[-1500:]}")
            break
        lines: list[str] = []
        planned = threading.Event()  # the plan printed ("results: ..."): Ray is up, the search about to start

        def read(proc=proc, lines=lines, planned=planned):
            for line in proc.stdout:
                lines.append(line)
                if line.startswith("results:"):
                    planned.set()
            planned.set()  # the process ended

        reader = threading.Thread(target=read, daemon=True)
        reader.start()
        planned.wait(timeout=300)
        delay = rng.uniform(0, max_delay_s)
        time.sleep(delay)
        seen, rows = completed(run_dir), epoch_rows(run_dir)
        finished = proc.poll() is not None
        proc.kill()
        proc.wait(timeout=60)
        reader.join(timeout=60)
        out = "".join(lines)
        if finished:
            log(f"kill {k + 1}: the search had ended before the kill ({delay:.1f} s after its plan)")
            rounds.append({"kill": k + 1, "after_s": round(delay, 2), "landed": False})
            if proc.returncode != 0 and "search done" not in out:
                problems.append(f"round {k + 1} exited {proc.returncode} before its kill: {out[-1500:]}")
            break
        done_then.update(dict(zip(seen["trial_id"], seen["epochs_run"], strict=True)))
        rounds.append({"kill": k + 1, "after_s": round(delay, 2), "landed": True, "completed_before": len(seen),
                       "epoch_rows_before": rows})
        log(f"kill {k + 1}: {delay:.1f} s after its plan, {len(seen)} trials completed and {rows} epoch rows by then")
    trials_df = pd.read_csv(run_dir / "trials.csv")
    history = pd.read_csv(run_dir / "history.csv")
    if len(trials_df) != trials:
        problems.append(f"{len(trials_df)} trials in trials.csv, not {trials}")
    if not trials_df["trial_id"].is_unique:
        problems.append("a trial twice in trials.csv")
    if not set(trials_df["status"]) <= {"completed", "stopped"}:
        problems.append(f"statuses {sorted(set(trials_df['status']))}: a trial failed or never ended")
    if history.duplicated(["trial_id", "epoch"]).any():
        problems.append("an epoch row twice in history.csv")
    states = study_states(run_dir)
    if states.get("RUNNING"):
        problems.append(f"{states['RUNNING']} trials of the stored study still running after the search ended")
    if states.get("COMPLETE", 0) != (trials_df["status"] == "completed").sum():
        problems.append(f"{states.get('COMPLETE', 0)} complete trials in the stored study, "
                        f"{(trials_df['status'] == 'completed').sum()} in trials.csv")
    now = trials_df.set_index("trial_id")
    for trial_id, epochs in done_then.items():
        if trial_id not in now.index or now.loc[trial_id, "status"] != "completed" \
                or int(now.loc[trial_id, "epochs_run"]) != int(epochs):
            problems.append(f"trial {trial_id}, completed with {epochs} epochs before a kill, is not so now")
    return {"kills": rounds, "problems": problems, "trials": trials_df, "history": history, "study": states}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--kills", type=int, default=10)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--trials", type=int, default=8)
    p.add_argument("--max-delay", type=float, default=20.0, help="kill up to this many seconds after the plan")
    p.add_argument("--storage", action="store_true", help="the trials' checkpoints in --storage, not the run folder")
    p.add_argument("--results", type=Path, default=None, help="default: a temporary folder")
    args = p.parse_args()
    results = args.results or Path(tempfile.mkdtemp(prefix="driver-kills-"))
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True)
    print(f"{time.strftime('%Y-%m-%d %H:%M')} commit {commit.stdout.strip()} {os.cpu_count()} CPUs; "
          f"{args.kills} kills up to {args.max_delay} s after the plan, seed {args.seed}, {args.trials} trials, "
          f"storage {args.storage}, results {results}", flush=True)
    start = time.monotonic()
    out = kill_and_resume(results, args.kills, args.seed, args.storage, args.trials, args.max_delay,
                          log=lambda line: print(line, flush=True))
    landed = sum(r["landed"] for r in out["kills"])
    t = out["trials"]
    print(f"{landed} kills landed; finished: {len(t)} trials ({(t['status'] == 'completed').sum()} completed, "
          f"{(t['status'] == 'stopped').sum()} stopped), {len(out['history'])} epoch rows, "
          f"{time.monotonic() - start:.0f} s in all; stored study {out['study']}")
    print(json.dumps({"kills": out["kills"]}))
    for line in out["problems"]:
        print(f"PROBLEM: {line}")
    print("all checks passed" if not out["problems"] else f"{len(out['problems'])} problems")
    return 1 if out["problems"] else 0


if __name__ == "__main__":
    raise SystemExit(main())
