"""The classical trainer's cross-validation search: settings, folds and the random / grid search over them.

:func:`cross_validation_folds` keeps near-duplicate groups, explicit groups and (when asked) source families in
one fold; :func:`prepare_fold` augments, featurizes and balances a fold's training part once for every candidate;
:func:`run_search` scores the random / grid candidates on those folds (the Optuna search,
:mod:`prompt_sentinel.training.classical.optuna_search`, uses the same folds). The trainer
(:mod:`prompt_sentinel.training.classical.trainer`) refits the winner.
"""

from __future__ import annotations

import json
import logging
import math
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from sklearn.exceptions import ConvergenceWarning
from sklearn.model_selection import StratifiedGroupKFold

from prompt_sentinel.config import (
    BalanceConfig,
    FeaturizerConfig,
    InferenceConfig,
    LabelConfig,
    SentinelConfig,
    SplitConfig,
    TrainingConfig,
)
from prompt_sentinel.data.split import row_groups, union_labels
from prompt_sentinel.decision import CostTuning, tune_costs
from prompt_sentinel.errors import TrainingError
from prompt_sentinel.metrics import custom_score, macro_f1
from prompt_sentinel.models.sklearn import probabilities_by_class_id
from prompt_sentinel.training.augmentation import prepare_training_rows
from prompt_sentinel.training.balance import (
    balance_features,
    balanced_sample_weight,
    class_counts,
)
from prompt_sentinel.training.classical.estimators import BuildContext, ModelSpec

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ClassicalSettings:
    """The config sections a classical trainer needs."""

    labels: LabelConfig
    featurizer: FeaturizerConfig
    balance: BalanceConfig
    training: TrainingConfig  # search, param_grids, decision_tuning
    split: SplitConfig  # near-duplicate grouping of the CV folds
    seed: int
    inference: InferenceConfig = field(default_factory=InferenceConfig)  # embedding cache, ONNX parity record

    @classmethod
    def from_config(cls, cfg: SentinelConfig) -> ClassicalSettings:
        return cls(cfg.labels, cfg.featurizer, cfg.balance, cfg.training, cfg.split, cfg.seed, cfg.inference)


# --- input checks -------------------------------------------------------------------------------------------


def min_rows_for_folds(folds: int) -> int:
    """Smallest class size for which every fold's training part keeps >= 2 rows (calibration, SMOTE)."""
    n = folds
    while n - math.ceil(n / folds) < 2:
        n += 1
    return n


def check_training_data(y: np.ndarray, labels: LabelConfig, folds: int) -> None:
    """Every class present, and enough rows per class for the fold count."""
    counts = class_counts(y, labels)
    absent = [name for name, n in counts.items() if n == 0]
    if absent:
        raise TrainingError(
            f"training data has no rows of class(es) {absent} (counts: {counts}); every configured label "
            f"{labels.names} must be present — check filtering, or change labels.names"
        )
    need = min_rows_for_folds(folds)
    small = {name: n for name, n in counts.items() if n < need}
    if small:
        raise TrainingError(
            f"too few training rows per class for {folds}-fold cross-validation: {small}; each class needs at "
            f"least {need} (set training.search.cv_folds lower or add data)"
        )


# --- search ---------------------------------------------------------------------------------------------------


@dataclass
class SearchResult:
    best_index: int
    best_params: dict[str, Any]
    best_score: float
    best_std: float
    table: pd.DataFrame
    folds: list[dict[str, Any]]
    seconds: float
    # the winner's critical-error costs, tuned on its out-of-fold probabilities (None: tuning disabled)
    decision_tuning: CostTuning | None = None
    study: dict[str, Any] | None = None  # the Optuna study's summary (strategy optuna)


def fit_estimator(estimator: Any, X: Any, y: np.ndarray, sample_weight: np.ndarray | None) -> Any:
    with warnings.catch_warnings():
        # A capped iteration budget is part of the search space; the CV score judges the result.
        warnings.simplefilter("ignore", ConvergenceWarning)
        if sample_weight is None:
            return estimator.fit(X, y)
        return estimator.fit(X, y, sample_weight=sample_weight)


def cross_validation_folds(
    texts: list[str],
    y: np.ndarray,
    settings: ClassicalSettings,
    groups: list[str] | None = None,
    families: list[str] | None = None,
) -> list[tuple[np.ndarray, np.ndarray]]:
    """Stratified k-fold splits that keep each near-duplicate group, each explicit ``groups`` value and (when
    given) each source family in one fold.

    Without the groups, a held-out fold holds near-copies of its training rows (template variants), so the
    out-of-fold scores that rank candidates and tune the decision costs would be optimistic. With ``families``
    (:func:`source_families`) every out-of-fold prediction comes from a model that saw nothing of that row's
    source family.
    """
    folds = settings.training.search.cv_folds
    groups = row_groups(texts, settings.split, groups)
    if families is not None:
        groups = [str(g) for g in union_labels(len(texts), groups, families)]
    splitter = StratifiedGroupKFold(n_splits=folds, shuffle=True, random_state=settings.seed)
    try:
        splits = list(splitter.split(np.zeros(len(y)), y, groups))
    except ValueError as exc:  # fewer groups than folds
        raise TrainingError(
            f"cannot make {folds} grouped cross-validation folds from {len(set(groups))} near-duplicate groups "
            f"({exc}); lower training.search.cv_folds or add data"
        ) from exc
    need = 2  # as in min_rows_for_folds: calibration and SMOTE need two rows of every class
    for k, (train_idx, _) in enumerate(splits):
        counts = class_counts(y[train_idx], settings.labels)
        short = {name: n for name, n in counts.items() if n < need}
        if short:
            raise TrainingError(
                f"cross-validation fold {k}: its training part has too few rows of {short} (needs >= {need}) "
                f"because near-duplicate groups of that class are large; lower training.search.cv_folds, add data, "
                f"or raise split.near_duplicate_jaccard (now {settings.split.near_duplicate_jaccard})"
            )
    return splits


def families_wanted(settings: ClassicalSettings) -> bool:
    """Whether CV folds hold out whole source families: out-of-source cost tuning or the search asks for it."""
    return (
        settings.training.decision_tuning.source == "out_of_source" or settings.training.search.group_by_source_family
    )


def source_families(train: pd.DataFrame, folds: int) -> list[str]:
    """Each training row's source family (``source`` up to the first ``/``), for folds that hold out whole
    families; :class:`TrainingError` when there are fewer families than folds."""
    why = "training.decision_tuning.source='out_of_source' or training.search.group_by_source_family"
    if "source" not in train.columns:
        raise TrainingError(
            f"{why} needs a 'source' column in the training data (the family of each row: the part before '/')"
        )
    families = [str(s).split("/", 1)[0].strip() for s in train["source"].fillna("")]
    distinct = sorted(set(families) - {""})
    if len(set(families)) < folds or not distinct:
        raise TrainingError(
            f"{why} needs at least training.search.cv_folds={folds} source families in the training data; "
            f"it has {len(distinct)}: {distinct[:10]}"
        )
    return families


def calibration_folds(y: np.ndarray) -> int:
    return max(2, min(3, int(np.bincount(y)[np.bincount(y) > 0].min())))


def class_probabilities(estimator: Any, X: Any, n_classes: int) -> np.ndarray:
    return probabilities_by_class_id(estimator.predict_proba(X), estimator.classes_, n_classes)


def jsonable(value: Any) -> Any:
    if isinstance(value, tuple):
        return [jsonable(v) for v in value]
    if isinstance(value, dict):
        return {k: jsonable(v) for k, v in value.items()}
    if isinstance(value, np.generic):
        return value.item()
    return value


@dataclass
class FoldData:
    """One CV fold's features, fitted once and shared by every candidate scored on it."""

    X_train: Any  # the fold's training part, featurized and balanced
    y_train: np.ndarray
    weights: np.ndarray | None
    X_held: Any
    held_idx: np.ndarray
    build: BuildContext
    record: dict[str, Any]


def prepare_fold(
    k: int,
    train_idx: np.ndarray,
    held_idx: np.ndarray,
    text_arr: np.ndarray,
    y: np.ndarray,
    settings: ClassicalSettings,
    make_featurizer: Callable[[], Any],
) -> FoldData:
    """Augment the fold's training part, fit the featurizer on it, transform both parts, balance the training part.

    Only the training part is augmented and balanced; the held-out part is scored as it is.
    """
    labels = settings.labels
    fold_texts, fold_y, rows = prepare_training_rows(
        list(text_arr[train_idx]),
        y[train_idx],
        settings.training.augmentation,
        settings.training.length_balance,
        labels,
        settings.seed,
    )
    featurizer = make_featurizer()
    X_fold = featurizer.fit_transform(fold_texts, fold_y)
    X_hold = featurizer.transform(list(text_arr[held_idx]))
    X_bal, y_bal, report = balance_features(X_fold, fold_y, settings.balance, labels, settings.seed)
    weights = balanced_sample_weight(y_bal) if report.applied == "class_weight" else None
    record = {
        "fold": k,
        "train_rows": len(train_idx),
        "train_rows_after_augmentation": rows.rows_out,
        "train_rows_after_balance": len(y_bal),
        "validation_rows": len(held_idx),
        "validation_counts": class_counts(y[held_idx], labels),
        "balance": report.to_dict(),
    }
    return FoldData(
        X_bal, y_bal, weights, X_hold, held_idx, BuildContext(settings.seed, calibration_folds(y_bal)), record
    )


def run_search(
    spec: ModelSpec,
    texts: list[str],
    y: np.ndarray,
    settings: ClassicalSettings,
    make_featurizer: Callable[[], Any],
    params_list: list[dict[str, Any]],
    progress: bool = False,
    groups: list[str] | None = None,
    families: list[str] | None = None,
) -> SearchResult:
    """Stratified, near-duplicate-grouped k-fold search; per fold: fit featurizer, balance the training part only,
    fit candidates.

    Every candidate is scored by the custom score of its argmax labels per fold. With
    ``training.decision_tuning.enabled`` its out-of-fold probabilities (each row predicted by the fold model
    that did not see it) also tune the critical-error costs, and candidates are ranked by the custom score
    under their tuned rule — the score the saved model will have in use.
    """
    started = time.perf_counter()
    folds = settings.training.search.cv_folds
    fold_splits = cross_validation_folds(texts, y, settings, groups, families)
    labels = settings.labels
    roles = labels.roles
    n_classes = labels.num_classes
    tuning_cfg = settings.training.decision_tuning
    text_arr = np.asarray(texts, dtype=object)
    oof = np.zeros((len(params_list), len(y), n_classes))
    scores = np.zeros((len(params_list), folds))
    f1s = np.zeros((len(params_list), folds))
    fit_times = np.zeros((len(params_list), folds))
    fold_records: list[dict[str, Any]] = []
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(params_list) * folds, desc=f"search {spec.name}", unit="fit")
    try:
        for k, (train_idx, val_idx) in enumerate(fold_splits):
            fold = prepare_fold(k, train_idx, val_idx, text_arr, y, settings, make_featurizer)
            fold_records.append(fold.record)
            for i, params in enumerate(params_list):
                estimator = spec.build(params, fold.build)
                t0 = time.perf_counter()
                fit_estimator(estimator, fold.X_train, fold.y_train, fold.weights)
                fit_times[i, k] = time.perf_counter() - t0
                proba = class_probabilities(estimator, fold.X_held, n_classes)
                oof[i, val_idx] = proba
                pred = proba.argmax(axis=1)
                scores[i, k] = custom_score(y[val_idx], pred, roles, n_classes)
                f1s[i, k] = macro_f1(y[val_idx], pred, n_classes)
                if bar is not None:
                    bar.update(1)
                    bar.set_postfix(best=f"{scores[: i + 1, : k + 1].mean(axis=1).max():.3f}")
    finally:
        if bar is not None:
            bar.close()

    mean, std = scores.mean(axis=1), scores.std(axis=1)
    tunings = [
        tune_costs(y, oof[i], roles, tuning_cfg.cost_grid, source=f"{folds}-fold out-of-fold")
        if tuning_cfg.enabled
        else None
        for i in range(len(params_list))
    ]
    decision_scores = np.array([t.custom_score if t else mean[i] for i, t in enumerate(tunings)])
    # Highest score under the tuned rule, then highest mean argmax score; ties go to the more stable (lower
    # std) candidate, then the earlier one.
    order = sorted(
        range(len(params_list)),
        key=lambda i: (-round(decision_scores[i], 10), -round(mean[i], 10), round(std[i], 10), i),
    )
    ranks = np.empty(len(params_list), dtype=int)
    ranks[order] = np.arange(1, len(params_list) + 1)
    rows = []
    for i, params in enumerate(params_list):
        row: dict[str, Any] = {"candidate": i, "params": json.dumps(jsonable(params), sort_keys=True)}
        row.update({f"param_{k}": json.dumps(jsonable(v)) for k, v in params.items()})
        row.update({f"split{k}_custom_score": scores[i, k] for k in range(folds)})
        row.update(
            {
                "mean_custom_score": mean[i],
                "std_custom_score": std[i],
                "decision_custom_score": decision_scores[i],
                "false_alarm_cost": tunings[i].false_alarm_cost if tunings[i] else 1.0,
                "missed_threat_cost": tunings[i].missed_threat_cost if tunings[i] else 1.0,
                "mean_macro_f1": f1s[i].mean(),
                "mean_fit_seconds": fit_times[i].mean(),
                "rank": int(ranks[i]),
            }
        )
        rows.append(row)
    best = order[0]
    return SearchResult(
        best_index=best,
        best_params=params_list[best],
        best_score=float(mean[best]),
        best_std=float(std[best]),
        table=pd.DataFrame(rows),
        folds=fold_records,
        seconds=time.perf_counter() - started,
        decision_tuning=tunings[best],
    )


# --- the trainer ------------------------------------------------------------------------------------------------
