"""models.digit_pairs: the seven digit-pair networks' outputs, gradients, size budget, weight sharing, dropout."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn
from torch.nn import functional as F

from models.digit_pairs import ARCHITECTURES, build, comparison_logit

NAMES = list(ARCHITECTURES)
SHARED_VS_UNSHARED = [("shared_branches", "two_branches"), ("shared_to_vec", "branches_to_vec")]
N = 6


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """These models are tiny: with a second thread contending for a busy 2-core machine the module took a minute
    instead of seconds."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def batch() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(5)
    x = torch.randn(N, 2, 14, 14, generator=g)
    digits = torch.randint(0, 10, (N, 2), generator=g)
    return x, (digits[:, 0] <= digits[:, 1]).float(), digits


def _n_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def _loss(model: nn.Module, out: dict[str, torch.Tensor], target: torch.Tensor, digits: torch.Tensor):
    digit_loss = F.cross_entropy(out["digits"].reshape(-1, 10), digits.reshape(-1)) if "digits" in out else 0.0
    if model.digit_only:
        return digit_loss
    return F.binary_cross_entropy_with_logits(out["logit"], target) + digit_loss


@pytest.mark.parametrize("name", NAMES)
def test_forward_shapes_and_finite(batch, name):
    torch.manual_seed(0)
    model = build(name, dropout=0.3).eval()
    out = model(batch[0])
    assert out["logit"].shape == (N,) and out["logit"].dtype == torch.float32
    assert torch.isfinite(out["logit"]).all()
    if model.has_digit_heads:
        assert set(out) == {"logit", "digits"}
        assert out["digits"].shape == (N, 2, 10) and torch.isfinite(out["digits"]).all()
    else:
        assert set(out) == {"logit"}
    # A single pair and a large-valued input work too (no batch-size or overflow assumptions).
    assert model(batch[0][:1])["logit"].shape == (1,)
    assert torch.isfinite(model(batch[0] * 1e3)["logit"]).all()


@pytest.mark.parametrize("name", NAMES)
def test_loss_reaches_every_parameter(batch, name):
    torch.manual_seed(0)
    model = build(name, dropout=0.1).train()
    x, target, digits = batch
    _loss(model, model(x), target, digits).backward()
    for pname, p in model.named_parameters():
        assert p.grad is not None, pname
        assert torch.isfinite(p.grad).all(), pname
        assert p.grad.abs().sum() > 0, pname


@pytest.mark.parametrize("name", NAMES)
def test_within_the_course_parameter_budget(name):
    assert _n_params(build(name, dropout=0.0)) <= 70_000


@pytest.mark.parametrize("name", NAMES)
def test_same_feature_module_everywhere(name):
    # Report 1.2: every network uses the same two conv layers, each followed by max-pooling and ReLU.
    model = build(name, dropout=0.0)
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    assert convs and len(convs) % 2 == 0
    for first, second in zip(convs[::2], convs[1::2], strict=True):
        assert first.out_channels == 16 and (second.in_channels, second.out_channels) == (16, 32)
        assert first.kernel_size == second.kernel_size == (3, 3)
    assert {m.in_channels for m in convs[::2]} == ({2} if name == "two_channel" else {1})
    types = [type(m) for m in model.modules() if isinstance(m, (nn.Conv2d, nn.MaxPool2d, nn.ReLU))]
    for i, t in enumerate(types):
        if t is nn.Conv2d:
            assert types[i + 1: i + 3] == [nn.MaxPool2d, nn.ReLU]


@pytest.mark.parametrize("shared, unshared", SHARED_VS_UNSHARED)
def test_weight_sharing_shares(shared, unshared):
    s, u = build(shared, dropout=0.0), build(unshared, dropout=0.0)
    assert _n_params(s) < _n_params(u)
    # Same head, one branch instead of two: the difference is exactly one branch.
    assert _n_params(u) - _n_params(s) == _n_params(s.branch_pair()[0])
    first, second = s.branch_pair()
    assert first is second
    first, second = u.branch_pair()
    assert first is not second


@pytest.mark.parametrize("name", ["shared_branches", "shared_to_vec", "shared_aux", "direct_digits"])
def test_shared_models_use_one_branch(name):
    first, second = build(name, dropout=0.0).branch_pair()
    assert first is second


def test_shared_branches_is_antisymmetric(batch):
    # One shared scorer and logit = f(second) - f(first): swapping the digits negates the logit exactly.
    torch.manual_seed(0)
    model = build("shared_branches", dropout=0.0).eval()
    x = batch[0]
    torch.testing.assert_close(model(x.flip(1))["logit"], -model(x)["logit"], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("name", ["shared_aux", "direct_digits"])
def test_digit_heads_follow_their_image(batch, name):
    torch.manual_seed(0)
    model = build(name, dropout=0.0).eval()
    x = batch[0]
    torch.testing.assert_close(model(x.flip(1))["digits"], model(x)["digits"].flip(1), rtol=1e-5, atol=1e-5)


def _peaked(pairs: list[tuple[int, int]], height: float) -> torch.Tensor:
    logits = torch.zeros(len(pairs), 2, 10)
    for row, (d1, d2) in enumerate(pairs):
        logits[row, 0, d1] = logits[row, 1, d2] = height
    return logits


@pytest.mark.parametrize("height", [10.0, 1e4])
def test_comparison_logit_on_hand_made_digits(height):
    logit = comparison_logit(_peaked([(3, 7), (8, 2), (5, 5), (0, 0), (9, 9)], height))
    assert torch.isfinite(logit).all()
    assert logit[0] > 0 and logit[1] < 0
    assert (logit[2:] > 0).all()  # equal digits: "<=" holds


def test_comparison_logit_matches_the_probability():
    g = torch.Generator().manual_seed(1)
    logits = torch.randn(5, 2, 10, generator=g) * 3
    p1, p2 = logits.softmax(-1).unbind(1)
    p = torch.einsum("ni,ij,nj->n", p1, torch.ones(10, 10).triu(), p2)
    torch.testing.assert_close(comparison_logit(logits), torch.log(p) - torch.log1p(-p), rtol=1e-4, atol=1e-4)


def test_direct_digits_logit_is_derived_from_its_digits(batch):
    model = build("direct_digits", dropout=0.0).eval()
    out = model(batch[0])
    torch.testing.assert_close(out["logit"], comparison_logit(out["digits"]))
    assert model.digit_only and model.has_digit_heads


@pytest.mark.parametrize("name", NAMES)
def test_dropout_is_used_in_training_only(batch, name):
    torch.manual_seed(0)
    model = build(name, dropout=0.9)
    assert any(isinstance(m, nn.Dropout) and m.p == 0.9 for m in model.modules())
    x = batch[0]
    model.train()
    assert not torch.equal(model(x)["logit"], model(x)["logit"])
    model.eval()
    assert torch.equal(model(x)["logit"], model(x)["logit"])


@pytest.mark.parametrize("dropout", [-0.1, 1.0, math.nan])
def test_dropout_outside_unit_interval_raises(dropout):
    with pytest.raises(ValueError, match="dropout"):
        build("two_channel", dropout=dropout)


def test_unknown_name_raises_naming_the_known_ones():
    with pytest.raises(KeyError, match="unknown architecture 'resnet50'") as info:
        build("resnet50", dropout=0.0)
    for name in NAMES:
        assert name in str(info.value)


def test_registry_names_and_classes():
    assert NAMES == ["two_channel", "two_branches", "shared_branches", "branches_to_vec", "shared_to_vec",
                     "shared_aux", "direct_digits"]
    assert [cls.__name__ for cls in ARCHITECTURES.values()] == [
        "TwoChannelsModel", "TwoBranchesModel", "WeightSharingBranchesModel", "BranchesToVecModel",
        "WeightSharingBranchesToVecModel", "WeightSharingAuxiliaryModel", "DirectClassificationModel"]
    assert [name for name, cls in ARCHITECTURES.items() if cls.has_digit_heads] == ["shared_aux", "direct_digits"]
    assert [name for name, cls in ARCHITECTURES.items() if cls.digit_only] == ["direct_digits"]
