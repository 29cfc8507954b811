"""Numbered versions: allocation by create-only claims, the completion marker, and verified reading.

A version number is owned by whoever creates ``<name>/v<N>/_CLAIM.json`` (exactly one writer wins). A version
becomes visible when its ``_COMPLETE`` marker is created, last. The marker records the sha256 of
``metadata.json`` and of the model card, and ``marker_sha256``, a checksum over all of its other fields, so no
field of it (``completed_at`` included) can change unnoticed; ``metadata.json`` in turn records the sha256 of
every model file. Metadata of schema 2 or later states that its marker carries that checksum, so stripping the
checksum from a marker is noticed too.

Reading never trusts a file on its own: :func:`read_verified` checks the marker, then the metadata against it.
:func:`list_versions` shows a version that fails those checks as ``corrupt`` (with the reason) instead of
failing the whole listing.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from prompt_sentinel.checksums import sha256_bytes
from prompt_sentinel.errors import ChecksumError, RegistryError
from prompt_sentinel.registry import model_card
from prompt_sentinel.registry.backends import Backend
from prompt_sentinel.registry.layout import (
    ALIASES_FILE,
    CLAIM_FILE,
    COMPLETE_FILE,
    METADATA_FILE,
    VERSION_DIR_RE,
    version_key,
    version_ref,
)
from prompt_sentinel.registry.records import canonical_sha256, json_bytes, load_json, now
from prompt_sentinel.registry.refs import NAME_RE, validate_model_name

log = logging.getLogger(__name__)

# Schema 2: the completion marker carries MARKER_CHECKSUM (schema 1 markers, written before it, do not).
METADATA_SCHEMA = 2
MARKER_CHECKSUM = "marker_sha256"
OK, CORRUPT = "ok", "corrupt"
_MAX_ALLOCATION_ATTEMPTS = 1000


@dataclass
class VersionInfo:
    name: str
    version: int
    uri: str
    created_at: str
    family: str
    model_type: str
    aliases: list[str]
    metrics: dict[str, float]
    status: str = OK  # OK, or CORRUPT when its marker or metadata fails verification
    problem: str | None = None  # why it is corrupt


@dataclass
class VerifiedVersion:
    """A complete version's metadata, checked against its marker, and the marker itself."""

    metadata: dict[str, Any]
    metadata_raw: bytes
    marker: dict[str, Any]

    @property
    def files(self) -> dict[str, Any]:
        """``{relative path: {"sha256": ..., "size": ...}}`` of every model file."""
        return dict(self.metadata.get("files") or {})

    @property
    def metadata_sha256(self) -> str:
        return sha256_bytes(self.metadata_raw)


# ------------------------------------------------------------------------------------------------ listing
def list_models(backend: Backend) -> list[str]:
    return [n for n in backend.list_children("") if NAME_RE.match(n)]


def version_numbers(backend: Backend, name: str) -> list[int]:
    """Every allocated version number (complete or not)."""
    numbers = []
    for child in backend.list_children(name):
        match = VERSION_DIR_RE.match(child)
        if match:
            numbers.append(int(match.group(1)))
    return sorted(numbers)


def complete_versions(backend: Backend, name: str) -> list[int]:
    keys = set(backend.list_keys(name))
    return [v for v in version_numbers(backend, name) if version_key(name, v, COMPLETE_FILE) in keys]


def is_complete(backend: Backend, name: str, version: int) -> bool:
    return backend.read(version_key(name, version, COMPLETE_FILE)) is not None


def ensure_known_model(backend: Backend, name: str) -> None:
    """Raise :class:`RegistryError` naming the known models unless ``name`` has versions or aliases."""
    validate_model_name(name)
    if not version_numbers(backend, name) and backend.read(f"{name}/{ALIASES_FILE}") is None:
        known = list_models(backend)
        raise RegistryError(
            f"unknown model {name!r} in registry {backend.root}; "
            + (f"known models: {', '.join(known)}" if known else "the registry is empty")
        )


# --------------------------------------------------------------------------------------------- allocation
def allocate_version(backend: Backend, name: str, claim: dict[str, Any]) -> int:
    """Claim the next free version number with a create-only write; exactly one pusher wins each."""
    candidate = max(version_numbers(backend, name), default=0) + 1
    for _ in range(_MAX_ALLOCATION_ATTEMPTS):
        key = version_key(name, candidate, CLAIM_FILE)
        if backend.create(key, json_bytes({**claim, "version": candidate})):
            return candidate
        # A retried create whose first attempt landed reports a conflict with ourselves.
        existing = backend.read(key)
        if existing is not None and load_json(existing, key).get("push_id") == claim["push_id"]:
            return candidate
        candidate = max(candidate + 1, max(version_numbers(backend, name), default=0) + 1)
    raise RegistryError(f"could not allocate a version of {name} after {_MAX_ALLOCATION_ATTEMPTS} attempts")


def discard_version(backend: Backend, name: str, version: int) -> None:
    """Remove a partial version (best effort: ``gc`` removes what is left)."""
    try:
        backend.delete_prefix(version_key(name, version))
    except Exception as exc:  # the original error matters more
        log.warning("could not remove the partial version %s: %s", version_ref(name, version), exc)


# ------------------------------------------------------------------------------------------------- marker
def completion_marker(version: int, push_id: str, metadata_raw: bytes, card_raw: bytes) -> dict[str, Any]:
    """The ``_COMPLETE`` record: checksums of the metadata and the card, plus one over its own fields."""
    marker: dict[str, Any] = {
        "version": version,
        "push_id": push_id,
        "completed_at": now(),
        "metadata_sha256": sha256_bytes(metadata_raw),
        "model_card_sha256": sha256_bytes(card_raw),
    }
    marker[MARKER_CHECKSUM] = canonical_sha256(marker)
    return marker


def write_completion_marker(backend: Backend, name: str, version: int, marker: Mapping[str, Any]) -> None:
    """Create ``_COMPLETE`` (create-only); a retried create whose first attempt landed counts as success."""
    key = version_key(name, version, COMPLETE_FILE)
    if backend.create(key, json_bytes(dict(marker))):
        return
    existing = backend.read(key)
    if existing is None or load_json(existing, key).get("push_id") != marker["push_id"]:
        raise RegistryError(f"{version_ref(name, version)} was completed by someone else; this push is void")


def _checked_marker(backend: Backend, name: str, version: int) -> dict[str, Any]:
    key = version_key(name, version, COMPLETE_FILE)
    uri = backend.uri(key)
    raw = backend.read(key)
    if raw is None:
        raise RegistryError(f"{version_ref(name, version)} is not a complete version in {backend.root}")
    marker = load_json(raw, uri)
    if not isinstance(marker, dict):
        raise RegistryError(f"{uri}: malformed completion marker (expected a JSON object)")
    if MARKER_CHECKSUM in marker:
        fields = {k: v for k, v in marker.items() if k != MARKER_CHECKSUM}
        if canonical_sha256(fields) != marker[MARKER_CHECKSUM]:
            raise ChecksumError(
                f"{uri}: the completion marker's fields do not match its {MARKER_CHECKSUM}; the marker of "
                f"{version_ref(name, version)} was modified"
            )
    if marker.get("version") not in (None, version):
        raise ChecksumError(f"{uri}: the marker names version {marker.get('version')!r}, not v{version}")
    return marker


def read_verified(backend: Backend, name: str, version: int) -> VerifiedVersion:
    """``metadata.json`` of a complete version, checked against its ``_COMPLETE`` marker (itself checked first).

    Raises :class:`ChecksumError` when either was modified, :class:`RegistryError` when one is unreadable.
    """
    marker = _checked_marker(backend, name, version)
    marker_uri = backend.uri(version_key(name, version, COMPLETE_FILE))
    metadata_uri = backend.uri(version_key(name, version, METADATA_FILE))
    raw = backend.read(version_key(name, version, METADATA_FILE))
    if raw is None:
        raise ChecksumError(f"{metadata_uri}: {METADATA_FILE} is missing")
    if sha256_bytes(raw) != marker.get("metadata_sha256"):
        raise ChecksumError(
            f"{metadata_uri}: sha256 does not match the value recorded when the version was completed; the "
            "registry entry was modified"
        )
    metadata = load_json(raw, metadata_uri)
    if not isinstance(metadata, dict):
        raise RegistryError(f"{metadata_uri}: malformed metadata (expected a JSON object)")
    schema = metadata.get("schema_version", 1)
    if isinstance(schema, int) and schema >= 2 and MARKER_CHECKSUM not in marker:
        raise ChecksumError(
            f"{marker_uri}: the completion marker lacks its {MARKER_CHECKSUM} (metadata schema {schema} always "
            "writes one); the marker was modified"
        )
    for key in ("version", "push_id"):
        if key in metadata and key in marker and metadata[key] != marker[key]:
            raise ChecksumError(
                f"{marker_uri}: the marker's {key} {marker[key]!r} differs from metadata.json's {metadata[key]!r}"
            )
    return VerifiedVersion(metadata=metadata, metadata_raw=raw, marker=marker)


def list_versions(
    backend: Backend, name: str, aliases: Mapping[str, int], headline_metrics: Sequence[str]
) -> list[VersionInfo]:
    """Complete versions of ``name`` (oldest first) with their aliases and headline metrics.

    A version whose marker or metadata fails verification is listed with ``status="corrupt"`` and the reason.
    """
    by_version: dict[int, list[str]] = {}
    for alias, version in aliases.items():
        by_version.setdefault(version, []).append(alias)
    infos = []
    for version in complete_versions(backend, name):
        info = VersionInfo(
            name=name,
            version=version,
            uri=backend.uri(version_key(name, version)),
            created_at="",
            family="",
            model_type="",
            aliases=sorted(by_version.get(version, [])),
            metrics={},
        )
        try:
            metadata = read_verified(backend, name, version).metadata
        except (ChecksumError, RegistryError) as exc:
            info.status, info.problem = CORRUPT, f"{type(exc).__name__}: {exc}"
        else:
            info.created_at = str(metadata.get("created_at", ""))
            info.family = str(metadata.get("family", ""))
            info.model_type = str(metadata.get("model_type", ""))
            info.metrics = model_card.headline_metrics(metadata.get("metrics"), headline_metrics)
        infos.append(info)
    return infos
