"""Markdown pieces shared by the report, the experiments' report sections and `--settings`."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pandas as pd


def md_table(frame: pd.DataFrame) -> str:
    """A pipe table (pandas' to_markdown needs the tabulate package)."""
    if frame.empty:
        return "(none)"
    cells = [[_cell(v) for v in row] for row in frame.itertuples(index=False)]
    head = "| " + " | ".join(map(str, frame.columns)) + " |"
    return "\n".join([head, "|" + "---|" * len(frame.columns), *("| " + " | ".join(r) + " |" for r in cells)])


def _cell(v: Any) -> str:
    if isinstance(v, float):
        return "" if math.isnan(v) else f"{v:.4g}"
    return str(v).replace("|", "\\|")


def shown(path: Path) -> str:
    """A path as the user would type it: relative to the working directory when inside it."""
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return str(path)
