"""From class probabilities to a label and an allow / review / block decision — one rule for every caller.

The label is the class of least expected cost (a Bayes decision): with ``P`` the class probabilities and
``C[true, predicted]`` a cost matrix that is 0 on the diagonal and 1 elsewhere, except

* ``C[benign, malicious] = false_alarm_cost`` and
* ``C[malicious, benign] = missed_threat_cost``,

the label is ``argmin_j Σ_i P_i · C[i, j]``. With both costs at 1 this is the most probable class. Raising them
makes the model answer *suspicious* when it is torn between benign and malicious, which is what the custom
score asks for: only the two critical confusions are punished exponentially. Training tunes both costs on
held-out predictions (:func:`tune_costs`) and writes them into the model's descriptor, so evaluation, the
MLflow pyfunc and the KServe predictor all label a prompt the same way.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Literal

import numpy as np

from prompt_sentinel.config import DecisionConfig, LabelRoles
from prompt_sentinel.metrics import confusion_matrix, score_from_confusion

Decision = Literal["allow", "review", "block"]


def cost_matrix(n_classes: int, roles: LabelRoles, false_alarm_cost: float, missed_threat_cost: float) -> np.ndarray:
    """``C[true, predicted]``: 0 for a correct label, 1 for a mistake, the given costs for the critical two."""
    costs = np.ones((n_classes, n_classes)) - np.eye(n_classes)
    if roles.benign is not None and roles.malicious is not None:
        costs[roles.benign, roles.malicious] = false_alarm_cost
        costs[roles.malicious, roles.benign] = missed_threat_cost
    return costs


def assign_labels(proba: np.ndarray, roles: LabelRoles, decision: DecisionConfig) -> np.ndarray:
    """Label ids (int64, shape ``[n]``) of least expected cost under ``decision``'s critical-error costs."""
    proba = np.atleast_2d(np.asarray(proba, dtype=np.float64))
    if proba.shape[0] == 0:
        return np.zeros(0, dtype=np.int64)
    if decision.false_alarm_cost == 1.0 and decision.missed_threat_cost == 1.0:
        return proba.argmax(axis=1).astype(np.int64)
    costs = cost_matrix(proba.shape[1], roles, decision.false_alarm_cost, decision.missed_threat_cost)
    return (proba @ costs).argmin(axis=1).astype(np.int64)


def decide(
    proba: np.ndarray, roles: LabelRoles, decision: DecisionConfig, label_ids: np.ndarray | None = None
) -> list[Decision]:
    """allow / review / block per row.

    Block when the label is malicious or P(malicious) reaches ``block_threshold``; otherwise review when the
    label is not benign or P(non-benign) reaches ``review_threshold``; otherwise allow. The label rule keeps a
    "malicious" answer from ever being allowed; the thresholds let a security team be stricter still.
    """
    proba = np.atleast_2d(np.asarray(proba))
    labels = assign_labels(proba, roles, decision) if label_ids is None else np.asarray(label_ids)
    out: list[Decision] = []
    for row, label in zip(proba, labels, strict=True):
        if roles.malicious is not None and (
            label == roles.malicious or row[roles.malicious] >= decision.block_threshold
        ):
            out.append("block")
        elif roles.benign is not None and (
            label != roles.benign or 1.0 - row[roles.benign] >= decision.review_threshold
        ):
            out.append("review")
        else:
            out.append("allow")
    return out


@dataclass(frozen=True)
class CostTuning:
    """The costs that maximized the custom score on held-out predictions, and what they changed."""

    false_alarm_cost: float
    missed_threat_cost: float
    custom_score: float
    argmax_custom_score: float
    rows: int
    source: str

    def as_dict(self) -> dict[str, float | int | str]:
        return asdict(self)

    def apply(self, decision: DecisionConfig) -> DecisionConfig:
        return decision.model_copy(
            update={"false_alarm_cost": self.false_alarm_cost, "missed_threat_cost": self.missed_threat_cost}
        )


def tune_costs(
    y_true: Sequence[int] | np.ndarray,
    proba: np.ndarray,
    roles: LabelRoles,
    grid: Sequence[float],
    source: str = "held-out",
) -> CostTuning:
    """The (false_alarm_cost, missed_threat_cost) pair from ``grid`` × ``grid`` with the best custom score.

    ``proba`` must be held-out predictions (out-of-fold or a validation split), never the rows the model was
    fitted on. Ties go to the smaller total cost, so the rule departs from argmax only when that pays.
    """
    y = np.asarray(y_true, dtype=np.int64)
    proba = np.asarray(proba, dtype=np.float64)
    if proba.ndim != 2 or proba.shape[0] != len(y):
        raise ValueError(f"proba must have shape [{len(y)}, n_classes]; got {proba.shape}")
    if len(y) == 0:
        raise ValueError("cannot tune decision costs on zero rows")
    bad = [c for c in grid if not c >= 1]
    if not grid or bad:
        raise ValueError(f"grid must hold costs >= 1; got {list(grid)}")
    n_classes = proba.shape[1]
    argmax_score = score_from_confusion(confusion_matrix(y, proba.argmax(axis=1), n_classes), roles).custom_score
    if roles.benign is None or roles.malicious is None:
        return CostTuning(1.0, 1.0, argmax_score, argmax_score, len(y), source)
    best = (argmax_score, 1.0, 1.0)
    pairs = sorted(((a, b) for a in grid for b in grid), key=lambda ab: (ab[0] + ab[1], ab[0]))
    for false_alarm, missed in pairs:
        costs = cost_matrix(n_classes, roles, false_alarm, missed)
        pred = (proba @ costs).argmin(axis=1)
        score = score_from_confusion(confusion_matrix(y, pred, n_classes), roles).custom_score
        if score > best[0] + 1e-12:
            best = (score, float(false_alarm), float(missed))
    return CostTuning(best[1], best[2], best[0], argmax_score, len(y), source)
