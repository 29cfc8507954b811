"""Verified local copies of registry versions (and of plain ``gs://`` model directories) in the cache directory.

:func:`resolve_version` returns a local directory whose files match the checksums the registry recorded for
the version. On every call, a warm copy is re-checked against the registry's metadata (the cached
``metadata.json`` must be the registry's, byte for byte), and the copy and the store are checked file by file
through stamps (:mod:`prompt_sentinel.registry.integrity`), so only files that changed are hashed. A corrupted
store is reported even when the cached copy is still good.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
from pathlib import Path

from prompt_sentinel import storage
from prompt_sentinel.checksums import MANIFEST_NAME, sha256_bytes, sha256_file, verify_manifest
from prompt_sentinel.config import RegistryConfig
from prompt_sentinel.errors import ChecksumError, RegistryError, SentinelError
from prompt_sentinel.registry.backends import Backend
from prompt_sentinel.registry.integrity import Stamp, check_copy, check_store, record_copy, record_store
from prompt_sentinel.registry.layout import (
    CARD_FILE,
    GCS_CACHE_DIR,
    METADATA_FILE,
    cache_entry,
    cache_stamp,
    version_key,
    version_ref,
)
from prompt_sentinel.registry.versions import read_verified

log = logging.getLogger(__name__)


def default_cache_dir(registry: RegistryConfig) -> Path:
    """``registry.cache_dir``, else ``$PROMPT_SENTINEL_CACHE``, else ``~/.cache/prompt-sentinel``."""
    if registry.cache_dir:
        return Path(registry.cache_dir).expanduser()
    if os.environ.get("PROMPT_SENTINEL_CACHE"):
        return Path(os.environ["PROMPT_SENTINEL_CACHE"]).expanduser()
    return Path.home() / ".cache" / "prompt-sentinel"


def resolve_version(backend: Backend, name: str, version: int, cache_dir: Path) -> Path:
    """A local, checksum-verified copy of a complete version (downloaded once, re-checked on every call)."""
    verified = read_verified(backend, name, version)
    files = verified.files
    ref = version_ref(name, version)
    target = cache_entry(cache_dir, name, version, verified.metadata_sha256)
    # listed before any download: a token seen before the bytes were checked can only be too old, never too new
    tokens = backend.file_tokens(version_key(name, version))
    if target.is_dir():
        stamp = Stamp.load(cache_stamp(target))
        _check_warm_copy(target, verified.metadata_raw, files, stamp, ref)
        try:
            check_store(backend, name, version, files, stamp, tokens)
        except ChecksumError as exc:
            raise ChecksumError(
                f"{exc}. The registry's copy of {ref} in {backend.root} is corrupted; the cached copy at {target} "
                "still matches the recorded checksums: restore the stored file from it, or push the model again"
            ) from None
        stamp.save()
        return target
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp"))
    except OSError as exc:
        raise RegistryError(
            f"cannot write the model cache {cache_dir} ({exc.strerror}); set registry.cache_dir "
            "or $PROMPT_SENTINEL_CACHE to a writable directory"
        ) from exc
    stamp = Stamp(cache_stamp(target))
    try:
        for rel in [*files, CARD_FILE]:
            backend.download_file(version_key(name, version, rel), staging / rel)
        (staging / METADATA_FILE).write_bytes(verified.metadata_raw)
        check_copy(staging, files, None)
        if (staging / MANIFEST_NAME).is_file():
            verify_manifest(staging)
        try:
            staging.rename(target)
        except OSError:
            if not target.is_dir():  # lost a race with another resolver: theirs is as good as ours
                raise
            shutil.rmtree(staging, ignore_errors=True)
            check_copy(target, files, None)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    record_store(stamp, name, version, files, tokens)
    record_copy(stamp, target, files)
    stamp.save()
    log.info("resolved %s to %s", ref, target)
    return target


def _check_warm_copy(target: Path, metadata_raw: bytes, files: dict, stamp: Stamp, ref: str) -> None:
    where = f"cached copy of {ref}; delete {target} to fetch it again"
    cached_metadata = target / METADATA_FILE
    if not cached_metadata.is_file() or sha256_file(cached_metadata) != sha256_bytes(metadata_raw):
        raise ChecksumError(f"{cached_metadata}: differs from the registry's {METADATA_FILE} ({where})")
    try:
        check_copy(target, files, stamp)  # a tampered cache is refused, not silently re-used
    except ChecksumError as exc:
        raise ChecksumError(f"{exc} ({where})") from None


def resolve_gcs_dir(uri: str, cache_dir: Path) -> Path:
    """Download a gs:// model directory into the cache (keyed by its checksums.json sha256) and verify it."""
    try:
        manifest_raw = storage.read_bytes(storage.join(uri, MANIFEST_NAME))
    except SentinelError as exc:
        raise RegistryError(f"{uri} is not a model artifact: cannot read its {MANIFEST_NAME} ({exc})") from exc
    target = cache_dir / GCS_CACHE_DIR / sha256_bytes(manifest_raw)[:24]
    if target.is_dir():
        verify_manifest(target)
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp"))
    try:
        storage.download_to_local(uri, cache_dir=staging)
        if sha256_file(staging / MANIFEST_NAME) != sha256_bytes(manifest_raw):
            raise ChecksumError(f"{uri}/{MANIFEST_NAME} changed while it was being downloaded")
        verify_manifest(staging)
        try:
            staging.rename(target)
        except OSError:
            if not target.is_dir():
                raise
            shutil.rmtree(staging, ignore_errors=True)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return target
