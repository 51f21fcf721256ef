"""The one-shot GPU check: every figure a GPU reader of the README needs, in a few minutes on one GPU.

    python benchmarks/gpu_check.py [--seconds 8] [--no-search]

Prints, on the first CUDA device:
1. per experiment (offline data): a training epoch (search.loop.train_epoch: slicing, augmentation,
   schedule) against its compute floor (forward/backward/step on pre-made batches), fp32 and bf16;
2. images/s of the whole GPU with 1, 2, 4 and 8 shapes trials sharing it (separate processes, as Ray
   runs them), and the GPU memory one trial holds;
3. the sync check: a training step under torch.cuda.set_sync_debug_mode("error") (a host sync per
   step would stall the GPU between kernels);
4. Ray Tune's overhead on a short default search (8 trials x 3 epochs, 8 per GPU), from
   benchmarks/tune_overhead.py.
On a machine without a CUDA GPU it says so in one line and exits 0.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.multiprocessing as mp
from epoch_vs_floor import measure  # this folder: the same floor and epoch as benchmarks/epoch_vs_floor.py

from search import experiments
from search.experiment import DataOptions
from search.loop import Split, make_optimizer, resolve_precision, train_step, with_statistics

REPO = Path(__file__).resolve().parents[1]
IMAGES = 4096  # per timed epoch: enough batches to amortise launch noise, short enough for 8 minutes


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def epoch_vs_floor(name: str, precision: str, device: torch.device) -> str:
    exp = experiments.get(name)
    data = exp.load(DataOptions()).full_train
    n = min(IMAGES, len(data))
    train = Split(data.x[:n], data.y[:n]).to(device)
    config = with_statistics(exp.task, {**exp.defaults, "precision": precision, "epochs": 1}, train)
    t_floor, t_epoch = measure(exp.task, config, train, device, repeats=3)
    f, e = statistics.median(t_floor), statistics.median(t_epoch)
    return (f"{name:<14} {resolve_precision(precision, device):<5} epoch {n / e:8.0f} img/s   "
            f"floor {n / f:8.0f} img/s   ratio {e / f:5.2f}")


def _trial_worker(seconds: float, queue) -> None:
    """One shapes trial's steps for `seconds` on the GPU: (images, seconds, peak memory bytes)."""
    exp = experiments.get("shapes")
    device = torch.device("cuda", 0)
    config = {**exp.defaults, "precision": "auto"}
    data = exp.load(DataOptions()).full_train
    x, y = data.x[:config["batch_size"]].to(device), data.y[:config["batch_size"]].to(device)
    config = with_statistics(exp.task, config, Split(x, y))
    precision = resolve_precision(config["precision"], device)
    model = exp.task.build_model(config).to(device)
    opt = make_optimizer(model, config)
    for _ in range(5):
        train_step(exp.task, model, opt, x, y, config, None, precision)
    _sync(device)
    torch.cuda.reset_peak_memory_stats(device)
    steps, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        for _ in range(20):
            train_step(exp.task, model, opt, x, y, config, None, precision)
        steps += 20
        _sync(device)
    queue.put((steps * config["batch_size"], time.perf_counter() - t0, torch.cuda.max_memory_allocated(device)))


def sharing(seconds: float) -> list[str]:
    ctx = mp.get_context("spawn")
    lines = []
    for k in (1, 2, 4, 8):
        queue = ctx.Queue()
        procs = [ctx.Process(target=_trial_worker, args=(seconds, queue)) for _ in range(k)]
        for p in procs:
            p.start()
        results = [queue.get() for _ in procs]
        for p in procs:
            p.join()
        total = sum(images / secs for images, secs, _ in results)
        memory = max(m for _, _, m in results) / 2**20
        lines.append(f"{k} trial{'s' if k > 1 else ' '} on the GPU: {total:8.0f} img/s in all, "
                     f"{total / k:7.0f} each, peak memory {memory:6.0f} MiB per trial")
    return lines


def sync_check(device: torch.device) -> str:
    exp = experiments.get("shapes")
    config = {**exp.defaults, "precision": "auto", "epochs": 1}
    data = exp.load(DataOptions()).full_train
    train = Split(data.x[:512], data.y[:512]).to(device)
    config = with_statistics(exp.task, config, train)
    model = exp.task.build_model(config).to(device)
    opt = make_optimizer(model, config)
    gen = torch.Generator(device=device).manual_seed(0)
    precision = resolve_precision("auto", device)
    bs = config["batch_size"]
    train_step(exp.task, model, opt, train.x[:bs], train.y[:bs], config, gen, precision)  # warm-up
    torch.cuda.set_sync_debug_mode("error")
    try:
        for i in range(bs, 4 * bs, bs):
            train_step(exp.task, model, opt, train.x[i:i + bs], train.y[i:i + bs], config, gen, precision)
        return "sync check: 3 training steps, no host sync (torch.cuda.set_sync_debug_mode('error') stayed silent)"
    except RuntimeError as e:
        return f"sync check: FAILED, a training step syncs with the host: {str(e).splitlines()[0]}"
    finally:
        torch.cuda.set_sync_debug_mode("default")


def search_overhead() -> list[str]:
    with tempfile.TemporaryDirectory() as results:
        cmd = [sys.executable, "-m", "search.run", "shapes", "--trials", "8", "--max-epochs", "3", "--no-retrain",
               "--results", results, "--name", "gpu-check"]
        t = time.perf_counter()
        done = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True)
        lines = [f"default search, 8 trials x 3 epochs: exit {done.returncode}, {time.perf_counter() - t:.0f} s"]
        if done.returncode != 0:
            return lines + (done.stderr.strip().splitlines() or ["(no error output)"])[-3:]
        report = subprocess.run([sys.executable, str(REPO / "benchmarks" / "tune_overhead.py"),
                                 str(Path(results) / "shapes" / "gpu-check")], cwd=REPO, capture_output=True, text=True)
        return lines + report.stdout.strip().splitlines()


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--seconds", type=float, default=8.0, help="timed seconds per sharing level")
    p.add_argument("--no-search", action="store_true", help="leave out the Ray Tune search (about 2 minutes)")
    args = p.parse_args()
    if not torch.cuda.is_available():
        print(f"gpu_check: no CUDA GPU here (torch {torch.__version__} sees none); nothing to measure")
        return 0
    device = torch.device("cuda", 0)
    props = torch.cuda.get_device_properties(device)
    print(f"{props.name}, {props.total_memory / 2**30:.0f} GiB, torch {torch.__version__}, CUDA {torch.version.cuda}")
    print("\n1. epoch against its compute floor (median of 3)")
    for name in experiments.names():
        for precision in ("fp32", "bf16"):
            try:
                print(epoch_vs_floor(name, precision, device), flush=True)
            except Exception as e:  # an experiment without offline data: say so, go on
                print(f"{name:<14} {precision:<5} not measured: {type(e).__name__}: {str(e).splitlines()[0]}")
    print("\n2. trials sharing one GPU (shapes, batch 64, precision auto)")
    for line in sharing(args.seconds):
        print(line, flush=True)
    print("\n3. " + sync_check(device))
    if not args.no_search:
        print("\n4. Ray Tune's overhead")
        for line in search_overhead():
            print(line)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
