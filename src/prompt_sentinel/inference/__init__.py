"""Fast CPU inference: ONNX Runtime backends, the parity gate, and caches that keep answers identical.

* :mod:`~prompt_sentinel.inference.backends` — ``inference.backend`` (``auto | torch | onnx | onnx-int8``),
  ``SENTINEL_INFERENCE_BACKEND``, thread counts (torch's too), onnxruntime availability;
* :mod:`~prompt_sentinel.inference.parity` — the gate (label agreement ≥ 99.5 %, max |Δp| ≤ 0.02; encoder cosine)
  and the record stored in the descriptor (``params.inference``);
* :mod:`~prompt_sentinel.inference.onnx_runtime` — export, int8 quantization, verified sessions, the Rust tokenizer;
* :mod:`~prompt_sentinel.inference.hf` — Hugging Face encoders on torch (loading, mean-pooled embeddings);
* :mod:`~prompt_sentinel.inference.encoder` — the featurizer's sentence encoder, exported on first use into a
  per-machine cache keyed by the checkpoint's checksum;
* :mod:`~prompt_sentinel.inference.classifier` — a fine-tuned transformer's ONNX session (class probabilities);
* :mod:`~prompt_sentinel.inference.embedding_cache` — on-disk embeddings for training, search and evaluation.

What runs on these lives above: the model classes and their backend choice in :mod:`prompt_sentinel.models`
(:func:`~prompt_sentinel.models.loading.load_model` hands the ``inference`` config section to every family, so
evaluation, the MLflow pyfunc, ensembles and serving run a model the same way), the exports and parity gates made
at training time in :mod:`prompt_sentinel.training`, and evaluation's predict-each-distinct-text-once table in
:mod:`prompt_sentinel.evaluation.memo`.
"""

from __future__ import annotations

from pathlib import Path

from prompt_sentinel.config import InferenceConfig

__all__ = ["embedding_cache_dir"]


def embedding_cache_dir(cfg: InferenceConfig) -> Path | None:
    """Where training/evaluation keep embeddings on disk (None when ``inference.embedding_cache`` is off)."""
    if not cfg.embedding_cache:
        return None
    from prompt_sentinel.inference.encoder import default_cache_root

    return default_cache_root(cfg)
