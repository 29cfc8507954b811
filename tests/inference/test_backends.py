"""Backend selection, thread counts and the parity gate's arithmetic (no model needed)."""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import numpy as np
import pytest

from prompt_sentinel.config import InferenceConfig, load_config
from prompt_sentinel.errors import ConfigError, ModelFormatError
from prompt_sentinel.inference.backends import (
    BACKEND_ENV,
    THREADS_ENV,
    TORCH_THREADS_ENV,
    choose_backend,
    cpu_limit,
    inference_threads,
    requested_backend,
    require_onnxruntime,
    torch_threads,
)
from prompt_sentinel.inference.parity import (
    MAX_PROBA_DELTA,
    InferenceRecord,
    classifier_parity,
    encoder_parity,
    record_from_params,
)


@pytest.fixture
def no_onnxruntime(monkeypatch: pytest.MonkeyPatch) -> None:
    """onnxruntime as if it were not installed (``import onnxruntime`` raises ImportError)."""
    monkeypatch.setitem(sys.modules, "onnxruntime", None)


def test_config_section_defaults_and_validation() -> None:
    cfg = load_config(None)
    assert (cfg.inference.backend, cfg.inference.threads, cfg.inference.export_onnx) == ("auto", None, True)
    assert load_config(None, ["inference.backend=onnx-int8"]).inference.backend == "onnx-int8"
    with pytest.raises(ConfigError, match=r"inference\.backend"):
        load_config(None, ["inference.backend=tensorrt"])
    with pytest.raises(ConfigError, match=r"inference\.threads"):
        load_config(None, ["inference.threads=0"])


def test_env_overrides_the_setting_with_a_log_line(monkeypatch, caplog) -> None:
    monkeypatch.delenv(BACKEND_ENV, raising=False)
    assert requested_backend(InferenceConfig(backend="onnx")) == "onnx"
    monkeypatch.setenv(BACKEND_ENV, "torch")
    with caplog.at_level(logging.INFO, logger="prompt_sentinel.inference.backends"):
        assert requested_backend(InferenceConfig(backend="onnx")) == "torch"
    assert f"{BACKEND_ENV}=torch overrides inference.backend=onnx" in caplog.text
    monkeypatch.setenv(BACKEND_ENV, "fast")
    with pytest.raises(ConfigError, match=rf"{BACKEND_ENV}='fast' is not a backend; allowed: \['auto'"):
        requested_backend(None)


def test_thread_counts_come_from_the_setting_or_the_environment_and_must_be_positive(monkeypatch) -> None:
    for name in (THREADS_ENV, "SENTINEL_TORCH_THREADS", "OMP_NUM_THREADS"):
        monkeypatch.delenv(name, raising=False)
    assert inference_threads(3) == 3
    with pytest.raises(ConfigError, match=r"inference\.threads=0: must be a positive integer"):
        inference_threads(0)
    monkeypatch.setenv(THREADS_ENV, "2")
    assert inference_threads(None) == 2
    monkeypatch.setenv(THREADS_ENV, "-1")
    with pytest.raises(ConfigError, match=rf"{THREADS_ENV}='-1'"):
        inference_threads(None)
    monkeypatch.delenv(THREADS_ENV)
    monkeypatch.setenv("OMP_NUM_THREADS", "5")
    assert inference_threads(None) == 5  # the existing torch rule: OMP_NUM_THREADS, then the CPU limit
    monkeypatch.setenv("OMP_NUM_THREADS", "0")
    with pytest.raises(ConfigError, match=r"OMP_NUM_THREADS='0'"):
        inference_threads(None)


def test_auto_is_the_fastest_backend_that_passed(monkeypatch) -> None:
    monkeypatch.setattr("prompt_sentinel.inference.backends.gpu_available", lambda: False)
    assert choose_backend("auto", ["torch", "onnx", "onnx-int8"], "m") == "onnx-int8"
    assert choose_backend("auto", ["torch", "onnx"], "m") == "onnx"
    assert choose_backend("auto", None, "m") == "torch"  # no parity record: only torch is known to be right
    assert choose_backend("torch", ["torch", "onnx-int8"], "m") == "torch"


def test_auto_stays_on_torch_on_a_gpu(monkeypatch) -> None:
    monkeypatch.setattr("prompt_sentinel.inference.backends.gpu_available", lambda: True)
    assert choose_backend("auto", ["torch", "onnx", "onnx-int8"], "m") == "torch"


def test_an_export_that_failed_parity_falls_back_with_a_warning(monkeypatch, caplog) -> None:
    monkeypatch.setattr("prompt_sentinel.inference.backends.gpu_available", lambda: False)
    with caplog.at_level(logging.WARNING, logger="prompt_sentinel.inference.backends"):
        assert choose_backend("onnx-int8", ["torch", "onnx"], "/models/m1") == "onnx"
        assert choose_backend("onnx", None, "/models/m2") == "torch"
    assert "/models/m1: inference.backend=onnx-int8 requested but it failed parity for this model; using onnx" in (
        caplog.text
    )
    assert "/models/m2: inference.backend=onnx requested but it has no parity record" in caplog.text


def test_onnxruntime_missing_is_a_clear_error_when_asked_for(no_onnxruntime, monkeypatch, caplog) -> None:
    monkeypatch.setattr("prompt_sentinel.inference.backends.gpu_available", lambda: False)
    with pytest.raises(ConfigError, match=r"inference\.backend=onnx: the onnxruntime package is not installed"):
        require_onnxruntime("onnx")
    with pytest.raises(ConfigError, match="onnxruntime package is not installed"):
        choose_backend("onnx-int8", ["torch", "onnx-int8"], "m")
    with caplog.at_level(logging.WARNING, logger="prompt_sentinel.inference.backends"):
        assert choose_backend("auto", ["torch", "onnx-int8"], "m") == "torch"
    assert "onnxruntime is not installed; running on torch" in caplog.text


def test_classifier_parity_thresholds() -> None:
    rng = np.random.default_rng(0)
    ref = rng.dirichlet(np.ones(3), size=1000)
    labels = ref.argmax(axis=1)
    same = classifier_parity(ref, ref + 1e-6, labels, labels)
    assert same.passed and same.label_agreement == 1.0 and same.max_abs_proba_delta < 1e-5
    # 0.4 % of labels differ (within the 99.5 % bound) but one probability moved by more than the 0.02 bound
    flipped = labels.copy()
    flipped[:4] = (flipped[:4] + 1) % 3
    moved = ref.copy()
    moved[7, 0] += MAX_PROBA_DELTA + 0.001
    result = classifier_parity(ref, moved, labels, flipped)
    assert not result.passed and result.label_agreement == pytest.approx(0.996)
    assert result.reason == "max |Δprobability| 0.0210 > 0.02"
    flipped[:6] = (labels[:6] + 1) % 3
    assert classifier_parity(ref, ref, labels, flipped).reason == "label agreement 0.9940 < 0.995"
    assert not classifier_parity(ref, ref[:, :2], labels, labels).passed  # another label count


def test_encoder_parity_uses_the_worst_cosine() -> None:
    rng = np.random.default_rng(1)
    ref = rng.normal(size=(50, 8))
    close = ref + rng.normal(scale=1e-3, size=ref.shape)
    assert encoder_parity(ref, close).passed
    far = close.copy()
    far[3] = -far[3]
    result = encoder_parity(ref, far)
    assert not result.passed and result.min_cosine == pytest.approx(-1.0, abs=1e-3)
    assert result.reason.startswith("min cosine -1.0")


def test_record_round_trips_through_descriptor_params() -> None:
    assert record_from_params({"C": 1.0}) is None
    record = InferenceRecord(
        kind="classifier",
        parity_set="validation split (10 rows)",
        backends={"torch": {"passed": True}, "onnx": {"passed": True}, "onnx-int8": {"passed": False}},
        auto="onnx",
    )
    parsed = record_from_params({"C": 1.0, "inference": record.model_dump(mode="json", exclude_none=True)})
    assert parsed is not None and parsed.passed() == ["onnx", "torch"] and parsed.auto == "onnx"


def test_cpu_limit_reads_the_cgroup_quota(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    import os

    available = len(os.sched_getaffinity(0))
    cpu_max = tmp_path / "cpu.max"
    cpu_max.write_text("150000 100000\n")  # 1.5 CPUs → 2 threads (never more than the CPUs we can run on)
    assert cpu_limit(cpu_max) == min(2, available)
    cpu_max.write_text("50000 100000\n")
    assert cpu_limit(cpu_max) == 1
    cpu_max.write_text("max 100000\n")
    assert cpu_limit(cpu_max) == available
    assert cpu_limit(tmp_path / "absent") == available

    monkeypatch.setenv(TORCH_THREADS_ENV, "3")
    assert torch_threads(cpu_max) == 3
    monkeypatch.setenv(TORCH_THREADS_ENV, "zero")
    with pytest.raises(ModelFormatError, match=TORCH_THREADS_ENV):
        torch_threads(cpu_max)
