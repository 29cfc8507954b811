"""Checking a version's files against the checksums its metadata recorded, in the store and in the local cache.

A resolve with a warm cache must still notice a cached copy that was modified, and a store whose files no longer
match what was pushed: a good cached copy must not hide a corrupted registry that every other machine would
download. Hashing every file on every resolve would make a warm resolve as slow as a cold one, so both checks
keep a stamp: for each file, the token it had when it was last hashed and found correct (local: size, mtime,
ctime, inode; GCS: the object generation). A file whose token is unchanged is not read again; a rewrite changes
the token, so the file is hashed again. Stamps catch corruption and accidental edits; they are no defence
against someone who can write the store, the cache and the stamps alike.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from prompt_sentinel import checksums
from prompt_sentinel.errors import ChecksumError
from prompt_sentinel.registry.backends import Backend
from prompt_sentinel.registry.layout import version_key, version_ref

log = logging.getLogger(__name__)

STORE, COPY = "store", "copy"


def expected_sha256(entry: Any) -> str:
    return str(entry["sha256"] if isinstance(entry, Mapping) else entry)


def local_token(path: Path) -> str:
    st = path.stat()
    return f"{st.st_size}:{st.st_mtime_ns}:{st.st_ctime_ns}:{st.st_ino}"


class Stamp:
    """``{"store"|"copy": {relative path: [token, sha256]}}`` for one cached version, kept beside the copy."""

    def __init__(self, path: Path, data: dict[str, dict[str, list[str]]] | None = None) -> None:
        self.path = path
        self.data = data or {STORE: {}, COPY: {}}
        self.changed = False

    @classmethod
    def load(cls, path: Path) -> Stamp:
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return cls(path)  # none yet, or unreadable: everything is hashed once more
        if not isinstance(data, dict) or not all(isinstance(data.get(k), dict) for k in (STORE, COPY)):
            return cls(path)
        return cls(path, data)

    def known(self, section: str, rel: str, token: str, sha256: str) -> bool:
        return self.data[section].get(rel) == [token, sha256]

    def record(self, section: str, rel: str, token: str, sha256: str) -> None:
        if not self.known(section, rel, token, sha256):
            self.data[section][rel] = [token, sha256]
            self.changed = True

    def save(self) -> None:
        """Write the stamp atomically; a cache that cannot be written only costs a re-hash next time."""
        if not self.changed:
            return
        try:
            fd, tmp = tempfile.mkstemp(dir=self.path.parent, prefix=f"{self.path.name}.", suffix=".tmp")
            with os.fdopen(fd, "w", encoding="utf-8") as fh:
                json.dump(self.data, fh, sort_keys=True)
            os.replace(tmp, self.path)
        except OSError as exc:
            log.debug("could not write the verification stamp %s: %s", self.path, exc)


def verify_files(directory: Path, files: Mapping[str, Any]) -> None:
    """Hash each ``{relative path: {"sha256": ...}}`` entry; raise :class:`ChecksumError` on any mismatch."""
    check_copy(directory, files, None)


def check_copy(directory: Path, files: Mapping[str, Any], stamp: Stamp | None) -> None:
    """Check a local copy against the recorded checksums, skipping files whose stamp says they are unchanged."""
    for rel, entry in files.items():
        expected = expected_sha256(entry)
        path = directory / rel
        if not path.is_file():
            raise ChecksumError(f"{directory}: {rel} is missing (listed in the registry metadata)")
        token = local_token(path)
        if stamp is not None and stamp.known(COPY, rel, token, expected):
            continue
        actual = checksums.sha256_file(path)
        if actual != expected:
            raise ChecksumError(
                f"{path}: sha256 mismatch (registry recorded {expected[:12]}…, file has {actual[:12]}…); "
                "refusing a modified or corrupted model file"
            )
        if stamp is not None:
            stamp.record(COPY, rel, token, expected)


def check_store(
    backend: Backend,
    name: str,
    version: int,
    files: Mapping[str, Any],
    stamp: Stamp,
    tokens: Mapping[str, str] | None = None,
) -> None:
    """Check the stored files of a version against its recorded checksums (hashing only changed objects).

    ``tokens`` are the stored objects' tokens as listed before any download (listed here when omitted).
    """
    if tokens is None:
        tokens = backend.file_tokens(version_key(name, version))
    ref = version_ref(name, version)
    for rel, entry in files.items():
        expected = expected_sha256(entry)
        key = version_key(name, version, rel)
        token = tokens.get(key)
        if token is None:
            raise ChecksumError(f"{backend.uri(key)}: missing from the registry (listed in {ref}'s metadata)")
        if stamp.known(STORE, rel, token, expected):
            continue
        actual = backend.sha256(key)
        if actual != expected:
            raise ChecksumError(
                f"{backend.uri(key)}: the stored file no longer matches the sha256 recorded when {ref} was pushed "
                f"(recorded {expected[:12]}…, stored {actual[:12]}…)"
            )
        stamp.record(STORE, rel, token, expected)


def record_store(stamp: Stamp, name: str, version: int, files: Mapping[str, Any], tokens: Mapping[str, str]) -> None:
    """Remember the stored objects' tokens after their downloaded bytes were verified."""
    for rel, entry in files.items():
        token = tokens.get(version_key(name, version, rel))
        if token is not None:
            stamp.record(STORE, rel, token, expected_sha256(entry))


def record_copy(stamp: Stamp, directory: Path, files: Mapping[str, Any]) -> None:
    """Remember a verified local copy's file tokens."""
    for rel, entry in files.items():
        stamp.record(COPY, rel, local_token(directory / rel), expected_sha256(entry))
