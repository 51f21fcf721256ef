"""Time ``datasets.augment.augment_batch`` on CPU.

All augmentations at p=0.5, 28x28 grey images, batch sizes 64/256/1024.
Prints the time per batch and images/s, plus the share of a training step
at 500-900 images/s (the model's throughput on this CPU).

Run: ``python benchmarks/augment_speed.py [--threads N] [--repeats N]``
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

# Allow ``python benchmarks/augment_speed.py`` from anywhere.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from datasets.augment import AUGMENTATIONS, AugmentProbs, augment_batch

TRAIN_RATES = (500.0, 900.0)  # images/s of a training step on this CPU


def time_batch(batch: int, probs: AugmentProbs, repeats: int) -> float:
    """Median seconds per ``augment_batch`` call."""
    gen = torch.Generator().manual_seed(0)
    x = torch.rand(batch, 1, 28, 28, generator=gen)
    counts = torch.randint(0, 3, (batch, 6), generator=gen)
    for _ in range(3):  # warm-up (index-map cache, allocator)
        augment_batch(x, counts, probs, gen)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        augment_batch(x, counts, probs, gen)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=None, help="torch threads")
    parser.add_argument("--repeats", type=int, default=50)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    probs = AugmentProbs(**{name: 0.5 for name in AUGMENTATIONS})
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, all p=0.5")
    lo, hi = TRAIN_RATES
    print(f"{'batch':>6} {'ms/batch':>9} {'images/s':>10} {'% of step @' + str(int(lo)):>13} {'@' + str(int(hi)):>6}")
    for batch in (64, 256, 1024):
        sec = time_batch(batch, probs, args.repeats)
        rate = batch / sec
        # Augmenting n images takes n/rate s; training them takes n/train_rate s.
        print(f"{batch:>6} {sec * 1e3:>9.2f} {rate:>10,.0f} {100 * lo / rate:>12.2f}% {100 * hi / rate:>5.2f}%")


if __name__ == "__main__":
    main()
