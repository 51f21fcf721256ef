"""Fashion-MNIST (seed 003 part 1): the seed's small conv net, 10 classes of clothing, 28x28 grey.

The seed's setup: batch 500, an 80/20 train/validation split; its optimiser and rate are not
reported (Adam 1e-3 here, the course's default). The test split (10,000 images) is held out.
"""

from __future__ import annotations

from functools import partial

import torch

from datasets import fashion_mnist
from models.fashion import FashionNet
from search.experiment import Budget, Choice, Data, DataOptions, Experiment, Float
from search.experiments import classify
from search.experiments.classify import ImageClassifierTask, diagnose
from search.loop import Split

TASK = ImageClassifierTask(lambda config: FashionNet(dropout=config["dropout"]), max_shift=2)  # pixels


def load(options: DataOptions) -> Data:
    train_x, train_y, test_x, test_y = fashion_mnist.load(options.data_dir, options.download)
    order = torch.randperm(len(train_x), generator=torch.Generator().manual_seed(options.split_seed))
    n_val = len(train_x) // 5  # the seed's 80/20 split
    val_i, train_i = order[:n_val], order[n_val:]
    info = {"source": str(options.data_dir or "cache"), "train": len(train_i), "val": n_val,
            "full_train": len(train_x), "test": len(test_x)}
    return Data(Split(train_x[train_i], train_y[train_i]), Split(train_x[val_i], train_y[val_i]),
                Split(train_x, train_y), Split(test_x, test_y), info)


DEFAULTS = {
    "dropout": 0.0, "p_hflip": 0.0, "p_translate": 0.0,
    "optimizer": "adam", "lr": 1e-3, "momentum": 0.9, "weight_decay": 0.0, "batch_size": 500,
    "epochs": 20, "patience": 5, "seed": 1, "precision": "auto",
    "schedule": "constant",  # the seed's own runs: a constant learning rate
}

SPACE = {
    "lr": Float(1e-4, 1e-2, log=True),
    "momentum": Float(0.8, 0.99),
    "dropout": Float(0.0, 0.6),
    "batch_size": Choice((64, 128, 256, 500)),
    "weight_decay": Float(1e-6, 1e-2, log=True),
    "p_hflip": Float(0.0, 0.8),
    "p_translate": Float(0.0, 0.8),
}

EXPERIMENT = Experiment(
    name="fashion-mnist",
    summary="Fashion-MNIST (seed 003): the seed's small conv net, 10 clothing classes",
    task=TASK, load=load, defaults=DEFAULTS, space=SPACE,
    limits=classify.LIMITS,
    objective="val_acc", mode="max",
    budget_cpu=Budget(trials=10, max_epochs=6, grace_epochs=2),
    budget_gpu=Budget(trials=60, max_epochs=30, grace_epochs=4),
    report_metrics=("test_acc",),
    diagnose=partial(diagnose, TASK, fashion_mnist.CLASSES, examples=True, filters=True, softmax_rows=0),
)
