"""report.md: one run's study, verdict and plots, written into the run directory.

    python -m search.report results/shapes/NAME        # rebuild it (also runs at the end of search.run)

Sections follow the tuning playbook: the study (space, budget, hardware, reproduce command), the
verdict of retraining on fresh seeds against the hand-tuned baseline, the best configurations,
objective against each hyperparameter with bound checks, training curves, best-so-far against wall
time, importance, the trial scheduler's own section (search/scheduler_reports.py: e.g. how well early
rankings held), and the experiment's own diagnostics.
Figures go to report/ beside it. The same results give the same bytes.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pandas as pd
import torch

from datasets.errors import DataError
from datasets.files import atomic_write
from search import analyse, cli, experiments, report_plots, scheduler_reports, schedulers, study_stats
from search import storage as trial_storage
from search.analyse import Run
from search.config import UserError, format_config
from search.experiment import LOOP_LIMITS, Choice, Dim, Experiment, matches
from search.io import read_json
from search.lock import RunLock
from search.loop import DECODED
from search.markdown import md_table, shown
from search.plan import cut_to_plan
from search.plots import FIGURES
from search.record import exists as is_run
from search.stats import BASELINE, verdict_sentence

SECTIONS = ("Verdict", "The study", "Best configurations", "Objective against each hyperparameter",
            "Training curves", "Best so far against wall time", "Hyperparameter importance", "Files")
# ... and between importance and the files, the scheduler's own section (search/scheduler_reports.py).


def _fmt(v: Any) -> str:
    return f"{v:.3g}" if isinstance(v, float) else str(v)


def _space(run: Run, exp: Experiment) -> dict[str, Dim]:
    return run.record.searched_space(exp)


def _baseline_trial(run: Run, exp: Experiment) -> str | None:
    """The warm-start trial: the search's first, whose values are the baseline (moved into range)."""
    point = run.record.warm_start_point(exp)
    hits = [row["trial_id"] for _, row in run.trials.iterrows() if matches(row, point)]
    return str(hits[0]) if hits else None


def _warm_name(run: Run) -> str:
    """What the warm-start trial is: the baseline, or its values trained with a budget's own (which the
    retrained baseline is not)."""
    tuned_with = run.record.tuned_with
    return "baseline" if not tuned_with else f"baseline's values + {format_config(tuned_with)}"


def _link(path: Path | None, alt: str) -> str:
    return f"![{alt}]({FIGURES}/{path.name})\n" if path is not None else f"({alt}: nothing to draw yet)\n"


# ----------------------------------------------------------------------------- sections


def verdict_section(run: Run, exp: Experiment, fig_dir: Path) -> str:
    out = ["## Verdict\n"]
    if run.retrain.empty:
        return out[0] + f"Not retrained yet: `python -m search.retrain {shown(run.path)}`.\n"
    metric, v = run.test_objective, run.verdict()
    out.append(f"Each configuration was trained for {int(run.retrain['config_epochs'].iloc[0])} epochs on the whole "
               f"training split ({run.record.data.get('full_train', '?')} images) with the same fresh seeds, then "
               f"scored once on the {run.record.data.get('test', '?')} held-out images no trial ever saw.\n")
    best = run.best()
    kept = run.kept_baseline()
    sentence = verdict_sentence(v, metric, kept)
    out.append("**" + sentence[0].upper() + sentence[1:] + "**\n")
    if kept:
        out.append(f"The baseline's own trial ({best['trial_id']}) was the best on {run.objective} in the search; "
                   "the tuned configs retrained here are the best of the others.\n")
    rows = []
    for _, r in v.iterrows():
        runs = run.retrain.loc[run.retrain["label"] == r["label"]].sort_values("seed")[metric]
        rows.append({"config": r["label"], "seeds": int(r["n"]), "runs": " ".join(f"{x:.3f}" for x in runs),
                     metric: f"{r['mean']:.4f} ± {r['std']:.4f}",
                     "95% interval": f"{r['ci_low']:.4f} .. {r['ci_high']:.4f}",
                     "paired difference to baseline (95%)": "" if r["label"] == BASELINE else
                     f"{r['diff_mean']:+.4f} ({r['diff_low']:+.4f} .. {r['diff_high']:+.4f})",
                     "beats baseline": "" if r["label"] == BASELINE else ("yes" if r["beats_baseline"] else "no")})
    out.append(md_table(pd.DataFrame(rows)) + "\n")
    out.append("Every test metric, mean ± std over seeds:\n")
    out.append(md_table(analyse.retrain_table(run, list(exp.report_metrics) or None)) + "\n")
    seeds = sorted(run.retrain["seed"].unique().tolist())
    out.append(f"Seeds: {', '.join(map(str, seeds))} (none of them used by a search trial). The paired difference "
               "compares each tuned run with the baseline run of the same seed; its interval is Student's t over "
               "seeds (with 2 or 3 seeds it is wide, and an accuracy's may leave [0, 1]: the runs are listed "
               "beside it).\n")
    out.append(_link(report_plots.metric_by_label(run.retrain, metric, fig_dir / "retrain_test.png"),
                     f"{metric} per retrained config"))
    return "\n".join(out)


def study_section(run: Run, exp: Experiment, space: dict[str, Dim]) -> str:
    record, plan, t = run.record, run.plan, run.trials
    counts = t["status"].value_counts().to_dict() if not t.empty else {}
    wall = record.search_wall_s
    hw = record.hardware
    lines = ["## The study\n",
             f"- experiment: **{exp.name}**: {exp.summary}",
             f"- objective: {run.objective} ({'higher' if run.mode == 'max' else 'lower'} is better), "
             f"on the validation split ({record.data.get('val', '?')} images)",
             f"- data: {record.data.get('source')}; search trains on {record.data.get('train', '?')} images",
             f"- hardware: {hw.get('cpus', 0):g} CPUs, {hw.get('gpus', 0):g} GPUs, {hw.get('nodes', 1)} node(s); "
             f"{plan.concurrency} trials at once, {plan.cpus_per_trial:g} CPU and "
             f"{plan.gpus_per_trial:g} GPU each",
             f"- budget{f' ({plan.budget})' if plan.budget else ''}: {plan.trials} trials, up to {plan.max_epochs} "
             "epochs; "
             f"{schedulers.of_plan(plan).describe(plan)}"
             + (f"; time budget {plan.time_budget_min:g} min" if plan.time_budget_min else ""),
             f"- trials: {len(t)} ({', '.join(f'{counts.get(s, 0)} {s}' for s in ('completed', 'stopped', 'failed'))})",
             "- wall time: " + (f"search {wall / 60:.1f} min" if wall else "search not finished")
             + (f", retraining {record.retrain_wall_s / 60:.1f} min" if record.retrain_wall_s else ""),
             "- versions: " + ", ".join(f"{k} {v}" for k, v in record.versions.items()),
             f"- reproduce: `{record.command}`" + (f" (seed {record.base_config.get('seed')})")
             + "".join(f", then grown from {g['trials_before']} to {g['trials']} trials with "
                       f"`python -m search.run {exp.name} --name {run.name} --resume --trials {g['trials']}`"
                       for g in record.grown),
             f"- pinned: {format_config(run.pinned) or 'nothing'}"
             + (f"\n- every trial and tuned config trained with {format_config(record.tuned_with)}; the baseline "
                "without, as the seeds ran it" if record.tuned_with else "") + "\n"]
    best = run.best()
    warm = record.warm_start_point(exp)

    def baseline(k: str) -> str:  # a baseline value outside the range runs at the nearest bound in the search
        value = record.base_config.get(k)
        return _fmt(value) + ("" if warm[k] == value else f" (its trial: {_fmt(warm[k])}, the range's bound)")
    rows = [{"hyperparameter": k, "range": d.describe(), "scale": "categorical" if isinstance(d, Choice) else
             ("log" if d.log else "linear"), "baseline": baseline(k),
             "best trial": "" if best is None else _fmt(best[k])} for k, d in space.items()]
    lines.append(md_table(pd.DataFrame(rows)))
    return "\n".join(lines) + "\n"


def best_configs_section(run: Run, exp: Experiment, space: dict[str, Dim], baseline_id: str | None) -> str:
    ranked = run.ranked()
    column = f"best_{run.objective}"  # absent where no trial reported an epoch (all failed at once)
    top = ranked[ranked[column].notna()].head(5) if column in ranked else ranked.iloc[:0]
    if top.empty:
        return "## Best configurations\n\nNo trial reported a value.\n"
    extra = [c for c in (f"best_{m.replace('test_', 'val_')}" for m in exp.report_metrics) if c in top
             and c != f"best_{run.objective}"]
    decoded = [c for c in top if c.startswith(f"best_{DECODED}")]  # a decoding chosen per trial, not searched
    frame = pd.DataFrame({"": ["status", "epochs run", "best epoch", f"best {run.objective}",
                               *[c.replace("best_", "best ") for c in extra], *space,
                               *[c.replace(f"best_{DECODED}", "read with ") for c in decoded]]})
    for _, r in top.iterrows():
        tag = r["trial_id"] + (f" ({_warm_name(run)})" if r["trial_id"] == baseline_id else "")
        frame[tag] = [r["status"], int(r["epochs_run"]), int(r["best_epoch"]), _fmt(r[f"best_{run.objective}"]),
                      *[_fmt(r[c]) for c in extra], *[_fmt(r[k]) for k in space], *[_fmt(r[c]) for c in decoded]]
    note = "" if baseline_id is None or baseline_id in set(top["trial_id"]) else (
        f"The {_warm_name(run)} (warm-start trial {baseline_id}) is not among them.\n")
    return ("## Best configurations\n\nThe five best trials by their best epoch on the validation split, "
            "best first. Validation scores at the search's budget; the verdict above is what counts.\n\n"
            + md_table(frame) + "\n\n" + note)


def objective_section(run: Run, space: dict[str, Dim], limits: dict, baseline_id: str | None, fig_dir: Path) -> str:
    path = report_plots.objective_vs_params(run, space, baseline_id, fig_dir / "objective_vs_params.png",
                                            _warm_name(run))
    flags = study_stats.bound_flags(run, space, limits)
    out = ["## Objective against each hyperparameter\n",
           "One point per trial at its best epoch, larger for more epochs run (a trial stopped early scored "
           "after fewer epochs, which says as much about its training length as its configuration); "
           f"failed trials without a value sit on the bottom edge. Ringed: the {_warm_name(run)} and the best "
           "trial.\n",
           _link(path, "objective against each hyperparameter")]
    out.append("Search-space bounds: " + ("no best value lies near a bound of its range.\n" if not flags else
                                          "\n\n" + "\n".join(f"- {f}" for f in flags) + "\n"))
    return "\n".join(out)


def curves_section(run: Run, exp: Experiment, fig_dir: Path) -> str:
    ranked = run.ranked()
    ids = list(ranked[ranked[f"best_{run.objective}"].notna()]["trial_id"].head(3)) if not ranked.empty else []
    out = ["## Training curves\n", f"The {len(ids)} best trials (search data, validation split):\n",
           _link(report_plots.trial_curves(run, ids, list(exp.curve_metrics), fig_dir / "curves_best_trials.png"),
                 "training curves of the best trials")]
    if not run.retrain_history.empty:
        out += ["Retrain runs (whole training split; no validation split, so training loss only):\n",
                _link(report_plots.retrain_curves(run, fig_dir / "curves_retrain.png"), "retrain training loss")]
    return "\n".join(out)


def wall_time_section(run: Run, fig_dir: Path) -> str:
    path = report_plots.best_so_far(run, fig_dir / "best_so_far.png")
    if path is None:
        return ("## Best so far against wall time\n\nhistory.csv has no timestamps (a run of an older version).\n")
    return "## Best so far against wall time\n\n" + _link(path, "best so far against wall time")


def importance_section(run: Run, space: dict[str, Dim]) -> str:
    values, note = study_stats.importance(run, space)
    out = ["## Hyperparameter importance\n", note + "\n"]
    if values:
        frame = pd.DataFrame({"hyperparameter": list(values), "importance": [f"{v:.3f}" for v in values.values()]})
        out.append(md_table(frame) + "\n")
    return "\n".join(out)


def diagnostics_section(run: Run, exp: Experiment, fig_dir: Path) -> str:
    """The experiment's own look at the best retrained model (first seed of the config, baseline
    included, with the best mean test objective) on the held-out split."""
    if exp.diagnose is None or run.retrain.empty:
        return ""
    v = run.verdict()
    label = v.sort_values("mean", ascending=run.mode == "min", kind="stable").iloc[0]["label"]
    row = run.retrain[run.retrain["label"] == label].sort_values("seed").iloc[0]
    folder = run.path / "retrain" / f"{label}-seed{int(row['seed'])}"
    saved = read_json(folder / "metrics.json")
    config = {**saved["config"], **saved.get("statistics", {})}  # as trained, e.g. with its normalisation
    title = f"## Diagnostics of the best retrained model ({label}, seed {int(row['seed'])})\n\n"
    try:
        data = cut_to_plan(exp.load(run.record.data_options()), run.plan)  # the held-out the runs were scored on
    except (DataError, UserError) as e:
        return title + f"Skipped: the run's data cannot be loaded here ({e}).\n"
    model = exp.task.build_model(config)
    model.load_state_dict(torch.load(folder / "model.pt", map_location="cpu", weights_only=True))
    return title + exp.diagnose(model, config, data.test, fig_dir) + "\n"


def files_section(run: Run) -> str:
    storage = run.options.get("storage")
    rounds = run.record.rounds
    names = ["tune"] + [f"tune-{k}" for k in range(2, rounds + 1)]
    if storage:
        where = (storage.rstrip("/") if trial_storage.is_uri(storage) else shown(Path(storage).expanduser())
                 ) + "/" + (run.record.storage_folder or f"{run.path.parent.name}-{run.path.name}")
        names = [where] + [f"{where}-{k}" for k in range(2, rounds + 1)]
    tune = ", ".join(f"{n}/" for n in names) + (" (moved there by --storage)" if storage else "") + (
        f" (one per round: the search was grown {rounds - 1} time{'s' if rounds > 2 else ''} with "
        "--resume --trials N)" if rounds > 1 else "")
    return f"""## Files

| file | what |
|---|---|
| trials.csv | one row per trial: status, why it ended, config, best_ and last_ value of every metric |
| history.csv | one row per trial per epoch |
| retrain.csv, retrain_history.csv | one row per retrained (config, seed); per epoch of each retrain run |
| verdict.csv | mean, std, 95% interval and paired difference to the baseline per retrained config |
| optuna_trials.csv | what Optuna was told about each trial (pruned trials as pruned) |
| run.json | command, options, plan, hardware, data, space, versions |
| {tune} | Ray Tune's experiment folder (ExperimentAnalysis, Tuner.restore, TensorBoard) |
| retrain/ | per retrain run: model.pt (state_dict), metrics.json, history.csv, TensorBoard events |

```python
from search import analyse
run = analyse.load("{shown(run.path)}")
run.trials, run.history, run.retrain        # pandas DataFrames
```

TensorBoard: `pip install tensorboard && tensorboard --logdir {shown(run.path)}` shows the trials' and the
retrain runs' scalars; the HParams tab takes its columns from the first runs it reads, so open
`--logdir {shown(run.path / "retrain")}` to see the retrain runs' test metrics there.
"""


def build(run_dir: str | Path, diagnose: bool = True) -> Path:
    """Write report.md and its figures; returns the report's path."""
    run = analyse.load(run_dir)
    exp = experiments.get(run.experiment)
    space = _space(run, exp)
    fig_dir = run.path / FIGURES
    fig_dir.mkdir(exist_ok=True)
    baseline_id = _baseline_trial(run, exp) if not run.trials.empty else None
    title = f"# {exp.name}: {run.name}\n\n{exp.summary}. Command: `{run.record.command}`\n"
    limits = {**LOOP_LIMITS, **exp.limits}
    parts = [title, verdict_section(run, exp, fig_dir), study_section(run, exp, space),
             best_configs_section(run, exp, space, baseline_id),
             objective_section(run, space, limits, baseline_id, fig_dir),
             curves_section(run, exp, fig_dir), wall_time_section(run, fig_dir), importance_section(run, space),
             scheduler_reports.section(run),
             exp.study_extras(run, fig_dir) if exp.study_extras else "",
             diagnostics_section(run, exp, fig_dir) if diagnose else "", files_section(run)]
    text = "\n".join(p for p in parts if p)
    path = run.path / "report.md"
    atomic_write(path, lambda f: f.write(text.encode()))
    return path


def main(argv: list[str]) -> int:
    p = cli.ArgumentParser(prog="python -m search.report", description=__doc__.split("\n\n")[0])
    p.add_argument("run_dir", type=Path, help="a run, e.g. results/shapes/NAME")
    p.add_argument("--no-diagnostics", action="store_true", help="skip the section that reloads data and model")
    args = p.parse_args(argv)
    if not is_run(args.run_dir):
        raise UserError(f"{args.run_dir}: not a run directory (no run.json); give results/<experiment>/<name>")
    with RunLock(args.run_dir):  # not while its search or retraining writes it (and will write report.md)
        path = build(args.run_dir, diagnose=not args.no_diagnostics)
    print(f"report: {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(cli.run(main, sys.argv[1:]))
