"""Inference for fine-tuned transformer artifacts (``family == "transformer"``).

``models.loading.load_model`` verifies ``checksums.json`` and then calls :func:`load_transformer_model` with the
local directory. Weights are read from safetensors only (``use_safetensors=True``): a directory carrying only
a pickled ``pytorch_model.bin`` is refused rather than unpickled.

Batching sorts texts by token length so each padded batch wastes little compute on padding, then restores the
caller's order. Torch intra-op threads follow the container's CPU limit (cgroup ``cpu.max``), because
``os.cpu_count()`` reports the node's cores and oversubscribing a CPU-limited pod makes latency much worse.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch

from prompt_sentinel.config import InferenceConfig
from prompt_sentinel.errors import ModelFormatError
from prompt_sentinel.inference.backends import Backend, inference_threads, torch_threads
from prompt_sentinel.inference.classifier import FILES as ONNX_FILES
from prompt_sentinel.inference.classifier import OnnxClassifier, transformer_backend
from prompt_sentinel.models.base import ModelDescriptor, SentinelModel

log = logging.getLogger(__name__)

# tokenizers report this huge sentinel when they have no real limit
_NO_LIMIT = 1_000_000


@contextlib.contextmanager
def quiet_transformers() -> Iterator[None]:
    """Silence transformers' per-key load reports and progress bars (noise in logs and CLI output)."""
    from transformers.utils import logging as hf_logging

    verbosity, bars = hf_logging.get_verbosity(), hf_logging.is_progress_bar_enabled()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        hf_logging.set_verbosity(verbosity)
        if bars:
            hf_logging.enable_progress_bar()


def effective_max_length(tokenizer, config, requested: int | None) -> int:
    """The longest input the model accepts, capped by ``requested`` when given."""
    limits = [
        v
        for v in (getattr(tokenizer, "model_max_length", None), getattr(config, "max_position_embeddings", None))
        if isinstance(v, int) and 0 < v < _NO_LIMIT
    ]
    limit = min(limits) if limits else 512
    return min(requested, limit) if requested else limit


def length_buckets(lengths: list[int], batch_size: int) -> list[list[int]]:
    """Indices grouped into batches of similar length (longest first); every index appears once."""
    order = sorted(range(len(lengths)), key=lambda i: lengths[i], reverse=True)
    return [order[i : i + batch_size] for i in range(0, len(order), batch_size)]


class TransformerSentinelModel(SentinelModel):
    """A fine-tuned ``*ForSequenceClassification`` model and its tokenizer behind the common interface."""

    def __init__(self, path: Path, descriptor: ModelDescriptor, model, tokenizer, device: torch.device) -> None:
        super().__init__(path, descriptor)
        self.model = model
        self.tokenizer = tokenizer
        self.device = device
        self.max_length = effective_max_length(tokenizer, model.config, descriptor.max_length)
        self.inference_backend = "torch"

    def _predict_proba(self, texts: list[str], batch_size: int) -> np.ndarray:
        batch_size = max(int(batch_size), 1)
        encoded = self.tokenizer(list(texts), truncation=True, max_length=self.max_length, padding=False)
        input_ids: list[list[int]] = encoded["input_ids"]
        out = np.zeros((len(texts), len(self.labels)), dtype=np.float32)
        with torch.inference_mode():
            for idx in length_buckets([len(ids) for ids in input_ids], batch_size):
                features = [{k: encoded[k][i] for k in encoded} for i in idx]
                batch = self.tokenizer.pad(features, padding=True, return_tensors="pt")
                batch = {k: v.to(self.device) for k, v in batch.items()}
                logits = self.model(**batch).logits.float()
                out[idx] = torch.softmax(logits, dim=-1).cpu().numpy()
        return out


def load_transformer_model(
    path: str | Path, descriptor: ModelDescriptor, inference: InferenceConfig | None = None
) -> SentinelModel:
    """Load a verified local transformer artifact directory on the backend ``inference`` selects."""
    from transformers import AutoConfig, AutoModelForSequenceClassification, AutoTokenizer

    started = time.perf_counter()
    path = Path(path)
    if not (path / "config.json").is_file():
        raise ModelFormatError(f"{path}: no config.json; not a transformers model directory")
    if not any(path.glob("*.safetensors")):
        raise ModelFormatError(f"{path}: no *.safetensors weights (pickled weights are not loaded)")
    try:
        config = AutoConfig.from_pretrained(path)
    except Exception as exc:
        raise ModelFormatError(f"{path}/config.json: cannot be read by transformers ({exc})") from exc
    expected = len(descriptor.labels.names)
    if config.num_labels != expected:
        raise ModelFormatError(
            f"{path}: the model has {config.num_labels} output labels but {descriptor.labels.names} "
            f"({expected}) are declared in the descriptor"
        )
    backend = transformer_backend(path, descriptor.params, inference)
    if backend != "torch":
        return load_onnx_transformer(path, descriptor, backend, inference)
    torch.set_num_threads(inference_threads(inference.threads) if inference else torch_threads())
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        with quiet_transformers():
            tokenizer = AutoTokenizer.from_pretrained(path)
            model = AutoModelForSequenceClassification.from_pretrained(path, config=config, use_safetensors=True)
    except Exception as exc:
        raise ModelFormatError(f"{path}: cannot load the transformer model or tokenizer ({exc})") from exc
    model.to(device).eval()
    loaded = TransformerSentinelModel(path, descriptor, model, tokenizer, device)
    loaded.load_seconds = time.perf_counter() - started
    log.info(
        "loaded transformer %s on %s (%d torch threads, max_length %d) in %.1fs",
        path,
        device,
        torch.get_num_threads(),
        loaded.max_length,
        loaded.load_seconds,
    )
    return loaded


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


def load_onnx_transformer(
    path: Path, descriptor: ModelDescriptor, backend: Backend, cfg: InferenceConfig | None
) -> OnnxTransformerSentinelModel:
    """Open ``path``'s ONNX export for ``backend`` (the caller verified checksums) behind the common interface."""
    from transformers import AutoConfig, AutoTokenizer

    started = time.perf_counter()
    file = path / ONNX_FILES[backend]
    try:
        with quiet_transformers():
            tokenizer = AutoTokenizer.from_pretrained(path)
    except Exception as exc:
        raise ModelFormatError(f"{path}: cannot load the tokenizer ({exc})") from exc
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
