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
import math
import os
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch

from prompt_sentinel.errors import ModelFormatError
from prompt_sentinel.models.base import ModelDescriptor, SentinelModel
from prompt_sentinel.models.pooling import is_mean_pooled, load_mean_pooled

log = logging.getLogger(__name__)

THREADS_ENV = "SENTINEL_TORCH_THREADS"
CGROUP_CPU_MAX = Path("/sys/fs/cgroup/cpu.max")
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


def cpu_limit(cgroup_file: Path = CGROUP_CPU_MAX) -> int:
    """CPUs this process may use: the cgroup v2 quota when set, else the affinity mask / ``os.cpu_count()``."""
    try:
        available = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        available = os.cpu_count() or 1
    try:
        quota, period = cgroup_file.read_text().split()[:2]
        if quota != "max":
            return max(1, min(available, math.ceil(int(quota) / int(period))))
    except (OSError, ValueError):
        pass
    return max(1, available)


def torch_threads(cgroup_file: Path = CGROUP_CPU_MAX) -> int:
    """Intra-op threads for inference: ``SENTINEL_TORCH_THREADS``, else ``OMP_NUM_THREADS``, else the CPU limit."""
    raw = os.environ.get(THREADS_ENV, "").strip()
    omp = os.environ.get("OMP_NUM_THREADS", "").strip()
    if not raw and omp.isdigit() and int(omp) > 0:
        # an operator who pinned OpenMP threads (e.g. to the pod's CPU limit) wants torch to follow it
        return int(omp)
    if raw:
        try:
            value = int(raw)
        except ValueError:
            raise ModelFormatError(f"{THREADS_ENV} must be a positive integer, got {raw!r}") from None
        if value < 1:
            raise ModelFormatError(f"{THREADS_ENV} must be a positive integer, got {raw!r}")
        return value
    return cpu_limit(cgroup_file)


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


def load_transformer_model(path: str | Path, descriptor: ModelDescriptor) -> TransformerSentinelModel:
    """Load a verified local transformer artifact directory."""
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
    torch.set_num_threads(torch_threads())
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        with quiet_transformers():
            tokenizer = AutoTokenizer.from_pretrained(path)
            if is_mean_pooled(config):  # transformer.pooling=mean: an encoder and a mean-pooled linear head
                model = load_mean_pooled(path, config)
            else:
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
