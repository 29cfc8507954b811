"""Keeping the MLflow Model Registry a faithful mirror of the registry: after a push, after an alias change, and
on demand (``sentinel registry sync-mlflow``).

The registry is the source of truth, and a registry change is never undone because MLflow failed. Instead, each
mirroring step is retried and serialized for a local SQLite store (:mod:`prompt_sentinel.registry.mlflow_sync`),
and what still fails is *reported*: ``PushResult.mlflow_error`` and :attr:`ModelRegistry.last_mirror_error
<prompt_sentinel.registry.ModelRegistry.last_mirror_error>` name the version and the repair command, and the
CLI exits with status 3 (:data:`MIRROR_EXIT_CODE`): "the registry changed, the mirror did not; do not push
again, run sync-mlflow".

Aliases are always mirrored as the registry's whole current alias state (read under the store lock), so each
mirroring step also repairs alias moves an earlier, failed step missed. :func:`repair_mirror` additionally
registers complete versions MLflow never received.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from prompt_sentinel.config import MlflowConfig
from prompt_sentinel.errors import ChecksumError, RegistryError
from prompt_sentinel.registry import aliases as alias_store
from prompt_sentinel.registry import mlflow_sync
from prompt_sentinel.registry.backends import Backend
from prompt_sentinel.registry.cache import resolve_version
from prompt_sentinel.registry.layout import version_ref
from prompt_sentinel.registry.push import PushResult
from prompt_sentinel.registry.versions import OK, list_versions, read_verified

log = logging.getLogger(__name__)

MIRROR_EXIT_CODE = 3
NO_TRACKING_URI = "no mlflow.tracking_uri configured for a gs:// registry; not mirrored"


def repair_hint(name: str | None = None) -> str:
    return f"run `sentinel registry sync-mlflow{f' {name}' if name else ''}` to repair the mirror"


def tracking_uri(mlflow: MlflowConfig, root: str) -> str | None:
    """Where to mirror (None when mirroring is off or has no store for a gs:// registry)."""
    return mlflow_sync.default_tracking_uri(mlflow, root) if mlflow.enabled else None


def _missing_message(name: str, missing: Mapping[str, int]) -> str | None:
    if not missing:
        return None
    shown = ", ".join(f"{a}→v{v}" for a, v in sorted(missing.items()))
    return f"aliases of {name} not mirrored because their versions are not in MLflow: {shown}"


def _own_missing(name: str, sync: mlflow_sync.AliasSync, changes: Mapping[str, int | None]) -> str | None:
    """The unmirrorable aliases this operation is answerable for: those still pointing where it put them.

    Another alias may point at a version a concurrent push has just committed and is about to mirror itself;
    that is logged, not reported as this operation's failure.
    """
    own = {a: v for a, v in sync.missing.items() if changes.get(a) == v}
    others = {a: v for a, v in sync.missing.items() if a not in own}
    if others:
        log.warning("%s (in flight, or %s)", _missing_message(name, others), repair_hint(name))
    return _missing_message(name, own)


def mirror_push(
    backend: Backend,
    result: PushResult,
    local: Path,
    changes: Mapping[str, int | None],
    mlflow: MlflowConfig,
    headline_metrics: Sequence[str],
) -> None:
    """Register a pushed version in MLflow and mirror the model's aliases; sets ``result.mlflow_version`` or
    ``result.mlflow_error`` (naming the version and the repair command). ``changes`` are the alias moves of
    the push."""
    if not mlflow.enabled:
        return
    uri = tracking_uri(mlflow, backend.root)
    if uri is None:
        log.warning("%s: %s", result.ref, NO_TRACKING_URI)
        return
    metadata = {**result.metadata, "metadata_sha256": result.metadata_sha256}

    def attempt() -> tuple[str, mlflow_sync.AliasSync]:
        with mlflow_sync.store_lock(uri):
            client = mlflow_sync.client_for(uri)
            # idempotent: a retry after a registration whose response was lost finds the first one
            mlflow_version = mlflow_sync.find_mlflow_version(client, result.name, result.version, backend.root)
            if mlflow_version is None:
                mlflow_version = mlflow_sync.register_version(local, metadata, uri, mlflow.experiment, headline_metrics)
            wanted = alias_store.current(backend, result.name)
            return mlflow_version, mlflow_sync.sync_alias_state(client, result.name, wanted, backend.root)

    try:
        result.mlflow_version, sync = mlflow_sync.retrying(attempt, f"mirroring {result.ref} to MLflow ({uri})")
    except Exception as exc:  # the registry is the source of truth; the mirror must not undo a push
        result.mlflow_error = f"{result.ref} is not in MLflow ({uri}): {type(exc).__name__}: {exc}; " + repair_hint(
            result.name
        )
        log.warning("%s pushed but not mirrored: %s", result.ref, result.mlflow_error)
        return
    missing = _own_missing(result.name, sync, changes)
    if missing:
        result.mlflow_error = f"{missing}; {repair_hint(result.name)}"
        log.warning("%s: %s", result.ref, result.mlflow_error)


def mirror_aliases(backend: Backend, name: str, changes: Mapping[str, int | None], mlflow: MlflowConfig) -> str | None:
    """Mirror the registry's current aliases of ``name`` after ``changes``; returns what of ``changes`` could
    not be mirrored, or None."""
    uri = tracking_uri(mlflow, backend.root)
    if uri is None:
        return None

    def attempt() -> mlflow_sync.AliasSync:
        with mlflow_sync.store_lock(uri):
            wanted = alias_store.current(backend, name)
            return mlflow_sync.sync_alias_state(mlflow_sync.client_for(uri), name, wanted, backend.root)

    try:
        sync = mlflow_sync.retrying(attempt, f"mirroring the aliases of {name} to MLflow ({uri})")
    except Exception as exc:
        error = f"alias change of {name} not mirrored to MLflow ({uri}): {type(exc).__name__}: {exc}"
    else:
        error = _own_missing(name, sync, changes)
    if error:
        error = f"{error}; {repair_hint(name)}"
        log.warning("%s", error)
    return error


@dataclass
class MirrorReport:
    """What :func:`repair_mirror` did and what it could not do."""

    registered: list[tuple[str, str]] = field(default_factory=list)  # (registry ref, MLflow version)
    aliases: dict[str, dict[str, str | None]] = field(default_factory=dict)  # model → alias → MLflow version
    problems: list[str] = field(default_factory=list)

    @property
    def in_sync(self) -> bool:
        return not self.problems


def repair_mirror(
    backend: Backend,
    names: Sequence[str],
    cache_dir: Path,
    mlflow: MlflowConfig,
    headline_metrics: Sequence[str],
) -> MirrorReport:
    """Make MLflow hold every complete, intact version of ``names`` and exactly the registry's aliases.

    Versions MLflow lacks are registered from a verified local copy (:func:`resolve_version`); a corrupt
    version is reported, not mirrored. Raises :class:`RegistryError` when there is no store to mirror into.
    """
    if not mlflow.enabled:
        raise RegistryError("MLflow mirroring is off (mlflow.enabled: false); nothing to repair")
    uri = tracking_uri(mlflow, backend.root)
    if uri is None:
        raise RegistryError(f"registry {backend.root}: {NO_TRACKING_URI}; set mlflow.tracking_uri")
    report = MirrorReport()
    for name in names:
        wanted = alias_store.current(backend, name)

        def known(model: str = name) -> dict[int, str]:
            with mlflow_sync.store_lock(uri):
                return mlflow_sync.mlflow_versions(mlflow_sync.client_for(uri), model, backend.root)

        mirrored = mlflow_sync.retrying(known, f"reading MLflow's versions of {name}")
        for info in list_versions(backend, name, wanted, headline_metrics):
            ref = version_ref(name, info.version)
            if info.status != OK:
                report.problems.append(f"{ref} is corrupt and was not mirrored ({info.problem})")
                continue
            if info.version in mirrored:
                continue
            try:
                local = resolve_version(backend, name, info.version, cache_dir)
                verified = read_verified(backend, name, info.version)
            except (ChecksumError, RegistryError) as exc:
                report.problems.append(f"{ref} cannot be read and was not mirrored ({exc})")
                continue
            metadata = {**verified.metadata, "metadata_sha256": verified.metadata_sha256}

            def register(local: Path = local, metadata: dict = metadata) -> str:
                with mlflow_sync.store_lock(uri):
                    return mlflow_sync.register_version(local, metadata, uri, mlflow.experiment, headline_metrics)

            try:
                mirrored[info.version] = mlflow_sync.retrying(register, f"registering {ref} in MLflow")
            except Exception as exc:
                report.problems.append(f"{ref} could not be registered in MLflow: {type(exc).__name__}: {exc}")
                continue
            report.registered.append((ref, mirrored[info.version]))

        def sync_aliases(model: str = name) -> mlflow_sync.AliasSync:
            with mlflow_sync.store_lock(uri):
                current = alias_store.current(backend, model)
                return mlflow_sync.sync_alias_state(mlflow_sync.client_for(uri), model, current, backend.root)

        try:
            sync = mlflow_sync.retrying(sync_aliases, f"mirroring the aliases of {name}")
        except Exception as exc:
            report.problems.append(f"aliases of {name} could not be mirrored: {type(exc).__name__}: {exc}")
            continue
        report.aliases[name] = sync.applied
        missing = _missing_message(name, sync.missing)
        if missing:
            report.problems.append(missing)
    return report
