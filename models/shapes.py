"""The GSN shapes network: the assignment's fixed backbone and two heads.

The backbone must not change (../shared/REFERENCE.md, section 1). Dropout, and an optional hidden
layer, are allowed in the heads only. forward(x) returns (log_probs over 135 classes, 6 counts).
"""

from __future__ import annotations

import torch
from torch import nn

NUM_CLASSES = 135
NUM_KINDS = 6


def _head(out_features: int, dropout: float, hidden: int) -> nn.Sequential:
    if hidden <= 0:
        return nn.Sequential(nn.Dropout(dropout), nn.Linear(256, out_features))
    return nn.Sequential(nn.Dropout(dropout), nn.Linear(256, hidden), nn.ReLU(),
                         nn.Dropout(dropout), nn.Linear(hidden, out_features))


class ShapesNet(nn.Module):
    def __init__(self, dropout: float = 0.5, hidden: int = 0):
        super().__init__()
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout}")
        self.backbone = nn.Sequential(  # fixed by the assignment: 1x28x28 -> 256
            nn.Conv2d(1, 8, 3, 1, 1), nn.ReLU(),
            nn.Conv2d(8, 16, 3, 1, 1), nn.ReLU(),
            nn.Conv2d(16, 32, 3, 1, 1), nn.ReLU(),
            nn.Conv2d(32, 64, 3, 1, 1), nn.ReLU(),
            nn.Flatten(), nn.Linear(64 * 28 * 28, 256), nn.ReLU(),
        )
        self.head_cls = _head(NUM_CLASSES, dropout, hidden)
        self.head_cnt = _head(NUM_KINDS, dropout, hidden)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        z = self.backbone(x)
        # log_softmax in float32 even under autocast: 135-way log-probabilities lose too much in bf16.
        return torch.log_softmax(self.head_cls(z).float(), dim=1), self.head_cnt(z).float()
