"""Train one configuration of an experiment, without Ray (the shared loop of search/loop.py, from the command line).

    python -m search.train shapes                        # generated data, the hand-tuned config
    python -m search.train shapes --data-dir ../shared/data/gsn/data_gsn.zip --set lr=3e-4

Trains on the search-train split, early-stops on the validation split, then scores the best
epoch's weights once on the held-out split. Writes metrics.csv (one row per epoch), summary.json
(config, data, best/final/held-out metrics) and model.pt (a state_dict) into --out, all at once
at the end: an interrupted or failed run leaves no half-written folder.
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path

import torch

from search import cli, experiments
from search.config import UserError, format_config, parse_assignments, resolve
from search.experiment import DataOptions
from search.io import write_csv, write_json
from search.loop import NonFiniteError, evaluate, fit, resolve_precision


def parser() -> argparse.ArgumentParser:
    p = cli.ArgumentParser(prog="python -m search.train", description=__doc__.split("\n\n")[0])
    p.add_argument("experiment", help="experiment name (python -m search.run --list)")
    p.add_argument("--data-dir", type=Path, help="the experiment's data (folder or zip); default: offline data")
    p.add_argument("--download", action="store_true", help="fetch the experiment's public data set first")
    p.add_argument("--source", help="which data source, for experiments with several (see search.run --list)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a config value")
    p.add_argument("--epochs", type=cli.whole(1), help="shorthand for --set epochs=E")
    p.add_argument("--seed", type=cli.SEED, help="shorthand for --set seed=S")
    p.add_argument("--subset", type=cli.whole(1), help="use only this many training images (smoke runs)")
    p.add_argument("--out", type=Path, help="output folder (default results/train/EXPERIMENT/TIMESTAMP)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    return p


def check_writable(out: Path) -> None:
    """The folder `out` will be made in accepts a file (probed in its nearest existing ancestor)."""
    where = out
    while not where.exists():
        where = where.parent
    try:
        if not where.is_dir():
            raise NotADirectoryError(20, "not a folder")
        tempfile.TemporaryFile(dir=where).close()
    except OSError as e:
        raise UserError(f"--out {out}: cannot write there ({e.strerror} in {where}); choose another --out") from None


def main(argv: list[str]) -> int:
    args = parser().parse_args(argv)
    experiment = experiments.get(args.experiment)
    experiment.check_source(args.source)
    overrides = parse_assignments(args.set)
    for key in ("epochs", "seed"):
        if getattr(args, key) is not None:
            overrides[key] = str(getattr(args, key))
    config = resolve(experiment.defaults, overrides)
    experiment.check(config)
    device = cli.pick_device(args.device)
    out = (args.out or Path("results/train") / experiment.name / time.strftime("%Y%m%d-%H%M%S")).resolve()
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise UserError(f"{out} exists and is not an empty folder; choose another --out or remove it")
    check_writable(out)  # now, not after the training

    data = experiment.load(DataOptions(args.data_dir, args.download, split_seed=0, source=args.source))
    if args.subset is not None:  # a quarter as many validation images: a smoke run's proportions
        data = data.limited(train=args.subset, val=max(1, args.subset // 4))
    precision = resolve_precision(config["precision"], device)
    print(f"{experiment.name}: {data.info}")
    print(f"config: {format_config(config)}")
    print(f"device {device}, precision {precision}, {torch.get_num_threads()} threads")

    def progress(row: dict, _checkpoint, _last: bool) -> None:
        shown = [k for k in ("train_loss", "val_loss", experiment.objective, "val_rmse") if k in row]
        print(f"epoch {row['epoch']:3d}  " + "  ".join(f"{k} {row[k]:.4f}" for k in shown)
              + f"  {row['time_s']:.1f}s", flush=True)

    try:
        result = fit(experiment.task, config, data.train, data.val, device=device,
                     objective=(experiment.objective, experiment.mode), on_epoch=progress, keep_best=True)
    except NonFiniteError as e:  # a diverging config given on the command line: one line, exit 2
        raise UserError(f"{e}; try a smaller lr") from None
    held_out = evaluate(experiment.task, result.model, data.test.to(device), result.config, precision,
                        prefix="test_")
    print("held-out (best epoch's weights): " + "  ".join(
        f"{k} {held_out[k]:.4f}" for k in ("test_acc", "test_pair_acc", "test_rmse") if k in held_out))

    tmp = Path(tempfile.mkdtemp(dir=out.parent if out.parent.exists() else None, prefix=f".{out.name}."))
    try:
        write_csv(tmp / "metrics.csv", result.history)
        write_json(tmp / "summary.json", {
            "experiment": experiment.name, "config": config, "precision": precision, "device": str(device),
            "data": data.info, "epochs_run": len(result.history), "stopped_early": result.stopped_early,
            "best": result.best, "final": result.history[-1], "held_out": held_out,
        })
        torch.save(result.model.state_dict(), tmp / "model.pt")
        out.parent.mkdir(parents=True, exist_ok=True)
        if out.exists():
            out.rmdir()  # empty (checked above)
        shutil.move(str(tmp), out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(cli.run(main))
