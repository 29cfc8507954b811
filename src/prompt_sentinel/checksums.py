"""sha256 manifests for artifact directories.

Every artifact directory carries ``checksums.json`` ({relative path: sha256}); loaders verify it before
reading anything, so a tampered or truncated file is refused instead of deserialized.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from prompt_sentinel.errors import ChecksumError

MANIFEST_NAME = "checksums.json"
_CHUNK = 1 << 20


def sha256_file(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def compute_manifest(directory: str | Path, exclude: tuple[str, ...] = (MANIFEST_NAME,)) -> dict[str, str]:
    root = Path(directory)
    return {
        p.relative_to(root).as_posix(): sha256_file(p)
        for p in sorted(root.rglob("*"))
        if p.is_file() and p.relative_to(root).as_posix() not in exclude
    }


def write_manifest(directory: str | Path) -> dict[str, str]:
    """Hash every file under ``directory`` and write ``checksums.json``; returns the manifest."""
    manifest = compute_manifest(directory)
    target = Path(directory) / MANIFEST_NAME
    tmp = target.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(manifest, indent=2, sort_keys=True))
    tmp.replace(target)
    return manifest


def read_manifest(directory: str | Path) -> dict[str, str]:
    path = Path(directory) / MANIFEST_NAME
    if not path.is_file():
        raise ChecksumError(f"{directory}: missing {MANIFEST_NAME}; refusing to load an unverified artifact")
    try:
        manifest = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ChecksumError(f"{path}: not valid JSON ({exc})") from exc
    if not isinstance(manifest, dict) or not all(isinstance(v, str) for v in manifest.values()):
        raise ChecksumError(f"{path}: expected an object of 'relative path': 'sha256' pairs")
    return manifest


def verify_manifest(directory: str | Path) -> dict[str, str]:
    """Check every file listed in ``checksums.json``; raise :class:`ChecksumError` naming the first mismatch."""
    root = Path(directory)
    manifest = read_manifest(root)
    for rel, expected in manifest.items():
        path = root / rel
        if not path.is_file():
            raise ChecksumError(f"{root}: file {rel} listed in {MANIFEST_NAME} is missing")
        actual = sha256_file(path)
        if actual != expected:
            raise ChecksumError(
                f"{path}: sha256 mismatch (expected {expected[:12]}…, got {actual[:12]}…); "
                "the file was modified or corrupted after it was written"
            )
    return manifest
