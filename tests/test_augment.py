"""Tests for datasets.augment.

Label transforms are checked against pixels: triangles are drawn here with
numpy, and the orientation of each OUTPUT image is read back from its pixels
by ``classify_triangle`` (independent of the module's tables).
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from torch.overrides import TorchFunctionMode

from datasets.augment import (
    AUGMENTATIONS,
    AugmentProbs,
    apply_group_element,
    augment_batch,
    group_element,
    transform_counts,
)

KINDS = ("square", "circle", "up", "right", "down", "left")
ORIENTATIONS = ("up", "right", "down", "left")
SIZE = 28


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


# ---------------------------------------------------------------------------
# Independent pixel-level ground truth
# ---------------------------------------------------------------------------


def draw_triangle(kind: str, size: int = SIZE, height: int = 6, top: int = 3, left: int = 4) -> np.ndarray:
    """A lone filled isosceles triangle (base = 2*height - 1, apex pointing ``kind``).

    Its bounding box starts at (top, left); off-centre on purpose so that a
    mistaken translation would also show.
    """
    img = np.zeros((size, size), dtype=np.float32)
    base = 2 * height - 1
    for r in range(size):
        for c in range(size):
            if kind in ("up", "down"):
                i, j = r - top, c - left  # i: 0..height-1, j: 0..base-1
                if not (0 <= i < height and 0 <= j < base):
                    continue
                depth = i if kind == "up" else height - 1 - i  # distance from apex
                inside = abs(j - (height - 1)) <= depth
            else:
                i, j = r - top, c - left  # i: 0..base-1, j: 0..height-1
                if not (0 <= i < base and 0 <= j < height):
                    continue
                depth = j if kind == "left" else height - 1 - j
                inside = abs(i - (height - 1)) <= depth
            if inside:
                img[r, c] = 1.0
    return img


def classify_triangle(img: np.ndarray) -> str:
    """Orientation of a lone triangle from its pixels.

    The base is the longest run of foreground: if the bounding box is wider
    than tall the base is a row, and the apex points away from it (base at
    the bottom -> 'up'); otherwise the base is a column (base at the right
    -> apex points 'left').
    """
    fg = img > 0.5
    rows = np.flatnonzero(fg.any(axis=1))
    cols = np.flatnonzero(fg.any(axis=0))
    assert rows.size and cols.size, "no foreground"
    height, width = rows[-1] - rows[0] + 1, cols[-1] - cols[0] + 1
    assert height != width
    if width > height:
        widest_row = int(np.argmax(fg.sum(axis=1)))
        assert widest_row in (rows[0], rows[-1])
        return "up" if widest_row == rows[-1] else "down"
    tallest_col = int(np.argmax(fg.sum(axis=0)))
    assert tallest_col in (cols[0], cols[-1])
    return "left" if tallest_col == cols[-1] else "right"


def test_drawing_and_classifier_agree() -> None:
    for kind in ORIENTATIONS:
        assert classify_triangle(draw_triangle(kind)) == kind
    # Sanity of the drawing itself: the apex of 'up' is a single pixel on top.
    up = draw_triangle("up")
    rows = np.flatnonzero(up.any(axis=1))
    assert up[rows[0]].sum() == 1 and up[rows[-1]].sum() == 11


def triangle_batch(channels: int = 1, repeat: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    """One image per orientation (x repeat) with one-hot counts plus fixed square/circle counts."""
    imgs, counts = [], []
    for _ in range(repeat):
        for kind in ORIENTATIONS:
            imgs.append(draw_triangle(kind))
            row = [3, 5, 0, 0, 0, 0]
            row[KINDS.index(kind)] = 1
            counts.append(row)
    x = torch.from_numpy(np.stack(imgs))[:, None].repeat(1, channels, 1, 1)
    return x, torch.tensor(counts, dtype=torch.long)


def assert_counts_match_pixels(x: torch.Tensor, counts: torch.Tensor) -> None:
    assert counts.dtype == torch.long
    assert torch.all(counts[:, 0] == 3) and torch.all(counts[:, 1] == 5)
    assert torch.all(counts[:, 2:].sum(dim=1) == 1)
    for img, row in zip(x.numpy(), counts.tolist(), strict=True):
        for ch in img:  # every channel transformed alike
            assert ch.sum() == img[0].sum()
            assert np.array_equal(ch, img[0])
        seen = classify_triangle(img[0])
        named = KINDS[int(np.argmax(row[2:])) + 2]
        assert seen == named, f"pixels show {seen!r}, counts say {named!r}"


# ---------------------------------------------------------------------------
# Geometric, label-aware
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("f", [0, 1])
@pytest.mark.parametrize("k", [0, 1, 2, 3])
def test_every_group_element_labels_match_pixels(f: int, k: int) -> None:
    x, counts = triangle_batch(channels=2)
    g = torch.full((x.shape[0],), 4 * f + k, dtype=torch.long)
    assert_counts_match_pixels(apply_group_element(x, g), transform_counts(counts, g))


def test_rot90_counterclockwise_trap() -> None:
    # One CCW quarter-turn (torch.rot90 k=1) makes an 'up' triangle a 'left' one.
    x, counts = triangle_batch()
    g = group_element(0, 0, 1).expand(4)
    out, c = apply_group_element(x, g), transform_counts(counts, g)
    assert [classify_triangle(i[0]) for i in out.numpy()] == [
        "left",
        "up",
        "right",
        "down",
    ]
    assert c[0, KINDS.index("left")] == 1


@pytest.mark.parametrize("hf", [0, 1])
@pytest.mark.parametrize("vf", [0, 1])
@pytest.mark.parametrize("k", [0, 1, 2, 3])
def test_group_element_equals_sequential_ops(hf: int, vf: int, k: int) -> None:
    x = torch.rand(3, 2, 9, 9, generator=gen())
    ref = x
    if hf:
        ref = torch.flip(ref, dims=(-1,))
    if vf:
        ref = torch.flip(ref, dims=(-2,))
    ref = torch.rot90(ref, k, dims=(-2, -1))
    g = group_element(hf, vf, k).expand(3)
    assert torch.equal(apply_group_element(x, g), ref)


@pytest.mark.parametrize("name", ["hflip", "vflip", "rot90"])
def test_augment_batch_geometric_labels_match_pixels(name: str) -> None:
    x, counts = triangle_batch(channels=3, repeat=50)
    out, c = augment_batch(x, counts, AugmentProbs(**{name: 1.0}), gen(1))
    assert_counts_match_pixels(out, c)
    seen = [classify_triangle(i[0]) for i in out.numpy()]
    before = [classify_triangle(i[0]) for i in x.numpy()]
    if name == "hflip":
        swap = {"up": "up", "down": "down", "left": "right", "right": "left"}
        assert seen == [swap[s] for s in before]
    elif name == "vflip":
        swap = {"up": "down", "down": "up", "left": "left", "right": "right"}
        assert seen == [swap[s] for s in before]
    else:
        # p=1: every sample turned by k in {1,2,3}, never 0; all three k occur.
        steps = {(ORIENTATIONS.index(b) - ORIENTATIONS.index(a)) % 4 for a, b in zip(before, seen, strict=True)}
        assert steps == {1, 2, 3}


def test_augment_batch_all_geometric_mixed_labels_match_pixels() -> None:
    x, counts = triangle_batch(repeat=100)
    out, c = augment_batch(x, counts, AugmentProbs(hflip=0.5, vflip=0.5, rot90=0.5), gen(2))
    assert_counts_match_pixels(out, c)
    # Every orientation reachable from every orientation.
    pairs = {(classify_triangle(a[0]), classify_triangle(b[0])) for a, b in zip(x.numpy(), out.numpy(), strict=True)}
    assert len(pairs) == 16


def test_transform_counts_accepts_int_and_keeps_input() -> None:
    counts = torch.tensor([[1, 2, 3, 4, 5, 6]])
    before = counts.clone()
    assert torch.equal(transform_counts(counts, 0), counts)
    out = transform_counts(counts, 4)  # hflip: right <-> left
    assert out.tolist() == [[1, 2, 3, 6, 5, 4]]
    assert torch.equal(counts, before)


def test_counts_none_and_non_square_flip() -> None:
    x = torch.rand(5, 1, 6, 10, generator=gen())
    out, c = augment_batch(x, None, AugmentProbs(hflip=1.0), gen())
    assert c is None and torch.equal(out, torch.flip(x, dims=(-1,)))
    with pytest.raises(ValueError, match="square"):
        augment_batch(x, None, AugmentProbs(rot90=0.5), gen())


# ---------------------------------------------------------------------------
# Probabilities, determinism, purity
# ---------------------------------------------------------------------------


def test_zero_probabilities_return_inputs_unchanged() -> None:
    x = torch.rand(16, 1, 28, 28, generator=gen())
    counts = torch.randint(0, 3, (16, 6), generator=gen())
    g = gen(5)
    state = g.get_state()
    out, c = augment_batch(x, counts, AugmentProbs(), g)
    assert torch.equal(out, x) and torch.equal(c, counts)
    assert torch.equal(g.get_state(), state)  # no random numbers drawn


@pytest.mark.parametrize("name", AUGMENTATIONS)
@pytest.mark.parametrize("p", [0.0, 0.3, 1.0])
def test_fraction_changed_matches_probability(name: str, p: float) -> None:
    n = 8000
    # Random, asymmetric, strictly positive pixels: any transform changes them.
    x = torch.rand(n, 1, 16, 16, generator=gen(3)) * 0.8 + 0.1
    out, _ = augment_batch(x, None, AugmentProbs(**{name: p}), gen(4))
    frac = (out != x).flatten(1).any(dim=1).float().mean().item()
    sigma = (p * (1 - p) / n) ** 0.5
    assert abs(frac - p) <= 6 * sigma + 1e-9, (name, p, frac)


def test_deterministic_for_seed_and_differs_across_seeds() -> None:
    probs = AugmentProbs(**{name: 0.5 for name in AUGMENTATIONS})
    x, counts = triangle_batch(repeat=64)
    a = augment_batch(x, counts, probs, gen(7))
    b = augment_batch(x, counts, probs, gen(7))
    c = augment_batch(x, counts, probs, gen(8))
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    assert not torch.equal(a[0], c[0])
    assert not torch.equal(a[1], c[1])


def test_inputs_not_modified() -> None:
    probs = AugmentProbs(**{name: 1.0 for name in AUGMENTATIONS})
    x, counts = triangle_batch(channels=2, repeat=8)
    x0, c0 = x.clone(), counts.clone()
    out, c = augment_batch(x, counts, probs, gen())
    assert torch.equal(x, x0) and torch.equal(counts, c0)
    assert out.data_ptr() != x.data_ptr() and c.data_ptr() != counts.data_ptr()


@pytest.mark.parametrize("name", ["brightness", "noise", "erase"])
def test_photometric_keep_counts_and_range(name: str) -> None:
    x = torch.rand(512, 2, 28, 28, generator=gen())
    x[:8] = 1.0  # extremes must stay clamped
    x[8:16] = 0.0
    counts = torch.randint(0, 4, (512, 6), generator=gen())
    out, c = augment_batch(x, counts, AugmentProbs(**{name: 1.0}), gen(9))
    assert torch.equal(c, counts)
    assert out.shape == x.shape and out.dtype == x.dtype
    assert out.min() >= 0.0 and out.max() <= 1.0
    assert not torch.equal(out, x)


def test_brightness_contrast_is_mild() -> None:
    x = torch.full((256, 1, 8, 8), 0.5)
    x[:, :, :4] = 0.4  # mean 0.45, +-0.05 around it
    out, _ = augment_batch(x, None, AugmentProbs(brightness=1.0), gen())
    assert (out - x).abs().max() <= 0.2 + 0.3 * 0.05 + 1e-6


def test_erasing_changes_one_bounded_rectangle_only() -> None:
    x = torch.ones(2000, 3, 28, 28)
    out, _ = augment_batch(x, None, AugmentProbs(erase=1.0), gen(11))
    assert set(out.unique().tolist()) <= {0.0, 1.0}
    zero = out == 0
    assert torch.equal(zero, zero[:, :1].expand_as(zero))  # same rectangle in all channels
    z = zero[:, 0]
    rows, cols = z.any(dim=2), z.any(dim=1)  # (B, H), (B, W)
    h, w = rows.sum(dim=1), cols.sum(dim=1)
    assert torch.all((h >= 2) & (h <= 7) & (w >= 2) & (w <= 7))
    # Zero set is exactly a full rectangle: its area equals its bounding box.
    assert torch.equal(z.sum(dim=(1, 2)), h * w)
    assert torch.equal(
        rows.long().diff(dim=1).abs().sum(dim=1) <= 2,
        torch.ones(2000, dtype=torch.bool),
    )
    # All side lengths and positions (incl. touching each border) occur.
    assert set(h.tolist()) == set(range(2, 8)) and set(w.tolist()) == set(range(2, 8))
    assert rows[:, 0].any() and rows[:, -1].any() and cols[:, 0].any() and cols[:, -1].any()


# ---------------------------------------------------------------------------
# API
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("name", AUGMENTATIONS)
@pytest.mark.parametrize("bad", [-0.1, 1.5, float("nan"), "x", None])
def test_bad_probability_raises_naming_field(name: str, bad: object) -> None:
    with pytest.raises(ValueError, match=name):
        AugmentProbs(**{name: bad})


def test_from_config_and_names() -> None:
    assert AUGMENTATIONS == ("hflip", "vflip", "rot90", "brightness", "noise", "erase")
    assert [f.name for f in dataclasses.fields(AugmentProbs)] == list(AUGMENTATIONS)
    probs = AugmentProbs.from_config({"p_hflip": 0.5, "p_erase": np.float64(0.25), "lr": 3.0})
    assert probs == AugmentProbs(hflip=0.5, erase=0.25)
    assert isinstance(probs.erase, float)
    assert AugmentProbs.from_config({}) == AugmentProbs()
    with pytest.raises(ValueError, match="noise"):
        AugmentProbs.from_config({"p_noise": 2})
    with pytest.raises(dataclasses.FrozenInstanceError):
        probs.hflip = 1.0  # type: ignore[misc]


# ---------------------------------------------------------------------------
# Batched implementation (structural: no per-sample Python loop)
# ---------------------------------------------------------------------------


class _CountTorchCalls(TorchFunctionMode):
    def __init__(self) -> None:
        super().__init__()
        self.calls = 0

    def __torch_function__(self, func, types, args=(), kwargs=None):
        self.calls += 1
        return func(*args, **(kwargs or {}))


def test_number_of_torch_ops_independent_of_batch_size() -> None:
    probs = AugmentProbs(**{name: 0.5 for name in AUGMENTATIONS})
    ops = {}
    for b in (16, 4096):
        x = torch.rand(b, 1, 28, 28, generator=gen())
        counts = torch.randint(0, 3, (b, 6), generator=gen())
        augment_batch(x, counts, probs, gen())  # warm the index-map cache
        with _CountTorchCalls() as mode:
            out, c = augment_batch(x, counts, probs, gen(1))
        ops[b] = mode.calls
        assert out.shape == x.shape and c.shape == counts.shape
        assert out.min() >= 0 and out.max() <= 1
    assert ops[16] == ops[4096], ops
    assert ops[4096] < 200, ops  # a handful of batched ops, not thousands
