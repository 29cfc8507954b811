"""Backends for scikit-learn pipelines whose featurizer embeds with a sentence encoder (``embeddings``/``combined``).

The pipeline itself is the same for every backend; only the encoder behind its
:class:`~prompt_sentinel.features.EmbeddingTransformer` changes (torch, or the machine's cached ONNX export of it).
At training time :func:`prompt_sentinel.training.classical.onnx_parity.featurizer_parity` predicts the parity set
with each backend and records the gate's outcome in the descriptor; at load time :func:`apply_backend` picks the
backend (``inference.backend``, ``auto`` = fastest that passed) and opens the encoder right away, so a broken
export fails the load, not the first request.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import numpy as np
import sklearn

from prompt_sentinel.config import InferenceConfig
from prompt_sentinel.inference.backends import Backend, choose_backend, requested_backend
from prompt_sentinel.inference.parity import (
    InferenceRecord,
    record_from_params,
)

log = logging.getLogger(__name__)


def probabilities_by_class_id(proba: np.ndarray, classes: Sequence[int], n_classes: int) -> np.ndarray:
    """``predict_proba`` output with one column per class id 0..K-1.

    An estimator fitted on a subset of the classes reports fewer columns, in the order of its ``classes_``.
    """
    classes = np.asarray(classes, dtype=np.int64)
    if len(classes) == n_classes and (classes == np.arange(n_classes)).all():
        return proba
    full = np.zeros((proba.shape[0], n_classes), dtype=proba.dtype)
    full[:, classes] = proba
    return full


def embedding_transformers(estimator: Any) -> list[Any]:
    """Every EmbeddingTransformer of a Hugging Face checkpoint inside ``estimator`` (Pipelines and FeatureUnions are
    walked); the built-in multilingual encoders run their own numpy engines and have no ONNX backend to choose."""
    from prompt_sentinel.config import NAMED_TEXT_ENCODERS
    from prompt_sentinel.features import EmbeddingTransformer

    found: list[Any] = []
    seen: set[int] = set()

    def visit(obj: Any) -> None:
        if id(obj) in seen:
            return
        seen.add(id(obj))
        if isinstance(obj, EmbeddingTransformer):
            if str(obj.model_ref).strip() not in NAMED_TEXT_ENCODERS:
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


def predict_by_class_id(estimator: Any, texts: list[str], n_classes: int, batch_size: int = 256) -> np.ndarray:
    """Class probabilities of a fitted pipeline, one column per class id, in batches."""
    with sklearn.config_context(assume_finite=True, skip_parameter_validation=True):
        proba = np.vstack(
            [estimator.predict_proba(texts[i : i + batch_size]) for i in range(0, len(texts), batch_size)]
        )
    return probabilities_by_class_id(proba, getattr(estimator, "classes_", range(proba.shape[1])), n_classes)


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
        actual = {t._embedder().embedder.backend for t in transformers}
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
        embedder = transformer._embedder().embedder
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
