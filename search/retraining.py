"""Retraining: the best configurations and the baseline on fresh seeds, scored once on the held-out split.

The top K distinct configurations of the search and the experiment's hand-tuned baseline are
each trained on the whole training split (no validation, no early stopping: the full epoch
budget) with the same S fresh seeds, then evaluated once on the held-out split no search saw.
Runs go through Ray, as many at once as resources allow. Each finished run is kept
(retrain/<label>-seed<S>/: model.pt state_dict, metrics.json, history.csv, TensorBoard events), so an interrupted
retraining resumes where it stopped. Writes retrain.csv (one row per config and seed),
retrain_history.csv and verdict.csv (search/stats.py: mean, std, 95% interval, paired difference
to the baseline). The command is search/retrain.py; the run's stages call `retrain` here.
"""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import ray
import torch

from datasets.files import atomic_write
from search import experiments, tensorboard
from search.analyse import kept_baseline
from search.config import UserError, format_config
from search.experiment import Data, Experiment, matches
from search.io import read_csv, read_json, write_csv, write_json
from search.loop import Changes, evaluate, fit, resolve_precision, stretch
from search.protocol import trained_schedule, trial_config
from search.record import RunRecord
from search.stats import BASELINE, verdict, verdict_sentence
from search.tables import best_trial
from search.trial import trial_device

STATUS_EVERY_S = 30.0  # a status line of the running retrain runs, as often as the search's
SEED_BASE = 1000  # retrain seeds are SEED_BASE + search seed * 100 + i: never a seed a trial used


@dataclass
class Job:
    label: str  # "baseline", "top1", "top2", ...
    config: dict[str, Any]
    seed: int
    trial_id: str | None = None
    changes: Changes | None = None  # a schedule of hyperparameters to replay (Population Based Training)

    @property
    def name(self) -> str:
        return f"{self.label}-seed{self.seed}"


def top_configs(trials: pd.DataFrame, exp: Experiment, searched: list[str], k: int,
                baseline: dict[str, Any] | None = None) -> list[tuple[str, dict, Changes]]:
    """The K best trials whose searched values (and schedules, under PBT) differ (ties of identical
    configs count once), leaving out the warm-start trial, the one at `baseline` (RunRecord.warm_start_point):
    it is the baseline, which is retrained anyway. Each as (trial id, config at epoch 1, the changes after
    epoch 1 to replay)."""
    ok = trials[(trials["status"] != "failed") & trials[f"best_{exp.objective}"].notna()]
    ok = ok.sort_values(f"best_{exp.objective}", ascending=exp.mode == "min", kind="stable")
    picked, seen = [], set()
    for _, row in ok.iterrows():
        config = trial_config(row, exp.defaults)
        schedule = trained_schedule(row)
        if schedule:
            config.update(schedule[0][1])
        changes = schedule[1:]
        key = (tuple(config[c] for c in searched), json.dumps(changes))
        if key in seen or (baseline is not None and not changes and matches(config, baseline)):
            continue
        seen.add(key)
        picked.append((row["trial_id"], config, changes))
        if len(picked) == k:
            break
    return picked


def plan_jobs(run_dir: Path, record: RunRecord, exp: Experiment, top_k: int, seeds: int, epochs: int) -> list[Job]:
    trials = read_csv(run_dir / "trials.csv")
    if best_trial(trials, exp.objective, exp.mode) is None:
        raise UserError(f"{run_dir}: no trial finished with a {exp.objective}; nothing to retrain")
    first_seed = SEED_BASE + 100 * record.seed
    seed_list = [first_seed + i for i in range(seeds)]
    baseline = {**exp.defaults, **record.pinned, "epochs": epochs}  # --set pins hold for the baseline too
    warm = record.warm_start_point(exp) if record.warm_start_is_baseline else None  # else a tuned config like any
    configs = [(BASELINE, None, baseline, None)] + [
        # a schedule found over the search's epochs keeps its shape over the retrain's
        (f"top{i + 1}", tid, {**cfg, "epochs": epochs}, stretch(changes, record.plan.max_epochs, epochs) or None)
        for i, (tid, cfg, changes) in enumerate(top_configs(trials, exp, record.searched, top_k, warm))]
    return [Job(label, {**cfg, "seed": s}, s, tid, changes) for label, tid, cfg, changes in configs for s in seed_list]


def run_job(job: Job, experiment: str, full_train, test, on_epoch=None) -> dict[str, Any]:
    """One retrain run (in a Ray worker): whole training split, fixed epochs, held-out score."""
    exp = experiments.get(experiment)
    device = trial_device()
    result = fit(exp.task, job.config, full_train, None, device=device, changes=job.changes,
                 tracked=tuple(sorted({k for _, values in job.changes or () for k in values})), on_epoch=on_epoch)
    precision = resolve_precision(job.config["precision"], device)
    scores = evaluate(exp.task, result.model, test.to(device), result.config, precision, prefix="test_")
    added = {k: v for k, v in result.config.items() if k not in job.config}  # task.statistics(), e.g. normalisation
    return {"history": result.history, "test": scores, "statistics": added,
            "state": {k: v.cpu() for k, v in result.model.state_dict().items()}, "threads": torch.get_num_threads()}


def save_job(run_dir: Path, job: Job, out: dict[str, Any]) -> None:
    folder = run_dir / "retrain" / job.name
    write_csv(folder / "history.csv", out["history"])
    atomic_write(folder / "model.pt", lambda f: torch.save(out["state"], f))
    tensorboard.write_run(folder, out["history"], job.config, out["test"])
    # metrics.json last: its presence marks the run as done (resume skips it)
    write_json(folder / "metrics.json", {"label": job.label, "seed": job.seed, "trial_id": job.trial_id,
                                          "config": job.config, "changes": job.changes,
                                          "statistics": out.get("statistics", {}), **out["test"]})


def done_before(run_dir: Path, job: Job, defaults: dict[str, Any]) -> bool:
    """Finished in an earlier (interrupted) retraining with this very config: nothing to redo.
    A folder of the same name with another config (the top configs changed) is redone. `defaults`:
    the experiment's."""
    path = run_dir / "retrain" / job.name / "metrics.json"
    if not path.is_file():
        return False
    done, wanted = read_json(path), json.loads(json.dumps(job.config))
    # a key the experiment gained since that run, at its default, changes nothing the run did
    gained = {k for k in wanted.keys() - done["config"].keys() if wanted[k] == defaults.get(k)}
    return (done["config"] == {k: v for k, v in wanted.items() if k not in gained}
            and done.get("changes") == json.loads(json.dumps(job.changes)))


def run_jobs(run_dir: Path, exp: Experiment, jobs: list[Job], data, cpus: float, gpus: float,
             print_fn=None) -> None:
    print_fn = print_fn or functools.partial(print, flush=True)
    todo = [j for j in jobs if not done_before(run_dir, j, exp.defaults)]
    if len(todo) < len(jobs):
        print_fn(f"retrain: {len(jobs) - len(todo)} of {len(jobs)} runs already done, {len(todo)} to go")
    if not todo:
        return
    remote = retrain_task(cpus, gpus)
    train_ref, test_ref = ray.put(data.full_train), ray.put(data.test)
    board = _EpochBoard.remote()
    pending = {remote.remote(j, exp.name, train_ref, test_ref, board): j for j in todo}
    while pending:
        done, _ = ray.wait(list(pending), num_returns=1, timeout=STATUS_EVERY_S)
        if not done:  # minutes per run on a CPU: say where the running ones are
            epochs = ray.get(board.epochs.remote())
            running = [f"{j.name} epoch {epochs[j.name]}/{j.config['epochs']}" for j in pending.values()
                       if j.name in epochs]
            print_fn(f"retrain: {len(jobs) - len(pending)} of {len(jobs)} runs done"
                     + (f"; {', '.join(running)}" if running else ""))
            continue
        job = pending.pop(done[0])
        out = ray.get(done[0])
        save_job(run_dir, job, out)
        value = out["test"].get(f"test_{exp.objective.removeprefix('val_')}")
        shown = f"test_{exp.objective.removeprefix('val_')} {value:.4f}" if value is not None else ""
        print_fn(f"retrain: {job.name} done  {shown}")


def retrain_task(cpus: float, gpus: float):
    """A retrain run as a Ray task with the search's share of a trial (1/8 GPU by default: 8 runs at
    once per GPU). max_calls=0: a worker runs one job after another. Ray's default for GPU tasks is
    a fresh worker per task, which pays the start of Python, torch and a CUDA context (seconds) for
    each run of a few seconds' epochs; the job frees its cached GPU memory instead."""
    return ray.remote(num_cpus=cpus, num_gpus=gpus, max_retries=0, max_calls=0)(_remote_job)


@ray.remote(num_cpus=0)
class _EpochBoard:
    """Where each running retrain run is (its last finished epoch), for the driver's status line."""

    def __init__(self):
        self._epochs: dict[str, int] = {}

    def set(self, name: str, epoch: int) -> None:
        self._epochs[name] = epoch

    def epochs(self) -> dict[str, int]:
        return dict(self._epochs)


def _remote_job(job: Job, experiment: str, full_train, test, board=None) -> dict[str, Any]:
    torch.set_num_threads(max(1, int(ray.get_runtime_context().get_assigned_resources().get("CPU", 1))))

    def on_epoch(row, _checkpoint, _last):
        if board is not None:
            board.set.remote(job.name, int(row["epoch"]))
    try:
        return run_job(job, experiment, full_train, test, on_epoch)
    finally:
        if torch.cuda.is_available():
            torch.cuda.empty_cache()  # the worker stays (max_calls=0): leave the GPU's memory to the next run


def collect(run_dir: Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    """retrain.csv and retrain_history.csv from the per-run folders."""
    rows, history = [], []
    for metrics in sorted((run_dir / "retrain").glob("*/metrics.json")):
        m = read_json(metrics)
        config = m.pop("config")
        m.pop("statistics", None)  # of the training split, not a metric
        changes = m.pop("changes", None)
        if changes:
            m["changes"] = json.dumps(changes)
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


def retrain(run_dir: Path, record: RunRecord, data: Data, *, top_k: int, seeds: int, epochs: int, cpus: float,
            gpus: float, print_fn=None) -> pd.DataFrame:
    """Retrain (the part not done before), then write retrain.csv, retrain_history.csv and verdict.csv.
    `data` is the experiment's data as the plan cut it (search/stages.py)."""
    print_fn = print_fn or functools.partial(print, flush=True)
    exp = experiments.get(record.experiment)
    jobs = plan_jobs(run_dir, record, exp, top_k, seeds, epochs)
    labels = sorted({j.label for j in jobs}, key=lambda s: (s != BASELINE, s))
    print_fn(f"retrain: {', '.join(labels)} x {seeds} seeds, {epochs} epochs on {len(data.full_train)} images, "
             f"scored on the {len(data.test)} held-out")
    for label in labels:
        job = next(j for j in jobs if j.label == label)
        shown = [*record.searched, *record.tuned_with, *(exp.decoding.keys if record.plan.choose_decoding else ())]
        print_fn(f"  {label:<8} {format_config(job.config, shown)}")
        for first, values in job.changes or ():  # a replayed schedule (Population Based Training)
            print_fn(f"  {'':<8} from epoch {first}: {format_config(values, list(values))}")
    run_jobs(run_dir, exp, jobs, data, cpus, gpus, print_fn)
    table, history = collect(run_dir)
    write_csv(run_dir / "retrain.csv", table)
    write_csv(run_dir / "retrain_history.csv", history)
    metric = record.test_objective
    v = verdict(table, metric, exp.mode)
    write_csv(run_dir / "verdict.csv", v)
    for _, r in v.iterrows():
        print_fn(f"  {r['label']:<8} {metric} {r['mean']:.4f} ± {r['std']:.4f} "
                 f"(95% {r['ci_low']:.4f} .. {r['ci_high']:.4f}, n={int(r['n'])})")
    print_fn("verdict: " + verdict_sentence(v, metric, kept_baseline(read_csv(run_dir / "trials.csv"), record)))
    return v
