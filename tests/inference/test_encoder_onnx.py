"""The featurizer's encoder on ONNX Runtime: cached export, encoder check, and downstream parity of a real model.

Exporting MiniLM (and embedding the probe set three ways) takes ~30 s on 2 cores, so these tests are slow; the
export is made once per session into a private cache directory.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from prompt_sentinel.checksums import verify_manifest
from prompt_sentinel.config import InferenceConfig, load_config
from prompt_sentinel.errors import ChecksumError
from prompt_sentinel.features import SentenceEmbedder
from prompt_sentinel.inference.backends import BACKEND_ENV
from prompt_sentinel.inference.encoder import FILES, PARITY_FILE, ensure_encoder_export, probe_texts
from prompt_sentinel.inference.parity import (
    MAX_PROBA_DELTA,
    MIN_ENCODER_COSINE,
    MIN_LABEL_AGREEMENT,
    record_from_params,
)
from prompt_sentinel.models.base import read_descriptor
from prompt_sentinel.models.loading import load_model

pytestmark = pytest.mark.slow


@pytest.fixture(autouse=True)
def _no_env_override(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(BACKEND_ENV, raising=False)


@pytest.fixture(scope="session")
def encoder_entry(onnx_cache: Path):
    model_dir = SentenceEmbedder(batch_size=32).model_dir
    return ensure_encoder_export(model_dir, onnx_cache)


SHARED_TEST = Path(__file__).resolve().parents[3] / "shared" / "data" / "prompts_test.csv"


@pytest.fixture(scope="session")
def shared_or_demo_texts(demo_blind_csv: Path) -> list[str]:
    """200 real prompts: the shared test set when present, else the bundled blind set."""
    frame = pd.read_csv(SHARED_TEST if SHARED_TEST.is_file() else demo_blind_csv)
    return frame["text"].astype(str).sample(n=min(200, len(frame)), random_state=0).tolist()


def test_export_is_cached_checksummed_and_passes_the_encoder_check(encoder_entry, onnx_cache: Path) -> None:
    entry, record = encoder_entry
    assert entry.parent.parent == onnx_cache
    manifest = verify_manifest(entry)
    assert set(manifest) >= {FILES["onnx"], PARITY_FILE}
    assert record.kind == "encoder" and record.parity_set == f"bundled probe set ({len(probe_texts())} texts)"
    assert record.backends["onnx"].passed and record.backends["onnx"].min_cosine > 0.9999
    int8 = record.backends["onnx-int8"]
    assert int8.passed == (int8.min_cosine >= MIN_ENCODER_COSINE)
    assert (FILES["onnx-int8"] in manifest) == int8.passed
    # the second call finds the entry: same directory, nothing exported again
    mtime = (entry / PARITY_FILE).stat().st_mtime_ns
    again, _ = ensure_encoder_export(SentenceEmbedder().model_dir, onnx_cache)
    assert again == entry and (entry / PARITY_FILE).stat().st_mtime_ns == mtime


def test_onnx_embeddings_match_torch_on_real_prompts(encoder_entry, onnx_cache: Path, shared_or_demo_texts) -> None:
    texts = shared_or_demo_texts
    reference = SentenceEmbedder(batch_size=32).encode(texts)
    _, record = encoder_entry
    for backend in [b for b in ("onnx", "onnx-int8") if record.backends[b].passed]:
        embedder = SentenceEmbedder(batch_size=32, backend=backend, cache_dir=str(onnx_cache))
        assert embedder.backend == backend and embedder.onnx is not None
        vectors = embedder.encode(texts)
        cosine = (vectors * reference).sum(axis=1)
        np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
        assert cosine.min() >= (0.9999 if backend == "onnx" else MIN_ENCODER_COSINE)


def test_a_corrupt_cache_entry_is_refused_naming_the_file(encoder_entry, onnx_cache: Path, tmp_path: Path) -> None:
    entry, _ = encoder_entry
    copy_root = tmp_path / "cache"
    shutil.copytree(onnx_cache / entry.parent.name, copy_root / entry.parent.name)
    broken = copy_root / entry.parent.name / entry.name / FILES["onnx"]
    broken.write_bytes(broken.read_bytes()[:-100])
    with pytest.raises(ChecksumError, match=rf"{FILES['onnx']}: sha256 mismatch.*delete .* to export it again"):
        ensure_encoder_export(SentenceEmbedder().model_dir, copy_root)


@pytest.fixture(scope="session")
def combined_logreg_dir(tmp_path_factory: pytest.TempPathFactory, demo_csv: Path, onnx_cache: Path) -> Path:
    """A real combined-feature (MiniLM ⊕ TF-IDF/SVD) logistic regression trained on 300 demo rows."""
    from prompt_sentinel.training.classical.trainer import train_classical

    df = pd.read_csv(demo_csv)
    cfg = load_config(
        None,
        [
            "mlflow.enabled=false",
            "training.search.n_iter=1",
            "training.search.cv_folds=2",
            "featurizer.embedding_model=bundled:all-MiniLM-L6-v2",  # the torch encoder the ONNX export replaces
            f"inference.cache_dir={onnx_cache}",
        ],
    )
    out = tmp_path_factory.mktemp("combined") / "logreg"
    train_classical("logreg", df.iloc[:300], df.iloc[300:], cfg, out, progress=False)
    return out


def test_combined_model_parity_is_recorded_and_holds_on_unseen_prompts(
    combined_logreg_dir: Path, onnx_cache: Path, demo_blind_csv: Path
) -> None:
    descriptor = read_descriptor(combined_logreg_dir)
    record = record_from_params(descriptor.params)
    assert record is not None and record.parity_set == "validation split (116 rows)"
    onnx = record.backends["onnx"]
    assert onnx.passed and onnx.label_agreement == 1.0 and onnx.max_abs_proba_delta < 1e-4
    assert set(onnx.encoder_sha256) == {"bundled:all-MiniLM-L6-v2"}
    assert record.auto == next(b for b in ("onnx-int8", "onnx") if record.backends[b].passed)

    blind = pd.read_csv(demo_blind_csv)["text"].tolist()
    torch_model = load_model(combined_logreg_dir, inference=InferenceConfig(backend="torch"))
    reference = torch_model.predict_proba(blind)
    for backend in ("onnx", "onnx-int8"):
        model = load_model(combined_logreg_dir, inference=InferenceConfig(backend=backend, cache_dir=str(onnx_cache)))
        expected = backend if record.backends[backend].passed else "onnx"  # a refused int8 falls back to fp32
        assert model.inference_backend == expected
        proba = model.predict_proba(blind)
        agreement = np.mean(model.labels_for(proba) == torch_model.labels_for(reference))
        if expected == "onnx":
            assert agreement == 1.0 and np.abs(proba - reference).max() < 1e-4
        else:
            assert agreement >= MIN_LABEL_AGREEMENT - 2 / len(blind)
            assert np.abs(proba - reference).max() <= 2 * MAX_PROBA_DELTA

    # the registry's model card shows the gate
    from prompt_sentinel.registry.model_card import render_model_card

    card = render_model_card({"name": "m", "params": json.loads(descriptor.model_dump_json())["params"]})
    assert "## Inference backends" in card and "`onnx` | passed, label agreement 1.0000" in card
    assert "inference" not in card.split("## Hyperparameters")[-1].split("## Lineage")[0]


def test_featurizer_parity_compares_the_calibrated_probabilities(
    combined_logreg_dir: Path, onnx_cache: Path, demo_blind_csv: Path
) -> None:
    """A calibrated pipeline's gate measures what is served: every backend's probabilities through the calibrator."""
    from prompt_sentinel.models.calibration import Calibrator
    from prompt_sentinel.text import normalize_text
    from prompt_sentinel.training.classical.onnx_parity import featurizer_parity

    model = load_model(combined_logreg_dir, inference=InferenceConfig(backend="torch"))
    texts = [normalize_text(t) for t in pd.read_csv(demo_blind_csv)["text"].astype(str)][:60]
    labels, decision = model.descriptor.labels, model.descriptor.decision
    cfg = InferenceConfig(cache_dir=str(onnx_cache))
    raw = featurizer_parity(model.estimator, texts, labels, decision, cfg, "blind")
    # maps every row to the uniform distribution: served probabilities cannot differ between backends
    flat = Calibrator("sigmoid", {"slopes": [0.0, 0.0, 0.0], "intercepts": [0.0, 0.0, 0.0]})
    calibrated = featurizer_parity(model.estimator, texts, labels, decision, cfg, "blind", calibrator=flat)
    assert raw is not None and calibrated is not None
    compared = [b for b in ("onnx", "onnx-int8") if raw.backends[b].label_agreement is not None]
    assert compared
    assert max(raw.backends[b].max_abs_proba_delta for b in compared) > 0.0
    for backend in compared:
        entry = calibrated.backends[backend]
        assert entry.passed and entry.label_agreement == 1.0 and entry.max_abs_proba_delta == 0.0, (backend, entry)
