"""On-disk cache of sentence embeddings, so no process embeds the same text with the same encoder twice.

Keyed by (encoder checksum, backend, max_length, sha256 of the text): one directory per encoder checksum and
``<backend>-L<max_length>`` below it, so a changed checkpoint, another backend (int8 embeddings differ slightly
from torch's) or another truncation length never reads stale vectors. A directory holds

* ``meta.json`` — encoder checksum, backend, max_length, embedding size (checked on open);
* shards: ``<name>.npy`` (float32, rows × dim) and ``<name>.keys.npy`` (uint8, rows × 32: the text digests).
  The ``*.keys.npy`` files are the index: a shard becomes visible when its keys file appears.

Every file is written to a temporary name and renamed into place, data before keys, and each writer uses fresh
shard names, so two processes (CV workers, a benchmark beside a training run) can read and write one directory
without locks: a reader sees whole shards or nothing, and a text both embedded is merely stored twice.
Used by training, search, benchmarks and evaluation (``inference.embedding_cache``); serving never enables it.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import threading
import uuid
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from prompt_sentinel.inference.encoder import encoder_checksum

log = logging.getLogger(__name__)

EMBEDDINGS_DIR = "embeddings"
META_FILE = "meta.json"
KEYS_SUFFIX = ".keys.npy"
_OPEN: dict[tuple[str, str, str, int], EmbeddingDiskCache] = {}
_LOCK = threading.Lock()


def text_digest(text: str) -> bytes:
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).digest()


def _atomic_save(path: Path, array: np.ndarray) -> None:
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    with open(tmp, "wb") as handle:
        np.save(handle, array, allow_pickle=False)
    os.replace(tmp, path)


class EmbeddingDiskCache:
    """One (encoder, backend, max_length) directory of embedding shards."""

    def __init__(self, directory: Path, encoder_sha256: str, backend: str, max_length: int, dim: int) -> None:
        self.directory = directory
        self.dim = dim
        self._index: dict[bytes, tuple[str, int]] = {}
        self._loaded: set[str] = set()
        self._data: dict[str, np.ndarray] = {}
        self._lock = threading.Lock()
        directory.mkdir(parents=True, exist_ok=True)
        meta = {"encoder_sha256": encoder_sha256, "backend": backend, "max_length": max_length, "dim": dim}
        meta_path = directory / META_FILE
        if meta_path.is_file():
            try:
                found = json.loads(meta_path.read_text())
            except (OSError, ValueError):
                found = None
            if found != meta:
                raise ValueError(f"{meta_path}: describes {found}, expected {meta}; the cache directory is corrupt")
        else:
            tmp = meta_path.with_name(f".{META_FILE}.{uuid.uuid4().hex}.tmp")
            tmp.write_text(json.dumps(meta, sort_keys=True))
            os.replace(tmp, meta_path)

    @classmethod
    def open(cls, root: str | Path, encoder_dir: str | Path, backend: str, max_length: int, dim: int):
        """The cache for this encoder/backend/max_length under ``root`` (one instance per process)."""
        checksum = encoder_checksum(encoder_dir)
        key = (str(Path(root).resolve()), checksum, backend, max_length)
        with _LOCK:
            cache = _OPEN.get(key)
            if cache is None:
                directory = Path(root) / EMBEDDINGS_DIR / checksum[:24] / f"{backend}-L{max_length}"
                cache = _OPEN[key] = cls(directory, checksum, backend, max_length, dim)
            return cache

    def _refresh(self) -> None:
        """Index shards written since the last look (by this or another process)."""
        for keys_path in sorted(self.directory.glob(f"*{KEYS_SUFFIX}")):
            name = keys_path.name[: -len(KEYS_SUFFIX)]
            if name in self._loaded:
                continue
            try:
                keys = np.load(keys_path, allow_pickle=False)
                data = np.load(self.directory / f"{name}.npy", mmap_mode="r", allow_pickle=False)
            except (OSError, ValueError) as exc:
                log.warning("skipping unreadable embedding cache shard %s (%s)", keys_path, exc)
                self._loaded.add(name)
                continue
            if keys.ndim != 2 or keys.shape[1] != 32 or data.shape != (len(keys), self.dim):
                log.warning("skipping embedding cache shard %s: shapes %s / %s", keys_path, keys.shape, data.shape)
                self._loaded.add(name)
                continue
            self._data[name] = data
            for row, digest in enumerate(keys):
                self._index.setdefault(digest.tobytes(), (name, row))
            self._loaded.add(name)

    def lookup(self, texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        """(found mask, vectors): rows of ``vectors`` where ``found`` is False are zero."""
        digests = [text_digest(t) for t in texts]
        found = np.zeros(len(texts), dtype=bool)
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        with self._lock:
            if any(d not in self._index for d in digests):
                self._refresh()
            for i, digest in enumerate(digests):
                hit = self._index.get(digest)
                if hit is not None:
                    out[i] = self._data[hit[0]][hit[1]]
                    found[i] = True
        return found, out

    def store(self, texts: Sequence[str], vectors: np.ndarray) -> None:
        """Add a shard holding ``vectors`` (rows in the order of ``texts``)."""
        if len(texts) == 0:
            return
        vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        if vectors.shape != (len(texts), self.dim):
            raise ValueError(f"expected vectors of shape {(len(texts), self.dim)}, got {vectors.shape}")
        keys = np.frombuffer(b"".join(text_digest(t) for t in texts), dtype=np.uint8).reshape(len(texts), 32)
        name = f"shard-{os.getpid()}-{uuid.uuid4().hex[:12]}"
        try:
            _atomic_save(self.directory / f"{name}.npy", vectors)
            _atomic_save(self.directory / f"{name}{KEYS_SUFFIX}", keys)  # last: makes the shard visible
        except OSError as exc:
            log.warning("could not write embedding cache shard in %s (%s); continuing without it", self.directory, exc)
            return
        with self._lock:
            self._data[name] = vectors
            for row, digest in enumerate(keys):
                self._index.setdefault(digest.tobytes(), (name, row))
            self._loaded.add(name)

    def __len__(self) -> int:
        with self._lock:
            self._refresh()
            return len(self._index)
