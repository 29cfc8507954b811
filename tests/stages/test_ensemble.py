"""The ensemble stage's skip rules: it says why it did not build, in its outputs, instead of failing the run."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from prompt_sentinel.config import load_config
from prompt_sentinel.run_layout import SKIPPED
from prompt_sentinel.stages import ensemble


@pytest.mark.parametrize(
    ("transformer", "classical", "overrides", "reason"),
    [
        ("", ["m"], [], "the transformer branch did not run"),
        ("gs://b/eval", ["m"], ["training.ensemble.enabled=false"], "training.ensemble.enabled is false"),
        ("gs://b/eval", [], [], "no classical model was trained"),
    ],
)
def test_skipped_with_the_reason_in_both_outputs(transformer, classical, overrides, reason, tmp_path: Path) -> None:
    outcome = ensemble.run_candidate(
        classical, transformer, tmp_path / "splits", load_config(None, overrides), tmp_path / "m", tmp_path / "e"
    )
    assert outcome.skipped is not None and outcome.skipped.startswith(reason)
    assert outcome.trained is None and outcome.evaluation is None
    for directory in ("m", "e"):
        assert json.loads((tmp_path / directory / SKIPPED).read_text()) == {"skipped": outcome.skipped}


def test_builds_from_the_transformer_named_by_its_evaluation(tiny_model_dir, demo_splits, tmp_path: Path) -> None:
    """A real ensemble: the 'transformer' side is whatever model its evaluation's source.json names."""
    from prompt_sentinel.stages import evaluate

    cfg = load_config(None, ["evaluation.robustness=false", "evaluation.efficiency=false", "mlflow.enabled=false"])
    evaluate.run(tiny_model_dir, demo_splits, cfg, tmp_path / "member-eval")
    outcome = ensemble.run_candidate(
        [str(tiny_model_dir)], str(tmp_path / "member-eval"), demo_splits, cfg, tmp_path / "model", tmp_path / "eval"
    )
    assert outcome.skipped is None
    assert outcome.trained.family == "ensemble" and len(outcome.trained.details["members"]) == 2
    assert outcome.evaluation["model"] == "ensemble"
    assert json.loads((tmp_path / "eval" / "source.json").read_text())["model_uri"] == str(tmp_path / "model")
