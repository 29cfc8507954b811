"""Class balancing of the training split (the ``balance`` stage).

``balance_features(X, y, balance, labels, seed)`` is the one place resampling happens. The trainer calls it on the
training part of every cross-validation fold and on the full training split before the final refit — never on
validation, test or blind rows, so scores are measured on real, unresampled data. The saved serving pipeline holds no
sampler at all.

Policy by feature type:

* dense features (``embeddings``, ``combined``, or TF-IDF reduced by SVD): the configured imbalanced-learn
  sampler (SMOTE, BorderlineSMOTE, ADASYN, RandomOverSampler) resamples the feature matrix;
* sparse TF-IDF: interpolating samplers (SMOTE family, ADASYN) would mix ~150k-dim sparse vectors into dense,
  meaningless points, so training uses balanced class weights instead (``applied="class_weight"``);
  ``random_oversample`` only duplicates rows and is used as configured.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Literal

import numpy as np
import scipy.sparse as sp
from sklearn.utils.class_weight import compute_sample_weight

from prompt_sentinel.config import BalanceConfig, LabelConfig
from prompt_sentinel.errors import ConfigError, TrainingError

BalanceMode = Literal["resample", "class_weight", "none"]
INTERPOLATING_METHODS = frozenset({"smote", "borderline_smote", "adasyn"})
STRATEGY_KEYWORDS = ("auto", "minority", "not minority", "not majority", "all")


@dataclass
class BalanceReport:
    """What balancing did to one training set (counts are keyed by label name)."""

    method: str
    applied: BalanceMode
    sampler: str | None
    sampling_strategy: Any
    counts_before: dict[str, int]
    counts_after: dict[str, int]
    synthetic_rows: int = 0
    note: str = ""
    params: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def class_counts(y: Any, labels: LabelConfig) -> dict[str, int]:
    """Rows per class, keyed by label name (every configured class, zeros included)."""
    counts = np.bincount(np.asarray(y, dtype=np.int64), minlength=labels.num_classes)
    return {name: int(counts[i]) for i, name in enumerate(labels.names)}


def resolve_sampling_strategy(balance: BalanceConfig, labels: LabelConfig) -> str | float | dict[int, int]:
    """The imbalanced-learn ``sampling_strategy`` for the configured one (label names → class ids)."""
    strategy = balance.sampling_strategy
    if isinstance(strategy, dict):
        unknown = [k for k in strategy if k not in labels.names]
        if unknown:
            raise ConfigError(f"balance.sampling_strategy names unknown label(s) {unknown}; allowed: {labels.names}")
        bad = {k: v for k, v in strategy.items() if not isinstance(v, int) or v < 1}
        if bad:
            raise ConfigError(f"balance.sampling_strategy targets must be positive row counts, got {bad}")
        return {labels.label2id[k]: int(v) for k, v in strategy.items()}
    if isinstance(strategy, float):
        if labels.num_classes != 2:
            raise ConfigError(
                f"balance.sampling_strategy={strategy}: a ratio only works with 2 classes, the labels have "
                f"{labels.num_classes}; use one of {list(STRATEGY_KEYWORDS)} or a {{label: count}} mapping"
            )
        if not 0 < strategy <= 1:
            raise ConfigError(f"balance.sampling_strategy={strategy}: a ratio must be in (0, 1]")
        return strategy
    if strategy not in STRATEGY_KEYWORDS:
        raise ConfigError(
            f"balance.sampling_strategy={strategy!r}; allowed: {list(STRATEGY_KEYWORDS)}, a ratio (2 classes) "
            "or a {label: count} mapping"
        )
    return strategy


def balance_mode(method: str, sparse: bool) -> BalanceMode:
    """How ``method`` is applied to sparse or dense features (see the module docstring)."""
    if method == "none":
        return "none"
    if sparse and method in INTERPOLATING_METHODS:
        return "class_weight"
    return "resample"


def check_sampling_targets(y: Any, balance: BalanceConfig, labels: LabelConfig) -> None:
    """Explicit {label: count} targets must not undersample the training split (oversamplers only add)."""
    strategy = resolve_sampling_strategy(balance, labels)
    if not isinstance(strategy, dict) or balance.method == "none":
        return
    counts = class_counts(y, labels)
    too_low = {
        labels.names[c]: (n, counts[labels.names[c]]) for c, n in strategy.items() if n < counts[labels.names[c]]
    }
    if too_low:
        shown = ", ".join(f"{k}: target {t} < {have} rows" for k, (t, have) in too_low.items())
        raise ConfigError(
            f"balance.sampling_strategy asks for fewer rows than the training split has ({shown}); "
            "oversamplers can only add rows"
        )


def build_sampler(balance: BalanceConfig, labels: LabelConfig, seed: int, y: Any) -> Any:
    """An imbalanced-learn sampler for ``balance`` fitted to the class counts in ``y`` (None for none).

    Neighbour counts are capped by the smallest class so small folds still resample.
    """
    method = balance.method
    if method == "none":
        return None
    strategy = resolve_sampling_strategy(balance, labels)
    present = np.bincount(np.asarray(y, dtype=np.int64))
    present = present[present > 0]
    smallest = int(present.min()) if present.size else 0
    if method == "random_oversample":
        from imblearn.over_sampling import RandomOverSampler

        return RandomOverSampler(sampling_strategy=strategy, random_state=seed)
    if smallest < 2:
        raise TrainingError(
            f"balance.method={method} interpolates between neighbours of the same class, but a class has only "
            f"{smallest} training row(s); add data, lower training.search.cv_folds or use random_oversample"
        )
    k = min(balance.k_neighbors, smallest - 1)
    if method == "smote":
        from imblearn.over_sampling import SMOTE

        return SMOTE(sampling_strategy=strategy, k_neighbors=k, random_state=seed)
    if method == "borderline_smote":
        from imblearn.over_sampling import BorderlineSMOTE

        m = min(10, len(np.asarray(y)) - 1)
        return BorderlineSMOTE(sampling_strategy=strategy, k_neighbors=k, m_neighbors=m, random_state=seed)
    if method == "adasyn":
        from imblearn.over_sampling import ADASYN

        return ADASYN(sampling_strategy=strategy, n_neighbors=k, random_state=seed)
    raise ConfigError(f"balance.method={method!r}; allowed: smote, borderline_smote, adasyn, random_oversample, none")


def balance_features(
    X: Any, y: Any, balance: BalanceConfig, labels: LabelConfig, seed: int
) -> tuple[Any, np.ndarray, BalanceReport]:
    """Resample a TRAINING feature matrix per ``balance``; returns ``(X_res, y_res, report)``.

    Original rows come first and unchanged (imbalanced-learn appends synthetic rows). For sparse features
    with an interpolating method nothing is resampled and ``report.applied == "class_weight"``: the caller
    trains with :func:`balanced_sample_weight` instead.
    """
    y = np.asarray(y, dtype=np.int64)
    method = balance.method
    mode = balance_mode(method, sp.issparse(X))
    before = class_counts(y, labels)
    strategy = balance.sampling_strategy
    if mode == "none":
        return X, y, BalanceReport(method, "none", None, strategy, before, dict(before), note="no balancing")
    if mode == "class_weight":
        note = (
            f"{method} needs dense features; the sparse TF-IDF matrix is not resampled and the estimator is "
            "trained with balanced class weights (n_rows / (n_classes * rows_in_class)) instead"
        )
        return X, y, BalanceReport(method, "class_weight", None, strategy, before, dict(before), note=note)
    sampler = build_sampler(balance, labels, seed, y)
    params = {k: v for k, v in sampler.get_params().items() if isinstance(v, (int, float, str)) and k != "n_jobs"}
    try:
        X_res, y_res = sampler.fit_resample(X, y)
    except (ValueError, RuntimeError) as exc:
        if "No samples will be generated" in str(exc):  # ADASYN on already balanced data
            report = BalanceReport(
                method, "resample", type(sampler).__name__, strategy, before, dict(before), 0,
                note=f"nothing to generate: {exc}", params=params,
            )  # fmt: skip
            return X, y, report
        raise TrainingError(f"balance.method={method} failed on the training data: {exc}") from exc
    y_res = np.asarray(y_res, dtype=np.int64)
    after = class_counts(y_res, labels)
    report = BalanceReport(
        method=method,
        applied="resample",
        sampler=type(sampler).__name__,
        sampling_strategy=strategy,
        counts_before=before,
        counts_after=after,
        synthetic_rows=int(len(y_res) - len(y)),
        note=f"{type(sampler).__name__} on {'sparse' if sp.issparse(X) else 'dense'} features",
        params=params,
    )
    return X_res, y_res, report


def balanced_sample_weight(y: Any) -> np.ndarray:
    """Per-row weights equivalent to ``class_weight='balanced'``."""
    return compute_sample_weight("balanced", np.asarray(y))
