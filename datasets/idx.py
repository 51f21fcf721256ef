"""MNIST-format data sets (MNIST, Fashion-MNIST) read by torchvision from their raw IDX files.

torchvision looks for ROOT/<DatasetClass>/raw/<four files> and reads only uncompressed ones, so any
file that exists only as .gz is unpacked beside it first. Missing or unreadable files become one
DataError line naming --download.
"""

from __future__ import annotations

import gzip
from pathlib import Path

import torch

from datasets import files
from datasets.errors import DataError

# torchvision's names for the uncompressed files, the same for MNIST and Fashion-MNIST.
RAW_FILES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")


def _gunzip_missing(raw: Path) -> None:
    for name in RAW_FILES:
        packed = raw / f"{name}.gz"
        if not (raw / name).is_file() and packed.is_file():
            with gzip.open(packed, "rb") as src:
                blob = src.read()
            files.atomic_write(raw / name, lambda f, b=blob: f.write(b))


def read(dataset_cls, root: Path, title: str, download: bool
         ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """(train data, train targets, test data, test targets) of a torchvision MNIST-style class, as the
    whole split's tensors (.data, .targets): no per-sample __getitem__ (PIL) round trip."""
    raw = Path(root) / dataset_cls.__name__ / "raw"
    try:
        _gunzip_missing(raw)
    except (OSError, EOFError) as e:
        raise DataError(f"{raw}: cannot unpack the .gz files ({e}); gunzip them by hand or pass --download") from None
    if not download and not all((raw / name).is_file() for name in RAW_FILES):
        raise DataError(f"{title} not found under {raw}: pass --download (needs network) or put the four IDX "
                        f"files there ({', '.join(RAW_FILES)})")
    try:
        train, test = (dataset_cls(root=root, train=t, download=download) for t in (True, False))
    # bad download or bad IDX file (KeyError: a type byte torchvision does not know)
    except (RuntimeError, OSError, ValueError, TypeError, AssertionError, KeyError) as e:
        raise DataError(f"{title} under {raw} could not be read ({type(e).__name__}: {e}); "
                        "delete the files and pass --download") from None
    return train.data, train.targets, test.data, test.targets
