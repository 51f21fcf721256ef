"""The shapes-specific section of report.md: how a trained model errs on the held-out test split.

A 135 x 135 confusion matrix is unreadable, so errors are shown as a 15 x 15 matrix over pairs of
kinds (did the model see the right two kinds?) plus, for images whose pair is right, the confusion
of the lower kind's count (did it split the 10 shapes right?). Counts are shapes per image.
Everything here is deterministic: the same model and split give the same text and PNG bytes.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from datasets import shapes
from search import plots
from search.experiments.shapes_task import ShapesTask
from search.loop import Split

BATCH = 1000  # images per forward pass: bounds memory whatever the split's size
GRID_COLS, GRID_MAX = 6, 24  # misclassified examples shown: at most 4 rows of 6, in test order
TILE = (1.2, 1.5)  # inches per misclassified example: the image and its two-line title
SHORT = tuple(kind[:2] for kind in shapes.KINDS)  # sq ci up ri do le: short enough for a 28 px tile
PAIR_NAMES = tuple(f"{shapes.KINDS[i]}+{shapes.KINDS[j]}" for i, j in shapes.PAIRS)
CONFUSION_SIZE = (12.0, 6.0)  # inches; at plots.DPI = 110 that is 1320 x 660 px
KIND_ERROR_SIZE = (6.4, 3.6)  # inches


def grid_size(n: int) -> tuple[float, float]:
    """Inches of the misclassified grid for n images (n <= GRID_MAX)."""
    return GRID_COLS * TILE[0], math.ceil(n / GRID_COLS) * TILE[1]


def predict(model: torch.nn.Module, config: Mapping[str, Any], test: Split):
    """(true class, predicted class, predicted counts) of `test`, read exactly as the experiment
    scores them, so the numbers here match its test metrics for every setting."""
    task = ShapesTask()
    x, y = task.prepare(test.x, test.y, config, None)  # None: no augmentation
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            parts = [task.eval_forward(model, x[s:s + BATCH], config) for s in range(0, len(x), BATCH)]
    finally:
        model.train(was_training)  # hand the caller's model back in the mode it came in
    outputs = tuple(torch.cat(p) for p in zip(*parts, strict=True))
    pred_class, pred_counts = task.predictions(outputs, config)
    return shapes.encode(y), pred_class, pred_counts.float()


def pair_confusion(true_cls: torch.Tensor, pred_cls: torch.Tensor) -> torch.Tensor:
    """15 x 15 image counts: row = true pair of kinds, column = predicted pair."""
    flat = shapes.pair_of(true_cls) * 15 + shapes.pair_of(pred_cls)
    return torch.bincount(flat, minlength=225).reshape(15, 15)


def split_confusion(true_cls: torch.Tensor, pred_cls: torch.Tensor) -> torch.Tensor:
    """9 x 9 image counts over images whose pair is right: row = true count of the lower kind
    (1..9, index 0..8), column = predicted count."""
    right = shapes.pair_of(true_cls) == shapes.pair_of(pred_cls)
    flat = (true_cls[right] % 9) * 9 + pred_cls[right] % 9
    return torch.bincount(flat, minlength=81).reshape(9, 9)


def per_kind_errors(pred_counts: torch.Tensor, true_counts: torch.Tensor) -> dict[str, dict[str, float]]:
    """{kind: {"rmse", "mae"}} of the predicted counts over the images, in shapes per image."""
    err = pred_counts.double() - true_counts.double()
    rmse, mae = err.pow(2).mean(0).sqrt().tolist(), err.abs().mean(0).tolist()
    return {kind: {"rmse": r, "mae": m} for kind, r, m in zip(shapes.KINDS, rmse, mae, strict=True)}


def top_confusions(conf: torch.Tensor, k: int = 10) -> list[tuple[int, int, int, float]]:
    """The k largest off-diagonal cells as (true pair, predicted pair, images, share of the true
    pair's images); ties broken by pair index so the table never reorders between builds."""
    cells = sorted((-int(conf[i, j]), i, j) for i in range(15) for j in range(15) if i != j and conf[i, j] > 0)
    totals = conf.sum(1).tolist()
    return [(i, j, -c, -c / totals[i]) for c, i, j in cells[:k]]


def short_counts(counts: torch.Tensor) -> str:
    """One image's six counts as e.g. 'sq4 ci6' (the two present kinds, in kind order)."""
    return " ".join(f"{SHORT[k]}{round(c)}" for k, c in enumerate(counts.tolist()) if round(c))


def _plot_confusion(pairs: torch.Tensor, split: torch.Tensor, path: Path) -> None:
    fig = plots.figure(*CONFUSION_SIZE)
    panels = ((pairs, PAIR_NAMES, "pair of kinds", "all images"),
              (split, [str(n) for n in range(1, 10)], "count of the lower kind", "images whose pair is right"))
    for ax, (m, labels, what, title) in zip(fig.subplots(1, 2, width_ratios=(15, 9)), panels, strict=True):
        # Colour = share of the true row, so a rare pair's errors stand out; the numbers are images.
        share = m.double() / m.sum(1, keepdim=True).clamp(min=1)
        ax.imshow(share.numpy(), cmap="Blues", vmin=0.0, vmax=1.0)
        for i, j in m.nonzero().tolist():
            ax.text(j, i, str(int(m[i, j])), ha="center", va="center", fontsize=6,
                    color="white" if share[i, j] > 0.5 else "black")
        ax.set_xticks(range(len(labels)), labels, rotation=90, fontsize=7)
        ax.set_yticks(range(len(labels)), labels, fontsize=7)
        ax.set_xlabel(f"predicted {what}")
        ax.set_ylabel(f"true {what}")
        ax.set_title(title, fontsize=9)
    plots.save(fig, path)


def _plot_kind_errors(errors: dict[str, dict[str, float]], path: Path) -> None:
    fig = plots.figure(*KIND_ERROR_SIZE)
    ax = fig.subplots()
    x = torch.arange(6).double()
    for offset, metric in ((-0.2, "rmse"), (0.2, "mae")):
        ax.bar((x + offset).tolist(), [errors[k][metric] for k in shapes.KINDS], width=0.4, label=metric.upper())
    ax.set_xticks(range(6), shapes.KINDS)
    ax.set_ylabel("count error (shapes per image)")
    ax.legend()
    plots.save(fig, path)


def _plot_misclassified(images: torch.Tensor, true_counts: torch.Tensor, pred_counts: torch.Tensor,
                        path: Path) -> None:
    # each image a 1.1 inch square, with 0.35 inch above it for the two lines of its title
    fig, axes = plots.fixed_grid(math.ceil(len(images) / GRID_COLS), GRID_COLS, TILE, (0.05, 0.05, 0.05, 0.35))
    for k, ax in enumerate(axes.flat):
        ax.set_axis_off()  # no ticks or frame; also blanks the unused tiles of the last row
        if k < len(images):
            ax.imshow(images[k, 0].numpy(), cmap="gray", vmin=0, vmax=255, interpolation="nearest")
            ax.set_title(f"T {short_counts(true_counts[k])}\nP {short_counts(pred_counts[k])}", fontsize=7)
    plots.save(fig, path)


def diagnose(model: torch.nn.Module, config: Mapping[str, Any], test: Split, fig_dir: Path) -> str:
    """Write confusion_pairs.png, per_kind_error.png and (if any error) misclassified.png into
    fig_dir; return the markdown section (### headings) that reports and links them."""
    if len(test) == 0:
        raise ValueError("diagnose needs a non-empty test split")
    fig_dir = Path(fig_dir)
    fig_dir.mkdir(parents=True, exist_ok=True)
    true_cls, pred_cls, pred_counts = predict(model, config, test)
    n, wrong = len(test), (pred_cls != true_cls).nonzero().flatten()
    pairs, split = pair_confusion(true_cls, pred_cls), split_confusion(true_cls, pred_cls)
    errors = per_kind_errors(pred_counts, test.y)
    err = pred_counts.double() - test.y.double()
    acc, pair_acc = (n - len(wrong)) / n, int(pairs.trace()) / n
    link = lambda name, alt: f"![{alt}]({fig_dir.name}/{name})"

    _plot_confusion(pairs, split, fig_dir / "confusion_pairs.png")
    _plot_kind_errors(errors, fig_dir / "per_kind_error.png")
    md = ["### Test set", "",
          f"Setting `{config['setting']}`, {n} held-out images. Accuracy (135 classes) **{acc:.4f}** "
          f"({n - len(wrong)} / {n}); pair accuracy (right two kinds) **{pair_acc:.4f}** ({int(pairs.trace())} / {n}); "
          f"count RMSE **{err.pow(2).mean().sqrt().item():.4f}**, MAE **{err.abs().mean().item():.4f}** "
          "(shapes per image and kind).", "",
          "### Confusion between pairs of kinds", "",
          link("confusion_pairs.png", "confusion between pairs of kinds"), "",
          "Left: true vs predicted pair of kinds. Right: for images whose pair is right, true vs predicted "
          "count of the lower kind. Numbers are images; colour is the share of the true row.", ""]
    top = top_confusions(pairs)
    if top:
        md += ["| true pair | predicted pair | images | share of true pair |", "|---|---|---:|---:|"]
        md += [f"| {PAIR_NAMES[i]} | {PAIR_NAMES[j]} | {c} | {s:.1%} |" for i, j, c, s in top]
    else:
        md.append("No image has its pair of kinds wrong.")
    md += ["", "### Count error per kind", "", link("per_kind_error.png", "count RMSE and MAE per kind"), "",
           "| kind | RMSE | MAE |", "|---|---:|---:|"]
    md += [f"| {kind} | {e['rmse']:.4f} | {e['mae']:.4f} |" for kind, e in errors.items()]
    md += ["", "### Misclassified images", ""]
    if len(wrong) == 0:
        (fig_dir / "misclassified.png").unlink(missing_ok=True)  # a stale grid from an earlier build
        md.append("No test image is misclassified.")
    else:
        shown = wrong[:GRID_MAX]  # the first ones in test order: stable between builds
        # P shows the counts of the predicted class (what made it wrong), not the raw counting head.
        _plot_misclassified(test.x[shown], test.y[shown], shapes.decode(pred_cls[shown]),
                            fig_dir / "misclassified.png")
        md += [f"The first {len(shown)} of {len(wrong)} misclassified images (T = true counts, P = counts of "
               "the predicted class).", "", link("misclassified.png", "misclassified test images")]
    return "\n".join(md) + "\n"
