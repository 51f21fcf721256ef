"""Search an experiment's hyperparameters: Ray Tune trials, Optuna TPE proposals, ASHA stopping.

    python -m search.run shapes                        # generated data, budget sized to this machine
    python -m search.run shapes --data-dir ../shared/data/gsn/data_gsn.zip --trials 40
    python -m search.run shapes --smoke                # a tiny search, under 2 minutes on 2 cores
    python -m search.run shapes --address HOST:6379    # join an existing Ray cluster
    python -m search.run --list

Results go to results/<experiment>/<name>/: run.json, trials.csv, history.csv, best_config.json
and Ray's experiment folder tune/. `--resume --name NAME` continues an interrupted search.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import platform
import shlex
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from search import cli, experiments
from search.config import UserError, check_known, format_config, parse_assignments, resolve
from search.experiment import DataOptions, Experiment
from search.io import read_csv, read_json, write_json
from search.lock import LOCK, RunLock
from search.plan import Hardware, Plan, estimate_minutes, local_hardware, make_plan, measure_images_per_second
from search.trainer import Split

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
    p.add_argument("--seed", type=int, default=0, help="seeds the sampler, the data split and every trial")
    p.add_argument("--trials", type=int, help="number of trials (default: sized to the hardware)")
    p.add_argument("--max-epochs", type=int, help="epochs of a trial that is never stopped early")
    p.add_argument("--time-budget", type=float, metavar="MINUTES", help="stop starting trials after this long")
    p.add_argument("--concurrency", type=int, help="trials at once (default: as many as resources allow)")
    p.add_argument("--cpus-per-trial", type=float, help="CPUs (torch threads) per trial (default 1 on CPU)")
    p.add_argument("--gpus-per-trial", type=float, help="GPU share per trial, fractions allowed (default 0.5)")
    p.add_argument("--smoke", action="store_true", help="tiny search: 256 images, 4 trials, 2 epochs")
    p.add_argument("--top-k", type=int, help="best configs to retrain on fresh seeds (default 1 on CPU, 3 on GPU)")
    p.add_argument("--seeds", type=int, help="fresh seeds per retrained config (default 2 on CPU, 3 on GPU)")
    p.add_argument("--max-failures", type=int, default=2,
                   help="retries of a crashed trial, each from its last checkpoint (default 2)")
    p.add_argument("--no-retrain", action="store_true", help="stop after the search")
    p.add_argument("--settings", metavar="A,B,...", help="one search per value of the experiment's `setting` "
                   "(e.g. cls,cnt,multitask), each named NAME-<setting>, then a table comparing them")
    p.add_argument("--name", help="run name (default: a timestamp)")
    p.add_argument("--resume", action="store_true", help="continue the interrupted run --name NAME")
    p.add_argument("--overwrite", action="store_true", help="replace an existing run --name NAME")
    p.add_argument("--results", type=Path, default=ROOT, help="results root (default ./results)")
    p.add_argument("--address", default=os.environ.get("RAY_ADDRESS"),
                   help="join this Ray cluster (default $RAY_ADDRESS; none: start a local Ray)")
    p.add_argument("--storage", help="folder all nodes see, for Ray's trial data (default: the run folder)")
    p.add_argument("--dashboard", action="store_true", help="start Ray's dashboard, on 127.0.0.1 only")
    return p


def list_experiments() -> str:
    lines = []
    for name in experiments.names():
        e = experiments.get(name)
        lines.append(f"{name:<14} {e.summary}  [objective {e.objective} ({e.mode}); "
                     f"searches {', '.join(e.space)}" + (f"; --source {'|'.join(e.sources)}" if e.sources else "")
                     + "]")
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


def versions() -> dict[str, str]:
    import optuna
    import ray
    import torch

    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5,
                                cwd=Path(__file__).resolve().parent).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        commit = ""
    return {"python": platform.python_version(), "torch": torch.__version__, "ray": ray.__version__,
            "optuna": optuna.__version__, "git_commit": commit or "unknown"}


def check_reachable(address: str, timeout_s: float = 3.0) -> None:
    """Fail fast on a HOST:PORT nobody answers at: Ray itself retries for minutes before giving up."""
    if address in ("auto", "local") or "://" in address:
        return
    host, sep, port = address.rpartition(":")
    if not sep or not port.isdigit():
        raise UserError(f"--address {address}: write it as HOST:PORT, e.g. 10.0.0.5:6379")
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=timeout_s).close()
    except OSError as e:
        raise UserError(f"--address {address}: cannot join that Ray cluster (nothing answers: {e.strerror or e}); "
                        "check `ray status` on the head node, or leave --address out to run locally") from None


def start_ray(args: argparse.Namespace, hw: Hardware) -> Hardware:
    """Join --address, or start a local Ray: token auth on (Ray's default), dashboard off unless
    asked for and then on 127.0.0.1 only, worker output not mixed into ours."""
    import ray

    if args.dashboard and importlib.util.find_spec("aiohttp") is None:
        raise UserError("--dashboard needs Ray's dashboard packages, which ray[tune] leaves out: "
                        "pip install 'ray[default]', or run without --dashboard")
    common = {"include_dashboard": args.dashboard, "dashboard_host": "127.0.0.1", "log_to_driver": False,
              "configure_logging": True, "logging_level": "WARNING"}
    try:
        if args.address:
            ray.init(address=args.address, **common)
        else:
            ray.init(num_cpus=int(hw.cpus), num_gpus=int(hw.gpus), **common)
    except (ConnectionError, RuntimeError, ValueError) as e:
        if args.address:
            raise UserError(f"--address {args.address}: cannot join that Ray cluster ({str(e).splitlines()[0]}); "
                            "check `ray status` there, or leave --address out to run locally") from None
        raise
    cli.stop_on_sigterm()
    res = ray.cluster_resources()
    return Hardware(cpus=res.get("CPU", 0), gpus=res.get("GPU", 0), nodes=len([n for n in ray.nodes() if n["Alive"]]))


def ray_logs() -> str | None:
    """Where this run's Ray session keeps its logs (on this machine; a cluster's nodes keep their own)."""
    try:
        import ray._private.worker as worker

        return worker._global_node.get_logs_dir_path() if worker._global_node else None
    except (ImportError, AttributeError):
        return None


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
    if args.data_dir is not None:  # absolute: retraining and --resume may run from another folder
        args.data_dir = args.data_dir.expanduser().resolve()
    previous = None
    if args.resume:  # continue with the interrupted run's own command line; only where Ray runs may change
        if not args.name:
            raise UserError("--resume needs --name NAME of the run to continue")
        run_json = args.results.expanduser().resolve() / exp.name / args.name / "run.json"
        if not run_json.is_file():
            raise UserError(f"{run_json.parent}: no interrupted search to resume there")
        previous = read_json(run_json)
        now = args
        args = parser().parse_args(previous["argv"])
        from search.tuner import tune_location

        storage_path, tune_name = tune_location(run_json.parent, args.storage)
        if not (Path(storage_path) / tune_name).is_dir():
            raise UserError(f"{run_json.parent}: Ray's experiment folder {Path(storage_path) / tune_name} is missing; "
                            "cannot resume without it")
        args.resume, args.results, args.address, args.dashboard = True, now.results, now.address, now.dashboard

    # ------------------------------------------------------------ config and space (all checks before any output)
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
    run_dir = results / exp.name / name
    if not args.resume and not args.overwrite and run_dir.exists() and any(
            p.name != LOCK for p in run_dir.iterdir()):
        raise UserError(f"{run_dir} already exists; pick another --name, add --resume to continue it, "
                        "or --overwrite to replace it")
    try:
        results.mkdir(parents=True, exist_ok=True)
        probe = results / f".write-test-{os.getpid()}"
        probe.touch()
        probe.unlink()
    except OSError as e:
        raise UserError(f"{results}: cannot write results there ({e.strerror}); pass --results DIR") from None

    if args.address:
        check_reachable(args.address)
    def plan_for(hw: Hardware) -> Plan:
        return make_plan(exp, hw, trials=args.trials, max_epochs=args.max_epochs, time_budget_min=args.time_budget,
                         concurrency=args.concurrency, cpus_per_trial=args.cpus_per_trial,
                         gpus_per_trial=args.gpus_per_trial, smoke=args.smoke, top_k=args.top_k, seeds=args.seeds,
                         max_failures=args.max_failures)

    hw = local_hardware() if not args.address else None
    plan = plan_for(hw) if hw else None  # a cluster's plan needs its resources: after joining it
    data = exp.load(DataOptions(args.data_dir, args.download, None, split_seed=args.seed, source=args.source))

    with RunLock(run_dir):  # refuses while another process writes this run
        if args.overwrite and not args.resume:  # only now: every check above has passed
            for old in run_dir.iterdir():
                if old.name != LOCK:
                    shutil.rmtree(old) if old.is_dir() and not old.is_symlink() else old.unlink()
        try:
            return _search(args, argv, exp, previous, base, pinned, space, run_dir, name, hw, plan, plan_for, data)
        except Exception as e:  # a full disk, maybe wrapped in Ray Tune's TuneError: resumable
            full = cli.disk_full(e)
            if full is None:
                raise
            then = f"continue with: {resume_command(exp, name)}"
            raise UserError(cli.disk_full_message(full, then, run_dir)) from None


def resume_command(exp: Experiment, name: str) -> str:
    return f"python -m search.run {exp.name} --name {name} --resume"


def _search(args: argparse.Namespace, argv: list[str], exp: Experiment, previous: dict | None, base: dict,
            pinned: dict, space: dict, run_dir: Path, name: str, hw: Hardware | None, plan: Plan | None,
            plan_for, data) -> int:
    """Start or join Ray, search, retrain, report (the run directory is locked by the caller)."""
    import ray

    from search.tuner import run_search

    hw_ray = start_ray(args, hw or Hardware(cpus=1, gpus=0))
    try:
        if previous is not None:
            plan = Plan(**previous["plan"])
        elif plan is None:
            plan = plan_for(hw_ray)
        if plan.subset is not None:
            data.train = Split(data.train.x[:plan.subset], data.train.y[:plan.subset])
            if args.smoke:
                data.val = Split(data.val.x[:plan.subset], data.val.y[:plan.subset])
            data.info.update(train=len(data.train), val=len(data.val))
        base = {**base, "epochs": plan.max_epochs, "seed": args.seed}
        if previous is not None and previous["base_config"] != base:
            raise UserError(f"{run_dir}: its run.json does not match this code's defaults any more; "
                            "resume it with the version that started it")
        import torch

        ips = measure_images_per_second(exp, base, data.train.x[:base["batch_size"]], data.train.y[:base["batch_size"]],
                                        plan.cpus_per_trial, torch.device("cuda" if plan.gpus_per_trial else "cpu"))
        plan.estimate_min = estimate_minutes(plan, len(data.train), len(data.val),
                                             0 if args.no_retrain else len(data.full_train), ips)

        run_dir.mkdir(parents=True, exist_ok=True)
        run_info = {
            "experiment": exp.name, "name": name, "argv": argv if "--name" in argv else [*argv, "--name", name],
            "command": "python -m search.run " + shlex.join(argv),
            "options": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
            "plan": plan.as_dict(), "hardware": {"cpus": hw_ray.cpus, "gpus": hw_ray.gpus, "nodes": hw_ray.nodes,
                                                 "machine": platform.machine(), "system": platform.system()},
            "data": data.info, "base_config": base, "pinned": pinned, "searched": list(space),
            "space": {k: d.describe() for k, d in space.items()}, "objective": exp.objective, "mode": exp.mode,
            "versions": versions(), "started": time.strftime("%Y-%m-%d %H:%M:%S"),
        }
        if previous is None:
            write_json(run_dir / "run.json", run_info)

        print(f"{exp.name}: {exp.summary}")
        print(f"data: {data.info}")
        print(f"hardware: {hw_ray.describe()}; {plan.concurrency} trial{'s' if plan.concurrency > 1 else ''} at once, "
              f"{plan.cpus_per_trial:g} CPU" + (f" + {plan.gpus_per_trial:g} GPU" if plan.gpus_per_trial else "")
              + " each")
        print(f"plan: {plan.trials} trials, up to {plan.max_epochs} epochs, ASHA from epoch {plan.grace_epochs} "
              f"(keeps 1/{plan.reduction_factor})"
              + (f", time budget {plan.time_budget_min:g} min" if plan.time_budget_min else ""))
        if not args.no_retrain:
            print(f"then: retrain the best {plan.retrain_top_k} config{'s' if plan.retrain_top_k > 1 else ''} and "
                  f"the baseline on {plan.retrain_seeds} fresh seeds, {plan.retrain_epochs} epochs each, on "
                  f"{plan.retrain_subset or len(data.full_train)} training images; score them once on the "
                  f"{len(data.test)} held-out images"
                  + ("" if hw_ray.gpus else " (fewer configs and seeds than on a GPU, to fit a CPU's time)"))
        if plan.estimate_min:
            print("estimate: " + ("under a minute" if plan.estimate_min < 1 else f"about {round(plan.estimate_min)} "
                  "minutes") + f" in all, at {ips:.0f} images/s per trial (measured just now)")
        print(f"searching {', '.join(space)}; pinned: {format_config(pinned) or 'nothing'}")
        print(f"results: {run_dir}" + (f"; Ray's logs: {ray_logs()}" if ray_logs() else ""))

        interrupted = retrain_interrupted = False
        if previous is not None and previous.get("search_done"):  # killed while retraining: resume only that
            print("search: already finished; resuming the retraining")
        else:
            t0 = time.monotonic()
            grid = run_search(exp, data, base, space, plan, run_dir, seed=args.seed, resume=args.resume,
                              storage=args.storage)
            interrupted = len(grid) - grid.num_terminated - grid.num_errors > 0 or (
                len(grid) < plan.trials and not plan.time_budget_min)
            info = read_json(run_dir / "run.json")
            info["search_wall_s"] = info.get("search_wall_s", 0.0) + time.monotonic() - t0  # summed over resumes
            info["finished"] = time.strftime("%Y-%m-%d %H:%M:%S")
            info["search_done"] = not interrupted
            write_json(run_dir / "run.json", info)
            summarise(exp, run_dir, list(space))
        if not interrupted and not args.no_retrain:
            from search.retrain import retrain

            t0 = time.monotonic()
            try:
                retrain(run_dir, top_k=plan.retrain_top_k, seeds=plan.retrain_seeds, epochs=plan.retrain_epochs,
                        cpus=plan.cpus_per_trial, gpus=plan.gpus_per_trial, data=data)
            except KeyboardInterrupt:  # every finished retrain run is kept; --resume runs only the others
                retrain_interrupted = True
            info = read_json(run_dir / "run.json")
            info["retrain_wall_s"] = info.get("retrain_wall_s", 0.0) + time.monotonic() - t0
            write_json(run_dir / "run.json", info)
    finally:
        ray.shutdown()

    if retrain_interrupted:
        print(f"results in {run_dir}")
        print(f"interrupted while retraining (the search is complete); continue the retraining with:\n"
              f"  {resume_command(exp, name)}", file=sys.stderr)
        return 130
    if not interrupted:
        from search.report import build

        print(f"report: {build(run_dir)}")
    print(f"results in {run_dir}")
    if interrupted:
        print(f"interrupted before all trials ended; continue with:\n  {resume_command(exp, name)}", file=sys.stderr)
        return 130
    return 0


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
    from search import analyse
    from search.report import md_table

    settings = [s.strip() for s in args.settings.split(",") if s.strip()]
    if "setting" not in exp.defaults:
        raise UserError(f"--settings: experiment {exp.name} has no `setting` key; pin values with --set instead")
    if any(a.split("=", 1)[0].strip() == "setting" for a in args.set):
        raise UserError("--settings runs each setting itself: drop --set setting=...")
    if not settings or len(set(settings)) < len(settings):
        raise UserError(f"--settings {args.settings}: give distinct values separated by commas, e.g. cls,cnt,multitask")
    for s in settings:
        exp.check({"setting": s})
    name = args.name or time.strftime("%Y%m%d-%H%M%S")
    results = args.results.expanduser().resolve() / exp.name
    base_argv = _without(_without(_without(argv, "--settings", True), "--name", True), "--resume", False)
    run_dirs = []
    for s in settings:
        sub = results / f"{name}-{s}"
        run_dirs.append(sub)
        if (sub / "report.md").is_file():
            print(f"== setting {s}: done before, in {sub}")
            continue
        resume = ["--resume"] if (sub / "run.json").is_file() else []
        print(f"== setting {s}: {'resuming' if resume else 'searching'} as {sub.name}", flush=True)
        code = main([*base_argv, "--set", f"setting={s}", "--name", sub.name, *resume])
        if code != 0:
            return code
    runs = [analyse.load(d) for d in run_dirs]
    table = analyse.compare(runs, list(exp.report_metrics) or None)
    from datasets.files import atomic_write
    from search.io import write_csv

    write_csv(results / f"{name}-settings.csv", table)
    text = (f"# {exp.name}: settings {', '.join(settings)}\n\nEach row: one configuration retrained on fresh seeds "
            f"and scored on the held-out split (mean ± std over seeds). Command: `python -m search.run "
            f"{shlex.join(argv)}`\n\n{md_table(table)}\n")
    atomic_write(results / f"{name}-settings.md", lambda f: f.write(text.encode()))
    print(table.to_string(index=False))
    print(f"comparison: {results / f'{name}-settings.md'}")
    return 0


def summarise(exp: Experiment, run_dir: Path, searched: list[str]) -> None:
    import pandas as pd

    from search.tables import best_trial

    trials = read_csv(run_dir / "trials.csv") if (run_dir / "trials.csv").exists() else pd.DataFrame()
    counts = trials["status"].value_counts().to_dict() if not trials.empty else {}
    best = best_trial(trials, exp.objective, exp.mode) if not trials.empty else None
    print(f"search done: {len(trials)} trials ({', '.join(f'{v} {k}' for k, v in counts.items())})")
    if best is not None:
        print(f"best: {exp.objective} {best[f'best_{exp.objective}']:.4f} ({best['trial_id']}, epoch "
              f"{int(best['best_epoch'])}): {format_config(best, searched)}")


if __name__ == "__main__":
    raise SystemExit(cli.run(main, sys.argv[1:]))
