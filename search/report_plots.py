"""The report's study plots, as the tuning playbook draws them: objective against each searched
hyperparameter, training curves of the best trials and of the retrain runs, best-so-far against
wall time. Each function writes one PNG and returns its path (None when there is nothing to draw)."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd

from search.analyse import Run
from search.experiment import Choice, Dim, Float, Int
from search.plots import STATUS_STYLE, figure, fixed_grid, save

LEGEND_HEADER = 0.35  # inches above the panels for one row of legend
GOLDEN = 0.6180339887  # spreads jittered categorical points evenly and deterministically


def _grid(n: int, ncols: int = 4, cell: tuple[float, float] = (3.2, 2.6), header: float = 0.0):
    """n panels of `cell` inches, `ncols` a row, with room for tick labels and axis labels around
    each (inches: 0.7 left, 0.15 right, 0.55 below, 0.15 above) and `header` inches on top."""
    ncols = max(1, min(ncols, n))
    nrows = math.ceil(n / ncols)
    fig, axes = fixed_grid(nrows, ncols, cell, (0.7, 0.15, 0.55, 0.15), header)
    axes = axes.ravel()
    for ax in axes[n:]:
        ax.set_visible(False)
    return fig, axes[:n]


def objective_vs_params(run: Run, space: dict[str, Dim], baseline_id: str | None, path: Path,
                        baseline_label: str = "baseline") -> Path | None:
    """One panel per searched hyperparameter, one point per trial at its best epoch. Failed trials
    without a value sit on the bottom edge; the baseline (warm start) and the best trial are ringed."""
    trials, column = run.trials, f"best_{run.objective}"
    if trials.empty or column not in trials or not space:
        return None
    values = trials[column].astype(float)
    finite = values[np.isfinite(values)]
    low, high = (finite.min(), finite.max()) if len(finite) else (0.0, 1.0)
    pad = 0.05 * (high - low or 1.0)
    floor = low - pad if run.mode == "max" else high + pad  # where valueless trials are drawn: the worst edge
    best = run.best()
    fig, axes = _grid(len(space), header=LEGEND_HEADER)
    for ax, (key, dim) in zip(axes, space.items(), strict=True):
        if isinstance(dim, Choice):
            options = list(map(str, dim.options))
            slot = trials[key].astype(str).map({o: i for i, o in enumerate(options)})
            x = slot + ((np.arange(len(trials)) * GOLDEN) % 1 - 0.5) * 0.4
            ax.set_xticks(range(len(options)), options)
            ax.set_xlim(-0.5, len(options) - 0.5)
        else:
            x = trials[key].astype(float)
            if dim.log:
                ax.set_xscale("log")
            ax.set_xlim(*_padded(dim))
        y = values.where(np.isfinite(values), floor)
        size = 8 + 32 * trials["epochs_run"].to_numpy() / max(1, run.plan.max_epochs)  # points^2
        for status, style in STATUS_STYLE.items():
            sel = (trials["status"] == status).to_numpy()
            if sel.any():
                ax.scatter(x[sel], y[sel], s=size[sel], marker=style["marker"], color=style["color"],
                           label=style["label"], linewidths=1)
        rings = ((baseline_id, "black", baseline_label, 190), (None if best is None else best["trial_id"], "tab:green",
                                                                "best", 90))  # nested rings when they coincide
        for tid, colour, label, size in rings:
            sel = (trials["trial_id"] == tid).to_numpy()
            if tid is not None and sel.any():
                ax.scatter(x[sel], y[sel], s=size, facecolors="none", edgecolors=colour, linewidths=1.5, label=label)
        ax.set_xlabel(key + (" (log)" if getattr(dim, "log", False) else ""))
        ax.set_ylabel(run.objective)
        ax.grid(alpha=0.3)
    handles, labels = axes[0].get_legend_handles_labels()
    seen = dict(zip(labels, handles, strict=True))
    for ax in axes[1:]:
        for h, lab in zip(*ax.get_legend_handles_labels(), strict=True):
            seen.setdefault(lab, h)
    fig.legend(list(seen.values()), list(seen), loc="upper center", ncols=len(seen), fontsize="small",
               frameon=False)
    return save(fig, path)


def _padded(dim: Float | Int) -> tuple[float, float]:
    """The search range with a 3% margin (in log space for log dimensions): the bounds stay visible."""
    if dim.log:
        lo, hi = math.log10(dim.low), math.log10(dim.high)
        m = 0.03 * (hi - lo)
        return 10 ** (lo - m), 10 ** (hi + m)
    m = 0.03 * (dim.high - dim.low)
    return dim.low - m, dim.high + m


def trial_curves(run: Run, trial_ids: list[str], metrics: list[str], path: Path) -> Path | None:
    """Per epoch, for the given trials: train loss (solid) and validation loss (dashed), then each metric."""
    history = run.history
    if history.empty or not trial_ids:
        return None
    panels = ["loss", *[m for m in metrics if m in history]]
    fig, axes = _grid(len(panels), ncols=len(panels), cell=(4.0, 3.2))
    for i, tid in enumerate(trial_ids):
        h = history[history["trial_id"] == tid].sort_values("epoch")
        colour = f"C{i}"
        axes[0].plot(h["epoch"], h["train_loss"], color=colour, label=f"{tid} train")
        if "val_loss" in h:
            axes[0].plot(h["epoch"], h["val_loss"], color=colour, linestyle="--", label=f"{tid} val")
        for ax, m in zip(axes[1:], panels[1:], strict=True):
            ax.plot(h["epoch"], h[m], color=colour, marker="o", markersize=3, label=tid)
    for ax, name in zip(axes, panels, strict=True):
        ax.set_xlabel("epoch")
        ax.set_ylabel(name)
        ax.grid(alpha=0.3)
        ax.xaxis.get_major_locator().set_params(integer=True)
    axes[0].legend(fontsize="x-small")
    return save(fig, path)


def retrain_curves(run: Run, path: Path) -> Path | None:
    """Training loss per epoch of every retrain run: thin lines per seed, thick line the mean."""
    h = run.retrain_history
    if h.empty or "train_loss" not in h:
        return None
    fig = figure(6.4, 4.0)
    ax = fig.subplots()
    for i, (label, group) in enumerate(h.groupby("label", sort=False)):
        for _, seed_rows in group.groupby("seed"):
            ax.plot(seed_rows["epoch"], seed_rows["train_loss"], color=f"C{i}", alpha=0.35, linewidth=0.8)
        mean = group.groupby("epoch")["train_loss"].mean()
        ax.plot(mean.index, mean.to_numpy(), color=f"C{i}", linewidth=2,
                label=f"{label} (mean of {group['seed'].nunique()} seeds)")
    ax.set_xlabel("epoch")
    ax.set_ylabel("train_loss (whole training split)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize="small")
    return save(fig, path)


def best_so_far(run: Run, path: Path) -> Path | None:
    """Every reported epoch of every trial against wall-clock minutes since the search began, and
    the best value seen so far as a step line."""
    h = run.history
    if h.empty or "timestamp" not in h or h["timestamp"].isna().all():
        return None
    h = h.dropna(subset=["timestamp"])
    t0 = (h["timestamp"] - h.get("time_s", 0)).min()  # the first trial's first step, not its first report
    minutes = (h["timestamp"] - t0) / 60
    values = h[run.objective].astype(float)
    order = np.argsort(minutes.to_numpy(), kind="stable")
    t, v = minutes.to_numpy()[order], values.to_numpy()[order]
    running = np.fmax.accumulate(v) if run.mode == "max" else np.fmin.accumulate(v)
    fig = figure(6.4, 4.0)
    ax = fig.subplots()
    ax.scatter(t, v, s=8, color="tab:gray", alpha=0.5, label="one epoch of one trial")
    ax.step(t, running, where="post", color="tab:green", linewidth=2, label="best so far")
    ax.set_xlabel("wall-clock minutes since the search began")
    ax.set_ylabel(run.objective)
    ax.grid(alpha=0.3)
    ax.legend(fontsize="small")
    return save(fig, path)


def metric_by_label(frame: pd.DataFrame, metric: str, path: Path) -> Path | None:
    """Test metric of each retrained config: every seed's run as a point, the mean as a bar. No error
    bar: over 2 or 3 seeds a std or a t-interval says little (and leaves [0, 1]); the runs themselves do."""
    if frame.empty or metric not in frame:
        return None
    fig = figure(6.4, 3.6)
    ax = fig.subplots()
    labels = list(dict.fromkeys(frame["label"]))
    for i, label in enumerate(labels):
        v = frame.loc[frame["label"] == label, metric].astype(float)
        ax.hlines(v.mean(), i - 0.25, i + 0.25, color=f"C{i}", linewidth=2.5, label="mean" if i == 0 else None)
        ax.scatter(i + ((np.arange(len(v)) * GOLDEN) % 1 - 0.5) * 0.2, v, s=18, color=f"C{i}", alpha=0.8,
                   label="one seed's run" if i == 0 else None)
    ax.set_xticks(range(len(labels)), [f"{lab}\n(n={int((frame['label'] == lab).sum())})" for lab in labels])
    ax.legend(fontsize="x-small")
    ax.set_ylabel(f"{metric} (held-out)")
    ax.grid(alpha=0.3, axis="y")
    return save(fig, path)
