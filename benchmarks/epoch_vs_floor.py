"""Training epoch time against the compute floor (bare forward/backward/step on pre-made batches).

    python benchmarks/epoch_vs_floor.py [--data PATH] [--batch-size 64] [--precision auto] [--repeats 3]

The epoch is search.loop.train_epoch on 9,000 images with every augmentation at p=0.5: index
slicing, uint8->float, augmentation and the optimiser step included. The floor runs the same
model, optimiser, batch size and precision over the same number of images already prepared as
float batches. Goal: ratio <= 1.15. Runs alternate and the medians are compared.
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import torch

from search.experiment import DataOptions
from search.experiments import shapes as exp
from search.loop import Split, autocast, make_optimizer, resolve_precision, train_epoch

REAL = Path(__file__).resolve().parents[1].parent / "shared/data/gsn/data_gsn.zip"


def measure(task, config: dict, data: Split, device: torch.device, repeats: int) -> tuple[list[float], list[float]]:
    """Seconds of the compute floor and of a training epoch over `data` (already on `device`), `repeats`
    runs each, alternating, after one warm-up (allocator, kernels, cuDNN's algorithm choice)."""
    precision = resolve_precision(config["precision"], device)
    torch.manual_seed(0)
    model = task.build_model(config).to(device)
    opt = make_optimizer(model, config)
    gen = torch.Generator(device=device).manual_seed(0)
    bs = config["batch_size"]
    batches = [task.prepare(data.x[i:i + bs], data.y[i:i + bs], config, gen) for i in range(0, len(data), bs)]

    def floor() -> None:
        model.train()
        for x, y in batches:
            with autocast(precision, device):
                loss = task.loss(model(x), y, config)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()

    def epoch() -> None:
        train_epoch(task, model, opt, data, config, gen, precision)

    def timed(fn) -> float:
        if device.type == "cuda":
            torch.cuda.synchronize()
        t = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize()
        return time.perf_counter() - t

    floor()
    t_floor, t_epoch = [], []
    for _ in range(repeats):
        t_floor.append(timed(floor))
        t_epoch.append(timed(epoch))
    return t_floor, t_epoch


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--data", type=Path, default=REAL if REAL.exists() else None)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--precision", default="auto")
    p.add_argument("--repeats", type=int, default=3)
    args = p.parse_args()

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    data = exp.load(DataOptions(args.data)).full_train.to(device)
    config = dict(exp.DEFAULTS, batch_size=args.batch_size, precision=args.precision,
                  **{f"p_{a}": 0.5 for a in ("hflip", "vflip", "rot90", "brightness", "noise", "erase")})
    t_floor, t_epoch = measure(exp.ShapesTask(), config, Split(data.x, data.y), device, args.repeats)
    f, e = statistics.median(t_floor), statistics.median(t_epoch)
    print(f"device {device}, precision {resolve_precision(config['precision'], device)}, "
          f"{torch.get_num_threads()} threads, batch {args.batch_size}, {len(data)} images, {args.repeats} repeats")
    print(f"floor  {f:6.2f} s  ({len(data) / f:5.0f} images/s)   runs: {', '.join(f'{t:.2f}' for t in t_floor)}")
    print(f"epoch  {e:6.2f} s  ({len(data) / e:5.0f} images/s)   runs: {', '.join(f'{t:.2f}' for t in t_epoch)}")
    print(f"ratio epoch/floor = {e / f:.3f}  (goal <= 1.15)")


if __name__ == "__main__":
    main()
