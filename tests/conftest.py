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
