"""The ``evaluate`` stage: one model on the test split (and the blind set when there is one).

Calls :func:`prompt_sentinel.evaluation.evaluate.evaluate_model` (security metrics with bootstrap CIs, blind set,
robustness, efficiency, per-source slices), which writes ``evaluation.json``, ``predictions.csv`` and charts into
``out_dir``; this stage adds ``source.json`` — which model artifact was evaluated — so selection can copy the
winner without taking every model as an input.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from prompt_sentinel.config import SentinelConfig
from prompt_sentinel.data.split import read_split
from prompt_sentinel.evaluation.evaluate import evaluate_model
from prompt_sentinel.evaluation.metrics_suite import PIPELINE_METRICS
from prompt_sentinel.run_layout import BLIND, EVALUATED_SOURCE, split_file


def run(
    model_dir: str | Path,
    splits_dir: str | Path,
    cfg: SentinelConfig,
    out_dir: str | Path,
    *,
    model_uri: str | None = None,
    evaluation_uri: str | None = None,
) -> dict[str, Any]:
    """Evaluate ``model_dir`` on ``<splits_dir>/test.csv`` (blind: ``blind.csv`` if present) into ``out_dir``.

    ``model_uri`` / ``evaluation_uri``: how later steps address the model and this evaluation (a cluster's
    gs:// URIs; default: the local paths). Returns the evaluation dict.
    """
    blind_csv = Path(splits_dir) / split_file(BLIND)
    evaluation = evaluate_model(
        str(model_dir),
        read_split(splits_dir, "test"),
        cfg,
        blind=read_split(str(blind_csv)) if blind_csv.is_file() else None,
        out_dir=out_dir,
    )
    source = {
        "model": evaluation["model"],
        "model_uri": model_uri or str(model_dir),
        "evaluation_uri": evaluation_uri or str(out_dir),
    }
    Path(out_dir, EVALUATED_SOURCE).write_text(json.dumps(source))
    return evaluation


def headline(evaluation: dict[str, Any]) -> dict[str, Any]:
    """The numbers a pipeline step logs as KFP metrics (keys of ``evaluation.json``)."""
    return {key: evaluation.get(key) for key in PIPELINE_METRICS}
