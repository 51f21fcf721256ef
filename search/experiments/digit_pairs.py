"""Digit pairs (seed 002, EPFL EE-559 mini-project 1): is the first of two 14x14 digits <= the second?

Seven architectures (models.digit_pairs) differ in weight sharing and auxiliary digit losses; the
architecture itself is searched. Loss: BCE-with-logits on the comparison, plus aux_weight x the
digit cross-entropy where the model has digit heads; the direct-digits model is trained on the
digit loss alone and its comparison is derived from the two predicted digits.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pandas as pd
import torch
import torch.nn.functional as F

from datasets import digit_pairs as pairs
from models import digit_pairs as nets
from search.experiment import NON_NEGATIVE, Budget, Choice, Data, DataOptions, Experiment, Float, Limit
from search.loop import Split
from search.markdown import md_table
from search.plots import STATUS_STYLE, figure, save

ARCHS = tuple(nets.ARCHITECTURES)
SEARCH_VAL = 200  # the seed's 800 / 200 train / validation split of the 1,000 training pairs


def _has_digit_heads(arch: str) -> bool:
    return bool(getattr(nets.ARCHITECTURES[arch], "has_digit_heads", False))


def _digit_only(arch: str) -> bool:
    return bool(getattr(nets.ARCHITECTURES[arch], "digit_only", False))


class DigitPairsTask:
    """y holds, per pair, (target, first digit, second digit) as one N x 3 long tensor."""

    def build_model(self, config: Mapping[str, Any]):
        return nets.build(config["arch"], config["dropout"])

    def prepare(self, x, y, config, generator):
        return x, y  # stored normalised as float; the seed used no augmentation

    def loss(self, outputs, y, config):
        digit_loss = None
        if "digits" in outputs:
            digit_loss = F.cross_entropy(outputs["digits"].reshape(-1, 10), y[:, 1:].reshape(-1))
            if _digit_only(config["arch"]):
                return digit_loss
        compare = F.binary_cross_entropy_with_logits(outputs["logit"], y[:, 0].float())
        # aux_weight only weighs heads that exist: for the other architectures it has no effect
        return compare if digit_loss is None else compare + config["aux_weight"] * digit_loss

    def metrics(self, outputs, y, config):
        out = {"acc": ((outputs["logit"] > 0).long() == y[:, 0]).float().mean().item()}
        if "digits" in outputs:
            out["digit_acc"] = (outputs["digits"].argmax(-1) == y[:, 1:]).float().mean().item()
        return out


def _split(p: pairs.PairSet) -> Split:
    return Split(p.x, torch.cat([p.target[:, None], p.classes], dim=1))


def load(options: DataOptions) -> Data:
    source = options.source or SOURCES[0]
    train, test, info = pairs.load(source, options.data_dir, options.download, n_pairs=1000, seed=0)
    order = torch.randperm(len(train), generator=torch.Generator().manual_seed(options.split_seed))
    full = _split(train)
    search_train = Split(full.x[order[SEARCH_VAL:]], full.y[order[SEARCH_VAL:]])
    val = Split(full.x[order[:SEARCH_VAL]], full.y[order[:SEARCH_VAL]])
    info = {**info, "train": len(search_train), "val": len(val), "full_train": len(full), "test": len(test)}
    return Data(search_train, val, full, _split(test), info)


def per_architecture(run: Any, fig_dir: Path) -> str:
    """Report section: the best validation accuracy each architecture reached in the search (the
    seed's Table 1, but from a search), and a plot of every trial's accuracy by architecture."""
    trials = run.trials
    if trials.empty or "arch" not in trials:
        return ""
    rows = []
    for arch in ARCHS:
        t = trials[trials["arch"] == arch]
        values = t["best_val_acc"].dropna()
        rows.append({"architecture": arch, "trials": len(t), "best val_acc": values.max() if len(values) else None,
                     "median val_acc": values.median() if len(values) else None,
                     "epochs run": int(t["epochs_run"].sum())})
    table = pd.DataFrame(rows).sort_values("best val_acc", ascending=False, na_position="last")
    fig = figure(7.5, 3.8)
    ax = fig.subplots()
    for status, style in STATUS_STYLE.items():
        t = trials[trials["status"] == status]
        if not t.empty:
            ax.scatter(t["arch"].map(ARCHS.index), t["best_val_acc"], marker=style["marker"], color=style["color"],
                       label=style["label"], s=20)
    ax.set_xticks(range(len(ARCHS)), ARCHS, rotation=30, ha="right")
    ax.set_ylabel("best val_acc of the trial")
    ax.grid(alpha=0.3)
    ax.legend(fontsize="small")
    save(fig, fig_dir / "accuracy_by_architecture.png")
    return ("## Accuracy by architecture\n\nBest and median validation accuracy each architecture reached in the "
            "search (early-stopped trials count at their best epoch). Seed 002 reported, over 10 rounds on "
            "MNIST: two_channel 0.798, two_branches 0.812, shared_branches 0.838, branches_to_vec 0.827, "
            "shared_to_vec 0.847, shared_aux 0.865, direct_digits 0.965.\n\n" + md_table(table) +
            f"\n\n![accuracy by architecture]({fig_dir.name}/accuracy_by_architecture.png)\n")


SOURCES = ("mnist", "mnist5k", "digits")

DEFAULTS = {
    # Seed 002's reported setup: Adam 3e-4, BCE-with-logits, its best architecture (direct digit
    # classification, 0.965 without dropout), 100 epochs with early stopping after 20 flat ones.
    # Its batch size is not reported: 100, the course prologue's usual mini-batch.
    "arch": "direct_digits", "dropout": 0.0, "aux_weight": 1.0,
    "optimizer": "adam", "lr": 3e-4, "momentum": 0.9, "weight_decay": 0.0, "batch_size": 100,
    "epochs": 100, "patience": 20, "seed": 1, "precision": "auto",
    "schedule": "constant",  # the seed's own runs: a constant learning rate
}

SPACE = {
    "arch": Choice(ARCHS),
    "dropout": Float(0.0, 0.5),
    "aux_weight": Float(0.05, 10.0, log=True),  # only active for architectures with auxiliary digit heads
    "lr": Float(1e-4, 1e-2, log=True),
    "batch_size": Choice((25, 50, 100, 200)),
    "weight_decay": Float(1e-6, 1e-2, log=True),
}

LIMITS = {"arch": Limit(choices=ARCHS), "dropout": Limit(0.0, 1.0, high_open=True), "aux_weight": NON_NEGATIVE}


def inactive(pinned: Mapping[str, Any]) -> set[str]:
    """aux_weight weighs the digit loss against the comparison loss: only shared_aux has both."""
    arch = pinned.get("arch")
    return set() if arch is None or (_has_digit_heads(arch) and not _digit_only(arch)) else {"aux_weight"}


EXPERIMENT = Experiment(
    name="digit-pairs",
    summary="digit pairs (seed 002): is the first 14x14 digit <= the second? seven architectures",
    task=DigitPairsTask(), load=load, defaults=DEFAULTS, space=SPACE, limits=LIMITS,
    objective="val_acc", mode="max",
    # Epochs take well under a second here (800 pairs), so even a CPU affords a real search.
    budget_cpu=Budget(trials=24, max_epochs=40, grace_epochs=5, retrain_top_k=2, retrain_seeds=5),
    budget_gpu=Budget(trials=100, max_epochs=100, grace_epochs=10, retrain_top_k=3, retrain_seeds=10),
    inactive=inactive, sources=SOURCES,
    report_metrics=("test_acc", "test_digit_acc"), curve_metrics=("val_acc",),
    study_extras=per_architecture,
)
