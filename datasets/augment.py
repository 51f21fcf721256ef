"""Batched, label-aware data augmentation for GSN shape images.

Every function works on a whole batch at once (no Python loop over samples) on
whatever device the batch lives, and takes all its randomness from a
``torch.Generator`` on that device, so a seed reproduces a result.

Images are ``(B, C, H, W)`` float tensors in ``[0, 1]``; the same transform is
applied to every channel. Count labels are an int64 ``(B, 6)`` tensor with
columns ``[squares, circles, up, right, down, left]`` (``None`` is allowed:
then only images are transformed).

Geometric augmentations (group convention)
------------------------------------------
The geometric augmentations form the dihedral group D4 of the square. A group
element is encoded as the integer ``g = 4 * f + k`` with ``f in {0, 1}`` and
``k in {0, 1, 2, 3}``; it maps an image ``x`` to::

    torch.rot90(torch.flip(x, dims=(-1,)) if f else x, k, dims=(-2, -1))

i.e. FIRST mirror left-right (if ``f``), THEN rotate ``k`` quarter-turns
COUNTER-clockwise (the ``torch.rot90`` direction). ``g = 0`` is the identity.
A vertical flip is ``g = 4 * 1 + 2`` (mirror left-right, then turn 180 deg).

Label mapping: number the triangle orientations clockwise,
``d = 0 up, 1 right, 2 down, 3 left`` (count column ``2 + d``). A left-right
mirror sends ``d -> -d`` (swaps right/left), a counter-clockwise quarter-turn
sends ``d -> d - 1`` (up->left, left->down, down->right, right->up), so element
``(f, k)`` sends a triangle of orientation ``d`` to ``(-1)**f * d - k (mod 4)``.
Squares and circles are invariant.

``augment_batch`` applies, per sample and each with its own probability,
hflip, then vflip, then rot90 by ``k ~ U{1, 2, 3}``; these are composed into a
single group element per sample (see ``group_element``) and applied with one
gather on the flattened pixels and one gather on the triangle-count columns.
Then brightness/contrast, Gaussian noise and random erasing (in that order),
which leave the counts unchanged.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor

AUGMENTATIONS: tuple[str, ...] = (
    "hflip",
    "vflip",
    "rot90",
    "brightness",
    "noise",
    "erase",
)
"""Names of the augmentations; config keys are ``p_<name>``."""

# Photometric parameters.
BRIGHTNESS_SHIFT = 0.2  # additive shift ~ U[-0.2, 0.2]
CONTRAST_RANGE = (0.7, 1.3)  # factor ~ U[0.7, 1.3], about the per-image mean
NOISE_STD = 0.1  # additive Gaussian noise std (then clamped to [0, 1])
ERASE_SIDE = (2, 7)  # inclusive range of erased rectangle side lengths (pixels)

N_GROUP = 8  # |D4|
COUNT_COLUMNS = 6
TRIANGLE_COLUMNS = slice(2, 6)  # [up, right, down, left]


@dataclasses.dataclass(frozen=True)
class AugmentProbs:
    """Per-sample probability of each augmentation (all in ``[0, 1]``)."""

    hflip: float = 0.0
    vflip: float = 0.0
    rot90: float = 0.0
    brightness: float = 0.0
    noise: float = 0.0
    erase: float = 0.0

    def __post_init__(self) -> None:
        for name in AUGMENTATIONS:
            value = getattr(self, name)
            try:
                p = float(value)
            except (TypeError, ValueError):
                raise ValueError(f"AugmentProbs.{name} must be a number in [0, 1], got {value!r}") from None
            if not 0.0 <= p <= 1.0:  # also rejects NaN
                raise ValueError(f"AugmentProbs.{name} must be in [0, 1], got {value!r}")
            object.__setattr__(self, name, p)

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> AugmentProbs:
        """Build from ``p_<name>`` keys (missing keys mean 0; other keys are ignored)."""
        return cls(**{name: config.get(f"p_{name}", 0.0) for name in AUGMENTATIONS})

    @property
    def is_identity(self) -> bool:
        """True if every probability is 0 (``augment_batch`` is then a no-op)."""
        return all(getattr(self, name) == 0.0 for name in AUGMENTATIONS)

    @property
    def geometric(self) -> bool:
        return self.hflip > 0 or self.vflip > 0 or self.rot90 > 0


# ---------------------------------------------------------------------------
# Group elements
# ---------------------------------------------------------------------------


def group_element(hflip: Tensor | int, vflip: Tensor | int, k: Tensor | int) -> Tensor:
    """Encode "hflip (0/1), then vflip (0/1), then rotate k quarter-turns CCW".

    Since ``vflip == rot180 o hflip`` and ``hflip o hflip == id``, the
    composition is the element with ``f = hflip xor vflip`` and
    ``k_total = k + 2 * vflip (mod 4)``. Inputs broadcast; returns int64.
    """
    h = torch.as_tensor(hflip).long()
    v = torch.as_tensor(vflip).long()
    kk = torch.as_tensor(k).long()
    return 4 * (h ^ v) + (kk + 2 * v) % 4


def _apply_element_2d(a: Tensor, g: int) -> Tensor:
    f, k = divmod(g, 4)
    if f:
        a = torch.flip(a, dims=(-1,))
    return torch.rot90(a, k, dims=(-2, -1))


@functools.lru_cache(maxsize=64)
def pixel_maps(h: int, w: int, device: torch.device) -> Tensor:
    """``(8, h*w)`` int64 gather indices: ``out.flat[i] = in.flat[maps[g, i]]``.

    Obtained by transforming the image of flat indices itself. Entries for odd
    ``k`` are only meaningful for square images.
    """
    ids = torch.arange(h * w).reshape(h, w)
    maps = torch.stack([_apply_element_2d(ids, g).reshape(-1) for g in range(N_GROUP)])
    return maps.to(device)


def _count_table() -> Tensor:
    """``(8, 4)``: ``new_tri[:, e] = old_tri[:, table[g, e]]``.

    Element ``(f, k)`` sends orientation ``d`` to ``e = s*d - k`` with
    ``s = (-1)**f``; inverting, the source of ``e`` is ``d = s*(e + k)``.
    """
    rows = []
    for g in range(N_GROUP):
        f, k = divmod(g, 4)
        s = -1 if f else 1
        rows.append([(s * (e + k)) % 4 for e in range(4)])
    return torch.tensor(rows, dtype=torch.long)


_COUNT_TABLE_CPU = _count_table()


@functools.lru_cache(maxsize=16)
def _count_table_on(device: torch.device) -> Tensor:
    return _COUNT_TABLE_CPU.to(device)


def apply_group_element(x: Tensor, g: Tensor) -> Tensor:
    """Apply per-sample group elements ``g`` (int64 ``(B,)``) to images ``(B, C, H, W)``."""
    b, c, h, w = x.shape
    if h != w and bool(((g % 4) % 2 == 1).any()):
        raise ValueError(f"quarter-turns need square images, got H={h}, W={w}")
    idx = pixel_maps(h, w, x.device)[g]  # (B, HW)
    out = torch.gather(x.reshape(b, c, h * w), 2, idx.unsqueeze(1).expand(b, c, h * w))
    return out.view(b, c, h, w)


def inverse_element(g: int) -> int:
    """The element that undoes ``g``: a mirror is its own inverse, a turn by k is undone by 4 - k."""
    f, k = divmod(g, 4)
    return g if f else (4 - k) % 4


def transform_counts(counts: Tensor, g: Tensor | int) -> Tensor:
    """Counts after applying group element(s) ``g`` (int or ``(B,)``) to the images.

    Returns a new ``(B, 6)`` tensor; squares and circles are copied unchanged,
    the triangle columns ``[up, right, down, left]`` are permuted (see module
    docstring for the mapping).
    """
    if counts.ndim != 2 or counts.shape[1] != COUNT_COLUMNS:
        raise ValueError(f"counts must have shape (B, {COUNT_COLUMNS}), got {tuple(counts.shape)}")
    g = torch.as_tensor(g, device=counts.device).long().expand(counts.shape[0])
    src = _count_table_on(counts.device)[g]  # (B, 4)
    out = counts.clone()
    out[:, TRIANGLE_COLUMNS] = torch.gather(counts[:, TRIANGLE_COLUMNS], 1, src)
    return out


# ---------------------------------------------------------------------------
# Photometric
# ---------------------------------------------------------------------------


def _choose(p: float, b: int, generator: torch.Generator, device: torch.device) -> Tensor:
    """Bool ``(B,)`` mask, each True with probability ``p`` (p == 1 -> all True)."""
    return torch.rand(b, generator=generator, device=device) < p


def _uniform(lo: float, hi: float, b: int, generator: torch.Generator, x: Tensor) -> Tensor:
    return torch.rand(b, generator=generator, device=x.device, dtype=x.dtype) * (hi - lo) + lo


def _brightness_contrast(x: Tensor, chosen: Tensor, generator: torch.Generator) -> Tensor:
    b = x.shape[0]
    factor = _uniform(*CONTRAST_RANGE, b, generator, x).view(b, 1, 1, 1)
    shift = _uniform(-BRIGHTNESS_SHIFT, BRIGHTNESS_SHIFT, b, generator, x).view(b, 1, 1, 1)
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    out = ((x - mean) * factor + mean + shift).clamp_(0.0, 1.0)
    return torch.where(chosen.view(b, 1, 1, 1), out, x)


def _noise(x: Tensor, chosen: Tensor, generator: torch.Generator) -> Tensor:
    b = x.shape[0]
    noise = torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
    out = noise.mul_(NOISE_STD).add_(x).clamp_(0.0, 1.0)
    return torch.where(chosen.view(b, 1, 1, 1), out, x)


def erase_mask(
    b: int,
    h: int,
    w: int,
    chosen: Tensor,
    generator: torch.Generator,
    device: torch.device,
) -> Tensor:
    """Bool ``(B, 1, H, W)`` mask: one rectangle per chosen sample, none otherwise.

    Side lengths are uniform in ``ERASE_SIDE`` (clipped to the image size), the
    position uniform among those that fit. Built by broadcasting comparisons of
    pixel coordinates against per-sample bounds.
    """
    lo_h, hi_h = min(ERASE_SIDE[0], h), min(ERASE_SIDE[1], h)
    lo_w, hi_w = min(ERASE_SIDE[0], w), min(ERASE_SIDE[1], w)
    u = torch.rand(4, b, generator=generator, device=device)
    eh = lo_h + (u[0] * (hi_h - lo_h + 1)).long().clamp_(max=hi_h - lo_h)
    ew = lo_w + (u[1] * (hi_w - lo_w + 1)).long().clamp_(max=hi_w - lo_w)
    top = (u[2] * (h - eh + 1)).long().clamp_(max=h - eh)
    left = (u[3] * (w - ew + 1)).long().clamp_(max=w - ew)
    rows = torch.arange(h, device=device)
    cols = torch.arange(w, device=device)
    in_rows = (rows >= top[:, None]) & (rows < (top + eh)[:, None]) & chosen[:, None]  # (B, H)
    in_cols = (cols >= left[:, None]) & (cols < (left + ew)[:, None])  # (B, W)
    return (in_rows[:, :, None] & in_cols[:, None, :]).unsqueeze(1)


# ---------------------------------------------------------------------------
# Pipeline
# ---------------------------------------------------------------------------


def augment_batch(
    x: Tensor, counts: Tensor | None, probs: AugmentProbs, generator: torch.Generator
) -> tuple[Tensor, Tensor | None]:
    """Augment a batch; returns ``(images, counts)``.

    ``x``: ``(B, C, H, W)`` floating images in ``[0, 1]``; ``counts``: int
    ``(B, 6)`` or ``None``; ``generator`` must live on ``x.device``. Inputs are
    never modified in place. Augmentations whose probability is 0 cost nothing
    and draw no random numbers; if all are 0 the inputs themselves are
    returned. Rotations require ``H == W``.
    """
    if x.ndim != 4:
        raise ValueError(f"images must have shape (B, C, H, W), got {tuple(x.shape)}")
    b, _, h, w = x.shape
    if counts is not None and (counts.ndim != 2 or counts.shape != (b, COUNT_COLUMNS)):
        raise ValueError(f"counts must have shape ({b}, {COUNT_COLUMNS}), got {tuple(counts.shape)}")
    if probs.is_identity:
        return x, counts
    if generator.device.type != x.device.type:
        raise ValueError(f"generator is on {generator.device}, images on {x.device}")
    if probs.rot90 > 0 and h != w:
        raise ValueError(f"rot90 needs square images, got H={h}, W={w}")
    if (probs.brightness > 0 or probs.noise > 0) and not x.is_floating_point():
        raise ValueError(f"photometric augmentations need floating images, got {x.dtype}")
    device = x.device

    if probs.geometric:
        zero = torch.zeros(b, dtype=torch.long, device=device)
        hf = _choose(probs.hflip, b, generator, device).long() if probs.hflip > 0 else zero
        vf = _choose(probs.vflip, b, generator, device).long() if probs.vflip > 0 else zero
        if probs.rot90 > 0:
            k = torch.randint(1, 4, (b,), generator=generator, device=device)
            k = torch.where(_choose(probs.rot90, b, generator, device), k, zero)
        else:
            k = zero
        g = group_element(hf, vf, k)
        x = apply_group_element(x, g)
        if counts is not None:
            counts = transform_counts(counts, g)

    if probs.brightness > 0:
        x = _brightness_contrast(x, _choose(probs.brightness, b, generator, device), generator)
    if probs.noise > 0:
        x = _noise(x, _choose(probs.noise, b, generator, device), generator)
    if probs.erase > 0:
        chosen = _choose(probs.erase, b, generator, device)
        x = x.masked_fill(erase_mask(b, h, w, chosen, generator, device), 0)
    return x, counts
