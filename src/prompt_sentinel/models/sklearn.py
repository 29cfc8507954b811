"""Save and load scikit-learn model artifacts with skops (never pickle).

skops refuses to instantiate types it does not know; we trust only types from an explicit allowlist of
module prefixes (scikit-learn, imbalanced-learn, numpy, scipy and this package). Anything else in a file —
e.g. a crafted artifact naming ``os.system`` — is refused with a clear error, before any object is built.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np
import sklearn

from prompt_sentinel.checksums import write_manifest
from prompt_sentinel.config import InferenceConfig
from prompt_sentinel.errors import ModelFormatError
from prompt_sentinel.jsonio import to_json_lenient
from prompt_sentinel.models.base import ModelDescriptor, SentinelModel
from prompt_sentinel.models.sklearn_backend import apply_backend, probabilities_by_class_id
from prompt_sentinel.run_layout import SKOPS_MODEL

TRUSTED_MODULE_PREFIXES = (
    "sklearn.",
    "imblearn.",
    "numpy.",
    "scipy.",
    "prompt_sentinel.",
    "builtins.",
    "collections.",
    "functools.partial",
)


def save_sklearn_estimator(estimator: Any, directory: str | Path) -> Path:
    """Write the fitted pipeline as ``model.skops`` (the family file the classical trainer publishes)."""
    import skops.io as sio

    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    _plain_int_vocabularies(estimator)
    sio.dump(estimator, out / SKOPS_MODEL)
    return out / SKOPS_MODEL


def save_sklearn_artifact(
    estimator: Any,
    out_dir: str | Path,
    descriptor: ModelDescriptor,
    extra_json: dict[str, Any] | None = None,
) -> Path:
    """A complete artifact directory without training: ``model.skops``, the descriptor, extra JSON files and,
    last, ``checksums.json`` (fixtures, demos, hand-built models). ``out_dir`` should be a fresh directory."""
    out = Path(out_dir)
    save_sklearn_estimator(estimator, out)
    descriptor.write(out)
    for name, payload in (extra_json or {}).items():
        (out / name).write_text(to_json_lenient(payload))
    write_manifest(out)
    return out


def _plain_int_vocabularies(estimator: Any) -> None:
    """Turn numpy-int vocabulary values into plain ints, in place.

    skops stores each numpy scalar as its own ``.npy`` member: a 100k-term TF-IDF vocabulary became 100k files
    and took seconds to load. Plain ints are stored inline.
    """
    seen: set[int] = set()

    def visit(obj: Any) -> None:
        if id(obj) in seen or not hasattr(obj, "__dict__"):
            return
        seen.add(id(obj))
        vocabulary = getattr(obj, "vocabulary_", None)
        if isinstance(vocabulary, dict):
            obj.vocabulary_ = {term: int(index) for term, index in vocabulary.items()}
        for value in vars(obj).values():
            items = value if isinstance(value, list | tuple) else [value]
            for item in items:
                candidates = item if isinstance(item, tuple) else (item,)
                for candidate in candidates:
                    if hasattr(candidate, "get_params"):
                        visit(candidate)

    visit(estimator)


def load_skops_estimator(path: str | Path) -> Any:
    import skops.io as sio

    path = Path(path)
    if not path.is_file():
        raise ModelFormatError(f"{path}: missing; a scikit-learn artifact needs {SKOPS_MODEL}")
    try:
        untrusted = sio.get_untrusted_types(file=path)
    except Exception as exc:  # not a zip / not a skops file
        raise ModelFormatError(f"{path}: not a readable skops file ({exc})") from exc
    refused = [t for t in untrusted if not t.startswith(TRUSTED_MODULE_PREFIXES)]
    if refused:
        raise ModelFormatError(f"{path}: refusing to load untrusted types {refused}")
    try:
        return sio.load(path, trusted=untrusted)
    except Exception as exc:
        raise ModelFormatError(f"{path}: cannot load skops file ({exc})") from exc


class SklearnSentinelModel(SentinelModel):
    """A fitted scikit-learn pipeline (featurizer + estimator) behind the common interface."""

    def __init__(self, path: Path, descriptor: ModelDescriptor, estimator: Any) -> None:
        super().__init__(path, descriptor)
        self.estimator = estimator

    def _predict_proba(self, texts: list[str], batch_size: int) -> np.ndarray:
        # Inputs here are lists of normalized strings and the pipeline was validated when it was fitted; on a
        # single prompt scikit-learn's per-call input/parameter checks cost about a third of the prediction.
        with sklearn.config_context(assume_finite=True, skip_parameter_validation=True):
            chunks = [
                self.estimator.predict_proba(texts[i : i + max(batch_size, 1)])
                for i in range(0, len(texts), max(batch_size, 1))
            ]
        proba = np.vstack(chunks)
        classes = getattr(self.estimator, "classes_", range(proba.shape[1]))
        return probabilities_by_class_id(proba, classes, len(self.labels))


def load_sklearn_model(
    path: str | Path, descriptor: ModelDescriptor, inference: InferenceConfig | None = None
) -> SklearnSentinelModel:
    started = time.perf_counter()
    estimator = load_skops_estimator(Path(path) / SKOPS_MODEL)
    model = SklearnSentinelModel(Path(path), descriptor, estimator)
    model.inference_backend = apply_backend(model, inference)
    model.load_seconds = time.perf_counter() - started
    return model
