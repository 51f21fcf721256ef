"""The CIFAR-10 ConvNet of seed 004: conv32-conv32-pool-conv64-conv64-pool-fc512-fc10.

Input: N x 3 x 32 x 32 (normalised with the train split's per-channel mean and std). All convolutions are 3x3
without padding and followed by ReLU; pools are 2x2 max: 32 -> 30 -> 28 -> 14 -> 12 -> 10 -> 5, so the
512-wide layer sees 64 * 5 * 5 = 1,600 features. One dropout rate, applied after each pool and after the
512-wide layer, as in the seed. 890,410 parameters, 92% of them in that first linear layer.

forward(x) returns class LOGITS (N, 10), float32 even under autocast: train with cross-entropy on them.
"""

from __future__ import annotations

import torch
from torch import nn

NUM_CLASSES = 10
FEATURES = 64 * 5 * 5  # the feature block's output for a 32x32 input, flattened


def _conv_block(c_in: int, c_out: int, dropout: float) -> list[nn.Module]:
    """Two 3x3 convolutions with ReLU, then 2x2 max-pooling and dropout: spatial size s -> (s - 4) // 2."""
    return [nn.Conv2d(c_in, c_out, 3), nn.ReLU(), nn.Conv2d(c_out, c_out, 3), nn.ReLU(),
            nn.MaxPool2d(2), nn.Dropout(dropout)]


class CifarNet(nn.Module):
    def __init__(self, dropout: float = 0.0):
        super().__init__()
        if not 0.0 <= dropout < 1.0:  # also rejects NaN
            raise ValueError(f"dropout must be in [0, 1), got {dropout}")
        self.features = nn.Sequential(*_conv_block(3, 32, dropout), *_conv_block(32, 64, dropout), nn.Flatten())
        self.classifier = nn.Sequential(nn.Linear(FEATURES, 512), nn.ReLU(), nn.Dropout(dropout),
                                        nn.Linear(512, NUM_CLASSES))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x)).float()
