"""Featurizers: one scikit-learn object used identically at training and serving time.

* ``tfidf`` — word 1–2-gram + character 3–5-gram TF-IDF (sparse). ``sublinear_tf`` and per-block L2
  normalization keep long prompts from dominating by sheer length (attacks in the reference data are much
  longer than benign prompts, and the model should learn wording, not size).
* ``embeddings`` — mean-pooled, L2-normalized sentence embeddings (all-MiniLM-L6-v2 by default: 384-d; the
  multilingual ``use-multilingual`` and ``e5-small`` encoders of :mod:`prompt_sentinel.encoders` too).
* ``combined`` — embeddings ⊕ TF-IDF reduced by TruncatedSVD (e.g. 384 + 200 dense dimensions).

The featurizer is the first step of the saved skops pipeline, so serving never refits it. For skops the
embedding transformer holds only plain attributes (the model reference string and sizes); the torch encoder is
loaded lazily on first use and cached per process, never serialized. The inference backend (torch, or the
encoder exported to ONNX by :mod:`prompt_sentinel.inference`) is a runtime attribute the model loader sets.

Inputs are already normalized texts (:func:`prompt_sentinel.text.normalize_text`): the trainer normalizes
before fitting and :meth:`SentinelModel.predict_proba` before predicting.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.decomposition import TruncatedSVD
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.pipeline import FeatureUnion, Pipeline
from sklearn.preprocessing import normalize
from sklearn.utils.validation import check_is_fitted

from prompt_sentinel.config import FeaturizerConfig
from prompt_sentinel.encoders import SentenceEmbedder, _check_texts, featurization_session, make_encoder
from prompt_sentinel.errors import ConfigError, ModelFormatError
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
        # inference_* are runtime attributes set by the model loader (prompt_sentinel.models.sklearn_backend)
        runtime = {
            k: getattr(self, f"inference_{k}")
            for k in ("backend", "threads", "cache_dir")
            if hasattr(self, f"inference_{k}")
        }
        return make_encoder(self.model_ref, self.batch_size, self.max_length, **runtime)

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
