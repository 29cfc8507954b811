"""Pushing a model directory as the next version: validate, claim a number, upload, describe, complete, alias.

Everything is validated before the registry is touched; a failure during upload removes the partial version,
and a crash leaves one that readers never see and ``gc`` removes. Mirroring into MLflow happens afterwards
(:mod:`prompt_sentinel.registry.mlflow_sync`): the registry is the source of truth.
"""

from __future__ import annotations

import logging
import os
import shutil
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from prompt_sentinel.checksums import sha256_bytes
from prompt_sentinel.registry import aliases as alias_store
from prompt_sentinel.registry import model_card
from prompt_sentinel.registry.backends import Backend
from prompt_sentinel.registry.layout import CARD_FILE, METADATA_FILE, version_key, version_ref
from prompt_sentinel.registry.records import json_bytes, now
from prompt_sentinel.registry.source import build_metadata, prepare_source, source_files
from prompt_sentinel.registry.versions import (
    allocate_version,
    completion_marker,
    discard_version,
    write_completion_marker,
)

log = logging.getLogger(__name__)


@dataclass
class PushResult:
    name: str
    version: int
    uri: str
    ref: str
    aliases: list[str]
    metadata_sha256: str
    files: int
    metadata: dict[str, Any] = field(repr=False)
    mlflow_version: str | None = None
    mlflow_error: str | None = None


@dataclass
class Staged:
    """A pushed version plus the local artifact it came from (the MLflow mirror logs that copy)."""

    result: PushResult
    local: Path
    temp: Path | None  # a download of a gs:// source, removed by :meth:`cleanup`
    changes: dict[str, int | None]  # the alias moves of the push

    def cleanup(self) -> None:
        if self.temp is not None:
            shutil.rmtree(self.temp, ignore_errors=True)


def push_version(
    backend: Backend,
    model_dir: str | Path,
    name: str,
    aliases: Sequence[str],
    metrics: Mapping[str, Any] | None = None,
    lineage: Mapping[str, Any] | None = None,
    before_complete: Callable[[int], None] | None = None,
    discard: Callable[[str, int], None] | None = None,
) -> Staged:
    """Upload ``model_dir`` as the next version of ``name`` and point ``aliases`` at it (in one update).

    ``name`` and ``aliases`` are already validated. ``before_complete`` is a test seam, called after every
    file is uploaded and right before the ``_COMPLETE`` marker; ``discard(name, version)`` removes a partial
    version after a failure (by default :func:`discard_version` on ``backend``). The caller must call
    :meth:`Staged.cleanup`.
    """
    local, temp = prepare_source(model_dir)
    try:
        files = source_files(local)
        metadata = build_metadata(local, name, files, metrics, lineage, str(model_dir))
        backend.check_writable()
        push_id = uuid.uuid4().hex
        claim = {"push_id": push_id, "created_at": now(), "host": os.uname().nodename, "pid": os.getpid()}
        version = allocate_version(backend, name, claim)
        uri = backend.uri(version_key(name, version))
        try:
            metadata.update(version=version, push_id=push_id, uri=uri, registry_root=backend.root)
            for rel in files:
                backend.upload_file(local / rel, version_key(name, version, rel))
            metadata_raw = json_bytes(metadata)
            card_raw = model_card.render_model_card(metadata).encode("utf-8")
            backend.write(version_key(name, version, METADATA_FILE), metadata_raw)
            backend.write(version_key(name, version, CARD_FILE), card_raw)
            if before_complete is not None:
                before_complete(version)
            marker = completion_marker(version, push_id, metadata_raw, card_raw)
            write_completion_marker(backend, name, version, marker)
        except BaseException:
            if discard is None:
                discard_version(backend, name, version)
            else:
                discard(name, version)
            raise
        log.info("pushed %s as %s (%s)", model_dir, version_ref(name, version), uri)
        changes: dict[str, int | None] = {}
        if aliases:
            changes = alias_store.assign(
                backend, name, version, aliases, promote=None, op=f"push v{version}: {','.join(aliases)}"
            )
        result = PushResult(
            name=name,
            version=version,
            uri=uri,
            ref=version_ref(name, version),
            aliases=list(aliases),
            metadata_sha256=sha256_bytes(metadata_raw),
            files=len(files),
            metadata=metadata,
        )
    except BaseException:
        if temp is not None:
            shutil.rmtree(temp, ignore_errors=True)
        raise
    return Staged(result=result, local=local, temp=temp, changes=changes)
