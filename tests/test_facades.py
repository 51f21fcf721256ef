"""Mini facades (seed 003 part 2): the average-precision metric, the synthetic generator, the loader, FacadeNet."""

from __future__ import annotations

import itertools
import shutil
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from datasets import facades
from datasets import facades_generator as fg
from datasets.errors import DataError
from datasets.facades import average_precision, generated, load, per_class_ap
from models.facades import FacadeNet, count_parameters

torch.set_num_threads(1)  # the machine is shared: small tensors gain nothing from more threads

SIZE = 64  # generated test images are 64 x 64: the same scenes, drawn small, in milliseconds


def ap(scores, labels) -> float:
    return average_precision(torch.tensor(scores, dtype=torch.float64), torch.tensor(labels, dtype=torch.bool))


# ---------------------------------------------------------------- average precision


def test_ap_hand_example():
    # Ranked: 0.8 (+), 0.4 (-), 0.35 (+), 0.1 (-). Recall steps at ranks 1 and 3: 1/2 * 1 + 1/2 * 2/3 = 5/6.
    assert ap([0.1, 0.4, 0.35, 0.8], [0, 0, 1, 1]) == pytest.approx(5 / 6)


def test_ap_ties_are_one_threshold():
    # Three tied scores holding 2 positives: one threshold, precision 2/3, recall 0 -> 1.
    assert ap([0.5, 0.5, 0.5, 0.1], [0, 1, 1, 0]) == pytest.approx(2 / 3)
    # A negative above a tie: thresholds 0.9 (P 0, R 0) then 0.5 (P 1/3, R 1).
    assert ap([0.9, 0.5, 0.5], [0, 1, 0]) == pytest.approx(1 / 3)
    # The order of tied samples in the input does not matter.
    scores, labels = [0.7, 0.5, 0.5, 0.5, 0.2], [1, 0, 1, 0, 1]
    values = {round(ap([scores[i] for i in p], [labels[i] for i in p]), 12)
              for p in itertools.permutations(range(5))}
    assert len(values) == 1


def test_ap_extremes():
    assert ap([0.9, 0.8, 0.3, 0.1], [1, 1, 0, 0]) == 1.0  # perfect ranking
    assert ap([0.1, 0.2, 0.3], [1, 1, 1]) == 1.0  # everything positive
    assert ap([0.1, 0.2, 0.3], [0, 0, 0]) == 0.0  # no positive: 0, as sklearn
    assert ap([0.9, 0.8, 0.3, 0.1], [0, 0, 1, 1]) == pytest.approx((1 / 3 + 2 / 4) / 2)  # worst ranking
    with pytest.raises(ValueError):
        ap([], [])


def test_ap_matches_sklearn():
    metrics = pytest.importorskip("sklearn.metrics")
    gen = torch.Generator().manual_seed(0)
    for n, levels in [(7, 3), (50, 5), (400, 0), (3000, 20)]:
        scores = torch.rand(n, generator=gen, dtype=torch.float64)
        if levels:  # coarse scores: many ties
            scores = (scores * levels).floor() / levels
        labels = torch.rand(n, generator=gen) < 0.3
        labels[0] = True
        want = metrics.average_precision_score(labels.numpy(), scores.numpy())
        assert average_precision(scores, labels) == pytest.approx(want, abs=1e-12)


def test_per_class_ap():
    labels = torch.randint(0, 5, (2, 8, 8), generator=torch.Generator().manual_seed(1))
    perfect = torch.nn.functional.one_hot(labels, 5).permute(0, 3, 1, 2).float() * 10
    assert per_class_ap(perfect, labels) == [1.0] * 5
    logits = torch.randn(2, 5, 8, 8, generator=torch.Generator().manual_seed(2)) + perfect * 0.1
    full = per_class_ap(logits, labels)
    assert len(full) == 5 and all(0.0 < v <= 1.0 for v in full)
    # Subsampling is deterministic, and a large subset stays close to the full value.
    sub = per_class_ap(logits, labels, max_pixels=100)
    assert sub == per_class_ap(logits, labels, max_pixels=100)
    assert np.allclose(sub, full, atol=0.15)
    with pytest.raises(ValueError):
        per_class_ap(logits, labels[:1])


# ---------------------------------------------------------------- generator


@pytest.fixture(scope="module")
def small_base(tmp_path_factory) -> Path:
    base = tmp_path_factory.mktemp("facades") / "data"
    fg.write_dataset(base, n_train=6, n_test=3, size=SIZE, seed=5)
    return base


@pytest.fixture
def small(small_base, tmp_path) -> Path:
    """A fresh, writable copy of the 6 + 3 image generated data set."""
    dest = tmp_path / "data"
    shutil.copytree(small_base, dest)
    return dest


def test_generator_layout(small_base):
    for split, n in (("train", 6), ("test_dev", 3)):
        names = sorted(p.name for p in (small_base / split).iterdir())
        assert names == sorted(f"eecs442_{i:04d}{ext}" for i in range(n) for ext in (".jpg", ".png"))
        for i in range(n):
            photo = Image.open(small_base / split / f"eecs442_{i:04d}.jpg")
            label = Image.open(small_base / split / f"eecs442_{i:04d}.png")
            assert photo.mode == "RGB" and label.mode == "P"
            assert photo.size == label.size == (SIZE, SIZE)
            assert np.array(label).max() <= 4


def test_generator_classes_present():
    present = np.zeros(5)
    n = 40
    for i in range(n):
        photo, lab = fg.render(np.random.default_rng([9, i]), SIZE)
        assert photo.shape == (SIZE, SIZE, 3) and photo.dtype == np.uint8
        assert lab.shape == (SIZE, SIZE) and lab.max() <= 4
        present += np.bincount(lab.ravel(), minlength=5) > 0
    assert (present >= 0.7 * n).all(), f"images containing each class out of {n}: {present}"


def test_generator_labels_match_the_photo():
    # Pixels of a class look alike within an image: each class's mean colour differs from the wall's.
    photo, lab = fg.render(np.random.default_rng(3), 256)
    wall = photo[lab == fg.FACADE].astype(float).mean(0)
    window = photo[lab == fg.WINDOW].astype(float).mean(0)
    assert np.abs(wall - window).sum() > 30


def test_generator_deterministic(small_base, tmp_path):
    fg.write_dataset(tmp_path / "same", n_train=6, n_test=3, size=SIZE, seed=5)
    fg.write_dataset(tmp_path / "other", n_train=6, n_test=3, size=SIZE, seed=6)
    for split in ("train", "test_dev"):
        for f in (small_base / split).iterdir():
            assert (tmp_path / "same" / split / f.name).read_bytes() == f.read_bytes()
    assert (tmp_path / "other" / "train" / "eecs442_0000.png").read_bytes() != \
        (small_base / "train" / "eecs442_0000.png").read_bytes()


def test_generator_fast_and_refuses_non_empty(tmp_path):
    start = time.perf_counter()
    fg.write_dataset(tmp_path / "d", n_train=8, n_test=2, size=256, seed=0)
    took = time.perf_counter() - start
    print(f"10 images at 256 px in {took:.2f} s ({10 / took:.0f} images/s)")
    assert took < 5.0
    with pytest.raises(ValueError, match="not an empty folder"):
        fg.write_dataset(tmp_path / "d", n_train=1, n_test=1)
    assert fg.main(["generate", "--out", str(tmp_path / "cli"), "--n-train", "1", "--n-test", "1",
                    "--size", "32"]) == 0
    assert (tmp_path / "cli" / "test_dev" / "eecs442_0000.png").is_file()


# ---------------------------------------------------------------- loader


def test_load_shapes_and_values(small_base):
    train_x, train_y, test_x, test_y = load(small_base, size=SIZE)
    assert train_x.shape == (6, 3, SIZE, SIZE) and train_x.dtype == torch.uint8
    assert train_y.shape == (6, SIZE, SIZE) and train_y.dtype == torch.uint8
    assert test_x.shape == (3, 3, SIZE, SIZE) and test_y.shape == (3, SIZE, SIZE)
    # At the native size the labels are exactly the PNG's palette indices, in name order.
    for i in range(6):
        want = np.array(Image.open(small_base / "train" / f"eecs442_{i:04d}.png"))
        assert np.array_equal(train_y[i].numpy(), want)
    assert facades.to_float(train_x).min() >= -1.0 and facades.to_float(train_x).max() < 1.0


def test_load_resizes_labels_with_nearest(small_base):
    native = load(small_base, size=SIZE)[1]
    for size in (40, 90):
        train_x, train_y, _, _ = load(small_base, size=size)
        assert train_x.shape == (6, 3, size, size) and train_y.shape == (6, size, size)
        for i in range(6):  # no in-between values invented: only ids the image had
            assert set(train_y[i].unique().tolist()) <= set(native[i].unique().tolist())


def test_load_rgb_label(small):
    png = small / "train" / "eecs442_0002.png"
    ids = np.array(Image.open(png))
    Image.open(png).convert("RGB").save(png)
    assert np.array_equal(load(small, size=SIZE)[1][2].numpy(), ids)
    rgb = np.array(Image.open(png))
    rgb[0, 0] = (1, 2, 3)
    Image.fromarray(rgb).save(png)
    with pytest.raises(DataError, match=r"eecs442_0002.png: colour \(1, 2, 3\)"):
        load(small, size=SIZE)


def one_line(e: pytest.ExceptionInfo) -> str:
    msg = str(e.value)
    assert "\n" not in msg
    return msg


def test_load_missing_png(small):
    (small / "train" / "eecs442_0003.png").unlink()
    with pytest.raises(DataError) as e:
        load(small, size=SIZE)
    assert "eecs442_0003.jpg has no label eecs442_0003.png" in one_line(e)


def test_load_missing_jpg(small):
    (small / "test_dev" / "eecs442_0001.jpg").unlink()
    with pytest.raises(DataError) as e:
        load(small, size=SIZE)
    assert "eecs442_0001.png has no photo eecs442_0001.jpg" in one_line(e)


def test_load_bad_label_value(small):
    png = small / "train" / "eecs442_0004.png"
    lab = np.array(Image.open(png))
    lab[5, 5] = 7
    fg._label_png(lab).save(png)
    with pytest.raises(DataError) as e:
        load(small, size=SIZE)
    assert "eecs442_0004.png: label value 7 is not a class id" in one_line(e)


def test_load_missing_folder(small, tmp_path):
    shutil.rmtree(small / "test_dev")
    with pytest.raises(DataError) as e:
        load(small, size=SIZE)
    assert "test_dev: no such folder; put train/ and test_dev/" in one_line(e)
    with pytest.raises(DataError):
        load(tmp_path / "nowhere", size=SIZE)


def test_load_truncated_jpg(small):
    jpg = small / "train" / "eecs442_0001.jpg"
    jpg.write_bytes(jpg.read_bytes()[:300])
    with pytest.raises(DataError) as e:
        load(small, size=SIZE)
    assert "eecs442_0001.jpg: not a readable image" in one_line(e)


def test_generated_writes_once(tmp_path):
    first = generated(cache_dir=tmp_path, n_train=3, n_test=2, size=32, seed=1)
    assert [t.shape[0] for t in first] == [3, 3, 2, 2]
    folder = tmp_path / "facades-generated-n3-2-s32-seed1"
    stamp = (folder / "train" / "eecs442_0000.jpg").stat().st_mtime_ns
    second = generated(cache_dir=tmp_path, n_train=3, n_test=2, size=32, seed=1)
    assert (folder / "train" / "eecs442_0000.jpg").stat().st_mtime_ns == stamp
    assert all(torch.equal(a, b) for a, b in zip(first, second, strict=True))
    assert facades.CLASSES == ("others", "facade", "pillar", "window", "balcony")


# ---------------------------------------------------------------- model


def test_model_shape_and_parameter_count():
    counts = {w: count_parameters(FacadeNet(width=w)) for w in (64, 32)}
    print(f"FacadeNet parameters: width 64 -> {counts[64]:,}, width 32 -> {counts[32]:,}")
    assert counts[64] == 358_277  # the seed's widths 64 / 128
    out = FacadeNet(width=64).eval()(torch.randn(2, 3, 64, 64))
    assert out.shape == (2, 5, 64, 64) and out.dtype == torch.float32


def test_model_every_parameter_gets_a_gradient():
    torch.manual_seed(0)
    model = FacadeNet(width=8, dropout=0.2).train()
    x, y = torch.randn(2, 3, 32, 32), torch.randint(0, 5, (2, 32, 32))
    torch.nn.functional.cross_entropy(model(x), y).backward()
    for name, p in model.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name


def test_model_dropout_in_train_mode_only():
    torch.manual_seed(0)
    x = torch.randn(1, 3, 16, 16)
    model = FacadeNet(width=8, dropout=0.5)
    assert not torch.equal(model.train()(x), model(x))
    model.eval()
    assert torch.equal(model(x), model(x))
    plain = FacadeNet(width=8, dropout=0.0).train()
    assert torch.equal(plain(x), plain(x))


def test_model_rejects_bad_arguments():
    for kwargs in ({"width": 3}, {"width": 8.0}, {"dropout": 1.0}, {"dropout": -0.1}, {"dropout": float("nan")}):
        with pytest.raises(ValueError):
            FacadeNet(**kwargs)
    with pytest.raises(ValueError, match="even"):
        FacadeNet(width=4)(torch.randn(1, 3, 15, 16))
