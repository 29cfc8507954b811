"""The security custom score, checked against confusion matrices computed by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest
from sklearn.dummy import DummyClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import f1_score
from sklearn.model_selection import cross_val_score

from prompt_sentinel.config import LabelConfig, LabelRoles
from prompt_sentinel.metrics import custom_score, custom_scorer, macro_f1, score_from_confusion, security_score

ROLES3 = LabelRoles(benign=0, suspicious=1, malicious=2)


def test_hand_computed_three_class_matrix():
    # rows = true class, columns = predicted class
    cm = np.array([[8, 1, 1], [2, 6, 2], [1, 1, 8]])
    s = score_from_confusion(cm, ROLES3)
    recall_c2 = 8 / 10
    precision_c1 = 6 / 8
    p0, r0 = 8 / 11, 8 / 10
    f1_c0 = 2 * p0 * r0 / (p0 + r0)  # = 16/21
    base = 0.5 * recall_c2 + 0.3 * precision_c1 + 0.2 * f1_c0
    critical = 1 / 10 + 1 / 10  # P(pred 2 | true 0) + P(pred 0 | true 2)
    assert s.recall_c2 == pytest.approx(0.8)
    assert s.precision_c1 == pytest.approx(0.75)
    assert s.f1_c0 == pytest.approx(16 / 21)
    assert s.base == pytest.approx(base)
    assert s.false_alarm_rate == pytest.approx(0.1)
    assert s.missed_threat_rate == pytest.approx(0.1)
    assert s.critical == pytest.approx(critical)
    assert s.custom_score == pytest.approx(base * math.exp(-5 * critical))
    assert s.custom_score == pytest.approx(0.7773809523809524 * math.exp(-1.0))


def test_perfect_and_all_wrong_predictions():
    perfect = score_from_confusion(np.diag([5, 4, 3]), ROLES3)
    assert perfect.custom_score == pytest.approx(1.0)
    assert perfect.critical == 0.0
    # benign always called malicious and vice versa, suspicious never predicted
    swapped = score_from_confusion(np.array([[0, 0, 5], [0, 0, 4], [3, 0, 0]]), ROLES3)
    assert swapped.recall_c2 == 0.0
    assert swapped.precision_c1 == 0.0
    assert swapped.f1_c0 == 0.0
    assert swapped.critical == pytest.approx(2.0)
    assert swapped.custom_score == 0.0


def test_zero_division_edges_follow_sklearn_zero_division_0():
    # class 1 is never predicted (precision 0), class 2 is absent from y_true (recall 0, missed rate 0)
    cm = np.array([[4, 0, 1], [1, 0, 1], [0, 0, 0]])
    s = score_from_confusion(cm, ROLES3)
    assert s.precision_c1 == 0.0
    assert s.recall_c2 == 0.0
    assert s.missed_threat_rate == 0.0
    assert s.false_alarm_rate == pytest.approx(1 / 5)
    p0, r0 = 4 / 5, 4 / 5
    assert s.f1_c0 == pytest.approx(2 * p0 * r0 / (p0 + r0))
    assert s.custom_score == pytest.approx(0.2 * 0.8 * math.exp(-5 * 0.2))
    # no benign rows: false-alarm rate 0, f1_c0 0 (precision and recall both 0)
    cm = np.array([[0, 0, 0], [0, 3, 0], [1, 0, 3]])
    s = score_from_confusion(cm, ROLES3)
    assert s.false_alarm_rate == 0.0
    assert s.f1_c0 == 0.0
    assert s.missed_threat_rate == pytest.approx(0.25)
    assert s.custom_score == pytest.approx((0.5 * 0.75 + 0.3 * 1.0) * math.exp(-5 * 0.25))
    # an empty matrix scores 0 without dividing by zero
    empty = score_from_confusion(np.zeros((3, 3)), ROLES3)
    assert empty.custom_score == 0.0
    assert empty.critical == 0.0


def test_security_score_matches_confusion_path_and_sklearn_parts():
    rng = np.random.default_rng(0)
    y_true = rng.integers(0, 3, 200)
    y_pred = np.where(rng.random(200) < 0.7, y_true, rng.integers(0, 3, 200))
    s = security_score(y_true, y_pred, ROLES3, 3)
    f1 = f1_score(y_true, y_pred, labels=[0, 1, 2], average=None, zero_division=0)
    assert s.f1_c0 == pytest.approx(f1[0])
    assert s.recall_c2 == pytest.approx(np.mean(y_pred[y_true == 2] == 2))
    assert s.precision_c1 == pytest.approx(np.mean(y_true[y_pred == 1] == 1))
    assert s.false_alarm_rate == pytest.approx(np.mean(y_pred[y_true == 0] == 2))
    assert s.missed_threat_rate == pytest.approx(np.mean(y_pred[y_true == 2] == 0))
    assert custom_score(y_true, y_pred, ROLES3, 3) == pytest.approx(s.custom_score)
    assert macro_f1(y_true, y_pred, 3) == pytest.approx(f1.mean())


def test_predictions_of_a_class_absent_from_both_sides_still_count_in_shape():
    # only classes 0 and 2 occur; n_classes=3 keeps the matrix 3x3 so role indices stay valid
    s = security_score([0, 0, 2, 2], [0, 2, 2, 2], ROLES3, 3)
    assert s.precision_c1 == 0.0
    assert s.recall_c2 == 1.0
    assert s.false_alarm_rate == pytest.approx(0.5)


def test_custom_roles_use_configured_indices():
    labels = LabelConfig(names=["attack", "ok", "maybe"], benign="ok", suspicious="maybe", malicious="attack")
    roles = labels.roles
    assert roles == LabelRoles(benign=1, suspicious=2, malicious=0)
    cm = np.array([[9, 1, 0], [0, 10, 0], [0, 0, 5]])  # attack → ok once: a missed threat
    s = score_from_confusion(cm, roles)
    assert s.recall_c2 == pytest.approx(0.9)
    assert s.missed_threat_rate == pytest.approx(0.1)
    assert s.false_alarm_rate == 0.0
    assert s.precision_c1 == 1.0
    assert s.f1_c0 == pytest.approx(2 * (10 / 11) * 1.0 / (10 / 11 + 1.0))


def test_two_class_renormalizes_the_remaining_weights():
    labels = LabelConfig(names=["benign", "malicious"], suspicious=None)
    roles = labels.roles
    assert roles.suspicious is None
    cm = np.array([[18, 2], [1, 9]])
    s = score_from_confusion(cm, roles)
    recall = 9 / 10
    f1_0 = 2 * (18 / 19) * (18 / 20) / (18 / 19 + 18 / 20)
    base = (0.5 * recall + 0.2 * f1_0) / 0.7
    assert s.precision_c1 is None
    assert s.base == pytest.approx(base)
    assert s.critical == pytest.approx(2 / 20 + 1 / 10)
    assert s.custom_score == pytest.approx(base * math.exp(-5 * 0.2))


def test_no_security_roles_falls_back_to_macro_f1():
    labels = LabelConfig(names=["a", "b", "c", "d"], benign=None, suspicious=None, malicious=None)
    rng = np.random.default_rng(1)
    y_true = rng.integers(0, 4, 120)
    y_pred = np.where(rng.random(120) < 0.6, y_true, rng.integers(0, 4, 120))
    s = security_score(y_true, y_pred, labels.roles, 4)
    expected = f1_score(y_true, y_pred, labels=[0, 1, 2, 3], average="macro", zero_division=0)
    assert s.critical == 0.0
    assert s.false_alarm_rate is None and s.missed_threat_rate is None
    assert s.custom_score == pytest.approx(expected)


def test_only_a_malicious_role_scores_recall_without_critical_term():
    labels = LabelConfig(names=["x", "attack"], benign=None, suspicious=None, malicious="attack")
    s = score_from_confusion(np.array([[5, 5], [2, 8]]), labels.roles)
    assert s.base == pytest.approx(0.8)
    assert s.critical == 0.0
    assert s.custom_score == pytest.approx(0.8)


def test_sklearn_scorer_equals_custom_score_and_is_maximized():
    rng = np.random.default_rng(2)
    X = rng.normal(size=(150, 4))
    y = (X[:, 0] > 0).astype(int) + (X[:, 1] > 0.5).astype(int)
    model = LogisticRegression().fit(X, y)
    scorer = custom_scorer(ROLES3, 3)
    assert scorer(model, X, y) == pytest.approx(custom_score(y, model.predict(X), ROLES3, 3))
    # greater is better: the scorer's sign is not flipped, a real model beats a constant one
    constant = DummyClassifier(strategy="most_frequent").fit(X, y)
    assert scorer(model, X, y) > scorer(constant, X, y) >= 0.0
    cv = cross_val_score(LogisticRegression(), X, y, cv=3, scoring=scorer)
    assert cv.shape == (3,)
    assert np.all((cv >= 0) & (cv <= 1))
