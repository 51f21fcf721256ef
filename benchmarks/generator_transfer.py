"""Generator fidelity by transfer: train on generated GSN shapes, score on the real held-out set.

Not a test - a script::

    /work/venv/bin/python benchmarks/generator_transfer.py [--real ZIP] [--epochs 12] [--seed 1]
                                                           [--set key=value ...] [--threads N]

Trains the hand-tuned shapes config (search.experiments.shapes.DEFAULTS, patience 0 so both
runs go the full --epochs) twice, with the same config and seed:

  (a) real:      the real inner training split (8,000 images), validated on the real inner val;
  (b) generated: the generated inner training split (8,000 images of datasets.shapes_generator),
                 validated on the REAL inner val too.

Both runs therefore pick their best epoch on real data (a small amount of real-data selection for
the generated-trained model); the final-epoch weights involve no real data at all. Both are scored
on the real held-out 1,000 (the test split): top-1, per-pair accuracy, count RMSE. Goal:
generated-only top-1 >= 80% of the real-trained top-1.

For diagnosis every model is also scored on the generated held-out 1,000 and each epoch's line
shows the generated inner val top-1: a generated-trained model that is much better on generated
than on real images has learnt idiosyncrasies of the generator.
"""

from __future__ import annotations

import argparse
import copy
import sys
import time
from pathlib import Path

import torch

from search import cli
from search.config import UserError, format_config, parse_assignments, resolve
from search.experiment import DataOptions
from search.experiments import shapes as exp
from search.loop import Split, evaluate, fit, resolve_precision

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_REAL = REPO_ROOT.parent / "shared" / "data" / "gsn" / "data_gsn.zip"
GOAL = 0.80
SHOWN = (("acc", "top-1"), ("pair_acc", "pair"), ("rmse", "rmse"))


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--real", type=Path, default=DEFAULT_REAL,
                   help=f"the real GSN zip or folder (default {DEFAULT_REAL})")
    p.add_argument("--epochs", type=int, default=12, help="epochs for both runs (default 12)")
    p.add_argument("--seed", type=int, default=1, help="seed for both runs (default 1)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a config value")
    p.add_argument("--threads", type=int, help="torch CPU threads (default: torch's own)")
    return p


def make_config(args: argparse.Namespace) -> dict:
    overrides = parse_assignments(args.set)
    fixed = sorted({"epochs", "seed", "patience"} & overrides.keys())
    if fixed:
        raise UserError(f"--set {', '.join(fixed)}: use --epochs / --seed; patience is fixed at 0 "
                        "so both runs train every epoch")
    if args.epochs < 1:
        raise UserError(f"--epochs {args.epochs}: give a positive number")
    config = resolve(exp.DEFAULTS, {**overrides, "epochs": args.epochs, "seed": args.seed, "patience": 0})
    exp.EXPERIMENT.check(config)
    return config


class _Capture:
    """The experiment's task, remembering the model `fit` builds (so each epoch can score it)."""

    def __init__(self, task):
        self.task, self.model = task, None

    def build_model(self, config):
        self.model = self.task.build_model(config)
        return self.model

    def __getattr__(self, name):
        return getattr(self.task, name)


def run(name: str, config: dict, train: Split, real_val: Split, gen_val: Split,
        device: torch.device, precision: str) -> tuple[torch.nn.Module, torch.nn.Module, dict]:
    """Train on `train`, select on the real val; returns (best-epoch model, final-epoch model, best row)."""
    task = _Capture(exp.EXPERIMENT.task)
    gen_val = gen_val.to(device)
    final_state: dict = {}

    def progress(row: dict, *_) -> None:  # (row, checkpoint[, last]): only the row is used
        gen = evaluate(task, task.model, gen_val, config, precision, prefix="gen_")  # no RNG use
        if row["epoch"] == config["epochs"]:
            final_state.update(copy.deepcopy(task.model.state_dict()))
        print(f"[{name:9s}] epoch {row['epoch']:3d}  train_loss {row['train_loss']:.4f}  "
              f"real-val top-1 {row['val_acc']:.4f}  real-val rmse {row['val_rmse']:.4f}  "
              f"gen-val top-1 {gen['gen_acc']:.4f}  {row['time_s']:.0f}s", flush=True)

    result = fit(task, config, train, real_val, device=device, objective=("val_acc", "max"),
                 on_epoch=progress, keep_best=True)
    if len(result.history) != config["epochs"] or not final_state:
        raise RuntimeError(f"{name}: ran {len(result.history)} of {config['epochs']} epochs")
    final = exp.EXPERIMENT.task.build_model(config).to(device)
    final.load_state_dict(final_state)
    return result.model, final, result.best


def main(argv: list[str]) -> int:
    args = parser().parse_args(argv)
    if args.threads is not None:
        if args.threads < 1:
            raise UserError(f"--threads {args.threads}: give a positive number")
        torch.set_num_threads(args.threads)
    config = make_config(args)
    if not args.real.exists():
        raise UserError(f"--real {args.real}: not found")
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    precision = resolve_precision(config["precision"], device)
    t_start = time.perf_counter()

    real = exp.load(DataOptions(args.real, split_seed=0))
    gen = exp.load(DataOptions(None, split_seed=0))
    print(f"real:      {real.info}")
    print(f"generated: {gen.info}")
    print(f"config: {format_config(config)}")
    print(f"device {device}, precision {precision}, {torch.get_num_threads()} threads")
    print("(a) real:      train on real inner train, best epoch selected on REAL inner val")
    print("(b) generated: train on generated inner train, best epoch selected on REAL inner val "
          "(final-epoch weights use no real data)")
    print("scored on the real held-out test split; gen-test = generated held-out split (diagnostic)", flush=True)

    models = {}
    best_epochs = {}
    for name, data in (("real", real), ("generated", gen)):
        t0 = time.perf_counter()
        best, final, best_row = run(name, config, data.train, real.val, gen.val, device, precision)
        models[name] = {"best": best, "final": final}
        best_epochs[name] = int(best_row["epoch"])
        print(f"[{name:9s}] done in {time.perf_counter() - t0:.0f}s, best real-val epoch {best_epochs[name]}",
              flush=True)

    task = exp.EXPERIMENT.task
    real_test, gen_test = real.test.to(device), gen.test.to(device)
    scores: dict[tuple[str, str], dict] = {}
    for name in models:
        for which, model in models[name].items():
            scores[name, which] = {
                **evaluate(task, model, real_test, config, precision, prefix="test_"),
                **evaluate(task, model, gen_test, config, precision, prefix="gentest_"),
            }

    print()
    print(f"config: {format_config(config)}")
    header = (f"{'trained on':10s} {'weights':13s} " + " ".join(f"{'real ' + label:>11s}" for _, label in SHOWN)
              + f" {'gen-test top-1':>15s}")
    print(header)
    print("-" * len(header))
    for (name, which), s in scores.items():
        tag = f"best (ep {best_epochs[name]})" if which == "best" else f"final (ep {config['epochs']})"
        print(f"{name:10s} {tag:13s} " + " ".join(f"{s['test_' + k]:11.4f}" for k, _ in SHOWN)
              + f" {s['gentest_acc']:15.4f}")
    print()
    for which in ("best", "final"):
        r, g = scores["real", which]["test_acc"], scores["generated", which]["test_acc"]
        ratio = g / r if r > 0 else float("nan")
        note = "best-epoch selected on real val" if which == "best" else "no real-data selection"
        print(f"generated/real real-test top-1, {which:5s} weights: {g:.4f} / {r:.4f} = {ratio:.3f}  "
              f"(goal >= {GOAL:.2f}: {'met' if ratio >= GOAL else 'NOT met'}; {note})")
    print(f"wall time {time.perf_counter() - t_start:.0f}s")
    return 0


if __name__ == "__main__":
    sys.exit(cli.run(main))
