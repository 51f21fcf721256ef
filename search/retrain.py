"""Retrain the best configurations on fresh seeds and score them once on the held-out split.

    python -m search.retrain results/shapes/NAME [--top-k K] [--seeds S] [--epochs E]

The top K distinct configurations of the search and the experiment's hand-tuned baseline are
each trained on the whole training split (no validation, no early stopping: the full epoch
budget) with the same S fresh seeds, then evaluated once on the held-out split no search saw.
Runs go through Ray, as many at once as resources allow. Each finished run is kept
(retrain/<label>-seed<S>/: model.pt state_dict, metrics.json, history.csv, TensorBoard events), so an interrupted
retraining resumes where it stopped. Writes retrain.csv (one row per config and seed),
retrain_history.csv and verdict.csv (mean, std, 95% interval, paired difference to the baseline).
"""

from __future__ import annotations

import functools
import json
import math
import shlex
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from search import cli, experiments, tensorboard
from search.config import UserError, format_config
from search.experiment import DataOptions, Experiment, matches, warm_start
from search.io import read_csv, read_json, write_csv, write_json
from search.lock import RunLock
from search.tables import best_trial
from search.trainer import Split

BASELINE = "baseline"
SEED_BASE = 1000  # retrain seeds are SEED_BASE + search seed * 100 + i: never a seed a trial used

# Two-sided 95% Student t quantiles by degrees of freedom (scipy is not a dependency).
T975 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306, 9: 2.262, 10: 2.228,
        12: 2.179, 15: 2.131, 20: 2.086, 30: 2.042}


def t975(df: int) -> float:
    if df <= 0:
        return math.nan
    if df > 30:
        return 1.96 + 2.4 / df  # within 0.002 of the exact quantile
    return T975[max(k for k in T975 if k <= df)]  # between table rows: the next smaller df, a wider interval


@dataclass
class Job:
    label: str  # "baseline", "top1", "top2", ...
    config: dict[str, Any]
    seed: int
    trial_id: str | None = None

    @property
    def name(self) -> str:
        return f"{self.label}-seed{self.seed}"


def top_configs(trials: pd.DataFrame, exp: Experiment, searched: list[str], k: int,
                base: dict[str, Any] | None = None) -> list[tuple[str, dict]]:
    """The K best trials whose searched values differ (ties of identical configs count once),
    leaving out the warm-start trial: it is the baseline, which is retrained anyway."""
    ok = trials[(trials["status"] != "failed") & trials[f"best_{exp.objective}"].notna()]
    ok = ok.sort_values(f"best_{exp.objective}", ascending=exp.mode == "min", kind="stable")
    baseline = warm_start(dict(base), {c: exp.space[c] for c in searched}) if base is not None else None
    picked, seen = [], set()
    for _, row in ok.iterrows():
        key = tuple(row[c] for c in searched)
        if key in seen or (baseline is not None and matches(row, baseline)):
            continue
        seen.add(key)
        config = {c: _plain(row[c]) for c in exp.defaults}
        picked.append((row["trial_id"], config))
        if len(picked) == k:
            break
    return picked


def plan_jobs(run_dir: Path, exp: Experiment, top_k: int, seeds: int, epochs: int) -> list[Job]:
    info = read_json(run_dir / "run.json")
    trials = read_csv(run_dir / "trials.csv")
    if best_trial(trials, exp.objective, exp.mode) is None:
        raise UserError(f"{run_dir}: no trial finished with a {exp.objective}; nothing to retrain")
    first_seed = SEED_BASE + 100 * int(info["base_config"].get("seed", 0))
    seed_list = [first_seed + i for i in range(seeds)]
    baseline = {**exp.defaults, **info.get("pinned", {}), "epochs": epochs}  # --set pins hold for the baseline too
    configs = [(BASELINE, None, baseline)] + [
        (f"top{i + 1}", tid, {**cfg, "epochs": epochs}) for i, (tid, cfg) in
        enumerate(top_configs(trials, exp, info["searched"], top_k, info["base_config"]))]
    return [Job(label, {**cfg, "seed": s}, s, tid) for label, tid, cfg in configs for s in seed_list]


def run_job(job: Job, experiment: str, full_train, test) -> dict[str, Any]:
    """One retrain run (in a Ray worker): whole training split, fixed epochs, held-out score."""
    import torch

    from search.trainable import trial_device
    from search.trainer import evaluate, fit, resolve_precision

    exp = experiments.get(experiment)
    device = trial_device()
    result = fit(exp.task, job.config, full_train, None, device=device)
    precision = resolve_precision(job.config["precision"], device)
    scores = evaluate(exp.task, result.model, test.to(device), result.config, precision, prefix="test_")
    added = {k: v for k, v in result.config.items() if k not in job.config}  # task.statistics(), e.g. normalisation
    return {"history": result.history, "test": scores, "statistics": added,
            "state": {k: v.cpu() for k, v in result.model.state_dict().items()}, "threads": torch.get_num_threads()}


def save_job(run_dir: Path, job: Job, out: dict[str, Any]) -> None:
    import torch

    from datasets.files import atomic_write

    folder = run_dir / "retrain" / job.name
    write_csv(folder / "history.csv", out["history"])
    atomic_write(folder / "model.pt", lambda f: torch.save(out["state"], f))
    tensorboard.write_run(folder, out["history"], job.config, out["test"])
    # metrics.json last: its presence marks the run as done (resume skips it)
    write_json(folder / "metrics.json", {"label": job.label, "seed": job.seed, "trial_id": job.trial_id,
                                          "config": job.config, "statistics": out.get("statistics", {}),
                                          **out["test"]})


def done_before(run_dir: Path, job: Job) -> bool:
    """Finished in an earlier (interrupted) retraining with this very config: nothing to redo.
    A folder of the same name with another config (the top configs changed) is redone."""
    path = run_dir / "retrain" / job.name / "metrics.json"
    if not path.is_file():
        return False
    return read_json(path)["config"] == json.loads(json.dumps(job.config))


def run_jobs(run_dir: Path, exp: Experiment, jobs: list[Job], data, cpus: float, gpus: float,
             print_fn=None) -> None:
    print_fn = print_fn or functools.partial(print, flush=True)
    import ray

    todo = [j for j in jobs if not done_before(run_dir, j)]
    if len(todo) < len(jobs):
        print_fn(f"retrain: {len(jobs) - len(todo)} of {len(jobs)} runs already done, {len(todo)} to go")
    if not todo:
        return
    remote = ray.remote(num_cpus=cpus, num_gpus=gpus, max_retries=0)(_remote_job)
    train_ref, test_ref = ray.put(data.full_train), ray.put(data.test)
    pending = {remote.remote(j, exp.name, train_ref, test_ref): j for j in todo}
    while pending:
        done, _ = ray.wait(list(pending), num_returns=1)
        job = pending.pop(done[0])
        out = ray.get(done[0])
        save_job(run_dir, job, out)
        value = out["test"].get(f"test_{exp.objective.removeprefix('val_')}")
        shown = f"test_{exp.objective.removeprefix('val_')} {value:.4f}" if value is not None else ""
        print_fn(f"retrain: {job.name} done  {shown}")


def _remote_job(job: Job, experiment: str, full_train, test) -> dict[str, Any]:
    import ray
    import torch

    torch.set_num_threads(max(1, int(ray.get_runtime_context().get_assigned_resources().get("CPU", 1))))
    return run_job(job, experiment, full_train, test)


def collect(run_dir: Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    """retrain.csv and retrain_history.csv from the per-run folders."""
    rows, history = [], []
    for metrics in sorted((run_dir / "retrain").glob("*/metrics.json")):
        m = read_json(metrics)
        config = m.pop("config")
        m.pop("statistics", None)  # of the training split, not a metric
        rows.append({**{k: v for k, v in m.items()}, **{f"config_{k}": v for k, v in config.items()}})
        h = read_csv(metrics.parent / "history.csv")
        h.insert(0, "seed", m["seed"])
        h.insert(0, "label", m["label"])
        history.append(h)
    frame = pd.DataFrame(rows)
    if not frame.empty:  # baseline first, then top1, top2, ...; seeds in order
        frame["_tuned"] = frame["label"] != BASELINE
        frame = frame.sort_values(["_tuned", "label", "seed"]).drop(columns="_tuned").reset_index(drop=True)
    return frame, pd.concat(history, ignore_index=True) if history else pd.DataFrame()


def verdict(retrain: pd.DataFrame, metric: str, mode: str) -> pd.DataFrame:
    """Per config: mean, std, 95% interval over seeds; paired difference to the baseline on the
    same seeds, its 95% interval, and whether it beats the baseline beyond seed noise."""
    rows = []
    base = retrain[retrain["label"] == BASELINE].set_index("seed")[metric]
    for label, group in retrain.groupby("label", sort=False):
        values = group.set_index("seed")[metric]
        n = len(values)
        row = {"label": label, "n": n, "mean": values.mean(), "std": values.std(ddof=1) if n > 1 else math.nan}
        half = t975(n - 1) * row["std"] / math.sqrt(n) if n > 1 else math.nan
        row["ci_low"], row["ci_high"] = row["mean"] - half, row["mean"] + half
        if label != BASELINE:
            common = values.index.intersection(base.index)
            diff = values[common] - base[common]
            m = len(diff)
            row["diff_mean"] = diff.mean()
            dhalf = t975(m - 1) * diff.std(ddof=1) / math.sqrt(m) if m > 1 else math.nan
            row["diff_low"], row["diff_high"] = row["diff_mean"] - dhalf, row["diff_mean"] + dhalf
            better = row["diff_low"] > 0 if mode == "max" else row["diff_high"] < 0
            worse = row["diff_high"] < 0 if mode == "max" else row["diff_low"] > 0
            row["beats_baseline"] = bool(better) if m > 1 else False
            row["worse_than_baseline"] = bool(worse) if m > 1 else False
        rows.append(row)
    return pd.DataFrame(rows)


def verdict_sentence(v: pd.DataFrame, metric: str) -> str:
    tuned = v[v["label"] != BASELINE]
    if tuned.empty:
        return "no tuned configuration was retrained."
    best = tuned.iloc[0]
    diff = f"{best['diff_mean']:+.4f} (95% interval {best['diff_low']:+.4f} .. {best['diff_high']:+.4f})"
    if best.get("beats_baseline"):
        return f"the best tuned config beats the baseline beyond seed noise on {metric}: paired difference {diff}."
    if best.get("worse_than_baseline"):
        return (f"the best tuned config is worse than the baseline beyond seed noise on {metric}: paired difference "
                f"{diff} over {int(best['n'])} seeds.")
    return (f"the best tuned config does not beat the baseline beyond seed noise on {metric}: paired difference "
            f"{diff} over {int(best['n'])} seeds.")


def retrain(run_dir: Path, *, top_k: int, seeds: int, epochs: int | None, cpus: float, gpus: float,
            data=None, print_fn=None) -> pd.DataFrame:
    print_fn = print_fn or functools.partial(print, flush=True)
    info = read_json(run_dir / "run.json")
    exp = experiments.get(info["experiment"])
    epochs = epochs or int(exp.defaults["epochs"])
    for name, value in (("--top-k", top_k), ("--seeds", seeds), ("--epochs", epochs)):
        if value < 1:
            raise UserError(f"{name} {value}: give a whole number of at least 1")
    jobs = plan_jobs(run_dir, exp, top_k, seeds, epochs)
    if data is None:
        opts = info["options"]
        data = exp.load(DataOptions.of_run(opts))
    subset = info["plan"].get("retrain_subset")
    if subset:  # a smoke run retrains on a slice too
        data.full_train = Split(data.full_train.x[:subset], data.full_train.y[:subset])
    labels = sorted({j.label for j in jobs}, key=lambda s: (s != BASELINE, s))
    print_fn(f"retrain: {', '.join(labels)} x {seeds} seeds, {epochs} epochs on {len(data.full_train)} images, "
             f"scored on the {len(data.test)} held-out")
    for label in labels:
        job = next(j for j in jobs if j.label == label)
        print_fn(f"  {label:<8} {format_config(job.config, list(info['searched']))}")
    run_jobs(run_dir, exp, jobs, data, cpus, gpus, print_fn)
    table, history = collect(run_dir)
    write_csv(run_dir / "retrain.csv", table)
    write_csv(run_dir / "retrain_history.csv", history)
    metric = "test_" + exp.objective.removeprefix("val_")
    v = verdict(table, metric, exp.mode)
    write_csv(run_dir / "verdict.csv", v)
    for _, r in v.iterrows():
        print_fn(f"  {r['label']:<8} {metric} {r['mean']:.4f} ± {r['std']:.4f} "
                 f"(95% {r['ci_low']:.4f} .. {r['ci_high']:.4f}, n={int(r['n'])})")
    print_fn("verdict: " + verdict_sentence(v, metric))
    return v


def _plain(v: Any) -> Any:
    return v.item() if hasattr(v, "item") else v


def main(argv: list[str]) -> int:
    p = cli.ArgumentParser(prog="python -m search.retrain", description=__doc__.split("\n\n")[0])
    p.add_argument("run_dir", type=Path, help="a finished search, e.g. results/shapes/NAME")
    p.add_argument("--top-k", type=int, help="configs to retrain besides the baseline (default: the run's plan)")
    p.add_argument("--seeds", type=int, help="fresh seeds per config (default: the run's plan)")
    p.add_argument("--epochs", type=int, help="epochs per run (default: the run's plan)")
    p.add_argument("--cpus-per-run", type=float, help="CPUs per run (default: the search's per-trial share)")
    p.add_argument("--gpus-per-run", type=float, help="GPU share per run (default: the search's)")
    args = p.parse_args(argv)
    run_dir = args.run_dir.expanduser().resolve()
    if not (run_dir / "run.json").is_file() or not (run_dir / "trials.csv").is_file():
        raise UserError(f"{run_dir}: not a finished search (no run.json and trials.csv there)")
    plan = read_json(run_dir / "run.json")["plan"]
    import ray

    lock = RunLock(run_dir).acquire()  # not while the search (or another retraining) writes this run
    ray.init(include_dashboard=False, log_to_driver=False, configure_logging=True, logging_level="WARNING")
    cli.stop_on_sigterm()
    try:
        retrain(run_dir, top_k=args.top_k or plan.get("retrain_top_k", 1), seeds=args.seeds or plan.get(
            "retrain_seeds", 2), epochs=args.epochs or plan.get("retrain_epochs"),
            cpus=args.cpus_per_run or plan["cpus_per_trial"], gpus=plan["gpus_per_trial"]
            if args.gpus_per_run is None else args.gpus_per_run)
    except KeyboardInterrupt:  # each finished run is kept: the same command goes on with the others
        print(f"interrupted; the finished runs are kept; continue with:\n  python -m search.retrain {shlex.join(argv)}",
              file=sys.stderr)
        return 130
    finally:
        ray.shutdown()
        lock.release()
    from search.report import build

    print(f"report: {build(run_dir)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(cli.run(main, sys.argv[1:]))
