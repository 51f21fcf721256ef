"""The mini-facade segmentation network of seed 003, part 2 (CS194-26 "mini facade", 5 classes).

The seed's encoder-decoder, with its widths parametrised (64 and 128 in the seed = width and 2 * width):

    Conv(3, w, 3, p1) - ReLU - Conv(w, w, 3, p1) - ReLU - MaxPool 2 - ConvTranspose(w, w, 2, s2)
    Conv(w, 2w, 3, p1) - ReLU - Conv(2w, 2w, 3, p1) - ReLU - MaxPool 2 - ConvTranspose(2w, 2w, 2, s2)
    Conv(2w, 5, 5, p2)

Each max-pool halves the resolution and the transposed convolution right after it doubles it back, so the output
has the input's size (the seed added them "to keep the resolution"; H and W must be even). Dropout2d (whole
channels) follows each pool: its rate is the searched parameter, 0 reproduces the seed. Input: N x 3 x H x W float
photos (datasets.facades.to_float), output: N x 5 x H x W class logits, float32 even under autocast.
Parameters: 358,277 at width 64 (the seed), 94,149 at width 32.
"""

from __future__ import annotations

import torch
from torch import nn

NUM_CLASSES = 5  # others, facade, pillar, window, balcony


def _stage(c_in: int, c_out: int, dropout: float) -> list[nn.Module]:
    """Two 3x3 convolutions with ReLU, then pool 2 -> Dropout2d -> transposed conv 2 (back to the input size)."""
    return [
        nn.Conv2d(c_in, c_out, 3, padding=1), nn.ReLU(inplace=True),
        nn.Conv2d(c_out, c_out, 3, padding=1), nn.ReLU(inplace=True),
        nn.MaxPool2d(2), nn.Dropout2d(dropout),
        nn.ConvTranspose2d(c_out, c_out, 2, stride=2),
    ]


class FacadeNet(nn.Module):
    """The seed's fully convolutional net: N x 3 x H x W -> N x 5 x H x W logits (H, W even)."""

    def __init__(self, width: int = 64, dropout: float = 0.0):
        super().__init__()
        if isinstance(width, bool) or not isinstance(width, int) or width < 4:
            raise ValueError(f"width must be an integer >= 4, got {width!r}")
        if not 0.0 <= dropout < 1.0:  # also rejects NaN
            raise ValueError(f"dropout must be in [0, 1), got {dropout}")
        self.width, self.dropout = width, dropout
        self.layers = nn.Sequential(
            *_stage(3, width, dropout),
            *_stage(width, 2 * width, dropout),
            nn.Conv2d(2 * width, NUM_CLASSES, 5, padding=2),  # 5x5: a wider look at the context per pixel
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 4 or x.shape[1] != 3 or x.shape[2] % 2 or x.shape[3] % 2:
            raise ValueError(f"expected N x 3 x H x W with H and W even, got {tuple(x.shape)}")
        return self.layers(x).float()


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
