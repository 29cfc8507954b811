"""Where everything lives under a registry root, and in the local cache of resolved versions.

Every file name a version directory holds is defined here and nowhere else::

    <name>/aliases.json            {"aliases": {"champion": 3, ...}, "history": [...]}   (compare-and-swap)
    <name>/v<N>/_CLAIM.json        create-only: whoever creates it owns version N
    <name>/v<N>/<model files>      the artifact directory, file for file
    <name>/v<N>/metadata.json      version, lineage, labels, params, metrics, sha256 of every file
    <name>/v<N>/model_card.md
    <name>/v<N>/_COMPLETE          create-only, written last: the sha256 of metadata.json and of the card, and
                                   a sha256 over its own fields

Readers only see versions with ``_COMPLETE``. Keys are ``/``-separated paths relative to the root (see
:mod:`prompt_sentinel.registry.backends`).

The cache (``registry.cache_dir``) holds one verified copy per version, ``<name>/v<N>-<metadata sha256[:16]>/``,
with a stamp file beside it (``<name>/.v<N>-<…>.verified.json``) that lets a warm resolve re-check the copy and
the store without hashing unchanged files again; ``gcs/<checksums.json sha256[:24]>/`` holds plain ``gs://``
model directories.
"""

from __future__ import annotations

import re
from pathlib import Path

from prompt_sentinel.run_layout import EVALUATION, PARAMS, TRAINING_REPORT

ALIASES_FILE = "aliases.json"
CLAIM_FILE = "_CLAIM.json"
COMPLETE_FILE = "_COMPLETE"
METADATA_FILE = "metadata.json"
CARD_FILE = "model_card.md"
# Registry files inside a version directory; an artifact may not bring its own files of these names.
RESERVED_FILES = (CLAIM_FILE, COMPLETE_FILE, METADATA_FILE, CARD_FILE)
# Files of the pushed artifact directory the registry reads into metadata.json (written by training/evaluation).
PARAMS_FILE = PARAMS
TRAINING_FILE = TRAINING_REPORT
EVALUATION_FILE = EVALUATION

VERSION_DIR_RE = re.compile(r"^v([1-9][0-9]*)$")
GCS_CACHE_DIR = "gcs"
_STAMP_SUFFIX = ".verified.json"


def version_key(name: str, version: int, file: str = "") -> str:
    """``<name>/v<N>`` or ``<name>/v<N>/<file>``."""
    return f"{name}/v{version}/{file}" if file else f"{name}/v{version}"


def aliases_key(name: str) -> str:
    return f"{name}/{ALIASES_FILE}"


def version_ref(name: str, version: int) -> str:
    """How people and messages name a version: ``<name>/v<N>``."""
    return f"{name}/v{version}"


def cache_entry(cache_dir: Path, name: str, version: int, metadata_sha256: str) -> Path:
    """The cached copy of a version; keyed by its metadata's sha256, so a re-pushed root never reuses it."""
    return cache_dir / name / f"v{version}-{metadata_sha256[:16]}"


def cache_stamp(entry: Path) -> Path:
    """The verification stamp of a cache entry (beside it, so copying the entry never copies the stamp)."""
    return entry.with_name(f".{entry.name}{_STAMP_SUFFIX}")
