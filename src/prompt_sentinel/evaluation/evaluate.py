"""Evaluate one model artifact: metric suite, blind set, robustness, efficiency → ``evaluation.json``.

:func:`evaluate_model` is the API the ``evaluate`` pipeline step and the CLI call. Its result is a JSON-ready
dict that describes itself (model name, directory, family, labels, dataset fingerprint) and carries

* flat headline keys (``custom_score``, ``f1_macro``, ``recall_c2``, ``precision_c1``, ``f1_c0``,
  ``false_alarm_rate``, ``missed_threat_rate``, ``f1_external``, ``latency_p95_ms``, ``size_mb`` …) — what
  gates, ``results.csv``, the registry's metadata and the model card read;
* nested detail: ``metrics`` (test set), ``external`` (blind set), ``robustness``, ``efficiency``,
  ``curves`` (downsampled PR curves) and ``confident_mistakes``.

With ``out_dir`` it also writes ``predictions.csv`` (one row per test prompt: id, text sha256, true and
predicted class, per-class probabilities), which selection pairs across models for the champion test, and
the model's PNG charts. The blind set is reported only; selection never tunes on it.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import tempfile
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from prompt_sentinel import storage
from prompt_sentinel.config import LabelConfig, SentinelConfig
from prompt_sentinel.data.loading import load_dataset
from prompt_sentinel.errors import DataError
from prompt_sentinel.evaluation.charts import model_charts
from prompt_sentinel.evaluation.efficiency import measure_efficiency
from prompt_sentinel.evaluation.memo import PredictionMemo
from prompt_sentinel.evaluation.metrics_suite import compute_metrics
from prompt_sentinel.evaluation.robustness import evaluate_robustness, false_alarm_probe, robustness_inputs
from prompt_sentinel.features import featurization_session
from prompt_sentinel.inference import embedding_cache_dir
from prompt_sentinel.jsonio import to_json
from prompt_sentinel.metrics import confusion_matrix
from prompt_sentinel.models.base import SentinelModel, read_descriptor
from prompt_sentinel.models.loading import load_model
from prompt_sentinel.registry import resolve_model_ref
from prompt_sentinel.run_layout import ALPHA_TRAJECTORY, EVALUATION, PARAMS, PREDICTIONS, TRAINING_REPORT

log = logging.getLogger(__name__)

SCHEMA_VERSION = 1
TOP_MISTAKES = 20
MISTAKE_TEXT_CHARS = 500
CURVE_POINTS = 101
EFFICIENCY_TEXTS = 64
# Headline keys copied from the blind-set metrics, suffixed with ``_external``.
EXTERNAL_KEYS = (
    "f1_macro",
    "accuracy",
    "custom_score",
    "recall_c2",
    "precision_c1",
    "f1_c0",
    "false_alarm_rate",
    "missed_threat_rate",
    "roc_auc",
    "pr_auc",
    "ece",
    "recall_c2_at_budget",
)
HEADLINE_KEYS = (
    "accuracy",
    "precision_macro",
    "recall_macro",
    "f1_macro",
    "f1_weighted",
    "roc_auc",
    "pr_auc",
    "custom_score",
    "base",
    "critical",
    "recall_c2",
    "precision_c1",
    "f1_c0",
    "false_alarm_rate",
    "missed_threat_rate",
    "ece",
    "recall_c2_at_budget",
    "threshold_at_budget",
    "per_class_f1",
)


# --- inputs ---------------------------------------------------------------------------------------------------


def resolve_model_location(ref: str | Path, cfg: SentinelConfig) -> str:
    """A local directory or gs:// URI for ``ref``: paths pass through, anything else goes to the registry."""
    ref = str(ref)
    if storage.is_gcs(ref) or Path(ref).exists():
        return ref
    return str(resolve_model_ref(ref, cfg))


def _config_for_labels(cfg: SentinelConfig, labels: LabelConfig) -> SentinelConfig:
    """``cfg`` with the model's label set: evaluation data is read against what the model predicts."""
    data = json.loads(cfg.model_dump_json())
    data["labels"] = json.loads(labels.model_dump_json())
    return SentinelConfig.model_validate(data)


def _coerce_frame(df: pd.DataFrame, labels: LabelConfig, what: str) -> pd.DataFrame:
    """Check a caller-supplied DataFrame: ``text`` strings and labels the model knows (ids or names)."""
    missing = [c for c in ("text", "label") if c not in df.columns]
    if missing:
        raise DataError(f"{what}: missing column(s) {missing}; got {list(df.columns)}")
    if df["text"].isna().any():
        rows = [int(i) for i in np.flatnonzero(df["text"].isna().to_numpy())[:10]]
        raise DataError(f"{what}: text is missing at row index(es) {rows}")
    names = labels.names
    allowed = f"the model's labels are {names} (ids 0..{len(names) - 1})"
    ids: list[int] = []
    bad: list[Any] = []
    for value in df["label"].tolist():
        if isinstance(value, str) and value.strip() in labels.label2id:
            ids.append(labels.label2id[value.strip()])
            continue
        try:
            number = float(value)
        except (TypeError, ValueError):
            bad.append(value)
            continue
        if not number.is_integer() or not 0 <= number < len(names):
            bad.append(value)
            continue
        ids.append(int(number))
    if bad:
        shown = sorted({str(b) for b in bad})[:10]
        raise DataError(f"{what}: {len(bad)} row(s) have labels the model does not know: {shown}; {allowed}")
    out = pd.DataFrame(
        {
            "text": df["text"].astype(str).tolist(),
            "label": ids,
            "id": df["id"].astype(str).tolist() if "id" in df.columns else [f"row-{i}" for i in range(len(df))],
            # where each prompt came from, for the per-source slices ('' when the data has no source column)
            "source": df["source"].fillna("").astype(str).tolist() if "source" in df.columns else [""] * len(df),
        }
    )
    return out


def load_evaluation_frame(data: pd.DataFrame | str | Path, cfg: SentinelConfig, what: str) -> pd.DataFrame:
    """Evaluation rows as ``text, label (model class id), id, source``; ``cfg`` carries the model's labels."""
    if isinstance(data, pd.DataFrame):
        frame = _coerce_frame(data, cfg.labels, what)
    else:
        frame = _coerce_frame(load_dataset(str(data), cfg), cfg.labels, f"{what} {data}")
    if frame.empty:
        raise DataError(f"{what}: the evaluation set is empty")
    return frame.reset_index(drop=True)


def dataset_fingerprint(frame: pd.DataFrame) -> str:
    """sha256 over (text, label) in order: two evaluations are comparable only when these match."""
    digest = hashlib.sha256()
    for text, label in zip(frame["text"], frame["label"], strict=True):
        digest.update(text.encode("utf-8", "surrogatepass"))
        digest.update(f"\x00{int(label)}\x01".encode())
    return digest.hexdigest()


def text_sha(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()[:16]


# --- training metadata ------------------------------------------------------------------------------------


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError, UnicodeDecodeError):
        return None


def training_summary(model_dir: Path) -> dict[str, Any]:
    """``best_params`` and ``final_alpha`` from the artifact's params.json / training.json / alpha_trajectory.json."""
    params = _read_json(model_dir / PARAMS)
    training = _read_json(model_dir / TRAINING_REPORT)
    training = training if isinstance(training, dict) else {}
    best_params = params if isinstance(params, dict) else training.get("best_params")
    final_alpha = training.get("final_alpha")
    trajectory = _read_json(model_dir / ALPHA_TRAJECTORY)
    if isinstance(trajectory, dict):
        final_alpha = trajectory.get("final_alpha", final_alpha)
        trajectory = trajectory.get("trajectory")
    if final_alpha is None and isinstance(trajectory, list) and trajectory:
        last = trajectory[-1]
        final_alpha = last.get("alpha") if isinstance(last, dict) else last
    return {"best_params": best_params, "final_alpha": final_alpha}


# --- per-sample outputs -----------------------------------------------------------------------------------


def predictions_frame(frame: pd.DataFrame, proba: np.ndarray, pred: np.ndarray, labels: LabelConfig) -> pd.DataFrame:
    out = pd.DataFrame(
        {
            "id": frame["id"].to_numpy(),
            "text_sha256": [text_sha(t) for t in frame["text"]],
            "label": frame["label"].to_numpy(),
            "pred": pred,
            "correct": (pred == frame["label"].to_numpy()).astype(int),
            "confidence": proba.max(axis=1),
        }
    )
    for i, name in enumerate(labels.names):
        out[f"proba_{name}"] = proba[:, i]
    return out


def confident_mistakes(
    frame: pd.DataFrame, proba: np.ndarray, pred: np.ndarray, labels: LabelConfig
) -> list[dict[str, Any]]:
    wrong = np.flatnonzero(pred != frame["label"].to_numpy())
    conf = proba.max(axis=1)
    order = wrong[np.lexsort((wrong, -conf[wrong]))][:TOP_MISTAKES]
    return [
        {
            "id": str(frame["id"].iloc[i]),
            "text": frame["text"].iloc[i][:MISTAKE_TEXT_CHARS],
            "true": labels.names[int(frame["label"].iloc[i])],
            "predicted": labels.names[int(pred[i])],
            "confidence": float(conf[i]),
        }
        for i in order
    ]


def source_slices(frame: pd.DataFrame, pred: np.ndarray, labels: LabelConfig) -> list[dict[str, Any]]:
    """Per data source (the ``source`` column): rows, accuracy, critical errors and where its prompts went.

    Worst accuracy first: a model's average hides a source it fails on (one language, one attack family). Empty
    when the data has no source column or every source is blank.
    """
    if "source" not in frame.columns:
        return []
    sources = frame["source"].fillna("").astype(str).to_numpy()
    if not any(sources):
        return []
    y = frame["label"].to_numpy()
    benign, malicious = labels.roles.benign, labels.roles.malicious
    critical = benign is not None and malicious is not None
    slices = []
    for source in sorted(set(sources)):
        rows = sources == source
        cm = confusion_matrix(y[rows], pred[rows], labels.num_classes)
        slices.append(
            {
                "source": source or "(none)",
                "n": int(rows.sum()),
                "accuracy": float(np.trace(cm) / rows.sum()),
                "false_alarms": int(cm[benign, malicious]) if critical else 0,
                "missed_threats": int(cm[malicious, benign]) if critical else 0,
                "predicted": {
                    labels.names[t]: {labels.names[p]: int(c) for p, c in enumerate(cm[t]) if c}
                    for t in range(labels.num_classes)
                    if cm[t].any()
                },
            }
        )
    return sorted(slices, key=lambda s: (s["accuracy"], -s["n"], s["source"]))


def pr_curves(y_true: np.ndarray, proba: np.ndarray, labels: LabelConfig) -> dict[str, Any]:
    """One-vs-rest precision–recall curves per class, downsampled to ≤ ``CURVE_POINTS`` points for JSON."""
    from sklearn.metrics import precision_recall_curve

    curves: dict[str, Any] = {}
    for i, name in enumerate(labels.names):
        positive = y_true == i
        if not positive.any() or positive.all():
            continue
        precision, recall, _ = precision_recall_curve(positive, proba[:, i])
        keep = np.unique(np.linspace(0, len(precision) - 1, min(CURVE_POINTS, len(precision))).astype(int))
        curves[name] = {
            "precision": [round(float(v), 5) for v in precision[keep]],
            "recall": [round(float(v), 5) for v in recall[keep]],
        }
    return curves


# --- the stage ----------------------------------------------------------------------------------------------


def _headline(metrics: dict[str, Any]) -> dict[str, Any]:
    return {k: metrics.get(k) for k in HEADLINE_KEYS}


def evaluate_loaded_model(
    model: SentinelModel,
    data: pd.DataFrame | str | Path,
    cfg: SentinelConfig,
    blind: pd.DataFrame | str | Path | None = None,
    robustness: bool = True,
    efficiency: bool = True,
    name: str | None = None,
    source: str | None = None,
    data_uri: str | None = None,
    blind_uri: str | None = None,
    progress: bool = False,
) -> tuple[dict[str, Any], pd.DataFrame]:
    """:func:`evaluate_model` on an already loaded model; returns (evaluation, per-sample predictions).

    ``data_uri`` / ``blind_uri`` name the sets in the output when ``data`` / ``blind`` are DataFrames read from
    files by the caller.
    """
    labels = model.descriptor.labels
    mcfg = _config_for_labels(cfg, labels)
    frame = load_evaluation_frame(data, mcfg, "evaluation data")
    bframe = load_evaluation_frame(blind, mcfg, "blind data") if blind is not None else None
    data_uri = data_uri or (None if isinstance(data, pd.DataFrame) else str(data))
    y = frame["label"].to_numpy()
    # every distinct text (test, blind, robustness variants, probe) is predicted once, longest first, in batches
    memo = PredictionMemo(model)
    wanted = frame["text"].tolist() + (bframe["text"].tolist() if bframe is not None else [])
    if robustness:
        wanted += robustness_inputs(frame["text"].tolist(), y, labels, cfg.seed, cfg.evaluation.robustness_max_samples)
    with featurization_session(cache=False, disk_cache=embedding_cache_dir(cfg.inference)):
        memo.prefetch(wanted, progress=progress, desc=f"predicting ({model.inference_backend or 'sklearn'})")
    proba = memo.predict_proba(frame["text"].tolist())
    pred = model.labels_for(proba)
    metrics = compute_metrics(y, proba, labels, cfg.evaluation, cfg.seed, y_pred=pred)

    external = None
    external_slices: list[dict[str, Any]] = []
    if bframe is not None:
        bproba = memo.predict_proba(bframe["text"].tolist())
        bpred = model.labels_for(bproba)
        external = compute_metrics(bframe["label"].to_numpy(), bproba, labels, cfg.evaluation, cfg.seed, y_pred=bpred)
        external_slices = source_slices(bframe, bpred, labels)
        external["dataset"] = {
            "uri": blind_uri or (None if isinstance(blind, pd.DataFrame) else str(blind)),
            "n": len(bframe),
            "sha256": dataset_fingerprint(bframe),
        }

    rob = None
    if robustness:
        rob = evaluate_robustness(
            memo,  # type: ignore[arg-type]  # a SentinelModel view
            frame["text"].tolist(),
            y,
            labels,
            cfg.seed,
            cfg.evaluation.robustness_max_samples,
        )
        rob["false_alarm_probe"] = false_alarm_probe(memo, labels)  # type: ignore[arg-type]
    eff = None
    if efficiency:
        eff = measure_efficiency(model, frame["text"].tolist()[:EFFICIENCY_TEXTS], cfg.evaluation.latency_repeats)

    summary = training_summary(Path(model.path))
    model_name = name or model.descriptor.model_type
    evaluation: dict[str, Any] = {
        "schema_version": SCHEMA_VERSION,
        "model": model_name,
        "model_dir": source or str(model.path),
        "family": model.family,
        "model_type": model.descriptor.model_type,
        "inference_backend": model.inference_backend,
        "predicted_texts": {"distinct": memo.predicted, "requested": memo.requested},
        "labels": labels.names,
        "roles": labels.roles.as_dict(),
        "decision": model.descriptor.decision.model_dump(),
        "evaluated_at": datetime.now(timezone.utc).isoformat(),
        "dataset": {
            "uri": data_uri,
            "n": len(frame),
            "sha256": dataset_fingerprint(frame),
            "class_counts": {labels.names[i]: int((y == i).sum()) for i in range(labels.num_classes)},
        },
        **_headline(metrics),
        # f1_external (macro F1 on the blind set) is the results.csv column; the rest follow one pattern
        "f1_external": (external or {}).get("f1_macro"),
        **{f"{k}_external": (external or {}).get(k) for k in EXTERNAL_KEYS},
        "latency_p50_ms": eff["latency_p50_ms"] if eff else None,
        "latency_p95_ms": eff["latency_p95_ms"] if eff else None,
        "throughput_per_s": eff["throughput_per_s"] if eff else None,
        "size_mb": eff["size_mb"] if eff else None,
        "peak_memory_mb": eff["peak_memory_mb"] if eff else None,
        "robust_mean_detection_rate": rob.get("mean_detection_rate") if rob else None,
        "robust_max_attack_success_rate": rob.get("max_attack_success_rate") if rob else None,
        "probe_false_alarm_rate": (rob or {}).get("false_alarm_probe", {}).get("flagged_rate"),
        "best_params": summary["best_params"],
        "final_alpha": summary["final_alpha"],
        "config": {"seed": cfg.seed, "evaluation": json.loads(cfg.evaluation.model_dump_json())},
        "metrics": metrics,
        "external": external,
        "robustness": rob,
        "efficiency": eff,
        "curves": {"pr": pr_curves(y, proba, labels)},
        "confident_mistakes": confident_mistakes(frame, proba, pred, labels),
        "slices": {"source": source_slices(frame, pred, labels), "source_external": external_slices},
    }
    return evaluation, predictions_frame(frame, proba, pred, labels)


def write_evaluation(evaluation: dict[str, Any], predictions: pd.DataFrame, out_dir: str | Path) -> str:
    """Write ``evaluation.json``, ``predictions.csv`` and the model's charts into ``out_dir`` (all or nothing)."""
    files: dict[str, bytes] = {
        PREDICTIONS: predictions.to_csv(index=False, lineterminator="\n").encode("utf-8"),
        **{f"{name}.png": png for name, png in model_charts(evaluation).items()},
        # written last: its presence marks a complete evaluation directory
        EVALUATION: to_json(evaluation).encode("utf-8"),
    }
    out = str(out_dir)
    if storage.is_gcs(out):
        for fname, payload in files.items():
            storage.write_bytes(storage.join(out, fname), payload)
        return out
    with storage.atomic_output_dir(out) as tmp:
        for fname, payload in files.items():
            (tmp / fname).write_bytes(payload)
    return out


def evaluate_model(
    model_dir_or_ref: str | Path,
    data: pd.DataFrame | str | Path,
    cfg: SentinelConfig,
    blind: pd.DataFrame | str | Path | None = None,
    out_dir: str | Path | None = None,
    robustness: bool = True,
    efficiency: bool = True,
    name: str | None = None,
    progress: bool = False,
) -> dict[str, Any]:
    """Evaluate a model (local dir, gs:// URI or registry ref) on ``data`` and optionally a blind set.

    ``robustness`` / ``efficiency`` are also switched off by ``cfg.evaluation.robustness`` / ``.efficiency``.
    With ``out_dir`` writes ``evaluation.json``, ``predictions.csv`` and PNG charts there, and the returned dict
    carries ``evaluation_dir``. Raises :class:`~prompt_sentinel.errors.SentinelError` subclasses for a missing
    or malformed model, a bad checksum, empty data or labels the model does not know.
    """
    location = resolve_model_location(model_dir_or_ref, cfg)
    with tempfile.TemporaryDirectory(prefix="sentinel-eval-model-") as cache:
        local = storage.download_to_local(location, cache_dir=cache if storage.is_gcs(location) else None)
        # Read the data against the model's labels before the (possibly slow) model load, so bad data fails fast.
        mcfg = _config_for_labels(cfg, read_descriptor(local).labels)
        frame = load_evaluation_frame(data, mcfg, "evaluation data")
        bframe = load_evaluation_frame(blind, mcfg, "blind data") if blind is not None else None
        model = load_model(local, inference=cfg.inference)
        evaluation, predictions = evaluate_loaded_model(
            model,
            frame,
            cfg,
            blind=bframe,
            robustness=robustness and cfg.evaluation.robustness,
            efficiency=efficiency and cfg.evaluation.efficiency,
            name=name,
            source=str(model_dir_or_ref),
            data_uri=None if isinstance(data, pd.DataFrame) else str(data),
            blind_uri=None if blind is None or isinstance(blind, pd.DataFrame) else str(blind),
            progress=progress,
        )
    if out_dir is not None:
        write_evaluation(evaluation, predictions, out_dir)
        evaluation["evaluation_dir"] = str(out_dir)
    return evaluation


def read_predictions(evaluation_dir: str | Path) -> pd.DataFrame:
    """``predictions.csv`` of an evaluation directory (local or gs://)."""
    uri = storage.join(str(evaluation_dir), PREDICTIONS)
    data = storage.read_bytes(uri)
    return pd.read_csv(io.BytesIO(data), dtype={"id": str, "text_sha256": str})
