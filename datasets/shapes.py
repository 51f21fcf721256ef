"""GSN shapes data: the course's labels.csv + 28x28 PNG layout, read from a folder or its zip.

Facts (../shared/REFERENCE.md, section 1): 10,000 images of white filled shapes on black;
labels.csv `name,squares,circles,up,right,down,left` gives six counts, exactly two non-zero,
summing to 10. The class of an image is (unordered pair of kinds, count of the lower kind):
`class = pair_index * 9 + (count[i] - 1)`, 15 pairs x 9 splits = 135 classes.
Split: the first 9,000 rows train, the last 1,000 are held out (never seen by a search).

Command line:
    python -m datasets.shapes generate --out DIR [--n N] [--seed S]   # the offline stand-in
    python -m datasets.shapes download [--cache-dir DIR]             # the course zip, verified
"""

from __future__ import annotations

import csv
import functools
import hashlib
import io
import os
import sys
import tempfile
import urllib.request
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from datasets import files
from datasets.errors import DataError

KINDS = ("squares", "circles", "up", "right", "down", "left")
HEADER = ("name",) + KINDS
PAIRS = tuple((i, j) for i in range(6) for j in range(i + 1, 6))  # 15, lexicographic
NUM_CLASSES = len(PAIRS) * 9  # 135
IMAGE_SIZE = 28  # pixels
TRAIN_SIZE = 9000  # the course split: rows [0, 9000) train, [9000, 10000) held out

URL = "https://github.com/marcin119a/data/raw/refs/heads/main/data_gsn.zip"
SHA256 = "d4b088dd74c31dfefd7b9e17da617f93f9e307a04f7be85bd1b9b1dc2ab99eeb"
CACHE_VERSION = 1  # bump when the decoded cache format changes

_PAIR_INDEX = torch.full((6, 6), -1, dtype=torch.long)
for _p, (_i, _j) in enumerate(PAIRS):
    _PAIR_INDEX[_i, _j] = _p




@functools.lru_cache(maxsize=16)
def _pair_index_on(device: torch.device) -> torch.Tensor:
    """The table on `device`, copied once: `encode` runs in every loss step, and a copy from the host
    there would wait for the GPU each step."""
    return _PAIR_INDEX.to(device)


# ---------------------------------------------------------------- class encoding


def encode(counts: torch.Tensor) -> torch.Tensor:
    """(N, 6) counts with exactly two non-zero kinds -> (N,) class index in [0, 135)."""
    present = counts > 0
    k = torch.arange(6, device=counts.device)
    lo = torch.where(present, k, 6).min(dim=1).values  # lower kind index
    hi = torch.where(present, k, -1).max(dim=1).values  # higher kind index
    pair = _pair_index_on(counts.device)[lo, hi]
    n_lo = counts.gather(1, lo[:, None]).squeeze(1)
    return pair * 9 + (n_lo - 1)


def decode(classes: torch.Tensor) -> torch.Tensor:
    """(N,) class index -> (N, 6) counts (the inverse of `encode`)."""
    pairs = torch.tensor(PAIRS, device=classes.device)[classes // 9]
    n_lo = classes % 9 + 1
    counts = torch.zeros(classes.shape[0], 6, dtype=torch.long, device=classes.device)
    counts.scatter_(1, pairs[:, :1], n_lo[:, None])
    counts.scatter_(1, pairs[:, 1:], (10 - n_lo)[:, None])
    return counts


def pair_of(classes: torch.Tensor) -> torch.Tensor:
    """Unordered pair index in [0, 15) of each class (which two kinds, split ignored)."""
    return classes // 9


# ---------------------------------------------------------------- the data set


@dataclass
class ShapesData:
    """Images as uint8 (N, 1, 28, 28) in {0, 255}; counts int64 (N, 6); file names."""

    images: torch.Tensor
    counts: torch.Tensor
    names: list[str]

    def __len__(self) -> int:
        return self.images.shape[0]

    def subset(self, index: torch.Tensor | slice) -> ShapesData:
        if isinstance(index, slice):
            return ShapesData(self.images[index], self.counts[index], self.names[index])
        return ShapesData(self.images[index], self.counts[index], [self.names[i] for i in index.tolist()])


def split_held_out(data: ShapesData) -> tuple[ShapesData, ShapesData]:
    """(train, held out): the last tenth of the rows is held out, the rest trains. On the course's
    10,000 images this is its own split, 9,000 / 1,000; a data set of another size keeps the ratio."""
    if len(data) < 2:
        raise DataError(f"a held-out split needs at least 2 images, got {len(data)}")
    held_out = max(1, len(data) // 10)
    return data.subset(slice(0, len(data) - held_out)), data.subset(slice(len(data) - held_out, None))


def course_split(data: ShapesData) -> tuple[ShapesData, ShapesData]:
    """The assignment's split of its 10,000 images: first 9,000 train, last 1,000 held out (the test
    of a search). `split_held_out`, refusing a data set too small to be the course's."""
    if len(data) <= TRAIN_SIZE:
        raise DataError(f"the course split needs more than {TRAIN_SIZE} images, got {len(data)}")
    return split_held_out(data)


def inner_split(train: ShapesData, val_size: int, seed: int) -> tuple[ShapesData, ShapesData]:
    """A seeded split of the training part into search-train and search-validation."""
    if not 0 < val_size < len(train):
        raise DataError(f"validation size {val_size} does not fit {len(train)} training images")
    perm = torch.randperm(len(train), generator=torch.Generator().manual_seed(seed))
    return train.subset(perm[val_size:].sort().values), train.subset(perm[:val_size].sort().values)


# ---------------------------------------------------------------- reading the course layout


class _Source:
    """A folder or a zip holding labels.csv and the PNGs (possibly under one sub-folder)."""

    def __init__(self, path: Path):
        self.path = path
        self.zip: zipfile.ZipFile | None = None
        if path.is_dir():
            for root in (path, path / "data"):
                if (root / "labels.csv").is_file():
                    self.root = root
                    return
            raise DataError(f"{path}: no labels.csv in it or in {path / 'data'}; point --data-dir at the "
                            "folder holding labels.csv and the PNGs, or at data_gsn.zip")
        try:
            self.zip = zipfile.ZipFile(path)
        except (zipfile.BadZipFile, OSError) as e:
            raise DataError(f"{path}: not a readable zip file ({e}); re-download it or unzip it yourself "
                            "and pass the folder") from None
        labels = [n for n in self.zip.namelist() if n.rsplit("/", 1)[-1] == "labels.csv"]
        if not labels:
            raise DataError(f"{path}: the zip holds no labels.csv; is it the course's data_gsn.zip?")
        self.prefix = min(labels, key=len)[: -len("labels.csv")]

    def read(self, name: str) -> bytes:
        where = f"{self.path}:{self.prefix}{name}" if self.zip else str(self.root / name)
        try:
            if self.zip:
                return self.zip.read(self.prefix + name)
            return (self.root / name).read_bytes()
        except (KeyError, OSError):
            raise DataError(f"{where}: missing or unreadable; restore it or remove its row from labels.csv") from None

    def fingerprint(self) -> str:
        """Changes whenever the data could have changed: the zip's bytes, or the folder's listing."""
        h = hashlib.sha256(f"v{CACHE_VERSION}".encode())
        if self.zip:
            h.update(_sha256_file(self.path).encode())
        else:
            for entry in sorted(os.scandir(self.root), key=lambda e: e.name):
                st = entry.stat()
                h.update(f"{entry.name}:{st.st_size}:{st.st_mtime_ns};".encode())
        return h.hexdigest()[:20]


def _parse_labels(text: str, where: str) -> tuple[list[str], torch.Tensor]:
    try:  # newline="": csv itself handles \r, \n and \r\n line ends (and newlines inside quotes)
        rows = list(csv.reader(io.StringIO(text, newline="")))
    except csv.Error as e:  # e.g. a field over csv's size limit
        raise DataError(f"{where}: not a readable CSV file ({e})") from None
    if not rows or tuple(c.strip() for c in rows[0]) != HEADER:
        raise DataError(f"{where}: header must be '{','.join(HEADER)}'")
    names, counts, seen = [], [], set()
    for line, row in enumerate(rows[1:], start=2):
        if not row:
            continue
        if len(row) != 7:
            raise DataError(f"{where} line {line}: expected 7 columns (name + 6 counts), got {len(row)}")
        name = row[0].strip()
        if not name or "/" in name or "\\" in name or "\0" in name or name.startswith("."):
            raise DataError(f"{where} line {line}: bad image name {name!r}; use a plain file name like img_00000.png")
        if name in seen:
            raise DataError(f"{where} line {line}: image {name} listed twice")
        try:
            c = [int(v) for v in row[1:]]
        except ValueError:
            raise DataError(f"{where} line {line}: counts must be whole numbers, got {row[1:]}") from None
        nonzero = [v for v in c if v != 0]
        if min(c) < 0 or len(nonzero) != 2 or sum(c) != 10:
            raise DataError(f"{where} line {line}: counts {c} must be two positive counts summing to 10, others 0")
        seen.add(name)
        names.append(name)
        counts.append(c)
    if not names:
        raise DataError(f"{where}: no rows; a labels.csv needs one row per image")
    return names, torch.tensor(counts, dtype=torch.long)


def _decode_png(blob: bytes, where: str) -> np.ndarray:
    try:
        with Image.open(io.BytesIO(blob)) as im:
            im.load()
            if im.size != (IMAGE_SIZE, IMAGE_SIZE):
                raise DataError(f"{where}: image is {im.size[0]}x{im.size[1]}, expected 28x28")
            # RGBA with R=G=B (the course files) or grey: luminance of equal channels is that value.
            return np.asarray(im.convert("L"), dtype=np.uint8)
    except DataError:
        raise
    except Exception as e:  # PIL raises many types for a broken file
        raise DataError(f"{where}: not a readable PNG ({type(e).__name__}); replace the file") from None


def read_layout(path: Path) -> ShapesData:
    """Decode the whole data set (no cache): validate labels.csv, then every PNG."""
    src = _Source(path)
    where = f"{path}:{src.prefix}labels.csv" if src.zip else str(src.root / "labels.csv")
    try:
        text = src.read("labels.csv").decode("utf-8")
    except UnicodeDecodeError:
        raise DataError(f"{where}: not UTF-8 text; is it really the labels file?") from None
    names, counts = _parse_labels(text, where)
    images = np.empty((len(names), IMAGE_SIZE, IMAGE_SIZE), dtype=np.uint8)
    for k, name in enumerate(names):
        images[k] = _decode_png(src.read(name), f"{path}:{name}" if src.zip else str(src.root / name))
    # Threshold at mid-grey: the course files are exactly {0, 255}; a re-saved JPEG-ish copy is not.
    images = np.where(images >= 128, 255, 0).astype(np.uint8)
    return ShapesData(torch.from_numpy(images)[:, None], counts, names)


def load(path: str | os.PathLike, cache_dir: Path | None = None) -> ShapesData:
    """Load the data set from a folder or zip, through a decoded-tensor cache keyed by content."""
    path = Path(path).expanduser().resolve()
    if not path.exists():
        raise DataError(f"{path}: no such file or folder; pass the folder with labels.csv or data_gsn.zip")
    src = _Source(path)
    cache = (cache_dir or files.cache_dir()) / f"gsn-{src.fingerprint()}.pt"
    if cache.is_file():
        try:
            blob = torch.load(cache, weights_only=True)
            return ShapesData(blob["images"], blob["counts"], list(blob["names"]))
        except Exception:  # a truncated or foreign cache file: decode again and rewrite it
            pass
    data = read_layout(path)
    try:
        blob = {"images": data.images, "counts": data.counts, "names": data.names}
        files.atomic_write(cache, lambda f: torch.save(blob, f))
    except (OSError, RuntimeError):  # read-only home or a full disk (torch.save raises RuntimeError
        pass  # when a write fails): the cache is an optimisation, not a requirement
    return data


# ---------------------------------------------------------------- the offline default


def generated(n: int = 10_000, seed: int = 0, cache_dir: Path | None = None) -> ShapesData:
    """The project's own generated data set, written once in the course layout, then loaded like it."""
    from datasets.shapes_generator import write_dataset

    folder = (cache_dir or files.cache_dir()) / f"gsn-generated-n{n}-seed{seed}"
    if not (folder / "labels.csv").is_file():
        folder.parent.mkdir(parents=True, exist_ok=True)
        try:
            write_dataset(folder, n, seed)
        except ValueError:
            if not (folder / "labels.csv").is_file():  # not a concurrent writer that won the race
                raise
    return load(folder, cache_dir)


def generated_tensors(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """`n` generated images, uint8 (n, 1, 28, 28) in {0, 255}, and their counts, made in memory (9,000 in
    about 0.4 s): the same images `generated(n, seed)` writes and loads, without the files."""
    from datasets.shapes_generator import generate

    images, counts = generate(n, seed)
    return images[:, None], counts


# ---------------------------------------------------------------- download


def _sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def download(cache_dir: Path | None = None, url: str = URL, sha256: str = SHA256) -> Path:
    """Fetch the course zip into the cache (once), verify its checksum, return its path."""
    dest = (cache_dir or files.cache_dir()) / "data_gsn.zip"
    if dest.is_file() and _sha256_file(dest) == sha256:
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=".data_gsn.zip.")
    os.close(fd)
    try:
        try:
            urllib.request.urlretrieve(url, tmp)
        except OSError as e:
            raise DataError(f"could not download {url} ({e}); download it by hand and pass --data-dir") from None
        got = _sha256_file(Path(tmp))
        if got != sha256:
            raise DataError(f"{url}: checksum {got[:12]}... does not match the known {sha256[:12]}...; "
                            "the file changed or was corrupted, nothing was kept")
        _Source(Path(tmp))  # it must also open as the course layout
        os.replace(tmp, dest)
    finally:
        Path(tmp).unlink(missing_ok=True)
    return dest


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["generate"]:
        from datasets.shapes_generator import main as generate_main

        return generate_main(argv)
    if argv[:1] == ["download"]:
        import argparse

        parser = argparse.ArgumentParser(prog="python -m datasets.shapes download")
        parser.add_argument("--cache-dir", type=Path, default=None)
        args = parser.parse_args(argv[1:])
        try:
            print(download(args.cache_dir))
        except DataError as e:
            print(f"error: {e}", file=sys.stderr)
            return 2
        return 0
    print("usage: python -m datasets.shapes {generate --out DIR [--n N] [--seed S] | download [--cache-dir DIR]}",
          file=sys.stderr)
    return 2


if __name__ == "__main__":
    raise SystemExit(main())
