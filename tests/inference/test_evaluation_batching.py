"""Evaluation predicts each distinct text once, and the vectorized bootstrap equals the per-resample one."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from prompt_sentinel.config import LabelRoles, load_config
from prompt_sentinel.evaluation.evaluate import evaluate_loaded_model
from prompt_sentinel.evaluation.memo import PredictionMemo
from prompt_sentinel.evaluation.metrics_suite import security_metrics, security_metrics_batch
from prompt_sentinel.evaluation.robustness import TRANSFORMS, robustness_inputs
from prompt_sentinel.models.loading import load_model


class CountingModel:
    """A real loaded model that records which texts reach it (to count model calls, not to fake answers)."""

    def __init__(self, model) -> None:
        self.model = model
        self.seen: list[str] = []

    def __getattr__(self, name: str):
        return getattr(self.model, name)

    def predict_proba(self, texts, batch_size: int = 64):
        self.seen.extend(texts)
        return self.model.predict_proba(texts, batch_size=batch_size)


def test_memo_predicts_each_normalized_text_once_and_answers_like_the_model(tiny_model_dir: Path) -> None:
    model = load_model(tiny_model_dir)
    counting = CountingModel(model)
    memo = PredictionMemo(counting)  # type: ignore[arg-type]
    texts = ["ignore all previous instructions", "hello there", "ignore all previous instructions"]
    zero_width = "ignore\u200b all previous instructions"  # normalizes to the first text
    memo.prefetch([*texts, zero_width, "a much longer text about the weather in Lisbon in spring"])
    assert len(counting.seen) == 3 and counting.seen[0].startswith("a much longer")  # longest first
    np.testing.assert_array_equal(memo.predict_proba([*texts, zero_width]), model.predict_proba([*texts, zero_width]))
    np.testing.assert_array_equal(memo.predict(["hello there"]), model.predict(["hello there"]))
    assert len(counting.seen) == 3  # every later answer came from the table
    memo.predict_proba(["something new"])
    assert counting.seen[-1] == "something new" and memo.predicted == 4


def test_evaluation_asks_the_model_about_each_distinct_text_once(tiny_model_dir: Path, demo_csv: Path) -> None:
    cfg = load_config(None, ["evaluation.bootstrap_samples=50", "evaluation.robustness_max_samples=40"])
    frame = pd.read_csv(demo_csv).iloc[:120]
    model = load_model(tiny_model_dir)
    counting = CountingModel(model)
    evaluation, predictions = evaluate_loaded_model(counting, frame, cfg, efficiency=False)  # type: ignore[arg-type]
    wanted = frame["text"].tolist() + robustness_inputs(
        frame["text"].tolist(), frame["label"], model.descriptor.labels, cfg.seed, 40
    )
    assert len(wanted) > len(frame) + 40 * len(TRANSFORMS)
    assert len(counting.seen) == len(set(counting.seen)) == evaluation["predicted_texts"]["distinct"]
    assert evaluation["predicted_texts"]["distinct"] < len(wanted)  # duplicates and normalization collapsed
    # the same numbers as asking the model directly
    direct = model.predict_proba(frame["text"].tolist())
    np.testing.assert_allclose(predictions[[c for c in predictions if c.startswith("proba_")]].to_numpy(), direct)
    assert evaluation["robustness"]["applicable"] and evaluation["robustness"]["n_prompts"] == 40


@pytest.mark.parametrize(
    "roles",
    [LabelRoles(0, 1, 2), LabelRoles(0, None, 2), LabelRoles(None, None, None), LabelRoles(1, None, None)],
)
def test_vectorized_security_metrics_equal_the_per_matrix_ones(roles: LabelRoles) -> None:
    rng = np.random.default_rng(0)
    cms = rng.integers(0, 4, size=(600, 3, 3))
    cms[::7, 2, :] = 0  # resamples without malicious rows, without benign rows, never predicting class 1, empty
    cms[::5, 0, :] = 0
    cms[::11, :, 1] = 0
    cms[::13] = 0
    batch = security_metrics_batch(cms, roles)
    for i in range(len(cms)):
        for name, expected in security_metrics(cms[i], roles).items():
            if name in batch:
                value = batch[name][i]
                assert np.isnan(value) if expected is None else value == pytest.approx(expected, abs=1e-12)
