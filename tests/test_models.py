"""models.shapes.ShapesNet: output shapes, gradients to every parameter, the fixed backbone."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from datasets.shapes_generator import generate
from models.shapes import ShapesNet
from search.experiments.shapes import DEFAULTS, ShapesTask


@pytest.fixture(scope="module")
def batch() -> tuple[torch.Tensor, torch.Tensor]:
    images, counts = generate(8, seed=21)
    return images[:, None].float() / 255, counts


@pytest.mark.parametrize("hidden", [0, 64])
def test_forward_shapes_and_probabilities(batch, hidden):
    torch.manual_seed(0)
    model = ShapesNet(dropout=0.5, hidden=hidden).eval()
    x, _ = batch
    log_probs, counts = model(x)
    assert log_probs.shape == (8, 135) and counts.shape == (8, 6)
    assert log_probs.dtype == torch.float32 and counts.dtype == torch.float32
    assert torch.isfinite(log_probs).all() and torch.isfinite(counts).all()
    assert (log_probs <= 0).all()
    torch.testing.assert_close(log_probs.exp().sum(1), torch.ones(8), rtol=0, atol=1e-5)


@pytest.mark.parametrize("hidden", [0, 128])
def test_multitask_loss_reaches_every_parameter(batch, hidden):
    torch.manual_seed(0)
    model = ShapesNet(dropout=0.5, hidden=hidden).train()
    x, y = batch
    config = {**DEFAULTS, "setting": "multitask", "lambda_cnt": 2.0}
    ShapesTask().loss(model(x), y, config).backward()
    for name, p in model.named_parameters():
        assert p.grad is not None, name
        assert torch.isfinite(p.grad).all(), name
        assert p.grad.abs().sum() > 0, name


@pytest.mark.parametrize("hidden", [0, 64])
def test_backbone_is_the_fixed_one(hidden):
    model = ShapesNet(dropout=0.3, hidden=hidden)
    # REFERENCE.md §1: Conv2d(1,8,3,1,1) ReLU, Conv2d(8,16,3,1,1) ReLU, Conv2d(16,32,3,1,1) ReLU,
    # Conv2d(32,64,3,1,1) ReLU, Flatten, Linear(64*28*28,256) ReLU. Nothing else (no dropout/BN there).
    layers = list(model.backbone)
    assert [type(m) for m in layers] == [nn.Conv2d, nn.ReLU] * 4 + [nn.Flatten, nn.Linear, nn.ReLU]
    convs = [m for m in layers if isinstance(m, nn.Conv2d)]
    assert [(c.in_channels, c.out_channels) for c in convs] == [(1, 8), (8, 16), (16, 32), (32, 64)]
    for c in convs:
        assert c.kernel_size == (3, 3) and c.stride == (1, 1) and c.padding == (1, 1)
        assert c.dilation == (1, 1) and c.groups == 1 and c.bias is not None
    linear = layers[-2]
    assert (linear.in_features, linear.out_features) == (64 * 28 * 28, 256) and linear.bias is not None
    expected = sum(o * i * 9 + o for i, o in [(1, 8), (8, 16), (16, 32), (32, 64)]) + 64 * 28 * 28 * 256 + 256
    assert sum(p.numel() for p in model.backbone.parameters()) == expected
    # Every parameter outside the backbone belongs to one of the two heads.
    others = {n.split(".")[0] for n, _ in model.named_parameters()} - {"backbone"}
    assert others == {"head_cls", "head_cnt"}


@pytest.mark.parametrize("hidden", [0, 64])
def test_heads(hidden):
    model = ShapesNet(dropout=0.25, hidden=hidden)
    for head, out in ((model.head_cls, 135), (model.head_cnt, 6)):
        linears = [m for m in head if isinstance(m, nn.Linear)]
        dims = [(m.in_features, m.out_features) for m in linears]
        assert dims == ([(256, out)] if hidden == 0 else [(256, hidden), (hidden, out)])
        assert all(m.p == 0.25 for m in head if isinstance(m, nn.Dropout))
        assert any(isinstance(m, nn.Dropout) for m in head)


def test_dropout_only_in_training(batch):
    torch.manual_seed(0)
    model = ShapesNet(dropout=0.5)
    x, _ = batch
    model.eval()
    assert torch.equal(model(x)[0], model(x)[0])
    model.train()
    assert not torch.equal(model(x)[0], model(x)[0])


@pytest.mark.parametrize("dropout", [-0.1, 1.0, 1.5, math.nan])
def test_dropout_outside_unit_interval_raises(dropout):
    with pytest.raises(ValueError, match="dropout"):
        ShapesNet(dropout=dropout)


def test_dropout_zero_allowed():
    assert all(m.p == 0.0 for m in ShapesNet(dropout=0.0).modules() if isinstance(m, nn.Dropout))
