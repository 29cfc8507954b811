"""The ONNX parity gate for scikit-learn pipelines that embed text, run at training time.

The pipeline is the same for every backend; only the sentence encoder behind its embedding step changes (torch,
or the machine's cached ONNX export of it). :func:`onnx_parity_params` predicts the parity set with each backend
and returns the gate's outcome for the descriptor (``params.inference``), which the model loader reads
(:func:`prompt_sentinel.models.sklearn_backend.apply_backend`).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import numpy as np

from prompt_sentinel.config import DecisionConfig, InferenceConfig, LabelConfig
from prompt_sentinel.decision import assign_labels
from prompt_sentinel.hf_checkpoints import resolve_model_dir
from prompt_sentinel.inference.backends import onnxruntime_available
from prompt_sentinel.inference.encoder import ensure_encoder_export
from prompt_sentinel.inference.parity import (
    PARAMS_KEY,
    BackendParity,
    InferenceRecord,
    classifier_parity,
    classifier_thresholds,
    fastest_passed,
    sample_texts,
    summary_line,
    versions,
)
from prompt_sentinel.models.sklearn_backend import (
    clear_backend,
    embedding_transformers,
    predict_by_class_id,
    set_backend,
)

log = logging.getLogger(__name__)

PARITY_MAX_ROWS = 2000
ENCODER_SAMPLE_ROWS = 256
TRAINING_PARITY_ROWS = 512


def featurizer_parity(
    estimator: Any,
    texts: Sequence[str],
    labels: LabelConfig,
    decision: DecisionConfig,
    cfg: InferenceConfig,
    parity_set: str,
    reference_proba: np.ndarray | None = None,
) -> InferenceRecord | None:
    """Run the parity gate for a fitted pipeline on ``texts``; None when it embeds nothing (TF-IDF only).

    ``reference_proba`` (torch's predictions of ``texts``, e.g. the validation predictions training made
    anyway) saves one pass. The encoder export is created in the machine's cache if needed, with a sample of
    ``texts`` added to its probe set.
    """
    transformers = embedding_transformers(estimator)
    if not transformers or not texts:
        return None
    if not onnxruntime_available():
        log.warning("onnxruntime is not installed: no ONNX parity check, the model will run on torch")
        return None
    texts = list(texts)
    if len(texts) > PARITY_MAX_ROWS:
        keep = sample_texts(list(range(len(texts))), PARITY_MAX_ROWS)  # type: ignore[arg-type]
        texts = [texts[i] for i in keep]
        reference_proba = reference_proba[keep] if reference_proba is not None else None
        parity_set += f", sample of {PARITY_MAX_ROWS}"
    encoders = {}
    for transformer in transformers:
        model_dir = resolve_model_dir(transformer.model_ref)
        _, record = ensure_encoder_export(
            model_dir, cfg.cache_dir, sample_texts(texts, ENCODER_SAMPLE_ROWS), transformer.max_length
        )
        encoders[transformer.model_ref] = record

    n_classes = labels.num_classes
    set_backend(estimator, "torch")
    reference = reference_proba if reference_proba is not None else predict_by_class_id(estimator, texts, n_classes)
    reference_labels = assign_labels(reference, labels.roles, decision)
    results: dict[str, BackendParity] = {}
    try:
        for backend in ("onnx", "onnx-int8"):
            unavailable = [
                ref
                for ref, rec in encoders.items()
                if not rec.backends.get(backend, BackendParity(passed=False)).passed
            ]
            if unavailable:
                results[backend] = BackendParity(
                    passed=False, rows=len(texts), reason=f"encoder export failed its check for {unavailable}"
                )
                continue
            set_backend(estimator, backend, cfg.threads, cfg.cache_dir)
            proba = predict_by_class_id(estimator, texts, n_classes)
            result = classifier_parity(reference, proba, reference_labels, assign_labels(proba, labels.roles, decision))
            result.encoder_sha256 = {ref: rec.backends[backend].sha256 for ref, rec in encoders.items()}
            results[backend] = result
    finally:
        clear_backend(estimator)
    log.info(summary_line(f"featurizer ({parity_set})", results))
    return InferenceRecord(
        kind="classifier",
        parity_set=parity_set,
        thresholds=classifier_thresholds(),
        backends={"torch": BackendParity(passed=True, rows=len(texts)), **results},
        auto=fastest_passed(results),
        versions=versions(),
        runs="featurizer encoder (per-machine cache, exported on first use)",
    )


def onnx_parity_params(
    pipeline: Any,
    train_texts: Sequence[str],
    val_texts: Sequence[str],
    val_proba: np.ndarray | None,
    decision: DecisionConfig,
    labels: LabelConfig,
    inference: InferenceConfig,
    seed: int,
) -> dict[str, Any]:
    """``{"inference": record}`` for a fitted scikit-learn pipeline that embeds text; ``{}`` otherwise.

    The gate runs on the validation split when there is one, else on a seeded sample of the training texts
    (agreement between backends, not accuracy, is measured, so rows the model was fitted on are fine).
    """
    if not inference.export_onnx:
        return {}
    if val_texts:
        texts, name, reference = list(val_texts), f"validation split ({len(val_texts)} rows)", val_proba
    else:
        texts = sample_texts(train_texts, TRAINING_PARITY_ROWS, seed=seed)
        name, reference = f"training texts (seeded sample of {len(texts)})", None
    record = featurizer_parity(pipeline, texts, labels, decision, inference, name, reference)
    return {} if record is None else {PARAMS_KEY: record.model_dump(mode="json", exclude_none=True)}
