"""The GSN shapes task for the shared loop: model, batch preparation and augmentation, loss, metrics.

Loss = NLL(class) + lambda_cnt * SmoothL1(counts) in the multitask setting; 'cls' keeps only the
NLL, 'cnt' only the counting loss (its class is then read off the rounded counts). Its own module so
that the experiment's entry (shapes.py) and its report section (shapes_report.py) both import it.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from typing import Any

import torch
import torch.nn.functional as F

from datasets import shapes
from datasets.augment import (
    N_GROUP,
    AugmentProbs,
    apply_group_element,
    augment_batch,
    inverse_element,
    transform_counts,
)
from models.shapes import NUM_CLASSES, ShapesNet
from search.loop import Split

SETTINGS = ("multitask", "cls", "cnt")


def counts_to_class(pred: torch.Tensor) -> torch.Tensor:
    """Predicted real-valued counts -> nearest valid class: the two largest kinds, the lower
    kind's count rounded into 1..9, the other one 10 minus it."""
    top2 = pred.topk(2, dim=1).indices.sort(dim=1).values
    n_lo = pred.gather(1, top2[:, :1]).round().clamp(1, 9).long()
    counts = torch.zeros_like(pred, dtype=torch.long)
    counts.scatter_(1, top2[:, :1], n_lo)
    counts.scatter_(1, top2[:, 1:], 10 - n_lo)
    return shapes.encode(counts)


def macro_f1(pred: torch.Tensor, true: torch.Tensor, num_classes: int) -> float:
    """Macro F1 over the classes that occur in the truth or the predictions (as scikit-learn)."""
    tp = torch.bincount(true[pred == true], minlength=num_classes).double()
    n_pred = torch.bincount(pred, minlength=num_classes).double()
    n_true = torch.bincount(true, minlength=num_classes).double()
    seen = (n_pred + n_true) > 0
    return (2 * tp[seen] / (n_pred[seen] + n_true[seen])).mean().item()


@functools.lru_cache(maxsize=16)
def class_counts(device: torch.device) -> torch.Tensor:
    """(135, 6) float: the counts each class stands for, on `device` (copied once, not per batch)."""
    return shapes.decode(torch.arange(NUM_CLASSES, device=device)).float()


@functools.lru_cache(maxsize=16)
def turned_classes(device: torch.device) -> torch.Tensor:
    """(8, 135) long: row g, column c is the class of an image of class c turned by g (made once per
    device, not per evaluated batch)."""
    classes = shapes.decode(torch.arange(NUM_CLASSES, device=device))
    return torch.stack([shapes.encode(transform_counts(classes, g)) for g in range(N_GROUP)])


def symmetry_average(model, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The model's outputs averaged over the 8 turns and mirrors of each image (test-time augmentation).
    Every symmetry maps a labelled image to another correctly labelled one, so each prediction is mapped
    back to the original's labels first: class c of the original is class T_g(c) of the turned image, and
    the turned image's counts are turned back by g's inverse. Log-probabilities are averaged (a
    geometric mean of the probabilities), then renormalised."""
    columns = turned_classes(x.device)
    log_probs, counts = 0.0, 0.0
    for g in range(N_GROUP):
        lp, cn = model(apply_group_element(x, torch.full((x.shape[0],), g, device=x.device)))
        log_probs = log_probs + lp[:, columns[g]]
        counts = counts + transform_counts(cn, inverse_element(g))
    return torch.log_softmax(log_probs / N_GROUP, dim=1), counts / N_GROUP


def joint_decision(log_probs: torch.Tensor, counts: torch.Tensor, weight: float) -> torch.Tensor:
    """The class that best agrees with both heads: argmax over c of log p(c) - weight * |counts - counts(c)|^2.
    weight 0 is the class head alone; a large one reads the class off the counting head."""
    if weight == 0:
        return log_probs.argmax(dim=1)
    distance = (counts[:, None, :] - class_counts(counts.device)[None]).pow(2).sum(dim=2)  # (N, 135), counts^2
    return (log_probs - weight * distance).argmax(dim=1)


def blended_counts(log_probs: torch.Tensor, counts: torch.Tensor, weight: float) -> torch.Tensor:
    """The counts read: (1 - weight) x the counting head's + weight x the counts the class head expects,
    sum over c of p(c) counts(c). Every class fixes its counts, so a class head that knows the pair
    (per-pair accuracy ~0.98) puts exact zeros on the four absent kinds and spreads the split over its
    neighbours; the posterior mean is the squared-error-optimal read of a calibrated head. weight 0 is
    the counting head alone (as the seeds read it)."""
    if weight == 0:
        return counts
    expected = log_probs.exp() @ class_counts(log_probs.device)  # (N, 6) counts
    return torch.lerp(counts, expected, weight)


def class_loss(log_probs: torch.Tensor, target: torch.Tensor, smoothing: float) -> torch.Tensor:
    """NLL of the class head; with label smoothing s the target puts 1 - s on the true class and spreads
    s evenly over all 135 (Szegedy et al. 2016), which keeps the 12.8M-weight layer from growing
    over-confident on 9,000 images."""
    nll = F.nll_loss(log_probs, target)
    return nll if not smoothing else (1 - smoothing) * nll - smoothing * log_probs.mean(dim=1).mean()


# Generated images added to training draw from the generator's stream GENERATED_SEED + the config's seed,
# never seed 0's: that is the offline default data set, whose held-out images the runs are scored on.
GENERATED_SEED = 1_000_000


class ShapesTask:
    def build_model(self, config: Mapping[str, Any]) -> ShapesNet:
        return ShapesNet(dropout=config["dropout"], hidden=config["hidden"])

    def training_pool(self, train: Split, config: Mapping[str, Any]) -> Split:
        """The real training images plus `generated` times as many from the project's generator (the
        loop still draws len(train) images an epoch, so the pool costs no extra time). The generator
        is faithful: on the real data a model trained on generated images alone reaches 0.94 of the
        real-trained one's top-1 (README: what they add on the real data, per budget)."""
        n = round(config.get("generated", 0.0) * len(train))
        if n == 0:
            return train
        x, y = shapes.generated_tensors(n, GENERATED_SEED + config["seed"])
        return Split(torch.cat([train.x, x.to(train.x.device)]), torch.cat([train.y, y.to(train.y.device)]))

    def prepare(self, x, y, config, generator):
        x = x.float().mul_(1 / 255)  # stored as uint8 {0, 255}
        if generator is not None:
            x, y = augment_batch(x, y, AugmentProbs.from_config(config), generator)
        return x, y

    def eval_forward(self, model, x, config):
        """Evaluation's forward pass: averaged over the image's symmetries where the config says tta=1."""
        return symmetry_average(model, x) if config.get("tta", 0) else model(x)

    def loss(self, outputs, y, config):
        log_probs, counts = outputs
        if config["setting"] == "cnt":
            return F.smooth_l1_loss(counts, y.float())
        nll = class_loss(log_probs, shapes.encode(y), config.get("label_smoothing", 0.0))
        if config["setting"] == "cls":
            return nll
        return nll + config["lambda_cnt"] * F.smooth_l1_loss(counts, y.float())

    def predictions(self, outputs, config) -> tuple[torch.Tensor, torch.Tensor]:
        """(class, counts) the model predicts in this setting."""
        log_probs, counts = outputs
        if config["setting"] == "cnt":
            return counts_to_class(counts), counts
        if config["setting"] == "cls":  # the counting head is untrained: read counts off the class
            pred = log_probs.argmax(dim=1)
            return pred, shapes.decode(pred).float()
        # the class agrees with the counting head's own counts (joint_decode), not with counts read off the class
        return (joint_decision(log_probs, counts, config.get("joint_decode", 0.0)),
                blended_counts(log_probs, counts, config.get("count_decode", 0.0)))

    def metrics(self, outputs, y, config):
        pred, counts = self.predictions(outputs, config)
        true = shapes.encode(y)
        err = counts - y.float()
        log_probs, pred_counts = outputs
        # What a scheduler ranks trials on (Experiment.rank_metric): the loss of the head this setting
        # trains, without lambda_cnt's weighting, so configs with other lambdas compare. Smooth where
        # top-1 over 135 classes is still near chance.
        rank_loss = (F.smooth_l1_loss(pred_counts, y.float()) if config["setting"] == "cnt"
                     else F.nll_loss(log_probs, true))
        out = {
            "rank_loss": rank_loss.item(),
            "acc": (pred == true).float().mean().item(),
            "f1": macro_f1(pred, true, shapes.NUM_CLASSES),
            "pair_acc": (shapes.pair_of(pred) == shapes.pair_of(true)).float().mean().item(),
            "rmse": err.pow(2).mean().sqrt().item(),
            "mae": err.abs().mean().item(),
        }
        rmse, mae = err.pow(2).mean(0).sqrt().tolist(), err.abs().mean(0).tolist()
        for k, kind in enumerate(shapes.KINDS):
            out[f"rmse_{kind}"], out[f"mae_{kind}"] = rmse[k], mae[k]
        return out
