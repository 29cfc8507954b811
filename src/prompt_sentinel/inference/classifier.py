"""Fine-tuned transformer classifiers on ONNX Runtime: export at training time, load, predict.

:func:`export_classifier` writes ``onnx/model.onnx`` (fp32) and ``onnx/model.int8.onnx`` into the artifact
directory before its ``checksums.json`` is written, so the manifest covers them, and keeps only the files that
pass the parity gate on the validation split (:mod:`prompt_sentinel.inference.parity`). The gate's numbers go
into the descriptor (``params.inference``).

:class:`OnnxTransformerSentinelModel` is the serving hot path: Rust tokenizer → length-bucketed int64 batches →
one ONNX Runtime call per batch → softmax. No torch tensors, no per-call Python objects beyond the encodings.
"""

from __future__ import annotations

import copy
import logging
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from prompt_sentinel.checksums import sha256_file
from prompt_sentinel.config import InferenceConfig
from prompt_sentinel.decision import assign_labels
from prompt_sentinel.errors import ModelFormatError
from prompt_sentinel.inference.backends import Backend, choose_backend, inference_threads, requested_backend
from prompt_sentinel.inference.onnx_runtime import (
    FastTokenizer,
    OnnxSession,
    export_to_onnx,
    length_sorted_batches,
    quantize_int8,
    softmax,
)
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
from prompt_sentinel.modeling import ModelDescriptor, SentinelModel

log = logging.getLogger(__name__)

ONNX_DIR = "onnx"
FILES: dict[str, str] = {"onnx": f"{ONNX_DIR}/model.onnx", "onnx-int8": f"{ONNX_DIR}/model.int8.onnx"}
PARITY_MAX_ROWS = 2000


def _logits_module(model: Any) -> Any:
    import torch

    class Logits(torch.nn.Module):
        def __init__(self, inner: Any) -> None:
            super().__init__()
            self.inner = inner

        def forward(self, input_ids, attention_mask, token_type_ids=None):  # type: ignore[no-untyped-def]
            extra = {} if token_type_ids is None else {"token_type_ids": token_type_ids}
            return self.inner(input_ids=input_ids, attention_mask=attention_mask, **extra).logits

    return Logits(model).eval()


def export_classifier(
    directory: Path,
    model: Any,
    tokenizer: Any,
    descriptor: ModelDescriptor,
    texts: Sequence[str],
    parity_set: str,
    cfg: InferenceConfig | None = None,
) -> InferenceRecord:
    """Export ``model`` into ``directory/onnx/``, run the parity gate on ``texts``, keep what passes.

    ``texts`` are normalized (what the model is fed); ``descriptor`` gives labels, decision rule and max_length.
    The torch reference runs on CPU in fp32 — the path an ONNX backend replaces.
    """
    import torch

    from prompt_sentinel.transformer.model import TransformerSentinelModel

    texts = list(texts)
    if len(texts) > PARITY_MAX_ROWS:
        texts = sample_texts(texts, PARITY_MAX_ROWS)
        parity_set += f", sample of {PARITY_MAX_ROWS}"
    started = time.perf_counter()
    cpu_model = copy.deepcopy(model).to("cpu").float().eval()
    reference_model = TransformerSentinelModel(directory, descriptor, cpu_model, tokenizer, torch.device("cpu"))
    max_length = reference_model.max_length
    fast = FastTokenizer(tokenizer, max_length)
    sample = fast.pad(fast.encode(["a first example prompt", "and a second, longer example prompt here"]))
    example = {k: torch.from_numpy(v) for k, v in sample.items()}
    fp32 = export_to_onnx(_logits_module(cpu_model), example, "logits", directory / FILES["onnx"])
    int8 = quantize_int8(fp32, directory / FILES["onnx-int8"])

    roles, decision = descriptor.labels.roles, descriptor.decision
    reference = reference_model._predict_proba(texts, batch_size=64)
    reference_labels = assign_labels(reference, roles, decision)
    threads = cfg.threads if cfg else None
    results: dict[str, BackendParity] = {}
    for backend, path in (("onnx", fp32), ("onnx-int8", int8)):
        runner = OnnxClassifier(path, tokenizer, max_length, len(descriptor.labels.names), threads, backend)
        proba = runner.predict_proba(texts, batch_size=64)
        result = classifier_parity(reference, proba, reference_labels, assign_labels(proba, roles, decision))
        if result.passed:
            result.file, result.sha256 = FILES[backend], sha256_file(path)
        else:
            path.unlink()
        results[backend] = result
    if not any(r.passed for r in results.values()):
        (directory / ONNX_DIR).rmdir()
    log.info(summary_line(f"{directory.name} ({parity_set})", results) + f" [{time.perf_counter() - started:.1f}s]")
    return InferenceRecord(
        kind="classifier",
        parity_set=parity_set,
        thresholds=classifier_thresholds(),
        backends={"torch": BackendParity(passed=True, rows=len(texts)), **results},
        auto=fastest_passed(results),
        versions=versions(),
    )


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


class OnnxTransformerSentinelModel(SentinelModel):
    """A fine-tuned transformer artifact served from its exported ONNX file."""

    def __init__(self, path: Path, descriptor: ModelDescriptor, runner: OnnxClassifier, backend: Backend) -> None:
        super().__init__(path, descriptor)
        self.runner = runner
        self.inference_backend = backend
        self.device = "cpu"
        self.max_length = runner.tokenizer.max_length

    def _predict_proba(self, texts: list[str], batch_size: int) -> np.ndarray:
        return self.runner.predict_proba(texts, batch_size=max(int(batch_size), 1))


def transformer_backend(path: Path, descriptor: ModelDescriptor, cfg: InferenceConfig | None) -> Backend:
    """The backend a transformer artifact runs on under ``cfg`` (see :func:`choose_backend`)."""
    record = record_from_params(descriptor.params)
    passed = None
    if record is not None:
        passed = [b for b in record.passed() if b == "torch" or (path / FILES[b]).is_file()]
    return choose_backend(requested_backend(cfg), passed, str(path))


def load_onnx_transformer(
    path: Path, descriptor: ModelDescriptor, backend: Backend, cfg: InferenceConfig | None
) -> OnnxTransformerSentinelModel:
    """Open ``path``'s ONNX export for ``backend`` (the caller verified checksums) behind the common interface."""
    from transformers import AutoTokenizer

    from prompt_sentinel.transformer.model import effective_max_length, quiet_transformers

    started = time.perf_counter()
    file = path / FILES[backend]
    try:
        with quiet_transformers():
            tokenizer = AutoTokenizer.from_pretrained(path)
    except Exception as exc:
        raise ModelFormatError(f"{path}: cannot load the tokenizer ({exc})") from exc
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(path)
    max_length = effective_max_length(tokenizer, config, descriptor.max_length)
    threads = inference_threads(cfg.threads if cfg else None)
    runner = OnnxClassifier(file, tokenizer, max_length, len(descriptor.labels.names), threads, backend)
    model = OnnxTransformerSentinelModel(path, descriptor, runner, backend)
    model.load_seconds = time.perf_counter() - started
    log.info(
        "loaded transformer %s on ONNX Runtime (%s, %d threads, max_length %d) in %.1fs",
        path,
        backend,
        threads,
        max_length,
        model.load_seconds,
    )
    return model
