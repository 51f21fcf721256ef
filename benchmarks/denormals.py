"""Seconds per epoch of the shapes baseline on a CPU, with denormal numbers computed and flushed to zero.

    python benchmarks/denormals.py [--data-dir PATH] [--epochs 8]

Two processes at once (as a search's two trials), 1 torch thread each, the same config and seed on
the whole training split: one computes numbers below float32's smallest normal (1.2e-38) as the
CPU does by default, the other flushes them to zero (`search.loop.flush_denormals`, which `fit`
calls). Prints each epoch's training seconds and loss side by side: the loss shows what flushing
changes in the result, the seconds what it saves.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

from search import cli
from search.config import UserError


def one_run(data_dir: Path | None, epochs: int, flush: bool) -> None:
    """In a fresh process, on 1 thread: the flag set on it is the flag of every computation."""
    import torch

    torch.set_num_threads(1)
    from search import loop  # flushes them at import
    from search.experiment import DataOptions
    from search.experiments import shapes

    if not flush:
        torch.set_flush_denormal(False)
        loop.flush_denormals = lambda: None  # fit() would flush them again

    exp = shapes.EXPERIMENT
    data = exp.load(DataOptions(data_dir, False, split_seed=0))
    config = {**exp.defaults, "epochs": epochs, "seed": 1000, "precision": "fp32"}
    loop.fit(exp.task, config, data.full_train, None, device=torch.device("cpu"), objective=(exp.objective, exp.mode),
        on_epoch=lambda row, _c, _l: print(json.dumps({"epoch": row["epoch"], "train_s": row["train_s"],
                                                       "loss": row["train_loss"]}), flush=True))


def main(argv: list[str]) -> int:
    p = cli.ArgumentParser(prog="python benchmarks/denormals.py", description=__doc__.split("\n\n")[0])
    p.add_argument("--data-dir", type=Path, help="the shapes data (folder or zip); default: generated data")
    p.add_argument("--epochs", type=int, default=8, help="epochs per run (the slowdown starts near epoch 5)")
    p.add_argument("--child", choices=("computed", "flushed"), help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.epochs < 1:
        raise UserError(f"--epochs {args.epochs}: give a whole number of at least 1")
    if args.child:
        one_run(args.data_dir, args.epochs, args.child == "flushed")
        return 0
    base = [sys.executable, __file__, "--epochs", str(args.epochs)] + (
        ["--data-dir", str(args.data_dir)] if args.data_dir else [])
    runs = {mode: subprocess.Popen([*base, "--child", mode], stdout=subprocess.PIPE, text=True)
            for mode in ("computed", "flushed")}
    rows = {mode: [json.loads(line) for line in proc.stdout if line.startswith("{")] for mode, proc in runs.items()}
    for mode, proc in runs.items():
        if proc.wait() != 0:
            raise SystemExit(f"the {mode} run failed (exit {proc.returncode}); run it alone to see why")
    print(f"shapes baseline, fp32, 1 thread per run, 2 runs at once, {args.data_dir or 'generated data'}")
    print("epoch  train s (denormals computed)  train s (flushed)  loss (computed)  loss (flushed)")
    for a, b in zip(rows["computed"], rows["flushed"], strict=True):
        print(f"{a['epoch']:>5}  {a['train_s']:>28.1f}  {b['train_s']:>17.1f}  {a['loss']:>15.4f}  {b['loss']:>14.4f}")
    total = [sum(r["train_s"] for r in rows[m]) for m in ("computed", "flushed")]
    print(f"total: {total[0]:.0f} s computed, {total[1]:.0f} s flushed ({total[0] / total[1]:.2f}x)")
    return 0


if __name__ == "__main__":
    raise SystemExit(cli.run(main, sys.argv[1:]))
