"""GSN shapes: classify (pair of kinds, split) and count the six kinds of shapes in 28x28 images.

Loss = NLL(class) + lambda_cnt * SmoothL1(counts) in the multitask setting; 'cls' keeps only the
NLL, 'cnt' only the counting loss (its class is then read off the rounded counts).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
import torch.nn.functional as F

from datasets import shapes
from datasets.augment import AUGMENTATIONS, AugmentProbs, augment_batch
from models.shapes import ShapesNet
from search.experiment import (
    NON_NEGATIVE,
    PROBABILITY,
    Budget,
    Choice,
    Data,
    DataOptions,
    Experiment,
    Float,
    Limit,
)
from search.trainer import Split

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
        out = {
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


def load(options: DataOptions) -> Data:
    if options.data_dir is not None:
        data, source = shapes.load(options.data_dir), str(options.data_dir)
    elif options.download:
        path = shapes.download()
        data, source = shapes.load(path), str(path)
    else:
        data, source = shapes.generated(), "generated (datasets.shapes_generator, 10,000 images, seed 0)"
    held_out = max(1, len(data) // 10)  # the course split: 9,000 / 1,000
    full_train, test = data.subset(slice(0, len(data) - held_out)), data.subset(slice(len(data) - held_out, None))
    train, val = shapes.inner_split(full_train, val_size=max(1, len(full_train) // 9), seed=options.split_seed)
    if options.subset is not None:
        train, val = train.subset(slice(0, options.subset)), val.subset(slice(0, max(1, options.subset // 4)))
    as_split = lambda d: Split(d.images, d.counts)
    info = {"source": source, "train": len(train), "val": len(val), "full_train": len(full_train),
            "test": len(test)}
    return Data(as_split(train), as_split(val), as_split(full_train), as_split(test), info)


DEFAULTS = {
    # Seed 000's hand-tuned multitask model: Adam 1e-3, batch 64, dropout 0.5 in both heads,
    # lambda 6, all augmentations with the "problematic" photometric ones turned down.
    "setting": "multitask", "lambda_cnt": 6.0, "dropout": 0.5, "hidden": 0,
    "optimizer": "adam", "lr": 1e-3, "momentum": 0.9, "weight_decay": 0.0, "batch_size": 64,
    "p_hflip": 0.5, "p_vflip": 0.5, "p_rot90": 0.5, "p_brightness": 0.1, "p_noise": 0.1, "p_erase": 0.1,
    "epochs": 20, "patience": 5, "seed": 1, "precision": "auto",
}
assert {f"p_{a}" for a in AUGMENTATIONS} <= DEFAULTS.keys()

SPACE = {
    "dropout": Float(0.0, 0.7),
    "lambda_cnt": Float(0.01, 30.0, log=True),  # 0.01 is classification in all but name
    "lr": Float(1e-4, 1e-2, log=True),
    "momentum": Float(0.8, 0.99),
    "weight_decay": Float(1e-6, 1e-2, log=True),
    "optimizer": Choice(("adam", "sgd")),
    "batch_size": Choice((32, 64, 128, 256)),
    "hidden": Choice((0, 128)),
    **{f"p_{a}": Float(0.0, 0.8) for a in AUGMENTATIONS},
}

LIMITS = {"setting": Limit(choices=SETTINGS), "lambda_cnt": NON_NEGATIVE, "dropout": Limit(0.0, 1.0, high_open=True),
          "hidden": NON_NEGATIVE, **{f"p_{a}": PROBABILITY for a in AUGMENTATIONS}}


def inactive(pinned: Mapping[str, Any]) -> set[str]:
    """lambda_cnt only weighs the two losses of the multitask setting."""
    return {"lambda_cnt"} if pinned.get("setting", "multitask") != "multitask" else set()


def diagnose(model, config, test, fig_dir):
    """The report's shapes section (confusions, per-kind errors, misclassified images)."""
    from search.experiments import shapes_report  # it imports this module: imported when used

    return shapes_report.diagnose(model, config, test, fig_dir)


EXPERIMENT = Experiment(
    name="shapes",
    summary="GSN shapes: classify and count geometric shapes (28x28, 135 classes, 6 counts)",
    task=ShapesTask(), load=load, defaults=DEFAULTS, space=SPACE, limits=LIMITS,
    objective="val_acc", mode="max",
    budget_cpu=Budget(trials=16, max_epochs=6, grace_epochs=2),  # search + retrain: about 12 min on 2 cores
    budget_gpu=Budget(trials=60, max_epochs=40, grace_epochs=5),
    inactive=inactive,
    report_metrics=("test_acc", "test_f1", "test_pair_acc", "test_rmse", "test_mae"),
    curve_metrics=("val_acc", "val_rmse"),
    diagnose=diagnose,
)
