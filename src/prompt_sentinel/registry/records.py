"""The registry's small JSON records (metadata, markers, claims, aliases): one serialization, one way to read.

Records are written as sorted, indented JSON; checksums over a record's *fields* (the completion marker's own
checksum) use the compact canonical form, so they do not depend on how the file was indented.
"""

from __future__ import annotations

import json
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from prompt_sentinel.checksums import sha256_bytes
from prompt_sentinel.errors import RegistryError


def now() -> str:
    return datetime.now(timezone.utc).isoformat()


def json_bytes(payload: Any) -> bytes:
    return (json.dumps(payload, indent=2, sort_keys=True, default=str) + "\n").encode("utf-8")


def canonical_sha256(payload: Any) -> str:
    """sha256 of ``payload`` as compact, key-sorted JSON."""
    return sha256_bytes(json.dumps(payload, sort_keys=True, separators=(",", ":"), default=str).encode("utf-8"))


def load_json(data: bytes, where: str) -> Any:
    try:
        return json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise RegistryError(f"{where}: not valid JSON ({exc})") from exc


def read_json_file(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise RegistryError(f"{path}: not readable JSON ({exc})") from exc
