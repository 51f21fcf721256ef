"""CIFAR-10 (seed 004): the seed's ConvNet (conv32-conv32-pool-conv64-conv64-pool-fc512, dropout
after each pool and the FC), SGD; normalised with the training split's per-channel statistics;
the last 1,000 training images validate, the 10,000 test images are held out.

The seed's own tuning by hand: lr 1e-3, momentum 0.9, no dropout -> ~70%; lr 0.01, momentum
0.85, dropout 0.55 -> 80.15% test. The second is the baseline here.
"""

from __future__ import annotations

from functools import partial

from datasets import cifar10
from models.cifar import CifarNet
from search.experiment import Budget, Choice, Data, DataOptions, Experiment, Float
from search.experiments import classify
from search.experiments.classify import ImageClassifierTask, diagnose
from search.loop import Split

TASK = ImageClassifierTask(lambda config: CifarNet(dropout=config["dropout"]), max_shift=4)  # pixels: pad-4 crops
VAL = 1000  # the seed's validation split: the last 1,000 training images


def load(options: DataOptions) -> Data:
    train_x, train_y, test_x, test_y = cifar10.load(options.data_dir, options.download)
    n = len(train_x) - min(VAL, len(train_x) // 5)  # a tiny copy (tests) keeps 4/5 for training
    info = {"source": str(options.data_dir or "cache"), "train": n, "val": len(train_x) - n, "full_train": len(train_x),
            "test": len(test_x)}
    return Data(Split(train_x[:n], train_y[:n]), Split(train_x[n:], train_y[n:]), Split(train_x, train_y),
                Split(test_x, test_y), info)


DEFAULTS = {
    "dropout": 0.55, "p_hflip": 0.0, "p_translate": 0.0,
    "optimizer": "sgd", "lr": 0.01, "momentum": 0.85, "weight_decay": 0.0, "batch_size": 32,
    "epochs": 20, "patience": 5, "seed": 1, "precision": "auto",
    "schedule": "constant",  # the seed's own runs: a constant learning rate
}

SPACE = {
    "lr": Float(1e-4, 1e-1, log=True),
    "momentum": Float(0.5, 0.99),
    "dropout": Float(0.0, 0.7),
    "batch_size": Choice((32, 64, 128)),
    "weight_decay": Float(1e-6, 1e-2, log=True),
    "p_hflip": Float(0.0, 0.8),
    "p_translate": Float(0.0, 0.8),
}

EXPERIMENT = Experiment(
    name="cifar10",
    summary="CIFAR-10 (seed 004): the seed's ConvNet, SGD, dropout after each pool and the FC",
    task=TASK, load=load, defaults=DEFAULTS, space=SPACE,
    limits=classify.LIMITS,
    objective="val_acc", mode="max",
    budget_cpu=Budget(trials=8, max_epochs=4, grace_epochs=1),
    budget_gpu=Budget(trials=60, max_epochs=30, grace_epochs=4),
    report_metrics=("test_acc",),
    diagnose=partial(diagnose, TASK, cifar10.CLASSES, examples=False, filters=False, softmax_rows=8),
)
