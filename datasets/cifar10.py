"""CIFAR-10 (seed 004): 60,000 colour 32x32 images in 10 classes, 50,000 train and 10,000 test.

The official "python version" is six pickled batches under DATA_DIR/cifar-10-batches-py (data_batch_1..5,
test_batch), each a dict whose b"data" is a uint8 (N, 3072) array (per image the red, green and blue 32x32 planes,
each row-major) and whose b"labels" is a list of N ints in 0..9.

Unpickling can run arbitrary code, and DATA_DIR is a user path, so the project never unpickles one unrestricted:
the batches are read with _BatchUnpickler, which resolves only the few numpy names an array needs and refuses
every other global (os.system, builtins.eval, ...) before anything is called. torchvision is used only to
download: its downloader checks the archive's md5 before extracting. (Its CIFAR10 class is not used to read: it
would unpickle the files unrestricted.)

load gives uint8 (N, 3, 32, 32) images in 0..255 and int64 labels, unnormalised; channel_stats gives the per-channel
mean and std that the experiment normalises with, computed on its TRAIN images only (seed 004).
"""

from __future__ import annotations

import pickle
import struct
from pathlib import Path

import numpy as np
import torch

from datasets import files
from datasets.errors import DataError

CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
BASE_FOLDER = "cifar-10-batches-py"  # what the official archive extracts to
TRAIN_BATCHES = tuple(f"data_batch_{i}" for i in range(1, 6))
TEST_BATCH = "test_batch"
IMAGE_SIZE = 32  # pixels
PIXELS = 3 * IMAGE_SIZE * IMAGE_SIZE  # 3,072 bytes per image in a batch's data array

try:  # numpy >= 2 moved the module; pickles name it either way (official files: numpy.core, numpy 2: numpy._core)
    from numpy._core.multiarray import _reconstruct
except ImportError:  # numpy < 2
    from numpy.core.multiarray import _reconstruct

# The only globals a pickled uint8 array needs (protocol <= 4), mapped to the objects themselves: resolving
# them needs no import, so not even a module named in the file gets imported.
_ALLOWED = {
    ("numpy.core.multiarray", "_reconstruct"): _reconstruct,
    ("numpy._core.multiarray", "_reconstruct"): _reconstruct,
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
}


class _BatchUnpickler(pickle.Unpickler):
    """An unpickler that can build dicts, lists, strings, numbers and numpy arrays, and nothing else."""

    def __init__(self, file, path: Path):
        super().__init__(file, encoding="bytes")  # Python 2 strings stay bytes: the official keys are b"data" ...
        self.path = path

    def find_class(self, module: str, name: str):
        try:
            return _ALLOWED[(module, name)]
        except KeyError:
            raise DataError(f"{self.path}: refuses to unpickle {module}.{name} (a CIFAR-10 batch holds only numpy "
                            "arrays and lists); delete the file and pass --download") from None

    def persistent_load(self, pid):
        raise DataError(f"{self.path}: refuses to unpickle a persistent id; delete the file and pass --download")


def _field(entry: dict, key: str):
    """entry[b"key"] as in the official (Python 2) files, or entry["key"] from a Python 3 re-pickle; None if absent."""
    return entry.get(key.encode(), entry.get(key))


def read_batch(path: Path) -> tuple[torch.Tensor, torch.Tensor]:
    """One batch file: (images uint8 (N, 3, 32, 32), labels int64 (N,)), read with the restricted unpickler."""
    try:
        with open(path, "rb") as f:
            entry = _BatchUnpickler(f, path).load()
    except DataError:
        raise
    except (pickle.UnpicklingError, OSError, EOFError, ValueError, TypeError, AttributeError, IndexError,
            KeyError, MemoryError, OverflowError, RecursionError, struct.error) as e:  # what broken pickles raise
        raise DataError(f"{path} could not be read ({type(e).__name__}: {e}); delete it and pass --download") from None
    data = _field(entry, "data") if isinstance(entry, dict) else None
    labels = _field(entry, "labels") if isinstance(entry, dict) else None
    if not (isinstance(data, np.ndarray) and data.dtype == np.uint8 and data.ndim == 2 and data.shape[1] == PIXELS
            and isinstance(labels, list) and len(labels) == len(data)
            and all(isinstance(y, int) and 0 <= y < len(CLASSES) for y in labels)):
        raise DataError(f"{path} is not a CIFAR-10 batch (a dict of uint8 (N, 3072) data and N labels in 0..9); "
                        "delete it and pass --download")
    # Row-major planes: image i's pixel (channel c, row r, col k) is data[i, c * 1024 + r * 32 + k].
    images = torch.from_numpy(np.ascontiguousarray(data)).view(-1, 3, IMAGE_SIZE, IMAGE_SIZE)
    return images, torch.tensor(labels, dtype=torch.long)


def _download(root: Path) -> None:
    """Fetch and extract the official archive (163 MB) into root, after torchvision checks its md5."""
    from torchvision.datasets import CIFAR10  # here, not at the top: only a download needs torchvision
    from torchvision.datasets.utils import download_and_extract_archive

    try:
        download_and_extract_archive(CIFAR10.url, root, filename=CIFAR10.filename, md5=CIFAR10.tgz_md5)
    except (RuntimeError, OSError, ValueError) as e:  # no network, md5 mismatch, bad archive
        raise DataError(f"CIFAR-10 download into {root} failed ({type(e).__name__}: {e}); "
                        f"put the official batches under {root / BASE_FOLDER} by hand") from None


def load(data_dir: Path | None, download: bool) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """(train_x uint8 (50000, 3, 32, 32), train_y int64 (50000,), test_x, test_y); data_dir defaults to the cache."""
    root = Path(data_dir) if data_dir is not None else files.cache_dir()
    folder = root / BASE_FOLDER
    names = (*TRAIN_BATCHES, TEST_BATCH)
    if not all((folder / name).is_file() for name in names):
        if not download:
            raise DataError(f"CIFAR-10 not found under {folder}: pass --download (needs network) or put the "
                            f"official python batches there ({', '.join(names)})")
        _download(root)
    train = [read_batch(folder / name) for name in TRAIN_BATCHES]
    test_x, test_y = read_batch(folder / TEST_BATCH)
    return torch.cat([x for x, _ in train]), torch.cat([y for _, y in train]), test_x, test_y


def channel_stats(train_x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-channel (mean, std), float32 of shape (3,), in 0..1 units (pixel / 255), of uint8 (N, 3, H, W) images.

    std is the population one (divides by the pixel count; for 51 million pixels per channel the unbiased one
    differs by 1e-8). Computed exactly from a 256-bin histogram per channel: converting 50,000 images to
    float64 would take 1.2 GB.
    """
    if train_x.dtype != torch.uint8 or train_x.dim() != 4 or train_x.shape[1] != 3 or train_x.numel() == 0:
        raise DataError(f"channel_stats needs uint8 (N, 3, H, W) images, got {train_x.dtype} {tuple(train_x.shape)}")
    counts = torch.stack([torch.bincount(train_x[:, c].reshape(-1), minlength=256) for c in range(3)]).double()
    values = torch.arange(256, dtype=torch.float64) / 255.0
    n = counts.sum(1)
    mean = (counts * values).sum(1) / n
    var = (counts * (values - mean[:, None]) ** 2).sum(1) / n
    return mean.float(), var.sqrt().float()
