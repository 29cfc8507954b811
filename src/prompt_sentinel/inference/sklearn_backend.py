"""Backends for scikit-learn pipelines whose featurizer embeds with a sentence encoder (``embeddings``/``combined``).

The pipeline itself is the same for every backend; only the encoder behind its
:class:`~prompt_sentinel.features.EmbeddingTransformer` changes (torch, or the machine's cached ONNX export of it).
At training time :func:`featurizer_parity` predicts the parity set with each backend and records the gate's
outcome in the descriptor; at load time :func:`apply_backend` picks the backend (``inference.backend``, ``auto`` =
fastest that passed) and opens the encoder right away, so a broken export fails the load, not the first request.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import numpy as np
import sklearn

from prompt_sentinel.config import DecisionConfig, InferenceConfig, LabelConfig
from prompt_sentinel.decision import assign_labels
from prompt_sentinel.inference.backends import Backend, choose_backend, requested_backend
from prompt_sentinel.inference.parity import (
    BackendParity,
    InferenceRecord,
    classifier_parity,
    classifier_thresholds,
    fastest_passed,
    record_from_params,
    sample_texts,
    summary_line,
    versions,
)

log = logging.getLogger(__name__)

PARITY_MAX_ROWS = 2000
ENCODER_SAMPLE_ROWS = 256


def embedding_transformers(estimator: Any) -> list[Any]:
    """Every EmbeddingTransformer inside ``estimator`` (Pipelines and FeatureUnions are walked)."""
    from prompt_sentinel.features import EmbeddingTransformer

    found: list[Any] = []
    seen: set[int] = set()

    def visit(obj: Any) -> None:
        if id(obj) in seen:
            return
        seen.add(id(obj))
        if isinstance(obj, EmbeddingTransformer):
            found.append(obj)
            return
        for attr in ("steps", "transformer_list"):
            for item in getattr(obj, attr, None) or []:
                visit(item[1] if isinstance(item, tuple) else item)
        for attr in ("estimator", "base_estimator"):
            child = getattr(obj, attr, None)
            if child is not None and hasattr(child, "get_params"):
                visit(child)

    visit(estimator)
    return found


def set_backend(estimator: Any, backend: str, threads: int | None = None, cache_dir: str | None = None) -> None:
    """Run every embedding step of ``estimator`` on ``backend`` (runtime attributes, not hyperparameters)."""
    for transformer in embedding_transformers(estimator):
        transformer.inference_backend = backend
        transformer.inference_threads = threads
        transformer.inference_cache_dir = cache_dir


def clear_backend(estimator: Any) -> None:
    """Remove the runtime attributes again (before the pipeline is saved: they are not part of the model)."""
    for transformer in embedding_transformers(estimator):
        for name in ("inference_backend", "inference_threads", "inference_cache_dir"):
            transformer.__dict__.pop(name, None)


def _predict(estimator: Any, texts: list[str], n_classes: int, batch_size: int = 256) -> np.ndarray:
    from prompt_sentinel.sklearn_artifact import probabilities_by_class_id

    with sklearn.config_context(assume_finite=True, skip_parameter_validation=True):
        proba = np.vstack(
            [estimator.predict_proba(texts[i : i + batch_size]) for i in range(0, len(texts), batch_size)]
        )
    return probabilities_by_class_id(proba, getattr(estimator, "classes_", range(proba.shape[1])), n_classes)


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
    from prompt_sentinel.inference.backends import onnxruntime_available
    from prompt_sentinel.inference.encoder import ensure_encoder_export

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
    from prompt_sentinel.hf_checkpoints import resolve_model_dir

    encoders = {}
    for transformer in transformers:
        model_dir = resolve_model_dir(transformer.model_ref)
        _, record = ensure_encoder_export(
            model_dir, cfg.cache_dir, sample_texts(texts, ENCODER_SAMPLE_ROWS), transformer.max_length
        )
        encoders[transformer.model_ref] = record

    n_classes = labels.num_classes
    set_backend(estimator, "torch")
    reference = reference_proba if reference_proba is not None else _predict(estimator, texts, n_classes)
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
            proba = _predict(estimator, texts, n_classes)
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


def apply_backend(model: Any, cfg: InferenceConfig | None) -> Backend | None:
    """Choose and set the backend of a loaded scikit-learn model; None when it embeds nothing."""
    transformers = embedding_transformers(model.estimator)
    if not transformers:
        return None
    cfg = cfg or InferenceConfig()
    record = record_from_params(model.descriptor.params)
    backend = choose_backend(requested_backend(cfg), record.passed() if record else None, str(model.path))
    set_backend(model.estimator, backend, cfg.threads, cfg.cache_dir)
    if backend != "torch":
        # open the encoder now: a corrupt export or a bad thread count fails the load, naming the file/setting
        actual = {t._embedder().backend for t in transformers}
        if actual != {backend}:
            backend = sorted(actual, key=("torch", "onnx", "onnx-int8").index)[0]  # type: ignore[assignment]
            set_backend(model.estimator, backend, cfg.threads, cfg.cache_dir)
        if record is not None:
            _check_export_matches(model, record, backend)
    log.info("%s: inference backend %s", model.path, backend)
    return backend


def _check_export_matches(model: Any, record: InferenceRecord, backend: str) -> None:
    """Warn when this machine's encoder export is not the file the parity gate measured at training time."""
    entry = record.backends.get(backend)
    expected = getattr(entry, "encoder_sha256", None) if entry is not None else None
    if not isinstance(expected, dict):
        return
    for transformer in embedding_transformers(model.estimator):
        embedder = transformer._embedder()
        if embedder.onnx is None:
            continue
        actual = embedder.onnx.sha256 or ""
        want = expected.get(transformer.model_ref)
        if want and actual != want:
            log.warning(
                "%s: encoder export %s differs from the one the parity gate measured at training time "
                "(sha256 %s… vs %s…; another onnx/onnxruntime version?); its own encoder check passed",
                model.path,
                embedder.onnx.path,
                actual[:12],
                want[:12],
            )
