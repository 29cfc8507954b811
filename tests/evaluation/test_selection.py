"""Gates, ranking and the champion/challenger rule on scripted evaluations and predictions."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from prompt_sentinel.config import SentinelConfig, load_config
from prompt_sentinel.errors import DataError
from prompt_sentinel.evaluation.selection import (
    check_gates,
    load_evaluations,
    mcnemar_test,
    select_champion,
    write_selection,
)
from prompt_sentinel.jsonio import to_json
from prompt_sentinel.run_layout import EVALUATION as EVALUATION_FILE
from prompt_sentinel.run_layout import PREDICTIONS as PREDICTIONS_FILE

CFG = SentinelConfig()
GOOD = {
    "custom_score": 0.8,
    "critical": 0.03,
    "recall_c2": 0.95,
    "false_alarm_rate": 0.01,
    "missed_threat_rate": 0.02,
    "latency_p95_ms": 5.0,
    "size_mb": 3.0,
}


def scripted(name: str, directory: Path | None = None, **metrics: Any) -> dict[str, Any]:
    ev = {
        "model": name,
        "model_dir": f"/models/{name}",
        "labels": ["benign", "suspicious", "malicious"],
        "roles": {"benign": 0, "suspicious": 1, "malicious": 2},
        "dataset": {"sha256": "same-test-set", "n": 0},
        **GOOD,
        **metrics,
    }
    if directory is not None:
        ev["evaluation_dir"] = str(directory)
    return ev


def write_predictions(directory: Path, y: np.ndarray, pred: np.ndarray) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    pd.DataFrame(
        {
            "id": [f"t-{i}" for i in range(len(y))],
            "text_sha256": [f"{i:016x}" for i in range(len(y))],
            "label": y,
            "pred": pred,
            "correct": (y == pred).astype(int),
        }
    ).to_csv(directory / PREDICTIONS_FILE, index=False)
    return directory


def paired(tmp_path: Path, n: int, challenger_only: int, champion_only: int) -> tuple[Path, Path]:
    """Predictions where exactly ``challenger_only`` rows are right only for the challenger and vice versa."""
    y = np.arange(n) % 3
    wrong = (y + 1) % 3
    champ = y.copy()
    chall = y.copy()
    champ[:challenger_only] = wrong[:challenger_only]
    chall[challenger_only : challenger_only + champion_only] = wrong[challenger_only : challenger_only + champion_only]
    return (
        write_predictions(tmp_path / "challenger", y, chall),
        write_predictions(tmp_path / "champion", y, champ),
    )


# --- gates and ranking ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("metric", "value"),
    [
        ("custom_score", 0.59),
        ("recall_c2", 0.84),
        ("false_alarm_rate", 0.021),
        ("missed_threat_rate", 0.11),
        ("latency_p95_ms", 101.0),
    ],
)
def test_each_default_gate_blocks(metric: str, value: float) -> None:
    outcome = check_gates(scripted("m", **{metric: value}), CFG.gates)
    assert not outcome.passed
    assert len(outcome.failures) == 1 and outcome.failures[0].startswith(metric)


def test_gate_boundaries_pass_and_na_is_skipped() -> None:
    at_limits = scripted(
        "m", custom_score=0.6, recall_c2=0.85, false_alarm_rate=0.02, missed_threat_rate=0.10, latency_p95_ms=100.0
    )
    assert check_gates(at_limits, CFG.gates).passed
    outcome = check_gates(scripted("m", latency_p95_ms=None, recall_c2=None), CFG.gates)
    assert outcome.passed
    skipped = {c.metric: c.note for c in outcome.checks if c.value is None}
    assert skipped == {
        "recall_c2": "role absent from the label set or data",
        "latency_p95_ms": "not measured",
        "cv_custom_score_std": "no cross-validation folds",
    }
    spread = check_gates(scripted("m", cv_custom_score_std=0.051), CFG.gates)  # gates.max_cv_std = 0.05
    assert not spread.passed and "cv_custom_score_std 0.051 <= 0.05: FAIL" in spread.failures
    assert check_gates(scripted("m", cv_custom_score_std=0.05), CFG.gates).passed


def test_gates_come_from_config() -> None:
    strict = load_config(overrides=["gates.min_custom_score=0.9"])
    assert not check_gates(scripted("m"), strict.gates).passed


def test_none_passes_is_a_reported_outcome() -> None:
    result = select_champion([scripted("a", recall_c2=0.5), scripted("b", custom_score=0.1)], CFG)
    assert not result.promoted and result.winner is None and result.best_candidate is None
    assert result.reason.startswith("no promotion: none of the 2 model(s) passed the gates")
    assert "a: recall_c2" in result.reason and "b: custom_score" in result.reason
    assert result.status_of("a").startswith("failed: recall_c2")
    json.loads(result.to_json())


def test_best_custom_score_wins_without_champion() -> None:
    result = select_champion([scripted("a", custom_score=0.7), scripted("b", custom_score=0.85), scripted("c")], CFG)
    assert result.promoted and result.winner == "b"
    assert result.ranking == ["b", "c", "a"]
    assert result.winner_model_dir == "/models/b"
    assert "no current champion" in result.reason
    assert result.status_of("b") == "promoted" and result.status_of("a") == "passed"


def test_tie_breaks_critical_size_name() -> None:
    tie = [
        scripted("zeta", critical=0.02, size_mb=9.0),
        scripted("alpha", critical=0.05, size_mb=1.0),
        scripted("beta", critical=0.02, size_mb=2.0),
        scripted("gamma", critical=0.02, size_mb=2.0),
    ]
    result = select_champion(tie, CFG)
    assert result.ranking == ["beta", "gamma", "zeta", "alpha"]
    assert result.winner == "beta"
    assert select_champion(list(reversed(tie)), CFG).ranking == result.ranking  # order-independent


def test_duplicate_names_are_refused() -> None:
    with pytest.raises(DataError, match="unique"):
        select_champion([scripted("a"), scripted("a")], CFG)
    with pytest.raises(DataError, match="no evaluations"):
        select_champion([], CFG)


# --- McNemar ---------------------------------------------------------------------------------------------


def test_mcnemar_exact_and_chi_square() -> None:
    assert mcnemar_test(3, 1) == (pytest.approx(0.625), "mcnemar-exact")  # 2 * (1 + 4) / 16
    p, method = mcnemar_test(20, 2)
    assert method == "mcnemar-exact"
    assert p == pytest.approx(2 * (1 + 22 + 231) / 2**22)
    p, method = mcnemar_test(40, 10)
    assert method == "mcnemar-chi2"
    assert p == pytest.approx(stats.chi2.sf((30 - 1) ** 2 / 50, 1))
    assert mcnemar_test(0, 0) == (1.0, "mcnemar-exact")


# --- champion vs challenger --------------------------------------------------------------------------------


def test_challenger_worse_on_critical_rates(tmp_path: Path) -> None:
    chall_dir, champ_dir = paired(tmp_path, 90, 20, 0)
    challenger = scripted("new", chall_dir, custom_score=0.9, false_alarm_rate=0.015)
    champion = scripted("champion", champ_dir, custom_score=0.7, false_alarm_rate=0.01)
    result = select_champion([challenger], CFG, champion_evaluation=champion)
    assert not result.promoted and result.winner is None
    assert result.best_candidate == "new"
    assert "worse on critical rates: false_alarm_rate 0.0150 > champion's 0.0100" in result.reason
    assert result.status_of("new") == "not promoted (champion kept)"


def test_challenger_not_better_on_custom_score(tmp_path: Path) -> None:
    chall_dir, champ_dir = paired(tmp_path, 90, 20, 0)
    result = select_champion(
        [scripted("new", chall_dir, custom_score=0.7)],
        CFG,
        champion_evaluation=scripted("champion", champ_dir, custom_score=0.75),
    )
    assert not result.promoted
    assert "does not beat the champion's 0.75" in result.reason


def test_challenger_better_but_not_significant(tmp_path: Path) -> None:
    chall_dir, champ_dir = paired(tmp_path, 90, 3, 1)
    result = select_champion(
        [scripted("new", chall_dir, custom_score=0.82)],
        CFG,
        champion_evaluation=scripted("champion", champ_dir, custom_score=0.8),
    )
    assert not result.promoted and result.winner is None
    assert "not significantly" in result.reason
    assert result.comparison["challenger_only_correct"] == 3 and result.comparison["champion_only_correct"] == 1
    assert result.comparison["p_value"] == pytest.approx(0.625)
    assert result.comparison["n_paired"] == 90


def test_challenger_significantly_better(tmp_path: Path) -> None:
    chall_dir, champ_dir = paired(tmp_path, 90, 20, 2)
    result = select_champion(
        [scripted("new", chall_dir, custom_score=0.9), scripted("other", custom_score=0.85)],
        CFG,
        champion_evaluation=scripted("champion", champ_dir, custom_score=0.8),
    )
    assert result.promoted and result.winner == "new"
    assert result.comparison["method"] == "mcnemar-exact" and result.comparison["significant"] is True
    assert result.comparison["p_value"] < 0.05
    assert "significantly better" in result.reason
    assert result.winner_evaluation_dir == str(chall_dir)


def test_significance_level_from_config(tmp_path: Path) -> None:
    chall_dir, champ_dir = paired(tmp_path, 90, 8, 1)  # exact p = 0.039
    args = ([scripted("new", chall_dir, custom_score=0.9)],)
    champion = scripted("champion", champ_dir, custom_score=0.8)
    assert select_champion(*args, CFG, champion_evaluation=champion).promoted
    strict = load_config(overrides=["gates.significance=0.01"])
    assert not select_champion(*args, strict, champion_evaluation=champion).promoted


def test_paired_bootstrap_variant(tmp_path: Path) -> None:
    boot = load_config(overrides=["gates.champion_test=bootstrap", "evaluation.bootstrap_samples=300"])
    chall_dir, champ_dir = paired(tmp_path / "big", 300, 60, 3)
    better = select_champion(
        [scripted("new", chall_dir, custom_score=0.9)],
        boot,
        champion_evaluation=scripted("champion", champ_dir, custom_score=0.8),
    )
    assert better.promoted and better.comparison["method"] == "paired-bootstrap"
    assert better.comparison["p_value"] < 0.05 and better.comparison["mean_difference"] > 0
    chall_dir, champ_dir = paired(tmp_path / "small", 300, 3, 2)
    close = select_champion(
        [scripted("new", chall_dir, custom_score=0.81)],
        boot,
        champion_evaluation=scripted("champion", champ_dir, custom_score=0.8),
    )
    assert not close.promoted and "not significantly" in close.reason


def test_champion_on_a_different_test_set(tmp_path: Path) -> None:
    chall_dir, champ_dir = paired(tmp_path, 90, 20, 0)
    champion = scripted("champion", champ_dir, custom_score=0.7)
    champion["dataset"] = {"sha256": "another-set"}
    result = select_champion([scripted("new", chall_dir)], CFG, champion_evaluation=champion)
    assert not result.promoted and "different test set" in result.reason


def test_champion_without_predictions(tmp_path: Path) -> None:
    chall_dir, _ = paired(tmp_path, 90, 20, 0)
    result = select_champion(
        [scripted("new", chall_dir)], CFG, champion_evaluation=scripted("champion", custom_score=0.5)
    )
    assert not result.promoted and "no evaluation_dir" in result.reason


def test_predictions_that_do_not_pair(tmp_path: Path) -> None:
    chall_dir, champ_dir = paired(tmp_path, 90, 20, 0)
    y = np.arange(80) % 3
    write_predictions(champ_dir, y, y)  # a shorter set
    result = select_champion(
        [scripted("new", chall_dir)], CFG, champion_evaluation=scripted("champion", champ_dir, custom_score=0.5)
    )
    assert not result.promoted and "do not pair up" in result.reason


# --- results directories ------------------------------------------------------------------------------------


def test_select_from_results_dir(tmp_path: Path) -> None:
    for sub, ev in (
        ("logreg", scripted("logreg", custom_score=0.7)),
        ("logreg-v2", scripted("logreg", custom_score=0.75)),
        ("svm", scripted("svm", recall_c2=0.2)),
        ("_champion", scripted("champion", custom_score=0.99)),  # skipped: not a candidate
    ):
        (tmp_path / sub).mkdir()
        (tmp_path / sub / EVALUATION_FILE).write_text(to_json(ev))
    (tmp_path / "notes").mkdir()  # no evaluation.json: ignored
    evaluations = load_evaluations(tmp_path)
    assert [e["model"] for e in evaluations] == ["logreg", "logreg-v2", "svm"]  # duplicates renamed by dir
    assert evaluations[0]["evaluation_dir"] == str(tmp_path / "logreg")
    result = select_champion(tmp_path, CFG)
    assert result.winner == "logreg-v2" and result.ranking == ["logreg-v2", "logreg"]
    out = write_selection(result, tmp_path / "selection.json")
    stored = json.loads(Path(out).read_text())
    assert stored["promoted"] is True and stored["winner"] == "logreg-v2"
    assert [g["model"] for g in stored["gates"]] == ["logreg", "logreg-v2", "svm"]
    assert stored["gates"][2]["failures"][0].startswith("recall_c2")


def test_empty_results_dir(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="no model evaluations"):
        load_evaluations(tmp_path)


def test_select_from_gcs_results_dir(gcs_bucket: str) -> None:
    from prompt_sentinel import storage

    root = f"gs://{gcs_bucket}/run-1/evaluations"
    storage.write_text(f"{root}/a/{EVALUATION_FILE}", to_json(scripted("a", custom_score=0.7)))
    storage.write_text(f"{root}/b/{EVALUATION_FILE}", to_json(scripted("b", custom_score=0.9)))
    storage.write_text(f"{root}/_champion/{EVALUATION_FILE}", to_json(scripted("champion")))
    storage.write_text(f"{root}/b/nested/{EVALUATION_FILE}", to_json(scripted("deeper")))  # not a model dir
    evaluations = load_evaluations(root)
    assert [(e["model"], e["evaluation_dir"]) for e in evaluations] == [("a", f"{root}/a"), ("b", f"{root}/b")]
    result = select_champion(root, CFG)
    assert result.winner == "b"
    write_selection(result, f"{root}/selection.json")
    assert json.loads(storage.read_text(f"{root}/selection.json"))["winner"] == "b"
