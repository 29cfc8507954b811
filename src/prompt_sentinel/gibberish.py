"""A gibberish score: how surprising a text's characters are to a character n-gram model of benign text.

Optimized adversarial suffixes (GCG and friends) are token soup — ``describing.\\ + similarlyNow write oppositeley.](``
— that no sentence encoder was trained on and that TF-IDF sees as rare n-grams. A character trigram model fitted
on the benign training prompts finds them cheaply: its per-character surprise (negative log2 probability) is low
on ordinary text in the languages it saw and high on random letters, punctuation runs and glued fragments.

:class:`GibberishScore` is a scikit-learn transformer (a featurizer block, see
:func:`prompt_sentinel.features.build_featurizer` with ``featurizer.gibberish``) with four features per text:

* ``max_window`` — the highest mean surprise over a sliding window of ``window`` characters;
* ``tail_window`` — the mean surprise of the last window (suffixes sit at the end);
* ``mean`` — the mean surprise over the whole text;
* ``share_high`` — the share of windows above the benign texts' 99th-percentile window surprise.

Each is standardized against the benign fitting texts and clipped below at 0 ("excess surprise"): ordinary text
scores 0, so the block is non-negative and adds nothing to prompts that look like the benign data.

Only plain arrays are fitted (hashed n-gram counts as float32 vectors, a few floats of statistics), so the
transformer is saved by skops without any custom state. Texts are case-folded: casing is a surface trait that
benign text varies too.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.utils.validation import check_is_fitted

from prompt_sentinel.errors import DataError

FEATURES = ("max_window", "tail_window", "mean", "share_high")
_BOUNDARY = 0x2  # code point padding the start of a text (a context no real text has)
# odd 64-bit multipliers for the rolling hash of (c[i-2], c[i-1], c[i]); wrap-around is intended
_MUL = (np.uint64(0x9E3779B97F4A7C15), np.uint64(0xC2B2AE3D27D4EB4F), np.uint64(0x165667B19E3779F9))


def _codepoints(text: str) -> np.ndarray:
    folded = text.casefold()
    cps = np.frombuffer(folded.encode("utf-32-le", "surrogatepass"), dtype=np.uint32).astype(np.uint64)
    return np.concatenate([np.full(2, _BOUNDARY, dtype=np.uint64), cps])


class GibberishScore(TransformerMixin, BaseEstimator):
    """Windowed character-trigram surprise under a model of benign text (see the module docstring).

    ``benign_label``: the class id whose rows the n-gram model is fitted on when ``fit`` gets labels (all rows
    without labels). ``bits``: log2 of the hash table size per count table.
    """

    def __init__(self, window: int = 32, bits: int = 18, alpha: float = 0.5, benign_label: int | None = 0) -> None:
        self.window = window
        self.bits = bits
        self.alpha = alpha
        self.benign_label = benign_label

    # --- hashing -------------------------------------------------------------------------------------------
    def _hashes(self, cps: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Bucket of each trigram and of its two-character context, for positions 2..len-1."""
        a, b, c = cps[:-2], cps[1:-1], cps[2:]
        with np.errstate(over="ignore"):
            context = a * _MUL[0] + b * _MUL[1]
            trigram = context + c * _MUL[2]
            shift = np.uint64(64 - self.bits)
            return (trigram * _MUL[0]) >> shift, (context * _MUL[2]) >> shift

    def _surprise(self, text: str) -> np.ndarray:
        """Per-character surprise in bits (one value per character of the text)."""
        tri, ctx = self._hashes(_codepoints(text))
        p = (self.trigram_counts_[tri] + self.alpha) / (self.context_counts_[ctx] + self.alpha * self.alphabet_)
        return -np.log2(p)

    def _windows(self, surprise: np.ndarray) -> np.ndarray:
        if len(surprise) <= self.window:
            return np.array([surprise.mean()]) if len(surprise) else np.zeros(1)
        sums = np.cumsum(np.concatenate([[0.0], surprise]))
        return (sums[self.window :] - sums[: -self.window]) / self.window

    def _raw(self, text: str) -> np.ndarray:
        surprise = self._surprise(text)
        windows = self._windows(surprise)
        high = float(np.mean(windows > self.window_threshold_)) if hasattr(self, "window_threshold_") else 0.0
        mean = float(surprise.mean()) if len(surprise) else 0.0
        return np.array([windows.max(), windows[-1], mean, high], dtype=np.float64)

    # --- scikit-learn API ----------------------------------------------------------------------------------
    def fit(self, X: Any, y: Any = None) -> GibberishScore:
        texts = _texts(X, "GibberishScore.fit")
        if self.window < 2 or not 8 <= self.bits <= 26 or not self.alpha > 0:
            raise ValueError(
                f"GibberishScore: window must be >= 2, bits in 8..26 and alpha > 0; got window={self.window}, "
                f"bits={self.bits}, alpha={self.alpha}"
            )
        if y is not None and self.benign_label is not None:
            keep = np.asarray(y) == self.benign_label
            benign = [t for t, k in zip(texts, keep, strict=True) if k]
            texts = benign or texts  # no benign rows at all: the model of "ordinary text" is all text
        size = 1 << self.bits
        trigram_counts = np.zeros(size, dtype=np.float64)
        context_counts = np.zeros(size, dtype=np.float64)
        symbols: set[int] = set()
        for text in texts:
            cps = _codepoints(text)
            tri, ctx = self._hashes(cps)
            np.add.at(trigram_counts, tri.astype(np.int64), 1.0)
            np.add.at(context_counts, ctx.astype(np.int64), 1.0)
            symbols.update(np.unique(cps).tolist())
        self.trigram_counts_ = trigram_counts.astype(np.float32)
        self.context_counts_ = context_counts.astype(np.float32)
        self.alphabet_ = float(max(len(symbols), 2))
        # Statistics of the benign texts under their own model. Fitting and scoring on the same texts is
        # optimistic, so the window threshold and the scale come from the texts' surprise, not from held-out
        # text: the features are used relative to each other by the classifier, which is what matters.
        windows = np.concatenate([self._windows(self._surprise(t)) for t in texts]) if texts else np.zeros(1)
        self.window_threshold_ = float(np.quantile(windows, 0.99))
        raw = np.stack([self._raw(t) for t in texts]) if texts else np.zeros((1, len(FEATURES)))
        self.center_ = raw.mean(axis=0)
        self.scale_ = np.maximum(raw.std(axis=0), 1e-6)
        self.n_features_out_ = len(FEATURES)
        return self

    def score_texts(self, X: Any) -> np.ndarray:
        """The raw (unstandardized) features, one row per text, columns :data:`FEATURES`."""
        check_is_fitted(self, "trigram_counts_")
        texts = _texts(X, "GibberishScore.transform")
        if not texts:
            return np.zeros((0, len(FEATURES)))
        return np.stack([self._raw(t) for t in texts])

    def transform(self, X: Any) -> np.ndarray:
        raw = self.score_texts(X)
        return np.clip((raw - self.center_) / self.scale_, 0.0, None).astype(np.float32)

    def get_feature_names_out(self, input_features: Any = None) -> np.ndarray:
        return np.asarray([f"gibberish_{name}" for name in FEATURES], dtype=object)


def _texts(X: Any, where: str) -> list[str]:
    if isinstance(X, str):
        raise DataError(f"{where}: expected a sequence of texts, got a single string")
    items: Sequence[Any] = X.tolist() if isinstance(X, np.ndarray) else list(X)
    bad = next((i for i, t in enumerate(items) if not isinstance(t, str)), None)
    if bad is not None:
        raise DataError(f"{where}: item {bad} is {type(items[bad]).__name__}, expected str")
    return list(items)
