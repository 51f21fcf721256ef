"""Weight averaging: does the mean of a retrain run's last epochs' weights score higher than its final ones?

    python benchmarks/weight_averaging.py RUN_DIR [--label top1] [--seed 1000] [--last 5 10]

Retrains one of RUN_DIR's retrain runs (retrain/<label>-seed<S>/metrics.json: its config, its seed) as the
product retrains it (search.loop.fit on the whole training split, the run's own epochs), keeping the
mean of the weights at the end of each of the last K epochs for every K of --last (stochastic weight
averaging over epochs, Izmailov et al. 2018; the net has no batch norm, so the mean needs no
re-estimated statistics). Prints the held-out metrics of the final weights, which should repeat the
run's own metrics.json to the digit, and of each mean. One run per call: run seeds side by side.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

from search import cli, stages
from search.config import UserError
from search.io import read_json
from search.loop import evaluate, fit, resolve_precision

SHOWN = ("test_acc", "test_pair_acc", "test_rmse")


def parser() -> argparse.ArgumentParser:
    p = cli.ArgumentParser(prog="python benchmarks/weight_averaging.py", description=__doc__.split("\n\n")[0])
    p.add_argument("run_dir", type=Path, help="a finished shapes run folder (with retrain/)")
    p.add_argument("--label", default="top1", help="which retrained config: top1, baseline, ...")
    p.add_argument("--seed", type=int, default=1000, help="which of its retrain seeds")
    p.add_argument("--last", type=int, nargs="+", default=[5, 10], help="epochs averaged (each K: the last K)")
    return p


def main(argv: list[str]) -> int:
    args = parser().parse_args(argv)
    metrics_path = args.run_dir / "retrain" / f"{args.label}-seed{args.seed}" / "metrics.json"
    if not metrics_path.is_file():
        raise UserError(f"{metrics_path}: no such retrain run; give a finished run and one of its labels and seeds")
    run = read_json(metrics_path)
    ctx = stages.finished_run(args.run_dir, print_fn=lambda *a, **k: None)
    config, epochs = run["config"], run["config"]["epochs"]
    if max(args.last) > epochs:
        raise UserError(f"--last {max(args.last)}: the run trains only {epochs} epochs")
    sums = {k: None for k in args.last}

    def on_epoch(row, checkpoint, _last):
        weights = checkpoint(snapshot=False)["model"]
        for k, total in sums.items():
            if row["epoch"] <= epochs - k:
                continue
            if total is None:
                sums[k] = {n: w.detach().double() for n, w in weights.items()}  # .double(): a copy
            else:
                for n, w in weights.items():
                    total[n] += w.double()

    t0 = time.perf_counter()
    torch.set_num_threads(1)  # as a retrain run: one thread, two runs side by side on 2 cores
    device = torch.device("cpu")
    result = fit(ctx.exp.task, config, ctx.data.full_train, None, device=device, on_epoch=on_epoch)
    precision = resolve_precision(config["precision"], device)
    test = ctx.data.test
    rows = {"final": evaluate(ctx.exp.task, result.model, test, result.config, precision, prefix="test_")}
    for k, total in sums.items():
        result.model.load_state_dict({n: (s / k).float() for n, s in total.items()})
        rows[f"mean of last {k}"] = evaluate(ctx.exp.task, result.model, test, result.config, precision,
                                             prefix="test_")
    print(f"{args.run_dir.name} {args.label} seed {args.seed}: {epochs} epochs, {time.perf_counter() - t0:.0f} s")
    print("run's own metrics.json: " + "  ".join(f"{m} {run[m]:.4f}" for m in SHOWN))
    for name, scores in rows.items():
        print(f"{name:>16}: " + "  ".join(f"{m} {scores[m]:.4f}" for m in SHOWN))
    return 0


if __name__ == "__main__":
    sys.exit(cli.run(main, sys.argv[1:]))
