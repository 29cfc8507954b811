"""Shared fixtures: real data, a real GCS emulator on loopback, free ports."""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO_ROOT.parent / "shared" / "data"
DEMO_DATA = REPO_ROOT / "src" / "prompt_sentinel" / "demo_data"

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return REPO_ROOT


@pytest.fixture(scope="session")
def demo_csv() -> Path:
    return DEMO_DATA / "demo_prompts.csv"


@pytest.fixture(scope="session")
def demo_blind_csv() -> Path:
    return DEMO_DATA / "demo_blind.csv"


@pytest.fixture(scope="session")
def shared_data_dir() -> Path:
    if not (SHARED_DATA / "prompts_train.csv").is_file():
        pytest.skip(f"shared data not found at {SHARED_DATA}")
    return SHARED_DATA


@pytest.fixture(scope="session")
def gcs_emulator() -> Iterator[str]:
    """A real gcp-storage-emulator server on loopback; sets STORAGE_EMULATOR_HOST for the session.

    Yields the emulator's base URL. Tests create their own buckets (unique names) through
    ``prompt_sentinel.storage.gcs_client()``.
    """
    from gcp_storage_emulator.server import create_server

    port = free_port()
    server = create_server("127.0.0.1", port, in_memory=True)
    server.start()
    url = f"http://127.0.0.1:{port}"
    previous = os.environ.get("STORAGE_EMULATOR_HOST")
    os.environ["STORAGE_EMULATOR_HOST"] = url
    from prompt_sentinel import storage

    storage._client_for.cache_clear()
    try:
        yield url
    finally:
        server.stop()
        if previous is None:
            os.environ.pop("STORAGE_EMULATOR_HOST", None)
        else:
            os.environ["STORAGE_EMULATOR_HOST"] = previous
        storage._client_for.cache_clear()


@pytest.fixture
def gcs_bucket(gcs_emulator: str, request: pytest.FixtureRequest) -> str:
    """A fresh bucket in the emulator; returns its name."""
    from prompt_sentinel import storage

    name = "test-" + "".join(c if c.isalnum() else "-" for c in request.node.name.lower())[:50].strip("-")
    client = storage.gcs_client()
    bucket = client.bucket(name)
    if not bucket.exists():
        client.create_bucket(name)
    return name


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory, demo_csv: Path) -> Path:
    """A real, tiny scikit-learn artifact (TF-IDF + logistic regression on the demo prompts; ~1 s to build).

    Written with ``save_sklearn_artifact`` like every trainer's output, including ``params.json``.
    """
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import Pipeline

    from prompt_sentinel.config import LabelConfig, SentinelConfig
    from prompt_sentinel.data.loading import load_dataset
    from prompt_sentinel.models.base import ModelDescriptor
    from prompt_sentinel.models.sklearn import save_sklearn_artifact
    from prompt_sentinel.text import normalize_text

    frame = load_dataset(str(demo_csv), SentinelConfig())
    estimator = Pipeline(
        [
            # a capped vocabulary keeps the skops file small, so loading it in tests stays well under a second
            ("tfidf", TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True, max_features=3000)),
            ("clf", LogisticRegression(C=10.0)),
        ]
    )
    estimator.fit([normalize_text(t) for t in frame["text"]], frame["label"])
    # numpy-int vocabulary values become one .npy entry each in a skops file; plain ints load ~10x faster
    vectorizer = estimator.named_steps["tfidf"]
    vectorizer.vocabulary_ = {term: int(i) for term, i in vectorizer.vocabulary_.items()}
    out = tmp_path_factory.mktemp("tiny-model") / "logreg"
    descriptor = ModelDescriptor(family="sklearn", model_type="logreg", labels=LabelConfig())
    save_sklearn_artifact(estimator, out, descriptor, extra_json={"params.json": {"C": 10.0}})
    return out


@pytest.fixture(scope="session")
def served_tiny_model(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[object]:
    """The real model server (``python -m serving``, a subprocess) serving ``tiny_model_dir`` on 127.0.0.1.

    Yields a namespace with ``url``, ``model_name`` ("tiny"), ``model_dir`` and ``max_instances`` (8, set
    through ``--config`` so the config path is exercised). Started once per session; ~10-20 s on 2 cores.
    """
    from types import SimpleNamespace

    from serving import running_server

    config = tmp_path_factory.mktemp("serving-config") / "serving.yaml"
    config.write_text("serving:\n  max_instances: 8\n")
    with running_server(str(tiny_model_dir), "tiny", extra_args=["--config", str(config)], timeout=180) as url:
        yield SimpleNamespace(url=url, model_name="tiny", model_dir=tiny_model_dir, max_instances=8)
