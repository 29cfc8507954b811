"""Transformer classifiers on ONNX Runtime: export at training time, parity, loading, and every bad input.

The bad-input tests use a real tiny BERT fine-tuned for one step (its export and parity gate run in seconds);
the parity test on real data fine-tunes the bundled MiniLM for 3 steps (slow).
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from prompt_sentinel.checksums import read_manifest, verify_manifest, write_manifest
from prompt_sentinel.config import InferenceConfig
from prompt_sentinel.decision import assign_labels
from prompt_sentinel.errors import ChecksumError, ConfigError, ModelFormatError
from prompt_sentinel.inference.backends import BACKEND_ENV, THREADS_ENV
from prompt_sentinel.inference.classifier import FILES
from prompt_sentinel.inference.onnx_runtime import export_to_onnx
from prompt_sentinel.inference.parity import MAX_PROBA_DELTA, MIN_LABEL_AGREEMENT, record_from_params
from prompt_sentinel.models.base import read_descriptor
from prompt_sentinel.models.loading import load_model
from prompt_sentinel.models.transformer import OnnxTransformerSentinelModel, TransformerSentinelModel


@pytest.fixture(autouse=True)
def _no_env_override(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(BACKEND_ENV, raising=False)
    monkeypatch.delenv(THREADS_ENV, raising=False)


def _copy(src: Path, tmp_path: Path) -> Path:
    dst = tmp_path / "model"
    shutil.copytree(src, dst)
    return dst


def _backend(name: str, **extra) -> InferenceConfig:
    return InferenceConfig(backend=name, **extra)


def test_training_exports_both_onnx_files_under_the_manifest_with_parity(tiny_transformer_dir: Path) -> None:
    manifest = verify_manifest(tiny_transformer_dir)
    record = record_from_params(read_descriptor(tiny_transformer_dir).params)
    assert record is not None and record.kind == "classifier"
    assert record.parity_set == "validation split (24 rows)"
    assert record.thresholds == {"min_label_agreement": MIN_LABEL_AGREEMENT, "max_abs_proba_delta": MAX_PROBA_DELTA}
    for backend in ("onnx", "onnx-int8"):
        entry = record.backends[backend]
        assert entry.rows == 24
        if entry.passed:  # a kept export is in the manifest with the sha256 the record names
            assert manifest[FILES[backend]] == entry.sha256
            assert entry.label_agreement >= MIN_LABEL_AGREEMENT and entry.max_abs_proba_delta <= MAX_PROBA_DELTA
        else:
            assert FILES[backend] not in manifest
    assert record.backends["onnx"].passed and record.backends["onnx"].max_abs_proba_delta < 1e-4
    assert record.auto in record.passed()


def test_every_backend_gives_the_answers_the_gate_measured(tiny_transformer_dir: Path, demo_frames) -> None:
    _, val_df = demo_frames
    texts = val_df["text"].tolist()
    torch_model = load_model(tiny_transformer_dir, inference=_backend("torch"))
    assert isinstance(torch_model, TransformerSentinelModel) and torch_model.inference_backend == "torch"
    reference = torch_model.predict_proba(texts)
    record = record_from_params(torch_model.descriptor.params)
    for backend in [b for b in ("onnx", "onnx-int8") if record.backends[b].passed]:
        model = load_model(tiny_transformer_dir, inference=_backend(backend, threads=1))
        assert isinstance(model, OnnxTransformerSentinelModel) and model.inference_backend == backend
        proba = model.predict_proba(texts, batch_size=5)  # several length buckets, order restored
        # int8 quantizes activations per batch, so other batch mates move a row by ~1e-4: within the gate, not 0
        tolerance = 1e-5 if backend == "onnx" else 1e-3
        recorded = record.backends[backend]
        assert np.abs(proba - reference).max() <= min(recorded.max_abs_proba_delta + tolerance, MAX_PROBA_DELTA)
        agreement = float(np.mean(model.labels_for(proba) == torch_model.labels_for(reference)))
        assert agreement == pytest.approx(recorded.label_agreement, abs=1 / len(texts) if backend != "onnx" else 0)
        # batch 1 (the serving hot path) gives the same rows as batched prediction
        np.testing.assert_allclose(model.predict_proba(texts[:3], batch_size=1), proba[:3], atol=tolerance)
    auto = load_model(tiny_transformer_dir)
    assert auto.inference_backend == record.auto


def test_env_override_reaches_load_model(tiny_transformer_dir: Path, monkeypatch) -> None:
    monkeypatch.setenv(BACKEND_ENV, "torch")
    assert load_model(tiny_transformer_dir, inference=_backend("onnx")).inference_backend == "torch"
    monkeypatch.setenv(BACKEND_ENV, "onnx")
    assert load_model(tiny_transformer_dir).inference_backend == "onnx"


def test_a_corrupt_onnx_file_is_refused_naming_it(tiny_transformer_dir: Path, tmp_path: Path) -> None:
    model_dir = _copy(tiny_transformer_dir, tmp_path)
    onnx_file = model_dir / FILES["onnx"]
    data = bytearray(onnx_file.read_bytes())
    data[len(data) // 2] ^= 0xFF
    onnx_file.write_bytes(bytes(data))
    with pytest.raises(ChecksumError, match=r"onnx/model\.onnx: sha256 mismatch"):
        load_model(model_dir, inference=_backend("onnx"))
    # unverified (verify=False) the runtime still refuses garbage, naming the file
    onnx_file.write_bytes(b"not an onnx protobuf at all")
    with pytest.raises(ModelFormatError, match=r"onnx/model\.onnx: not a loadable ONNX model"):
        load_model(model_dir, verify=False, inference=_backend("onnx"))


def _replace_onnx(model_dir: Path, module, example: dict[str, torch.Tensor], output: str = "logits") -> None:
    export_to_onnx(module, example, output, model_dir / FILES["onnx"])
    write_manifest(model_dir)  # a consistent manifest: the mismatch itself must be caught


def _tiny_classifier(num_labels: int):
    from transformers import BertConfig, BertForSequenceClassification

    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=30522,
        hidden_size=16,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=32,
        max_position_embeddings=64,
        num_labels=num_labels,
    )
    return BertForSequenceClassification(config).eval()


def _example() -> dict[str, torch.Tensor]:
    ids = torch.tensor([[101, 2023, 2003, 102], [101, 2023, 102, 0]])
    return {"input_ids": ids, "attention_mask": (ids > 0).long(), "token_type_ids": torch.zeros_like(ids)}


def test_an_onnx_file_with_other_inputs_is_refused(tiny_transformer_dir: Path, tmp_path: Path) -> None:
    model_dir = _copy(tiny_transformer_dir, tmp_path)
    inner = _tiny_classifier(3)

    class NoTokenTypes(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.inner = inner

        def forward(self, input_ids, attention_mask):
            return self.inner(input_ids=input_ids, attention_mask=attention_mask).logits

    example = _example()
    example.pop("token_type_ids")
    _replace_onnx(model_dir, NoTokenTypes(), example)
    with pytest.raises(
        ModelFormatError, match=r"onnx/model\.onnx: the graph takes inputs \['input_ids', 'attention_mask'\]"
    ):
        load_model(model_dir, inference=_backend("onnx"))


def test_an_onnx_file_with_another_label_count_is_refused(tiny_transformer_dir: Path, tmp_path: Path) -> None:
    model_dir = _copy(tiny_transformer_dir, tmp_path)
    inner = _tiny_classifier(2)

    class Logits(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.inner = inner

        def forward(self, input_ids, attention_mask, token_type_ids):
            return self.inner(input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids).logits

    _replace_onnx(model_dir, Logits(), _example())
    with pytest.raises(ModelFormatError, match=r"onnx/model\.onnx: the graph outputs 2 values per row but 3"):
        load_model(model_dir, inference=_backend("onnx"))


def test_onnxruntime_not_installed_fails_the_load_when_asked_for(tiny_transformer_dir: Path, monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "onnxruntime", None)
    with pytest.raises(ConfigError, match=r"inference\.backend=onnx: the onnxruntime package is not installed"):
        load_model(tiny_transformer_dir, inference=_backend("onnx"))
    assert load_model(tiny_transformer_dir).inference_backend == "torch"  # auto: torch, with a warning


def test_a_thread_count_below_one_fails_the_load_naming_the_setting(tiny_transformer_dir: Path, monkeypatch) -> None:
    bad = InferenceConfig.model_construct(backend="onnx", threads=0)  # as if validation had been bypassed
    with pytest.raises(ConfigError, match=r"inference\.threads=0"):
        load_model(tiny_transformer_dir, inference=bad)
    monkeypatch.setenv(THREADS_ENV, "0")
    with pytest.raises(ConfigError, match=rf"{THREADS_ENV}='0'"):
        load_model(tiny_transformer_dir, inference=_backend("onnx"))


def test_artifacts_without_an_export_keep_running_on_torch(tiny_transformer_dir: Path, tmp_path: Path, caplog) -> None:
    model_dir = _copy(tiny_transformer_dir, tmp_path)
    shutil.rmtree(model_dir / "onnx")
    descriptor = json.loads((model_dir / "sentinel_model.json").read_text())
    descriptor["params"].pop("inference")
    (model_dir / "sentinel_model.json").write_text(json.dumps(descriptor))
    write_manifest(model_dir)
    assert "onnx/model.onnx" not in read_manifest(model_dir)
    assert load_model(model_dir).inference_backend == "torch"
    with caplog.at_level("WARNING"):
        assert load_model(model_dir, inference=_backend("onnx-int8")).inference_backend == "torch"
    assert "requested but it has no parity record" in caplog.text


@pytest.mark.slow
def test_fine_tuned_minilm_parity_on_real_data(minilm_classifier_dir: Path, demo_blind_csv: Path) -> None:
    """3-step fine-tuned MiniLM: the gate's record, and agreement on the blind set it never saw."""
    record = record_from_params(read_descriptor(minilm_classifier_dir).params)
    assert record.parity_set == "validation split (116 rows)"
    assert record.backends["onnx"].passed and record.backends["onnx"].max_abs_proba_delta < 1e-4
    blind = pd.read_csv(demo_blind_csv)["text"].tolist()
    torch_model = load_model(minilm_classifier_dir, inference=_backend("torch"))
    reference = torch_model.predict_proba(blind)
    ref_labels = torch_model.labels_for(reference)
    for backend in record.passed():
        if backend == "torch":
            continue
        model = load_model(minilm_classifier_dir, inference=_backend(backend))
        proba = model.predict_proba(blind)
        labels = assign_labels(proba, model.roles, model.descriptor.decision)
        assert np.mean(labels == ref_labels) >= MIN_LABEL_AGREEMENT
        assert np.abs(proba - reference).max() <= (1e-4 if backend == "onnx" else MAX_PROBA_DELTA)
