"""The security custom score — one definition shared by search, transformer training, evaluation and selection.

For the default roles (0 benign, 1 suspicious, 2 malicious)::

    base     = 0.5·recall_c2 + 0.3·precision_c1 + 0.2·f1_c0
    critical = P(pred 2 | true 0) + P(pred 0 | true 2)
    custom   = base · exp(-5 · critical)

"c0/c1/c2" mean the classes playing the benign/suspicious/malicious roles (from config), so the score works
for any label set. Where a role is absent its term is dropped and the remaining weights are renormalized;
with no security roles at all the score falls back to macro F1 (and ``critical`` is 0).
Zero-division follows scikit-learn's ``zero_division=0``: a class never predicted has precision 0, a class
absent from ``y_true`` has recall 0, and a critical rate whose true class is absent is 0.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from functools import partial

import numpy as np
from sklearn.metrics import confusion_matrix as sklearn_confusion_matrix
from sklearn.metrics import f1_score, make_scorer

from prompt_sentinel.config import LabelRoles

WEIGHT_RECALL_MALICIOUS = 0.5
WEIGHT_PRECISION_SUSPICIOUS = 0.3
WEIGHT_F1_BENIGN = 0.2
CRITICAL_PENALTY = 5.0


@dataclass(frozen=True)
class SecurityScore:
    custom_score: float
    base: float
    critical: float
    recall_c2: float | None
    precision_c1: float | None
    f1_c0: float | None
    false_alarm_rate: float | None  # P(pred malicious | true benign)
    missed_threat_rate: float | None  # P(pred benign | true malicious)

    def as_dict(self) -> dict[str, float | None]:
        return asdict(self)


def _safe_div(num: float, den: float) -> float:
    return float(num) / float(den) if den else 0.0


def _precision(cm: np.ndarray, k: int) -> float:
    return _safe_div(cm[k, k], cm[:, k].sum())


def _recall(cm: np.ndarray, k: int) -> float:
    return _safe_div(cm[k, k], cm[k, :].sum())


def _f1(cm: np.ndarray, k: int) -> float:
    p, r = _precision(cm, k), _recall(cm, k)
    return _safe_div(2 * p * r, p + r)


def confusion_matrix(y_true: np.ndarray, y_pred: np.ndarray, n_classes: int) -> np.ndarray:
    """Confusion matrix (rows = true class, columns = predicted) via one bincount; ids must be 0..n_classes-1."""
    y_true = np.asarray(y_true, dtype=np.int64)
    y_pred = np.asarray(y_pred, dtype=np.int64)
    codes = y_true * n_classes + y_pred
    return np.bincount(codes, minlength=n_classes * n_classes).reshape(n_classes, n_classes)


def score_from_confusion(cm: np.ndarray, roles: LabelRoles) -> SecurityScore:
    """Security score from a confusion matrix (rows = true class, columns = predicted class)."""
    cm = np.asarray(cm, dtype=float)
    b, s, m = roles.benign, roles.suspicious, roles.malicious
    recall_c2 = _recall(cm, m) if m is not None else None
    precision_c1 = _precision(cm, s) if s is not None else None
    f1_c0 = _f1(cm, b) if b is not None else None
    false_alarm = _safe_div(cm[b, m], cm[b, :].sum()) if b is not None and m is not None else None
    missed = _safe_div(cm[m, b], cm[m, :].sum()) if b is not None and m is not None else None

    terms = [
        (WEIGHT_RECALL_MALICIOUS, recall_c2),
        (WEIGHT_PRECISION_SUSPICIOUS, precision_c1),
        (WEIGHT_F1_BENIGN, f1_c0),
    ]
    present = [(w, v) for w, v in terms if v is not None]
    if present:
        base = sum(w * v for w, v in present) / sum(w for w, _ in present)
    else:  # no security roles: an ordinary N-class problem
        base = float(np.mean([_f1(cm, k) for k in range(cm.shape[0])]))
    critical = (false_alarm or 0.0) + (missed or 0.0)
    return SecurityScore(
        custom_score=base * math.exp(-CRITICAL_PENALTY * critical),
        base=base,
        critical=critical,
        recall_c2=recall_c2,
        precision_c1=precision_c1,
        f1_c0=f1_c0,
        false_alarm_rate=false_alarm,
        missed_threat_rate=missed,
    )


def security_score(y_true, y_pred, roles: LabelRoles, n_classes: int) -> SecurityScore:
    cm = sklearn_confusion_matrix(np.asarray(y_true), np.asarray(y_pred), labels=list(range(n_classes)))
    return score_from_confusion(cm, roles)


def custom_score(y_true, y_pred, roles: LabelRoles, n_classes: int) -> float:
    return security_score(y_true, y_pred, roles, n_classes).custom_score


def macro_f1(y_true, y_pred, n_classes: int) -> float:
    return float(f1_score(y_true, y_pred, labels=list(range(n_classes)), average="macro", zero_division=0))


def custom_scorer(roles: LabelRoles, n_classes: int):
    """An sklearn scorer (``scoring=`` in searches) maximizing the custom score."""
    return make_scorer(partial(custom_score, roles=roles, n_classes=n_classes))
