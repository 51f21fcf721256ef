"""The seven digit-pair networks of EE-559 mini-project 1 (../shared/seeds/002_*.txt, section 1.2 and appendix).

Input: N x 2 x 14 x 14, two MNIST digits as channels. Main task: is digit 1 <= digit 2 (one logit, trained with
BCE-with-logits); auxiliary task: the class of each digit. Every network uses the same feature extraction module
(two 3x3 convolutions, each followed by max-pooling and ReLU: 14 -> 12 -> 6 -> 4 -> 2, so 32 * 2 * 2 = 128
features) and linear layers with Dropout after them. The course asked for at most ~70k parameters; the largest
here (two_branches) has 59,266.

forward(x) returns {"logit": (N,)} plus, for the models with digit heads, {"digits": (N, 2, 10) class logits}.
Outputs are float32 even under autocast. build(name, dropout) makes one from the ARCHITECTURES registry.
"""

from __future__ import annotations

import functools
import math
from itertools import pairwise

import torch
from torch import nn

NUM_DIGITS = 10
FEATURES = 32 * 2 * 2  # the feature module's output size for a 14x14 input

# (i, j) with i <= j: the digit pairs for which the label "first <= second" is true.
_LE_MASK = torch.ones(NUM_DIGITS, NUM_DIGITS, dtype=torch.bool).triu()


def features(in_channels: int) -> nn.Sequential:
    """The shared feature extraction module: in_channels x 14 x 14 -> 128."""
    return nn.Sequential(
        nn.Conv2d(in_channels, 16, 3), nn.MaxPool2d(2), nn.ReLU(),
        nn.Conv2d(16, 32, 3), nn.MaxPool2d(2), nn.ReLU(),
        nn.Flatten(),
    )


def _mlp(dims: list[int], dropout: float, last_act: bool = False) -> nn.Sequential:
    """Linear layers of the given widths, each but the last (all with last_act) followed by ReLU and Dropout."""
    layers: list[nn.Module] = []
    for i, (d_in, d_out) in enumerate(pairwise(dims)):
        layers.append(nn.Linear(d_in, d_out))
        if last_act or i < len(dims) - 2:
            layers += [nn.ReLU(), nn.Dropout(dropout)]
    return nn.Sequential(*layers)


@functools.lru_cache(maxsize=16)
def _le_mask_on(device: torch.device) -> torch.Tensor:
    """The mask on `device`, copied once (a copy from the host in every loss step waits for the GPU)."""
    return _LE_MASK.to(device)


def comparison_logit(digit_logits: torch.Tensor) -> torch.Tensor:
    """logit of P(d1 <= d2) for (N, 2, 10) digit logits, the two digits taken as independent.

    Computed as logsumexp over the pairs i <= j minus logsumexp over i > j of log p1_i + log p2_j: exact, and
    finite even when both softmaxes are one-hot in float32 (where p and 1 - p themselves would round to 0 or 1).
    """
    logp = torch.log_softmax(digit_logits.float(), dim=-1)
    joint = logp[:, 0, :, None] + logp[:, 1, None, :]  # (N, 10, 10): log p1_i + log p2_j
    mask = _le_mask_on(joint.device)
    log_le = joint.masked_fill(~mask, -math.inf).flatten(1).logsumexp(1)
    log_gt = joint.masked_fill(mask, -math.inf).flatten(1).logsumexp(1)
    return log_le - log_gt


class _PairModel(nn.Module):
    has_digit_heads = False
    digit_only = False  # True: the main loss is the digit loss, the logit is derived from the digits

    def __init__(self, dropout: float):
        super().__init__()
        if not 0.0 <= dropout < 1.0:  # also rejects NaN
            raise ValueError(f"dropout must be in [0, 1), got {dropout}")


class TwoChannelsModel(_PairModel):
    """The naive model: both digits as a 2-channel image, then 3 linear layers."""

    def __init__(self, dropout: float = 0.0):
        super().__init__(dropout)
        self.net = nn.Sequential(features(2), _mlp([FEATURES, 128, 64, 1], dropout))

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"logit": self.net(x).squeeze(1).float()}


class _Siamese(_PairModel):
    """Two branches, one per digit; `shared` ones are a single module applied to both digits."""

    shared = False

    def _make_branches(self, make) -> None:
        # One module for shared weights (so a state_dict holds it once), two otherwise.
        self.branches = nn.ModuleList([make()] if self.shared else [make(), make()])

    def branch_pair(self) -> tuple[nn.Module, nn.Module]:
        return self.branches[0], self.branches[-1]

    def _encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        a, b = x[:, 0:1], x[:, 1:2]
        if self.shared:  # one batched pass instead of two: same result, half the kernel launches
            return self.branches[0](torch.cat([a, b])).chunk(2)
        first, second = self.branch_pair()
        return first(a), second(b)


class TwoBranchesModel(_Siamese):
    """Each digit through its own feature module and 3 linear layers to one value; the logit is their difference."""

    def __init__(self, dropout: float = 0.0):
        super().__init__(dropout)
        self._make_branches(lambda: nn.Sequential(features(1), _mlp([FEATURES, 128, 64, 1], dropout)))

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        v1, v2 = self._encode(x)
        # A branch's value acts as a digit score: second minus first is positive when digit 1 <= digit 2.
        return {"logit": (v2 - v1).squeeze(1).float()}


class WeightSharingBranchesModel(TwoBranchesModel):
    shared = True


class BranchesToVecModel(_Siamese):
    """Each digit through its own branch to a 10-vector; the concatenated 20 go through 2 linear layers."""

    def __init__(self, dropout: float = 0.0):
        super().__init__(dropout)
        self._make_branches(
            lambda: nn.Sequential(features(1), _mlp([FEATURES, 128, NUM_DIGITS], dropout, last_act=True)))
        self.head = _mlp([2 * NUM_DIGITS, 64, 1], dropout)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"logit": self.head(torch.cat(self._encode(x), dim=1)).squeeze(1).float()}


class WeightSharingBranchesToVecModel(BranchesToVecModel):
    shared = True


class WeightSharingAuxiliaryModel(_Siamese):
    """Shared branches to 128 each; 256 -> 100 -> 1 logit, and a (shared) digit head on each branch's 128.

    The report reduces the joint 100-vector to 10 classes; a head per image is what gives both digits a class.
    """

    shared = True
    has_digit_heads = True

    def __init__(self, dropout: float = 0.0):
        super().__init__(dropout)
        self._make_branches(lambda: nn.Sequential(features(1), _mlp([FEATURES, 128], dropout, last_act=True)))
        self.head = _mlp([2 * 128, 100, 1], dropout)
        self.digit_head = nn.Linear(128, NUM_DIGITS)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        z1, z2 = self._encode(x)
        digits = torch.stack([self.digit_head(z1), self.digit_head(z2)], dim=1)
        return {"logit": self.head(torch.cat([z1, z2], dim=1)).squeeze(1).float(), "digits": digits.float()}


class DirectClassificationModel(_Siamese):
    """Shared branch classifies each digit (2 linear layers); the logit is derived from the two distributions."""

    shared = True
    has_digit_heads = True
    digit_only = True

    def __init__(self, dropout: float = 0.0):
        super().__init__(dropout)
        self._make_branches(lambda: nn.Sequential(features(1), _mlp([FEATURES, 128, NUM_DIGITS], dropout)))

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        digits = torch.stack(self._encode(x), dim=1).float()
        return {"logit": comparison_logit(digits), "digits": digits}


ARCHITECTURES: dict[str, type[_PairModel]] = {
    "two_channel": TwoChannelsModel,
    "two_branches": TwoBranchesModel,
    "shared_branches": WeightSharingBranchesModel,
    "branches_to_vec": BranchesToVecModel,
    "shared_to_vec": WeightSharingBranchesToVecModel,
    "shared_aux": WeightSharingAuxiliaryModel,
    "direct_digits": DirectClassificationModel,
}


def build(name: str, dropout: float) -> nn.Module:
    """The registered architecture `name`; an unknown name raises KeyError listing the known ones."""
    try:
        cls = ARCHITECTURES[name]
    except KeyError:
        raise KeyError(f"unknown architecture {name!r}; known: {', '.join(ARCHITECTURES)}") from None
    return cls(dropout=dropout)
