"""Generated images in the training set: does mixing them into the real shapes data lift held-out top-1?

    python benchmarks/synthetic_mix.py RUN_DIR --data-dir ../shared/data/gsn/data_gsn.zip --mode real|mix|pool
        [--seed 1000] [--epochs 40] [--generated 9000] [--per-real 8]

Trains RUN_DIR's best config (best_config.json) as retraining does: the 9,000 real training images,
a fixed number of epochs, final weights scored once on the held-out 1,000. `real` trains --epochs
epochs on the real images; `mix` adds --generated images from datasets/shapes_generator.py (seed 1,
not the offline default's 0) and trains fewer epochs so that both see as many images:
--epochs x 9,000 / (9,000 + --generated). `pool` is what the product does with the config key
`generated` = --per-real: --per-real generated images per real one join the pool, and each of the
--epochs epochs draws 9,000 images from it. One run per call: run the modes and seeds side by side.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

from datasets import shapes
from search import cli, experiments
from search.config import UserError
from search.experiment import DataOptions
from search.loop import Split, evaluate, fit, resolve_precision

GENERATOR_SEED = 1  # the offline default data set is seed 0: these images are not those


def parser() -> argparse.ArgumentParser:
    p = cli.ArgumentParser(prog="python benchmarks/synthetic_mix.py", description=__doc__.split("\n\n")[0])
    p.add_argument("run_dir", type=Path, help="a shapes run folder with best_config.json")
    p.add_argument("--data-dir", type=Path, required=True, help="the real shapes data (folder or zip)")
    p.add_argument("--mode", choices=("real", "mix", "pool"), required=True)
    p.add_argument("--seed", type=int, default=1000, help="training seed (retraining uses 1000, 1001, ...)")
    p.add_argument("--epochs", type=int, default=40, help="epochs on the real images alone")
    p.add_argument("--generated", type=int, default=9000, help="generated images added in mode mix")
    p.add_argument("--per-real", type=float, default=1.0, help="mode pool: the config's `generated` (0 to 10)")
    return p


def main(argv: list[str]) -> int:
    args = parser().parse_args(argv)
    best = args.run_dir / "best_config.json"
    if not best.is_file():
        raise UserError(f"{args.run_dir}: no best_config.json there; give a finished shapes run folder")
    if args.epochs < 1 or args.generated < 1:
        raise UserError("--epochs and --generated: give whole numbers of at least 1")
    torch.set_num_threads(1)  # one CPU per run, as a retraining job has
    exp = experiments.get("shapes")
    data = exp.load(DataOptions(args.data_dir, False, split_seed=0))  # the splits retraining scores on
    # real and mix: generated 0, mix adds its own images (as 20 whole passes over 18,000, generator seed 1);
    # pool: the product's own pool (ShapesTask.training_pool), as retraining builds it
    config = {**json.loads(best.read_text())["config"], "seed": args.seed, "patience": 0,
              "generated": args.per_real if args.mode == "pool" else 0.0}
    x, y = data.full_train.x, data.full_train.y
    epochs = args.epochs
    if args.mode == "mix":
        extra = shapes.generated(n=args.generated, seed=GENERATOR_SEED)
        x, y = torch.cat([x, extra.images]), torch.cat([y, extra.counts])
        epochs = max(1, round(args.epochs * len(data.full_train) / len(x)))
    config["epochs"] = epochs
    exp.check(config)
    device = torch.device("cpu")
    start = time.monotonic()
    result = fit(exp.task, config, Split(x, y), None, device=device)
    scores = evaluate(exp.task, result.model, data.test, result.config,
                      resolve_precision(config["precision"], device), prefix="test_")
    print(f"{args.mode} seed {args.seed}: {len(x)} images x {epochs} epochs, {time.monotonic() - start:.0f} s: "
          f"test_acc {scores['test_acc']:.4f}  pair {scores['test_pair_acc']:.4f}  rmse {scores['test_rmse']:.4f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(cli.run(main, sys.argv[1:]))
