"""Training losses for the transformer classifier: focal loss and class-weighted cross-entropy.

Both take the per-class weight vector at call time (not at construction) because the adaptive controller
changes it between evaluations; the training loop passes the controller's current ``alpha`` every step.

Focal loss (Lin et al., 2017), multi-class form, for a sample of true class ``t`` with predicted probability
``p_t``::

    FL = -alpha[t] · (1 - p_t)^gamma · log(p_t)

averaged over the batch. ``gamma = 0`` and ``alpha = 1`` give plain cross-entropy. The mean is a plain mean
over samples (not divided by the sum of alphas as torch's weighted cross-entropy does) so raising one class's
alpha really raises that class's share of the gradient instead of being normalized away.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal, Protocol

import torch
import torch.nn.functional as F

from prompt_sentinel.errors import TrainingError

LossKind = Literal["focal", "weighted_ce"]


def focal_loss(
    logits: torch.Tensor,
    targets: torch.Tensor,
    gamma: float = 3.0,
    alpha: torch.Tensor | None = None,
) -> torch.Tensor:
    """Mean multi-class focal loss. ``logits``: (batch, classes); ``targets``: (batch,) class ids."""
    # log-softmax in float32: under bf16/fp16 autocast (1 - p)^gamma underflows for confident samples
    log_p = F.log_softmax(logits.float(), dim=-1)
    log_pt = log_p.gather(1, targets.unsqueeze(1)).squeeze(1)
    pt = log_pt.exp()
    loss = -((1.0 - pt).clamp(min=0.0) ** gamma) * log_pt
    if alpha is not None:
        loss = alpha.to(loss.device, loss.dtype)[targets] * loss
    return loss.mean()


def weighted_cross_entropy(
    logits: torch.Tensor, targets: torch.Tensor, weight: torch.Tensor | None = None
) -> torch.Tensor:
    """Class-weighted cross-entropy (torch semantics: the batch mean is normalized by the weights' sum)."""
    w = None if weight is None else weight.to(logits.device, torch.float32)
    return F.cross_entropy(logits.float(), targets, weight=w)


class LossFn(Protocol):
    def __call__(self, logits: torch.Tensor, targets: torch.Tensor, alpha: torch.Tensor) -> torch.Tensor: ...


def build_loss(kind: LossKind, gamma: float = 3.0) -> LossFn:
    """The configured loss as ``fn(logits, targets, alpha)``; ``alpha`` is the current per-class weight vector."""
    if kind == "focal":
        if gamma < 0:
            raise TrainingError(f"transformer.focal_gamma must be >= 0, got {gamma}")
        return lambda logits, targets, alpha: focal_loss(logits, targets, gamma=gamma, alpha=alpha)
    if kind == "weighted_ce":
        return lambda logits, targets, alpha: weighted_cross_entropy(logits, targets, weight=alpha)
    raise TrainingError(f"transformer.loss must be one of ['focal', 'weighted_ce'], got {kind!r}")


def initial_alpha(configured: Sequence[float] | None, num_classes: int) -> list[float]:
    """The starting class weights: the configured vector, or all ones when it is None."""
    if configured is None:
        return [1.0] * num_classes
    alpha = [float(a) for a in configured]
    if len(alpha) != num_classes:
        raise TrainingError(
            f"transformer.focal_alpha has {len(alpha)} values {alpha} but there are {num_classes} classes"
        )
    if any(a <= 0 for a in alpha):
        raise TrainingError(f"transformer.focal_alpha values must be > 0, got {alpha}")
    return alpha
