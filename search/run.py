"""Search an experiment's hyperparameters: Ray Tune trials, Optuna TPE proposals, early stopping.

    python -m search.run shapes                        # generated data, budget sized to this machine
    python -m search.run shapes --data-dir ../shared/data/gsn/data_gsn.zip --trials 40
    python -m search.run shapes --smoke                # a tiny search, under 2 minutes on 2 cores
    python -m search.run shapes --address HOST:6379    # join an existing Ray cluster
    python -m search.run --list

Results go to results/<experiment>/<name>/: run.json, trials.csv, history.csv, best_config.json
and Ray's experiment folder tune/. `--resume --name NAME` continues an interrupted search.
This module turns the command line into a checked request; the run itself is the stages of
search/stages.py (prepare -> search -> retrain -> report), inside a Ray session and the run's lock.
"""

from __future__ import annotations

import argparse
import os
import shlex
import sys
import time
from pathlib import Path
from typing import Any

from datasets.files import atomic_write
from search import analyse, cli, experiments, growth, record, run_folder, schedulers, stages, warm
from search import storage as trial_storage
from search.config import UserError, check_known, parse_assignments, resolve
from search.experiment import DataOptions, Experiment
from search.io import write_csv
from search.lock import LOCK, RunLock, check_free
from search.markdown import md_table
from search.plan import KNOBS, OVERRIDABLE, Hardware, local_hardware, make_plan
from search.ray_session import check_auth, check_reachable, ray_logs, ray_session
from search.tuner import local_folder, tune_location

ROOT = Path("results")


def parser() -> argparse.ArgumentParser:
    p = cli.ArgumentParser(prog="python -m search.run", description=__doc__.split("\n\n")[0], allow_abbrev=False)
    p.add_argument("experiment", nargs="?", help="experiment name (see --list)")
    p.add_argument("--list", action="store_true", help="list the experiments and exit")
    p.add_argument("--data-dir", type=Path, help="the experiment's data (folder or zip); default: offline data")
    p.add_argument("--download", action="store_true", help="fetch the experiment's public data set first")
    p.add_argument("--source", help="which data source, for experiments with several (see --list)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="pin a parameter (removes it from the search space), e.g. --set setting=cls")
    p.add_argument("--seed", type=cli.SEED, default=0, help="seeds the sampler, the data split and every trial")
    p.add_argument("--budget", metavar="NAME", help="a named budget of the experiment instead of the hardware's "
                   "(see --list), e.g. shapes --budget 90min")
    for knob in KNOBS:  # the budget's knobs (search/plan.py); each overrides a field of the experiment's budget
        p.add_argument(knob.flag, dest=knob.name, type=knob.parse, metavar=knob.metavar, help=knob.help)
    p.add_argument("--scheduler", choices=schedulers.names(),
                   help=f"trial scheduler: {'; '.join(f'{n}: {schedulers.get(n).summary}' for n in schedulers.names())}"
                   " (default: the experiment's budget for the hardware found, see the plan line)")
    p.add_argument("--smoke", action="store_true", help="tiny search: 256 images of each split, 4 trials, 2 epochs")
    p.add_argument("--rank-on", choices=("smooth", "objective"),
                   help="what the scheduler and TPE rank trials on: the experiment's smoother metric where it "
                   "declares one, or the objective (default: the budget's, smooth unless the budget says)")
    p.add_argument("--choose-decoding", action="store_true", default=None,
                   help="read each trial's last epoch every way the experiment offers (shapes: tta, joint_decode, "
                   "count_decode) and keep the best, instead of searching those keys (default: the budget's, "
                   "e.g. --budget 90min)")
    p.add_argument("--full-space", action="store_true",
                   help="search every parameter, not only those the hardware's budget searches (see --list)")
    p.add_argument("--warm-start-from", nargs="+", default=[], metavar="RUN_DIR",
                   help="tell Optuna the finished trials of earlier runs of this experiment that fit this space")
    p.add_argument("--no-retrain", action="store_true", help="stop after the search")
    p.add_argument("--settings", metavar="A,B,...", help="one search per value of the experiment's `setting` "
                   "(e.g. cls,cnt,multitask), each named NAME-<setting>, then a table comparing them")
    p.add_argument("--name", help="run name (default: a timestamp)")
    p.add_argument("--resume", action="store_true", help="continue the interrupted run --name NAME")
    p.add_argument("--overwrite", action="store_true", help="replace an existing run --name NAME")
    p.add_argument("--force", action="store_true", help="with --resume: go on although the run's data is not "
                   "the data it started on (run.json records it)")
    p.add_argument("--results", type=Path, default=ROOT, help="results root (default ./results)")
    p.add_argument("--address", default=os.environ.get("RAY_ADDRESS"),
                   help="join this Ray cluster (default $RAY_ADDRESS; none: start a local Ray)")
    p.add_argument("--storage", help="folder all nodes see, for Ray's trial data (default: the run folder)")
    p.add_argument("--dashboard", action="store_true", help="start Ray's dashboard, on 127.0.0.1 only")
    p.add_argument("--allow-unauthenticated", action="store_true",
                   help="run although Ray's token authentication is off (RAY_AUTH_MODE=disabled): its servers "
                   "listen on every interface, so only on a network you trust")
    return p


def list_experiments() -> str:
    lines = []
    for name in experiments.names():
        e = experiments.get(name)
        lines.append(f"{name:<14} {e.summary}  [objective {e.objective} ({e.mode}); "
                     f"searches {', '.join(e.space)}" + (f"; --source {'|'.join(e.sources)}" if e.sources else "")
                     + (f"; --budget {'|'.join(e.budgets)}" if e.budgets else "") + "]")
    return "\n".join(lines)


def searched_space(exp: Experiment, pinned: dict[str, Any]) -> dict:
    # Values fixed for the whole search: the pins, and defaults of keys that are not searched.
    fixed = {k: v for k, v in {**exp.defaults, **pinned}.items() if k in pinned or k not in exp.space}
    inactive = exp.inactive(fixed)
    return {k: d for k, d in exp.space.items() if k not in pinned and k not in inactive}


def check_pins_in_space(exp: Experiment, pinned: dict[str, Any]) -> None:
    for key, value in pinned.items():
        dim = exp.space.get(key)
        if dim is not None and not dim.contains(value):
            raise UserError(f"--set {key}={value}: outside the search space {dim.describe()}; "
                            "pick a value inside it")


def main(argv: list[str]) -> int:
    args = parser().parse_args(argv)
    if args.list:
        print(list_experiments())
        return 0
    if not args.experiment:
        raise UserError("name an experiment, e.g. `python -m search.run shapes` (see --list)")
    exp = experiments.get(args.experiment)
    exp.check_source(args.source)
    if args.settings:
        return run_settings(exp, args, argv)
    if args.resume:  # continue with the interrupted run's own command line; only where Ray runs may change
        if not args.name:
            raise UserError("--resume needs --name NAME of the run to continue")
        run_dir = run_folder.run_dir(args.results.expanduser().resolve(), exp.name, args.name)
        if not record.exists(run_dir):
            raise UserError(f"{run_dir}: no interrupted search to resume there")
        now = args
        args = parser().parse_args(record.argv_of(run_dir))
        check_same_options(now, args, run_dir)
        previous = record.RunRecord.read(run_dir)
        # the paths as the run resolved them when it started, not its argv's again from this folder; a
        # --data-dir given now is where the data moved to (checked by its fingerprint)
        recorded = previous.options
        args.data_dir = now.data_dir or (Path(recorded["data_dir"]) if recorded.get("data_dir") else args.data_dir)
        args.storage = check_storage_again(recorded.get("storage") or args.storage, now.storage, run_dir)
        args.force = now.force
        tune_dir = trial_storage.join(*tune_location(run_dir, args.storage, folder=previous.storage_folder))
        if not trial_storage.exists(tune_dir):
            raise UserError(f"{run_dir}: Ray's experiment folder {tune_dir} is missing; cannot resume without it")
        args.resume, args.results, args.address, args.dashboard = True, now.results, now.address, now.dashboard
        args.allow_unauthenticated = now.allow_unauthenticated
        args.grow_to = now.trials  # `--resume --trials N`: grow the finished search to N trials
        if stages.rolls_back(previous, args.grow_to):
            return roll_back_growth(run_dir, previous, args.storage)
        if args.grow_to is not None:  # refused before Ray starts (prepare checks again, under the lock)
            stages.check_growth(previous, args.grow_to, schedulers.of_plan(previous.plan), run_dir)
    request = checked_request(exp, args, argv)
    with RunLock(request.run_dir):  # refuses while another process writes this run
        check_target(request.run_dir, args)  # again: another process may have written it since
        if args.overwrite and not args.resume:  # only now: every check above has passed
            deleted = run_folder.replace(request.run_dir, keep=(LOCK,))
            if deleted:
                print(f"--overwrite: deleted {len(deleted)} entries of {request.run_dir}: {', '.join(deleted)}"
                      + ("; its trials in --storage stay there" if args.storage else ""), flush=True)
        try:
            return run_stages(request, args)
        except Exception as e:  # a full disk, maybe wrapped in Ray Tune's TuneError: resumable
            full = cli.disk_full(e)
            if full is None:
                raise
            then = f"continue with: {resume_command(exp, request.name, args)}"
            raise UserError(cli.disk_full_message(full, then, request.run_dir)) from None


# What --resume may be given besides the run's own options: where Ray runs, where results live, where its
# data moved to (--data-dir, --force), and --trials, which grows a finished search.
RESUME_MAY_CHANGE = ("experiment", "name", "resume", "overwrite", "results", "address", "dashboard",
                     "allow_unauthenticated", "trials",
                     "data_dir", "force", "storage")  # --storage: checked against run.json's, secrets redacted


def check_same_options(now: argparse.Namespace, recorded: argparse.Namespace, run_dir: Path) -> None:
    """A resumed run keeps the options it started with; one typed with another value (a --set, another
    --max-epochs, ...) is refused rather than dropped without a word."""
    p = parser()
    for action in p._actions:
        key = action.dest
        if key in RESUME_MAY_CHANGE or not action.option_strings or not hasattr(now, key):
            continue
        typed = getattr(now, key)
        if typed != p.get_default(key) and typed != getattr(recorded, key):
            raise UserError(f"{action.option_strings[0]}: --resume continues {run_dir.name} with the options it "
                            "started with (see its run.json); to change them start a new --name, with "
                            f"--warm-start-from {run_dir} to build on its trials")


def checked_request(exp: Experiment, args: argparse.Namespace, argv: list[str]) -> stages.Request:
    """Every check on the command line and the results folder, before any output; the data loaded."""
    if args.data_dir is not None:  # absolute: retraining and --resume may run from another folder
        args.data_dir = args.data_dir.expanduser().resolve()
    pinned_text = parse_assignments(args.set)
    check_known(pinned_text, exp.defaults)
    for key in ("epochs", "seed"):
        if key in pinned_text:
            raise UserError(f"--set {key}: use --max-epochs / --seed for the search")
    base = resolve(exp.defaults, pinned_text)
    exp.check(base)
    pinned = {k: base[k] for k in pinned_text}
    check_pins_in_space(exp, pinned)
    space = searched_space(exp, pinned)
    if not space:
        raise UserError("every searched parameter is pinned by --set: nothing left to search")

    results = args.results.expanduser().resolve()
    name = args.name or time.strftime("%Y%m%d-%H%M%S")
    run_dir = run_folder.run_dir(results, exp.name, name)
    check_free(run_dir)  # before the data loads: a run in use is refused in a second
    check_auth(args.allow_unauthenticated)  # and Ray without its token authentication (ray_session again)
    check_target(run_dir, args)
    try:
        results.mkdir(parents=True, exist_ok=True)
        probe = results / f".write-test-{os.getpid()}"
        probe.touch()
        probe.unlink()
    except OSError as e:
        raise UserError(f"{results}: cannot write results there ({e.strerror}); pass --results DIR") from None
    if args.address:
        check_reachable(args.address)
    if args.storage:
        trial_storage.check(args.storage)
        args.storage = trial_storage.location(args.storage)  # absolute: a resume may start from another folder
    if args.force and not args.resume:
        raise UserError("--force goes with --resume (to go on with a run on other data); drop it")
    previous = record.RunRecord.read(run_dir) if args.resume else None
    fingerprint = record.data_fingerprint(args.data_dir)
    forced = record.check_same_data(previous, args.data_dir, args.force, run_dir) if previous else []
    # absolute, as --data-dir: a resumed run may start from another folder
    warm_from = [Path(d).expanduser().resolve() for d in args.warm_start_from]
    args.warm_start_from = [str(d) for d in warm_from]
    if any(d == run_dir for d in warm_from):
        raise UserError(f"--warm-start-from {run_dir}: that is this run; name earlier runs")
    if not args.resume:  # a resumed run's study has them already
        warm.check_runs(warm_from, exp)

    def plan_for(hw: Hardware):
        return make_plan(exp, hw, smoke=args.smoke, budget_name=args.budget, full_space=args.full_space,
                         **{name: getattr(args, name) for name in OVERRIDABLE})

    if not args.address and not args.resume:
        plan_for(local_hardware())  # bad budget options fail here, before the data loads; a cluster's after joining
    # a resumed run loads the data as its loader decided then (e.g. facades' image size, which follows a GPU)
    data = exp.load(DataOptions(args.data_dir, args.download, split_seed=args.seed, source=args.source,
                                recorded=dict(previous.data) if previous else {}))
    # run.json, report.md and the printed command keep no secret of a --storage URI (storage.redact)
    options = {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()}
    options["storage"] = trial_storage.redact(args.storage) if args.storage else args.storage
    argv = [trial_storage.redact(a) for a in (argv if "--name" in argv else [*argv, "--name", name])]
    return stages.Request(
        exp=exp, run_dir=run_dir, name=name, argv=argv, options=options, base=base, pinned=pinned,
        space=space, data=data, make_plan=plan_for, resume=args.resume, retrain=not args.no_retrain,
        storage=args.storage, warm_start_from=[] if args.resume else warm_from,
        grow_to=getattr(args, "grow_to", None), data_fingerprint=fingerprint, forced=forced)


def check_storage_again(recorded: str | None, typed: str | None, run_dir: Path) -> str | None:
    """The --storage a resume goes on with: the run's own. run.json keeps no secret of a URI (its *** in
    place of them), so such a run's --storage must be typed again, and match."""
    typed = trial_storage.location(typed) if typed else None
    if typed is not None and trial_storage.redact(typed) != trial_storage.redact(recorded or ""):
        raise UserError(f"--storage: --resume continues {run_dir.name} with the storage it started with, "
                        f"{recorded or 'none (the run folder)'}")
    if recorded and "***" in recorded:
        if typed is None:
            raise UserError(f"{run_dir.name}: its --storage carries credentials, which run.json does not keep; "
                            f"give it again: --resume --storage '{recorded}' with the *** filled in")
        return typed
    return recorded


def roll_back_growth(run_dir: Path, previous: record.RunRecord, storage: str | None) -> int:
    with RunLock(run_dir):
        previous = record.RunRecord.read(run_dir)  # as it is under the lock
        if not stages.rolls_back(previous, previous.grown[-1]["trials_before"] if previous.grown else None):
            raise UserError(f"{run_dir.name}: its growth has ended meanwhile; nothing to roll back")
        where = tune_location(run_dir, storage, previous.rounds, previous.storage_folder)
        print(growth.roll_back(run_dir, previous, local_folder(trial_storage.join(*where))))
    return 0


def check_target(run_dir: Path, args: argparse.Namespace) -> None:
    """A new run's folder is free, or holds a run of this name that --overwrite may replace (checked with
    the command line, and again under the run's lock)."""
    if args.resume or not run_dir.is_dir() or not any(p.name != LOCK for p in run_dir.iterdir()):
        return
    if not args.overwrite:
        raise UserError(f"{run_dir} already exists; pick another --name, add --resume to continue it, "
                        "or --overwrite to replace it")
    run_folder.replaceable(run_dir, keep=(LOCK,))


def check_storage(hw: Hardware, storage: str | None) -> None:
    """Without --storage Ray keeps every trial's checkpoints in the driver's run folder, which the other
    nodes of a cluster cannot write: their trials would fail at their first epoch."""
    if hw.nodes > 1 and not storage:
        raise UserError(f"the cluster has {hw.nodes} nodes: pass --storage DIR, a folder every node sees "
                        "(a shared file system or a URI such as s3://bucket/path), for the trials' checkpoints")


def run_stages(request: stages.Request, args: argparse.Namespace) -> int:
    """prepare -> search -> retrain -> report; the exit code (130: interrupted, resumable)."""
    exp, run_dir = request.exp, request.run_dir
    retrain_interrupted = False
    with ray_session(args, local_hardware() if not args.address else Hardware(cpus=1, gpus=0)) as hw:
        check_storage(hw, request.storage)
        ctx = stages.prepare(request, hw)
        ctx.print(f"results: {run_dir}" + (f"; Ray's logs: {ray_logs()}" if ray_logs() else ""))
        complete = stages.search(ctx)
        if complete and request.retrain:
            try:
                stages.retrain(ctx)
            except KeyboardInterrupt:  # every finished retrain run is kept; --resume runs only the others
                retrain_interrupted = True
    if retrain_interrupted:
        print(f"results in {run_dir}")
        print(f"interrupted while retraining (the search is complete); continue the retraining with:\n"
              f"  {resume_command(exp, request.name, args)}", file=sys.stderr)
        return 130
    if complete:
        stages.report(ctx)
    print(f"results in {run_dir}")
    if not complete:
        print(f"interrupted before all trials ended; continue with:\n  {resume_command(exp, request.name, args)}",
              file=sys.stderr)
        return 130
    return 0


def resume_command(exp: Experiment, name: str, args: argparse.Namespace) -> str:
    """The command that continues this run: the run's own options come back from its run.json, but not
    where it lives (--results) or the cluster it ran on (--address, unless RAY_ADDRESS names it anyway)."""
    extra = []
    if Path(args.results) != ROOT:
        extra += ["--results", str(args.results)]
    if args.address and args.address != os.environ.get("RAY_ADDRESS"):
        extra += ["--address", args.address]
    return shlex.join(["python", "-m", "search.run", exp.name, "--name", name, "--resume", *extra])


def _without(argv: list[str], flag: str, takes_value: bool) -> list[str]:
    out, skip = [], False
    for token in argv:
        if skip:
            skip = False
        elif token == flag:
            skip = takes_value
        elif not token.startswith(flag + "="):
            out.append(token)
    return out


def run_settings(exp: Experiment, args: argparse.Namespace, argv: list[str]) -> int:
    """One search (and retraining) per setting, run one after the other as NAME-<setting>, then
    NAME-settings.md/.csv: their retrained results side by side. Re-running the same command
    skips the settings already reported and resumes an interrupted one."""
    settings = [s.strip() for s in args.settings.split(",") if s.strip()]
    if "setting" not in exp.defaults:
        raise UserError(f"--settings: experiment {exp.name} has no `setting` key; pin values with --set instead")
    if any(a.split("=", 1)[0].strip() == "setting" for a in args.set):
        raise UserError("--settings runs each setting itself: drop --set setting=...")
    if not settings or len(set(settings)) < len(settings):
        raise UserError(f"--settings {args.settings}: give distinct values separated by commas, e.g. cls,cnt,multitask")
    for s in settings:
        exp.check({"setting": s})
    name = run_folder.check_name(args.name or time.strftime("%Y%m%d-%H%M%S"))
    results = args.results.expanduser().resolve() / exp.name
    base_argv = _without(_without(_without(argv, "--settings", True), "--name", True), "--resume", False)
    run_dirs = []
    for s in settings:
        sub = run_folder.run_dir(results.parent, exp.name, f"{name}-{s}")
        run_dirs.append(sub)
        if (sub / "report.md").is_file():
            print(f"== setting {s}: done before, in {sub}")
            continue
        resume = ["--resume"] if record.exists(sub) else []
        print(f"== setting {s}: {'resuming' if resume else 'searching'} as {sub.name}", flush=True)
        code = main([*base_argv, "--set", f"setting={s}", "--name", sub.name, *resume])  # the same stages
        if code != 0:
            return code
    runs = [analyse.load(d) for d in run_dirs]
    table = analyse.compare(runs, list(exp.report_metrics) or None)
    write_csv(results / f"{name}-settings.csv", table)
    text = (f"# {exp.name}: settings {', '.join(settings)}\n\nEach row: one configuration retrained on fresh seeds "
            f"and scored on the held-out split (mean ± std over seeds). Command: `python -m search.run "
            f"{shlex.join(argv)}`\n\n{md_table(table)}\n")
    atomic_write(results / f"{name}-settings.md", lambda f: f.write(text.encode()))
    print(table.to_string(index=False))
    print(f"comparison: {results / f'{name}-settings.md'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(cli.run(main, sys.argv[1:]))
