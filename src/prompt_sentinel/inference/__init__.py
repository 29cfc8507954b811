"""Fast CPU inference: ONNX Runtime backends, the parity gate, and caches that keep answers identical.

* :mod:`~prompt_sentinel.inference.backends` — ``inference.backend`` (``auto | torch | onnx | onnx-int8``),
  ``SENTINEL_INFERENCE_BACKEND``, thread counts, onnxruntime availability;
* :mod:`~prompt_sentinel.inference.parity` — the gate (label agreement ≥ 99.5 %, max |Δp| ≤ 0.02; encoder cosine)
  and the record stored in the descriptor (``params.inference``);
* :mod:`~prompt_sentinel.inference.onnx_runtime` — export, int8 quantization, verified sessions, the Rust tokenizer;
* :mod:`~prompt_sentinel.inference.classifier` — fine-tuned transformers: exported into the artifact at training
  time, served by :class:`OnnxTransformerSentinelModel`;
* :mod:`~prompt_sentinel.inference.encoder` — the featurizer's sentence encoder, exported on first use into a
  per-machine cache keyed by the checkpoint's checksum;
* :mod:`~prompt_sentinel.inference.sklearn_backend` — backend choice and parity for embedding pipelines;
* :mod:`~prompt_sentinel.inference.embedding_cache` — on-disk embeddings for training, search and evaluation;
* :mod:`~prompt_sentinel.inference.memo` — evaluation's predict-each-distinct-text-once batching.

Every model is still loaded through :func:`prompt_sentinel.modeling.load_model` (checksums first), which hands
the ``inference`` config section to the family loaders; evaluation, the MLflow pyfunc, ensembles and serving
therefore run a model the same way.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from prompt_sentinel.config import DecisionConfig, InferenceConfig, SentinelConfig

__all__ = ["embedding_cache_dir", "onnx_parity_params"]

TRAINING_PARITY_ROWS = 512


def embedding_cache_dir(cfg: InferenceConfig) -> Path | None:
    """Where training/evaluation keep embeddings on disk (None when ``inference.embedding_cache`` is off)."""
    if not cfg.embedding_cache:
        return None
    from prompt_sentinel.inference.encoder import default_cache_root

    return default_cache_root(cfg)


def onnx_parity_params(
    pipeline: Any,
    train_texts: Sequence[str],
    val_texts: Sequence[str],
    val_proba: np.ndarray | None,
    decision: DecisionConfig,
    cfg: SentinelConfig,
) -> dict[str, Any]:
    """``{"inference": record}`` for a fitted scikit-learn pipeline that embeds text; ``{}`` otherwise.

    The gate runs on the validation split when there is one, else on a seeded sample of the training texts
    (agreement between backends, not accuracy, is measured, so rows the model was fitted on are fine).
    """
    if not cfg.inference.export_onnx:
        return {}
    from prompt_sentinel.inference.parity import PARAMS_KEY, sample_texts
    from prompt_sentinel.inference.sklearn_backend import featurizer_parity

    if val_texts:
        texts, name, reference = list(val_texts), f"validation split ({len(val_texts)} rows)", val_proba
    else:
        texts = sample_texts(train_texts, TRAINING_PARITY_ROWS, seed=cfg.seed)
        name, reference = f"training texts (seeded sample of {len(texts)})", None
    record = featurizer_parity(pipeline, texts, cfg.labels, decision, cfg.inference, name, reference)
    return {} if record is None else {PARAMS_KEY: record.model_dump(mode="json", exclude_none=True)}
