"""The balance stage: the reviewable record of what balancing does to the training split."""

from __future__ import annotations

import json
from pathlib import Path

from prompt_sentinel.config import load_config
from prompt_sentinel.stages.balance import BalanceSettings, run


def test_oversampling_report_counts_every_class_before_and_after(demo_splits: Path, tmp_path: Path) -> None:
    cfg = load_config(None, ["featurizer.kind=tfidf", "balance.method=random_oversample"])
    outcome = run(demo_splits, BalanceSettings.from_config(cfg), tmp_path / "balance.json")
    saved = json.loads((tmp_path / "balance.json").read_text())
    assert saved == outcome.to_dict()
    before, after = saved["counts_before"], saved["counts_after"]
    assert set(before) == set(after) == set(cfg.labels.names)
    assert len(set(after.values())) == 1 and max(before.values()) == max(after.values())  # every class topped up
    assert saved["synthetic_rows"] == sum(after.values()) - sum(before.values()) > 0
    metrics = outcome.metrics()
    assert metrics["synthetic_rows"] == saved["synthetic_rows"]
    assert all(metrics[f"after.{name}"] == after[name] for name in cfg.labels.names)
    assert "| benign |" in outcome.markdown() and "random_oversample" in outcome.markdown()


def test_sparse_tfidf_with_smote_falls_back_to_class_weights(demo_splits: Path, tmp_path: Path) -> None:
    cfg = load_config(None, ["featurizer.kind=tfidf", "balance.method=smote"])
    outcome = run(demo_splits, BalanceSettings.from_config(cfg), tmp_path)
    assert outcome.report.applied == "class_weight" and outcome.report.synthetic_rows == 0
    assert json.loads((tmp_path / "balance.json").read_text())["applied"] == "class_weight"
