"""Synthetic stand-in for the CS194-26 / EECS 442 "mini facade" segmentation data (seed 003, part 2).

What it is for: an offline, reproducible data set in exactly the course's layout, so the facade search, its tests
and smoke runs need no download. It never reads the real data; everything below is a hand-written model of it:

* Layout: `train/` and `test_dev/`, each holding pairs `eecs442_0000.jpg` (RGB photo) + `eecs442_0000.png` (the
  label: a palette ("P" mode) PNG whose pixel values are the class ids 0 others, 1 facade, 2 pillar, 3 window,
  4 balcony). The course has 906 training and 115 test_dev images, hence the CLI defaults.
* Scene: a wall (facade) fills most of the frame; around it "others": sky above, ground below, neighbouring
  buildings at the sides. On the wall: pillars (vertical strips between window columns), a grid of windows
  (rows, columns, sizes and spacing drawn per image), balconies (horizontal bars over the bottom of some windows)
  and in front of everything clutter labelled others (trees, cars, lamp posts). Later-drawn objects win, in the
  photo and in the label alike, so the label is exactly what is visible.
* Appearance: colours drawn per image, mortar lines on the wall, a linear lighting gradient in a random direction,
  Gaussian pixel noise, then JPEG (quality 90) compression.

Each image has its own numpy Generator seeded by (seed, split, index), so a smaller data set is a prefix of a
larger one with the same seed. Drawing is rectangle slicing (ellipses on their bounding box only): about 200
images/s of one core at 256 x 256 (the 1,021 course-sized images in about 5 s of CPU), three quarters of it
drawing, the rest JPEG/PNG encoding. Pixel shares over the default set: others 25 %, facade 42 %, pillar 11 %,
window 17 %, balcony 5 %; pillars appear in 86 % of the images, balconies in 80 %, the rest in all.

Public API: :func:`render`, :func:`write_dataset`, :func:`main`
(CLI: ``python -m datasets.facades_generator generate --out DIR``).
"""

from __future__ import annotations

import argparse
import os
import pathlib
import shutil
import sys
import tempfile
import time

import numpy as np
from PIL import Image

CLASSES = ("others", "facade", "pillar", "window", "balcony")
OTHERS, FACADE, PILLAR, WINDOW, BALCONY = range(5)
# Colours of the label PNG's palette, index = class id. Only the indices carry meaning; these colours just make
# a label viewable (and are what datasets.facades maps an RGB label back with).
PALETTE = ((0, 0, 0), (0, 0, 255), (0, 255, 0), (255, 128, 0), (255, 0, 0))
SPLITS = ("train", "test_dev")
N_TRAIN, N_TEST = 906, 115  # the course's counts
IMAGE_SIZE = 256  # pixels per side (the seed says 264, but the course images and its model are 256)
JPEG_QUALITY = 90
NAME = "eecs442_{:04d}"  # the course's file names


# ---------------------------------------------------------------- drawing primitives


def _px(frac: float, size: int) -> int:
    """A length given as a fraction of the image side, in whole pixels, at least 1."""
    return max(1, round(frac * size))


def _rect(img: np.ndarray, lab: np.ndarray, y0: int, y1: int, x0: int, x1: int, colour, cls: int) -> None:
    """Fill rows [y0, y1) x columns [x0, x1) (clipped to the image) with a colour and a class."""
    h, w = lab.shape
    y0, y1, x0, x1 = max(y0, 0), min(y1, h), max(x0, 0), min(x1, w)
    if y0 < y1 and x0 < x1:
        img[y0:y1, x0:x1] = colour
        lab[y0:y1, x0:x1] = cls


def _ellipse(img: np.ndarray, lab: np.ndarray, cy: float, cx: float, ry: float, rx: float, colour, cls: int) -> None:
    """Fill an axis-aligned ellipse (centre and radii in pixels), computed on its bounding box only."""
    h, w = lab.shape
    y0, y1 = max(int(cy - ry), 0), min(int(cy + ry) + 1, h)
    x0, x1 = max(int(cx - rx), 0), min(int(cx + rx) + 1, w)
    if y0 >= y1 or x0 >= x1:
        return
    yy, xx = np.ogrid[y0:y1, x0:x1]
    inside = ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 <= 1.0
    img[y0:y1, x0:x1][inside] = colour
    lab[y0:y1, x0:x1][inside] = cls


def _shade(colour: np.ndarray, factor: float) -> np.ndarray:
    return np.clip(colour * factor, 0, 255)


# ---------------------------------------------------------------- one scene


def _background(img, lab, rng: np.random.Generator, s: int) -> None:
    """Others everywhere: a sky gradient, a ground band and neighbouring buildings (their final extent is
    whatever the facade leaves uncovered)."""
    sky_top = rng.uniform([90, 120, 170], [200, 220, 255])
    sky_bottom = np.clip(sky_top + rng.uniform(10, 50), 0, 255)
    t = np.linspace(0.0, 1.0, s, dtype=np.float32)[:, None, None]
    img[:] = sky_top * (1 - t) + sky_bottom * t
    lab[:] = OTHERS
    ground_y = s - _px(rng.uniform(0.03, 0.12), s)
    _rect(img, lab, ground_y, s, 0, s, rng.uniform(60, 150, 3), OTHERS)
    for side in (0, 1):
        if rng.random() < 0.6:  # a neighbour's wall, seen beside the facade
            top = _px(rng.uniform(0.0, 0.3), s)
            x0, x1 = (0, s // 2) if side == 0 else (s // 2, s)
            _rect(img, lab, top, ground_y, x0, x1, rng.uniform(40, 220, 3), OTHERS)


def _facade(img, lab, rng: np.random.Generator, s: int) -> tuple[int, int, int, int, np.ndarray]:
    """The wall: most of the frame, a per-image colour, mortar lines and a few horizontal cornices."""
    x0 = _px(rng.uniform(0.0, 0.12), s) if rng.random() < 0.8 else 0
    x1 = s - (_px(rng.uniform(0.0, 0.12), s) if rng.random() < 0.8 else 0)
    y0 = _px(rng.uniform(0.02, 0.18), s)  # always some sky above: others is in (nearly) every image
    y1 = s - (_px(rng.uniform(0.0, 0.08), s) if rng.random() < 0.7 else 0)
    wall = rng.uniform([90, 60, 40], [240, 220, 200])  # brick red to plaster white
    _rect(img, lab, y0, y1, x0, x1, wall, FACADE)
    period = int(rng.integers(3, 9))  # mortar line spacing, px at 256
    period = max(2, round(period * s / IMAGE_SIZE))
    img[y0:y1:period, x0:x1] = _shade(wall, rng.uniform(0.75, 0.95))
    for _ in range(int(rng.integers(0, 4))):  # cornices / string courses: still facade, another shade
        cy = int(rng.integers(y0, y1))
        _rect(img, lab, cy, cy + _px(rng.uniform(0.008, 0.025), s), x0, x1, _shade(wall, rng.uniform(0.6, 1.3)),
              FACADE)
    return y0, y1, x0, x1, wall


def _grid(rng: np.random.Generator, y0: int, y1: int, x0: int, x1: int) -> dict:
    """Rows and columns of the window grid and the window size inside a cell (fractions of the cell)."""
    rows, cols = int(rng.integers(2, 7)), int(rng.integers(2, 8))
    return {
        "rows": rows, "cols": cols,
        "cell_h": (y1 - y0) / rows, "cell_w": (x1 - x0) / cols,
        "win_h": rng.uniform(0.4, 0.72), "win_w": rng.uniform(0.3, 0.7),
        "top": rng.uniform(0.1, 0.3),  # window top, as a fraction of the cell height
    }


def _pillars(img, lab, rng: np.random.Generator, s: int, box, g: dict, wall: np.ndarray) -> None:
    """Vertical strips centred in the gaps between window columns (the edges of the wall included)."""
    if rng.random() < 0.15:
        return
    y0, y1, x0, _, _ = box
    gap = g["cell_w"] * (1 - g["win_w"])  # free wall between two windows, px
    width = max(1, round(gap * rng.uniform(0.35, 0.85)))
    centres = x0 + g["cell_w"] * np.arange(g["cols"] + 1)  # gap centres, windows are centred in their cell
    pick = rng.random(centres.size) < rng.uniform(0.3, 1.0)
    if not pick.any():
        pick[rng.integers(centres.size)] = True
    colour = _shade(wall, rng.choice([rng.uniform(0.55, 0.8), rng.uniform(1.15, 1.4)]))
    top = y0 if rng.random() < 0.6 else round(y0 + g["cell_h"] * int(rng.integers(1, g["rows"])))
    for c in centres[pick]:
        left = round(c - width / 2)
        _rect(img, lab, top, y1, left, left + width, colour, PILLAR)
        # A darker left edge: the pillar stands out of the wall.
        img[top:y1, max(left, 0):max(left, 0) + max(1, width // 5)] = _shade(colour, 0.8)


def _windows(img, lab, rng: np.random.Generator, s: int, box, g: dict) -> list[tuple[int, int, int, int, int]]:
    """The window grid: frame, glass, mullions (all labelled window). Returns (row, y0, y1, x0, x1) of each."""
    y0, _, x0, _, _ = box
    frame = rng.uniform(150, 255, 3) if rng.random() < 0.6 else rng.uniform(30, 120, 3)
    glass = rng.uniform([10, 20, 30], [90, 110, 140]) if rng.random() < 0.7 else rng.uniform(120, 200, 3)
    wh, ww = max(2, round(g["cell_h"] * g["win_h"])), max(2, round(g["cell_w"] * g["win_w"]))
    border = max(1, round(min(wh, ww) * rng.uniform(0.06, 0.15)))
    mullions = rng.random() < 0.6
    drawn = []
    for r in range(g["rows"]):
        for c in range(g["cols"]):
            if rng.random() < 0.06:  # a blind window / a doorway left as wall
                continue
            top = round(y0 + g["cell_h"] * (r + g["top"]))
            left = round(x0 + g["cell_w"] * c + (g["cell_w"] - ww) / 2)
            _rect(img, lab, top, top + wh, left, left + ww, frame, WINDOW)
            glass_here = _shade(glass, rng.uniform(0.85, 1.15))
            img[max(top + border, 0):top + wh - border, max(left + border, 0):left + ww - border] = glass_here
            if mullions:
                img[top + wh // 2:top + wh // 2 + border, max(left, 0):left + ww] = frame
                img[max(top, 0):top + wh, left + ww // 2:left + ww // 2 + border] = frame
            drawn.append((r, top, top + wh, left, left + ww))
    return drawn


def _balconies(img, lab, rng: np.random.Generator, s: int, box, g: dict, windows) -> None:
    """Horizontal bars over the bottom of the windows of some rows (never the ground floor), a railing look."""
    if rng.random() < 0.2 or g["rows"] < 2:
        return
    _, _, fx0, fx1, _ = box
    colour = rng.uniform(10, 80, 3) if rng.random() < 0.6 else rng.uniform(150, 240, 3)
    height = max(2, round(g["cell_h"] * rng.uniform(0.15, 0.32)))
    reach = round(g["cell_w"] * rng.uniform(0.0, 0.15))  # how far a balcony sticks out beside its window, px
    rows = [r for r in range(g["rows"] - 1) if rng.random() < 0.55] or [int(rng.integers(0, g["rows"] - 1))]
    continuous = rng.random() < 0.3  # one balcony along the whole floor
    bar_step = max(2, round(height * rng.uniform(0.2, 0.5)))  # railing bar spacing, px
    for r in rows:
        in_row = [w for w in windows if w[0] == r]
        if not in_row:
            continue
        bottom = in_row[0][2]
        y0, y1 = bottom - round(height * 0.7), bottom + height - round(height * 0.7)
        spans = [(fx0, fx1)] if continuous else [(w[3] - reach, w[4] + reach) for w in in_row]
        for x0, x1 in spans:
            _rect(img, lab, y0, y1, x0, x1, colour, BALCONY)
            # Railing: lighter vertical bars every bar_step px below a solid top rail.
            rail = max(1, height // 4)
            img[max(y0 + rail, 0):max(y1, 0), max(x0, 0):max(x1, 0):bar_step] = _shade(colour, 1.6) + 20


def _clutter(img, lab, rng: np.random.Generator, s: int) -> None:
    """Things in front of the facade, labelled others: trees, cars, lamp posts, mostly in the lower half."""
    for _ in range(int(rng.integers(0, 5))):
        kind = rng.integers(3)
        if kind == 0:  # tree: a green crown on a trunk
            cx, r = rng.uniform(0, s), rng.uniform(0.05, 0.2) * s
            cy = rng.uniform(0.45, 0.9) * s
            trunk = _px(0.02, s)
            _rect(img, lab, round(cy), s, round(cx) - trunk, round(cx) + trunk, rng.uniform(40, 90, 3), OTHERS)
            _ellipse(img, lab, cy, cx, r * rng.uniform(0.8, 1.3), r, rng.uniform([20, 60, 10], [90, 160, 70]), OTHERS)
        elif kind == 1:  # car: a body and a cabin at the bottom
            w, h = rng.uniform(0.15, 0.35) * s, rng.uniform(0.05, 0.1) * s
            x0, y1 = round(rng.uniform(-0.1, 0.9) * s), s - _px(rng.uniform(0.0, 0.05), s)
            body = rng.uniform(0, 255, 3)
            _rect(img, lab, round(y1 - h), y1, x0, round(x0 + w), body, OTHERS)
            _rect(img, lab, round(y1 - 1.8 * h), round(y1 - h), round(x0 + 0.2 * w), round(x0 + 0.75 * w),
                  _shade(body, 0.7), OTHERS)
        else:  # lamp post or sign pole: a thin vertical strip
            x = int(rng.integers(0, s))
            _rect(img, lab, round(rng.uniform(0.3, 0.7) * s), s, x, x + _px(0.012, s), rng.uniform(20, 80, 3), OTHERS)


def render(rng: np.random.Generator, size: int = IMAGE_SIZE) -> tuple[np.ndarray, np.ndarray]:
    """One scene: (size, size, 3) uint8 photo and (size, size) uint8 label with class ids 0..4."""
    if size < 16:
        raise ValueError(f"size must be >= 16 pixels, got {size}")
    s = size
    img = np.empty((s, s, 3), dtype=np.float32)
    lab = np.empty((s, s), dtype=np.uint8)
    _background(img, lab, rng, s)
    box = _facade(img, lab, rng, s)
    g = _grid(rng, *box[:4])
    _pillars(img, lab, rng, s, box, g, box[4])
    windows = _windows(img, lab, rng, s, box, g)
    _balconies(img, lab, rng, s, box, g, windows)
    _clutter(img, lab, rng, s)
    # Lighting: a linear gain from 1 - a to 1 + a across the image, in a random direction.
    angle, amount = rng.uniform(0, 2 * np.pi), rng.uniform(0.0, 0.3)
    ramp = np.linspace(-1.0, 1.0, s, dtype=np.float32)
    gain = 1 + amount * (np.cos(angle) * ramp[None, :] + np.sin(angle) * ramp[:, None])
    img *= gain[:, :, None]
    noise = rng.standard_normal(img.shape, dtype=np.float32)  # float32 draws: twice as fast as float64
    noise *= rng.uniform(2.0, 10.0)  # sensor noise, standard deviation in grey levels
    img += noise
    return np.clip(img, 0, 255, out=img).astype(np.uint8), lab


# ---------------------------------------------------------------- writing the course layout


def _label_png(lab: np.ndarray) -> Image.Image:
    im = Image.frombytes("P", (lab.shape[1], lab.shape[0]), np.ascontiguousarray(lab).tobytes())
    im.putpalette([v for colour in PALETTE for v in colour])
    return im


def write_dataset(out: pathlib.Path, n_train: int = N_TRAIN, n_test: int = N_TEST, size: int = IMAGE_SIZE,
                  seed: int = 0) -> None:
    """Write `out/train/` (n_train pairs) and `out/test_dev/` (n_test pairs) of eecs442_NNNN.jpg + .png.

    Atomic like the shapes generator: written into a temporary folder beside `out`, renamed into place at the end.
    Raises ValueError if `out` exists and is not an empty folder, or for negative counts.
    """
    out = pathlib.Path(out)
    if n_train < 0 or n_test < 0:
        raise ValueError(f"image counts must be >= 0, got n_train={n_train}, n_test={n_test}")
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise ValueError(f"refusing to write data set: {out} exists and is not an empty folder")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = pathlib.Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    try:
        for split_id, (split, n) in enumerate(zip(SPLITS, (n_train, n_test), strict=True)):
            folder = tmp / split
            folder.mkdir()
            for i in range(n):
                photo, lab = render(np.random.default_rng([seed, split_id, i]), size)
                name = NAME.format(i)
                Image.fromarray(photo).save(folder / f"{name}.jpg", quality=JPEG_QUALITY)
                _label_png(lab).save(folder / f"{name}.png")
        os.chmod(tmp, 0o755)  # mkdtemp makes 0700
        if out.exists():
            out.rmdir()  # empty (checked above); rename cannot replace a folder portably
        os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def main(argv: list[str] | None = None) -> int:
    """CLI: ``generate --out DIR [--n-train N] [--n-test N] [--size S] [--seed S]``. Returns the exit code."""
    parser = argparse.ArgumentParser(prog="python -m datasets.facades_generator",
                                     description="Generate a synthetic mini-facade data set (train/, test_dev/).")
    sub = parser.add_subparsers(dest="command", required=True)
    gen = sub.add_parser("generate", help="write a data set to a new folder")
    gen.add_argument("--out", type=pathlib.Path, required=True, help="output folder (must not exist or be empty)")
    gen.add_argument("--n-train", type=int, default=N_TRAIN, help=f"training images (default {N_TRAIN})")
    gen.add_argument("--n-test", type=int, default=N_TEST, help=f"test_dev images (default {N_TEST})")
    gen.add_argument("--size", type=int, default=IMAGE_SIZE, help=f"image side in pixels (default {IMAGE_SIZE})")
    gen.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    args = parser.parse_args(argv)
    start = time.perf_counter()
    try:
        write_dataset(args.out, args.n_train, args.n_test, args.size, args.seed)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    took = time.perf_counter() - start
    print(f"wrote {args.n_train} + {args.n_test} images to {args.out} (seed {args.seed}) in {took:.1f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
