"""Writing MNIST-format (IDX) files in torchvision's raw layout, for the loader tests."""

from __future__ import annotations

import gzip
import struct
from pathlib import Path

import torch

from datasets.idx import RAW_FILES


def idx_bytes(t: torch.Tensor) -> bytes:
    """The IDX format: big-endian magic (0x08 = unsigned byte, then the number of dims), dims, data."""
    magic = 0x0800 + t.dim()  # 2051 for (N, 28, 28) images, 2049 for (N,) labels
    return struct.pack(f">I{t.dim()}I", magic, *t.shape) + t.to(torch.uint8).numpy().tobytes()


def write_raw(raw: Path, tensors: tuple[torch.Tensor, ...], compress: bool = False) -> tuple[torch.Tensor, ...]:
    """(train images, train labels, test images, test labels) as the four files in `raw`, plain or .gz."""
    raw.mkdir(parents=True)
    for name, t in zip(RAW_FILES, tensors, strict=True):
        blob = idx_bytes(t)
        if compress:
            (raw / f"{name}.gz").write_bytes(gzip.compress(blob))
        else:
            (raw / name).write_bytes(blob)
    return tensors
