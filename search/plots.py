"""Figures for the report: matplotlib's object API (no pyplot, no display, no global state), saved
atomically as PNG with nothing in them that changes between builds."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

from datasets.files import atomic_write

FIGURES = "report"  # folder of the report's PNGs, beside report.md
DPI = 110  # a 6.4 x 4.8 inch figure is 704 x 528 px: sharp on screen, small on disk
STATUS_STYLE = {  # how each trial status is drawn, the same in every plot
    "completed": {"marker": "o", "color": "tab:blue", "label": "completed"},
    "stopped": {"marker": "x", "color": "tab:orange", "label": "stopped early by the scheduler"},
    "running": {"marker": "x", "color": "tab:gray", "label": "running"},
    "failed": {"marker": "v", "color": "tab:red", "label": "failed"},
}


def figure(width: float = 6.4, height: float = 4.8) -> Figure:
    return Figure(figsize=(width, height), layout="constrained")


def fixed_grid(nrows: int, ncols: int, cell: tuple[float, float], margins: tuple[float, float, float, float],
               header: float = 0.0) -> tuple[Figure, np.ndarray]:
    """A figure of nrows x ncols axes, each in a cell of `cell` inches with fixed `margins` (left,
    right, bottom, top, inches) for its labels, and `header` inches above all for a legend. For
    figures of many axes instead of constrained layout, which measures every tick label of every
    axes twice per save: half of the 16-panel objective plot's 2.4 s, and a report is built at the
    end of every run."""
    left, right, bottom, top = margins
    width, height = ncols * cell[0], nrows * cell[1] + header
    fig = Figure(figsize=(width, height))
    axes = fig.subplots(nrows, ncols, squeeze=False, gridspec_kw={
        "left": left / width, "right": 1 - right / width, "bottom": bottom / height,
        "top": 1 - (top + header) / height,
        # gaps between cells, as fractions of one axes' size (matplotlib's wspace/hspace)
        "wspace": (left + right) / (cell[0] - left - right), "hspace": (bottom + top) / (cell[1] - bottom - top)})
    return fig, axes


def save(fig: Figure, path: Path) -> Path:
    """PNG at `path`, written whole or not at all. No timestamp or version in the metadata, so
    rebuilding from the same results gives the same bytes."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI, metadata={"Software": None})
    atomic_write(path, lambda f: f.write(buf.getvalue()))
    return path
