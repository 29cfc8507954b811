"""Fit a probability calibrator on validation predictions, and keep it only when it lowers the NLL there.

``training.calibration.method``: ``auto`` = temperature scaling for transformers, ``classical_method``
(sigmoid or isotonic) for scikit-learn models, nothing for ensembles (their members are calibrated each). The
keep-or-drop test is honest: the calibrator is fitted on ``folds - 1`` parts of the validation rows and its NLL
measured on the remaining part, fold by fold (cross-fitting); it is kept only when that cross-fitted NLL is below
the uncalibrated NLL of the same rows. A kept calibrator is then refitted on all validation rows and stored with
the model (:class:`~prompt_sentinel.models.calibration.Calibrator`).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from prompt_sentinel.config import CalibrationConfig
from prompt_sentinel.models.calibration import EPS, Calibrator, logit

log = logging.getLogger(__name__)

FAMILY_METHOD = {"transformer": "temperature", "ensemble": "none"}
TEMPERATURE_BOUNDS = (0.05, 20.0)


def negative_log_likelihood(y: np.ndarray, proba: np.ndarray) -> float:
    """Mean −log p(true class), probabilities clipped at 1e-12."""
    p = np.asarray(proba, dtype=np.float64)[np.arange(len(y)), np.asarray(y, dtype=np.int64)]
    return float(-np.log(np.clip(p, 1e-12, None)).mean())


def fit_temperature(y: np.ndarray, proba: np.ndarray) -> Calibrator:
    """The temperature minimizing the NLL of ``softmax(log p / T)`` (bounded scalar search over log T)."""
    from scipy.optimize import minimize_scalar

    logp = np.log(np.clip(np.asarray(proba, dtype=np.float64), 1e-12, None))
    rows = np.arange(len(y))

    def nll(log_t: float) -> float:
        z = logp / np.exp(log_t)
        z -= z.max(axis=1, keepdims=True)
        return float((np.log(np.exp(z).sum(axis=1)) - z[rows, y]).mean())

    low, high = np.log(TEMPERATURE_BOUNDS[0]), np.log(TEMPERATURE_BOUNDS[1])
    result = minimize_scalar(nll, bounds=(low, high), method="bounded", options={"xatol": 1e-4})
    return Calibrator("temperature", {"temperature": float(np.exp(result.x))})


def fit_sigmoid(y: np.ndarray, proba: np.ndarray) -> Calibrator:
    """Per class, a one-feature logistic regression of ``1[y == k]`` on ``logit(p_k)`` (Platt scaling)."""
    from sklearn.linear_model import LogisticRegression

    slopes, intercepts = [], []
    for k in range(proba.shape[1]):
        target = (y == k).astype(int)
        if target.min() == target.max():  # the class is absent (or alone): leave it as it is
            slopes.append(1.0)
            intercepts.append(0.0)
            continue
        model = LogisticRegression(C=1e4, max_iter=1000).fit(logit(proba[:, k])[:, None], target)
        slopes.append(float(model.coef_[0, 0]))
        intercepts.append(float(model.intercept_[0]))
    return Calibrator("sigmoid", {"slopes": slopes, "intercepts": intercepts})


def fit_isotonic(y: np.ndarray, proba: np.ndarray) -> Calibrator:
    """Per class, isotonic regression of ``1[y == k]`` on ``p_k``, stored as its threshold points."""
    from sklearn.isotonic import IsotonicRegression

    xs, ys = [], []
    for k in range(proba.shape[1]):
        model = IsotonicRegression(y_min=0.0, y_max=1.0, out_of_bounds="clip")
        model.fit(proba[:, k], (y == k).astype(float))
        xs.append([float(v) for v in model.X_thresholds_])
        ys.append([float(v) for v in model.y_thresholds_])
    return Calibrator("isotonic", {"x": xs, "y": ys})


FITTERS = {"temperature": fit_temperature, "sigmoid": fit_sigmoid, "isotonic": fit_isotonic}


def resolve_method(family: str, cfg: CalibrationConfig) -> str:
    """The method ``cfg`` asks for this model family (``none``: no calibration)."""
    if cfg.method != "auto":
        return cfg.method if family != "ensemble" else "none"
    return FAMILY_METHOD.get(family, cfg.classical_method)


def cross_fitted_nll(method: str, y: np.ndarray, proba: np.ndarray, folds: int, seed: int) -> float | None:
    """NLL of the calibrator on rows it was not fitted on (stratified folds); None with too few rows per class."""
    from sklearn.model_selection import StratifiedKFold

    counts = np.bincount(y, minlength=proba.shape[1])
    present = counts[counts > 0]
    n_folds = int(min(folds, present.min())) if len(present) else 0
    if n_folds < 2:
        return None
    calibrated = np.zeros_like(proba, dtype=np.float64)
    for fit_idx, held_idx in StratifiedKFold(n_folds, shuffle=True, random_state=seed).split(proba, y):
        calibrated[held_idx] = FITTERS[method](y[fit_idx], proba[fit_idx]).apply(proba[held_idx])
    return negative_log_likelihood(y, calibrated)


@dataclass
class CalibrationOutcome:
    """The calibrator to store (None: none) and what decided it (``training.json``'s ``calibration``)."""

    calibrator: Calibrator | None
    report: dict[str, Any] = field(default_factory=dict)


def calibrate(family: str, y: np.ndarray, proba: np.ndarray, cfg: CalibrationConfig, seed: int) -> CalibrationOutcome:
    """Fit the family's calibrator on validation ``(y, proba)`` when it lowers the cross-fitted NLL."""
    method = resolve_method(family, cfg)
    y = np.asarray(y, dtype=np.int64)
    proba = np.asarray(proba, dtype=np.float64)
    report: dict[str, Any] = {"method": method, "rows": len(y), "kept": False}
    if method == "none":
        report["reason"] = "calibration off for this model family" if cfg.method != "none" else "method none"
        return CalibrationOutcome(None, report)
    if len(y) < cfg.min_rows:
        report["reason"] = f"{len(y)} validation rows < training.calibration.min_rows={cfg.min_rows}"
        return CalibrationOutcome(None, report)
    raw = negative_log_likelihood(y, proba)
    crossfit = cross_fitted_nll(method, y, proba, cfg.folds, seed)
    report.update(nll_uncalibrated=raw, nll_cross_fitted=crossfit)
    if crossfit is None:
        report["reason"] = "too few validation rows per class to cross-fit the calibrator"
        return CalibrationOutcome(None, report)
    if not crossfit < raw - EPS:
        report["reason"] = f"cross-fitted NLL {crossfit:.4f} is not below the uncalibrated {raw:.4f}"
        log.info("%s calibration dropped: %s", method, report["reason"])
        return CalibrationOutcome(None, report)
    calibrator = FITTERS[method](y, proba)
    report.update(
        kept=True,
        nll_calibrated_in_sample=negative_log_likelihood(y, calibrator.apply(proba)),
        params=calibrator.params
        if method != "isotonic"
        else {"thresholds_per_class": [len(x) for x in calibrator.params["x"]]},
        reason=f"cross-fitted NLL {crossfit:.4f} < uncalibrated {raw:.4f}",
    )
    log.info("%s calibration kept: %s", method, report["reason"])
    return CalibrationOutcome(calibrator, report)
