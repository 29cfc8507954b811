"""Mirror registry versions and aliases into the MLflow Model Registry.

The sentinel registry (``<root>/<name>/v<N>``) is the source of truth; MLflow gets the same model name, one
MLflow model version per registry version (tagged ``sentinel.version`` and ``sentinel.uri``, so the two
numberings never have to agree) and the same aliases, so teams can load ``models:/<name>@champion`` with
``mlflow.pyfunc.load_model``. The model is logged as *models-from-code* with explicit ``pip_requirements``
(inference would be slow here and can be wrong) and the artifact directory as its ``model_dir`` artifact.
"""

from __future__ import annotations

import contextlib
import logging
import os
import warnings
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from importlib import metadata as importlib_metadata
from pathlib import Path
from typing import Any

from prompt_sentinel import storage
from prompt_sentinel.config import SentinelConfig
from prompt_sentinel.registry.model_card import headline_metrics

log = logging.getLogger(__name__)

PYFUNC_ENTRY = Path(__file__).with_name("pyfunc_entry.py")
TAG_VERSION = "sentinel.version"
TAG_URI = "sentinel.uri"
TAG_ROOT = "sentinel.registry_root"
_FAMILY_REQUIREMENTS = {
    "sklearn": ("scikit-learn", "skops", "scipy"),
    "transformer": ("torch", "transformers", "safetensors", "tokenizers"),
}
_FAMILY_REQUIREMENTS["ensemble"] = tuple(dict.fromkeys(r for reqs in _FAMILY_REQUIREMENTS.values() for r in reqs))
_COMMON_REQUIREMENTS = ("prompt-sentinel", "mlflow", "numpy", "pandas", "pydantic", "pyyaml")


def default_tracking_uri(cfg: SentinelConfig, registry_root: str) -> str | None:
    """``cfg.mlflow.tracking_uri``, else ``sqlite:///<parent of a local registry root>/mlflow.db``.

    A gs:// registry without a configured tracking server returns None: MLflow mirroring is skipped (there
    is no sensible local database for a shared bucket).
    """
    if cfg.mlflow.tracking_uri:
        return cfg.mlflow.tracking_uri
    if storage.is_gcs(registry_root):
        return None
    db = Path(registry_root).expanduser().absolute().parent / "mlflow.db"
    return f"sqlite:///{db}"


def pip_requirements(family: str) -> list[str]:
    """Pinned requirements for the logged model: this package, MLflow and the family's runtime."""
    reqs = []
    for dist in (*_COMMON_REQUIREMENTS, *_FAMILY_REQUIREMENTS.get(family, ())):
        try:
            reqs.append(f"{dist}=={importlib_metadata.version(dist)}")
        except importlib_metadata.PackageNotFoundError:
            reqs.append(dist)
    return reqs


@contextmanager
def _tracking(uri: str) -> Iterator[None]:
    """Point MLflow's fluent API at ``uri`` for the block, restoring the caller's setting afterwards."""
    import mlflow
    from mlflow.tracking._tracking_service import utils as tracking_utils

    previous = tracking_utils._tracking_uri
    previous_env = os.environ.get("MLFLOW_TRACKING_URI")
    mlflow.set_tracking_uri(uri)
    try:
        yield
    finally:
        mlflow.set_tracking_uri(previous)
        if previous_env is not None:  # set_tracking_uri(None) also clears the variable the caller had set
            os.environ["MLFLOW_TRACKING_URI"] = previous_env


def _experiment_id(cfg: SentinelConfig, tracking_uri: str) -> str:
    import mlflow

    experiment = mlflow.get_experiment_by_name(cfg.mlflow.experiment)
    if experiment is not None:
        return experiment.experiment_id
    artifact_location = None
    if tracking_uri.startswith("sqlite:///"):
        # keep artifacts beside the database instead of ./mlruns in whatever the working directory is
        artifact_location = (Path(tracking_uri[len("sqlite:///") :]).parent / "mlartifacts").as_uri()
    try:
        return mlflow.create_experiment(cfg.mlflow.experiment, artifact_location=artifact_location)
    except Exception:
        # created concurrently by another process
        experiment = mlflow.get_experiment_by_name(cfg.mlflow.experiment)
        if experiment is None:
            raise
        return experiment.experiment_id


def _signature() -> Any:
    from mlflow.models import ModelSignature
    from mlflow.types import ColSpec, Schema

    return ModelSignature(inputs=Schema([ColSpec("string", "text")]))


def _tag_value(value: Any) -> str:
    text = str(value)
    return text if len(text) <= 5000 else text[:4997] + "..."


def register_version(
    local_dir: Path,
    metadata: Mapping[str, Any],
    cfg: SentinelConfig,
    tracking_uri: str,
) -> str:
    """Log ``local_dir`` as a pyfunc model and register it under ``metadata['name']``; returns the MLflow
    model version (a string, as MLflow reports it)."""
    import mlflow

    name = str(metadata["name"])
    version = int(metadata["version"])
    metrics = headline_metrics(metadata.get("metrics"), cfg.registry.headline_metrics)
    tags = {
        TAG_VERSION: str(version),
        TAG_URI: str(metadata.get("uri", "")),
        TAG_ROOT: str(metadata.get("registry_root", "")),
        "sentinel.family": str(metadata.get("family", "")),
        "sentinel.model_type": str(metadata.get("model_type", "")),
        "sentinel.metadata_sha256": str(metadata.get("metadata_sha256", "")),
        **{f"metric.{k}": f"{v:.6g}" for k, v in metrics.items()},
    }
    with _tracking(tracking_uri):
        experiment_id = _experiment_id(cfg, tracking_uri)
        with mlflow.start_run(experiment_id=experiment_id, run_name=f"register-{name}-v{version}") as run:
            mlflow.set_tags({k: _tag_value(v) for k, v in tags.items()})
            if metrics:
                mlflow.log_metrics(metrics)
            with warnings.catch_warnings():
                # an input example would make MLflow load and run the model while logging it: not worth it
                warnings.filterwarnings("ignore", message=".*input example was not provided.*")
                info = mlflow.pyfunc.log_model(
                    name="model",
                    python_model=str(PYFUNC_ENTRY),
                    artifacts={"model_dir": str(local_dir)},
                    pip_requirements=pip_requirements(str(metadata.get("family", ""))),
                    signature=_signature(),
                )
        model_version = mlflow.register_model(
            info.model_uri, name, await_registration_for=0, tags={k: _tag_value(v) for k, v in tags.items()}
        )
        log.info(
            "registered %s v%s in MLflow as version %s (run %s)", name, version, model_version.version, run.info.run_id
        )
        return str(model_version.version)


def find_mlflow_version(client: Any, name: str, version: int) -> str | None:
    """The MLflow model version carrying ``sentinel.version == version``, if any."""
    from mlflow.exceptions import MlflowException

    try:
        versions = client.search_model_versions(f"name='{name}'")
    except MlflowException:
        return None
    for mv in versions:
        if (mv.tags or {}).get(TAG_VERSION) == str(version):
            return str(mv.version)
    return None


def sync_aliases(name: str, aliases: Mapping[str, int | None], tracking_uri: str) -> dict[str, str | None]:
    """Set (version) or delete (None) each alias on MLflow's copy of ``name``; returns alias → MLflow version.

    A registry version that was never mirrored (e.g. pushed while MLflow was unreachable) is reported with
    a warning and left out, instead of pointing the MLflow alias at the wrong model.
    """
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    client = MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)
    applied: dict[str, str | None] = {}
    for alias, version in aliases.items():
        if version is None:
            with contextlib.suppress(MlflowException):  # not set there: nothing to remove
                client.delete_registered_model_alias(name, alias)
            applied[alias] = None
            continue
        mlflow_version = find_mlflow_version(client, name, version)
        if mlflow_version is None:
            log.warning(
                "MLflow has no version of %s tagged %s=%s; alias %r not mirrored", name, TAG_VERSION, version, alias
            )
            continue
        client.set_registered_model_alias(name, alias, mlflow_version)
        applied[alias] = mlflow_version
    return applied
