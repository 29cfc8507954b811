"""The metric suite: everything evaluation reports about a model on one labelled set.

Pure functions over numpy arrays (true class ids, class probabilities); no model, no I/O. The security
score itself is :func:`prompt_sentinel.metrics.score_from_confusion` — one definition shared with training.

Conventions:

* Predictions are the arg-max class (the serving block/review thresholds are a separate, later decision).
* A class absent from the evaluation set has no recall, F1 or AUC: its per-class metrics are ``None`` (JSON
  ``null``), a warning is logged, and macro averages run over the classes that are present. Security
  metrics whose role class is absent (or not configured) are ``None`` too, and the custom score drops that
  term (``score_from_confusion`` renormalizes the remaining weights).
* Bootstrap confidence intervals resample row indices once for all metrics, rebuild every resample's
  confusion matrix with one ``np.bincount`` and compute every metric for all resamples as array operations
  (:func:`security_metrics_batch`) — 500 resamples of 10k rows take a few tens of milliseconds.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np

from prompt_sentinel.config import EvaluationConfig, LabelConfig, LabelRoles
from prompt_sentinel.errors import DataError
from prompt_sentinel.metrics import confusion_matrix, score_from_confusion

log = logging.getLogger(__name__)

CONFIDENCE_LEVEL = 0.95
# Metrics that get a bootstrap confidence interval (the ones gates and reports lead with).
CI_METRICS = (
    "custom_score",
    "f1_macro",
    "accuracy",
    "recall_c2",
    "precision_c1",
    "f1_c0",
    "false_alarm_rate",
    "missed_threat_rate",
)
# Cap on resample-matrix elements held at once (indices are int64): ~32 MB.
_BOOTSTRAP_CHUNK_ELEMENTS = 4_000_000

# The headline keys of evaluation.json, in the order tables and reports show them.
HEADLINE_METRICS = (*CI_METRICS, "roc_auc")
# What an evaluate step logs as KFP Metrics: the headline plus calibration, blind-set, efficiency and robustness.
PIPELINE_METRICS = (
    *HEADLINE_METRICS,
    "ece",
    "f1_external",
    "custom_score_external",
    "latency_p50_ms",
    "latency_p95_ms",
    "throughput_per_s",
    "size_mb",
    "robust_mean_detection_rate",
)


def _none_if_nan(value: float | None) -> float | None:
    if value is None:
        return None
    value = float(value)
    return None if math.isnan(value) or math.isinf(value) else value


def resampled_confusion_matrices(
    y_true: np.ndarray, y_pred: np.ndarray, n_classes: int, indices: np.ndarray
) -> np.ndarray:
    """Confusion matrices of many resamples at once: ``indices`` (B, n) → array (B, K, K)."""
    codes = np.asarray(y_true, dtype=np.int64) * n_classes + np.asarray(y_pred, dtype=np.int64)
    n_resamples = indices.shape[0]
    cells = n_classes * n_classes
    # offset each resample's codes into its own block of K*K bins, so one bincount builds all matrices
    offsets = (np.arange(n_resamples, dtype=np.int64) * cells)[:, None]
    flat = (codes[indices] + offsets).ravel()
    return np.bincount(flat, minlength=n_resamples * cells).reshape(n_resamples, n_classes, n_classes)


def iter_bootstrap_indices(n: int, n_samples: int, seed: int) -> Iterator[np.ndarray]:
    """Row indices of ``n_samples`` resamples with replacement, in chunks of shape (b, n).

    Deterministic under ``seed``; chunked so memory stays bounded for large sets.
    """
    if n <= 0:
        raise DataError("cannot bootstrap an empty evaluation set")
    rng = np.random.default_rng(seed)
    per_chunk = max(1, _BOOTSTRAP_CHUNK_ELEMENTS // n)
    remaining = n_samples
    while remaining > 0:
        size = min(per_chunk, remaining)
        yield rng.integers(0, n, size=(size, n), dtype=np.int64)
        remaining -= size


def per_class_from_confusion(cm: np.ndarray) -> dict[str, np.ndarray]:
    """Precision, recall, F1 and support per class; NaN where undefined (class absent / never predicted).

    Precision of a present class that is never predicted is 0 (scikit-learn's ``zero_division=0``); recall and
    F1 of a class with no true rows are NaN, i.e. not applicable.
    """
    cm = np.asarray(cm, dtype=float)
    tp = np.diag(cm)
    support = cm.sum(axis=1)
    predicted = cm.sum(axis=0)
    with np.errstate(divide="ignore", invalid="ignore"):
        recall = np.where(support > 0, tp / np.where(support > 0, support, 1), np.nan)
        precision = np.where(predicted > 0, tp / np.where(predicted > 0, predicted, 1), 0.0)
        precision = np.where(support > 0, precision, np.nan)
        denom = precision + recall
        f1 = np.where(denom > 0, 2 * precision * recall / np.where(denom > 0, denom, 1), 0.0)
        f1 = np.where(support > 0, f1, np.nan)
    return {"precision": precision, "recall": recall, "f1": f1, "support": support}


def macro_f1_batch(cms: np.ndarray) -> np.ndarray:
    """Macro F1 over present classes for a stack of confusion matrices (B, K, K) → (B,)."""
    cms = np.asarray(cms, dtype=float)
    tp = np.diagonal(cms, axis1=1, axis2=2)
    support = cms.sum(axis=2)
    predicted = cms.sum(axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        precision = np.where(predicted > 0, tp / np.where(predicted > 0, predicted, 1), 0.0)
        recall = np.where(support > 0, tp / np.where(support > 0, support, 1), 0.0)
        denom = precision + recall
        f1 = np.where(denom > 0, 2 * precision * recall / np.where(denom > 0, denom, 1), 0.0)
    present = support > 0
    counts = present.sum(axis=1)
    return np.where(counts > 0, (f1 * present).sum(axis=1) / np.maximum(counts, 1), np.nan)


def effective_roles(roles: LabelRoles, support: Sequence[float]) -> LabelRoles:
    """Roles whose class has rows in the set; absent ones become ``None`` (their metrics are n/a)."""

    def keep(idx: int | None) -> int | None:
        return idx if idx is not None and support[idx] > 0 else None

    return LabelRoles(keep(roles.benign), keep(roles.suspicious), keep(roles.malicious))


def security_metrics(cm: np.ndarray, roles: LabelRoles) -> dict[str, float | None]:
    """The shared security score and its parts, n/a for roles whose class is absent from ``cm``'s rows."""
    support = np.asarray(cm).sum(axis=1)
    return score_from_confusion(cm, effective_roles(roles, support)).as_dict()


def expected_calibration_error(y_true: np.ndarray, proba: np.ndarray, n_bins: int) -> dict[str, Any]:
    """Top-label ECE with ``n_bins`` equal-width bins over (0, 1]: Σ_b |B|/n · |accuracy(B) − confidence(B)|.

    A prediction with confidence c falls in bin ``ceil(c·n_bins) − 1`` (bins are right-closed).
    """
    if n_bins < 2:
        raise ValueError(f"n_bins must be >= 2, got {n_bins}")
    proba = np.asarray(proba, dtype=float)
    y_true = np.asarray(y_true)
    confidence = proba.max(axis=1)
    correct = (proba.argmax(axis=1) == y_true).astype(float)
    bins = np.clip(np.ceil(confidence * n_bins).astype(int) - 1, 0, n_bins - 1)
    counts = np.bincount(bins, minlength=n_bins)
    conf_sum = np.bincount(bins, weights=confidence, minlength=n_bins)
    acc_sum = np.bincount(bins, weights=correct, minlength=n_bins)
    n = len(y_true)
    ece = float(np.abs(acc_sum - conf_sum).sum() / n) if n else 0.0
    table = []
    for b in range(n_bins):
        table.append(
            {
                "lower": b / n_bins,
                "upper": (b + 1) / n_bins,
                "count": int(counts[b]),
                "accuracy": float(acc_sum[b] / counts[b]) if counts[b] else None,
                "confidence": float(conf_sum[b] / counts[b]) if counts[b] else None,
            }
        )
    return {"ece": ece, "n_bins": n_bins, "bins": table}


def recall_at_false_alarm_budget(
    y_true: np.ndarray,
    p_malicious: np.ndarray,
    benign: int | None,
    malicious: int | None,
    budget: float,
) -> dict[str, Any]:
    """Best malicious recall when flagging ``P(malicious) >= t`` keeps P(flag | true benign) ≤ ``budget``.

    Returns the lowest threshold ``t`` meeting the budget (lowest = highest recall), the recall and the false
    alarm rate it gives. ``threshold`` is ``None`` (recall 0) when even the highest malicious score would break
    the budget; every value is ``None`` when a role is missing or absent from the set.
    """
    out: dict[str, Any] = {"budget": budget, "threshold": None, "recall": None, "false_alarm_rate": None}
    if benign is None or malicious is None:
        return out
    y_true = np.asarray(y_true)
    scores = np.asarray(p_malicious, dtype=float)
    benign_scores = np.sort(scores[y_true == benign])
    malicious_scores = np.sort(scores[y_true == malicious])
    if len(benign_scores) == 0 or len(malicious_scores) == 0:
        return out
    # candidate thresholds: every malicious score (the optimum always sits on one)
    candidates = np.unique(malicious_scores)
    n_benign_flagged = len(benign_scores) - np.searchsorted(benign_scores, candidates, side="left")
    far = n_benign_flagged / len(benign_scores)
    ok = np.flatnonzero(far <= budget + 1e-12)
    if len(ok) == 0:
        out.update(recall=0.0, false_alarm_rate=0.0)
        return out
    t = float(candidates[ok[0]])
    n_mal_flagged = len(malicious_scores) - np.searchsorted(malicious_scores, t, side="left")
    out.update(
        threshold=t,
        recall=float(n_mal_flagged / len(malicious_scores)),
        false_alarm_rate=float(far[ok[0]]),
    )
    return out


def _one_vs_rest_auc(y_true: np.ndarray, proba: np.ndarray, k: int) -> tuple[float | None, float | None]:
    from sklearn.metrics import average_precision_score, roc_auc_score

    positive = y_true == k
    if positive.all() or not positive.any():
        return None, None
    return float(roc_auc_score(positive, proba[:, k])), float(average_precision_score(positive, proba[:, k]))


def security_metrics_batch(cms: np.ndarray, roles: LabelRoles) -> dict[str, np.ndarray]:
    """:func:`security_metrics` for a stack of confusion matrices (B, K, K) at once; NaN where it gives None.

    Same definitions as :func:`prompt_sentinel.metrics.score_from_confusion` under :func:`effective_roles`
    (a role whose class has no rows in a resample is n/a there, and the custom score renormalizes its weights).
    """
    from prompt_sentinel.metrics import (
        CRITICAL_PENALTY,
        WEIGHT_F1_BENIGN,
        WEIGHT_PRECISION_SUSPICIOUS,
        WEIGHT_RECALL_MALICIOUS,
    )

    cms = np.asarray(cms, dtype=float)
    n = cms.shape[0]
    rows = cms.sum(axis=2)  # (B, K) support per true class
    cols = cms.sum(axis=1)  # (B, K) predictions per class
    diag = np.diagonal(cms, axis1=1, axis2=2)

    def div(num: np.ndarray, den: np.ndarray) -> np.ndarray:
        return np.divide(num, den, out=np.zeros_like(num, dtype=float), where=den != 0)

    precision, recall = div(diag, cols), div(diag, rows)
    f1 = div(2 * precision * recall, precision + recall)
    nan = np.full(n, np.nan)

    def present(idx: int | None) -> np.ndarray:
        return rows[:, idx] > 0 if idx is not None else np.zeros(n, dtype=bool)

    b, s, m = roles.benign, roles.suspicious, roles.malicious
    has_b, has_s, has_m = present(b), present(s), present(m)
    recall_c2 = np.where(has_m, recall[:, m], np.nan) if m is not None else nan
    precision_c1 = np.where(has_s, precision[:, s], np.nan) if s is not None else nan
    f1_c0 = np.where(has_b, f1[:, b], np.nan) if b is not None else nan
    both = has_b & has_m
    if b is not None and m is not None:
        false_alarm = np.where(both, div(cms[:, b, m], rows[:, b]), np.nan)
        missed = np.where(both, div(cms[:, m, b], rows[:, m]), np.nan)
    else:
        false_alarm = missed = nan
    terms = [
        (WEIGHT_RECALL_MALICIOUS, recall_c2),
        (WEIGHT_PRECISION_SUSPICIOUS, precision_c1),
        (WEIGHT_F1_BENIGN, f1_c0),
    ]
    weight_sum = sum(np.where(np.isnan(v), 0.0, w) for w, v in terms)
    weighted = sum(np.where(np.isnan(v), 0.0, w * v) for w, v in terms)
    base = np.where(weight_sum > 0, weighted / np.where(weight_sum > 0, weight_sum, 1.0), f1.mean(axis=1))
    critical = np.nan_to_num(false_alarm) + np.nan_to_num(missed)
    return {
        "custom_score": base * np.exp(-CRITICAL_PENALTY * critical),
        "recall_c2": recall_c2,
        "precision_c1": precision_c1,
        "f1_c0": f1_c0,
        "false_alarm_rate": false_alarm,
        "missed_threat_rate": missed,
    }


def _bootstrap_values(cms: np.ndarray, roles: LabelRoles) -> dict[str, np.ndarray]:
    out = security_metrics_batch(cms, roles)
    out["f1_macro"] = macro_f1_batch(cms)
    totals = cms.sum(axis=(1, 2))
    out["accuracy"] = np.diagonal(cms, axis1=1, axis2=2).sum(axis=1) / np.maximum(totals, 1)
    return out


def bootstrap_confidence_intervals(
    y_true: np.ndarray,
    y_pred: np.ndarray,
    n_classes: int,
    roles: LabelRoles,
    n_samples: int,
    seed: int,
    level: float = CONFIDENCE_LEVEL,
) -> dict[str, dict[str, float | None]]:
    """Percentile bootstrap intervals for the headline metrics (``CI_METRICS``), deterministic under ``seed``."""
    collected: dict[str, list[np.ndarray]] = {m: [] for m in CI_METRICS}
    for idx in iter_bootstrap_indices(len(y_true), n_samples, seed):
        cms = resampled_confusion_matrices(y_true, y_pred, n_classes, idx)
        for name, arr in _bootstrap_values(cms, roles).items():
            collected[name].append(arr)
    alpha = (1.0 - level) / 2.0
    out: dict[str, dict[str, float | None]] = {}
    for name, chunks in collected.items():
        arr = np.concatenate(chunks)
        arr = arr[~np.isnan(arr)]
        if len(arr) == 0:
            out[name] = {"low": None, "high": None, "level": level}
            continue
        low, high = np.quantile(arr, [alpha, 1.0 - alpha])
        out[name] = {"low": float(low), "high": float(high), "level": level}
    return out


def compute_metrics(
    y_true: Sequence[int] | np.ndarray,
    proba: np.ndarray,
    labels: LabelConfig,
    cfg: EvaluationConfig,
    seed: int,
    bootstrap: bool = True,
    y_pred: Sequence[int] | np.ndarray | None = None,
) -> dict[str, Any]:
    """The full metric suite for one labelled set.

    ``y_true``: class ids (0..K-1); ``proba``: (n, K) class probabilities; ``y_pred``: the labels the model's
    decision rule gives (:meth:`SentinelModel.labels_for`), argmax of ``proba`` when omitted. Ranking metrics
    (ROC/PR-AUC, the false-alarm budget, calibration) use ``proba``; everything else uses ``y_pred``.
    Returns a JSON-ready dict: flat headline keys (``custom_score``, ``f1_macro``, ``recall_c2`` …) plus
    nested detail (``per_class``, ``confusion_matrix``, ``calibration``, ``false_alarm_budget``,
    ``confidence_intervals``).
    """
    y_true = np.asarray(y_true, dtype=np.int64)
    proba = np.asarray(proba, dtype=float)
    k = labels.num_classes
    if len(y_true) == 0:
        raise DataError("evaluation set is empty: nothing to measure")
    if proba.shape != (len(y_true), k):
        raise ValueError(f"proba has shape {proba.shape}, expected ({len(y_true)}, {k})")
    if y_true.min() < 0 or y_true.max() >= k:
        raise DataError(f"labels must be class ids 0..{k - 1}; got values outside that range")

    y_pred = proba.argmax(axis=1) if y_pred is None else np.asarray(y_pred, dtype=np.int64)
    if y_pred.shape != y_true.shape:
        raise ValueError(f"y_pred has shape {y_pred.shape}, expected ({len(y_true)},)")
    cm = confusion_matrix(y_true, y_pred, k)
    pc = per_class_from_confusion(cm)
    present = pc["support"] > 0
    absent = [labels.names[i] for i in range(k) if not present[i]]
    if absent:
        log.warning("classes absent from the evaluation set (their metrics are n/a): %s", absent)

    per_class: dict[str, dict[str, Any]] = {}
    roc_values, pr_values = [], []
    for i, name in enumerate(labels.names):
        roc, pr = _one_vs_rest_auc(y_true, proba, i)
        if roc is not None:
            roc_values.append(roc)
            pr_values.append(pr)
        per_class[name] = {
            "precision": _none_if_nan(pc["precision"][i]),
            "recall": _none_if_nan(pc["recall"][i]),
            "f1": _none_if_nan(pc["f1"][i]),
            "support": int(pc["support"][i]),
            "predicted": int(cm[:, i].sum()),
            "roc_auc": roc,
            "pr_auc": pr,
        }
    weights = pc["support"][present]
    sec = security_metrics(cm, labels.roles)
    roles = effective_roles(labels.roles, pc["support"])
    budget = recall_at_false_alarm_budget(
        y_true,
        proba[:, roles.malicious] if roles.malicious is not None else np.zeros(len(y_true)),
        roles.benign,
        roles.malicious,
        cfg.false_alarm_budget,
    )
    calibration = expected_calibration_error(y_true, proba, cfg.calibration_bins)
    result: dict[str, Any] = {
        "n": len(y_true),
        "accuracy": float(np.trace(cm) / cm.sum()),
        "precision_macro": float(np.mean(pc["precision"][present])),
        "recall_macro": float(np.mean(pc["recall"][present])),
        "f1_macro": float(np.mean(pc["f1"][present])),
        "f1_weighted": float(np.average(pc["f1"][present], weights=weights)),
        "roc_auc": float(np.mean(roc_values)) if roc_values else None,
        "pr_auc": float(np.mean(pr_values)) if pr_values else None,
        **sec,
        "ece": calibration["ece"],
        "recall_c2_at_budget": budget["recall"],
        "threshold_at_budget": budget["threshold"],
        "per_class_f1": {name: per_class[name]["f1"] for name in labels.names},
        "absent_classes": absent,
        "per_class": per_class,
        "confusion_matrix": cm.astype(int).tolist(),
        "false_alarm_budget": budget,
        "calibration": calibration,
    }
    if bootstrap:
        result["confidence_intervals"] = bootstrap_confidence_intervals(
            y_true, y_pred, k, labels.roles, cfg.bootstrap_samples, seed
        )
        result["bootstrap"] = {
            "samples": cfg.bootstrap_samples,
            "seed": seed,
            "level": CONFIDENCE_LEVEL,
            "method": "percentile",
        }
    return result
