"""The artifact being pushed: a validated local copy, the files that make up a version, and its metadata.

Everything here runs before the registry is touched, so a bad model directory never leaves anything behind.
"""

from __future__ import annotations

import json
import os
import platform
import re
import shutil
import subprocess
import tempfile
from collections.abc import Mapping
from importlib import metadata as importlib_metadata
from pathlib import Path
from typing import Any

from prompt_sentinel import storage
from prompt_sentinel.checksums import MANIFEST_NAME, read_manifest, sha256_file, verify_manifest
from prompt_sentinel.errors import ModelFormatError, RegistryError, SentinelError
from prompt_sentinel.models.base import read_descriptor
from prompt_sentinel.registry.layout import EVALUATION_FILE, PARAMS_FILE, RESERVED_FILES, TRAINING_FILE
from prompt_sentinel.registry.records import now, read_json_file
from prompt_sentinel.registry.versions import METADATA_SCHEMA
from prompt_sentinel.run_layout import MODEL_DESCRIPTOR

_TRACKED_PACKAGES = (
    "prompt-sentinel",
    "scikit-learn",
    "skops",
    "imbalanced-learn",
    "numpy",
    "scipy",
    "torch",
    "transformers",
    "safetensors",
    "sentence-transformers",
    "mlflow",
)


def prepare_source(model_dir: str | Path) -> tuple[Path, Path | None]:
    """A local copy of ``model_dir`` validated as a model artifact; ``(path, temp dir to delete or None)``."""
    source = str(model_dir)
    temp: Path | None = None
    if storage.is_gcs(source):
        temp = Path(tempfile.mkdtemp(prefix="sentinel-push-"))
        try:
            local = storage.download_to_local(source, cache_dir=temp)
        except SentinelError as exc:
            shutil.rmtree(temp, ignore_errors=True)
            raise RegistryError(f"cannot read model directory {source}: {exc}") from exc
    else:
        local = Path(source)
    try:
        if not local.is_dir():
            raise RegistryError(f"model directory {source} does not exist or is not a directory")
        missing = [f for f in (MODEL_DESCRIPTOR, MANIFEST_NAME) if not (local / f).is_file()]
        if missing:
            raise RegistryError(
                f"{source} is not a complete model artifact: missing {', '.join(missing)} (a directory "
                "written by `sentinel train` has both)"
            )
        try:
            read_descriptor(local)
        except ModelFormatError as exc:
            raise RegistryError(f"{source}: {exc}") from exc
        verify_manifest(local)
    except BaseException:
        if temp is not None:
            shutil.rmtree(temp, ignore_errors=True)
        raise
    return local, temp


def source_files(local: Path) -> dict[str, dict[str, Any]]:
    """``{relative path: {"sha256", "size"}}`` of every file of the artifact that becomes part of the version."""
    manifest = read_manifest(local)
    files: dict[str, dict[str, Any]] = {}
    for path in sorted(p for p in local.rglob("*") if p.is_file()):
        rel = path.relative_to(local).as_posix()
        if any(part.startswith(".") for part in rel.split("/")):
            continue  # editor/OS droppings and temp files are not part of an artifact
        if rel in RESERVED_FILES:
            if rel in manifest:
                raise RegistryError(f"{local}: the artifact's {rel} clashes with a registry file name")
            continue  # written by a previous registry download: regenerated for this version
        files[rel] = {"sha256": sha256_file(path), "size": path.stat().st_size}
    return files


def package_versions() -> dict[str, str]:
    versions = {"python": platform.python_version()}
    for dist in _TRACKED_PACKAGES:
        try:
            versions[dist] = importlib_metadata.version(dist)
        except importlib_metadata.PackageNotFoundError:
            continue
    return versions


def git_commit() -> str | None:
    for var in ("SENTINEL_GIT_COMMIT", "GIT_COMMIT"):
        if os.environ.get(var):
            return os.environ[var]
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5, check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    commit = out.stdout.strip()
    return commit if out.returncode == 0 and re.fullmatch(r"[0-9a-f]{40}", commit) else None


def dataset_hashes(node: Any, path: str = "") -> dict[str, str]:
    """Every ``*sha256*`` string that looks like a sha256, keyed by its dotted path in ``training.json``."""
    found: dict[str, str] = {}
    if isinstance(node, Mapping):
        for key, value in node.items():
            sub = f"{path}.{key}" if path else str(key)
            if isinstance(value, str) and "sha256" in str(key).lower() and re.fullmatch(r"[0-9a-f]{64}", value):
                found[sub] = value
            else:
                found.update(dataset_hashes(value, sub))
    return found


def build_metadata(
    local: Path,
    name: str,
    files: dict[str, dict[str, Any]],
    metrics: Mapping[str, Any] | None,
    lineage: Mapping[str, Any] | None,
    source: str,
) -> dict[str, Any]:
    """``metadata.json`` of a new version (without the fields only known once a number is allocated)."""
    descriptor = read_descriptor(local)
    params: Any = descriptor.params
    if (local / PARAMS_FILE).is_file():
        params = read_json_file(local / PARAMS_FILE)
    training: dict[str, Any] = {}
    if (local / TRAINING_FILE).is_file():
        loaded = read_json_file(local / TRAINING_FILE)
        training = loaded if isinstance(loaded, dict) else {}
    if metrics is None and (local / EVALUATION_FILE).is_file():
        metrics = read_json_file(local / EVALUATION_FILE)
    lineage = dict(lineage or {})
    datasets = dataset_hashes(training)
    if isinstance(metrics, Mapping) and isinstance(metrics.get("dataset"), Mapping):
        datasets.update(dataset_hashes({"evaluation": metrics["dataset"]}))  # evaluate_model's fingerprint
    datasets.update(dict(lineage.pop("datasets", {}) or {}))
    lineage.setdefault("git_commit", git_commit())
    lineage.setdefault("pipeline_run_id", os.environ.get("KFP_RUN_ID") or os.environ.get("PIPELINE_RUN_ID"))
    lineage.setdefault("source_uri", source)
    return {
        "schema_version": METADATA_SCHEMA,
        "name": name,
        "created_at": now(),
        "family": descriptor.family,
        "model_type": descriptor.model_type,
        "labels": json.loads(descriptor.labels.model_dump_json()),
        "label_map": {str(i): n for i, n in descriptor.labels.id2label.items()},
        "decision": json.loads(descriptor.decision.model_dump_json()),
        "params": params if isinstance(params, dict) else {"value": params},
        "training": {k: v for k, v in training.items() if not isinstance(v, dict | list)},
        "metrics": dict(metrics or {}),
        "datasets": datasets,
        "lineage": lineage,
        "package_versions": package_versions(),
        "files": files,
    }
