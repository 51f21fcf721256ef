"""The report's section for a Population Based Training search: how often trials were cloned, the
schedule of hyperparameters the best trial's weights were trained with (what retraining replays),
and a figure of that schedule per hyperparameter against the epoch, over every trial's own values."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from search.analyse import Run
from search.markdown import md_table
from search.plots import FIGURES, figure, save
from search.protocol import CHANGES, trained_schedule


def schedule_table(changes: list[tuple[int, dict]]) -> pd.DataFrame:
    """One row per change: from which epoch, then the value of each key that changed (blank: unchanged)."""
    keys = sorted({k for _, values in changes for k in values})
    return pd.DataFrame([{"from epoch": first, **{k: values.get(k, "") for k in keys}} for first, values in changes])


def schedule_plot(run: Run, best_id: str, changes: list[tuple[int, dict]], path: Path) -> Path | None:
    """One panel per changing hyperparameter: every trial's value per epoch (grey), the best trial's
    trained schedule (the one retraining replays) as a step line."""
    numeric = [k for k in sorted({k for _, v in changes[1:] for k in v})
               if all(isinstance(v.get(k, 0.0), (int, float)) for _, v in changes)]
    if not numeric:
        return None
    last = int(run.history["epoch"].max()) if "epoch" in run.history else changes[-1][0]
    fig = figure(3.4 * len(numeric), 3.0)
    axes = fig.subplots(1, len(numeric), squeeze=False).ravel()
    for ax, key in zip(axes, numeric, strict=True):
        if key in run.history:
            for _, h in run.history.groupby("trial_id"):
                ax.plot(h["epoch"], h[key], color="0.75", linewidth=0.8, drawstyle="steps-post")
        epochs, values, value = [], [], None
        for first, v in changes:
            value = v.get(key, value)
            epochs.append(first)
            values.append(value)
        ax.step([*epochs, last], [*values, values[-1]], where="post", color="tab:blue", linewidth=2,
                label=f"{best_id} (replayed)")
        ax.set_xlabel("epoch")
        ax.set_ylabel(key)
        if all(v > 0 for v in values):
            ax.set_yscale("log")
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize="x-small")
    return save(fig, path)


def section(run: Run, epochs: list[int]) -> str:
    parts = ["## Population Based Training: the schedule found\n",
             f"Every {run.plan.grace_epochs} epochs (at epochs {', '.join(map(str, epochs)) or 'none'}) the "
             "worse quarter of the trials took the weights of one of the best quarter and its hyperparameters, "
             "each multiplied by 0.8 or 1.2 or redrawn (probability 0.25), within the searched range. A trial's "
             "result is therefore a schedule, not one config: retraining replays the best trial's schedule on "
             "fresh seeds, stretched to the retrain's epochs.\n"]
    best = run.best()
    if best is None:
        return "\n".join(parts + ["No trial has a result yet.\n"])
    changes = trained_schedule(best)
    clones = 0
    if CHANGES in run.history:
        for _, h in run.history.groupby("trial_id"):
            firsts = [json.dumps(json.loads(t)[0]) for t in h[CHANGES].dropna()]
            clones += sum(a != b for a, b in zip(firsts, firsts[1:], strict=False))  # a new lineage start
    parts.append(f"Trials cloned from another (exploit): {clones}.\n")
    if not changes:
        return "\n".join(parts + ["The best trial's schedule was not recorded.\n"])
    parts.append(f"Schedule of the best trial ({best['trial_id']}), as retraining replays it:\n")
    parts.append(md_table(schedule_table(changes)) + "\n")
    path = schedule_plot(run, str(best["trial_id"]), changes, run.path / FIGURES / "pbt_schedule.png")
    if path is not None:
        parts.append(f"![schedule of the best trial]({FIGURES}/{path.name})\n")
    return "\n".join(parts)
