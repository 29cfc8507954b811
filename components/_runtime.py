"""Glue the pipeline steps share at run time (imported inside component bodies, never at compile time).

* :func:`stage_config` rebuilds the validated :class:`SentinelConfig` passed as the ``config_json`` parameter and
  applies the pipeline-level parameters (registry root, model name, MLflow URI) on top.
* :func:`stage` wraps a step body: a failure is recorded as ``<results_uri>/failures/<stage>.json`` (stage,
  error type, the library's own message) before it propagates, so ``sentinel run`` and the exit handler can say
  *which* step failed and *why*, not just "task failed".
* :func:`publish` copies a human-readable result (selection, report, push result…) under ``results_uri``.
* :func:`log_scalars` / :func:`log_confusion` feed KFP's ``Metrics`` / ``ClassificationMetrics`` artifacts.
"""

from __future__ import annotations

import json
import math
import re
import sys
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

from prompt_sentinel import storage
from prompt_sentinel.config import SentinelConfig, config_from_json
from prompt_sentinel.errors import SentinelError
from prompt_sentinel.evaluation.metrics_suite import HEADLINE_METRICS as EVALUATION_HEADLINE

FAILURES_DIR = "failures"
STATUS_FILE = "run_status.json"
SOURCE_FILE = "source.json"
FAILURE_MARKER = "sentinel-stage-failure:"
_SAFE = re.compile(r"[^A-Za-z0-9_.-]+")
# What an evaluate step logs to its KFP Metrics artifact (keys of evaluation.json).
HEADLINE_METRICS = (
    *EVALUATION_HEADLINE,
    "ece",
    "f1_external",
    "custom_score_external",
    "latency_p50_ms",
    "latency_p95_ms",
    "throughput_per_s",
    "size_mb",
    "robust_mean_detection_rate",
)


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


def safe_name(text: str) -> str:
    """A file-name-safe version of a stage name (``train[logreg]`` → ``train_logreg_``)."""
    return _SAFE.sub("_", text).strip("_") or "stage"


def failure_record(stage_name: str, exc: BaseException) -> dict[str, Any]:
    return {
        "stage": stage_name,
        "error_type": type(exc).__name__,
        "message": str(exc) or repr(exc),
        "user_error": isinstance(exc, SentinelError),
    }


@contextmanager
def stage(stage_name: str, results_uri: str = "") -> Iterator[None]:
    """Run a step body; on failure record what went wrong (see module docstring) and re-raise."""
    try:
        yield
    except BaseException as exc:
        record = failure_record(stage_name, exc)
        # One greppable line in the pod log, whatever else the traceback says.
        print(f"{FAILURE_MARKER} {json.dumps(record)}", file=sys.stderr, flush=True)
        if results_uri:
            try:
                publish(results_uri, f"{FAILURES_DIR}/{safe_name(stage_name)}.json", json.dumps(record, indent=2))
            except Exception as write_exc:  # never hide the real error behind a reporting problem
                print(f"could not record the failure under {results_uri}: {write_exc}", file=sys.stderr)
        raise


def publish(results_uri: str, relpath: str, payload: str | bytes) -> str | None:
    """Write ``payload`` to ``<results_uri>/<relpath>`` (no-op when ``results_uri`` is empty)."""
    if not results_uri:
        return None
    target = storage.join(results_uri, relpath)
    storage.write_bytes(target, payload.encode("utf-8") if isinstance(payload, str) else payload)
    return target


def read_failures(results_uri: str) -> list[dict[str, Any]]:
    """Every failure record under ``<results_uri>/failures`` (local directory or gs:// prefix)."""
    if not results_uri:
        return []
    if storage.is_gcs(results_uri):
        bucket, prefix = storage.parse_gs_uri(storage.join(results_uri, FAILURES_DIR))
        blobs = storage.gcs_client().list_blobs(bucket, prefix=prefix.rstrip("/") + "/")
        uris = sorted(f"gs://{bucket}/{b.name}" for b in blobs if b.name.endswith(".json"))
    else:
        from pathlib import Path

        root = Path(results_uri, FAILURES_DIR)
        uris = [str(p) for p in sorted(root.glob("*.json"))] if root.is_dir() else []
    records = []
    for uri in uris:
        try:
            records.append(read_json(uri))
        except (SentinelError, json.JSONDecodeError):
            continue  # a half-written record must not hide the others
    return records


def clear_failures(results_uri: str) -> None:
    """Remove ``<results_uri>/failures`` once the exit handler has folded it into ``run_status.json``, so the
    next run sharing ``results_uri`` does not report this run's failures as its own."""
    if not results_uri:
        return
    if storage.is_gcs(results_uri):
        bucket, prefix = storage.parse_gs_uri(storage.join(results_uri, FAILURES_DIR))
        for blob in storage.gcs_client().list_blobs(bucket, prefix=prefix.rstrip("/") + "/"):
            blob.delete()
        return
    import shutil
    from pathlib import Path

    shutil.rmtree(Path(results_uri, FAILURES_DIR), ignore_errors=True)


def finite_scalars(values: Mapping[str, Any], prefix: str = "") -> dict[str, float]:
    """The finite numeric (non-bool) entries of ``values``, flattened one level for dict values."""
    out: dict[str, float] = {}
    for key, value in values.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping) and not prefix:
            out.update(finite_scalars(value, prefix=f"{name}."))
        elif isinstance(value, bool) or (isinstance(value, int | float) and math.isfinite(float(value))):
            out[name] = float(value)
    return out


def log_scalars(metrics: Any, values: Mapping[str, Any], prefix: str = "") -> dict[str, float]:
    """Log the finite scalars of ``values`` to a KFP ``Metrics`` artifact; returns what was logged."""
    logged = finite_scalars(values)
    for key, value in logged.items():
        metrics.log_metric(f"{prefix}{key}", value)
    return logged


def log_confusion(confusion: Any, labels: Sequence[str], matrix: Sequence[Sequence[int]]) -> None:
    """Log a confusion matrix to a KFP ``ClassificationMetrics`` artifact (rows = true class)."""
    confusion.log_confusion_matrix(list(labels), [[int(v) for v in row] for row in matrix])


def seal_metrics(*artifacts: Any) -> None:
    """Write each metrics artifact's metadata to its file.

    KFP keeps ``Metrics`` / ``ClassificationMetrics`` values in metadata and writes no file, but ``kfp.local``'s
    cache treats an output whose file is missing as stale and re-runs the step, so a step with metrics could
    never be a cache hit without this. On a cluster the file is simply uploaded alongside.
    """
    from pathlib import Path

    for artifact in artifacts:
        path = Path(artifact.path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(artifact.metadata, indent=2, sort_keys=True, default=str))


def read_json(uri: str) -> Any:
    return json.loads(storage.read_text(uri))


def tracking_dir_for(artifact_uri: str, artifact_path: str) -> str:
    """Where a default (SQLite) MLflow store goes when no ``mlflow_uri`` is given: beside a local artifact, or a
    temp dir on a cluster (SQLite cannot live on a bucket mount). A shared store needs ``mlflow_uri``."""
    import tempfile
    from pathlib import Path

    if storage.is_gcs(artifact_uri) or not artifact_uri:
        return str(Path(tempfile.gettempdir()) / "sentinel-mlflow")
    return str(Path(artifact_path).parent)


def evaluate_into(
    cfg: SentinelConfig,
    model_path: str,
    model_uri: str,
    splits_path: str,
    evaluation: Any,
    metrics: Any,
    confusion: Any,
) -> str:
    """Evaluate a model directory on ``splits/test.csv`` (and ``blind.csv``) into the step's KFP artifacts.

    Writes ``evaluation.json`` and friends into ``evaluation``, ``source.json`` (which model artifact was
    evaluated, so selection can copy the winner), the headline metrics and the confusion matrix; returns the
    evaluation artifact's URI.
    """
    from pathlib import Path

    from prompt_sentinel.data import read_split
    from prompt_sentinel.evaluation import evaluate_model

    blind_csv = Path(splits_path) / "blind.csv"
    result = evaluate_model(
        model_path,
        read_split(splits_path, "test"),
        cfg,
        blind=read_split(str(blind_csv)) if blind_csv.is_file() else None,
        out_dir=evaluation.path,
    )
    Path(evaluation.path, SOURCE_FILE).write_text(
        json.dumps({"model": result["model"], "model_uri": model_uri, "evaluation_uri": evaluation.uri})
    )
    log_scalars(metrics, {k: result.get(k) for k in HEADLINE_METRICS})
    log_confusion(confusion, result["labels"], result["metrics"]["confusion_matrix"])
    seal_metrics(metrics, confusion)
    evaluation.metadata.update({"model": result["model"], "custom_score": result.get("custom_score")})
    return evaluation.uri
