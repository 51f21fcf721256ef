"""The GSN shapes task for the shared loop: model, batch preparation and augmentation, loss, metrics.

Loss = NLL(class) + lambda_cnt * SmoothL1(counts) in the multitask setting; 'cls' keeps only the
NLL, 'cnt' only the counting loss (its class is then read off the rounded counts). Its own module so
that the experiment's entry (shapes.py) and its report section (shapes_report.py) both import it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
import torch.nn.functional as F

from datasets import shapes
from datasets.augment import AugmentProbs, augment_batch
from models.shapes import ShapesNet

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


class ShapesTask:
    def build_model(self, config: Mapping[str, Any]) -> ShapesNet:
        return ShapesNet(dropout=config["dropout"], hidden=config["hidden"])

    def prepare(self, x, y, config, generator):
        x = x.float().mul_(1 / 255)  # stored as uint8 {0, 255}
        if generator is not None:
            x, y = augment_batch(x, y, AugmentProbs.from_config(config), generator)
        return x, y

    def loss(self, outputs, y, config):
        log_probs, counts = outputs
        if config["setting"] == "cnt":
            return F.smooth_l1_loss(counts, y.float())
        nll = F.nll_loss(log_probs, shapes.encode(y))
        if config["setting"] == "cls":
            return nll
        return nll + config["lambda_cnt"] * F.smooth_l1_loss(counts, y.float())

    def predictions(self, outputs, config) -> tuple[torch.Tensor, torch.Tensor]:
        """(class, counts) the model predicts in this setting."""
        log_probs, counts = outputs
        if config["setting"] == "cnt":
            return counts_to_class(counts), counts
        pred = log_probs.argmax(dim=1)
        if config["setting"] == "cls":  # the counting head is untrained: read counts off the class
            return pred, shapes.decode(pred).float()
        return pred, counts

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
