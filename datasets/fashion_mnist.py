"""Fashion-MNIST (seed 003 part 1): 70,000 grey 28x28 images of clothing in 10 classes, 60,000 train and 10,000 test.

Read through torchvision from its raw IDX files under DATA_DIR/FashionMNIST/raw (downloaded on request; the four
files may also be put there by hand, plain or .gz). The images come back as uint8 (N, 1, 28, 28) in 0..255 and the
labels as int64 (N,) in 0..9, unnormalised: the split into train and validation (the seed's 80/20) and any scaling
belong to the experiment, so they are chosen there and recorded with the run.
"""

from __future__ import annotations

from pathlib import Path

import torch

from datasets import files, idx
from datasets.errors import DataError

CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot")
IMAGE_SIZE = 28  # pixels
RAW_FILES = idx.RAW_FILES


def load(data_dir: Path | None, download: bool) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """(train_x uint8 (60000, 1, 28, 28), train_y int64 (60000,), test_x, test_y); data_dir defaults to the cache."""
    from torchvision.datasets import FashionMNIST  # here, not at the top: importing torchvision takes a second

    root = Path(data_dir) if data_dir is not None else files.cache_dir()
    train_x, train_y, test_x, test_y = idx.read(FashionMNIST, root, "Fashion-MNIST", download)
    return _checked(train_x, train_y, "train") + _checked(test_x, test_y, "test")


def _checked(images: torch.Tensor, labels: torch.Tensor, split: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Images with a channel dim and int64 labels, after checking the shapes and label range the IDX files claim."""
    if images.dim() != 3 or tuple(images.shape[1:]) != (IMAGE_SIZE, IMAGE_SIZE) or len(labels) != len(images):
        raise DataError(f"Fashion-MNIST {split} files hold {tuple(images.shape)} images and {len(labels)} labels, "
                        "expected (N, 28, 28) and N; delete the files and pass --download")
    labels = labels.long()
    if len(labels) and not 0 <= int(labels.min()) <= int(labels.max()) < len(CLASSES):
        raise DataError(f"Fashion-MNIST {split} labels outside 0..9; delete the files and pass --download")
    return images.to(torch.uint8).unsqueeze(1), labels
