"""The ``ensemble`` stage: a soft-voting ensemble of trained candidates, tuned on the validation split.

:func:`run` builds one (``sentinel ensemble``); :func:`run_candidate` is the pipeline's step after both training
branches: it builds the ensemble of the classical models and the fine-tuned transformer and evaluates it exactly
like any candidate — or says why it was skipped (no transformer, ``training.ensemble.enabled`` false, no
classical model), writing ``skipped.json`` into its outputs, because a cluster's launcher uploads every declared
output.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from prompt_sentinel import storage
from prompt_sentinel.config import SentinelConfig
from prompt_sentinel.data.loading import load_dataset
from prompt_sentinel.data.split import read_split
from prompt_sentinel.run_layout import EVALUATED_SOURCE, SKIPPED
from prompt_sentinel.stages import evaluate as evaluate_stage
from prompt_sentinel.training.base import TrainResult
from prompt_sentinel.training.ensemble import build_ensemble


def run(
    members: Sequence[str],
    validation: pd.DataFrame | str,
    cfg: SentinelConfig,
    out_dir: str | Path,
    *,
    names: Sequence[str] | None = None,
    tracking_dir: str | Path | None = None,
) -> TrainResult:
    """Build the ensemble of ``members`` (model directories) with weights and costs tuned on ``validation``."""
    frame = validation if isinstance(validation, pd.DataFrame) else load_dataset(str(validation), cfg)
    return build_ensemble(members, frame, cfg, out_dir, names=names or None, tracking_dir=tracking_dir)


@dataclass
class CandidateOutcome:
    """An ensemble built and evaluated, or the reason it was skipped."""

    skipped: str | None = None
    trained: TrainResult | None = None
    evaluation: dict[str, Any] | None = None


def skip_reason(transformer_evaluation: str, classical: Sequence[str], cfg: SentinelConfig) -> str | None:
    if not transformer_evaluation:
        return "the transformer branch did not run"
    if not cfg.training.ensemble.enabled:
        return "training.ensemble.enabled is false"
    if not classical:
        return "no classical model was trained, so there is nothing to ensemble the transformer with"
    return None


def run_candidate(
    classical: Sequence[str],
    transformer_evaluation: str,
    splits_dir: str | Path,
    cfg: SentinelConfig,
    model_dir: str | Path,
    evaluation_dir: str | Path,
    *,
    model_uri: str | None = None,
    evaluation_uri: str | None = None,
    tracking_dir: str | Path | None = None,
) -> CandidateOutcome:
    """Ensemble ``classical`` + the transformer named by its evaluation's ``source.json``; evaluate it."""
    reason = skip_reason(transformer_evaluation, classical, cfg)
    if reason is not None:
        for directory in (model_dir, evaluation_dir):
            Path(directory).mkdir(parents=True, exist_ok=True)
            Path(directory, SKIPPED).write_text(json.dumps({"skipped": reason}))
        return CandidateOutcome(skipped=reason)
    transformer = json.loads(storage.read_text(storage.join(transformer_evaluation, EVALUATED_SOURCE)))["model_uri"]
    trained = run(
        [*classical, transformer], read_split(splits_dir, "validation"), cfg, model_dir, tracking_dir=tracking_dir
    )
    evaluation = evaluate_stage.run(
        model_dir, splits_dir, cfg, evaluation_dir, model_uri=model_uri, evaluation_uri=evaluation_uri
    )
    return CandidateOutcome(trained=trained, evaluation=evaluation)
