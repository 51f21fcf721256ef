"""A run as four stages over one context: prepare -> search -> retrain -> report.

    ctx = prepare(request, hardware)   # the plan (or the interrupted run's own), data cut to it, run.json
    search(ctx)                        # Ray Tune trials -> trials.csv, history.csv, best_config.json
    retrain(ctx)                       # top configs + baseline on fresh seeds -> retrain.csv, verdict.csv
    report(ctx)                        # report.md and its figures

`python -m search.run` calls them in that order inside a Ray session and the run's lock;
`--resume` calls the same stages on the record the run left (a finished search is not redone,
unless `--trials N` grows it);
`--settings` runs them once per setting; `python -m search.retrain` calls the last two on a
finished search. Every stage reads and updates the run's record (search/record.py) and nothing
else carries state between them.
"""

from __future__ import annotations

import dataclasses
import functools
import platform
import shlex
import shutil
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import optuna
import pandas as pd
import ray
import torch

from search import experiments, retraining, schedulers, warm
from search import growth as growth_files
from search import report as report_md
from search import storage as trial_storage
from search.config import UserError, format_config
from search.experiment import Data, Dim, Experiment, narrowed
from search.io import read_csv
from search.loop import Decoding, images_per_second
from search.plan import (
    Hardware,
    Plan,
    cluster_hardware,
    cut_to_plan,
    estimate_minutes,
    fitted_retrain_epochs,
    retrain_minutes_left,
    split_total,
)
from search.protocol import STATUSES, chosen_decoding
from search.record import RunRecord, check_same_data
from search.searcher import settle_running
from search.tables import best_trial
from search.trial import clean_stale_checkpoints, trial_device
from search.tuner import STUDY_FILE, local_folder, run_search, storage_folder


@dataclass
class Request:
    """What the command asked for, checked: everything `prepare` needs besides the hardware."""

    exp: Experiment
    run_dir: Path
    name: str
    argv: list[str]  # as typed, with --name added
    options: dict[str, Any]  # every parsed option (paths as text), saved in run.json
    base: dict[str, Any]  # the baseline config with the pins applied
    pinned: dict[str, Any]
    space: dict[str, Dim]
    data: Data  # as loaded: prepare cuts it to the plan
    make_plan: Callable[[Hardware], Plan]
    resume: bool = False
    retrain: bool = True
    storage: str | None = None
    warm_start_from: list[Path] = field(default_factory=list)  # earlier runs whose trials Optuna is told
    grow_to: int | None = None  # --resume --trials N: grow the finished search to N trials
    data_fingerprint: str = ""  # of --data-dir (search/record.py data_fingerprint)
    forced: list[dict[str, Any]] = field(default_factory=list)  # what --force accepted on this resume


@dataclass
class RunContext:
    exp: Experiment
    run_dir: Path
    record: RunRecord
    data: Data  # cut to the plan: train/val for trials, full_train/test for retraining
    space: dict[str, Dim]
    storage: str | None = None
    resume: bool = False
    print: Callable[..., None] = field(default=functools.partial(print, flush=True))
    prior: list[optuna.trial.FrozenTrial] = field(default_factory=list)  # --warm-start-from (search/warm.py)

    @property
    def plan(self) -> Plan:
        return self.record.plan


def versions() -> dict[str, str]:
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5,
                                cwd=Path(__file__).resolve().parent).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        commit = ""
    return {"python": platform.python_version(), "torch": torch.__version__, "ray": ray.__version__,
            "optuna": optuna.__version__, "git_commit": commit or "unknown"}


# ----------------------------------------------------------------------------- prepare


def budget_space(space: dict[str, Dim], plan: Plan) -> dict[str, Dim]:
    """The part of the (unpinned) space this plan's budget searches, in its ranges; the rest stays at the
    baseline."""
    return narrowed({k: d for k, d in space.items() if plan.searched is None or k in plan.searched}, plan.ranges)


def search_base(base: dict[str, Any], pinned: dict[str, Any], plan: Plan, seed: int) -> dict[str, Any]:
    """The config every trial starts from: the baseline (pins applied) with the budget's own values for the
    tuned configs (e.g. generated training images) where --set did not pin the key, the search's epochs
    and seed."""
    return {**base, **plan.tuned_with_unpinned(pinned), "epochs": plan.max_epochs, "seed": seed}


def same_base(exp: Experiment, recorded: dict[str, Any], base: dict[str, Any]) -> bool:
    """Whether a resumed run's recorded base is this code's: a key the experiment gained since the run
    started counts at its default, as the run's trials trained (a changed default does not match)."""
    return {**exp.defaults, **recorded} == base


def prepare(request: Request, hw: Hardware) -> RunContext:
    """The plan (the interrupted run's own on --resume), the data cut to it, run.json, the plan printed."""
    exp, run_dir = request.exp, request.run_dir
    previous = RunRecord.read(run_dir) if request.resume else None
    plan = previous.plan if previous is not None else request.make_plan(hw)
    # a plan made for other hardware, or asking for more than one node has, would wait forever
    check_resources(plan.cpus_per_trial, plan.gpus_per_trial, hw, "this run's trials",
                    "resume it where the cluster has them" if previous is not None
                    else "ask for less with --cpus-per-trial / --gpus-per-trial")
    data = cut_to_plan(request.data, plan)
    base = search_base(request.base, request.pinned, plan, request.options["seed"])
    if previous is not None and not same_base(exp, previous.base_config, base):
        raise UserError(f"{run_dir}: its run.json does not match this code's defaults any more; "
                        "resume it with the version that started it")
    space = budget_space(request.space, plan)
    if not space:
        raise UserError("every parameter this budget searches is pinned by --set: nothing left to search; "
                        "add --full-space")
    scheduler = schedulers.of_plan(plan)
    growth = check_growth(previous, request.grow_to, scheduler, run_dir) if previous is not None else None
    prior, warm_lines = [], []
    if request.warm_start_from:
        if scheduler.proposes_configs:
            raise UserError(f"--warm-start-from tells Optuna's TPE earlier trials; --scheduler {scheduler.name} "
                            "proposes configs without it: leave one out")
        prior, warm_lines = warm.earlier_trials(request.warm_start_from, exp, space, request.pinned,
                                                plan.rank_metric or exp.objective, base, data.info)
    stale = clean_stale_checkpoints()  # a kill -9's leftovers hold RAM in /dev/shm: gone before we measure space
    if stale:
        print(f"deleted {len(stale)} checkpoint folders killed runs left behind: {', '.join(map(str, stale))}")
    checkpoint_dir = tune_local_dir(run_dir, request.storage)
    if checkpoint_dir is not None:  # (the retrained models go to the run folder, counted with the checkpoints)
        check_free_space(checkpoint_dir, *disk_needed(exp, base, plan, scheduler, request.retrain), print)
    batch = base["batch_size"]
    ips = measured_throughput(exp, base, data.train.x[:batch], data.train.y[:batch], plan,
                              local=not request.options.get("address"))
    if previous is None:  # once: a resumed run keeps the split its run.json holds
        split_total(plan, ips, len(data.full_train) if request.retrain else 0)
    left = plan if growth is None else dataclasses.replace(plan, trials=growth["trials"] - growth["trials_before"])
    plan.estimate_min = estimate_minutes(left, len(data.train), len(data.val),
                                         len(data.full_train) if request.retrain else 0, ips,
                                         scheduler.search_epochs(left))
    record = previous or RunRecord(
        experiment=exp.name, name=request.name, plan=plan, objective=exp.objective, mode=exp.mode,
        searched=list(space), space={k: d.describe() for k, d in space.items()}, base_config=base,
        pinned=request.pinned, argv=request.argv, command="python -m search.run " + shlex.join(request.argv),
        options=request.options, data=data.info, versions=versions(), started=time.strftime("%Y-%m-%d %H:%M:%S"),
        hardware={"cpus": hw.cpus, "gpus": hw.gpus, "nodes": hw.nodes, "machine": platform.machine(),
                  "system": platform.system()},
        storage_folder=storage_folder(exp.name, request.name) if request.storage else "",
        data_fingerprint=request.data_fingerprint)
    run_dir.mkdir(parents=True, exist_ok=True)
    if previous is None:
        record.write(run_dir)
    elif request.options.get("data_dir") != record.options.get("data_dir") or request.forced:
        # the data moved (same fingerprint), or --force took other data: later resumes and retraining read it
        record.update(run_dir, options={**record.options, "data_dir": request.options.get("data_dir")},
                      data_fingerprint=request.data_fingerprint, forced=[*record.forced, *request.forced])
    if growth is not None:  # every check has passed: from here the run is a search again
        kept = growth_files.keep_results(run_dir, record.rounds)  # its retraining and report may be redone
        growth["journal_bytes"] = growth_files.journal_size(run_dir)  # where a roll back cuts the study
        plan.trials = request.grow_to
        record.update(run_dir, plan=plan, search_done=False, grown=[*record.grown, growth])
    ctx = RunContext(exp, run_dir, record, data, space, request.storage, request.resume, prior=prior)
    print_plan(ctx, hw, ips, request.retrain)
    for line in warm_lines:
        ctx.print(line)
    if growth is not None:
        ctx.print(f"growing the finished search from {growth['trials_before']} to {growth['trials']} trials: "
                  "TPE goes on with the same study, the scheduler's rungs hold the earlier trials"
                  + (f"; its results so far are kept in {kept.name}/" if kept else "")
                  + f" (--resume --trials {growth['trials_before']} rolls the growth back before it ends)")
    return ctx


def rolls_back(previous: RunRecord, grow_to: int | None) -> bool:
    """`--resume --trials N`, N the trials before a growth that has not finished: roll that growth back."""
    return (grow_to is not None and not previous.search_done and bool(previous.grown)
            and grow_to == previous.grown[-1]["trials_before"])


DISK_MARGIN = 200 * 2**20  # tables, logs, TensorBoard events, report figures: tens of MB; 200 MB to spare


def disk_needed(exp: Experiment, config: dict[str, Any], plan: Plan, scheduler: schedulers.Scheduler,
                retrain: bool) -> tuple[int, int]:
    """(bytes the run needs for sure, bytes it may hold at its peak), both in its checkpoint folder and
    with the retrained models. A checkpoint holds the weights and the optimiser's state (Adam's two
    moments: 3x the weights, 155 MB for shapes). Each running trial keeps the scheduler's number of them,
    one more while Ray writes the next before deleting the oldest: that much is needed. A scheduler that
    pauses or clones trials may keep every trial's until the search ends: that much may be."""
    weights = sum(t.numel() * t.element_size() for t in exp.task.build_model(config).state_dict().values())
    state, keep = 3 * weights, scheduler.checkpoints_to_keep(plan)
    retrained = (plan.retrain_top_k + 1) * plan.retrain_seeds * weights if retrain else 0
    sure = plan.concurrency * (keep + 1) * state + retrained
    holding = plan.trials if scheduler.clones_checkpoints or scheduler.checkpoints_every_epoch else plan.concurrency
    return sure, max(sure, holding * keep * state + plan.concurrency * state + retrained)


def check_free_space(path: Path, sure: int, peak: int, say: Callable[..., None]) -> None:
    """One line before anything is written if the disk cannot hold what the run needs for sure, instead of
    a disk that fills up mid-search (a default shapes run wrote several GB before the ended trials' weights
    were pruned); a warning where it may not hold the run's peak."""
    probe = next((p for p in (path, *path.parents) if p.exists()), path)
    free = shutil.disk_usage(probe).free
    gb = 2**30
    if free < sure + DISK_MARGIN:
        raise UserError(f"{path}: this run needs about {(sure + DISK_MARGIN) / gb:.1f} GB free there for its "
                        f"checkpoints and models, and {free / gb:.1f} GB are free; free some space, pass --results "
                        "(or --storage) on a larger disk, or lower --concurrency")
    if free < peak + DISK_MARGIN:
        say(f"warning: {path} has {free / gb:.1f} GB free; this run may hold up to {(peak + DISK_MARGIN) / gb:.1f} "
            "GB of checkpoints at its peak (its scheduler keeps paused trials' ones)")


def tune_local_dir(run_dir: Path, storage: str | None) -> Path | None:
    """The local folder the trials' checkpoints go to: the run folder, or a --storage folder; None for an
    object store (s3://...), whose space is not ours to measure."""
    if storage is None:
        return run_dir
    return local_folder(trial_storage.location(storage))


def check_growth(previous: RunRecord, grow_to: int | None, scheduler: schedulers.Scheduler,
                 run_dir: Path) -> dict[str, Any] | None:
    """`--resume --trials N` on a finished search: the growth to record (None: a plain resume)."""
    if grow_to is None or grow_to == previous.plan.trials:
        return None  # the run's own number again (as `--settings` passes it on): a plain resume
    if not previous.search_done:
        raise UserError(f"--trials {grow_to}: {run_dir.name}'s search was interrupted; finish it first with "
                        f"--resume alone, then grow it")
    if scheduler.proposes_configs:
        raise UserError(f"--trials {grow_to}: {run_dir.name} ran --scheduler {scheduler.name}, whose population "
                        "is fixed when it starts; start a new --name for more trials")
    path = run_dir / "trials.csv"
    have = len(read_csv(path)) if path.is_file() else 0
    if grow_to <= have:
        raise UserError(f"--trials {grow_to}: {run_dir.name} has {have} trials already; give more to grow it "
                        "(a run never shrinks)")
    return {"round": previous.rounds + 1, "trials_before": have, "trials": grow_to,
            "started": time.strftime("%Y-%m-%d %H:%M:%S")}


def check_resources(cpus: float, gpus: float, hw: Hardware, who: str, then: str) -> None:
    """One line instead of a wait without end: Ray would queue work that no node can ever take (a task runs
    on one node: totals over several nodes are not enough)."""
    if hw.fits(cpus, gpus):
        return
    need = f"{who} need {cpus:g} CPU" + (f" and {gpus:g} GPU" if gpus else "") + " each"
    if gpus > hw.gpus or cpus > hw.cpus:
        raise UserError(f"{need}; this Ray cluster has {hw.cpus:g} CPUs and {hw.gpus:g} GPUs in all: {then}")
    largest = ", ".join(f"{c:g} CPUs + {g:g} GPUs" for c, g in sorted(set(hw.node_resources), reverse=True)[:3])
    raise UserError(f"{need}, and no node of this Ray cluster has that much (its nodes: {largest}); a trial runs "
                    f"on one node: {then}")


def _throughput_task(exp_name: str, config: dict, x, y, threads: float) -> float:
    torch.set_num_threads(max(1, int(threads)))
    # the worker's own device: the GPU Ray gave the task, if any
    return images_per_second(experiments.get(exp_name).task, config, x, y, threads, trial_device())


def measured_throughput(exp: Experiment, config: dict, x, y, plan: Plan, local: bool) -> float:
    """Images per second of one trial. On a Ray of our own whose trials get no GPU, timed here, on the
    CPU threads a trial gets: the same machine and device, without starting a Ray worker for it
    (about 5 s of a smoke run's 40 on 2 cores). Otherwise in a Ray task with a trial's resources: on
    the device a trial gets (a GPU on a worker node when the head has none), and a GPU context that
    Ray counts, not one this process would hold for the whole run."""
    if local and not plan.gpus_per_trial:
        return images_per_second(exp.task, config, x, y, plan.cpus_per_trial, torch.device("cpu"))
    task = ray.remote(num_cpus=plan.cpus_per_trial, num_gpus=plan.gpus_per_trial, max_retries=0)(_throughput_task)
    return ray.get(task.remote(exp.name, config, x, y, plan.cpus_per_trial))


def trial_readings(ctx: RunContext) -> Decoding | None:
    """The ways each trial's last epoch is read where the plan chooses its decoding (a pinned key keeps its value)."""
    return ctx.exp.decoding.unpinned(ctx.record.pinned) if ctx.plan.choose_decoding else None


def print_plan(ctx: RunContext, hw: Hardware, ips: float, retrain: bool) -> None:
    exp, plan, data, say = ctx.exp, ctx.plan, ctx.data, ctx.print
    say(f"{exp.name}: {exp.summary}")
    say(f"data: {data.info}")
    say(f"hardware: {hw.describe()}; {plan.concurrency} trial{'s' if plan.concurrency > 1 else ''} at once, "
        f"{plan.cpus_per_trial:g} CPU" + (f" + {plan.gpus_per_trial:g} GPU" if plan.gpus_per_trial else "") + " each")
    say(f"plan{f' (budget {plan.budget})' if plan.budget else ''}: {plan.trials} trials, up to {plan.max_epochs} "
        f"epochs, {schedulers.of_plan(plan).describe(plan)}"
        + (f", time budget {plan.time_budget_min:g} min" if plan.time_budget_min else ""))
    if plan.why:
        say(f"why: {plan.why}")
    if plan.total_min and plan.time_budget_min:
        say(f"time: {plan.total_min:g} min in all; the retraining's {plan.retrain_epochs} epochs set aside first, "
            f"{plan.retrain_minutes:g} min at {ips:.0f} images/s per trial (measured just now), so the search gets "
            f"{plan.time_budget_min:g} min")
    if ctx.record.tuned_with:
        say(f"every trial and tuned config trains with {format_config(ctx.record.tuned_with)}; the baseline without")
    decoding = trial_readings(ctx)
    if decoding is not None:
        say("each trial's last epoch is read every way and the best kept, not searched: "
            + "; ".join(f"{k} {', '.join(f'{v:g}' for v in values)}" for k, values in decoding.options().items()))
    if retrain:
        say(f"then: retrain the best {plan.retrain_top_k} config{'s' if plan.retrain_top_k > 1 else ''} and "
            f"the baseline on {plan.retrain_seeds} fresh seeds, {plan.retrain_epochs} epochs each, on "
            f"{len(data.full_train)} training images; score them once on the {len(data.test)} held-out images"
            + ("" if hw.gpus else " (fewer configs and seeds than on a GPU, to fit a CPU's time)")
            + (f"; fewer epochs if they would take more than {plan.retrain_minutes:g} min at the speed the "
               "search's epochs ran" if plan.retrain_minutes and not plan.retrain_fitted else ""))
    if plan.estimate_min:
        say("estimate: " + ("under a minute" if plan.estimate_min < 1 else f"about {round(plan.estimate_min)} "
            "minutes") + f" in all, at {ips:.0f} images/s per trial (measured just now)")
    ranges = ctx.record.plan.ranges  # a budget's narrower bounds: say them, the rest is the experiment's space
    keys = [f"{k} ({d.describe()} at this budget)" if k in ranges else k for k, d in ctx.space.items()]
    say(f"searching {', '.join(keys)}; pinned: {format_config(ctx.record.pinned) or 'nothing'}")


# ----------------------------------------------------------------------------- search


def search(ctx: RunContext) -> bool:
    """Run (or continue) the search; True when every trial ended (False: interrupted, resumable)."""
    if ctx.record.search_done:  # killed while retraining: resume only that
        ctx.print("search: already finished; resuming the retraining")
        return True
    plan, t0 = ctx.plan, time.monotonic()
    record = ctx.record
    grid = run_search(ctx.exp, ctx.data, record.base_config, ctx.space, plan, ctx.run_dir,
                      seed=record.seed, resume=ctx.resume, storage=ctx.storage, prior=ctx.prior,
                      tune_round=record.rounds, decoding=trial_readings(ctx), folder=record.storage_folder)
    if plan.time_budget_min and not reported_any(ctx.run_dir / "trials.csv", ctx.exp.objective):
        raise UserError(f"the time budget ({plan.time_budget_min:g} min) ended the search before any trial "
                        "reported an epoch; give a larger --time-budget")
    this_round = plan.trials - (record.grown[-1]["trials_before"] if record.grown else 0)
    done = not (len(grid) - grid.num_terminated - grid.num_errors > 0
                or (len(grid) < this_round and not plan.time_budget_min))
    # the record holds the earlier attempts' wall time too (prepare read it back on --resume)
    ctx.record.update(ctx.run_dir, search_wall_s=ctx.record.search_wall_s + time.monotonic() - t0,
                      finished=time.strftime("%Y-%m-%d %H:%M:%S"), search_done=done)
    settle_running(ctx.run_dir / STUDY_FILE, ended=done, last=last_epochs(ctx.run_dir / "trials.csv", plan))
    summarise(ctx)
    return done


def last_epochs(trials_csv: Path, plan: Plan) -> dict[str, tuple[int, float]]:
    """Each trial's last epoch and its ranked value, as trials.csv has them (none before a trial reports)."""
    if not trials_csv.is_file():
        return {}
    trials = read_csv(trials_csv)
    column = f"last_{plan.rank_metric}"
    if column not in trials or "epochs_run" not in trials:
        return {}
    return {row.trial_id: (int(row.epochs_run), float(getattr(row, column)))
            for row in trials.itertuples() if pd.notna(row.epochs_run) and pd.notna(getattr(row, column))}


def reported_any(trials_csv: Path, objective: str) -> bool:
    """Whether any trial of the table reported an epoch (a tiny time budget can end them all before)."""
    trials = read_csv(trials_csv) if trials_csv.exists() else pd.DataFrame()
    return f"best_{objective}" in trials and trials[f"best_{objective}"].notna().any()


def summarise(ctx: RunContext) -> None:
    path, objective = ctx.run_dir / "trials.csv", ctx.exp.objective
    trials = read_csv(path) if path.exists() else pd.DataFrame()
    counts = trials["status"].value_counts().to_dict() if not trials.empty else {}
    best = best_trial(trials, objective, ctx.exp.mode) if not trials.empty else None
    shown = ", ".join(f"{counts[s]} {s}" for s in STATUSES if s in counts)
    ended = not counts.get("running") and ctx.record.search_done
    ctx.print(f"search {'done' if ended else 'stopped'}: {len(trials)} trials ({shown})")
    if best is not None:
        read = chosen_decoding(best, ctx.exp.defaults)
        ctx.print(f"best: {objective} {best[f'best_{objective}']:.4f} ({best['trial_id']}, epoch "
                  f"{int(best['best_epoch'])}): {format_config(best, ctx.record.searched)}"
                  + (f"; read with {format_config(read, list(read))}" if read else ""))


# ----------------------------------------------------------------------------- retrain and report


def retrain(ctx: RunContext, *, top_k: int | None = None, seeds: int | None = None, epochs: int | None = None,
            cpus: float | None = None, gpus: float | None = None) -> pd.DataFrame:
    """Retrain with the plan's numbers (or the ones given); KeyboardInterrupt keeps every finished run."""
    plan, t0 = ctx.plan, time.monotonic()
    cpus, gpus = plan.cpus_per_trial if cpus is None else cpus, plan.gpus_per_trial if gpus is None else gpus
    check_resources(cpus, gpus, cluster_hardware(ray.nodes()), "the retrain runs",
                    "pass --gpus-per-run 0 to retrain on CPUs (python -m search.retrain), or run where they are"
                    if gpus else "pass a smaller --cpus-per-run (python -m search.retrain)")
    if epochs is None:
        fit_retraining(ctx)
    try:
        return retraining.retrain(
            ctx.run_dir, ctx.record, ctx.data, top_k=top_k or plan.retrain_top_k, seeds=seeds or plan.retrain_seeds,
            epochs=epochs or plan.retrain_epochs, cpus=cpus, gpus=gpus, print_fn=ctx.print)
    finally:
        ctx.record.update(ctx.run_dir, retrain_wall_s=ctx.record.retrain_wall_s + time.monotonic() - t0)


def fit_retraining(ctx: RunContext) -> None:
    """Cut the plan's retrain epochs, once, so that its runs end within plan.retrain_minutes at the speed
    the search's epochs trained here (a named budget then holds its time on a slower machine). The cut
    is written to run.json before any run starts: a resumed retraining trains the same epochs."""
    plan = ctx.plan
    if plan.retrain_fitted:
        return
    plan.retrain_minutes = retrain_minutes_left(plan, ctx.record.search_wall_s)
    if not plan.retrain_minutes:
        return
    path = ctx.run_dir / "history.csv"
    history = read_csv(path) if path.exists() else pd.DataFrame()
    # seconds per training image of a trial, as many trials at once as retrain runs will be
    per_image = (history["train_s"] / len(ctx.data.train)).median() if "train_s" in history else float("nan")
    if pd.isna(per_image) or per_image <= 0:
        ctx.print(f"retrain: the search measured no epoch times; {plan.retrain_epochs} epochs as planned")
    else:
        runs, images = (plan.retrain_top_k + 1) * plan.retrain_seeds, plan.retrain_subset or len(ctx.data.full_train)
        epochs = fitted_retrain_epochs(plan.retrain_epochs, plan.retrain_minutes, per_image, images, runs,
                                       plan.concurrency)
        if epochs < plan.retrain_epochs:
            ctx.print(f"retrain: {epochs} epoch{'s' if epochs > 1 else ''}, not {plan.retrain_epochs}, to end within "
                      f"{plan.retrain_minutes:g} min: the search trained {1 / per_image:.0f} images/s per trial "
                      f"here, {plan.concurrency} at once")
        plan.retrain_epochs = epochs
    plan.retrain_fitted = True
    ctx.record.update(ctx.run_dir, plan=plan)


def report(ctx: RunContext) -> Path:
    path = report_md.build(ctx.run_dir)
    ctx.print(f"report: {path}")
    return path


def finished_run(run_dir: Path, print_fn: Callable[..., None] | None = None) -> RunContext:
    """The context of a run whose search is done (for `python -m search.retrain`): its own data and plan.
    An interrupted search is refused: its trials.csv holds only the trials that ended before the stop."""
    record = RunRecord.read(run_dir)
    exp = experiments.get(record.experiment)
    if not record.search_done:
        raise UserError(f"{run_dir}: its search was interrupted; finish it first with python -m search.run "
                        f"{exp.name} --name {run_dir.name} --resume (which retrains it too)")
    options = record.data_options()
    check_same_data(record, options.data_dir, False, run_dir, then="retrain it on the data it searched (or "
                    "resume it with --data-dir and --force first, which records the change)")
    data = cut_to_plan(exp.load(options), record.plan)
    space = record.searched_space(exp)
    return RunContext(exp, run_dir, record, data, space, print=print_fn or functools.partial(print, flush=True))
