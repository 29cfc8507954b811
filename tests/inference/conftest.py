"""Fixtures for the inference tests: real artifacts with ONNX exports, and an isolated ONNX cache.

* ``tiny_transformer_dir`` — a real but tiny BERT (2 layers, hidden 32, the MiniLM tokenizer) fine-tuned for one
  step by the real trainer, which exports it to ONNX and runs the parity gate (seconds);
* ``minilm_classifier_dir`` — the bundled all-MiniLM-L6-v2 fine-tuned for 3 steps on the demo data (slow tests);
* ``onnx_cache`` — a session-wide cache directory for encoder exports and embeddings, so tests never touch
  ``~/.cache`` and the encoder is exported once per test session.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
import torch

from prompt_sentinel.config import SentinelConfig, load_config
from tests.fixtures.tiny_bert import build_tiny_bert
from tests.fixtures.tiny_bert import demo_frames as tiny_demo_frames


@pytest.fixture(scope="session")
def onnx_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("inference-cache")


@pytest.fixture(scope="session")
def demo_frames(demo_csv: Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    """48 training rows (16 per class) and 24 validation rows (8 per class) from the bundled demo set."""
    train, val = tiny_demo_frames(demo_csv)
    return train[["text", "label"]], val[["text", "label"]]


@pytest.fixture(scope="session")
def tiny_base(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny BERT encoder checkpoint (no classifier head) with the bundled tokenizer."""
    return build_tiny_bert(tmp_path_factory.mktemp("tiny-bert"))


def training_cfg(*overrides: str) -> SentinelConfig:
    return load_config(None, ["mlflow.enabled=false", "transformer.batch_size=8", *overrides])


@pytest.fixture(scope="session")
def tiny_transformer_dir(tmp_path_factory: pytest.TempPathFactory, tiny_base: Path, demo_frames) -> Path:
    from prompt_sentinel.training.transformer.trainer import train_transformer

    train_df, val_df = demo_frames
    torch.set_num_threads(1)
    out = tmp_path_factory.mktemp("tiny-transformer") / "model"
    cfg = training_cfg("transformer.max_length=32", "transformer.max_steps=1", "transformer.learning_rate=1e-3")
    train_transformer(train_df, val_df, cfg, out, str(tiny_base), progress=False)
    return out


@pytest.fixture(scope="session")
def minilm_classifier_dir(tmp_path_factory: pytest.TempPathFactory, demo_csv: Path) -> Path:
    """all-MiniLM-L6-v2 fine-tuned for 3 steps (batch 8) on 300 demo rows, validated on the other 116."""
    from prompt_sentinel.training.transformer.trainer import train_transformer

    df = pd.read_csv(demo_csv)[["text", "label"]]
    torch.set_num_threads(2)
    out = tmp_path_factory.mktemp("minilm-classifier") / "model"
    cfg = training_cfg("transformer.max_steps=3", "transformer.max_length=128", "transformer.learning_rate=1e-4")
    train_transformer(df.iloc[:300], df.iloc[300:], cfg, out, progress=False)
    return out
