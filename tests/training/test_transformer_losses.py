"""Focal loss and weighted cross-entropy against hand-computed values."""

from __future__ import annotations

import math

import pytest
import torch

from prompt_sentinel.errors import TrainingError
from prompt_sentinel.training.transformer.losses import build_loss, focal_loss, initial_alpha, weighted_cross_entropy


def _softmax(row: list[float]) -> list[float]:
    exps = [math.exp(v) for v in row]
    return [e / sum(exps) for e in exps]


def test_focal_loss_matches_hand_computed_value() -> None:
    logits = [[2.0, 0.5, -1.0], [0.1, 0.2, 3.0]]
    targets = [1, 2]
    gamma, alpha = 2.0, [1.0, 0.5, 2.0]
    expected = 0.0
    for row, t in zip(logits, targets, strict=True):
        pt = _softmax(row)[t]
        expected += -alpha[t] * (1 - pt) ** gamma * math.log(pt)
    expected /= len(targets)

    got = focal_loss(torch.tensor(logits), torch.tensor(targets), gamma=gamma, alpha=torch.tensor(alpha))
    assert got.item() == pytest.approx(expected, rel=1e-6)
    # by hand: p_t = softmax([2, .5, -1])[1] = 0.17529 → 0.5·0.82471²·1.74132 = 0.59217;
    # p_t = softmax([.1, .2, 3])[2] = 0.89619 → 2·0.10381²·0.10960 = 0.00236; mean 0.29727
    assert got.item() == pytest.approx(0.29727, abs=1e-5)


def test_focal_loss_gamma_zero_without_alpha_is_cross_entropy() -> None:
    torch.manual_seed(0)
    logits, targets = torch.randn(8, 3), torch.randint(0, 3, (8,))
    ce = torch.nn.functional.cross_entropy(logits, targets)
    assert focal_loss(logits, targets, gamma=0.0).item() == pytest.approx(ce.item(), rel=1e-6)


def test_focal_loss_down_weights_confident_samples() -> None:
    targets = torch.tensor([0])
    confident, unsure = torch.tensor([[5.0, 0.0, 0.0]]), torch.tensor([[0.5, 0.0, 0.0]])
    ce_ratio = (
        torch.nn.functional.cross_entropy(confident, targets) / torch.nn.functional.cross_entropy(unsure, targets)
    ).item()
    focal_ratio = (focal_loss(confident, targets, gamma=3.0) / focal_loss(unsure, targets, gamma=3.0)).item()
    assert focal_ratio < ce_ratio / 10


def test_raising_one_class_alpha_raises_only_its_share() -> None:
    logits, targets = torch.tensor([[0.3, 0.1, 0.2], [0.2, 0.1, 0.9]]), torch.tensor([0, 2])
    base = focal_loss(logits, targets, gamma=3.0, alpha=torch.tensor([1.0, 1.0, 1.0]))
    raised = focal_loss(logits, targets, gamma=3.0, alpha=torch.tensor([1.0, 1.0, 2.0]))
    only_class0 = focal_loss(logits[:1], targets[:1], gamma=3.0) / 2
    only_class2 = focal_loss(logits[1:], targets[1:], gamma=3.0) / 2
    assert base.item() == pytest.approx((only_class0 + only_class2).item(), rel=1e-6)
    assert raised.item() == pytest.approx((only_class0 + 2 * only_class2).item(), rel=1e-6)


def test_weighted_cross_entropy_uses_torch_weight_semantics() -> None:
    logits, targets = torch.tensor([[1.0, 0.0], [0.0, 2.0]]), torch.tensor([0, 1])
    weight = torch.tensor([1.0, 3.0])
    p0, p1 = _softmax([1.0, 0.0])[0], _softmax([0.0, 2.0])[1]
    expected = (-1.0 * math.log(p0) - 3.0 * math.log(p1)) / (1.0 + 3.0)
    assert weighted_cross_entropy(logits, targets, weight).item() == pytest.approx(expected, rel=1e-6)


def test_build_loss_and_initial_alpha() -> None:
    logits, targets, alpha = torch.tensor([[1.0, 0.0, 0.0]]), torch.tensor([0]), torch.ones(3)
    assert build_loss("focal", 0.0)(logits, targets, alpha).item() == pytest.approx(
        torch.nn.functional.cross_entropy(logits, targets).item()
    )
    assert build_loss("weighted_ce")(logits, targets, alpha).item() == pytest.approx(
        torch.nn.functional.cross_entropy(logits, targets).item()
    )
    with pytest.raises(TrainingError, match=r"transformer\.loss"):
        build_loss("hinge")  # type: ignore[arg-type]
    assert initial_alpha(None, 4) == [1.0, 1.0, 1.0, 1.0]
    assert initial_alpha([1, 1, 1.5], 3) == [1.0, 1.0, 1.5]
    with pytest.raises(TrainingError, match="3 classes"):
        initial_alpha([1.0, 2.0], 3)
    with pytest.raises(TrainingError, match="> 0"):
        initial_alpha([1.0, 0.0, 1.0], 3)
