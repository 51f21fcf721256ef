"""Invariants of datasets.shapes_generator (synthetic GSN shapes data)."""

from __future__ import annotations

import csv
import pathlib

import numpy as np
import pytest
import torch
from PIL import Image

from datasets import shapes_generator as sg
from datasets.shapes_generator import generate, main, render_single, write_dataset

# Fact about the real data set: mean over all 10,000 images of
# /work/shared/data/gsn/data_gsn.zip of the fraction of pixels that are
# foreground (R channel == 255), measured with zipfile + PIL + numpy
# (benchmarks/generator_fidelity.py prints it as "fg fraction mean").
REAL_FG_MEAN = 0.2996
HEADER = ["name", "squares", "circles", "up", "right", "down", "left"]


@pytest.fixture(scope="module")
def batch() -> tuple[torch.Tensor, torch.Tensor]:
    return generate(2000, seed=7)


def test_shapes_dtypes_values(batch):
    images, counts = batch
    assert images.shape == (2000, 28, 28) and images.dtype == torch.uint8
    assert counts.shape == (2000, 6) and counts.dtype == torch.int64
    assert set(torch.unique(images).tolist()) == {0, 255}


def test_label_structure(batch):
    _, counts = batch
    assert ((counts > 0).sum(dim=1) == 2).all()
    assert (counts.sum(dim=1) == 10).all()
    nonzero = counts[counts > 0]
    assert nonzero.min() == 2 and nonzero.max() == 8
    # every kind and every count value actually occurs
    assert ((counts > 0).sum(dim=0) > 0).all()
    assert set(nonzero.tolist()) == set(range(2, 9))


def test_deterministic_for_seed_and_differs_across_seeds():
    a_img, a_cnt = generate(50, seed=3)
    b_img, b_cnt = generate(50, seed=3)
    assert torch.equal(a_img, b_img) and torch.equal(a_cnt, b_cnt)
    c_img, c_cnt = generate(50, seed=4)
    assert not torch.equal(a_img, c_img)
    assert not torch.equal(a_cnt, c_cnt)


def test_independent_of_thread_count():
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = generate(30, seed=11)
        torch.set_num_threads(2)
        two = generate(30, seed=11)
    finally:
        torch.set_num_threads(before)
    assert torch.equal(one[0], two[0]) and torch.equal(one[1], two[1])


def test_small_n():
    images, counts = generate(0, seed=0)
    assert images.shape == (0, 28, 28) and counts.shape == (0, 6)
    images, counts = generate(1, seed=0)
    assert images.shape == (1, 28, 28) and counts.shape == (1, 6)


def test_foreground_fraction_matches_real(batch):
    images, _ = batch
    fg = (images > 0).double().mean(dim=(1, 2))
    # std of the per-image fraction is ~0.052, so the mean of 2000 has sd ~0.0012
    assert abs(fg.mean().item() - REAL_FG_MEAN) < 0.006
    assert 0.08 < fg.min().item() and fg.max().item() < 0.6


def test_render_single_up_triangle_apex_at_top():
    img = render_single(2, 11.0, 13.0, 12.5)
    assert img.shape == (28, 28) and img.dtype == torch.uint8
    assert set(torch.unique(img).tolist()) == {0, 255}
    widths = [w for w in (img > 0).sum(dim=1).tolist() if w]
    # apex at the top: rows get wider going down; real-data pattern 1, 3, ..., 11
    assert widths == [1, 3, 5, 7, 9, 11]
    # default size is the real data's 11 px base
    assert torch.equal(render_single(2, None, 13.0, 12.5), img)


def test_render_single_other_kinds():
    square = render_single(0, None, 10, 10) > 0
    assert square.sum() == 49 and square[7:14, 7:14].all()
    circle = render_single(1, None, 13, 13) > 0
    assert circle.sum() == 49  # lattice disc x^2 + y^2 <= 16
    right = render_single(3, None, 13.5, 13) > 0
    heights = [h for h in right.sum(dim=0).tolist() if h]
    assert heights == [11, 9, 7, 5, 3, 1]  # base on the left, apex pointing right
    down = render_single(4, None, 13, 13.5) > 0
    assert [w for w in down.sum(dim=1).tolist() if w] == [11, 9, 7, 5, 3, 1]
    left = render_single(5, None, 13.5, 13) > 0
    assert [h for h in left.sum(dim=0).tolist() if h] == [1, 3, 5, 7, 9, 11]
    with pytest.raises(ValueError):
        render_single(6, None, 13, 13)


def _read_png(path: pathlib.Path) -> np.ndarray:
    with Image.open(path) as im:
        assert im.mode == "RGBA" and im.size == (28, 28)
        return np.array(im)


def test_write_dataset_layout(tmp_path):
    out = tmp_path / "gsn"
    write_dataset(out, 12, seed=5)
    images, counts = generate(12, seed=5)
    files = sorted(p.name for p in out.iterdir())
    assert files == sorted(["labels.csv", *(f"img_{i:05d}.png" for i in range(12))])
    with open(out / "labels.csv", newline="") as fh:
        rows = list(csv.reader(fh))
    assert rows[0] == HEADER
    assert [r[0] for r in rows[1:]] == [f"img_{i:05d}.png" for i in range(12)]
    assert np.array_equal(np.array([[int(v) for v in r[1:]] for r in rows[1:]]), counts.numpy())
    for i in (0, 11):
        rgba = _read_png(out / f"img_{i:05d}.png")
        assert set(np.unique(rgba[..., :3]).tolist()) <= {0, 255}
        assert (rgba[..., 0] == rgba[..., 1]).all() and (rgba[..., 0] == rgba[..., 2]).all()
        assert (rgba[..., 3] == 255).all()
        assert np.array_equal(rgba[..., 0], images[i].numpy())
    # atomic write: no temporary directory left beside the result
    assert sorted(p.name for p in tmp_path.iterdir()) == ["gsn"]


def test_write_dataset_into_existing_empty_dir(tmp_path):
    out = tmp_path / "empty"
    out.mkdir()
    write_dataset(out, 3, seed=0)
    assert (out / "labels.csv").exists() and (out / "img_00002.png").exists()


def test_write_dataset_refuses_non_empty_dir(tmp_path):
    out = tmp_path / "busy"
    out.mkdir()
    (out / "keep.txt").write_text("do not touch")
    with pytest.raises(ValueError, match="not empty"):
        write_dataset(out, 3, seed=0)
    assert sorted(p.name for p in out.iterdir()) == ["keep.txt"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["busy"]


def test_interrupted_write_leaves_nothing(tmp_path, monkeypatch):
    def boom(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(sg.os, "replace", boom)
    with pytest.raises(KeyboardInterrupt):
        write_dataset(tmp_path / "gsn", 3, seed=0)
    assert list(tmp_path.iterdir()) == []


def test_cli_main(tmp_path, capsys):
    out = tmp_path / "cli"
    assert main(["generate", "--out", str(out), "--n", "4", "--seed", "1"]) == 0
    assert "wrote 4 images" in capsys.readouterr().out
    assert len(list(out.glob("img_*.png"))) == 4
    images, _ = generate(4, seed=1)
    assert np.array_equal(_read_png(out / "img_00003.png")[..., 0], images[3].numpy())
    assert main(["generate", "--out", str(out), "--n", "4"]) != 0  # non-empty: refused
