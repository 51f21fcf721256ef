"""Fuzzing the seed experiments' loaders (IDX for MNIST/Fashion-MNIST, CIFAR-10 pickles, facades images):
a damaged file is either still a valid data set or the project's own DataError, never another exception.
(The GSN labels.csv and PNG loader is fuzzed in tests/test_shapes_data.py.)"""

from __future__ import annotations

import io
import pickle
import shutil
import struct
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from idx_files import write_raw
from PIL import Image

from datasets import cifar10, facades, fashion_mnist
from datasets import facades_generator as fg
from datasets.errors import DataError

FIXTURE_OK = settings(deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


@st.composite
def damaged(draw, blob: bytes) -> bytes:
    """A valid file's bytes, broken the ways disks, downloads and editors break files."""
    how = draw(st.sampled_from(["truncate", "overwrite", "header", "append", "random"]))
    if how == "truncate":
        return blob[:draw(st.integers(0, len(blob) - 1))]
    if how == "overwrite":  # a few bytes anywhere changed
        out = bytearray(blob)
        for _ in range(draw(st.integers(1, 4))):
            out[draw(st.integers(0, len(out) - 1))] = draw(st.integers(0, 255))
        return bytes(out)
    if how == "header":  # the first 16 bytes (IDX magic and dims, pickle opcodes, image signature) rewritten
        return draw(st.binary(min_size=16, max_size=16)) + blob[16:]
    if how == "append":
        return blob + draw(st.binary(min_size=1, max_size=64))
    return draw(st.binary(max_size=256))


# ---------------------------------------------------------------- IDX (Fashion-MNIST; MNIST reads the same way)

N_TRAIN, N_TEST = 12, 6


@pytest.fixture(scope="module")
def fashion_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("fashion")
    g = torch.Generator().manual_seed(0)
    write_raw(root / "FashionMNIST" / "raw", (
        torch.randint(0, 256, (N_TRAIN, 28, 28), generator=g, dtype=torch.uint8), torch.arange(N_TRAIN) % 10,
        torch.randint(0, 256, (N_TEST, 28, 28), generator=g, dtype=torch.uint8), torch.arange(N_TEST) % 10))
    return root


@settings(FIXTURE_OK, max_examples=120)
@given(which=st.sampled_from(fashion_mnist.RAW_FILES), data=st.data())
def test_damaged_idx_file_is_valid_or_a_data_error(fashion_root, tmp_path_factory, which, data):
    root = tmp_path_factory.mktemp("f")
    shutil.copytree(fashion_root / "FashionMNIST", root / "FashionMNIST")
    path = root / "FashionMNIST" / "raw" / which
    path.write_bytes(data.draw(damaged(path.read_bytes())))
    try:
        train_x, train_y, test_x, test_y = fashion_mnist.load(root, download=False)
    except DataError as e:
        assert len(str(e).splitlines()) == 1 and "--download" in str(e)
        return
    event("accepted")
    for x, y in ((train_x, train_y), (test_x, test_y)):
        assert x.dtype == torch.uint8 and x.dim() == 4 and x.shape[1:] == (1, 28, 28)
        assert y.dtype == torch.long and len(y) == len(x) and (len(y) == 0 or 0 <= y.min() <= y.max() <= 9)


def test_idx_header_claiming_more_images_than_the_file_holds(fashion_root, tmp_path):
    shutil.copytree(fashion_root / "FashionMNIST", tmp_path / "FashionMNIST")
    path = tmp_path / "FashionMNIST" / "raw" / fashion_mnist.RAW_FILES[0]
    blob = path.read_bytes()
    path.write_bytes(blob[:4] + struct.pack(">I", 2**31 - 1) + blob[8:])  # 2 billion images claimed
    with pytest.raises(DataError, match="could not be read"):
        fashion_mnist.load(tmp_path, download=False)


# ---------------------------------------------------------------- CIFAR-10 batches (restricted unpickler)


def batch_bytes(n: int = 4) -> bytes:
    rng = np.random.default_rng(0)
    entry = {b"batch_label": b"fuzz", b"labels": [int(v) for v in rng.integers(0, 10, n)],
             b"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8), b"filenames": [b"x.png"] * n}
    return pickle.dumps(entry, protocol=2)


@settings(max_examples=200, deadline=None)
@given(st.data())
def test_damaged_cifar_batch_is_valid_or_a_data_error(tmp_path_factory, data):
    path = tmp_path_factory.mktemp("c") / "data_batch_1"
    path.write_bytes(data.draw(damaged(batch_bytes())))
    try:
        images, labels = cifar10.read_batch(path)
    except DataError as e:
        assert len(str(e).splitlines()) == 1 and str(path) in str(e)
        return
    event("accepted")
    assert images.dtype == torch.uint8 and images.shape[1:] == (3, 32, 32) and len(labels) == len(images)
    assert labels.dtype == torch.long and (len(labels) == 0 or 0 <= labels.min() <= labels.max() <= 9)


# ---------------------------------------------------------------- facades (JPEG photos, label PNGs)


@pytest.fixture(scope="module")
def facades_base(tmp_path_factory) -> Path:
    base = tmp_path_factory.mktemp("facades") / "data"
    fg.write_dataset(base, n_train=2, n_test=1, size=32, seed=1)
    return base


def png_bytes(array: np.ndarray, mode: str) -> bytes:
    out = io.BytesIO()
    Image.fromarray(array).convert(mode).save(out, format="PNG")
    return out.getvalue()


@st.composite
def label_images(draw) -> bytes:
    """A well-formed PNG of any mode and values: a class-id label, or one the loader must refuse."""
    values = draw(st.lists(st.integers(0, 255), min_size=1, max_size=6))
    array = np.array(values, dtype=np.uint8)[np.arange(32 * 32) % len(values)].reshape(32, 32)
    return png_bytes(array, draw(st.sampled_from(["P", "L", "RGB", "RGBA", "1", "I;16", "LA"])))


@settings(FIXTURE_OK, max_examples=120)
@given(which=st.sampled_from(["eecs442_0000.jpg", "eecs442_0001.png"]), data=st.data())
def test_damaged_facades_image_is_valid_or_a_data_error(facades_base, tmp_path_factory, which, data):
    root = tmp_path_factory.mktemp("d") / "data"
    shutil.copytree(facades_base, root)
    path = root / "train" / which
    blob = path.read_bytes()
    replacement = data.draw(st.one_of(damaged(blob), label_images()) if which.endswith(".png") else damaged(blob))
    path.write_bytes(replacement)
    try:
        train_x, train_y, test_x, test_y = facades.load(root, size=16)
    except DataError as e:
        assert len(str(e).splitlines()) == 1 and str(root) in str(e)
        return
    event("accepted")
    assert train_x.shape == (2, 3, 16, 16) and train_x.dtype == torch.uint8
    assert train_y.shape == (2, 16, 16) and int(train_y.max()) < facades.NUM_CLASSES


def test_a_data_error_quoting_a_multiline_library_message_stays_one_line():
    # found by the CIFAR fuzzing above: pickle's errors quote bytes of the file, newlines included
    assert str(DataError("x.bin could not be read (UnpicklingError: bad\nopcode\r\n'q'); delete it")) == (
        "x.bin could not be read (UnpicklingError: bad opcode 'q'); delete it")
