"""Result files: JSON and CSV written atomically (a reader never sees half a file)."""

from __future__ import annotations

import io
import json
import math
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import pandas as pd

from datasets.files import atomic_write


def _jsonable(v: Any) -> Any:
    if isinstance(v, float) and not math.isfinite(v):
        return None  # strict JSON has no NaN
    if isinstance(v, Path):
        return str(v)
    if isinstance(v, Mapping):
        return {str(k): _jsonable(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_jsonable(x) for x in v]
    return v


def write_json(path: Path, obj: Any) -> None:
    text = json.dumps(_jsonable(obj), indent=2, sort_keys=False) + "\n"
    atomic_write(path, lambda f: f.write(text.encode()))


def read_json(path: Path) -> Any:
    return json.loads(Path(path).read_text())


def write_csv(path: Path, rows: Iterable[Mapping[str, Any]] | pd.DataFrame) -> None:
    frame = rows if isinstance(rows, pd.DataFrame) else pd.DataFrame(list(rows))
    buf = io.StringIO()
    frame.to_csv(buf, index=False)
    atomic_write(path, lambda f: f.write(buf.getvalue().encode()))


def read_csv(path: Path) -> pd.DataFrame:
    """A results table as written by write_csv. Trial ids are hex strings that pandas would read as
    numbers when they look like one ("1e509a2f" is 1e509 = inf, "00123456" is 123456): kept as text."""
    return pd.read_csv(path, dtype={"trial_id": str})
