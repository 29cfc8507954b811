"""Fine-tuned transformer classifiers on ONNX Runtime: the session that turns texts into class probabilities.

Rust tokenizer → length-bucketed int64 batches → one ONNX Runtime call per batch → softmax: no torch tensors, no
per-call Python objects beyond the encodings. The export happens at training time
(:mod:`prompt_sentinel.training.transformer.onnx_export`), the model interface around this runner is
:class:`prompt_sentinel.models.transformer.OnnxTransformerSentinelModel`.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from prompt_sentinel.config import InferenceConfig
from prompt_sentinel.inference.backends import Backend, choose_backend, requested_backend
from prompt_sentinel.inference.onnx_runtime import (
    FastTokenizer,
    OnnxSession,
    length_sorted_batches,
    softmax,
)
from prompt_sentinel.inference.parity import (
    record_from_params,
)
from prompt_sentinel.run_layout import ONNX_CLASSIFIER, ONNX_CLASSIFIER_INT8

log = logging.getLogger(__name__)

FILES: dict[str, str] = {"onnx": ONNX_CLASSIFIER, "onnx-int8": ONNX_CLASSIFIER_INT8}


class OnnxClassifier:
    """Tokenizer + ONNX Runtime session returning class probabilities."""

    def __init__(
        self, path: Path, tokenizer: Any, max_length: int, n_labels: int, threads: int | None, backend: str
    ) -> None:
        self.tokenizer = FastTokenizer(tokenizer, max_length)
        self.session = OnnxSession(
            path, self.tokenizer.input_names, output_width=n_labels, threads=threads, backend=backend
        )
        self.n_labels = n_labels

    def predict_proba(self, texts: Sequence[str], batch_size: int = 64) -> np.ndarray:
        encodings = self.tokenizer.encode(texts)
        if len(encodings) == 1:  # the serving hot path: no bucketing bookkeeping
            return softmax(self.session.run(self.tokenizer.pad(encodings)))
        out = np.empty((len(encodings), self.n_labels), dtype=np.float32)
        for idx in length_sorted_batches([len(e.ids) for e in encodings], batch_size):
            out[idx] = softmax(self.session.run(self.tokenizer.pad([encodings[i] for i in idx])))
        return out


def transformer_backend(path: Path, params: dict[str, Any], cfg: InferenceConfig | None) -> Backend:
    """The backend a transformer artifact (its descriptor's ``params``) runs on under ``cfg`` (see
    :func:`choose_backend`)."""
    record = record_from_params(params)
    passed = None
    if record is not None:
        passed = [b for b in record.passed() if b == "torch" or (path / FILES[b]).is_file()]
    return choose_backend(requested_backend(cfg), passed, str(path))
