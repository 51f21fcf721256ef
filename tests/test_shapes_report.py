"""search.experiments.shapes_report: the helpers against hand-computed values, and diagnose's
figures, links and numbers for a real (untrained) ShapesNet and for stub models of known accuracy."""

from __future__ import annotations

import math
import re
from pathlib import Path

import pytest
import torch
from matplotlib.image import imread
from torch import nn

from datasets import shapes
from models.shapes import ShapesNet
from search.experiments import shapes_report as report
from search.experiments.shapes import DEFAULTS, ShapesTask
from search.experiments.shapes_task import symmetry_average
from search.loop import Split
from search.plots import DPI

SETTINGS = ("cls", "cnt", "multitask")
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
LINK = re.compile(r"!\[[^\]]*\]\(([^)]+)\)")


def make_split(classes: list[int] | torch.Tensor, seed: int = 0) -> Split:
    """Counts of the given classes; random {0, 255} images (the stubs ignore them, ShapesNet does not)."""
    classes = torch.as_tensor(classes)
    g = torch.Generator().manual_seed(seed)
    images = (torch.randint(0, 2, (len(classes), 1, 28, 28), generator=g) * 255).to(torch.uint8)
    return Split(images, shapes.decode(classes))


class Stub(nn.Module):
    """Answers from the stored truth in call order (diagnose feeds the split in order); on the
    indices in `wrong` it predicts the class 9 further on, i.e. the next pair of kinds."""

    def __init__(self, counts: torch.Tensor, wrong: tuple[int, ...] = ()):
        super().__init__()
        self.counts, self.wrong, self.pos = counts, set(wrong), 0
        self.seen: list[tuple[bool, bool]] = []  # (training, grad enabled) at each call

    def forward(self, x):
        self.seen.append((self.training, torch.is_grad_enabled()))
        idx = list(range(self.pos, self.pos + len(x)))
        self.pos += len(x)
        cls = shapes.encode(self.counts[idx])
        cls = torch.where(torch.tensor([i in self.wrong for i in idx]), (cls + 9) % shapes.NUM_CLASSES, cls)
        log_probs = torch.full((len(x), shapes.NUM_CLASSES), -30.0)
        log_probs[torch.arange(len(x)), cls] = 0.0
        return log_probs, shapes.decode(cls).float()


def number(md: str, label: str) -> float:
    return float(re.search(rf"{label}\*\*([0-9.]+)\*\*", md).group(1))


def check_links(md: str, fig_dir: Path) -> dict[str, tuple[int, ...]]:
    """Every linked figure exists under fig_dir and is a readable PNG; returns name -> array shape."""
    shapes_seen = {}
    for target in LINK.findall(md):
        folder, name = target.split("/")
        assert folder == fig_dir.name
        path = fig_dir / name
        assert path.read_bytes()[:8] == PNG_SIGNATURE
        shapes_seen[name] = imread(path).shape
    return shapes_seen


def pixels(size: tuple[float, float]) -> tuple[int, int, int]:
    width, height = size
    return round(height * DPI), round(width * DPI), 4


# ---------------------------------------------------------------- pure helpers


def test_pair_confusion_hand_built():
    true = torch.tensor([0, 9, 9, 130, 8])  # pairs 0, 1, 1, 14, 0
    pred = torch.tensor([8, 0, 18, 130, 9])  # pairs 0, 0, 2, 14, 1
    conf = report.pair_confusion(true, pred)
    assert conf.shape == (15, 15) and int(conf.sum()) == 5
    expected = torch.zeros(15, 15, dtype=torch.long)
    for i, j in ((0, 0), (1, 0), (1, 2), (14, 14), (0, 1)):
        expected[i, j] += 1
    assert torch.equal(conf, expected)


def test_split_confusion_only_counts_images_with_the_right_pair():
    true = torch.tensor([0, 3, 3, 9, 130])  # lower counts 1, 4, 4 | pair 1 | 5
    pred = torch.tensor([2, 3, 8, 0, 130])  # 3, 4, 9 | wrong pair | 5
    conf = report.split_confusion(true, pred)
    assert int(conf.sum()) == 4  # the wrong-pair image is left out
    assert conf[0, 2] == 1 and conf[3, 3] == 1 and conf[3, 8] == 1 and conf[4, 4] == 1


def test_per_kind_errors_hand_computed():
    true = torch.tensor([[4, 6, 0, 0, 0, 0], [2, 0, 8, 0, 0, 0]])
    pred = torch.tensor([[5.0, 6, 0, 0, 0, 0], [-1, 0, 8, 0, 0, 0.5]])
    errors = report.per_kind_errors(pred, true)
    assert list(errors) == list(shapes.KINDS)
    assert errors["squares"]["rmse"] == pytest.approx(math.sqrt((1 + 9) / 2))  # errors +1, -3
    assert errors["squares"]["mae"] == pytest.approx(2.0)
    assert errors["left"]["rmse"] == pytest.approx(math.sqrt(0.25 / 2)) and errors["left"]["mae"] == 0.25
    assert errors["circles"] == {"rmse": 0.0, "mae": 0.0}


def test_top_confusions_sorted_with_shares_and_no_diagonal():
    conf = torch.zeros(15, 15, dtype=torch.long)
    conf[0, 0], conf[0, 3], conf[2, 1], conf[2, 2], conf[5, 4] = 50, 2, 6, 2, 2
    assert report.top_confusions(conf) == [(2, 1, 6, 0.75), (0, 3, 2, 2 / 52), (5, 4, 2, 1.0)]
    assert report.top_confusions(conf, k=1) == [(2, 1, 6, 0.75)]
    assert report.top_confusions(torch.eye(15, dtype=torch.long)) == []


def test_short_counts():
    assert report.short_counts(torch.tensor([4, 6, 0, 0, 0, 0])) == "sq4 ci6"
    assert report.short_counts(torch.tensor([0.0, 0, 1.2, 0, 0, 8.8])) == "up1 le9"


# ---------------------------------------------------------------- diagnose


@pytest.mark.parametrize("setting, evaluation", [*((s, {}) for s in SETTINGS),
                                                ("multitask", {"tta": 1, "joint_decode": 2.0})])
def test_diagnose_links_valid_pngs_and_reports_the_models_metrics(tmp_path, setting, evaluation):
    test = make_split(torch.arange(0, 135, 5))  # 27 images, every pair
    config = {**DEFAULTS, "setting": setting, **evaluation}
    torch.manual_seed(0)
    model = ShapesNet(dropout=0.0, hidden=0)
    md = report.diagnose(model, config, test, tmp_path / "figs")

    with torch.no_grad():  # the experiment's own metrics, computed apart from diagnose (tta averages 8 passes)
        outputs = symmetry_average(model, test.x.float() / 255) if evaluation else model(test.x.float() / 255)
        expected = ShapesTask().metrics(outputs, test.y, config)
    assert number(md, r"Accuracy \(135 classes\) ") == pytest.approx(expected["acc"], abs=5e-5)
    assert number(md, r"pair accuracy \(right two kinds\) ") == pytest.approx(expected["pair_acc"], abs=5e-5)
    assert number(md, "count RMSE ") == pytest.approx(expected["rmse"], abs=5e-5)
    assert number(md, "MAE ") == pytest.approx(expected["mae"], abs=5e-5)
    for kind in shapes.KINDS:
        assert f"| {kind} | {expected[f'rmse_{kind}']:.4f} | {expected[f'mae_{kind}']:.4f} |" in md

    n_wrong = round((1 - expected["acc"]) * len(test))
    assert n_wrong > 0  # an untrained net: the grid must be there
    sizes = check_links(md, tmp_path / "figs")
    assert sizes == {"confusion_pairs.png": pixels(report.CONFUSION_SIZE),
                     "per_kind_error.png": pixels(report.KIND_ERROR_SIZE),
                     "misclassified.png": pixels(report.grid_size(min(n_wrong, 24)))}
    assert f"The first {min(n_wrong, 24)} of {n_wrong} misclassified" in md
    assert not md.startswith("# ") and "\n# " not in md and md.startswith("### ")


@pytest.mark.parametrize("setting", SETTINGS)
def test_perfect_model_has_no_misclassified_figure(tmp_path, setting):
    test = make_split([0, 17, 40, 77, 101, 134])
    fig_dir = tmp_path / "figs"
    fig_dir.mkdir()
    (fig_dir / "misclassified.png").write_bytes(b"stale")  # from an earlier, worse model
    md = report.diagnose(Stub(test.y), {**DEFAULTS, "setting": setting}, test, fig_dir)
    assert "**1.0000** (6 / 6)" in md and "count RMSE **0.0000**, MAE **0.0000**" in md
    assert "No test image is misclassified." in md and "No image has its pair of kinds wrong." in md
    assert "misclassified.png" not in md and not (fig_dir / "misclassified.png").exists()
    assert set(check_links(md, fig_dir)) == {"confusion_pairs.png", "per_kind_error.png"}


def test_known_errors_give_the_confusion_table_and_grid(tmp_path):
    test = make_split([0] * 4 + [9] * 4 + [130] * 2)  # pairs squares+circles, squares+up, down+left
    md = report.diagnose(Stub(test.y, wrong=(0, 1, 2, 4)), {**DEFAULTS, "setting": "cls"}, test, tmp_path / "f")
    assert "Accuracy (135 classes) **0.6000** (6 / 10)" in md
    table = [line for line in md.splitlines() if "+" in line and line.startswith("| ")]
    assert table == ["| squares+circles | squares+up | 3 | 75.0% |", "| squares+up | squares+right | 1 | 25.0% |"]
    assert "The first 4 of 4 misclassified" in md
    assert check_links(md, tmp_path / "f")["misclassified.png"] == pixels(report.grid_size(4))


def test_diagnose_is_deterministic_and_batching_does_not_matter(tmp_path, monkeypatch):
    test = make_split(torch.arange(3, 135, 11), seed=5)
    config = {**DEFAULTS, "setting": "multitask"}
    torch.manual_seed(1)
    model = ShapesNet(dropout=0.0, hidden=0)
    first = report.diagnose(model, config, test, tmp_path / "a" / "figs")
    monkeypatch.setattr(report, "BATCH", 5)  # 13 images in batches of 5, 5, 3
    second = report.diagnose(model, config, test, tmp_path / "b" / "figs")
    assert first == second
    names = sorted(p.name for p in (tmp_path / "a" / "figs").iterdir())
    assert names == ["confusion_pairs.png", "misclassified.png", "per_kind_error.png"]
    for name in names:
        assert (tmp_path / "a" / "figs" / name).read_bytes() == (tmp_path / "b" / "figs" / name).read_bytes()


def test_diagnose_predicts_in_eval_mode_without_grad_and_restores_train_mode(tmp_path):
    test = make_split([5, 50, 100])
    model = Stub(test.y).train()
    md = report.diagnose(model, {**DEFAULTS, "setting": "multitask"}, test, tmp_path / "figs")
    assert model.seen == [(False, False)]  # one batch, in eval mode, with autograd off
    assert model.training and "**1.0000** (3 / 3)" in md
