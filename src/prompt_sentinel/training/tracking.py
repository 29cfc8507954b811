"""MLflow helpers shared by every trainer (classical, transformer, ensemble).

One run per trained model. The tracking URI comes from ``mlflow.tracking_uri``; when unset it is a SQLite
file ``<output_dir>/mlflow.db`` with run artifacts under ``<output_dir>/mlartifacts`` (nothing is written to
the current directory). ``mlflow.enabled=False`` turns tracking off: :func:`start_run` then yields None and
the logging helpers do nothing.
"""

from __future__ import annotations

import hashlib
import logging
import math
import os
import subprocess
import tempfile
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pandas as pd

from prompt_sentinel import storage
from prompt_sentinel.config import MlflowConfig

log = logging.getLogger(__name__)

DEFAULT_DB_NAME = "mlflow.db"
DEFAULT_ARTIFACT_DIR = "mlartifacts"
MAX_PARAM_LENGTH = 6000  # MLflow's limit on a param value
GIT_COMMIT_ENV = ("SENTINEL_GIT_COMMIT", "GIT_COMMIT")  # set in container images, which carry no .git


def resolve_tracking_uri(settings: MlflowConfig, output_dir: str | Path) -> str:
    """``settings.tracking_uri`` or ``sqlite:///<output_dir>/mlflow.db``."""
    if settings.tracking_uri:
        return settings.tracking_uri
    return f"sqlite:///{(Path(output_dir) / DEFAULT_DB_NAME).resolve()}"


def default_tracking_dir(out: str) -> Path:
    """Where a trainer writing to ``out`` keeps its SQLite tracking store when none is configured."""
    if storage.is_gcs(out):
        # SQLite cannot live in a bucket; set mlflow.tracking_uri for shared tracking from pipeline steps.
        return Path(tempfile.gettempdir()) / "prompt-sentinel-mlflow"
    return Path(out).resolve().parent


def _experiment_id(settings: MlflowConfig, output_dir: Path, default_store: bool) -> str:
    import mlflow
    from mlflow.exceptions import MlflowException

    name = settings.experiment
    experiment = mlflow.get_experiment_by_name(name)
    if experiment is not None:
        return experiment.experiment_id
    location = (output_dir / DEFAULT_ARTIFACT_DIR).resolve().as_uri() if default_store else None
    try:
        return mlflow.create_experiment(name, artifact_location=location)
    except MlflowException:  # created concurrently by a parallel trainer
        experiment = mlflow.get_experiment_by_name(name)
        if experiment is None:
            raise
        return experiment.experiment_id


@contextmanager
def start_run(
    settings: MlflowConfig,
    run_name: str,
    output_dir: str | Path,
    tags: Mapping[str, Any] | None = None,
) -> Iterator[Any]:
    """Open an MLflow run (yields the ``ActiveRun``, or None when tracking is disabled).

    An exception inside the block marks the run FAILED and propagates. The previous tracking URI is
    restored afterwards, so library callers are not left pointing at this run's store.
    """
    if not settings.enabled:
        yield None
        return
    import mlflow

    out = Path(output_dir)
    default_store = not settings.tracking_uri
    if default_store:
        out.mkdir(parents=True, exist_ok=True)
    uri = resolve_tracking_uri(settings, out)
    previous_uri = mlflow.get_tracking_uri()
    mlflow.set_tracking_uri(uri)
    try:
        experiment_id = _experiment_id(settings, out, default_store)
        clean_tags = {k: str(v) for k, v in (tags or {}).items() if v is not None}
        nested = mlflow.active_run() is not None
        with mlflow.start_run(experiment_id=experiment_id, run_name=run_name, tags=clean_tags, nested=nested) as run:
            log.info("MLflow run %s (%s) at %s", run.info.run_id, run_name, uri)
            yield run
    finally:
        mlflow.set_tracking_uri(previous_uri)


def _flatten(values: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in values.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.update(_flatten(value, prefix=f"{name}."))
        else:
            flat[name] = value
    return flat


def log_params(params: Mapping[str, Any], prefix: str = "") -> None:
    """Log (nested) params as strings, truncated to MLflow's length limit. No-op without an active run."""
    import mlflow

    if mlflow.active_run() is None:
        return
    flat = {k: ("None" if v is None else str(v))[:MAX_PARAM_LENGTH] for k, v in _flatten(params, prefix).items()}
    if flat:
        mlflow.log_params(flat)


def log_metrics(metrics: Mapping[str, Any], prefix: str = "", step: int | None = None) -> None:
    """Log the finite numeric entries of (nested) ``metrics``; others are skipped."""
    import mlflow

    if mlflow.active_run() is None:
        return
    numeric = {
        k: float(v)
        for k, v in _flatten(metrics, prefix).items()
        if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(float(v))
    }
    if numeric:
        mlflow.log_metrics(numeric, step=step)


def log_artifact_dir(local_dir: str | Path, artifact_path: str | None = None) -> None:
    """Upload every file under ``local_dir`` to the active run's artifacts."""
    import mlflow

    if mlflow.active_run() is None:
        return
    mlflow.log_artifacts(str(local_dir), artifact_path=artifact_path)


def log_text(text: str, artifact_file: str) -> None:
    """Write ``text`` as an artifact file of the active run."""
    import mlflow

    if mlflow.active_run() is None:
        return
    mlflow.log_text(text, artifact_file)


def set_tags(tags: Mapping[str, Any]) -> None:
    import mlflow

    if mlflow.active_run() is None:
        return
    mlflow.set_tags({k: str(v) for k, v in tags.items() if v is not None})


def dataset_sha256(df: pd.DataFrame, columns: tuple[str, ...] = ("text", "label")) -> str:
    """sha256 of the rows' ``columns`` in order — what the model sees, independent of the file format."""
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise KeyError(f"dataset_sha256: column(s) {missing} not in {list(df.columns)}")
    digest = hashlib.sha256()
    for row in df[list(columns)].itertuples(index=False, name=None):
        # unit/record separators cannot occur in normalized text, so rows hash unambiguously
        digest.update("\x1f".join(str(v) for v in row).encode("utf-8", "surrogatepass"))
        digest.update(b"\x1e")
    return digest.hexdigest()


def git_commit(cwd: str | Path | None = None) -> str | None:
    """The source commit: ``$SENTINEL_GIT_COMMIT``/``$GIT_COMMIT`` if set, else ``git rev-parse HEAD``, else None."""
    for name in GIT_COMMIT_ENV:
        if os.environ.get(name):
            return os.environ[name]
    where = Path(cwd) if cwd else Path(__file__).resolve().parent
    try:
        result = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=where, capture_output=True, text=True, timeout=10, check=False
        )
    except (OSError, subprocess.SubprocessError):
        return None
    commit = result.stdout.strip()
    return commit if result.returncode == 0 and commit else None
