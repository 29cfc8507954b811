"""Mirror registry versions and aliases into the MLflow Model Registry.

The sentinel registry (``<root>/<name>/v<N>``) is the source of truth; MLflow gets the same model name, one
MLflow model version per registry version (tagged ``sentinel.version`` and ``sentinel.uri``, so the two
numberings never have to agree) and the same aliases, so teams can load ``models:/<name>@champion`` with
``mlflow.pyfunc.load_model``. The model is logged as *models-from-code* with explicit ``pip_requirements``
(inference would be slow here and can be wrong) and the artifact directory as its ``model_dir`` artifact.

This module is the MLflow side only; :mod:`prompt_sentinel.registry.mirror` decides what to mirror when. Every
MLflow call here can run under :func:`store_lock` and :func:`retrying`: for a local SQLite store the lock (a file
beside the database) serializes the processes that mirror into it, because MLflow creates and migrates the
schema of a new store on first use, and several processes doing that at once broke each other's migrations
("duplicate column name: step", "table experiments already exists"), sometimes leaving a store nobody can open.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import time
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from importlib import metadata as importlib_metadata
from pathlib import Path
from typing import Any, TypeVar

from prompt_sentinel import storage
from prompt_sentinel.config import MlflowConfig
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
LOCAL_DB_NAME = "mlflow.db"
LOCAL_ARTIFACTS_DIR = "mlartifacts"
_SQLITE_PREFIX = "sqlite:///"
_LOCK_SUFFIX = ".lock"
ATTEMPTS = 3  # tries of one mirroring step: a locked, busy or briefly unreachable store usually recovers
_BACKOFF_S = 0.5
T = TypeVar("T")


def default_tracking_uri(mlflow: MlflowConfig, registry_root: str) -> str | None:
    """``mlflow.tracking_uri``, else ``sqlite:///<parent of a local registry root>/mlflow.db``.

    A gs:// registry without a configured tracking server returns None: MLflow mirroring is skipped (there
    is no sensible local database for a shared bucket).
    """
    if mlflow.tracking_uri:
        return mlflow.tracking_uri
    if storage.is_gcs(registry_root):
        return None
    db = Path(registry_root).expanduser().absolute().parent / LOCAL_DB_NAME
    return f"{_SQLITE_PREFIX}{db}"


def sqlite_path(tracking_uri: str) -> Path | None:
    """The database file of a ``sqlite:///`` tracking URI (None for servers and other databases)."""
    return Path(tracking_uri[len(_SQLITE_PREFIX) :]) if tracking_uri.startswith(_SQLITE_PREFIX) else None


@contextmanager
def store_lock(tracking_uri: str) -> Iterator[None]:
    """Hold an exclusive lock beside a local SQLite store (``mlflow.db.lock``); a no-op for other stores.

    Every process that mirrors into the same SQLite file takes it, so the first one creates the schema alone
    and the others find it complete. SQLite serializes writers anyway, so nothing is lost in throughput.
    """
    db = sqlite_path(tracking_uri)
    if db is None:
        yield
        return
    db.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(db.with_name(db.name + _LOCK_SUFFIX), os.O_CREAT | os.O_RDWR, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)


def retrying(action: Callable[[], T], what: str, attempts: int = ATTEMPTS) -> T:
    """``action()``, tried up to ``attempts`` times with exponential backoff; the last error propagates."""
    for attempt in range(1, attempts + 1):
        try:
            return action()
        except Exception as exc:
            if attempt == attempts:
                raise
            delay = _BACKOFF_S * 2 ** (attempt - 1)
            log.warning("%s failed (attempt %d of %d, retrying in %.1fs): %s", what, attempt, attempts, delay, exc)
            time.sleep(delay)
    raise AssertionError("unreachable")


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


def _experiment_id(name: str, tracking_uri: str) -> str:
    import mlflow

    experiment = mlflow.get_experiment_by_name(name)
    if experiment is not None:
        return experiment.experiment_id
    artifact_location = None
    db = sqlite_path(tracking_uri)
    if db is not None:
        # keep artifacts beside the database instead of ./mlruns in whatever the working directory is
        artifact_location = (db.parent / LOCAL_ARTIFACTS_DIR).as_uri()
    try:
        return mlflow.create_experiment(name, artifact_location=artifact_location)
    except Exception:
        # created concurrently by another process (one using a tracking server: SQLite stores are locked)
        experiment = mlflow.get_experiment_by_name(name)
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
    tracking_uri: str,
    experiment: str,
    metric_names: Sequence[str],
) -> str:
    """Log ``local_dir`` as a pyfunc model in ``experiment`` and register it under ``metadata['name']``,
    tagged with the headline metrics in ``metric_names``; returns the MLflow model version (a string, as MLflow
    reports it). No lock and no retry: callers wrap it (:func:`store_lock`, :func:`retrying`)."""
    import mlflow

    name = str(metadata["name"])
    version = int(metadata["version"])
    metrics = headline_metrics(metadata.get("metrics"), metric_names)
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
        experiment_id = _experiment_id(experiment, tracking_uri)
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


def mlflow_versions(client: Any, name: str, root: str | None = None) -> dict[int, str]:
    """Registry version → MLflow model version, for MLflow versions tagged with ``sentinel.version``.

    With ``root``, versions mirrored from another registry root (a shared tracking server) are left out. When
    one registry version was registered twice (a retried registration), the first MLflow version counts.
    """
    from mlflow.exceptions import MlflowException

    try:
        found = client.search_model_versions(f"name='{name}'")
    except MlflowException:
        return {}
    mapping: dict[int, str] = {}
    for mv in sorted(found, key=lambda mv: int(mv.version)):
        tags = mv.tags or {}
        if root is not None and tags.get(TAG_ROOT) not in (None, "", root):
            continue
        tag = tags.get(TAG_VERSION, "")
        if tag.isdigit():
            mapping.setdefault(int(tag), str(mv.version))
    return mapping


def find_mlflow_version(client: Any, name: str, version: int, root: str | None = None) -> str | None:
    """The MLflow model version carrying ``sentinel.version == version``, if any."""
    return mlflow_versions(client, name, root).get(int(version))


def client_for(tracking_uri: str) -> Any:
    from mlflow import MlflowClient

    return MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)


@dataclass
class AliasSync:
    """What :func:`sync_alias_state` did: aliases set or removed (alias → MLflow version, None = removed) and
    registry aliases it could not mirror because their version is not in MLflow (alias → registry version)."""

    applied: dict[str, str | None] = field(default_factory=dict)
    missing: dict[str, int] = field(default_factory=dict)


def sync_alias_state(client: Any, name: str, wanted: Mapping[str, int], root: str | None = None) -> AliasSync:
    """Make MLflow's aliases of ``name`` exactly the registry's ``wanted`` (alias → registry version).

    An alias whose registry version is not in MLflow is reported in ``missing`` and removed from MLflow, so
    MLflow never serves, under that alias, a model the registry no longer names by it. Aliases that only MLflow
    has are removed too: the registry is the source of truth.
    """
    from mlflow.exceptions import MlflowException

    try:
        existing = {a: str(v) for a, v in client.get_registered_model(name).aliases.items()}
    except MlflowException:
        existing = {}  # no version was ever mirrored
    by_version = mlflow_versions(client, name, root) if wanted else {}
    sync = AliasSync()
    for alias, version in sorted(wanted.items()):
        target = by_version.get(int(version))
        if target is None:
            sync.missing[alias] = int(version)
            continue
        if existing.get(alias) != target:
            client.set_registered_model_alias(name, alias, target)
            sync.applied[alias] = target
    for alias in sorted(set(existing) - (set(wanted) - set(sync.missing))):
        with contextlib.suppress(MlflowException):  # removed concurrently: nothing to remove
            client.delete_registered_model_alias(name, alias)
        sync.applied[alias] = None
    return sync
