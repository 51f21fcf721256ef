"""TensorBoard events of the retrain runs (Ray's TBXLoggerCallback writes the trials' own), and a
reader for event files, so tests and users without TensorBoard installed can check them.

    pip install tensorboard && tensorboard --logdir results/shapes/NAME
"""

from __future__ import annotations

import struct
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

HPARAMS = "hparams"  # subfolder that holds the config with its final test metrics


def write_run(folder: Path, history: list[Mapping[str, Any]], config: Mapping[str, Any],
              final: Mapping[str, float]) -> None:
    """Scalars per epoch (every numeric column of the run's history) and the hyperparameters with
    the held-out metrics, as TensorBoard's HParams tab shows them."""
    from tensorboardX import SummaryWriter

    for old in Path(folder).rglob("events.out.tfevents.*"):  # a run redone after an interruption replaces its events
        old.unlink()
    with SummaryWriter(logdir=str(folder), flush_secs=1) as writer:
        for row in history:
            step = int(row["epoch"])
            for key, value in row.items():
                if key != "epoch" and isinstance(value, (int, float)):
                    writer.add_scalar(f"retrain/{key}", float(value), step)
        hparams = {k: v if isinstance(v, (bool, str, int, float)) else str(v) for k, v in config.items()}
        writer.add_hparams(hparams, {f"hparam/{k}": float(v) for k, v in final.items()}, name=HPARAMS)


def _records(path: Path) -> Iterator[bytes]:
    """TFRecord framing: uint64 length, uint32 CRC of the length, data, uint32 CRC of the data."""
    blob = path.read_bytes()
    at = 0
    while at + 12 <= len(blob):
        (length,) = struct.unpack_from("<Q", blob, at)
        start = at + 12
        if start + length + 4 > len(blob):
            return  # a record cut by a crash: the ones before it stand
        yield blob[start:start + length]
        at = start + length + 4


def read_scalars(folder: Path) -> dict[str, list[tuple[int, float]]]:
    """Every scalar under `folder` (recursively): tag -> [(step, value), ...] in file order."""
    from tensorboardX.proto.event_pb2 import Event

    out: dict[str, list[tuple[int, float]]] = {}
    for path in sorted(Path(folder).rglob("events.out.tfevents.*")):
        for record in _records(path):
            event = Event.FromString(record)
            for value in event.summary.value:
                if value.HasField("simple_value"):
                    out.setdefault(value.tag, []).append((event.step, value.simple_value))
    return out
