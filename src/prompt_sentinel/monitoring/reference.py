"""The training reference live traffic is compared with: written once into every model directory at training time.

``monitoring_reference.json`` (and, with an encoder, ``monitoring_reference.safetensors``) holds:

* ``predicted_label_counts`` and ``scores``: the model's labels and per-class probabilities on held-out rows (the
  validation split, never rows it was fitted on: training-set scores are overconfident and would make every live
  window look shifted);
* ``true_label_counts``: the class mix of the training data;
* ``lengths``: a seeded sample of training text lengths (characters);
* ``vocabulary`` and ``oov_rates``: the training vocabulary (letters-only words, most frequent first) and the
  out-of-vocabulary rates of held-out texts against it, so live OOV rates are compared like with like;
* ``scripts``: the share of training texts per main Unicode script;
* ``embedding``: which encoder embedded a seeded sample of training texts (the rows are the safetensors file).

Models trained before this existed have no reference: :func:`read_reference` says so and names the fallback
(``sentinel monitor --reference DATA --model MODEL`` builds one from a labelled data file).
"""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from prompt_sentinel import storage
from prompt_sentinel.config import LabelConfig, MonitoringConfig
from prompt_sentinel.errors import DataError
from prompt_sentinel.monitoring.records import main_script
from prompt_sentinel.run_layout import MONITORING_REFERENCE, REFERENCE_EMBEDDINGS

REFERENCE_SCHEMA = "prompt-sentinel.reference/v1"
EMBEDDINGS_KEY = "embeddings"
MAX_VOCABULARY = 30_000
MAX_SCORES = 2_000
_LETTER_WORD = re.compile(r"[^\W\d_]{2,}")


class MissingReferenceError(DataError):
    """The model directory holds no monitoring reference (trained before references existed)."""


def words(text: str) -> list[str]:
    """Letters-only words of two or more letters, case-folded: what the vocabulary and OOV rates count."""
    return _LETTER_WORD.findall(text.casefold())


def oov_rate(text: str, vocabulary: set[str]) -> float | None:
    """Share of ``text``'s words not in ``vocabulary`` (None for a text without words)."""
    tokens = words(text)
    if not tokens:
        return None
    return sum(t not in vocabulary for t in tokens) / len(tokens)


def build_vocabulary(texts: Sequence[str], limit: int = MAX_VOCABULARY) -> list[str]:
    counts: Counter[str] = Counter()
    for text in texts:
        counts.update(words(text))
    return [w for w, _ in counts.most_common(limit)]


def _sample(values: Sequence[Any], n: int, rng: np.random.Generator) -> list[Any]:
    if len(values) <= n:
        return list(values)
    return [values[i] for i in sorted(rng.choice(len(values), size=n, replace=False))]


def embed_texts(texts: Sequence[str], settings: MonitoringConfig) -> tuple[np.ndarray, str, str]:
    """Sentence embeddings of ``texts`` (each cut to ``embedding_max_chars``): (rows, encoder name, fingerprint)."""
    from prompt_sentinel.encoders import make_encoder

    encoder = make_encoder(settings.embedding_model)
    rows = encoder.encode([t[: settings.embedding_max_chars] for t in texts], progress=False)
    return np.asarray(rows, dtype=np.float32), encoder.name, encoder.fingerprint


@dataclass
class Reference:
    """A loaded reference: the JSON profile and, when present, the embedding rows."""

    profile: dict[str, Any]
    embeddings: np.ndarray | None = None
    location: str = ""

    @property
    def labels(self) -> list[str]:
        return list(self.profile["labels"])


def build_reference(
    train_texts: Sequence[str],
    train_labels: Sequence[int],
    labels: LabelConfig,
    settings: MonitoringConfig,
    *,
    held_texts: Sequence[str] = (),
    held_proba: np.ndarray | None = None,
    held_predicted: Sequence[int] | None = None,
    held_source: str = "validation",
    seed: int = 42,
) -> Reference:
    """The reference of a model trained on ``train_texts`` whose held-out predictions are ``held_proba``.

    ``held_predicted``: the labels the served decision rule gives those rows (default: the most probable class).
    Without held-out texts the vocabulary comes from 80 % of the training texts and the reference OOV rates from
    the other 20 %, so they still measure unseen text.
    """
    if not train_texts:
        raise DataError("a monitoring reference needs training texts")
    rng = np.random.default_rng(seed)
    texts = list(train_texts)
    if held_texts:
        vocab_texts, oov_texts = texts, list(held_texts)
    else:
        order = rng.permutation(len(texts))
        cut = max(1, int(len(texts) * 0.8))
        vocab_texts = [texts[i] for i in order[:cut]]
        oov_texts = [texts[i] for i in order[cut:]] or vocab_texts
    vocabulary = build_vocabulary(vocab_texts)
    known = set(vocabulary)
    rates = [r for t in _sample(oov_texts, 2 * settings.reference_rows, rng) if (r := oov_rate(t, known)) is not None]
    scripts = Counter(main_script(t) for t in texts)
    profile: dict[str, Any] = {
        "schema": REFERENCE_SCHEMA,
        "labels": list(labels.names),
        "rows": len(texts),
        "true_label_counts": {labels.names[i]: int(n) for i, n in sorted(Counter(map(int, train_labels)).items())},
        "predicted_label_counts": None,
        "scores": None,
        "held_out": None,
        "lengths": sorted(len(t) for t in _sample(texts, 4 * settings.reference_rows, rng)),
        "vocabulary": vocabulary,
        "oov_rates": sorted(round(r, 5) for r in rates),
        "scripts": {k: round(v / len(texts), 6) for k, v in scripts.most_common()},
        "embedding": None,
    }
    if held_proba is not None and len(held_proba):
        proba = np.asarray(held_proba, dtype=np.float64)
        predicted = proba.argmax(axis=1) if held_predicted is None else np.asarray(held_predicted)
        profile["held_out"] = {"source": held_source, "rows": len(proba)}
        profile["predicted_label_counts"] = {name: int(np.sum(predicted == i)) for i, name in enumerate(labels.names)}
        keep = _sample(list(range(len(proba))), MAX_SCORES, rng)
        profile["scores"] = {
            name: sorted(round(float(v), 6) for v in proba[keep, i]) for i, name in enumerate(labels.names)
        }
    embeddings = None
    if settings.embedding_model.lower() != "none":
        sample = _sample(texts, settings.reference_rows, rng)
        embeddings, name, fingerprint = embed_texts(sample, settings)
        profile["embedding"] = {
            "model": settings.embedding_model,
            "encoder": name,
            "fingerprint": fingerprint,
            "rows": len(embeddings),
            "max_chars": settings.embedding_max_chars,
            "file": REFERENCE_EMBEDDINGS,
        }
    return Reference(profile, embeddings)


def write_reference(reference: Reference, directory: str | Path) -> list[str]:
    """Write the profile (and the embeddings) into a local ``directory``; returns the file names written."""
    directory = Path(directory)
    (directory / MONITORING_REFERENCE).write_text(json.dumps(reference.profile, ensure_ascii=False))
    written = [MONITORING_REFERENCE]
    if reference.embeddings is not None:
        from safetensors.numpy import save_file

        save_file({EMBEDDINGS_KEY: reference.embeddings.astype(np.float16)}, str(directory / REFERENCE_EMBEDDINGS))
        written.append(REFERENCE_EMBEDDINGS)
    return written


def has_reference(location: str | Path) -> bool:
    return storage.exists(storage.join(str(location), MONITORING_REFERENCE))


def read_reference(location: str | Path) -> Reference:
    """The reference stored in a model directory (local or gs://, its checksums verified by the caller).

    Raises :class:`MissingReferenceError` for a model trained before references existed, naming the fallback.
    """
    base = str(location)
    uri = storage.join(base, MONITORING_REFERENCE)
    if not storage.exists(uri):
        raise MissingReferenceError(
            f"{base} has no {MONITORING_REFERENCE}: the model was trained before monitoring references existed. "
            "Retrain it, or build a reference from labelled data: "
            "sentinel monitor --reference DATA.csv --model MODEL ..."
        )
    try:
        profile = json.loads(storage.read_text(uri))
    except json.JSONDecodeError as exc:
        raise DataError(f"{uri} is not valid JSON ({exc})") from None
    if not isinstance(profile, dict) or profile.get("schema") != REFERENCE_SCHEMA:
        found = profile.get("schema") if isinstance(profile, dict) else type(profile).__name__
        raise DataError(f"{uri}: schema {found!r}; this version reads {REFERENCE_SCHEMA!r}")
    embeddings = None
    meta = profile.get("embedding")
    if meta:
        from safetensors.numpy import load

        emb_uri = storage.join(base, str(meta.get("file") or REFERENCE_EMBEDDINGS))
        try:
            embeddings = load(storage.read_bytes(emb_uri))[EMBEDDINGS_KEY].astype(np.float32)
        except Exception as exc:
            raise DataError(f"{emb_uri}: cannot read the reference embeddings ({exc})") from None
    return Reference(profile, embeddings, base)
