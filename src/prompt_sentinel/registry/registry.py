"""The model registry: immutable numbered versions plus movable aliases, on a local directory or GCS.

:class:`ModelRegistry` is a thin facade over one registry root; the work is done by small modules, each taking
the storage backend and the config section it needs:

* :mod:`~prompt_sentinel.registry.layout` — every file name a version directory holds, and the keys;
* :mod:`~prompt_sentinel.registry.refs` — ``name@alias`` / ``name/v<N>`` references, name and alias rules;
* :mod:`~prompt_sentinel.registry.versions` — version claims, the completion marker, verified reading, listing;
* :mod:`~prompt_sentinel.registry.aliases` — compare-and-swap alias updates and their history;
* :mod:`~prompt_sentinel.registry.source` and :mod:`~prompt_sentinel.registry.push` — pushing an artifact;
* :mod:`~prompt_sentinel.registry.cache` and :mod:`~prompt_sentinel.registry.integrity` — verified local copies;
* :mod:`~prompt_sentinel.registry.gc` — removing versions left unfinished by crashed pushes;
* :mod:`~prompt_sentinel.registry.mirror` — the MLflow Model Registry mirror (and its repair).

Readers only see versions with ``_COMPLETE``; a push that dies before it leaves an invisible directory that
:meth:`ModelRegistry.gc` removes once it is older than ``registry.gc_grace_seconds``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from prompt_sentinel import storage
from prompt_sentinel.checksums import sha256_bytes, verify_manifest
from prompt_sentinel.config import SentinelConfig
from prompt_sentinel.errors import ChecksumError, RegistryError
from prompt_sentinel.registry import aliases as alias_store
from prompt_sentinel.registry import cache, mirror, versions
from prompt_sentinel.registry.backends import Backend, make_backend
from prompt_sentinel.registry.gc import GcReport, collect_garbage
from prompt_sentinel.registry.layout import CARD_FILE, version_key
from prompt_sentinel.registry.mirror import MirrorReport
from prompt_sentinel.registry.push import PushResult, push_version
from prompt_sentinel.registry.refs import (
    CANDIDATE,
    CHAMPION,
    PREVIOUS,
    ROOT_SEPARATOR,
    ModelRef,
    as_ref,
    looks_like_ref,
    parse_ref,
    validate_alias,
    validate_model_name,
)
from prompt_sentinel.registry.versions import VersionInfo
from prompt_sentinel.run_layout import MODEL_DESCRIPTOR

__all__ = [
    "CANDIDATE",
    "CHAMPION",
    "PREVIOUS",
    "GcReport",
    "MirrorReport",
    "ModelRef",
    "ModelRegistry",
    "PushResult",
    "VersionInfo",
    "parse_ref",
    "push_model",
    "resolve_model_ref",
]


class ModelRegistry:
    """Versions and aliases of models under one registry root (local directory or ``gs://bucket/prefix``)."""

    def __init__(
        self,
        root: str | None = None,
        cfg: SentinelConfig | None = None,
        *,
        cache_dir: str | Path | None = None,
        client: Any = None,
    ) -> None:
        self.cfg = cfg or SentinelConfig()
        self.backend: Backend = make_backend(str(root or self.cfg.registry.root), client=client)
        self.root = self.backend.root
        self.cache_dir = Path(cache_dir).expanduser() if cache_dir else cache.default_cache_dir(self.cfg.registry)
        # Test seam: called after every file and metadata is uploaded, right before the _COMPLETE marker.
        self.before_complete: Callable[[int], None] | None = None
        # Why the last alias change was not fully mirrored to MLflow (None: mirrored, or mirroring is off).
        self.last_mirror_error: str | None = None

    def __repr__(self) -> str:
        return f"ModelRegistry({self.root!r})"

    def version_uri(self, name: str, version: int) -> str:
        return self.backend.uri(version_key(validate_model_name(name), int(version)))

    def _other(self, ref: ModelRef) -> ModelRegistry | None:
        """The registry a root-qualified reference points at, when it is not this one."""
        if not ref.root:
            return None
        other = make_backend(ref.root).root
        if other == self.root:
            return None
        return ModelRegistry(other, self.cfg, cache_dir=self.cache_dir)

    # ---------------------------------------------------------------- reading
    def list_models(self) -> list[str]:
        return versions.list_models(self.backend)

    def aliases(self, name: str) -> dict[str, int]:
        """Alias → version for ``name``."""
        return alias_store.current(self.backend, name)

    def alias_history(self, name: str) -> list[dict[str, Any]]:
        return alias_store.history(self.backend, name)

    def version_of(self, ref: str | ModelRef) -> tuple[str, int]:
        """``(name, version)`` a reference points at; the version is complete (visible)."""
        parsed = as_ref(ref)
        other = self._other(parsed)
        if other is not None:
            return other.version_of(parsed.local())
        return alias_store.version_of(self.backend, parsed.local())

    def get_metadata(self, ref: str | ModelRef) -> dict[str, Any]:
        parsed = as_ref(ref)
        other = self._other(parsed)
        if other is not None:
            return other.get_metadata(parsed.local())
        name, version = self.version_of(parsed)
        metadata = versions.read_verified(self.backend, name, version).metadata
        metadata["aliases"] = sorted(a for a, v in self.aliases(name).items() if v == version)
        return metadata

    def get_model_card(self, ref: str | ModelRef) -> str:
        parsed = as_ref(ref)
        other = self._other(parsed)
        if other is not None:
            return other.get_model_card(parsed.local())
        name, version = self.version_of(parsed)
        marker = versions.read_verified(self.backend, name, version).marker
        raw = self.backend.read(version_key(name, version, CARD_FILE)) or b""
        if marker.get("model_card_sha256") and sha256_bytes(raw) != marker["model_card_sha256"]:
            raise ChecksumError(f"{self.version_uri(name, version)}/{CARD_FILE}: sha256 mismatch")
        return raw.decode("utf-8")

    def exists(self, ref: str | ModelRef) -> bool:
        try:
            self.version_of(ref)
        except RegistryError:
            return False
        return True

    def list_versions(self, name: str) -> list[VersionInfo]:
        """Complete versions of ``name`` (oldest first) with their aliases and headline metrics; a version that
        fails verification is listed with ``status="corrupt"`` and the reason instead of failing the list."""
        versions.ensure_known_model(self.backend, name)
        current = self.aliases(name)
        return versions.list_versions(self.backend, name, current, self.cfg.registry.headline_metrics)

    def resolve(self, ref: str | ModelRef) -> Path:
        """A local copy of the version ``ref`` points at, verified against the registry on every call."""
        parsed = as_ref(ref)
        other = self._other(parsed)
        if other is not None:
            return other.resolve(parsed.local())
        name, version = self.version_of(parsed)
        return cache.resolve_version(self.backend, name, version, self.cache_dir)

    # ---------------------------------------------------------------- writing
    def push(
        self,
        model_dir: str | Path,
        name: str | None = None,
        aliases: Sequence[str] = (CANDIDATE,),
        metrics: Mapping[str, Any] | None = None,
        lineage: Mapping[str, Any] | None = None,
    ) -> PushResult:
        """Upload ``model_dir`` as the next version of ``name``, point ``aliases`` at it, mirror it to MLflow.

        Everything is validated before the registry is touched; a failure during upload removes the partial
        version (and a crash leaves one that readers never see and ``gc`` removes). A mirror failure is
        reported in ``mlflow_error``, never by undoing the push.
        """
        name = validate_model_name(name or self.cfg.registry.model_name)
        aliases = [validate_alias(a) for a in dict.fromkeys(aliases or ())]
        staged = push_version(
            self.backend,
            model_dir,
            name,
            aliases,
            metrics,
            lineage,
            before_complete=self.before_complete,
            discard=self._discard,
        )
        try:
            mirror.mirror_push(
                self.backend,
                staged.result,
                staged.local,
                staged.changes,
                self.cfg.mlflow,
                self.cfg.registry.headline_metrics,
            )
        finally:
            staged.cleanup()
        return staged.result

    def _discard(self, name: str, version: int) -> None:
        versions.discard_version(self.backend, name, version)

    def _mirrored(self, name: str, changes: dict[str, int | None]) -> dict[str, int | None]:
        self.last_mirror_error = (
            mirror.mirror_aliases(self.backend, name, changes, self.cfg.mlflow) if changes else None
        )
        return changes

    def set_alias(self, name: str, alias: str, version: int) -> dict[str, int | None]:
        """Point ``alias`` at ``version`` (no other alias moves)."""
        versions.ensure_known_model(self.backend, name)
        return self._mirrored(name, alias_store.assign(self.backend, name, int(version), [alias], promote=False))

    def remove_alias(self, name: str, alias: str) -> dict[str, int | None]:
        versions.ensure_known_model(self.backend, name)
        return self._mirrored(name, alias_store.remove(self.backend, name, alias))

    def promote(self, name: str, version: int, alias: str = CHAMPION) -> dict[str, int | None]:
        """Point ``alias`` at ``version``; the version it displaces becomes ``previous`` (for ``champion``)
        or ``previous-<alias>``, in the same atomic update."""
        versions.ensure_known_model(self.backend, name)
        return self._mirrored(name, alias_store.assign(self.backend, name, int(version), [alias], promote=True))

    def rollback(self, name: str) -> dict[str, int | None]:
        """Swap ``champion`` and ``previous`` (champion ← previous), atomically; rolling back twice undoes it."""
        versions.ensure_known_model(self.backend, name)
        return self._mirrored(name, alias_store.rollback(self.backend, name))

    # ---------------------------------------------------------------- maintenance
    def gc(self, name: str | None = None, older_than_s: float | None = None) -> GcReport:
        """Remove versions that never got their ``_COMPLETE`` marker, once older than the grace period.

        Younger ones may be pushes in flight and are only reported. Aliases pointing at missing versions are
        reported, not changed (deciding where they should point is a human call).
        """
        grace = self.cfg.registry.gc_grace_seconds if older_than_s is None else float(older_than_s)
        if name:
            versions.ensure_known_model(self.backend, name)
        names = [name] if name else self.list_models()
        return collect_garbage(self.backend, names, grace)

    def sync_mlflow(self, name: str | None = None) -> MirrorReport:
        """Repair the MLflow mirror of ``name`` (or of every model): register every complete version MLflow
        lacks and give MLflow exactly the registry's aliases."""
        if name:
            versions.ensure_known_model(self.backend, name)
        names = [name] if name else self.list_models()
        return mirror.repair_mirror(
            self.backend, names, self.cache_dir, self.cfg.mlflow, self.cfg.registry.headline_metrics
        )


# ------------------------------------------------------------------------------------- one-call helpers
def push_model(
    model_dir: str | Path,
    cfg: SentinelConfig | None = None,
    name: str | None = None,
    aliases: Iterable[str] = (CANDIDATE,),
    metrics: Mapping[str, Any] | None = None,
    lineage: Mapping[str, Any] | None = None,
    root: str | None = None,
) -> PushResult:
    """Push ``model_dir`` to ``root`` (default ``cfg.registry.root``) — the pipeline's push stage."""
    cfg = cfg or SentinelConfig()
    return ModelRegistry(root or cfg.registry.root, cfg).push(
        model_dir, name=name, aliases=tuple(aliases), metrics=metrics, lineage=lineage
    )


def resolve_model_ref(ref_or_path: str | Path, cfg: SentinelConfig | None = None) -> Path:
    """A local, checksum-verified model directory for any way of naming a model.

    Accepts a local model directory, a ``gs://`` model directory, ``name@alias``, ``name/v<N>`` (in
    ``cfg.registry.root``) or ``<registry-root>::name@alias``. Serving and evaluation call this.
    """
    cfg = cfg or SentinelConfig()
    text = str(ref_or_path)
    if ROOT_SEPARATOR in text:
        ref = parse_ref(text)
        return ModelRegistry(ref.root, cfg).resolve(ref.local())
    if storage.is_gcs(text):
        return cache.resolve_gcs_dir(text, cache.default_cache_dir(cfg.registry))
    path = Path(text).expanduser()
    if path.is_dir():
        if not (path / MODEL_DESCRIPTOR).is_file():
            raise RegistryError(f"{path} is a directory but not a model artifact (no {MODEL_DESCRIPTOR})")
        verify_manifest(path)
        return path
    if looks_like_ref(text):
        return ModelRegistry(cfg.registry.root, cfg).resolve(text)
    raise RegistryError(
        f"{text!r} is neither an existing model directory nor a registry reference "
        "('name@alias', 'name/v<N>', '<root>::name@alias', 'gs://bucket/model-dir')"
    )
