"""Synthetic generator of the GSN shapes data set (28x28 white shapes on black).

What it is for: the search system needs an unlimited, reproducible supply of
images that are statistically indistinguishable from the course's real
``data_gsn.zip`` (10,000 images) - for smoke tests, for checking that a model
does not merely memorise the real 10k, and for building extra training data.
It never reads the real data: everything below is a hard-coded model of it.

The model was fitted by measuring the real data (see
``benchmarks/generator_fidelity.py`` for the side-by-side comparison):

* Every image holds exactly 10 shapes of exactly two kinds. The pair of kinds is
  uniform over the 15 unordered pairs and the count of the first kind is uniform
  over 2..8 (the second gets 10 minus that).
* Each kind has ONE fixed size and pixel pattern - there is no size jitter in
  the real data (isolated, unclipped shapes match a single template exactly):
  square 7x7 px, disc of radius 4 px (x^2 + y^2 <= 16, 9 px across, 49 px),
  isosceles triangles with an 11 px base and 6 px rows of height (widths
  1, 3, ..., 11; 36 px) in four orientations.
* Placement is an integer anchor drawn uniformly from 0..27 on each axis, and
  the anchor sits at a kind-specific point of the shape: the centre for
  squares and circles, the centre of the base for up/down/right triangles,
  but the APEX for left triangles. So shapes may stick out of the image by up
  to 3 px (square), 4 px (circle) or 5 px (triangles), and some sides are
  clipped more often than others (e.g. 'up' triangles are cut at the top,
  'down' ones at the bottom, 'left' ones mostly on the right).
* Shapes are combined by XOR, which produces the holes and rings where shapes
  overlap.

Public API: :func:`generate`, :func:`write_dataset`, :func:`render_single`,
:func:`main` (CLI: ``python -m datasets.shapes_generator generate --out DIR``).
"""

from __future__ import annotations

import argparse
import csv
import os
import pathlib
import shutil
import sys
import tempfile
import time

import numpy as np
import torch
from PIL import Image

IMAGE_SIZE = 28  # pixels per side
SHAPES_PER_IMAGE = 10
MIN_COUNT, MAX_COUNT = 2, 8  # per-kind count range inside one image
KIND_NAMES = ("squares", "circles", "up", "right", "down", "left")  # labels.csv columns
SQUARE, CIRCLE, UP, RIGHT, DOWN, LEFT = range(6)
N_KINDS = len(KIND_NAMES)

# Size of each kind in pixels, measured on the real data: square side,
# circle diameter (pixel-centre extent + 1), triangle base length. A triangle
# with base s has (s + 1) / 2 rows, i.e. base ~ twice the height.
DEFAULT_SIZE = (7.0, 9.0, 11.0, 11.0, 11.0, 11.0)

# Where the uniform integer anchor (0..27 on each axis) sits relative to the
# bounding-box centre of each kind, in pixels: bbox_centre = anchor + offset.
# Triangles have a 6-row extent, so their bbox centre is half-way between
# rows 2 and 3 below/above the anchor row (hence 2.5).
#   up:    anchor = centre of the base (bottom row)      -> bbox centre 2.5 px above
#   down:  anchor = centre of the base (top row)         -> bbox centre 2.5 px below
#   right: anchor = centre of the base (left column)     -> bbox centre 2.5 px right
#   left:  anchor = apex (left column)                   -> bbox centre 2.5 px right
_ANCHOR_OFFSET_X = np.array([0.0, 0.0, 0.0, 2.5, 0.0, 2.5])
_ANCHOR_OFFSET_Y = np.array([0.0, 0.0, -2.5, 0.0, 2.5, 0.0])

# The 15 unordered pairs of distinct kinds, in a fixed order (determinism).
_PAIRS = np.array([(a, b) for a in range(N_KINDS) for b in range(a + 1, N_KINDS)])

_EPS = 1e-6  # tolerance for float inside-tests on exact pixel-centre boundaries
_CHUNK = 1000  # images rasterised at once; bounds peak memory to a few tens of MB


def _inside(kind: int, size: np.ndarray, cx: np.ndarray, cy: np.ndarray) -> np.ndarray:
    """Inside-test of ``m`` shapes of one kind on the pixel grid.

    ``size``, ``cx``, ``cy`` are float arrays of shape (m,), in pixels; (cx, cy)
    is the centre of the shape's bounding box in pixel-centre coordinates
    (pixel (row r, col c) has its centre at y = r, x = c). Returns a bool
    array (m, 28, 28).
    """
    grid = np.arange(IMAGE_SIZE, dtype=np.float64)
    # dx, dy: offset of every pixel centre from the bbox centre, (m, 1, 28) / (m, 28, 1)
    dx = grid[None, None, :] - cx[:, None, None]
    dy = grid[None, :, None] - cy[:, None, None]
    half = (size[:, None, None] - 1.0) / 2.0  # half the pixel-centre extent
    if kind == SQUARE:
        return (np.abs(dx) <= half + _EPS) & (np.abs(dy) <= half + _EPS)
    if kind == CIRCLE:
        return dx * dx + dy * dy <= half * half + _EPS
    # Triangles: half-base b = (s-1)/2 px; apex-to-base distance (pixel-centre
    # extent) 2*hh = b, so the base is twice the height. 'along' runs from the
    # apex (0) to the base (2*hh) on the symmetry axis, 'across' is the distance
    # from that axis; inside when 0 <= along <= 2*hh and |across| <= along *
    # b / (2*hh): for the real 11 px base, 6 rows of widths 1, 3, ..., 11 px.
    hh = half / 2.0  # half the height extent, px
    if kind == UP:
        along, across = dy + hh, dx
    elif kind == DOWN:
        along, across = hh - dy, dx
    elif kind == LEFT:
        along, across = dx + hh, dy
    elif kind == RIGHT:
        along, across = hh - dx, dy
    else:
        raise ValueError(f"unknown kind {kind!r}; expected 0..5 ({', '.join(KIND_NAMES)})")
    slope = np.divide(half, 2.0 * hh, out=np.ones_like(half), where=hh > 0)
    return (along >= -_EPS) & (along <= 2.0 * hh + _EPS) & (np.abs(across) <= along * slope + _EPS)


def render_single(kind: int, size: float | None, cx: float, cy: float) -> torch.Tensor:
    """Render one shape alone: (28, 28) uint8 tensor with values {0, 255}.

    ``kind`` is the label index (0 square, 1 circle, 2 up, 3 right, 4 down,
    5 left). ``size`` in pixels is the square side / circle diameter /
    triangle base (the triangle is half as tall as its base); ``None`` means the
    size used by the real data (7 / 9 / 11). ``(cx, cy)`` is the centre of the
    shape's bounding box in pixels (x = column, y = row, pixel centres at
    integers). With the default sizes, centres at integers (squares, circles)
    or at integer + 0.5 along a triangle's height axis (e.g. an 'up' triangle
    at ``cx=13, cy=12.5``) reproduce the real data's pixel patterns exactly.
    """
    if not 0 <= kind < N_KINDS:
        raise ValueError(f"unknown kind {kind!r}; expected 0..5 ({', '.join(KIND_NAMES)})")
    s = DEFAULT_SIZE[kind] if size is None else float(size)
    if s < 1:
        raise ValueError(f"size must be >= 1 pixel, got {s}")
    mask = _inside(kind, np.array([s]), np.array([float(cx)]), np.array([float(cy)]))[0]
    return torch.from_numpy(mask.astype(np.uint8) * 255)


def _sample_layout(n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Draw labels and shape placements for ``n`` images.

    Returns ``counts`` (n, 6) int64, and per shape (n, 10) arrays ``kinds``
    (int), ``cx``, ``cy`` (bbox centres in pixels, float).
    """
    pair = _PAIRS[rng.integers(0, len(_PAIRS), size=n)]  # (n, 2) kinds, uniform over 15 pairs
    first = rng.integers(MIN_COUNT, MAX_COUNT + 1, size=n)  # count of pair[:, 0], uniform 2..8
    counts = np.zeros((n, N_KINDS), dtype=np.int64)
    rows = np.arange(n)
    counts[rows, pair[:, 0]] = first
    counts[rows, pair[:, 1]] = SHAPES_PER_IMAGE - first
    # Shape j of an image is of the first kind for j < first, else the second.
    slot = np.arange(SHAPES_PER_IMAGE)[None, :]
    kinds = np.where(slot < first[:, None], pair[:, :1], pair[:, 1:])
    # Integer anchors, uniform over the image on both axes (pixels).
    ax = rng.integers(0, IMAGE_SIZE, size=(n, SHAPES_PER_IMAGE))
    ay = rng.integers(0, IMAGE_SIZE, size=(n, SHAPES_PER_IMAGE))
    cx = ax + _ANCHOR_OFFSET_X[kinds]
    cy = ay + _ANCHOR_OFFSET_Y[kinds]
    return counts, kinds, cx, cy


def _rasterise(kinds: np.ndarray, cx: np.ndarray, cy: np.ndarray) -> np.ndarray:
    """XOR-combine the shapes of each image: (n, 10) inputs -> (n, 28, 28) bool."""
    n = kinds.shape[0]
    out = np.zeros((n, IMAGE_SIZE, IMAGE_SIZE), dtype=bool)
    img_of_shape = np.repeat(np.arange(n), kinds.shape[1])
    flat_k, flat_x, flat_y = kinds.ravel(), cx.ravel(), cy.ravel()
    for kind in range(N_KINDS):
        sel = np.nonzero(flat_k == kind)[0]
        if sel.size == 0:
            continue
        size = np.full(sel.size, DEFAULT_SIZE[kind])
        masks = _inside(kind, size, flat_x[sel], flat_y[sel]).view(np.uint8)
        # XOR-accumulate: parity of the number of shapes covering each pixel.
        parity = np.zeros((n, IMAGE_SIZE, IMAGE_SIZE), dtype=np.uint8)
        np.add.at(parity, img_of_shape[sel], masks)
        out ^= (parity & 1).astype(bool)
    return out


def generate(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Generate ``n`` images and their labels, deterministically from ``seed``.

    Returns ``images``: uint8 tensor (n, 28, 28) with values {0, 255} (white
    shapes on black), and ``counts``: int64 tensor (n, 6) with columns
    squares, circles, up, right, down, left. The output depends only on
    ``(n, seed)`` - numpy's PCG64 stream, no threads involved.
    """
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    rng = np.random.Generator(np.random.PCG64(seed))
    counts, kinds, cx, cy = _sample_layout(n, rng)
    images = np.zeros((n, IMAGE_SIZE, IMAGE_SIZE), dtype=np.uint8)
    for start in range(0, n, _CHUNK):
        stop = min(start + _CHUNK, n)
        images[start:stop] = _rasterise(kinds[start:stop], cx[start:stop], cy[start:stop]).view(np.uint8) * 255
    return torch.from_numpy(images), torch.from_numpy(counts)


def write_dataset(out_dir: pathlib.Path, n: int, seed: int) -> None:
    """Write ``n`` generated images in the real data set's on-disk layout.

    ``out_dir/labels.csv`` (header ``name,squares,circles,up,right,down,left``)
    plus ``out_dir/img_00000.png ...``: 28x28 RGBA PNGs with R=G=B in {0, 255}
    and alpha 255. Written atomically: everything goes to a temporary
    directory beside ``out_dir`` which is renamed into place at the end, so an
    interrupted run leaves no half-written data set. Raises ``ValueError`` if
    ``out_dir`` exists and is not an empty directory.
    """
    out_dir = pathlib.Path(out_dir)
    if out_dir.exists():
        if not out_dir.is_dir():
            raise ValueError(f"refusing to write data set: {out_dir} exists and is not a directory")
        if any(out_dir.iterdir()):
            raise ValueError(f"refusing to write data set: {out_dir} exists and is not empty")
    images, counts = generate(n, seed)
    imgs = images.numpy()
    labels = counts.numpy()
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = pathlib.Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.tmp-", dir=out_dir.parent))
    try:
        alpha = np.full((IMAGE_SIZE, IMAGE_SIZE, 1), 255, dtype=np.uint8)
        names = []
        for i in range(n):
            name = f"img_{i:05d}.png"
            names.append(name)
            rgba = np.concatenate([np.repeat(imgs[i][:, :, None], 3, axis=2), alpha], axis=2)
            Image.fromarray(rgba, mode="RGBA").save(tmp / name)
        with open(tmp / "labels.csv", "w", newline="") as fh:
            writer = csv.writer(fh, lineterminator="\n")
            writer.writerow(("name", *KIND_NAMES))
            for name, row in zip(names, labels, strict=True):
                writer.writerow((name, *(int(v) for v in row)))
        # mkdtemp creates 0700; make the result as readable as a normal directory.
        os.chmod(tmp, 0o755)
        if out_dir.exists():
            out_dir.rmdir()  # empty (checked above); rename cannot replace a directory portably
        os.replace(tmp, out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def main(argv: list[str] | None = None) -> int:
    """CLI: ``generate --out DIR [--n N] [--seed S]``. Returns the exit code."""
    parser = argparse.ArgumentParser(
        prog="python -m datasets.shapes_generator",
        description="Generate a synthetic GSN shapes data set (labels.csv + img_%05d.png).",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    gen = sub.add_parser("generate", help="write a data set to a new directory")
    gen.add_argument("--out", type=pathlib.Path, required=True, help="output directory (must not exist or be empty)")
    gen.add_argument("--n", type=int, default=10000, help="number of images (default 10000)")
    gen.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    args = parser.parse_args(argv)
    if args.n < 0:
        parser.error("--n must be >= 0")
    start = time.perf_counter()
    try:
        write_dataset(args.out, args.n, args.seed)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"wrote {args.n} images + labels.csv to {args.out} (seed {args.seed}) in {time.perf_counter() - start:.2f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
