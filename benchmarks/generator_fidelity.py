"""Fidelity report: real GSN shapes data vs ``datasets.shapes_generator``.

Not a test - a script that prints a side-by-side table of statistics computed
by the SAME code on the real images (read straight from the zip with zipfile +
PIL) and on generated ones, plus the generator's speed::

    /work/venv/bin/python benchmarks/generator_fidelity.py [--real ZIP] [--n 10000] [--seed 0]

Statistics: foreground fraction distribution, label structure (pair
frequencies, count distribution), per-kind foreground fraction and border
density for images dominated by one kind (shows sizes and how shapes are
clipped by the border), and connected-component statistics including the bounding box / area of
isolated, unclipped components (this measures the shapes' sizes directly).
"""

from __future__ import annotations

import argparse
import csv
import io
import pathlib
import sys
import tempfile
import time
import zipfile
from collections import Counter

import numpy as np
from PIL import Image

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]
DEFAULT_REAL = REPO_ROOT.parent / "shared" / "data" / "gsn" / "data_gsn.zip"
KINDS = ("squares", "circles", "up", "right", "down", "left")
DOMINANT = 7  # an image is "dominated" by a kind when it has >= 7 of its 10 shapes


def load_real(path: pathlib.Path) -> tuple[np.ndarray, np.ndarray]:
    """Read the real data set from its zip: (N, 28, 28) bool images, (N, 6) counts."""
    with zipfile.ZipFile(path) as zf:
        names = zf.namelist()
        label_name = next(n for n in names if n.endswith("labels.csv"))
        prefix = label_name[: -len("labels.csv")]
        rows = list(csv.reader(io.TextIOWrapper(zf.open(label_name), encoding="utf-8")))
        header, rows = rows[0], rows[1:]
        assert header == ["name", *KINDS], header
        counts = np.array([[int(v) for v in r[1:]] for r in rows], dtype=np.int64)
        images = np.stack([np.array(Image.open(zf.open(prefix + r[0])).convert("L")) > 127 for r in rows])
    return images, counts


# ---------------------------------------------------------------- components
def components(fg: np.ndarray) -> dict[str, np.ndarray]:
    """4-connected components of (N, H, W) bool images via run-length union-find.

    Returns per component: img index, area (pixels), inclusive bbox y0, y1, x0, x1.
    """
    n_img, h, w = fg.shape
    padded = np.zeros((n_img, h, w + 2), np.int8)
    padded[:, :, 1:-1] = fg
    d = np.diff(padded, axis=2)
    img, row, start = np.nonzero(d == 1)
    end = np.nonzero(d == -1)[2]  # exclusive; runs come out in the same (img, row, col) order
    parent = list(range(len(img)))

    def find(a: int) -> int:
        while parent[a] != a:
            parent[a] = parent[parent[a]]
            a = parent[a]
        return a

    bounds = np.searchsorted(img * h + row, np.arange(n_img * h + 1)).tolist()
    st, en = start.tolist(), end.tolist()
    for k in range(n_img * h):
        if (k + 1) % h == 0:  # last row of an image: nothing below it
            continue
        i, i_end, j, j_end = bounds[k], bounds[k + 1], bounds[k + 1], bounds[k + 2]
        while i < i_end and j < j_end:  # merge-walk the runs of two adjacent rows
            if st[i] < en[j] and st[j] < en[i]:
                ri, rj = find(i), find(j)
                if ri != rj:
                    parent[max(ri, rj)] = min(ri, rj)
            if en[i] < en[j]:
                i += 1
            else:
                j += 1
    roots = np.array([find(i) for i in range(len(img))], dtype=np.int64)
    uniq, inv = np.unique(roots, return_inverse=True)
    out = {"img": img[uniq], "area": np.bincount(inv, weights=end - start).astype(np.int64)}
    for key, vals, red, init in (
        ("y0", row, np.minimum, h),
        ("y1", row, np.maximum, -1),
        ("x0", start, np.minimum, w),
        ("x1", end - 1, np.maximum, -1),
    ):
        acc = np.full(len(uniq), init, dtype=np.int64)
        red.at(acc, inv, vals)
        out[key] = acc
    return out


# ---------------------------------------------------------------- statistics
def statistics(images: np.ndarray, counts: np.ndarray) -> dict[str, str]:
    """All reported statistics as formatted strings, keyed by row name (ordered)."""
    s: dict[str, str] = {}
    n = len(images)
    fg = images.mean(axis=(1, 2))
    s["images"] = f"{n}"
    s["fg fraction mean / std"] = f"{fg.mean():.4f} / {fg.std():.4f}"
    s["fg fraction min / max"] = f"{fg.min():.4f} / {fg.max():.4f}"
    p5, p50, p95 = np.percentile(fg, [5, 50, 95])
    s["fg fraction p5 / p50 / p95"] = f"{p5:.3f} / {p50:.3f} / {p95:.3f}"

    nonzero = counts > 0
    s["kinds per image (set)"] = str(sorted(set(nonzero.sum(1).tolist())))
    s["shapes per image (set)"] = str(sorted(set(counts.sum(1).tolist())))
    pairs = Counter(tuple(np.nonzero(r)[0].tolist()) for r in nonzero)
    freq = np.array([pairs.get((a, b), 0) for a in range(6) for b in range(a + 1, 6)]) / n
    chi2 = float(((freq * n - n / 15) ** 2 / (n / 15)).sum())
    s["pair freq min / max (1/15=.0667)"] = f"{freq.min():.4f} / {freq.max():.4f}"
    s["pair chi2 vs uniform (14 dof)"] = f"{chi2:.1f}"
    vals = counts[nonzero]
    hist = np.bincount(vals, minlength=9)[2:9] / len(vals)
    s["count 2..8 share (1/7=.143)"] = " ".join(f"{v:.3f}" for v in hist)
    s["count range"] = f"{vals.min()}..{vals.max()}"

    # Per dominant kind: fg fraction (size x visibility) and mean density of the
    # four border lines (which side shapes get clipped on).
    for k, name in enumerate(KINDS):
        sel = counts[:, k] >= DOMINANT
        im = images[sel]
        s[f"{name:>7} >=7: fg mean"] = f"{im.mean():.4f}"
        s[f"{name:>7} >=7: border T/B/L/R"] = (
            f"{im[:, 0].mean():.3f} {im[:, -1].mean():.3f} {im[:, :, 0].mean():.3f} {im[:, :, -1].mean():.3f}"
        )

    comp = components(images)
    bw = comp["x1"] - comp["x0"] + 1
    bh = comp["y1"] - comp["y0"] + 1
    border = (comp["y0"] == 0) | (comp["x0"] == 0) | (comp["y1"] == 27) | (comp["x1"] == 27)
    s["components per image"] = f"{len(comp['area']) / n:.2f}"
    s["component 1-px share (XOR bits)"] = f"{(comp['area'] == 1).mean():.3f}"
    s["component mean area"] = f"{comp['area'].mean():.2f}"
    # Sizes: interior components of >= 16 px in images dominated by one kind are
    # mostly isolated whole shapes of that kind; report the modal bbox and area.
    for k, name in enumerate(KINDS):
        dom = counts[comp["img"], k] >= DOMINANT
        sel = dom & ~border & (comp["area"] >= 16)
        c = Counter(zip(bw[sel].tolist(), bh[sel].tolist(), comp["area"][sel].tolist(), strict=True))
        (mw, mh, ma), m = c.most_common(1)[0]
        s[f"{name:>7} >=7: modal whole shape"] = f"{mw}x{mh} px, {ma} px ({m / sel.sum():.0%}, n={m})"
    return s


def ks_distance(a: np.ndarray, b: np.ndarray) -> float:
    """Two-sample Kolmogorov-Smirnov statistic: max gap between the two ECDFs."""
    grid = np.union1d(a, b)
    cdf_a = np.searchsorted(np.sort(a), grid, side="right") / len(a)
    cdf_b = np.searchsorted(np.sort(b), grid, side="right") / len(b)
    return float(np.abs(cdf_a - cdf_b).max())


def print_table(real: dict[str, str], gen: dict[str, str]) -> None:
    w0 = max(len(k) for k in real)
    w1 = max(len(v) for v in [*real.values(), "real"])
    print(f"{'statistic':<{w0}}  {'real':<{w1}}  generated")
    print("-" * (w0 + w1 + 4 + max(len(v) for v in gen.values())))
    for key in real:
        print(f"{key:<{w0}}  {real[key]:<{w1}}  {gen.get(key, '-')}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--real", type=pathlib.Path, default=DEFAULT_REAL, help="path to data_gsn.zip")
    parser.add_argument("--n", type=int, default=10000, help="generated images to compare (default 10000)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--skip-write", action="store_true", help="do not time write_dataset (PNG writing)")
    args = parser.parse_args(argv)

    sys.path.insert(0, str(REPO_ROOT))
    from datasets.shapes_generator import generate, write_dataset

    t0 = time.perf_counter()
    real_images, real_counts = load_real(args.real)
    t_load = time.perf_counter() - t0

    t0 = time.perf_counter()
    gen_images, gen_counts = generate(args.n, args.seed)
    t_gen = time.perf_counter() - t0

    print_table(statistics(real_images, real_counts), statistics(gen_images.numpy() > 0, gen_counts.numpy()))
    real_fg = real_images.mean(axis=(1, 2))
    gen_fg = (gen_images.numpy() > 0).mean(axis=(1, 2))
    n_eff = len(real_fg) * len(gen_fg) / (len(real_fg) + len(gen_fg))
    print()
    print(
        f"fg fraction two-sample KS D = {ks_distance(real_fg, gen_fg):.4f} "
        f"(5% critical value ~ {1.358 / np.sqrt(n_eff):.4f})"
    )
    print(f"real data read from {args.real} in {t_load:.1f} s")
    print(f"generate({args.n}, seed={args.seed}): {t_gen:.2f} s")
    if not args.skip_write:
        with tempfile.TemporaryDirectory() as tmp:
            t0 = time.perf_counter()
            write_dataset(pathlib.Path(tmp) / "gsn", args.n, args.seed)
            print(f"write_dataset({args.n} PNGs + labels.csv): {time.perf_counter() - t0:.2f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
