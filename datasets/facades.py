"""Mini facade segmentation data (CS194-26 / EECS 442, seed 003 part 2): the course layout, and the metric.

Facts: 5 classes, 0 others, 1 facade, 2 pillar, 3 window, 4 balcony. The course data has folders `train/` (906
images) and `test_dev/` (115), each with pairs `<name>.jpg` (RGB photo) and `<name>.png` (label). The label PNG is
a palette ("P" mode) image whose pixel values - the palette indices, not the colours - are the class ids 0..4
(the course's loader read them with pypng, which returns the raw indices). `np.array(Image.open(png))` gives the
same indices. Also accepted: a greyscale label holding the ids, and an RGB(A) label drawn in the PALETTE colours
below, mapped back to ids (any other colour is an error). The seed trained at 256 x 256 (its text says 264; the
course images and this project use 256).

Metric: average precision per class over all pixels (scikit-learn's average_precision_score on the class's
softmax score against its one-hot label), and their mean. The seed reported others 0.61, facade 0.77, pillar
0.12, window 0.78, balcony 0.42, mean 0.54 on test_dev. Implemented here in torch, so scikit-learn stays optional.

Command line:
    python -m datasets.facades generate --out DIR [--n-train N] [--n-test N] [--size S] [--seed S]
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from datasets import files
from datasets.errors import DataError
from datasets.facades_generator import CLASSES, N_TEST, N_TRAIN, PALETTE, SPLITS

__all__ = ["CLASSES", "PALETTE", "NUM_CLASSES", "IMAGE_SIZE", "MAX_AP_PIXELS", "load", "generated", "to_float",
           "average_precision", "per_class_ap"]

NUM_CLASSES = len(CLASSES)  # 5
IMAGE_SIZE = 256  # pixels per side
MAX_AP_PIXELS = 2_000_000  # per_class_ap scores a fixed random subset above this many pixels (memory, time)

_PALETTE_CODES = np.array([(r << 16) | (g << 8) | b for r, g, b in PALETTE])  # RGB packed into one int
_CODE_ORDER = np.argsort(_PALETTE_CODES)  # class ids by increasing colour code, for searchsorted


# ---------------------------------------------------------------- reading the course layout


def _pairs(folder: Path) -> list[str]:
    """Names (without extension) of the photo/label pairs in one split folder, sorted; unpaired files are errors."""
    if not folder.is_dir():
        raise DataError(f"{folder}: no such folder; put train/ and test_dev/ (pairs of <name>.jpg + <name>.png) "
                        f"in {folder.parent}")
    jpgs = {p.stem for p in folder.iterdir() if p.suffix.lower() == ".jpg"}
    pngs = {p.stem for p in folder.iterdir() if p.suffix.lower() == ".png"}
    if jpgs - pngs:
        name = min(jpgs - pngs)
        raise DataError(f"{folder / name}.jpg has no label {name}.png beside it; add the label or remove the photo")
    if pngs - jpgs:
        name = min(pngs - jpgs)
        raise DataError(f"{folder / name}.png has no photo {name}.jpg beside it; add the photo or remove the label")
    if not jpgs:
        raise DataError(f"{folder}: no <name>.jpg + <name>.png pairs in it; is it the course's {folder.name}/ folder?")
    return sorted(jpgs)


def _open(path: Path) -> Image.Image:
    """Open and fully decode an image; a missing, truncated or foreign file is a one-line DataError."""
    try:
        im = Image.open(path)
        im.load()  # decoding happens here: a truncated JPEG fails now, not later
        return im
    except Exception as e:  # PIL raises many types for a broken file
        raise DataError(f"{path}: not a readable image ({type(e).__name__}); replace the file") from None


def _label_ids(im: Image.Image, path: Path) -> np.ndarray:
    """(H, W) uint8 class ids of a label image: palette indices, grey values, or PALETTE colours mapped back."""
    if im.mode in ("P", "L"):
        ids = np.array(im)
    elif im.mode in ("RGB", "RGBA"):
        rgb = np.array(im.convert("RGB")).astype(np.int64)
        codes = (rgb[..., 0] << 16) | (rgb[..., 1] << 8) | rgb[..., 2]
        pos = np.searchsorted(_PALETTE_CODES, codes, sorter=_CODE_ORDER)  # where each colour would sort
        ids = _CODE_ORDER[np.minimum(pos, NUM_CLASSES - 1)]  # the class of that colour, if it is one
        bad = _PALETTE_CODES[ids] != codes
        if bad.any():
            y, x = np.argwhere(bad)[0]
            raise DataError(f"{path}: colour {tuple(rgb[y, x].tolist())} at row {y}, column {x} is not one of the "
                            f"{NUM_CLASSES} class colours {PALETTE}; save the label as a palette PNG of class ids")
        return ids.astype(np.uint8)
    else:
        raise DataError(f"{path}: label image mode {im.mode} is not supported; save it as a palette (P) PNG whose "
                        "indices are the class ids 0..4")
    if ids.max(initial=0) >= NUM_CLASSES:
        raise DataError(f"{path}: label value {int(ids.max())} is not a class id 0..{NUM_CLASSES - 1} "
                        f"({', '.join(CLASSES)}); fix or remove the file")
    return ids.astype(np.uint8)


def _read_split(folder: Path, size: int) -> tuple[torch.Tensor, torch.Tensor]:
    names = _pairs(folder)
    x = np.empty((len(names), size, size, 3), dtype=np.uint8)
    y = np.empty((len(names), size, size), dtype=np.uint8)
    for k, name in enumerate(names):
        jpg, png = folder / f"{name}.jpg", folder / f"{name}.png"
        photo, label = _open(jpg), _open(png)
        if photo.size != label.size:
            raise DataError(f"{jpg} is {photo.size[0]}x{photo.size[1]} but its label {png.name} is "
                            f"{label.size[0]}x{label.size[1]}; they must match pixel for pixel")
        ids = _label_ids(label, png)
        x[k] = np.asarray(photo.convert("RGB").resize((size, size), Image.Resampling.BILINEAR))
        # NEAREST: a label resized any other way would invent in-between (wrong) class ids.
        y[k] = np.asarray(Image.fromarray(ids).resize((size, size), Image.Resampling.NEAREST))
    return torch.from_numpy(x).permute(0, 3, 1, 2).contiguous(), torch.from_numpy(y)


def load(path: Path, size: int = IMAGE_SIZE) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Read `path/train/` and `path/test_dev/`: (train_x, train_y, test_x, test_y).

    x: uint8 (N, 3, size, size) RGB photos resized bilinearly; y: uint8 (N, size, size) class ids 0..4 resized
    with NEAREST (call .long() for a loss). Images are in file-name order, so the result is deterministic.
    """
    if size < 1:
        raise ValueError(f"size must be >= 1 pixel, got {size}")
    path = Path(path).expanduser()
    if not path.is_dir():
        raise DataError(f"{path}: no such folder; pass the folder holding train/ and test_dev/")
    train_x, train_y = _read_split(path / SPLITS[0], size)
    test_x, test_y = _read_split(path / SPLITS[1], size)
    return train_x, train_y, test_x, test_y


def to_float(images: torch.Tensor) -> torch.Tensor:
    """uint8 photos -> float32 in [-1, 1), the scaling of the course's starter code (x / 128 - 1)."""
    return images.float() / 128.0 - 1.0


# ---------------------------------------------------------------- the offline default


def generated(cache_dir: Path | None = None, n_train: int = N_TRAIN, n_test: int = N_TEST, size: int = IMAGE_SIZE,
              seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """The project's synthetic facades, written once in the course layout under the cache, then loaded."""
    from datasets.facades_generator import write_dataset

    folder = (cache_dir or files.cache_dir()) / f"facades-generated-n{n_train}-{n_test}-s{size}-seed{seed}"
    if not (folder / SPLITS[1]).is_dir():
        folder.parent.mkdir(parents=True, exist_ok=True)
        try:
            write_dataset(folder, n_train, n_test, size, seed)
        except ValueError:
            if not (folder / SPLITS[1]).is_dir():  # not a concurrent writer that won the race
                raise
    return load(folder, size)


# ---------------------------------------------------------------- average precision


def average_precision(scores: torch.Tensor, labels: torch.Tensor) -> float:
    """scikit-learn's average_precision_score for one binary problem: sum over thresholds of (R_n - R_{n-1}) P_n.

    The thresholds are the distinct scores, from the highest down: all samples with an equal score enter together
    (as in sklearn's precision_recall_curve), so ties do not depend on the order of the input. No positive label
    gives 0.0, as sklearn does (with a warning there). Sums are in float64.
    """
    scores, labels = scores.reshape(-1), labels.reshape(-1)
    if scores.numel() != labels.numel():
        raise ValueError(f"scores and labels differ in size: {scores.numel()} vs {labels.numel()}")
    if scores.numel() == 0:
        raise ValueError("average precision of no samples is undefined")
    order = torch.argsort(scores, descending=True)
    s = scores[order]
    tps = labels[order].to(torch.float64).cumsum(0)  # true positives among the first k + 1 samples
    # The last sample of each group of equal scores: where a threshold stops.
    last = torch.ones_like(s, dtype=torch.bool)
    last[:-1] = s[1:] != s[:-1]
    tps = tps[last]
    if tps[-1] == 0:
        return 0.0
    seen = torch.nonzero(last).squeeze(1).to(torch.float64) + 1  # samples at or above each threshold
    precision = tps / seen
    recall_step = torch.diff(tps, prepend=tps.new_zeros(1)) / tps[-1]  # R_n - R_{n-1}
    return float((recall_step * precision).sum())


def per_class_ap(logits: torch.Tensor, labels: torch.Tensor, max_pixels: int = MAX_AP_PIXELS) -> list[float]:
    """AP of each class over all pixels: (N, C, H, W) logits, (N, H, W) class ids -> C floats (mean = the score).

    The score of class c is its softmax probability. Above max_pixels pixels a fixed random subset of max_pixels
    pixels is scored (torch generator seeded 0: the same pixels for the same N, H, W), which keeps memory and the
    sort bounded; at 2 million pixels the AP moves by well under 0.01.
    """
    if logits.dim() != 4 or labels.shape != (logits.shape[0], *logits.shape[2:]):
        raise ValueError(f"expected logits (N, C, H, W) and labels (N, H, W), got {tuple(logits.shape)} and "
                         f"{tuple(labels.shape)}")
    c = logits.shape[1]
    scores = logits.movedim(1, -1).reshape(-1, c)  # (pixels, C)
    flat = labels.reshape(-1)
    if flat.numel() > max_pixels:
        pick = torch.randperm(flat.numel(), generator=torch.Generator().manual_seed(0))[:max_pixels]
        pick = pick.to(flat.device)
        scores, flat = scores[pick], flat[pick]
    probs = torch.softmax(scores.float(), dim=1)
    return [average_precision(probs[:, k], flat == k) for k in range(c)]


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["generate"]:
        from datasets.facades_generator import main as generate_main

        return generate_main(argv)
    print("usage: python -m datasets.facades generate --out DIR [--n-train N] [--n-test N] [--size S] [--seed S]",
          file=sys.stderr)
    return 2


if __name__ == "__main__":
    raise SystemExit(main())
