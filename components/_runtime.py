"""KFP glue the component shells share at run time (imported inside component bodies, never at compile time).

* :func:`stage_config` rebuilds the validated config passed as the ``config_json`` parameter and applies the
  pipeline-level parameters (registry root, model name, MLflow URI) on top;
* :func:`log_scalars`, :func:`log_confusion` and :func:`seal_metrics` feed KFP's ``Metrics`` /
  ``ClassificationMetrics`` artifacts;
* :func:`tracking_dir_for` places a default (SQLite) MLflow store when no tracking URI is given.

Failure records and published results are the library's (:mod:`prompt_sentinel.stages.records`).
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from prompt_sentinel import storage
from prompt_sentinel.config import SentinelConfig, config_from_json
from prompt_sentinel.stages.evaluate import headline
from prompt_sentinel.stages.records import finite_scalars


def stage_config(
    config_json: str,
    *,
    registry_root: str = "",
    model_name: str = "",
    mlflow_uri: str = "",
) -> SentinelConfig:
    """The run's config (``config_json``; empty = defaults) with non-empty pipeline parameters applied."""
    cfg = config_from_json(config_json)
    if registry_root:
        cfg.registry.root = registry_root
    if model_name:
        cfg.registry.model_name = model_name
    if mlflow_uri:
        cfg.mlflow.tracking_uri = mlflow_uri
    return cfg


def log_scalars(metrics: Any, values: Mapping[str, Any], prefix: str = "") -> dict[str, float]:
    """Log the finite scalars of ``values`` to a KFP ``Metrics`` artifact; returns what was logged."""
    logged = finite_scalars(values)
    for key, value in logged.items():
        metrics.log_metric(f"{prefix}{key}", value)
    return logged


def log_confusion(confusion: Any, labels: Sequence[str], matrix: Sequence[Sequence[int]]) -> None:
    """Log a confusion matrix to a KFP ``ClassificationMetrics`` artifact (rows = true class)."""
    confusion.log_confusion_matrix(list(labels), [[int(v) for v in row] for row in matrix])


def record_evaluation(artifact: Any, metrics: Any, confusion: Any, evaluation: Mapping[str, Any]) -> None:
    """An evaluation's headline numbers, test-set confusion matrix and summary into the step's KFP artifacts."""
    log_scalars(metrics, headline(dict(evaluation)))
    log_confusion(confusion, evaluation["labels"], evaluation["metrics"]["confusion_matrix"])
    seal_metrics(metrics, confusion)
    artifact.metadata.update({"model": evaluation["model"], "custom_score": evaluation.get("custom_score")})


def seal_metrics(*artifacts: Any) -> None:
    """Write each metrics artifact's metadata to its file.

    KFP keeps ``Metrics`` / ``ClassificationMetrics`` values in metadata and writes no file, but ``kfp.local``'s
    cache treats an output whose file is missing as stale and re-runs the step, so a step with metrics could
    never be a cache hit without this. On a cluster the file is simply uploaded alongside.
    """
    for artifact in artifacts:
        path = Path(artifact.path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(artifact.metadata, indent=2, sort_keys=True, default=str))


def tracking_dir_for(artifact_uri: str, artifact_path: str) -> str:
    """Where a default (SQLite) MLflow store goes when no ``mlflow_uri`` is given: beside a local artifact, or a
    temp dir on a cluster (SQLite cannot live on a bucket mount). A shared store needs ``mlflow_uri``."""
    if storage.is_gcs(artifact_uri) or not artifact_uri:
        return str(Path(tempfile.gettempdir()) / "sentinel-mlflow")
    return str(Path(artifact_path).parent)
