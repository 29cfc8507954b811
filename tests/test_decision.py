"""The shared decision rule: least-expected-cost labels, allow/review/block, and cost tuning on held-out data."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from prompt_sentinel.config import DecisionConfig, LabelConfig, load_config
from prompt_sentinel.decision import assign_labels, cost_matrix, decide, tune_costs
from prompt_sentinel.errors import ConfigError
from prompt_sentinel.metrics import custom_score

ROLES = LabelConfig().roles  # 0 benign, 1 suspicious, 2 malicious


def costs(false_alarm: float, missed: float) -> DecisionConfig:
    return DecisionConfig(false_alarm_cost=false_alarm, missed_threat_cost=missed)


def test_unit_costs_are_argmax_and_the_cost_matrix_marks_the_critical_pair() -> None:
    rng = np.random.default_rng(0)
    proba = rng.dirichlet(np.ones(3), size=200)
    assert assign_labels(proba, ROLES, DecisionConfig()).tolist() == proba.argmax(axis=1).tolist()
    assert cost_matrix(3, ROLES, 4, 9).tolist() == [[0, 1, 4], [1, 0, 1], [9, 1, 0]]


def test_hand_computed_expected_costs() -> None:
    proba = np.array([[0.6, 0.1, 0.3]])
    # costs 3/3: E[pred benign] = 0.1 + 0.3·3 = 1.0, E[pred suspicious] = 0.9, E[pred malicious] = 0.6·3 + 0.1 = 1.9
    assert assign_labels(proba, ROLES, costs(3, 3)).tolist() == [1]
    # costs 1/3: E[pred malicious] = 0.6 + 0.1 = 0.7 is now the cheapest
    assert assign_labels(proba, ROLES, costs(1, 3)).tolist() == [2]
    assert assign_labels(proba, ROLES, costs(1, 1)).tolist() == [0]
    assert assign_labels(np.zeros((0, 3)), ROLES, costs(3, 3)).tolist() == []


def test_costs_do_nothing_without_benign_and_malicious_roles() -> None:
    roles = LabelConfig(names=["a", "b", "c"], benign=None, suspicious=None, malicious=None).roles
    proba = np.array([[0.6, 0.1, 0.3], [0.2, 0.5, 0.3]])
    assert assign_labels(proba, roles, costs(20, 20)).tolist() == [0, 1]


def test_a_malicious_label_always_blocks_and_a_non_benign_one_reviews() -> None:
    proba = np.array([[0.6, 0.1, 0.3], [0.2, 0.7, 0.1], [0.9, 0.05, 0.05]])
    never = DecisionConfig(block_threshold=1.0, review_threshold=1.0, false_alarm_cost=1, missed_threat_cost=3)
    assert assign_labels(proba, ROLES, never).tolist() == [2, 1, 0]
    assert decide(proba, ROLES, never) == ["block", "review", "allow"]
    strict = DecisionConfig(block_threshold=0.25, review_threshold=0.05)
    assert decide(proba, ROLES, strict) == ["block", "review", "review"]


def test_tuning_finds_the_best_grid_pair_and_beats_argmax_on_torn_rows() -> None:
    rng = np.random.default_rng(3)
    y = rng.integers(0, 3, size=600)
    proba = rng.dirichlet(np.ones(3), size=600) * 0.5
    proba[np.arange(600), y] += 0.3
    torn = rng.random(600) < 0.3  # malicious and benign rows that look like both
    proba[torn & (y != 1)] = [0.45, 0.1, 0.45]
    proba /= proba.sum(axis=1, keepdims=True)
    grid = [1.0, 2.0, 4.0, 8.0]

    tuned = tune_costs(y, proba, ROLES, grid, source="test")
    brute = max(
        custom_score(y, assign_labels(proba, ROLES, costs(a, b)), ROLES, 3) for a, b in itertools.product(grid, grid)
    )
    assert tuned.custom_score == pytest.approx(brute)
    assert tuned.argmax_custom_score == pytest.approx(custom_score(y, proba.argmax(axis=1), ROLES, 3))
    assert tuned.custom_score > tuned.argmax_custom_score + 0.05
    assert (tuned.false_alarm_cost, tuned.missed_threat_cost) != (1.0, 1.0)
    applied = tuned.apply(DecisionConfig(block_threshold=0.7))
    assert applied.block_threshold == 0.7 and applied.missed_threat_cost == tuned.missed_threat_cost
    assert tuned.as_dict()["rows"] == 600 and tuned.as_dict()["source"] == "test"


def test_tuning_keeps_argmax_when_nothing_beats_it() -> None:
    y = np.array([0, 1, 2, 0, 1, 2])
    proba = np.eye(3)[y] * 0.8 + 0.2 / 3
    tuned = tune_costs(y, proba, ROLES, [1.0, 5.0, 20.0])
    assert (tuned.false_alarm_cost, tuned.missed_threat_cost) == (1.0, 1.0)
    assert tuned.custom_score == tuned.argmax_custom_score == pytest.approx(1.0)


@pytest.mark.parametrize(
    ("y", "proba", "grid", "message"),
    [
        ([0, 1], np.zeros((3, 3)), [1.0], r"shape \[2, n_classes\]"),
        ([], np.zeros((0, 3)), [1.0], "zero rows"),
        ([0], np.ones((1, 3)) / 3, [0.5], "costs >= 1"),
        ([0], np.ones((1, 3)) / 3, [], "costs >= 1"),
    ],
)
def test_tuning_rejects_bad_input(y, proba, grid, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        tune_costs(y, proba, ROLES, grid)


def test_config_validates_costs_and_grid() -> None:
    with pytest.raises(ConfigError, match="false_alarm_cost"):
        load_config(None, ["serving.decision.false_alarm_cost=0.5"])
    with pytest.raises(ConfigError, match=r"costs must be >= 1.*0\.5"):
        load_config(None, ["training.decision_tuning.cost_grid=[1, 0.5]"])
    cfg = load_config(None, ["training.decision_tuning.cost_grid=[4, 1, 4, 2]"])
    assert cfg.training.decision_tuning.cost_grid == [1.0, 2.0, 4.0]
