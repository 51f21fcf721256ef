"""Search efficiency: the default CPU strategy against random search and a plain Optuna study, per epoch spent.

    python benchmarks/search_efficiency.py [--data-dir PATH] [--subset 4000] [--val N] [--max-epochs E]
        [--budget-epochs B] [--seeds 3] [--concurrency 2] [--grace G] [--no-warm-start] [--out DIR]
        [--scheduler NAME] [--methods default] [--reuse EARLIER_OUT ...]

E and G default to the shapes CPU budget's (10 epochs, ASHA's first rung at 4); B to the epochs the
default search of that budget's 16 trials expects to train (its scheduler's `search_epochs`: 111
under `screen`; default runs on the real data trained 104 and 112), rounded down to whole trials of
E epochs so that random search trains whole trials: 110. Figures before 2026-11-30 used 80, what the
16 trials trained under plain ASHA (84 in a default run); reuse them with --budget-epochs 80.

The claim under test (#13): at the same total epoch budget, the default CPU strategy reaches random
search's final best validation top-1 with at most half the epochs, and ends higher, in the mean
over seeds (shapes).

The Ray methods run through the project's pieces (`to_tune`, `run_trial`, `HonestOptunaSearch`,
`warm_start`, the scheduler registry), one Tuner per method and seed, the same data, space, trial
seed and (unless --no-warm-start) baseline warm start:
  default   what `python -m search.run shapes` does on a CPU: the CPU budget's 16 trials' plan, TPE
            (`make_searcher`) and the budget's scheduler from the registry (with ASHA, grace --grace
            and reduction factor --reduction-factor), both ranking on the experiment's
            smooth metric (val_rank_loss), as `search.tuner.new_tuner` builds them; the budget's
            space and the warm variants; patience as the experiment's default.
  random    `HonestOptunaSearch` with Optuna's RandomSampler(seed), FIFO scheduler and patience 0:
            no early stopping of any kind, every trial trains --max-epochs epochs.
  optuna    what a user would write instead: one in-process Optuna study, TPESampler(seed) and
            Optuna's default MedianPruner on the per-epoch val top-1, trials one after another on
            all --concurrency threads, `search.loop.fit` as the training.

--methods leaves a method out of the comparison unless --reuse holds all its curves (random search,
the target, is always compared).

--scheduler puts another registered scheduler in the default's place (e.g. `screen`, ASHA whose
first rung waits for the first trials). --reuse takes each method's curve for a seed from an earlier
run's curves.csv where it is there in full (random search and the Optuna study are seeded: their
configs and training repeat); a default run is taken only where it was recorded with the same
scheduler. Only the rest is run, and only of the --methods. So adding seeds 3 and 4 to an earlier
3-seed run is `--seeds 5 --reuse EARLIER_OUT`.

Budget accounting: one reported result is one epoch of one trial. A Ray Tune Stopper sees every
result in the order the driver receives it, records it, and stops the whole search once
--budget-epochs results have arrived. Results that still arrive after that (epochs in flight on
the other trials) are recorded but cut off: the curves count exactly the first --budget-epochs.
The curve is the best validation top-1 over all epochs reported so far, against epochs reported.
"""

from __future__ import annotations

import argparse
import csv
import math
import shlex
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from search import cli
from search.config import UserError
from search.experiment import DataOptions
from search.experiments import shapes
from search.loop import Split

METHODS = ("random", "default", "optuna")


def parser() -> argparse.ArgumentParser:
    p = cli.ArgumentParser(prog="python benchmarks/search_efficiency.py", description=__doc__.split("\n\n")[0])
    p.add_argument("--data-dir", type=Path, help="the shapes data (folder or zip); default: generated data")
    # 2,000 images x 6 epochs left top-1 near chance (best 0.025 of 105 classes): nothing to rank.
    p.add_argument("--subset", type=int, default=4000, help="training images per trial (first N of the inner train)")
    p.add_argument("--val", type=int, help="cap on validation images (default: the whole inner validation split)")
    budget = shapes.EXPERIMENT.budget_cpu
    p.add_argument("--max-epochs", type=int, default=budget.max_epochs, help="epochs of a trial never stopped "
                   "early (default: the CPU budget's)")
    p.add_argument("--budget-epochs", type=int, help="epochs per search, summed over its trials (default: what "
                   "the default search expects to train)")
    p.add_argument("--seeds", type=int, default=3, help="search seeds 0..N-1 (sampler and trial seed)")
    p.add_argument("--concurrency", type=int, default=2, help="trials at once, 1 CPU each")
    p.add_argument("--grace", type=int, default=budget.grace_epochs, help="ASHA's first rung, in epochs (default: "
                   "the CPU budget's)")
    p.add_argument("--reduction-factor", type=int, default=2, help="ASHA keeps 1/this past each rung")
    p.add_argument("--no-warm-start", action="store_true",
                   help="both methods start from their own samples, not from the baseline (which can dominate "
                        "a small budget)")
    p.add_argument("--full-space", action="store_true", help="every method searches the whole space, not the "
                   "keys the experiment's CPU budget searches")
    p.add_argument("--out", type=Path, help="folder for curves.csv and summary.csv (default: a new temp dir)")
    p.add_argument("--scheduler", help="the default method's scheduler (default: the CPU budget's)")
    p.add_argument("--methods", default=",".join(METHODS), help="the methods run, comma-separated (the others "
                   "are compared only where --reuse holds all their curves; random always is)")
    p.add_argument("--reuse", type=Path, action="append", default=[], help="an earlier --out folder whose complete "
                   "curves are taken instead of run (repeatable; where two hold the same, the later one's)")
    return p


# ---------------------------------------------------------------- budget accounting


def make_budget_stopper(budget: int, objective: str):
    from ray.tune.stopper import Stopper

    class EpochBudget(Stopper):
        """Records every reported epoch in arrival order; ends the search at `budget` of them."""

        def __init__(self) -> None:
            self.events: list[dict[str, Any]] = []
            self.seen: set[tuple[str, int]] = set()
            self.t0 = time.monotonic()

        def __call__(self, trial_id: str, result: dict) -> bool:
            key = (trial_id, int(result.get("training_iteration", 0)))
            # A function trainable's return is reported again as the trial's last result: count it once.
            if key not in self.seen:
                self.seen.add(key)
                value = result.get(objective)
                self.events.append({"trial_id": trial_id, "trial_epoch": key[1],
                                    "value": float(value) if isinstance(value, (int, float)) else math.nan,
                                    "wall_s": time.monotonic() - self.t0})
            return False

        def stop_all(self) -> bool:
            return len(self.events) >= budget

    return EpochBudget()


def best_so_far(values: list[float]) -> list[float]:
    out, best = [], -math.inf
    for v in values:
        if math.isfinite(v) and v > best:
            best = v
        out.append(best)
    return out


def first_reach(curve: list[float], target: float) -> int | None:
    """Epochs (1-based) at which the curve first reaches target, or None."""
    return next((i + 1 for i, v in enumerate(curve) if v >= target - 1e-12), None)


def run_record(method: str, seed: int, events: list[dict[str, Any]], budget_epochs: int, max_epochs: int,
               **known: Any) -> dict[str, Any]:
    """One search's record from its epochs in arrival order (the first budget_epochs count): its curve,
    trials and how many ran all epochs, as counted; `known` overrides what the search itself knows
    better (its trial count, failures, wall time)."""
    counted = events[:budget_epochs]
    curve = best_so_far([e["value"] for e in counted])
    reached: dict[str, int] = {}
    for e in counted:
        reached[e["trial_id"]] = max(reached.get(e["trial_id"], 0), e["trial_epoch"])
    return {"method": method, "seed": seed, "scheduler": "", "events": events, "curve": curve,
            "wall_s": max((e["wall_s"] for e in events), default=0.0), "trials": len(reached), "failed": 0,
            "reported": len(events), "counted": len(counted), "full": sum(n >= max_epochs for n in reached.values()),
            "best": curve[-1], "epochs_to_own_best": first_reach(curve, curve[-1]), **known}


# ---------------------------------------------------------------- one search


def default_plan(exp, args):
    """The plan `python -m search.run shapes` makes on --concurrency CPUs: the CPU budget's trials,
    with this benchmark's epochs, rung and scheduler."""
    from search.plan import Hardware, make_plan

    plan = make_plan(exp, Hardware(cpus=args.concurrency, gpus=0), trials=None, max_epochs=args.max_epochs,
                     time_budget_min=None, concurrency=args.concurrency, cpus_per_trial=1, gpus_per_trial=0,
                     smoke=False, scheduler=args.scheduler)
    plan.grace_epochs, plan.reduction_factor = min(args.grace, args.max_epochs), args.reduction_factor
    return plan


def run_one(method: str, seed: int, exp, train: Split, val: Split, space: dict, args, plan,
            storage: Path) -> dict[str, Any]:
    """One search of `method`; `plan` is the default method's (`default_plan`)."""
    if method == "optuna":
        return run_optuna(seed, exp, train, val, space, args)
    import optuna
    from ray import tune
    from ray.tune.schedulers import FIFOScheduler

    from search import schedulers
    from search.experiment import warm_start
    from search.searcher import HonestOptunaSearch, make_searcher, to_tune
    from search.trial import CHECKPOINT_SHARE, run_trial

    base = {**exp.defaults, "epochs": args.max_epochs, "seed": seed}
    warm = [] if args.no_warm_start else [warm_start(base, space)]
    metric, mode = exp.objective, exp.mode
    checkpoint_share, limit, scheduler_name = CHECKPOINT_SHARE, args.concurrency, ""
    if method == "default":
        trials = plan.trials  # TPE's random start and the screening are sized to them
        metric, mode = plan.rank_metric, plan.rank_mode
        # Enough that the budget, not the sample count, ends the search (a trial runs >= grace epochs).
        num_samples = 2 * math.ceil(args.budget_epochs / plan.grace_epochs) + args.concurrency
        from search.tuner import warm_points

        warm = warm_points(exp, base, space) if warm else []  # the baseline and its variants, as search.run
        searcher = make_searcher(seed, warm_start=warm, metric=metric, mode=mode, trials=trials)
        chosen = schedulers.of_plan(plan)
        scheduler = chosen.build(plan, metric, mode)
        searcher, limit = chosen.limit(scheduler, searcher, args.concurrency)
        checkpoint_share = chosen.checkpoint_share  # every epoch where it pauses trials
        scheduler_name = chosen.name
    else:
        base["patience"] = 0
        searcher = HonestOptunaSearch(sampler=optuna.samplers.RandomSampler(seed=seed), points_to_evaluate=warm or None,
                                      metric=metric, mode=mode)
        scheduler = FIFOScheduler()
        num_samples = math.ceil(args.budget_epochs / args.max_epochs)
    exp.check(base)
    stopper = make_budget_stopper(args.budget_epochs, exp.objective)
    trainable = tune.with_resources(
        tune.with_parameters(run_trial, experiment=exp.name, base=base, train=train, val=val,
                             checkpoint_share=checkpoint_share), {"cpu": 1, "gpu": 0})
    tuner = tune.Tuner(
        trainable,
        param_space=to_tune(space),
        tune_config=tune.TuneConfig(search_alg=searcher, scheduler=scheduler,
                                    num_samples=num_samples, max_concurrent_trials=limit,
                                    reuse_actors=True),
        run_config=tune.RunConfig(name=f"{method.replace('+', '-')}-seed{seed}", storage_path=str(storage),
                                  stop=stopper, verbose=0,
                                  checkpoint_config=tune.CheckpointConfig(num_to_keep=1),
                                  failure_config=tune.FailureConfig(max_failures=0)),
    )
    t0 = time.monotonic()
    stopper.t0 = t0
    grid = tuner.fit()
    wall = time.monotonic() - t0
    shutil.rmtree(storage / f"{method.replace('+', '-')}-seed{seed}", ignore_errors=True)  # checkpoints: ~100s of MB

    events = stopper.events
    if not events:
        errors = [str(r.error).strip().splitlines()[-1] for r in grid if r.error is not None]
        raise RuntimeError(f"{method} seed {seed}: no epoch was recorded; {len(grid)} trials, "
                           f"{len(errors)} failed" + (f", first: {errors[0]}" if errors else ""))
    return run_record(method, seed, events, args.budget_epochs, args.max_epochs, scheduler=scheduler_name,
                      wall_s=wall, trials=len(grid), failed=grid.num_errors, num_samples=num_samples)


def suggest(trial, key: str, dim) -> Any:
    from search.experiment import Choice, Float

    if isinstance(dim, Choice):
        return trial.suggest_categorical(key, list(dim.options))
    if isinstance(dim, Float):
        return trial.suggest_float(key, dim.low, dim.high, log=dim.log)
    return trial.suggest_int(key, dim.low, dim.high, log=dim.log)


def run_optuna(seed: int, exp, train: Split, val: Split, space: dict, args) -> dict[str, Any]:
    """A plain Optuna study in this process, as its tutorial shows: suggest, train, report each epoch,
    prune when the pruner says so. Epochs are counted like the Ray methods' (one per reported epoch)."""
    import optuna
    import torch

    from search.experiment import warm_start
    from search.loop import fit

    events: list[dict[str, Any]] = []
    t0 = time.monotonic()
    base = {**exp.defaults, "epochs": args.max_epochs, "seed": seed}
    study = optuna.create_study(direction="maximize" if exp.mode == "max" else "minimize",
                                sampler=optuna.samplers.TPESampler(seed=seed), pruner=optuna.pruners.MedianPruner())
    if not args.no_warm_start:
        study.enqueue_trial(warm_start(base, space))

    def objective(trial: optuna.Trial) -> float:
        config = {**base, **{k: suggest(trial, k, d) for k, d in space.items()}}

        def on_epoch(row, _checkpoint, _last):
            events.append({"trial_id": str(trial.number), "trial_epoch": int(row["epoch"]),
                           "value": float(row[exp.objective]), "wall_s": time.monotonic() - t0})
            trial.report(row[exp.objective], int(row["epoch"]))
            if len(events) >= args.budget_epochs:
                study.stop()
                raise optuna.TrialPruned("epoch budget spent")
            if trial.should_prune():
                raise optuna.TrialPruned()

        result = fit(exp.task, config, train, val, device=torch.device("cpu"), objective=(exp.objective, exp.mode),
                     on_epoch=on_epoch)
        return result.best[exp.objective]

    previous = torch.get_num_threads()
    torch.set_num_threads(args.concurrency)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        study.optimize(objective, n_trials=args.budget_epochs, catch=(RuntimeError,))
    finally:
        torch.set_num_threads(previous)
    states = [t.state for t in study.trials]
    full = sum(1 for t in study.trials if len(t.intermediate_values) >= args.max_epochs)
    return run_record("optuna", seed, events, args.budget_epochs, args.max_epochs, wall_s=time.monotonic() - t0,
                      trials=len(study.trials), failed=states.count(optuna.trial.TrialState.FAIL), full=full,
                      num_samples=len(study.trials))


# ---------------------------------------------------------------- output


def reused(folder: Path, scheduler: str, budget_epochs: int, max_epochs: int) -> dict[tuple[str, int], dict]:
    """An earlier run's complete curves, as run_one returns them, keyed by (method, seed). A default
    run is taken only if it was recorded with `scheduler` (older curves.csv files lack the column)."""
    path = folder / "curves.csv"
    if not path.is_file():
        raise UserError(f"--reuse {folder}: no curves.csv there; give an earlier --out folder")
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    runs, budgets = {}, set()
    for method, seed in sorted({(r["method"], int(r["seed"])) for r in rows}):
        mine = sorted((r for r in rows if r["method"] == method and int(r["seed"]) == seed),
                      key=lambda r: int(r["cum_epoch"]))
        if method == "default" and mine[0].get("scheduler") != scheduler:
            continue
        counted = sum(r["counted"] == "1" for r in mine)
        budgets.add(counted)
        if counted != budget_epochs:
            continue  # another budget's, or cut short
        events = [{"trial_id": r["trial_id"], "trial_epoch": int(r["trial_epoch"]), "value": float(r["val_acc"]),
                   "wall_s": float(r["wall_s"])} for r in mine]
        runs[method, seed] = run_record(method, seed, events, budget_epochs, max_epochs,
                                        scheduler=mine[0].get("scheduler", ""), **{"from": folder})
    if not runs and budgets and budget_epochs not in budgets:
        raise UserError(f"--reuse {folder}: its curves count {', '.join(map(str, sorted(budgets)))} epochs, not "
                        f"{budget_epochs}; give --budget-epochs {max(budgets)} to reuse them")
    return runs


def fmt_acc(v: float) -> str:
    return f"{v:.4f}" if math.isfinite(v) else "-"


def fmt_epochs(n: int | None) -> str:
    return "not reached" if n is None else str(n)


def write_csvs(out: Path, runs: list[dict], rows: list[dict]) -> None:
    out.mkdir(parents=True, exist_ok=True)
    with open(out / "curves.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["method", "scheduler", "seed", "cum_epoch", "counted", "trial_id", "trial_epoch", "val_acc",
                    "best_so_far", "wall_s"])
        for r in runs:
            best = -math.inf
            for i, e in enumerate(r["events"]):
                if math.isfinite(e["value"]):
                    best = max(best, e["value"])
                w.writerow([r["method"], r["scheduler"], r["seed"], i + 1, int(i < r["counted"]), e["trial_id"],
                            e["trial_epoch"], e["value"], best, round(e["wall_s"], 2)])
    with open(out / "summary.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)


def main(argv: list[str]) -> int:
    args = parser().parse_args(argv)
    exp = shapes.EXPERIMENT
    for name in ("subset", "max_epochs", "budget_epochs", "seeds", "concurrency", "grace"):
        if getattr(args, name) is not None and getattr(args, name) < 1:
            raise UserError(f"--{name.replace('_', '-')} {getattr(args, name)}: give a whole number of at least 1")
    if args.val is not None and args.val < 1:
        raise UserError(f"--val {args.val}: give a whole number of at least 1")
    if args.reduction_factor < 2:
        raise UserError(f"--reduction-factor {args.reduction_factor}: give at least 2")
    run_methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    if not run_methods or set(run_methods) - set(METHODS):
        raise UserError(f"--methods {args.methods}: give some of {', '.join(METHODS)}, comma-separated")
    from search import schedulers

    plan = default_plan(exp, args)
    budget_why = "as given"
    if args.budget_epochs is None:
        expected = schedulers.of_plan(plan).search_epochs(plan)
        args.budget_epochs = max(1, math.floor(expected / args.max_epochs)) * args.max_epochs
        budget_why = (f"what the default's {plan.trials} trials expect to train under {plan.scheduler}, "
                      f"{expected:.0f}, in whole trials of {args.max_epochs}")
    if args.budget_epochs < args.max_epochs:
        raise UserError(f"--budget-epochs {args.budget_epochs}: less than one full trial ({args.max_epochs} epochs)")
    started = time.monotonic()
    scheduler = plan.scheduler
    found: dict[tuple[str, int], dict] = {}
    for folder in args.reuse:  # the later folder's run where two hold the same
        found.update(reused(folder, scheduler, args.budget_epochs, args.max_epochs))
    seeds = range(args.seeds)
    compared = [m for m in METHODS if m in run_methods or all((m, s) in found for s in seeds)]
    if "random" not in compared:
        raise UserError(f"--methods {args.methods}: random search is the target; add random, or an earlier --out "
                        "holding its curves for every seed to --reuse")
    if len(compared) < 2:
        raise UserError(f"--methods {args.methods}: nothing to compare with random search; add default or optuna")
    runs: list[dict] = [found[m, s] for s in seeds for m in compared if (m, s) in found]
    to_run = [(m, s) for s in seeds for m in compared if (m, s) not in found]
    loaded = exp.load(DataOptions(args.data_dir, False, split_seed=0))
    train = Split(loaded.train.x[:args.subset], loaded.train.y[:args.subset])
    val = loaded.val if args.val is None else Split(loaded.val.x[:args.val], loaded.val.y[:args.val])

    from search.run import searched_space
    from search.stages import versions
    from search.tuner import quiet

    space = searched_space(exp, {})
    if not args.full_space and exp.budget_cpu.searched:  # the space the CPU budget searches, for every method
        space = {k: d for k, d in space.items() if k in exp.budget_cpu.searched}
    out = args.out.expanduser().resolve() if args.out else Path(tempfile.mkdtemp(prefix="search_efficiency-"))
    quiet()
    import ray

    print(f"command: python benchmarks/search_efficiency.py {shlex.join(argv)}")
    print(f"data: {loaded.info['source']}; train {len(train)} (first of the inner train), val {len(val)} "
          "(inner validation, split seed 0 for every search seed)")
    print(f"budget: {args.budget_epochs} epochs per search ({budget_why}); trials up to {args.max_epochs} epochs; "
          f"{args.concurrency} at once, 1 CPU (torch thread) each; seeds {list(range(args.seeds))} "
          "(sampler and trial seed; data fixed)")
    start = "no warm start" if args.no_warm_start else "baseline warm start"
    halving = (f" (grace {plan.grace_epochs}, reduction factor {args.reduction_factor})"
               if isinstance(schedulers.get(scheduler), schedulers.Asha) else "")
    print(f"default: TPE (make_searcher, {start}) + " + ("" if args.scheduler else "the CPU budget's scheduler, ")
          + f"{scheduler}{halving}, max_t {args.max_epochs}, both ranking on "
          f"{exp.rank_metric[0] if exp.rank_metric else exp.objective}; patience {exp.defaults['patience']}")
    if "optuna" in compared:
        print(f"optuna: one in-process study, TPESampler + MedianPruner on {exp.objective} ({start}), "
              f"{args.concurrency} threads, one trial at a time")
    else:
        print("optuna: not compared (not in --methods, and not in --reuse for every seed)")
    print(f"random: RandomSampler ({start}) + FIFO, patience 0: "
          f"{math.ceil(args.budget_epochs / args.max_epochs)} trials of {args.max_epochs} epochs")
    print(f"objective: {exp.objective} (top-1); searched: {', '.join(space)}")
    print("accounting: a Stopper counts reported epochs in arrival order and stops the search at the budget; "
          "later in-flight epochs are cut off, so exactly the first budget epochs count")
    print(f"versions: {versions()}")
    for r in runs:
        print(f"reused: {r['method']} seed {r['seed']} from {r['from']}/curves.csv")
    print(f"curves: {out}", flush=True)

    storage = Path(tempfile.mkdtemp(prefix="search_efficiency-ray-"))
    ray.init(address="local", num_cpus=max(2, args.concurrency), include_dashboard=False, log_to_driver=False,
             configure_logging=True, logging_level="WARNING")
    try:
        for method, seed in to_run:
            r = run_one(method, seed, exp, train, val, space, args, plan, storage)
            runs.append(r)
            print(f"  seed {seed} {method:<8}: {r['trials']} trials ({r['full']} ran all epochs, "
                  f"{r['failed']} failed), {r['counted']}/{r['reported']} epochs counted/reported, "
                  f"best {fmt_acc(r['best'])} at epoch {fmt_epochs(r['epochs_to_own_best'])}, "
                  f"{r['wall_s']:.0f} s", flush=True)
    finally:
        ray.shutdown()
        shutil.rmtree(storage, ignore_errors=True)

    # ------------------------------------------------------------ per seed
    by = {(r["method"], r["seed"]): r for r in runs}
    rows = []
    for seed in range(args.seeds):
        rnd = by["random", seed]
        target = rnd["best"]
        row = {"seed": seed, "random_best": target, "random_epochs": rnd["counted"],
               "random_epochs_to_own_best": rnd["epochs_to_own_best"], "random_wall_s": round(rnd["wall_s"], 1)}
        for method in compared[1:]:
            r = by[method, seed]
            reach = first_reach(r["curve"], target) if math.isfinite(target) else None
            row.update({f"{method}_best": r["best"], f"{method}_epochs_to_random_best": reach,
                        f"{method}_ratio_budget": rnd["counted"] / reach if reach else None,
                        f"{method}_wall_s": round(r["wall_s"], 1)})
        rows.append(row)

    def ratio(v: float | None) -> str:
        return f"{v:.2f}x" if v else "-"

    print()
    print("best val top-1 within the budget, and the epochs each method needed to first reach random's best")
    head = ("seed", "random best", *[f"{m} {what}" for m in compared[1:] for what in ("best", "epochs to it")])
    print("  ".join(f"{h:>{max(len(h), 6)}}" for h in head))
    for row in rows:
        cells = (str(row["seed"]), fmt_acc(row["random_best"]),
                 *[c for m in compared[1:] for c in (fmt_acc(row[f"{m}_best"]),
                                                      fmt_epochs(row[f"{m}_epochs_to_random_best"]))])
        print("  ".join(f"{c:>{max(len(h), 6)}}" for c, h in zip(cells, head, strict=True)))

    # ------------------------------------------------------------ over seeds
    def mean_sd(values: list[float]) -> str:
        values = [v for v in values if math.isfinite(v)]
        if not values:
            return "-"
        return f"{statistics.mean(values):.4f}" + (f" +- {statistics.stdev(values):.4f}" if len(values) > 1 else "")

    print()
    print(f"over {args.seeds} seed{'s' if args.seeds > 1 else ''} (mean +- sd):")
    print("  best val top-1: " + ", ".join(
        f"{m} {mean_sd([by[m, s]['best'] for s in range(args.seeds)])}" for m in compared))
    for method in compared[1:]:
        reached = [row[f"{method}_ratio_budget"] for row in rows if row[f"{method}_ratio_budget"]]
        print(f"  {method} reached random's best in {len(reached)}/{args.seeds} seeds"
              + (f"; budget/epochs-to-it: median {statistics.median(reached):.2f}x, min {min(reached):.2f}x"
                 if reached else "")
              + f"; within half the budget ({args.budget_epochs // 2} epochs): {sum(r >= 2 for r in reached)}"
              f"/{args.seeds}")
    marks = sorted({args.max_epochs, *(round(args.budget_epochs * f) for f in (0.25, 0.5, 0.75, 1.0))})
    marks = [m for m in marks if 1 <= m <= args.budget_epochs]
    print("  mean best-so-far at epochs " + ", ".join(map(str, marks)) + ":")
    for method in compared:
        cells = []
        for m in marks:
            vals = [by[method, s]["curve"][m - 1] for s in range(args.seeds) if len(by[method, s]["curve"]) >= m]
            vals = [v for v in vals if math.isfinite(v)]
            cells.append(f"{statistics.mean(vals):.4f}" if len(vals) == args.seeds else "-")
        print(f"    {method:<8} " + "  ".join(cells))
    # The goal read over the mean curve: the epoch where the mean best-so-far first reaches random's mean final best.
    target = statistics.mean(by["random", s]["best"] for s in range(args.seeds))
    for method in compared[1:]:
        curves = [by[method, s]["curve"] for s in range(args.seeds)]
        mean_curve = [statistics.mean(c[i] for c in curves) for i in range(min(map(len, curves)))]
        reach = first_reach(mean_curve, target)
        print(f"  {method}'s mean curve reaches random's mean best ({target:.4f}) at epoch {fmt_epochs(reach)}"
              + (f" ({'within' if 2 * reach <= args.budget_epochs else 'beyond'} half the budget)" if reach else ""))

    write_csvs(out, runs, rows)
    print(f"\nwall time {time.monotonic() - started:.0f} s; curves.csv and summary.csv in {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(cli.run(main, sys.argv[1:]))
