"""Fixtures for the stage tests: the demo data prepared once, and a fast config (no robustness, no latency)."""

from __future__ import annotations

from pathlib import Path

import pytest

from prompt_sentinel.config import SentinelConfig, load_config
from prompt_sentinel.stages import prepare


@pytest.fixture(scope="session")
def fast_cfg() -> SentinelConfig:
    return load_config(
        None,
        [
            "evaluation.robustness=false",
            "evaluation.efficiency=false",
            "evaluation.bootstrap_samples=20",
            "mlflow.enabled=false",
            "featurizer.kind=tfidf",
        ],
    )


@pytest.fixture(scope="session")
def demo_splits(tmp_path_factory: pytest.TempPathFactory, demo_csv: Path, demo_blind_csv: Path) -> Path:
    """train/validation/test + blind of the bundled demo data, written by the prepare stage."""
    out = tmp_path_factory.mktemp("demo-splits")
    prepare.run(str(demo_csv), str(demo_blind_csv), load_config(), out)
    return out
