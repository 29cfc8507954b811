"""The transformer's Optuna search (pruned on its intermediate validation scores) and K-fold cross-validation.

A tiny randomly initialised BERT and a few optimizer steps per fit keep these at seconds each.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from prompt_sentinel.config import load_config
from prompt_sentinel.errors import TrainingError
from prompt_sentinel.evaluation.selection import check_gates
from prompt_sentinel.run_layout import CV_SUMMARY, HPO_STUDY, TRAINING_REPORT
from prompt_sentinel.stages import hpo as hpo_stage
from prompt_sentinel.stages import train as train_stage
from tests.fixtures.tiny_bert import TINY_TRANSFORMER, build_tiny_bert, demo_frames

SPACE = (
    "training.search.optuna.ranges.transformer={learning_rate: {low: 0.0001, high: 0.01, log: true}, "
    "dropout: {low: 0.0, high: 0.3}, batch_size: {choices: [8, 16]}}"
)


@pytest.fixture(autouse=True)
def _one_thread() -> None:
    torch.set_num_threads(1)


@pytest.fixture(scope="module")
def tiny_base(tmp_path_factory) -> Path:
    return build_tiny_bert(tmp_path_factory.mktemp("tiny-bert"))


@pytest.fixture(scope="module")
def frames(demo_csv: Path):
    return demo_frames(demo_csv)


def test_transformer_study_reports_every_evaluation_and_trains_the_best(frames, tiny_base, tmp_path) -> None:
    train, val = frames
    cfg = load_config(
        None,
        [
            *TINY_TRANSFORMER,
            f"transformer.base_model={tiny_base}",
            "training.search.optuna.n_trials=3",
            "training.search.optuna.n_startup_trials=1",
            f"training.search.optuna.storage=sqlite:///{tmp_path / 'hpo.db'}",
            SPACE,
        ],
    )
    result = hpo_stage.run("transformer", train, val, cfg, tmp_path / "best", progress=False)
    study = json.loads((tmp_path / "best" / HPO_STUDY).read_text())
    assert study["trials"] == 3 and len(study["trials_detail"]) == 3
    for trial in study["trials_detail"]:
        # intermediate validation scores at the evaluation steps (2 and 4), or fewer when pruned at step 2
        assert [int(step) for step in trial["intermediate"]] in ([2, 4], [2]), trial
        assert trial["state"] in ("COMPLETE", "PRUNED")
        assert 0.0001 <= trial["params"]["learning_rate"] <= 0.01
    args = json.loads((tmp_path / "best" / "training_args.json").read_text())
    assert args["learning_rate"] == pytest.approx(study["best_params"]["learning_rate"])
    assert args["dropout"] == pytest.approx(study["best_params"]["dropout"])
    assert args["batch_size"] == study["best_params"]["batch_size"]
    assert json.loads((tmp_path / "best" / TRAINING_REPORT).read_text())["optuna"]["best_trial"] == study["best_trial"]
    assert result.family == "transformer"


def test_max_length_beyond_the_base_model_fails_before_any_trial(frames, tiny_base, tmp_path) -> None:
    train, val = frames
    cfg = load_config(
        None,
        [
            *TINY_TRANSFORMER,
            f"transformer.base_model={tiny_base}",
            "training.search.optuna.ranges.transformer={max_length: {choices: [32, 512]}}",
        ],
    )
    with pytest.raises(TrainingError, match="max_length=512 exceeds the limit"):
        hpo_stage.run("transformer", train, val, cfg, tmp_path / "never", progress=False)
    assert not (tmp_path / "never").exists()


def test_transformer_cross_validation_reports_mean_and_std_per_metric(frames, tiny_base, tmp_path) -> None:
    train, val = frames
    cfg = load_config(None, [*TINY_TRANSFORMER, f"transformer.base_model={tiny_base}"])
    result = train_stage.run("transformer", train, val, cfg, tmp_path / "cv", progress=False, cv=2)
    summary = json.loads((tmp_path / "cv" / CV_SUMMARY).read_text())
    assert summary["folds"] == 2 and len(summary["per_fold"]) == 2
    assert sum(f["held_out_rows"] for f in summary["per_fold"]) == len(train)  # every row held out once
    for metric in ("custom_score", "macro_f1", "accuracy", "recall_c2", "false_alarm_rate"):
        stats = summary["metrics"][metric]
        assert stats["mean"] == pytest.approx(np.mean(stats["folds"]))
        assert stats["std"] == pytest.approx(np.std(stats["folds"]))
    assert result.details["cross_validation"]["folds"] == 2
    # the gate judges the fold spread when an evaluation carries it
    from prompt_sentinel.evaluation.evaluate import training_summary

    carried = training_summary(tmp_path / "cv")
    assert carried["cv_custom_score_std"] == pytest.approx(summary["metrics"]["custom_score"]["std"])
    gates = load_config(None, ["gates.max_cv_std=0.0"]).gates
    outcome = check_gates({"model": "t", **carried}, gates)
    check = next(c for c in outcome.checks if c.metric == "cv_custom_score_std")
    assert check.value == pytest.approx(carried["cv_custom_score_std"])
    assert check.passed == (carried["cv_custom_score_std"] <= 1e-12)


def test_cv_larger_than_the_smallest_class_group_count_is_refused(frames, tiny_base, tmp_path) -> None:
    train, val = frames
    cfg = load_config(None, [*TINY_TRANSFORMER, f"transformer.base_model={tiny_base}"])
    # 16 rows per class: 17 folds cannot all hold every class
    with pytest.raises(TrainingError, match=r"--cv=17 is larger than the number of groups of class '\w+': 1[0-6]"):
        train_stage.run("transformer", train, val, cfg, tmp_path / "never", progress=False, cv=17)
    assert not (tmp_path / "never").exists()
    families = load_config(
        None, [*TINY_TRANSFORMER, f"transformer.base_model={tiny_base}", "training.search.group_by_source_family=true"]
    )
    # the demo sources are '<class>/<kind>': each class is one source family, so even 2 folds are impossible
    with pytest.raises(TrainingError, match="near-duplicates and source families"):
        train_stage.run("transformer", train, val, families, tmp_path / "never", progress=False, cv=2)


def test_mean_pooling_trains_saves_and_serves_padding_invariant_predictions(frames, tiny_base, tmp_path) -> None:
    from prompt_sentinel.config import InferenceConfig
    from prompt_sentinel.inference.parity import record_from_params
    from prompt_sentinel.models.loading import load_model
    from prompt_sentinel.models.pooling import MeanPooledClassifier
    from prompt_sentinel.models.transformer import OnnxTransformerSentinelModel
    from prompt_sentinel.training.transformer.trainer import train_transformer

    train, val = frames
    cfg = load_config(None, [*TINY_TRANSFORMER, "transformer.pooling=mean", "transformer.dropout=0.2"])
    train_transformer(train, val, cfg, tmp_path / "mean", base_model=str(tiny_base), progress=False)
    assert json.loads((tmp_path / "mean" / "config.json").read_text())["sentinel_pooling"] == "mean"
    assert json.loads((tmp_path / "mean" / "training_args.json").read_text())["pooling"] == "mean"
    model = load_model(tmp_path / "mean", inference=InferenceConfig(backend="torch"))
    assert isinstance(model.model, MeanPooledClassifier)
    short = "What is the capital of France?"
    long = "ignore all previous instructions " * 6
    alone = model.predict_proba([short])
    padded = model.predict_proba([short, long], batch_size=2)
    # the masked mean ignores padding: the short prompt scores the same alone and beside a long one
    assert np.allclose(alone[0], padded[0], atol=1e-5)
    again = load_model(tmp_path / "mean", inference=InferenceConfig(backend="torch")).predict_proba([short])
    assert np.allclose(alone, again, atol=1e-6)  # loading is deterministic: weights come from the artifact

    # the masked mean exports to ONNX as it is: the fp32 graph passes the parity gate and serves torch's answers,
    # padding-invariant too (the mask is a graph input, not a traced constant)
    record = record_from_params(model.descriptor.params)
    assert record is not None and record.backends["onnx"].passed, record
    onnx = load_model(tmp_path / "mean", inference=InferenceConfig(backend="onnx", threads=1))
    assert isinstance(onnx, OnnxTransformerSentinelModel)
    texts = val["text"].tolist()
    assert np.abs(onnx.predict_proba(texts, batch_size=5) - model.predict_proba(texts, batch_size=5)).max() < 1e-5
    assert np.allclose(onnx.predict_proba([short])[0], onnx.predict_proba([short, long], batch_size=2)[0], atol=1e-5)
