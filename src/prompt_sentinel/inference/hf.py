"""Hugging Face sentence encoders on torch: loading a checkpoint (once per process) and mean-pooled, L2-normalized
embeddings. The one torch implementation of the embedding: :class:`prompt_sentinel.encoders.SentenceEmbedder` runs
it, and the ONNX export of the encoder (:mod:`prompt_sentinel.inference.encoder`) is checked against it."""

from __future__ import annotations

import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from prompt_sentinel.errors import ModelFormatError

_ENCODERS: dict[str, tuple[Any, Any]] = {}
_TOKENIZERS: dict[str, Any] = {}
_ENCODER_LOCK = threading.Lock()


def load_encoder(model_dir: Path) -> tuple[Any, Any]:
    key = str(model_dir.resolve())
    with _ENCODER_LOCK:
        if key in _ENCODERS:
            return _ENCODERS[key]
        from transformers import AutoModel, AutoTokenizer
        from transformers.utils import logging as hf_logging

        bar_was_on = hf_logging.is_progress_bar_enabled()
        hf_logging.disable_progress_bar()  # a "Loading weights" bar per serving replica is noise
        try:
            tokenizer = AutoTokenizer.from_pretrained(str(model_dir), local_files_only=True)
            model = AutoModel.from_pretrained(str(model_dir), local_files_only=True)
        except (OSError, ValueError, KeyError) as exc:
            raise ModelFormatError(f"{model_dir}: cannot load a sentence-transformer encoder ({exc})") from exc
        finally:
            if bar_was_on:
                hf_logging.enable_progress_bar()
        model.eval()
        _ENCODERS[key] = (tokenizer, model)
        return tokenizer, model


def load_tokenizer(model_dir: Path) -> Any:
    """The checkpoint's tokenizer alone (the ONNX backends never load the torch weights)."""
    key = str(model_dir.resolve())
    with _ENCODER_LOCK:
        if key in _ENCODERS:
            return _ENCODERS[key][0]
        if key not in _TOKENIZERS:
            from transformers import AutoTokenizer

            try:
                _TOKENIZERS[key] = AutoTokenizer.from_pretrained(str(model_dir), local_files_only=True)
            except (OSError, ValueError, KeyError) as exc:
                raise ModelFormatError(f"{model_dir}: cannot load the encoder's tokenizer ({exc})") from exc
        return _TOKENIZERS[key]


def torch_sentence_embeddings(
    tokenizer: Any, model: Any, texts: Sequence[str], batch_size: int, max_length: int, progress: bool = False
) -> np.ndarray:
    """Mean pooling over real tokens, then L2 normalization; rows in ``texts`` order."""
    import torch

    starts = range(0, len(texts), batch_size)
    if progress:
        from tqdm.auto import tqdm

        starts = tqdm(starts, desc="embedding", unit="batch", leave=False)
    chunks = []
    with torch.inference_mode():
        for start in starts:
            batch = list(texts[start : start + batch_size])
            enc = tokenizer(batch, padding=True, truncation=True, max_length=max_length, return_tensors="pt")
            hidden = model(**enc).last_hidden_state
            mask = enc["attention_mask"].unsqueeze(-1).to(hidden.dtype)
            pooled = (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1e-9)
            pooled = torch.nn.functional.normalize(pooled, p=2, dim=1)
            chunks.append(pooled.float().cpu().numpy())
    return np.concatenate(chunks, axis=0) if chunks else np.zeros((0, model.config.hidden_size), dtype=np.float32)
