"""The Fashion-MNIST network of seed 003 part 1: two 3x3 convolutions and three linear layers.

Input: N x 1 x 28 x 28. Each convolution (no padding) is followed by ReLU and 2x2 max-pooling:
28 -> 26 -> 13 -> 11 -> 5, so fc1 sees 32 * 5 * 5 = 800 features. Dropout follows each hidden linear layer
(fc1, fc2); the seed had none, it is a searched hyperparameter here. 116,702 parameters.

forward(x) returns class LOGITS (N, 10), float32 even under autocast: train with cross-entropy on them.
"""

from __future__ import annotations

import torch
from torch import nn

NUM_CLASSES = 10
FEATURES = 32 * 5 * 5  # conv2's output for a 28x28 input, flattened


class FashionNet(nn.Module):
    def __init__(self, dropout: float = 0.0):
        super().__init__()
        if not 0.0 <= dropout < 1.0:  # also rejects NaN
            raise ValueError(f"dropout must be in [0, 1), got {dropout}")
        # The seed's layer names, so its report's conv1 ... fc3 are these modules.
        self.conv1 = nn.Conv2d(1, 32, 3)
        self.conv2 = nn.Conv2d(32, 32, 3)
        self.fc1 = nn.Linear(FEATURES, 120)
        self.fc2 = nn.Linear(120, 84)
        self.fc3 = nn.Linear(84, NUM_CLASSES)
        self.pool = nn.MaxPool2d(2)
        self.act = nn.ReLU()
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool(self.act(self.conv1(x)))
        x = self.pool(self.act(self.conv2(x))).flatten(1)
        x = self.drop(self.act(self.fc1(x)))
        x = self.drop(self.act(self.fc2(x)))
        return self.fc3(x).float()
