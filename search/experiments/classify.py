"""What Fashion-MNIST and CIFAR-10 share: a 10-class image classifier on uint8 images kept on the
device, batched flip and translation, normalisation from the training split's own statistics,
and the report's look at the retrained model (per-class accuracy, examples, filters, softmax)."""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from search.experiment import PROBABILITY, Limit
from search.loop import Split
from search.plots import figure, save


def translate(x: torch.Tensor, shift: torch.Tensor, pad: int | None = None) -> torch.Tensor:
    """Move each image by its own (dy, dx) pixels, zero-filled: x N x C x H x W, shift N x 2 (long).
    One gather on a padded copy: no Python loop over images. `pad` (at least the largest shift)
    saves reading the shifts back to the host, a device sync per batch."""
    n, _, h, w = x.shape
    s = pad if pad is not None else (int(shift.abs().max().item()) if shift.numel() else 0)
    if s == 0:
        return x
    padded = F.pad(x, (s, s, s, s))
    rows = torch.arange(h, device=x.device)[None, :] + s - shift[:, :1]  # N x H: source row of each output row
    cols = torch.arange(w, device=x.device)[None, :] + s - shift[:, 1:]
    idx = torch.arange(n, device=x.device)[:, None, None, None]
    ch = torch.arange(x.shape[1], device=x.device)[None, :, None, None]
    return padded[idx, ch, rows[:, None, :, None], cols[:, None, None, :]]


# Valid values of the keys both classifiers add to the loop's own.
LIMITS = {"dropout": Limit(0.0, 1.0, high_open=True), "p_hflip": PROBABILITY, "p_translate": PROBABILITY}


@functools.lru_cache(maxsize=8)
def _channel_tensors(mean: tuple[float, ...], std: tuple[float, ...], device: torch.device):
    """The normalisation as 1 x C x 1 x 1 tensors on the device, made once, not per batch."""
    as_tensor = lambda v: torch.tensor(v, device=device)[None, :, None, None]
    return as_tensor(mean), as_tensor(std)


class ImageClassifierTask:
    def __init__(self, build: Callable[[Mapping[str, Any]], nn.Module], max_shift: int):
        self.build, self.max_shift = build, max_shift  # translation of up to max_shift pixels each way

    def build_model(self, config: Mapping[str, Any]) -> nn.Module:
        return self.build(config)

    def statistics(self, train: Split) -> dict[str, list[float]]:
        """Per-channel mean and std (0..1 units) of the training split, in chunks: no float copy of it all."""
        total, square, count = 0.0, 0.0, 0
        for i in range(0, len(train), 10_000):
            x = train.x[i:i + 10_000].double() / 255
            total = total + x.sum(dim=(0, 2, 3))
            square = square + x.pow(2).sum(dim=(0, 2, 3))
            count += x.shape[0] * x.shape[2] * x.shape[3]
        mean = total / count
        std = (square / count - mean.pow(2)).clamp_min(1e-12).sqrt()
        return {"norm_mean": mean.tolist(), "norm_std": std.tolist()}

    def prepare(self, x, y, config, generator):
        x = x.float().mul_(1 / 255)
        n = x.shape[0]
        if generator is not None and config["p_hflip"] > 0:
            flip = torch.rand(n, generator=generator, device=x.device) < config["p_hflip"]
            x = torch.where(flip[:, None, None, None], x.flip(-1), x)
        if generator is not None and config["p_translate"] > 0:
            moved = torch.rand(n, generator=generator, device=x.device) < config["p_translate"]
            shift = torch.randint(-self.max_shift, self.max_shift + 1, (n, 2), generator=generator, device=x.device)
            x = translate(x, shift * moved[:, None], pad=self.max_shift)
        mean, std = _channel_tensors(tuple(config["norm_mean"]), tuple(config["norm_std"]), x.device)
        return (x - mean) / std, y

    def loss(self, outputs, y, config):
        return F.cross_entropy(outputs, y)

    def metrics(self, outputs, y, config):
        return {"acc": (outputs.argmax(1) == y).float().mean().item()}


def diagnose(task: ImageClassifierTask, classes: tuple[str, ...], model: nn.Module, config: Mapping[str, Any],
             test: Split, fig_dir: Path, *, examples: bool, filters: bool, softmax_rows: int) -> str:
    """Per-class accuracy on the held-out images; optionally a grid of right and wrong examples,
    the first conv layer's filters, and the softmax of a few test images."""
    model.eval()
    with torch.no_grad():
        logits = torch.cat([model(task.prepare(test.x[i:i + 1000], test.y[i:i + 1000], config, None)[0]).float()
                            for i in range(0, len(test), 1000)])
    pred = logits.argmax(1)
    rows = []
    for k, name in enumerate(classes):
        sel = test.y == k
        rows.append(f"| {name} | {int(sel.sum())} | {(pred[sel] == k).float().mean().item() if sel.any() else 0:.4f} |")
    text = [f"Accuracy on the {len(test)} held-out images: **{(pred == test.y).float().mean().item():.4f}**.\n",
            "| class | images | accuracy |\n|---|---|---|\n" + "\n".join(rows) + "\n"]
    if examples:
        right, wrong = torch.nonzero(pred == test.y).squeeze(1)[:8], torch.nonzero(pred != test.y).squeeze(1)[:8]
        picks = [(i, "right") for i in right.tolist()] + [(i, "wrong") for i in wrong.tolist()]
        if picks:
            fig = figure(8, 2.2 * ((len(picks) + 7) // 8))
            axes = fig.subplots((len(picks) + 7) // 8, 8, squeeze=False).ravel()
            for ax in axes:
                ax.set_axis_off()
            for ax, (i, kind) in zip(axes, picks, strict=False):
                img = test.x[i].permute(1, 2, 0).squeeze(-1).numpy()
                ax.imshow(img, cmap="gray" if img.ndim == 2 else None)
                ax.set_title(f"{kind}\nT {classes[test.y[i]][:9]}\nP {classes[pred[i]][:9]}", fontsize=7)
            save(fig, fig_dir / "examples.png")
            text.append(f"The first right and wrong predictions (T true, P predicted):\n\n"
                        f"![examples]({fig_dir.name}/examples.png)\n")
    if filters:
        conv = next(m for m in model.modules() if isinstance(m, nn.Conv2d))
        w = conv.weight.detach()[:, 0]
        fig = figure(8, 1.2 * ((w.shape[0] + 7) // 8))
        axes = fig.subplots((w.shape[0] + 7) // 8, 8, squeeze=False).ravel()
        for ax in axes:
            ax.set_axis_off()
        for ax, f in zip(axes, w, strict=False):
            ax.imshow(f.numpy(), cmap="gray")
        save(fig, fig_dir / "conv1_filters.png")
        text.append(f"The first conv layer's {w.shape[0]} learned filters:\n\n"
                    f"![filters]({fig_dir.name}/conv1_filters.png)\n")
    if softmax_rows:
        probs = logits[:softmax_rows].softmax(1)
        head = "| image | true | " + " | ".join(c[:6] for c in classes) + " |"
        lines = [head, "|" + "---|" * (len(classes) + 2)]
        for i in range(probs.shape[0]):
            lines.append(f"| {i} | {classes[test.y[i]]} | " + " | ".join(f"{p:.2f}" for p in probs[i].tolist()) + " |")
        text.append("Softmax outputs for the first held-out images:\n\n" + "\n".join(lines) + "\n")
    return "\n".join(text)
