"""The metric suite against hand-computed values."""

from __future__ import annotations

import logging
import math

import numpy as np
import pytest
from sklearn.metrics import confusion_matrix as sk_confusion
from sklearn.metrics import f1_score, roc_auc_score

from prompt_sentinel.config import EvaluationConfig, LabelConfig
from prompt_sentinel.errors import DataError
from prompt_sentinel.evaluation.metrics_suite import (
    bootstrap_confidence_intervals,
    compute_metrics,
    confusion_matrix,
    expected_calibration_error,
    iter_bootstrap_indices,
    recall_at_false_alarm_budget,
    resampled_confusion_matrices,
)
from prompt_sentinel.metrics import score_from_confusion

LABELS = LabelConfig()
EVAL_CFG = EvaluationConfig(bootstrap_samples=200)

# Hand-built case: cm = [[3,0,1],[1,1,0],[1,0,3]]
Y_TRUE = np.array([0, 0, 0, 0, 1, 1, 2, 2, 2, 2])
Y_PRED = np.array([0, 0, 0, 2, 1, 0, 2, 2, 2, 0])


def one_hot_proba(pred: np.ndarray, k: int, confidence: float = 0.8) -> np.ndarray:
    proba = np.full((len(pred), k), (1 - confidence) / (k - 1))
    proba[np.arange(len(pred)), pred] = confidence
    return proba


def noisy_proba(y: np.ndarray, k: int, seed: int, signal: float = 2.0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    logits = rng.normal(size=(len(y), k))
    logits[np.arange(len(y)), y] += signal
    e = np.exp(logits)
    return e / e.sum(axis=1, keepdims=True)


def test_confusion_matrix_matches_sklearn() -> None:
    rng = np.random.default_rng(0)
    y, p = rng.integers(0, 4, 300), rng.integers(0, 4, 300)
    np.testing.assert_array_equal(confusion_matrix(y, p, 4), sk_confusion(y, p, labels=[0, 1, 2, 3]))


def test_hand_built_metrics() -> None:
    m = compute_metrics(Y_TRUE, one_hot_proba(Y_PRED, 3), LABELS, EVAL_CFG, seed=1)
    assert m["confusion_matrix"] == [[3, 0, 1], [1, 1, 0], [1, 0, 3]]
    pc = m["per_class"]
    assert pc["benign"]["precision"] == pytest.approx(0.6)
    assert pc["benign"]["recall"] == pytest.approx(0.75)
    assert pc["suspicious"]["precision"] == pytest.approx(1.0)
    assert pc["suspicious"]["recall"] == pytest.approx(0.5)
    assert pc["malicious"]["f1"] == pytest.approx(0.75)
    assert m["accuracy"] == pytest.approx(0.7)
    f1s = [2 * 0.6 * 0.75 / 1.35, 2 * 0.5 / 1.5, 0.75]
    assert m["f1_macro"] == pytest.approx(np.mean(f1s))
    assert m["f1_macro"] == pytest.approx(f1_score(Y_TRUE, Y_PRED, average="macro"))
    assert m["f1_weighted"] == pytest.approx(f1_score(Y_TRUE, Y_PRED, average="weighted"))
    # security parts, by hand
    assert m["false_alarm_rate"] == pytest.approx(0.25)  # 1 of 4 benign predicted malicious
    assert m["missed_threat_rate"] == pytest.approx(0.25)  # 1 of 4 malicious predicted benign
    assert m["critical"] == pytest.approx(0.5)
    base = 0.5 * 0.75 + 0.3 * 1.0 + 0.2 * f1s[0]
    assert m["base"] == pytest.approx(base)
    assert m["custom_score"] == pytest.approx(base * math.exp(-2.5))
    # and it is the shared definition, not a re-implementation
    shared = score_from_confusion(np.array(m["confusion_matrix"]), LABELS.roles)
    assert m["custom_score"] == pytest.approx(shared.custom_score)
    assert m["per_class_f1"]["malicious"] == pytest.approx(0.75)


def test_auc_matches_sklearn_one_vs_rest() -> None:
    rng = np.random.default_rng(3)
    y = rng.integers(0, 3, 400)
    proba = noisy_proba(y, 3, seed=4, signal=1.0)
    m = compute_metrics(y, proba, LABELS, EVAL_CFG, seed=1, bootstrap=False)
    assert m["roc_auc"] == pytest.approx(roc_auc_score(y, proba, multi_class="ovr", average="macro"))
    assert 0 < m["pr_auc"] <= 1
    assert m["per_class"]["malicious"]["roc_auc"] == pytest.approx(roc_auc_score(y == 2, proba[:, 2]))


def test_absent_class_is_na_with_warning(caplog: pytest.LogCaptureFixture) -> None:
    y = np.array([0, 0, 0, 2, 2, 2])
    pred = np.array([0, 0, 1, 2, 2, 0])  # suspicious is predicted once but never true
    with caplog.at_level(logging.WARNING):
        m = compute_metrics(y, one_hot_proba(pred, 3), LABELS, EVAL_CFG, seed=1)
    assert "suspicious" in caplog.text
    assert m["absent_classes"] == ["suspicious"]
    assert m["per_class"]["suspicious"]["recall"] is None
    assert m["per_class"]["suspicious"]["f1"] is None
    assert m["per_class"]["suspicious"]["roc_auc"] is None
    assert m["precision_c1"] is None
    # macro averages over the two present classes
    assert m["f1_macro"] == pytest.approx(np.mean([m["per_class"]["benign"]["f1"], m["per_class"]["malicious"]["f1"]]))
    # the custom score drops the suspicious term and renormalizes the rest
    recall_c2, f1_c0 = 2 / 3, m["per_class"]["benign"]["f1"]
    base = (0.5 * recall_c2 + 0.2 * f1_c0) / 0.7
    assert m["custom_score"] == pytest.approx(base * math.exp(-5 * (0 + 1 / 3)))
    assert m["confidence_intervals"]["precision_c1"]["low"] is None


def test_n_class_without_security_roles() -> None:
    labels = LabelConfig(names=["cats", "dogs", "birds", "fish"], benign=None, suspicious=None, malicious=None)
    rng = np.random.default_rng(5)
    y = rng.integers(0, 4, 200)
    m = compute_metrics(y, noisy_proba(y, 4, seed=6), labels, EVAL_CFG, seed=1)
    for key in ("recall_c2", "precision_c1", "f1_c0", "false_alarm_rate", "missed_threat_rate"):
        assert m[key] is None
    assert m["custom_score"] == pytest.approx(m["f1_macro"])
    assert m["recall_c2_at_budget"] is None and m["threshold_at_budget"] is None
    assert set(m["per_class_f1"]) == {"cats", "dogs", "birds", "fish"}


def test_binary_roles_drop_suspicious() -> None:
    labels = LabelConfig(names=["safe", "attack"], benign="safe", suspicious=None, malicious="attack")
    y = np.array([0, 0, 0, 0, 1, 1, 1, 1])
    pred = np.array([0, 0, 0, 1, 1, 1, 1, 0])
    m = compute_metrics(y, one_hot_proba(pred, 2), labels, EVAL_CFG, seed=1)
    assert m["precision_c1"] is None
    assert m["recall_c2"] == pytest.approx(0.75)
    assert m["false_alarm_rate"] == pytest.approx(0.25)
    assert m["missed_threat_rate"] == pytest.approx(0.25)


def test_expected_calibration_error_by_hand() -> None:
    # confidences 0.85 (right), 0.75 (wrong) in bin (0.5, 1]; 0.45 (right), 0.40 (wrong) in bin (0, 0.5]
    proba = np.array(
        [
            [0.85, 0.10, 0.05],
            [0.75, 0.20, 0.05],
            [0.45, 0.30, 0.25],
            [0.30, 0.40, 0.30],
        ]
    )
    y = np.array([0, 1, 0, 0])
    cal = expected_calibration_error(y, proba, n_bins=2)
    # bin 1: |0.5 - 0.8| * 2/4 = 0.15; bin 0: |0.5 - 0.425| * 2/4 = 0.0375
    assert cal["ece"] == pytest.approx(0.1875)
    assert [b["count"] for b in cal["bins"]] == [2, 2]
    assert cal["bins"][1]["confidence"] == pytest.approx(0.8)
    # a perfectly calibrated, always-right confident model has ECE 0
    assert expected_calibration_error(np.array([0, 1]), np.array([[1.0, 0.0], [0.0, 1.0]]), 10)["ece"] == 0.0


def test_recall_at_false_alarm_budget_by_hand() -> None:
    y = np.array([0, 0, 0, 0, 2, 2, 2, 2])
    p_mal = np.array([0.1, 0.2, 0.3, 0.9, 0.95, 0.85, 0.5, 0.25])
    # one false alarm of four allowed → threshold 0.5 flags 0.95, 0.85, 0.5 and benign 0.9
    out = recall_at_false_alarm_budget(y, p_mal, 0, 2, budget=0.25)
    assert out["threshold"] == pytest.approx(0.5)
    assert out["recall"] == pytest.approx(0.75)
    assert out["false_alarm_rate"] == pytest.approx(0.25)
    # no false alarm allowed → only the malicious score above every benign score
    out = recall_at_false_alarm_budget(y, p_mal, 0, 2, budget=0.0)
    assert out["threshold"] == pytest.approx(0.95)
    assert out["recall"] == pytest.approx(0.25)
    # impossible: every malicious score is below a benign one
    out = recall_at_false_alarm_budget(np.array([0, 2]), np.array([0.99, 0.5]), 0, 2, budget=0.0)
    assert out["threshold"] is None and out["recall"] == 0.0


def test_recall_at_budget_is_optimal_against_brute_force() -> None:
    rng = np.random.default_rng(11)
    y = rng.choice([0, 2], size=300)
    p = np.clip(rng.normal(0.3 + 0.4 * (y == 2), 0.2), 0, 1)
    out = recall_at_false_alarm_budget(y, p, 0, 2, budget=0.05)
    best = 0.0
    for t in np.unique(p):
        far = np.mean(p[y == 0] >= t)
        if far <= 0.05:
            best = max(best, np.mean(p[y == 2] >= t))
    assert out["recall"] == pytest.approx(best)
    assert np.mean(p[y == 0] >= out["threshold"]) <= 0.05


def test_resampled_confusion_matrices_match_loop() -> None:
    rng = np.random.default_rng(2)
    y, p = rng.integers(0, 3, 50), rng.integers(0, 3, 50)
    idx = next(iter_bootstrap_indices(50, 7, seed=3))
    batched = resampled_confusion_matrices(y, p, 3, idx)
    for b in range(7):
        np.testing.assert_array_equal(batched[b], confusion_matrix(y[idx[b]], p[idx[b]], 3))


def test_bootstrap_ci_deterministic_and_contains_point() -> None:
    rng = np.random.default_rng(8)
    y = rng.integers(0, 3, 600)
    proba = noisy_proba(y, 3, seed=9, signal=2.5)
    m = compute_metrics(y, proba, LABELS, EvaluationConfig(bootstrap_samples=500), seed=42)
    again = compute_metrics(y, proba, LABELS, EvaluationConfig(bootstrap_samples=500), seed=42)
    assert m["confidence_intervals"] == again["confidence_intervals"]
    other = compute_metrics(y, proba, LABELS, EvaluationConfig(bootstrap_samples=500), seed=43)
    assert other["confidence_intervals"] != m["confidence_intervals"]
    for key, ci in m["confidence_intervals"].items():
        assert ci["low"] <= m[key] <= ci["high"], key
        assert ci["low"] < ci["high"], key
    assert m["bootstrap"] == {"samples": 500, "seed": 42, "level": 0.95, "method": "percentile"}


def test_bootstrap_in_memory_bounded_chunks(monkeypatch: pytest.MonkeyPatch) -> None:
    import prompt_sentinel.evaluation.metrics_suite as suite

    y, pred = Y_TRUE.repeat(20), Y_PRED.repeat(20)
    whole = bootstrap_confidence_intervals(y, pred, 3, LABELS.roles, 300, seed=5)
    monkeypatch.setattr(suite, "_BOOTSTRAP_CHUNK_ELEMENTS", 1000)  # 5 resamples per chunk
    chunks = list(iter_bootstrap_indices(len(y), 300, seed=5))
    assert len(chunks) == 60 and all(c.shape == (5, len(y)) for c in chunks)
    chunked = bootstrap_confidence_intervals(y, pred, 3, LABELS.roles, 300, seed=5)
    assert chunked == bootstrap_confidence_intervals(y, pred, 3, LABELS.roles, 300, seed=5)
    # same distribution, different draws: the intervals agree closely
    for key in ("custom_score", "f1_macro", "accuracy"):
        assert chunked[key]["low"] == pytest.approx(whole[key]["low"], abs=0.05)
        assert chunked[key]["high"] == pytest.approx(whole[key]["high"], abs=0.05)


def test_bad_inputs_raise_data_errors() -> None:
    with pytest.raises(DataError, match="empty"):
        compute_metrics(np.array([], dtype=int), np.zeros((0, 3)), LABELS, EVAL_CFG, seed=1)
    with pytest.raises(DataError, match=r"0\.\.2"):
        compute_metrics(np.array([0, 3]), np.full((2, 3), 1 / 3), LABELS, EVAL_CFG, seed=1)
