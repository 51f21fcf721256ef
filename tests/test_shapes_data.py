"""datasets.shapes: the GSN loader (real zip, folder, cache, download), class encoding, splits, bad input."""

from __future__ import annotations

import hashlib
import io
import os
import shutil
import tempfile
import zipfile
from itertools import combinations
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from PIL import Image

from datasets import shapes
from datasets.errors import DataError
from datasets.shapes import _parse_labels, course_split, decode, download, encode, inner_split, load, pair_of

HEADER = "name,squares,circles,up,right,down,left"
# Pair order written out independently of the module: (i, j), i < j, lexicographic (REFERENCE.md §1).
MY_PAIRS = list(combinations(range(6), 2))


def my_class(row: list[int]) -> int:
    """The class formula of REFERENCE.md §1, computed without datasets.shapes."""
    kinds = [k for k, v in enumerate(row) if v > 0]
    return MY_PAIRS.index(tuple(kinds)) * 9 + row[kinds[0]] - 1


def assert_valid_labels(names: list[str], counts: torch.Tensor) -> None:
    assert counts.dtype == torch.long and counts.shape == (len(names), 6)
    assert len(names) > 0 and len(set(names)) == len(names) and all(names)
    assert (counts >= 0).all() and ((counts > 0).sum(1) == 2).all() and (counts.sum(1) == 10).all()


def zip_folder(folder: Path, dest: Path, prefix: str = "data/") -> Path:
    with zipfile.ZipFile(dest, "w") as z:
        for f in sorted(folder.iterdir()):
            z.write(f, prefix + f.name)
    return dest


# ---------------------------------------------------------------- the real data


def test_real_zip_facts(real_data):
    d = real_data
    # Facts of data_gsn.zip (REFERENCE.md §1): 10,000 28x28 images, values exactly {0, 255}.
    assert len(d) == 10_000 and len(d.names) == 10_000
    assert d.images.shape == (10_000, 1, 28, 28) and d.images.dtype == torch.uint8
    assert set(torch.unique(d.images).tolist()) == {0, 255}
    c = d.counts
    assert ((c > 0).sum(1) == 2).all() and (c.sum(1) == 10).all()
    assert c[c > 0].min() == 2 and c[c > 0].max() == 8  # counts 2..8 only
    assert len(set(encode(c).tolist())) == 105  # so 105 of the 135 classes occur
    # First rows of labels.csv in the zip.
    assert d.names[:3] == ["img_00000.png", "img_00001.png", "img_00002.png"]
    assert c[:3].tolist() == [[0, 0, 4, 0, 6, 0], [0, 0, 0, 5, 0, 5], [0, 0, 8, 0, 2, 0]]


def test_real_first_image_matches_direct_png_decode(real_zip, real_data):
    with zipfile.ZipFile(real_zip) as z:
        name = next(n for n in z.namelist() if n.endswith("img_00000.png"))
        with Image.open(io.BytesIO(z.read(name))) as im:
            assert im.mode == "RGBA"  # fact: RGBA with R=G=B
            rgba = np.asarray(im)
    assert (rgba[..., 0] == rgba[..., 1]).all() and (rgba[..., 3] == 255).all()
    assert torch.equal(real_data.images[0, 0], torch.from_numpy(rgba[..., 0].copy()))


def test_real_encode_matches_formula(real_data):
    expected = torch.tensor([my_class(r) for r in real_data.counts.tolist()])
    assert torch.equal(encode(real_data.counts), expected)


def test_real_second_load_comes_from_cache(real_zip, real_cache, real_data, monkeypatch):
    assert len(list(real_cache.glob("gsn-*.pt"))) == 1

    def no_decoding(path):
        raise AssertionError("decoded again instead of reading the cache")

    monkeypatch.setattr(shapes, "read_layout", no_decoding)
    again = load(real_zip, cache_dir=real_cache)
    assert torch.equal(again.images, real_data.images) and torch.equal(again.counts, real_data.counts)
    assert again.names == real_data.names


def test_real_unzipped_folder_gives_identical_tensors(real_zip, real_data, tmp_path):
    with zipfile.ZipFile(real_zip) as z:
        z.extractall(tmp_path / "x")  # holds data/labels.csv: the loader looks one level down
    folder = load(tmp_path / "x", cache_dir=tmp_path / "cache")
    assert torch.equal(folder.images, real_data.images) and torch.equal(folder.counts, real_data.counts)
    assert folder.names == real_data.names


def test_real_course_split(real_data):
    train, test = course_split(real_data)
    assert len(train) == 9000 and len(test) == 1000
    assert train.names == real_data.names[:9000] and test.names == real_data.names[9000:]
    assert torch.equal(torch.cat([train.images, test.images]), real_data.images)
    assert torch.equal(torch.cat([train.counts, test.counts]), real_data.counts)


def test_course_split_needs_more_than_train_size(small_folder):
    with pytest.raises(DataError, match="9000"):
        course_split(load(small_folder))


def test_inner_split(real_data):
    train, _ = course_split(real_data)
    a_tr, a_va = inner_split(train, 1000, seed=0)
    assert len(a_tr) == 8000 and len(a_va) == 1000
    assert set(a_tr.names).isdisjoint(a_va.names) and set(a_tr.names) | set(a_va.names) == set(train.names)
    position = {n: i for i, n in enumerate(train.names)}
    for part in (a_tr, a_va):  # order of the source kept inside each part, rows stay with their labels
        idx = [position[n] for n in part.names]
        assert idx == sorted(idx)
        assert torch.equal(part.counts, train.counts[idx]) and torch.equal(part.images, train.images[idx])
    b_tr, b_va = inner_split(train, 1000, seed=0)
    assert b_va.names == a_va.names and b_tr.names == a_tr.names
    _, c_va = inner_split(train, 1000, seed=1)
    assert c_va.names != a_va.names


@pytest.mark.parametrize("size", [0, -1, 12])
def test_inner_split_bad_size(small_folder, size):
    with pytest.raises(DataError):
        inner_split(load(small_folder), size, seed=0)


# ---------------------------------------------------------------- class encoding


def test_encode_decode_round_trip_all_classes():
    classes = torch.arange(135)
    counts = decode(classes)
    assert_valid_labels([str(i) for i in range(135)], counts)
    assert torch.equal(encode(counts), classes)
    assert [my_class(r) for r in counts.tolist()] == list(range(135))
    # every (pair, lower count 1..9) appears exactly once
    seen = {(tuple(k for k in range(6) if r[k]), r[next(k for k in range(6) if r[k])]) for r in counts.tolist()}
    assert len(seen) == 135


def test_pair_of():
    classes = torch.arange(135)
    pairs = pair_of(classes)
    assert pairs.min() == 0 and pairs.max() == 14
    for c, p in zip(classes.tolist(), pairs.tolist(), strict=True):
        kinds = tuple(k for k, v in enumerate(decode(torch.tensor([c]))[0].tolist()) if v)
        assert MY_PAIRS[p] == kinds
    # the split of the ten shapes does not change the pair
    a = torch.tensor([[3, 7, 0, 0, 0, 0], [8, 2, 0, 0, 0, 0], [0, 0, 0, 0, 1, 9]])
    assert pair_of(encode(a)).tolist() == [0, 0, 14]


# ---------------------------------------------------------------- cache


def test_folder_cache_invalidated_by_changed_labels(small_folder, tmp_path):
    cache = tmp_path / "cache"
    first = load(small_folder, cache_dir=cache)
    assert len(list(cache.glob("gsn-*.pt"))) == 1
    lines = (small_folder / "labels.csv").read_text().splitlines()
    name, *row = lines[1].split(",")
    swapped = [row[k] for k in (1, 0, 3, 2, 5, 4)]  # same size, different labels
    assert swapped != row
    lines[1] = ",".join([name, *swapped])
    (small_folder / "labels.csv").write_text("\n".join(lines) + "\n")
    second = load(small_folder, cache_dir=cache)
    assert second.counts[0].tolist() == [int(v) for v in swapped]
    assert torch.equal(second.counts[1:], first.counts[1:])


def test_folder_cache_invalidated_by_changed_image(small_folder, tmp_path):
    cache = tmp_path / "cache"
    first = load(small_folder, cache_dir=cache)
    shutil.copy(small_folder / "img_00001.png", small_folder / "img_00000.png")
    second = load(small_folder, cache_dir=cache)
    assert torch.equal(second.images[0], first.images[1])


def test_zip_cache_keyed_by_content(small_folder, tmp_path, monkeypatch):
    cache = tmp_path / "cache"
    zpath = zip_folder(small_folder, tmp_path / "d.zip")
    first = load(zpath, cache_dir=cache)
    # Same content written again (new mtime): still served from the cache.
    zip_folder(small_folder, tmp_path / "copy.zip")
    os.replace(tmp_path / "copy.zip", zpath)
    real_read = shapes.read_layout
    monkeypatch.setattr(shapes, "read_layout", lambda p: pytest.fail("decoded again"))
    assert torch.equal(load(zpath, cache_dir=cache).images, first.images)
    # Different content: decoded again, and the new labels are seen.
    monkeypatch.setattr(shapes, "read_layout", real_read)
    lines = (small_folder / "labels.csv").read_text().splitlines()
    (small_folder / "labels.csv").write_text("\n".join(lines[:1] + lines[2:]) + "\n")  # drop row 1
    zpath.unlink()
    zip_folder(small_folder, zpath)
    second = load(zpath, cache_dir=cache)
    assert len(second) == len(first) - 1 and second.names == first.names[1:]
    assert len(list(cache.glob("gsn-*.pt"))) == 2


def test_corrupted_cache_falls_back_to_decoding(small_folder, tmp_path):
    cache = tmp_path / "cache"
    first = load(small_folder, cache_dir=cache)
    (cache_file,) = cache.glob("gsn-*.pt")
    cache_file.write_bytes(cache_file.read_bytes()[:100])  # truncated
    again = load(small_folder, cache_dir=cache)
    assert torch.equal(again.images, first.images) and again.names == first.names
    blob = torch.load(cache_file, weights_only=True)  # rewritten whole
    assert torch.equal(blob["images"], first.images)


def test_full_disk_skips_the_cache_and_leaves_no_temp_file(small_folder, tmp_path, monkeypatch):
    # A full disk makes torch.save raise RuntimeError ("file write failed"), not OSError: seen in CI.
    def full_disk(obj, f, *args, **kwargs):
        f.write(b"half a cache")
        raise RuntimeError("[enforce fail at inline_container.cc] . PytorchStreamWriter failed writing file")

    expected = load(small_folder, cache_dir=tmp_path / "ok")
    monkeypatch.setattr(torch, "save", full_disk)
    got = load(small_folder, cache_dir=tmp_path / "full")
    assert torch.equal(got.images, expected.images) and got.names == expected.names
    assert os.listdir(tmp_path / "full") == []  # neither a cache nor its temp file


def test_cache_dir_from_environment(small_folder, tmp_path, monkeypatch):
    monkeypatch.setenv("VISION_HPSEARCH_CACHE", str(tmp_path / "env-cache"))
    load(small_folder)
    assert len(list((tmp_path / "env-cache").glob("gsn-*.pt"))) == 1


# ---------------------------------------------------------------- download


def test_download_from_file_url(real_zip, tmp_path, monkeypatch):
    dest = download(cache_dir=tmp_path / "c", url=real_zip.resolve().as_uri())
    assert dest == tmp_path / "c" / "data_gsn.zip"
    assert os.listdir(tmp_path / "c") == ["data_gsn.zip"]  # no temp file left behind
    assert hashlib.sha256(dest.read_bytes()).hexdigest() == shapes.SHA256
    # Already there and verified: no second download.
    monkeypatch.setattr(shapes.urllib.request, "urlretrieve", lambda *a: pytest.fail("downloaded again"))
    assert download(cache_dir=tmp_path / "c", url=real_zip.resolve().as_uri()) == dest


def test_download_wrong_checksum_keeps_nothing(real_zip, tmp_path):
    with pytest.raises(DataError, match="checksum"):
        download(cache_dir=tmp_path / "c", url=real_zip.resolve().as_uri(), sha256="0" * 64)
    assert os.listdir(tmp_path / "c") == []


def test_download_non_zip_keeps_nothing(tmp_path):
    fake = tmp_path / "fake.zip"
    fake.write_bytes(b"<html>not found</html>")
    sha = hashlib.sha256(fake.read_bytes()).hexdigest()  # the checksum matches: only the format is wrong
    with pytest.raises(DataError):
        download(cache_dir=tmp_path / "c", url=fake.as_uri(), sha256=sha)
    assert os.listdir(tmp_path / "c") == []


def test_download_unreachable(tmp_path):
    with pytest.raises(DataError, match="could not download"):
        download(cache_dir=tmp_path / "c", url=(tmp_path / "nope.zip").as_uri())
    assert os.listdir(tmp_path / "c") == []


# ---------------------------------------------------------------- bad input -> DataError naming the file


def edit_row(folder: Path, line: int, text: str) -> None:
    lines = (folder / "labels.csv").read_text().splitlines()
    lines[line - 1] = text
    (folder / "labels.csv").write_text("\n".join(lines) + "\n")


def raises_naming(path: Path, *parts: str):
    with pytest.raises(DataError) as info:
        load(path)
    message = str(info.value)
    assert str(path.resolve()) in message, message
    for p in parts:
        assert p in message, message
    return message


def test_missing_directory(tmp_path):
    raises_naming(tmp_path / "nowhere", "no such file")


def test_directory_without_labels(small_folder):
    (small_folder / "labels.csv").unlink()
    raises_naming(small_folder, "labels.csv")


LABEL_CASES = {
    "wrong header": (1, "name,squares,circles,up,right,down"),
    "too few columns": (3, "img_00001.png,0,0,5,5,0"),
    "too many columns": (3, "img_00001.png,0,0,5,5,0,0,0"),
    "not an integer": (3, "img_00001.png,0,0,5.5,4.5,0,0"),
    "not a number": (3, "img_00001.png,0,0,five,5,0,0"),
    "negative count": (3, "img_00001.png,-2,12,0,0,0,0"),
    "one kind": (3, "img_00001.png,0,10,0,0,0,0"),
    "three kinds": (3, "img_00001.png,2,3,5,0,0,0"),
    "sum not 10": (3, "img_00001.png,0,4,5,0,0,0"),
    "duplicated name": (3, "img_00000.png,0,4,6,0,0,0"),
    "path as name": (3, "../img_00001.png,0,4,6,0,0,0"),
    "nul in name": (3, "img\x0000001.png,0,4,6,0,0,0"),
    "quote not closed": (3, '"img_00001.png,0,4,6,0,0,0'),
    "bare carriage return": (3, "img_0\r0001.png,0,4,6,0,0,0"),
}


@pytest.mark.parametrize("case", LABEL_CASES)
def test_bad_labels_csv(small_folder, case):
    line, text = LABEL_CASES[case]
    edit_row(small_folder, line, text)
    message = raises_naming(small_folder, "labels.csv")
    if line > 1:
        assert f"line {line}" in message, message


def test_empty_labels_csv(small_folder):
    (small_folder / "labels.csv").write_text(HEADER + "\n")
    raises_naming(small_folder, "labels.csv")


def test_labels_not_utf8(small_folder):
    (small_folder / "labels.csv").write_bytes(HEADER.encode() + b"\n\xff\xfe,1\n")
    raises_naming(small_folder, "labels.csv")


def test_missing_png(small_folder):
    (small_folder / "img_00004.png").unlink()
    raises_naming(small_folder, "img_00004.png")


def test_truncated_png(small_folder):
    p = small_folder / "img_00004.png"
    p.write_bytes(p.read_bytes()[:40])
    raises_naming(small_folder, "img_00004.png")


def test_wrong_image_size(small_folder):
    Image.fromarray(np.zeros((27, 28), dtype=np.uint8)).save(small_folder / "img_00004.png")
    raises_naming(small_folder, "img_00004.png", "28x27")


def test_not_a_png(small_folder):
    (small_folder / "img_00004.png").write_text("name,squares\n")
    raises_naming(small_folder, "img_00004.png")


def test_png_name_is_a_directory(small_folder):
    (small_folder / "img_00004.png").unlink()
    (small_folder / "img_00004.png").mkdir()
    raises_naming(small_folder, "img_00004.png")


def test_zip_that_is_not_a_zip(tmp_path):
    (tmp_path / "data_gsn.zip").write_bytes(b"PK\x03\x04 but then nothing useful")
    raises_naming(tmp_path / "data_gsn.zip", "zip")


def test_zip_without_labels(small_folder, tmp_path):
    (small_folder / "labels.csv").unlink()
    raises_naming(zip_folder(small_folder, tmp_path / "d.zip"), "labels.csv")


def test_zip_missing_png_names_entry(small_folder, tmp_path):
    (small_folder / "img_00004.png").unlink()
    raises_naming(zip_folder(small_folder, tmp_path / "d.zip"), "img_00004.png")


def test_grey_and_rgba_pngs_decode_alike(small_folder):
    # The course files are RGBA (R=G=B); a grey re-save of the same pixels must load identically.
    before = load(small_folder).images
    with Image.open(small_folder / "img_00002.png") as im:
        im.convert("L").save(small_folder / "img_00002.png")
    assert torch.equal(load(small_folder).images, before)


# ---------------------------------------------------------------- property tests


@st.composite
def valid_counts(draw) -> list[str]:
    i, j = draw(st.lists(st.integers(0, 5), min_size=2, max_size=2, unique=True))
    n = draw(st.integers(1, 9))
    row = [0] * 6
    row[i], row[j] = n, 10 - n
    return [str(v) for v in row]


ODD_VALUE = st.one_of(st.integers(-3, 12).map(str), st.text(max_size=3),
                      st.sampled_from(["", " 3", "3 ", "1.5", "nan", "1e1", "+4", "1_0", "\u0663", '"5"']))
COUNTS = st.one_of(valid_counts(), valid_counts(), valid_counts(), st.lists(ODD_VALUE, min_size=0, max_size=8))
LINE_END = st.sampled_from(["\n", "\r\n", "\r"])


def labels_text(draw, names, unique: bool = False, max_rows: int = 5) -> str:
    """A labels.csv text, valid often enough that both outcomes are exercised."""
    header = draw(st.one_of(st.just(HEADER), st.just(HEADER), st.just(HEADER.replace(",", " , ")),
                            st.text(max_size=20)))
    rows = draw(st.lists(st.tuples(names, COUNTS), min_size=int(unique), max_size=max_rows,
                         unique_by=(lambda r: r[0]) if unique else None))
    end = draw(LINE_END)
    body = [",".join([n, *c]) for n, c in rows]
    if draw(st.integers(0, 3)) == 0:
        body.insert(draw(st.integers(0, len(body))), draw(st.text(max_size=30)))  # a junk line
    return end.join([header, *body]) + draw(st.sampled_from(["", end]))


@st.composite
def any_labels(draw) -> str:
    names = st.one_of(st.from_regex(r"img_\d{5}\.png", fullmatch=True), st.text(max_size=8))
    return labels_text(draw, names)


@settings(max_examples=300, deadline=None)
@given(any_labels())
def test_parse_labels_accepts_valid_or_raises_data_error(text):
    try:
        names, counts = _parse_labels(text, "labels.csv")
    except DataError as e:
        assert "labels.csv" in str(e)
        return
    event("accepted")
    assert_valid_labels(names, counts)


@settings(max_examples=100, deadline=None)
@given(st.text(max_size=200))
def test_parse_labels_arbitrary_text(text):
    try:
        names, counts = _parse_labels(text, "labels.csv")
    except DataError:
        return
    event("accepted")
    assert_valid_labels(names, counts)


def test_parse_labels_line_endings_and_quotes():
    rows = ["img_00000.png,0,0,4,0,6,0", '"img_00001.png",0,0,0,5,0,5']
    for end in ("\n", "\r\n", "\r"):
        names, counts = _parse_labels(end.join([HEADER, *rows]) + end, "labels.csv")
        assert names == ["img_00000.png", "img_00001.png"]
        assert counts.tolist() == [[0, 0, 4, 0, 6, 0], [0, 0, 0, 5, 0, 5]]


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_load_accepts_valid_or_raises_data_error(small_folder, data):
    real_names = sorted(p.name for p in small_folder.glob("*.png"))
    names = st.one_of(*[st.sampled_from(real_names)] * 3, st.text(max_size=6))
    text = data.draw(st.composite(lambda draw: labels_text(draw, names, unique=True, max_rows=3))())
    (small_folder / "labels.csv").write_bytes(text.encode("utf-8", "surrogatepass"))
    with tempfile.TemporaryDirectory() as cache:  # fresh cache: each example is decoded for real
        try:
            d = load(small_folder, cache_dir=Path(cache))
        except DataError as e:
            assert str(small_folder.resolve()) in str(e)
            return
    event("accepted")
    assert_valid_labels(d.names, d.counts)
    assert set(d.names) <= set(real_names)
    assert d.images.shape == (len(d), 1, 28, 28) and d.images.dtype == torch.uint8
    assert set(torch.unique(d.images).tolist()) <= {0, 255}
