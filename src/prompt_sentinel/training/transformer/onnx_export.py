"""Export a fine-tuned transformer classifier to ONNX at training time, behind the parity gate.

:func:`export_classifier` writes ``onnx/model.onnx`` (fp32) and ``onnx/model.int8.onnx`` into the artifact directory
before its ``checksums.json`` is written, so the manifest covers them, and keeps only the files whose answers agree
with torch under the artifact's decision rule on the validation split (:mod:`prompt_sentinel.inference.parity`).
The gate's numbers go into the descriptor (``params.inference``).
"""

from __future__ import annotations

import copy
import logging
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from prompt_sentinel.checksums import sha256_file
from prompt_sentinel.config import InferenceConfig
from prompt_sentinel.decision import assign_labels
from prompt_sentinel.inference.classifier import FILES, OnnxClassifier
from prompt_sentinel.inference.onnx_runtime import FastTokenizer, export_to_onnx, quantize_int8
from prompt_sentinel.inference.parity import (
    BackendParity,
    InferenceRecord,
    classifier_parity,
    classifier_thresholds,
    fastest_passed,
    sample_texts,
    summary_line,
    versions,
)
from prompt_sentinel.models.base import ModelDescriptor
from prompt_sentinel.models.transformer import TransformerSentinelModel
from prompt_sentinel.run_layout import ONNX_DIR

log = logging.getLogger(__name__)

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
