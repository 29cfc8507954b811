"""Featurizers: one scikit-learn object used identically at training and serving time.

* ``tfidf`` — word 1–2-gram + character 3–5-gram TF-IDF (sparse). ``sublinear_tf`` and per-block L2
  normalization keep long prompts from dominating by sheer length (attacks in the reference data are much
  longer than benign prompts, and the model should learn wording, not size).
* ``embeddings`` — mean-pooled, L2-normalized sentence embeddings (all-MiniLM-L6-v2 by default: 384-d; the
  multilingual ``use-multilingual`` and ``e5-small`` encoders of :mod:`prompt_sentinel.encoders` too).
* ``combined`` — embeddings ⊕ TF-IDF reduced by TruncatedSVD (e.g. 384 + 200 dense dimensions).

The featurizer is the first step of the saved skops pipeline, so serving never refits it. For skops the
embedding transformer holds only plain attributes (the model reference string and sizes); the torch encoder is
loaded lazily on first use and cached per process, never serialized.

Inputs are already normalized texts (:func:`prompt_sentinel.text.normalize_text`): the trainer normalizes
before fitting and :meth:`SentinelModel.predict_proba` before predicting.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.decomposition import TruncatedSVD
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.pipeline import FeatureUnion, Pipeline
from sklearn.preprocessing import normalize
from sklearn.utils.validation import check_is_fitted

from prompt_sentinel.config import FeaturizerConfig
from prompt_sentinel.errors import ConfigError, DataError, ModelFormatError
from prompt_sentinel.hf_checkpoints import resolve_model_dir

__all__ = [
    "CompactTfidfVectorizer",
    "EmbeddingTransformer",
    "SentenceEmbedder",
    "TfidfSVD",
    "build_featurizer",
    "featurization_session",
    "is_sparse_kind",
    "resolve_model_dir",
]

# --- process-wide state: loaded encoders, an optional embedding cache, progress display -----------------

_ENCODERS: dict[str, tuple[Any, Any]] = {}
_ENCODER_LOCK = threading.Lock()
# Enabled only inside featurization_session(): cross-validation embeds the same texts once per fold and
# per refit, so caching by text saves most of the encoder time. Serving never enables it (unbounded input).
_EMBED_CACHE: dict[tuple[str, int, str], np.ndarray] | None = None
_SHOW_PROGRESS = False


@contextmanager
def featurization_session(cache: bool = True, progress: bool = False) -> Iterator[None]:
    """Within the block, sentence embeddings are cached per text and encoding shows a progress bar."""
    global _EMBED_CACHE, _SHOW_PROGRESS
    previous = (_EMBED_CACHE, _SHOW_PROGRESS)
    if cache and _EMBED_CACHE is None:
        _EMBED_CACHE = {}
    _SHOW_PROGRESS = progress
    try:
        yield
    finally:
        _EMBED_CACHE, _SHOW_PROGRESS = previous


def _check_texts(texts: Any, where: str) -> list[str]:
    if isinstance(texts, str):
        raise DataError(f"{where}: expected a sequence of texts, got a single string")
    items = list(texts.tolist() if isinstance(texts, np.ndarray) else texts)
    bad = next((i for i, t in enumerate(items) if not isinstance(t, str)), None)
    if bad is not None:
        raise DataError(f"{where}: item {bad} is {type(items[bad]).__name__}, expected str")
    return items


def _load_encoder(model_dir: Path) -> tuple[Any, Any]:
    key = str(model_dir.resolve())
    with _ENCODER_LOCK:
        if key in _ENCODERS:
            return _ENCODERS[key]
        from transformers import AutoModel, AutoTokenizer
        from transformers.utils import logging as hf_logging

        bar_was_on = hf_logging.is_progress_bar_enabled()
        hf_logging.disable_progress_bar()  # a "Loading weights" bar per serving replica is noise
        try:
            tokenizer = AutoTokenizer.from_pretrained(str(model_dir), local_files_only=True)
            model = AutoModel.from_pretrained(str(model_dir), local_files_only=True)
        except (OSError, ValueError, KeyError) as exc:
            raise ModelFormatError(f"{model_dir}: cannot load a sentence-transformer encoder ({exc})") from exc
        finally:
            if bar_was_on:
                hf_logging.enable_progress_bar()
        model.eval()
        _ENCODERS[key] = (tokenizer, model)
        return tokenizer, model


class SentenceEmbedder:
    """Mean-pooled, L2-normalized sentence embeddings from a local / gs:// / bundled checkpoint."""

    def __init__(
        self, model_ref: str = "bundled:all-MiniLM-L6-v2", batch_size: int = 64, max_length: int = 256
    ) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if max_length < 1:
            raise ValueError(f"max_length must be >= 1, got {max_length}")
        self.model_ref = model_ref
        self.batch_size = batch_size
        self.max_length = max_length
        self.model_dir = resolve_model_dir(model_ref)
        self.tokenizer, self.model = _load_encoder(self.model_dir)

    @property
    def dim(self) -> int:
        return int(self.model.config.hidden_size)

    def encode(self, texts: Sequence[str], progress: bool | None = None) -> np.ndarray:
        """Embeddings of shape (len(texts), dim), float32, each row of unit L2 norm."""
        items = _check_texts(texts, "SentenceEmbedder.encode")
        out = np.zeros((len(items), self.dim), dtype=np.float32)
        cache = _EMBED_CACHE
        key_prefix = str(self.model_dir.resolve())
        todo = list(range(len(items)))
        if cache is not None:
            todo = []
            for i, text in enumerate(items):
                hit = cache.get((key_prefix, self.max_length, text))
                if hit is None:
                    todo.append(i)
                else:
                    out[i] = hit
        if todo:
            # Longest first so each batch pads to similar lengths (dynamic padding, little waste).
            todo.sort(key=lambda i: len(items[i]), reverse=True)
            show = _SHOW_PROGRESS if progress is None else progress
            vectors = self._encode_batches([items[i] for i in todo], show)
            out[todo] = vectors
            if cache is not None:
                for i, vec in zip(todo, vectors, strict=True):
                    cache[(key_prefix, self.max_length, items[i])] = vec
        return out

    def _encode_batches(self, texts: list[str], progress: bool) -> np.ndarray:
        import torch

        starts = range(0, len(texts), self.batch_size)
        if progress:
            from tqdm.auto import tqdm

            starts = tqdm(starts, desc="embedding", unit="batch", leave=False)
        chunks = []
        with torch.inference_mode():
            for start in starts:
                batch = texts[start : start + self.batch_size]
                enc = self.tokenizer(
                    batch, padding=True, truncation=True, max_length=self.max_length, return_tensors="pt"
                )
                hidden = self.model(**enc).last_hidden_state
                mask = enc["attention_mask"].unsqueeze(-1).to(hidden.dtype)
                pooled = (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1e-9)
                pooled = torch.nn.functional.normalize(pooled, p=2, dim=1)
                chunks.append(pooled.float().cpu().numpy())
        return np.concatenate(chunks, axis=0)


class EmbeddingTransformer(TransformerMixin, BaseEstimator):
    """scikit-learn wrapper around the encoder :func:`prompt_sentinel.encoders.make_encoder` returns for
    ``model_ref`` (an HF checkpoint's :class:`SentenceEmbedder`, or a built-in multilingual encoder).

    Holds only the model reference and sizes, so skops serializes plain attributes; the encoder is loaded on
    the first ``transform`` in each process. ``fit`` learns nothing but records the encoder's name and
    fingerprint, and ``transform`` refuses an encoder whose fingerprint differs (other weights or package
    version: other features than the classifier was trained on).
    """

    def __init__(
        self, model_ref: str = "bundled:all-MiniLM-L6-v2", batch_size: int = 64, max_length: int = 256
    ) -> None:
        self.model_ref = model_ref
        self.batch_size = batch_size
        self.max_length = max_length

    def _embedder(self) -> Any:
        from prompt_sentinel.encoders import make_encoder  # encoders imports this module

        return make_encoder(self.model_ref, self.batch_size, self.max_length)

    def fit(self, X: Any, y: Any = None) -> EmbeddingTransformer:
        _check_texts(X, "EmbeddingTransformer.fit")
        encoder = self._embedder()
        self.embedding_dim_ = encoder.dim
        self.encoder_name_ = encoder.name
        self.encoder_fingerprint_ = encoder.fingerprint
        return self

    def transform(self, X: Any) -> np.ndarray:
        check_is_fitted(self, "embedding_dim_")
        encoder = self._embedder()
        fitted_with = getattr(self, "encoder_fingerprint_", None)  # absent in artifacts saved before it existed
        if fitted_with is not None and encoder.fingerprint != fitted_with:
            raise ModelFormatError(
                f"encoder {self.model_ref!r} installed here ({encoder.fingerprint}) is not the one this featurizer "
                f"was fitted with ({fitted_with}): its features would differ from the training features; install "
                "the same package version / checkpoint, or retrain the model"
            )
        vectors = encoder.encode(_check_texts(X, "EmbeddingTransformer.transform"))
        if vectors.shape[1] != self.embedding_dim_:
            raise ModelFormatError(
                f"encoder {self.model_ref!r} now produces {vectors.shape[1]}-d vectors but this featurizer "
                f"was fitted with {self.embedding_dim_}-d ones; the checkpoint changed since training"
            )
        return vectors

    def get_feature_names_out(self, input_features: Any = None) -> np.ndarray:
        check_is_fitted(self, "embedding_dim_")
        return np.asarray([f"emb{i}" for i in range(self.embedding_dim_)], dtype=object)


class TfidfSVD(TransformerMixin, BaseEstimator):
    """TruncatedSVD to at most ``n_components`` dims, then L2-normalized rows.

    The component count is capped by the data (fewer rows or features than requested, e.g. small folds), and
    the normalization puts the reduced TF-IDF block on the same scale as unit-norm embeddings. Only the
    projection is kept, as a C-contiguous (n_features, k) matrix: ``sparse @ components_.T`` on sklearn's
    row-major components copies the whole matrix on every call (~80 ms per prompt for 150k × 200).
    """

    def __init__(self, n_components: int = 200, random_state: int | None = None) -> None:
        self.n_components = n_components
        self.random_state = random_state

    def fit(self, X: Any, y: Any = None) -> TfidfSVD:
        n_rows, n_cols = X.shape
        k = max(1, min(self.n_components, n_rows - 1, n_cols - 1))
        svd = TruncatedSVD(n_components=k, random_state=self.random_state).fit(X)
        self.projection_ = np.ascontiguousarray(svd.components_.T, dtype=np.float32)
        self.explained_variance_ratio_ = svd.explained_variance_ratio_.astype(np.float32)
        self.n_components_ = k
        self.n_features_in_ = n_cols
        return self

    def transform(self, X: Any) -> np.ndarray:
        check_is_fitted(self, "projection_")
        if X.shape[1] != self.n_features_in_:
            raise ModelFormatError(
                f"TF-IDF block has {X.shape[1]} features but the SVD was fitted on {self.n_features_in_}"
            )
        reduced = np.asarray(X @ self.projection_, dtype=np.float32)
        return normalize(reduced).astype(np.float32)


class CompactTfidfVectorizer(TfidfVectorizer):
    """A TfidfVectorizer whose vocabulary is stored as arrays when serialized.

    skops writes a dict as one JSON node per entry, which takes minutes (and as long again to load) for the
    ~150k n-grams of a real vocabulary; the same vocabulary as one UTF-8 byte array plus offsets is written as
    ``.npy`` data in milliseconds. Behaviour is exactly TfidfVectorizer's.
    """

    def __getstate__(self) -> dict[str, Any]:
        state = dict(super().__getstate__())
        vocab = state.pop("vocabulary_", None)
        if vocab is not None:
            terms = sorted(vocab, key=vocab.__getitem__)
            encoded = [t.encode("utf-8", "surrogatepass") for t in terms]
            state["vocab_bytes_"] = np.frombuffer(b"".join(encoded), dtype=np.uint8).copy()
            state["vocab_offsets_"] = np.cumsum([0, *map(len, encoded)], dtype=np.int64)
            state["vocab_ids_"] = np.asarray([vocab[t] for t in terms], dtype=np.int64)
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        state = dict(state)
        data = state.pop("vocab_bytes_", None)
        offsets = state.pop("vocab_offsets_", None)
        ids = state.pop("vocab_ids_", None)
        if data is not None and offsets is not None and ids is not None:
            raw = np.asarray(data, dtype=np.uint8).tobytes()
            bounds = np.asarray(offsets, dtype=np.int64).tolist()
            if len(bounds) != len(ids) + 1 or bounds[-1] != len(raw):
                raise ModelFormatError("TF-IDF vocabulary arrays are inconsistent; the model file is corrupt")
            state["vocabulary_"] = {
                raw[bounds[i] : bounds[i + 1]].decode("utf-8", "surrogatepass"): int(ids[i]) for i in range(len(ids))
            }
        super().__setstate__(state)


def is_sparse_kind(kind: str) -> bool:
    """True when the featurizer kind yields sparse matrices (TF-IDF)."""
    return kind == "tfidf"


def _tfidf(cfg: FeaturizerConfig) -> FeatureUnion:
    common = {"sublinear_tf": True, "lowercase": True, "dtype": np.float32}
    return FeatureUnion(
        [
            (
                "word",
                CompactTfidfVectorizer(
                    analyzer="word",
                    # single-character tokens kept: "i g n o r e" style obfuscation is a signal
                    token_pattern=r"(?u)\b\w+\b",
                    ngram_range=tuple(cfg.word_ngram_range),
                    max_features=cfg.max_word_features,
                    **common,
                ),
            ),
            (
                "char",
                CompactTfidfVectorizer(
                    analyzer="char_wb",
                    ngram_range=tuple(cfg.char_ngram_range),
                    max_features=cfg.max_char_features,
                    **common,
                ),
            ),
        ]
    )


def build_featurizer(cfg: FeaturizerConfig, seed: int = 42, dense: bool = False) -> BaseEstimator:
    """A fresh (unfitted) featurizer for ``cfg.kind``.

    ``dense=True`` reduces ``tfidf`` with :class:`TfidfSVD` to ``cfg.svd_components`` dims, for estimators
    that need dense input (histogram gradient boosting, MLP) — the other kinds are dense already.
    """
    for name in ("word_ngram_range", "char_ngram_range"):
        low, high = getattr(cfg, name)
        if not 1 <= low <= high:
            raise ConfigError(f"featurizer.{name}={[low, high]}: need 1 <= min <= max")
    if cfg.kind == "tfidf":
        if dense:
            return Pipeline([("tfidf", _tfidf(cfg)), ("svd", TfidfSVD(cfg.svd_components, seed))])
        return _tfidf(cfg)
    embed = EmbeddingTransformer(cfg.embedding_model, cfg.embedding_batch_size, cfg.embedding_max_length)
    if cfg.kind == "embeddings":
        return embed
    if cfg.kind == "combined":
        reduced = Pipeline([("tfidf", _tfidf(cfg)), ("svd", TfidfSVD(cfg.svd_components, seed))])
        return FeatureUnion([("embeddings", embed), ("tfidf_svd", reduced)])
    raise ConfigError(f"featurizer.kind={cfg.kind!r}; allowed: tfidf, embeddings, combined")
