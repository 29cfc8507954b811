"""Load any model artifact (local directory or ``gs://`` prefix), checksums verified before anything is read.

Used by evaluation, the registry, the MLflow pyfunc, ensembles and the KServe predictor alike: each family's
loader is called with the verified local directory and its descriptor.
"""

from __future__ import annotations

from pathlib import Path

from prompt_sentinel import storage
from prompt_sentinel.checksums import verify_manifest
from prompt_sentinel.config import InferenceConfig
from prompt_sentinel.errors import ModelFormatError
from prompt_sentinel.models.base import SentinelModel, read_descriptor
from prompt_sentinel.models.ensemble import load_ensemble_model
from prompt_sentinel.models.sklearn import load_sklearn_model
from prompt_sentinel.models.transformer import load_transformer_model


def load_model(
    path_or_uri: str | Path,
    verify: bool = True,
    cache_dir: str | Path | None = None,
    inference: InferenceConfig | None = None,
) -> SentinelModel:
    """Load any artifact (local dir or gs:// prefix), verifying checksums first.

    ``inference`` chooses the backend (``inference.backend``; default ``auto``: the fastest one that passed the
    artifact's parity gate; ``SENTINEL_INFERENCE_BACKEND`` overrides it) and its threads.
    """
    local = storage.download_to_local(str(path_or_uri), cache_dir=cache_dir)
    if not local.is_dir():
        raise ModelFormatError(f"{path_or_uri}: expected a model directory, got a file")
    descriptor = read_descriptor(local)
    if verify:
        verify_manifest(local)
    if descriptor.family == "sklearn":
        return load_sklearn_model(local, descriptor, inference=inference)
    if descriptor.family == "ensemble":
        # each member runs on its own backend: the same setting, resolved against the member's parity record
        return load_ensemble_model(
            local, descriptor, lambda member: load_model(member, verify=False, inference=inference)
        )
    return load_transformer_model(local, descriptor, inference=inference)
