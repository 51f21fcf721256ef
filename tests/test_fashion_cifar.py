"""datasets.fashion_mnist and datasets.cifar10 on tiny files in the real formats (IDX; Python 2 era pickles), the
restricted unpickler against malicious pickles, channel_stats by hand; models.fashion and models.cifar: shapes,
gradients, parameter counts, dropout."""

from __future__ import annotations

import io
import os
import pickle
import struct
from pathlib import Path

import numpy as np
import pytest
import torch
from idx_files import write_raw
from torch import nn

from datasets import cifar10, fashion_mnist
from datasets.errors import DataError
from models.cifar import CifarNet
from models.fashion import FashionNet

N_TRAIN, N_TEST = 30, 20  # fake Fashion-MNIST images
PER_BATCH = 4  # fake CIFAR-10 images per batch file


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """Tiny tensors: a second thread only contends with whatever else keeps the 2-core machine busy."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


# ---------------------------------------------------------------- Fashion-MNIST


def fake_fashion() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(3)
    return (torch.randint(0, 256, (N_TRAIN, 28, 28), generator=g, dtype=torch.uint8), torch.arange(N_TRAIN) % 10,
            torch.randint(0, 256, (N_TEST, 28, 28), generator=g, dtype=torch.uint8), (torch.arange(N_TEST) * 3) % 10)


def write_fashion(root: Path, compress: bool = False) -> tuple[torch.Tensor, ...]:
    """The fake files where torchvision looks: ROOT/FashionMNIST/raw/<the four IDX names>."""
    return write_raw(root / "FashionMNIST" / "raw", fake_fashion(), compress)


@pytest.mark.parametrize("compress", [False, True])
def test_fashion_loads_what_was_written(tmp_path, compress):
    written = write_fashion(tmp_path, compress)
    train_x, train_y, test_x, test_y = fashion_mnist.load(tmp_path, download=False)
    assert train_x.shape == (N_TRAIN, 1, 28, 28) and test_x.shape == (N_TEST, 1, 28, 28)
    assert train_x.dtype == test_x.dtype == torch.uint8 and train_y.dtype == test_y.dtype == torch.long
    assert train_y.shape == (N_TRAIN,) and 0 <= train_y.min() and train_y.max() <= 9
    for got, want in zip((train_x[:, 0], train_y, test_x[:, 0], test_y), written, strict=True):
        assert torch.equal(got, want)
    assert len(fashion_mnist.CLASSES) == 10 and fashion_mnist.CLASSES[9] == "Ankle boot"


def test_fashion_defaults_to_the_cache_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("VISION_HPSEARCH_CACHE", str(tmp_path))
    write_fashion(tmp_path)
    assert fashion_mnist.load(None, download=False)[0].shape == (N_TRAIN, 1, 28, 28)


def test_missing_fashion_names_download(tmp_path):
    with pytest.raises(DataError, match="Fashion-MNIST not found.*--download") as e:
        fashion_mnist.load(tmp_path, download=False)
    assert str(tmp_path / "FashionMNIST" / "raw") in str(e.value) and "\n" not in str(e.value)


def test_corrupt_fashion_is_a_data_error(tmp_path):
    write_fashion(tmp_path)
    (tmp_path / "FashionMNIST" / "raw" / fashion_mnist.RAW_FILES[0]).write_bytes(b"\x00\x00\x08\x03garbage")
    with pytest.raises(DataError, match="could not be read"):
        fashion_mnist.load(tmp_path, download=False)


# ---------------------------------------------------------------- CIFAR-10 files


class Py2Pickler(pickle._Pickler):
    """Protocol 2 as Python 2's cPickle wrote the official batches: str and bytes both as byte strings
    (SHORT_BINSTRING / BINSTRING), numpy's array constructor named numpy.core.multiarray._reconstruct."""

    dispatch = dict(pickle._Pickler.dispatch)

    def save_py2_string(self, obj):
        data = obj.encode("latin1") if isinstance(obj, str) else obj
        if len(data) < 256:
            self.write(pickle.SHORT_BINSTRING + bytes([len(data)]) + data)
        else:
            self.write(pickle.BINSTRING + struct.pack("<i", len(data)) + data)
        self.memoize(obj)

    dispatch[str] = save_py2_string
    dispatch[bytes] = save_py2_string

    def save_global(self, obj, name=None):
        module = obj.__module__.replace("numpy._core", "numpy.core")
        self.write(pickle.GLOBAL + f"{module}\n{obj.__qualname__}\n".encode())
        self.memoize(obj)


def py2_pickle(obj) -> bytes:
    buf = io.BytesIO()
    Py2Pickler(buf, 2).dump(obj)
    return buf.getvalue()


def fake_batch(index: int, py2: bool) -> tuple[dict, bytes]:
    """Batch `index` (0..5, 5 = test): random pixels, labels index, index + 1, ... mod 10."""
    rng = np.random.default_rng(index)
    data = rng.integers(0, 256, (PER_BATCH, 3072), dtype=np.uint8)
    labels = [(index + i) % 10 for i in range(PER_BATCH)]
    if py2:  # keys are Python 2 str: read back as bytes, like the official files
        entry = {"batch_label": f"batch {index}", "labels": labels, "data": data, "filenames": ["a.png"] * PER_BATCH}
        return entry, py2_pickle(entry)
    entry = {b"batch_label": f"batch {index}".encode(), b"labels": labels, b"data": data}
    return entry, pickle.dumps(entry, protocol=4)  # a Python 3 re-pickle: numpy._core, STACK_GLOBAL


def write_cifar(root: Path, py2: bool = True) -> list[dict]:
    folder = root / cifar10.BASE_FOLDER
    folder.mkdir(parents=True)
    entries = []
    for i, name in enumerate((*cifar10.TRAIN_BATCHES, cifar10.TEST_BATCH)):
        entry, blob = fake_batch(i, py2)
        (folder / name).write_bytes(blob)
        entries.append(entry)
    return entries


@pytest.mark.parametrize("py2", [True, False])
def test_cifar_loads_what_was_written(tmp_path, py2):
    entries = write_cifar(tmp_path, py2)
    train_x, train_y, test_x, test_y = cifar10.load(tmp_path, download=False)
    assert train_x.shape == (5 * PER_BATCH, 3, 32, 32) and test_x.shape == (PER_BATCH, 3, 32, 32)
    assert train_x.dtype == test_x.dtype == torch.uint8 and train_y.dtype == test_y.dtype == torch.long
    key = (lambda k: k) if py2 else (lambda k: k.encode())
    data = np.concatenate([e[key("data")] for e in entries[:5]])
    assert train_y.tolist() == [y for e in entries[:5] for y in e[key("labels")]]
    assert test_y.tolist() == entries[5][key("labels")]
    i, c, r, k = 6, 2, 17, 5  # image 6 is batch 2's second: blue, row 17, column 5
    assert train_x[i, c, r, k].item() == data[i, c * 1024 + r * 32 + k]
    assert torch.equal(train_x.flatten(1), torch.from_numpy(data))
    assert torch.equal(test_x.flatten(1), torch.from_numpy(entries[5][key("data")]))
    assert len(cifar10.CLASSES) == 10


def test_missing_cifar_names_download(tmp_path, monkeypatch):
    monkeypatch.setenv("VISION_HPSEARCH_CACHE", str(tmp_path))
    with pytest.raises(DataError, match="CIFAR-10 not found.*--download") as e:
        cifar10.load(None, download=False)
    assert str(tmp_path / cifar10.BASE_FOLDER) in str(e.value) and "\n" not in str(e.value)


def test_cifar_download_is_skipped_when_the_files_are_there(tmp_path, monkeypatch):
    write_cifar(tmp_path)
    monkeypatch.setattr(cifar10, "_download", lambda root: pytest.fail("downloaded although the files exist"))
    assert cifar10.load(tmp_path, download=True)[0].shape[0] == 5 * PER_BATCH


class Payload:
    """Unpickling this calls fn(arg): what a malicious batch file would do."""

    def __init__(self, fn, arg):
        self.fn, self.arg = fn, arg

    def __reduce__(self):
        return self.fn, (self.arg,)


@pytest.mark.parametrize("fn, command, dump", [
    (os.system, "touch {marker}", py2_pickle),  # GLOBAL posix.system, as an edited official file would hold
    (eval, "open({marker!r}, 'w').close()", lambda obj: pickle.dumps(obj, protocol=4)),  # STACK_GLOBAL builtins.eval
])
def test_malicious_pickle_is_refused_not_run(tmp_path, fn, command, dump):
    write_cifar(tmp_path)
    marker = tmp_path / "pwned"
    evil = dump({"data": Payload(fn, command.format(marker=str(marker))), "labels": [0]})
    (tmp_path / cifar10.BASE_FOLDER / "data_batch_3").write_bytes(evil)
    with pytest.raises(DataError, match=rf"refuses to unpickle .*{fn.__name__}") as e:
        cifar10.load(tmp_path, download=False)
    assert "data_batch_3" in str(e.value) and "\n" not in str(e.value)
    assert not marker.exists()
    if fn is eval:  # the control: the payload is live, an unrestricted pickle.loads would have run it
        pickle.loads(evil)
        assert marker.exists()


@pytest.mark.parametrize("entry, blob", [
    ({b"data": np.zeros((2, 3072), np.float32), b"labels": [0, 1]}, None),  # not uint8
    ({b"data": np.zeros((2, 3072), np.uint8), b"labels": [0, 10]}, None),  # label out of range
    ({b"data": np.zeros((2, 100), np.uint8), b"labels": [0, 1]}, None),  # not 32x32x3
    ([1, 2, 3], None),  # not a dict
    (None, b"\x80\x02}q\x00(U\x04data"),  # truncated
])
def test_malformed_batch_is_a_data_error(tmp_path, entry, blob):
    write_cifar(tmp_path)
    (tmp_path / cifar10.BASE_FOLDER / "test_batch").write_bytes(blob or pickle.dumps(entry, protocol=4))
    with pytest.raises(DataError, match="test_batch (is not a CIFAR-10 batch|could not be read)") as e:
        cifar10.load(tmp_path, download=False)
    assert "\n" not in str(e.value)


def test_channel_stats_by_hand():
    x = torch.zeros(2, 3, 2, 2, dtype=torch.uint8)
    x[:, 1] = 255  # green: all 1.0, std 0
    x[0, 2] = 51  # blue: four pixels of 0.2, four of 0.6 -> mean 0.4, population std 0.2
    x[1, 2] = 153
    mean, std = cifar10.channel_stats(x)
    assert mean.shape == std.shape == (3,) and mean.dtype == torch.float32
    assert torch.allclose(mean, torch.tensor([0.0, 1.0, 0.4]), atol=1e-6)
    assert torch.allclose(std, torch.tensor([0.0, 0.0, 0.2]), atol=1e-6)
    y = torch.randint(0, 256, (5, 3, 4, 4), generator=torch.Generator().manual_seed(0), dtype=torch.uint8)
    mean, std = cifar10.channel_stats(y)
    f = y.double() / 255
    assert torch.allclose(mean.double(), f.mean(dim=(0, 2, 3)), atol=1e-6)
    assert torch.allclose(std.double(), f.std(dim=(0, 2, 3), correction=0), atol=1e-6)
    with pytest.raises(DataError, match="uint8"):
        cifar10.channel_stats(y.float())


# ---------------------------------------------------------------- models


MODELS = [(FashionNet, (1, 28, 28), 116_702), (CifarNet, (3, 32, 32), 890_410)]


def _n_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize("cls, shape, n_params", MODELS)
def test_forward_shape_gradients_and_size(cls, shape, n_params):
    torch.manual_seed(0)
    model = cls(dropout=0.2)
    print(f"{cls.__name__}: {_n_params(model):,} parameters")
    x = torch.randn(3, *shape)
    out = model(x)
    assert out.shape == (3, 10) and out.dtype == torch.float32 and torch.isfinite(out).all()
    nn.functional.cross_entropy(out, torch.tensor([0, 4, 9])).backward()
    for name, p in model.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name
    assert _n_params(model) == n_params


@pytest.mark.parametrize("cls, shape, n_params", MODELS)
def test_dropout_in_train_mode_only(cls, shape, n_params):
    torch.manual_seed(0)
    model = cls(dropout=0.9)
    x = torch.randn(3, *shape)
    with torch.no_grad():
        assert not torch.allclose(model(x), model(x))
        model.eval()
        assert torch.equal(model(x), model(x))
        model.train()
        model_no_drop = cls(dropout=0.0)
        model_no_drop.load_state_dict(model.state_dict())  # dropout has no parameters: same weights
        assert torch.equal(model.eval()(x), model_no_drop.eval()(x))


@pytest.mark.parametrize("cls", [FashionNet, CifarNet])
@pytest.mark.parametrize("dropout", [-0.1, 1.0, float("nan")])
def test_dropout_is_validated(cls, dropout):
    with pytest.raises(ValueError, match=r"dropout must be in \[0, 1\)"):
        cls(dropout=dropout)
