"""Load a finished run into pandas, print its summary, put several runs side by side.

    python -m search.analyse results/shapes/NAME
    python -m search.analyse results/shapes/NAME-cls --compare results/shapes/NAME-cnt results/shapes/NAME-multitask

In Python:

    from search import analyse
    run = analyse.load("results/shapes/NAME")
    run.trials.sort_values("best_val_acc").tail()      # one row per trial
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from search import cli, experiments
from search.config import UserError, format_config
from search.experiment import matches
from search.io import read_csv
from search.plan import Plan
from search.record import RunRecord
from search.stats import BASELINE, mean_std, verdict, verdict_sentence
from search.tables import best_trial


def _csv(path: Path) -> pd.DataFrame:
    return read_csv(path) if path.is_file() and path.stat().st_size > 1 else pd.DataFrame()


def kept_baseline(trials: pd.DataFrame, record: RunRecord) -> bool:
    """Whether the search's best trial is the baseline's own (the warm start): then the search
    recommends keeping the baseline."""
    best = best_trial(trials, record.objective, record.mode)
    if best is None or not record.warm_start_is_baseline:
        return False
    return matches(best, record.warm_start_point(experiments.get(record.experiment)))


@dataclass
class Run:
    """One run directory as data. Frames are empty when that step has not run (e.g. no retraining)."""

    path: Path
    record: RunRecord  # run.json: command, options, plan, hardware, data, space, versions (a dict is read as one)
    trials: pd.DataFrame  # trials.csv: one row per trial (status, config, best_/last_ metrics)
    history: pd.DataFrame  # history.csv: one row per trial per epoch
    retrain: pd.DataFrame = field(default_factory=pd.DataFrame)  # retrain.csv: one row per (config, seed)
    retrain_history: pd.DataFrame = field(default_factory=pd.DataFrame)  # per retrain run per epoch
    optuna: pd.DataFrame = field(default_factory=pd.DataFrame)  # what Optuna was told about each trial

    def __post_init__(self):
        if isinstance(self.record, dict):
            self.record = RunRecord.from_dict(self.record)

    @property
    def info(self) -> dict[str, Any]:
        """run.json as a plain dict (the record's fields by name)."""
        return self.record.to_dict()

    @property
    def name(self) -> str:
        return self.record.name or self.path.name

    @property
    def experiment(self) -> str:
        return self.record.experiment

    @property
    def options(self) -> dict[str, Any]:
        return self.record.options

    @property
    def plan(self) -> Plan:
        return self.record.plan

    @property
    def objective(self) -> str:
        return self.record.objective

    @property
    def mode(self) -> str:
        return self.record.mode

    @property
    def searched(self) -> list[str]:
        return list(self.record.searched)

    @property
    def pinned(self) -> dict[str, Any]:
        return dict(self.record.pinned)

    @property
    def test_objective(self) -> str:
        """The objective's column in retrain.csv: val_acc is scored as test_acc on the held-out split."""
        return self.record.test_objective

    def best(self) -> pd.Series | None:
        """The search's best trial (best epoch on the objective), or None if none finished one."""
        return best_trial(self.trials, self.objective, self.mode)

    def kept_baseline(self) -> bool:
        return kept_baseline(self.trials, self.record)

    def ranked(self) -> pd.DataFrame:
        """Trials with an objective value, best first (failed trials last, in creation order)."""
        column = f"best_{self.objective}"
        if self.trials.empty or column not in self.trials:
            return self.trials
        return self.trials.sort_values(column, ascending=self.mode == "min", kind="stable", na_position="last")

    def verdict(self) -> pd.DataFrame:
        """Per retrained config, on the test objective: mean, std, 95% interval over seeds, and the
        paired difference to the baseline on the same seeds."""
        if self.retrain.empty:
            return pd.DataFrame()
        return verdict(self.retrain, self.test_objective, self.mode)


def load(run_dir: str | Path) -> Run:
    path = Path(run_dir).expanduser().resolve()
    record = RunRecord.read(path)
    if not (path / "trials.csv").is_file():
        raise UserError(f"{path}: the search has not written trials.csv yet; resume it with "
                        f"`python -m search.run {record.experiment} --name {path.name} --resume`")
    return Run(path, record, _csv(path / "trials.csv"), _csv(path / "history.csv"), _csv(path / "retrain.csv"),
               _csv(path / "retrain_history.csv"), _csv(path / "optuna_trials.csv"))


def retrain_table(run: Run, metrics: list[str] | None = None) -> pd.DataFrame:
    """One row per retrained config: seeds, then "mean ± std" of each test metric (baseline first)."""
    if run.retrain.empty:
        return pd.DataFrame()
    metrics = metrics or [c for c in run.retrain.columns if c.startswith("test_")]
    rows = []
    for label, group in run.retrain.groupby("label", sort=False):
        row = {"config": label, "trial": "" if label == BASELINE else str(group["trial_id"].iloc[0]),
               "seeds": len(group)}
        row.update({m: mean_std(group[m]) for m in metrics if m in group})
        rows.append(row)
    return pd.DataFrame(rows)


def compare(runs: list[Run], metrics: list[str] | None = None) -> pd.DataFrame:
    """Runs side by side: per run and retrained config, what was pinned, the search's best
    validation value and the retrained test metrics (mean ± std over seeds)."""
    rows = []
    for run in runs:
        best = run.best()
        head = {"run": run.name, "pinned": format_config(run.pinned) or "-", "trials": len(run.trials),
                f"best {run.objective}": "" if best is None else f"{best[f'best_{run.objective}']:.4f}"}
        table = retrain_table(run, metrics)
        if table.empty:
            rows.append({**head, "config": "(not retrained)"})
        for _, r in table.iterrows():
            rows.append({**head, **r.to_dict()})
    return pd.DataFrame(rows).fillna("")


def summary(run: Run) -> str:
    counts = run.trials["status"].value_counts() if not run.trials.empty else pd.Series(dtype=int)
    lines = [f"{run.path}", f"  {run.record.command}",
             f"  experiment {run.experiment}; objective {run.objective} ({run.mode}); "
             f"data {run.record.data.get('source')}",
             f"  trials: {len(run.trials)} ({', '.join(f'{n} {s}' for s, n in counts.items()) or 'none'})"]
    best = run.best()
    if best is not None:
        lines.append(f"  best trial {best['trial_id']}: {run.objective} {best[f'best_{run.objective}']:.4f} at epoch "
                     f"{int(best['best_epoch'])}; {format_config(best, run.searched)}")
    lines.append("")
    top = run.ranked().head(5)
    columns = ["trial_id", "status", "epochs_run", f"best_{run.objective}", *run.searched]
    lines.append("top trials:\n" + top[[c for c in columns if c in top]].to_string(index=False))
    table = retrain_table(run)
    if table.empty:
        lines.append("\nnot retrained yet: python -m search.retrain " + str(run.path))
    else:
        lines.append("\nretrained on fresh seeds, scored on the held-out split:\n" + table.to_string(index=False))
        lines.append("verdict: " + verdict_sentence(run.verdict(), run.test_objective, run.kept_baseline()))
    return "\n".join(lines)


def main(argv: list[str]) -> int:
    p = cli.ArgumentParser(prog="python -m search.analyse", description=__doc__.split("\n\n")[0])
    p.add_argument("run_dir", type=Path, help="a run, e.g. results/shapes/NAME")
    p.add_argument("--compare", type=Path, nargs="+", default=[], metavar="RUN_DIR", help="more runs to put beside it")
    args = p.parse_args(argv)
    runs = [load(d) for d in [args.run_dir, *args.compare]]
    if not args.compare:
        print(summary(runs[0]))
        return 0
    metrics = None
    if len({r.experiment for r in runs}) == 1:  # the experiment's headline metrics, not every per-kind one
        metrics = list(experiments.get(runs[0].experiment).report_metrics) or None
    with pd.option_context("display.width", 200, "display.max_columns", None):
        print(compare(runs, metrics).to_string(index=False))
    return 0


if __name__ == "__main__":
    raise SystemExit(cli.run(main, sys.argv[1:]))
