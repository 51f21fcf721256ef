"""Evaluation options of the shapes task: test-time averaging over the square's symmetries (tta) and
the class decision that agrees with the counting head (joint_decode); and label smoothing of the class loss."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from datasets import shapes
from datasets.augment import N_GROUP, apply_group_element, inverse_element, transform_counts
from datasets.shapes_generator import generate
from models.shapes import ShapesNet
from search.config import UserError
from search.experiments.shapes import DEFAULTS, EXPERIMENT, ShapesTask
from search.experiments.shapes_task import class_counts, joint_decision, symmetry_average
from search.loop import Split, evaluate


def images(n: int = 12, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    x, counts = generate(n, seed)
    return x[:, None].float() / 255, counts


class Lookup(nn.Module):
    """Knows every image under every turn and mirror: answers the true class (log-probability 0 against
    -20 for the rest) and the true counts of an image it stored, whatever its orientation."""

    def __init__(self, x: torch.Tensor, counts: torch.Tensor):
        super().__init__()
        keys, labels = [], []
        for g in range(N_GROUP):
            keys.append(apply_group_element(x, torch.full((len(x),), g)))
            labels.append(transform_counts(counts, g))
        self.keys, self.labels = torch.cat(keys).flatten(1), torch.cat(labels)

    def forward(self, x):
        match = (x.flatten(1)[:, None] == self.keys[None]).all(dim=2).float().argmax(dim=1)
        counts = self.labels[match]
        log_probs = torch.full((len(x), shapes.NUM_CLASSES), -20.0)
        log_probs[torch.arange(len(x)), shapes.encode(counts)] = 0.0
        return torch.log_softmax(log_probs, dim=1), counts.float()


def test_inverse_element_undoes_each_symmetry():
    x, counts = images(4)
    for g in range(N_GROUP):
        back = torch.full((4,), inverse_element(g))
        there = apply_group_element(x, torch.full((4,), g))
        assert torch.equal(apply_group_element(there, back), x)
        assert torch.equal(transform_counts(transform_counts(counts, g), inverse_element(g)), counts)
    assert sorted(inverse_element(g) for g in range(N_GROUP)) == list(range(N_GROUP))


def test_a_model_right_in_every_orientation_stays_exactly_right_after_averaging():
    """Each of the 8 passes, mapped back to the original's labels, must name the same class and counts:
    a wrong mapping of a turned image's class or counts mixes in other classes and shifts the counts."""
    x, counts = images()
    model = Lookup(x, counts)
    log_probs, avg_counts = symmetry_average(model, x)
    plain_log_probs, _ = model(x)
    assert torch.equal(avg_counts, counts.float())
    assert torch.allclose(log_probs, plain_log_probs, atol=1e-5)
    assert torch.equal(log_probs.argmax(dim=1), shapes.encode(counts))


def test_averaged_outputs_follow_the_image_when_it_is_turned():
    """Averaging over the group makes any net equivariant: the turned image's outputs are the original's
    with classes and triangle counts turned alike."""
    x, _ = images(6)
    torch.manual_seed(0)
    model = ShapesNet(dropout=0.0).eval()
    with torch.no_grad():
        log_probs, counts = symmetry_average(model, x)
        classes = class_counts(x.device).long()
        for g in range(1, N_GROUP):
            turned_lp, turned_counts = symmetry_average(model, apply_group_element(x, torch.full((6,), g)))
            turned_class = shapes.encode(transform_counts(classes, g))  # column of original class c
            assert torch.allclose(turned_lp[:, turned_class], log_probs, atol=1e-4)
            assert torch.allclose(turned_counts, transform_counts(counts, g), atol=1e-4)
        assert torch.allclose(log_probs.exp().sum(dim=1), torch.ones(6), atol=1e-5)


def test_evaluation_averages_only_where_the_config_says():
    x, counts = images(10)
    split = Split((x * 255).to(torch.uint8), counts)
    torch.manual_seed(1)
    model = ShapesNet(dropout=0.0)
    task = ShapesTask()
    plain = evaluate(task, model, split, {**DEFAULTS}, "fp32")
    averaged = evaluate(task, model, split, {**DEFAULTS, "tta": 1}, "fp32")
    with torch.no_grad():
        expected = task.metrics(symmetry_average(model, x), counts, {**DEFAULTS, "tta": 1})
    assert averaged["val_rmse"] == pytest.approx(expected["rmse"], abs=1e-5)
    assert averaged["val_rank_loss"] == pytest.approx(expected["rank_loss"], abs=1e-5)
    assert averaged["val_rmse"] != pytest.approx(plain["val_rmse"], abs=1e-4)


def test_joint_decision_weighs_the_counting_head():
    lo = shapes.encode(torch.tensor([[3, 7, 0, 0, 0, 0]]))  # squares 3, circles 7
    hi = shapes.encode(torch.tensor([[4, 6, 0, 0, 0, 0]]))
    log_probs = torch.full((1, shapes.NUM_CLASSES), -10.0)
    log_probs[0, lo], log_probs[0, hi] = -0.5, -1.0  # the class head prefers 3 squares, a little
    counts = torch.tensor([[3.9, 6.1, 0, 0, 0, 0]])  # the counting head says 4
    assert joint_decision(log_probs, counts, 0.0).item() == lo.item()  # the seeds' rule: class head alone
    # weight w: 3 squares scores -0.5 - w * 2 * 0.81, 4 squares -1.0 - w * 2 * 0.01: 4 wins for w > 0.3125
    assert joint_decision(log_probs, counts, 0.3).item() == lo.item()
    assert joint_decision(log_probs, counts, 0.32).item() == hi.item()


def test_the_multitask_metrics_use_the_joint_decision():
    x, counts = images(30, seed=3)
    torch.manual_seed(2)
    model = ShapesNet(dropout=0.0).eval()
    task = ShapesTask()
    with torch.no_grad():
        outputs = model(x)
    for weight in (0.0, 0.5, 50.0):
        config = {**DEFAULTS, "joint_decode": weight}
        pred = joint_decision(*outputs, weight)
        assert task.metrics(outputs, counts, config)["acc"] == pytest.approx(
            (pred == shapes.encode(counts)).float().mean().item())


def test_counts_read_from_both_heads():
    """count_decode 0 reads the counting head (the seeds' way), 1 the counts the class head expects,
    in between a blend; the class decision never moves with it, and the metrics score the counts read."""
    from search.experiments.shapes_task import blended_counts, class_counts

    x, counts = images(30, seed=3)
    torch.manual_seed(2)
    model = ShapesNet(dropout=0.0).eval()
    task = ShapesTask()
    with torch.no_grad():
        log_probs, head = outputs = model(x)
    expected = log_probs.exp() @ class_counts(log_probs.device)
    assert torch.equal(blended_counts(log_probs, head, 0.0), head)
    assert torch.allclose(blended_counts(log_probs, head, 1.0), expected)
    assert torch.allclose(blended_counts(log_probs, head, 0.25), 0.75 * head + 0.25 * expected)
    assert torch.allclose(expected.sum(dim=1), torch.full((30,), 10.0))  # every class has 10 shapes
    for weight in (0.0, 0.5, 1.0):
        config = {**DEFAULTS, "count_decode": weight, "joint_decode": 0.5}
        pred, read = task.predictions(outputs, config)
        assert torch.equal(pred, joint_decision(log_probs, head, 0.5))  # the head's own counts decide the class
        err = blended_counts(log_probs, head, weight) - counts.float()
        assert task.metrics(outputs, counts, config)["rmse"] == pytest.approx(err.pow(2).mean().sqrt().item())


@pytest.mark.parametrize("key, bad", [("tta", 2), ("joint_decode", -0.1), ("count_decode", 1.5)])
def test_invalid_evaluation_options_are_refused(key, bad):
    with pytest.raises(UserError, match=key):
        EXPERIMENT.check({**DEFAULTS, key: bad})


def test_the_baseline_evaluates_as_the_seeds_did():
    assert DEFAULTS["tta"] == 0 and DEFAULTS["joint_decode"] == 0.0 and DEFAULTS["count_decode"] == 0.0
    assert "tta" not in EXPERIMENT.budget_cpu.searched and "joint_decode" not in EXPERIMENT.budget_cpu.searched


@pytest.mark.parametrize("smoothing", [0.0, 0.1, 0.3])
def test_label_smoothing_matches_torchs_cross_entropy(smoothing):
    from search.experiments.shapes_task import class_loss

    torch.manual_seed(0)
    log_probs = torch.log_softmax(torch.randn(16, shapes.NUM_CLASSES), dim=1)
    target = torch.randint(0, shapes.NUM_CLASSES, (16,))
    expected = torch.nn.functional.cross_entropy(log_probs, target, label_smoothing=smoothing)
    assert class_loss(log_probs, target, smoothing).item() == pytest.approx(expected.item(), rel=1e-6)
    counts = shapes.decode(target)
    config = {**DEFAULTS, "setting": "cls", "label_smoothing": smoothing}
    assert ShapesTask().loss((log_probs, counts.float()), counts, config).item() == pytest.approx(expected.item(),
                                                                                                 rel=1e-6)
