"""Classical model training: the :class:`ClassicalTrainer` of the ``train`` stage for scikit-learn models.

Per model (``train_model(ClassicalTrainer(name, settings), train, validation, ...)``):

1. ``check`` validates everything up front (model name, search space, labels present, rows per class vs. folds),
   so bad input fails before any work and leaves no artifact;
2. ``fit`` searches hyperparameters (random or grid, stratified k-fold with near-duplicate groups kept in one
   fold) scored by the security custom score. Each fold fits the featurizer on its training part once, balances
   that part only (:func:`~prompt_sentinel.training.balance.balance_features`), and fits every candidate on it —
   equivalent to an imblearn ``Pipeline(featurizer, sampler, estimator)`` in a ``GridSearchCV`` but without
   refitting TF-IDF / re-embedding per candidate; then it refits the best candidate on the full (balanced)
   training split and predicts the validation split;
3. the shared sequence (:func:`prompt_sentinel.training.base.train_model`) tunes the decision costs, writes the
   artifact — ``model.skops`` (a plain ``Pipeline(features, model)``: samplers only matter at fit time),
   ``params.json``, ``cv_results.csv``, ``training.json``, the descriptor and, last, ``checksums.json`` — and
   tracks the run in MLflow.
"""

from __future__ import annotations

import json
import logging
import math
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from sklearn.exceptions import ConvergenceWarning
from sklearn.model_selection import StratifiedGroupKFold
from sklearn.pipeline import Pipeline

from prompt_sentinel.config import (
    BalanceConfig,
    FeaturizerConfig,
    InferenceConfig,
    LabelConfig,
    SentinelConfig,
    SplitConfig,
    TrainingConfig,
)
from prompt_sentinel.data.split import row_groups
from prompt_sentinel.decision import CostTuning, tune_costs
from prompt_sentinel.errors import ConfigError, TrainingError
from prompt_sentinel.features import build_featurizer, featurization_session, is_sparse_kind
from prompt_sentinel.inference import embedding_cache_dir
from prompt_sentinel.metrics import custom_score, macro_f1
from prompt_sentinel.models.base import ModelDescriptor
from prompt_sentinel.models.sklearn import probabilities_by_class_id, save_sklearn_estimator
from prompt_sentinel.run_layout import CV_RESULTS, PARAMS
from prompt_sentinel.training.balance import (
    balance_features,
    balanced_sample_weight,
    check_sampling_targets,
    class_counts,
)
from prompt_sentinel.training.base import Fitted, HeldOut, TrainingContext, TrainResult, labelled_texts, train_model
from prompt_sentinel.training.classical.estimators import BuildContext, ModelSpec, model_spec
from prompt_sentinel.training.classical.onnx_parity import onnx_parity_params
from prompt_sentinel.training.classical.search_space import candidates, search_space

log = logging.getLogger(__name__)

PIP_REQUIREMENTS = ("prompt-sentinel", "scikit-learn", "imbalanced-learn", "skops", "numpy")


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


def fit_estimator(estimator: Any, X: Any, y: np.ndarray, sample_weight: np.ndarray | None) -> Any:
    with warnings.catch_warnings():
        # A capped iteration budget is part of the search space; the CV score judges the result.
        warnings.simplefilter("ignore", ConvergenceWarning)
        if sample_weight is None:
            return estimator.fit(X, y)
        return estimator.fit(X, y, sample_weight=sample_weight)


def cross_validation_folds(
    texts: list[str], y: np.ndarray, settings: ClassicalSettings
) -> list[tuple[np.ndarray, np.ndarray]]:
    """Stratified k-fold splits that keep each near-duplicate group in one fold (the split stage's grouping).

    Without the groups, a held-out fold holds near-copies of its training rows (template variants), so the
    out-of-fold scores that rank candidates and tune the decision costs would be optimistic.
    """
    folds = settings.training.search.cv_folds
    groups = row_groups(texts, settings.split)
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


def run_search(
    spec: ModelSpec,
    texts: list[str],
    y: np.ndarray,
    settings: ClassicalSettings,
    make_featurizer: Callable[[], Any],
    params_list: list[dict[str, Any]],
    progress: bool = False,
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
    fold_splits = cross_validation_folds(texts, y, settings)
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
            featurizer = make_featurizer()
            X_fold = featurizer.fit_transform(list(text_arr[train_idx]), y[train_idx])
            X_hold = featurizer.transform(list(text_arr[val_idx]))
            # Only the fold's training part is balanced; the held-out part is scored as it is.
            X_bal, y_bal, report = balance_features(X_fold, y[train_idx], settings.balance, labels, settings.seed)
            weights = balanced_sample_weight(y_bal) if report.applied == "class_weight" else None
            ctx = BuildContext(settings.seed, calibration_folds(y_bal))
            fold_records.append(
                {
                    "fold": k,
                    "train_rows": len(train_idx),
                    "train_rows_after_balance": len(y_bal),
                    "validation_rows": len(val_idx),
                    "validation_counts": class_counts(y[val_idx], labels),
                    "balance": report.to_dict(),
                }
            )
            for i, params in enumerate(params_list):
                estimator = spec.build(params, ctx)
                t0 = time.perf_counter()
                fit_estimator(estimator, X_bal, y_bal, weights)
                fit_times[i, k] = time.perf_counter() - t0
                proba = class_probabilities(estimator, X_hold, n_classes)
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


def _versions() -> dict[str, str]:
    import imblearn
    import sklearn
    import skops

    return {"scikit-learn": sklearn.__version__, "imbalanced-learn": imblearn.__version__, "skops": skops.__version__}


@dataclass
class _Prepared:
    """Checked inputs, ready to fit."""

    spec: ModelSpec
    featurizer: FeaturizerConfig
    dense: bool
    space: dict[str, list[Any]]
    params_list: list[dict[str, Any]]
    texts: list[str]
    y: np.ndarray
    val_texts: list[str] = field(default_factory=list)
    y_val: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    has_validation: bool = False


class ClassicalTrainer:
    """One scikit-learn model (``model_type`` one of ``CLASSICAL_MODELS``) behind the trainer contract."""

    family = "sklearn"

    def __init__(self, model_type: str, settings: ClassicalSettings) -> None:
        self.model_type = model_type
        self.settings = settings
        self._prepared: _Prepared | None = None

    def run_name(self, out_dir: str) -> str:
        return f"{self.model_type}-{self._featurizer().kind}"

    def tags(self) -> dict[str, Any]:
        return {"featurizer": self._featurizer().kind}

    def _featurizer(self) -> FeaturizerConfig:
        featurizer = self.settings.featurizer
        if model_spec(self.model_type).nonnegative_only and featurizer.kind != "tfidf":
            # Naive Bayes models counts-like, non-negative features: it is a TF-IDF model by definition, so it
            # keeps TF-IDF whatever the shared featurizer is (the descriptor records what it really uses).
            return featurizer.model_copy(update={"kind": "tfidf"})
        return featurizer

    def check(self, train: pd.DataFrame | None, validation: pd.DataFrame | None) -> None:
        s = self.settings
        spec = model_spec(self.model_type)
        featurizer = self._featurizer()
        if featurizer.kind != s.featurizer.kind:
            log.info(
                "%s needs non-negative features: using featurizer 'tfidf' instead of %r",
                self.model_type,
                s.featurizer.kind,
            )
        space = search_space(self.model_type, s.training)
        params_list = candidates(space, s.training.search, s.seed)
        texts, y = labelled_texts(train, "training data", s.labels)
        check_training_data(y, s.labels, s.training.search.cv_folds)
        tuning = s.training.decision_tuning
        if tuning.enabled and tuning.source == "validation" and validation is None:
            raise TrainingError(
                "training.decision_tuning.source='validation' needs validation data; pass it or use source 'auto'"
            )
        try:
            check_sampling_targets(y, s.balance, s.labels)
        except ConfigError as exc:
            raise TrainingError(str(exc)) from exc
        dense = spec.dense_only and is_sparse_kind(featurizer.kind)
        prepared = _Prepared(spec, featurizer, dense, space, params_list, texts, y)
        if validation is not None:
            prepared.val_texts, prepared.y_val = labelled_texts(validation, "validation data", s.labels)
            prepared.has_validation = True
            absent = [name for name, n in class_counts(prepared.y_val, s.labels).items() if n == 0]
            if absent:
                log.warning("validation data has no rows of class(es) %s; their recall is reported as 0", absent)
        self._prepared = prepared

    def fit(
        self, train: pd.DataFrame | None, validation: pd.DataFrame | None, *, out_dir: str, run: Any, progress: bool
    ) -> Fitted:
        if self._prepared is None:
            self.check(train, validation)
        p, s = self._prepared, self.settings
        assert p is not None
        kind = p.featurizer.kind

        def make_featurizer() -> Any:
            return build_featurizer(p.featurizer, seed=s.seed, dense=p.dense)

        with featurization_session(
            cache=not is_sparse_kind(kind), progress=progress, disk_cache=embedding_cache_dir(s.inference)
        ):
            log.info(
                "training %s on %d rows (%s features, %d candidates)",
                self.model_type,
                len(p.y),
                kind,
                len(p.params_list),
            )
            search = run_search(p.spec, p.texts, p.y, s, make_featurizer, p.params_list, progress=progress)
            refit_started = time.perf_counter()
            featurizer = make_featurizer()
            X = featurizer.fit_transform(p.texts, p.y)
            X_bal, y_bal, report = balance_features(X, p.y, s.balance, s.labels, s.seed)
            weights = balanced_sample_weight(y_bal) if report.applied == "class_weight" else None
            estimator = p.spec.build(search.best_params, BuildContext(s.seed, calibration_folds(y_bal)))
            fit_estimator(estimator, X_bal, y_bal, weights)
            pipeline = Pipeline([("features", featurizer), ("model", estimator)])
            refit_seconds = time.perf_counter() - refit_started
            val_proba = class_probabilities(pipeline, p.val_texts, s.labels.num_classes) if p.has_validation else None

        # The costs the artifact stores: tuned on the refit model's validation predictions when there are any
        # (source 'auto'/'validation'): fold models see less data, are less sure of themselves, and on small data
        # their out-of-fold predictions ask for costs too aggressive for the model that is actually served.
        # Out-of-fold costs otherwise, or when asked for.
        held_out = HeldOut(p.y_val, val_proba, "validation") if val_proba is not None else None
        own_tuning = search.decision_tuning if s.training.decision_tuning.source == "out_of_fold" else None
        best_params = jsonable(search.best_params)
        training_report = {
            "model_type": self.model_type,
            "family": self.family,
            "featurizer": {
                **p.featurizer.model_dump(mode="json"),
                "dense_reduction": (
                    f"TruncatedSVD({p.featurizer.svd_components}) after TF-IDF for a dense-only estimator"
                    if p.dense
                    else None
                ),
            },
            "search_seconds": search.seconds,
            "refit_seconds": refit_seconds,
            "dataset": {"train_rows": len(p.y), "validation_rows": len(p.y_val)},
            "class_counts": {
                "train_before_balance": report.counts_before,
                "train_after_balance": report.counts_after,
                "validation": class_counts(p.y_val, s.labels) if p.has_validation else None,
            },
            "balance": report.to_dict(),
            "search": {
                "strategy": s.training.search.strategy,
                "space": jsonable(p.space),
                "candidates": len(p.params_list),
                "cv_folds": s.training.search.cv_folds,
                "cv_grouping": {
                    "near_duplicate_jaccard": s.split.near_duplicate_jaccard,
                    "shingle_words": s.split.shingle_words,
                },
                "scoring": "custom_score",
                "best_params": best_params,
                "best_cv_custom_score": search.best_score,
                "best_cv_custom_score_std": search.best_std,
                "folds": search.folds,
            },
            "seed": s.seed,
            "versions": _versions(),
            "settings": {
                "labels": s.labels.model_dump(mode="json"),
                "featurizer": p.featurizer.model_dump(mode="json"),
                "balance": s.balance.model_dump(mode="json"),
                "training": s.training.model_dump(mode="json"),
                "split": s.split.model_dump(mode="json"),
            },
        }

        def write_files(directory: Path, descriptor: ModelDescriptor) -> None:
            search.table.to_csv(directory / CV_RESULTS, index=False)
            save_sklearn_estimator(pipeline, directory)
            # how the pipeline's sentence encoder may run (ONNX / int8) without changing answers under the served rule
            descriptor.params.update(
                onnx_parity_params(
                    pipeline, p.texts, p.val_texts, val_proba, descriptor.decision, s.labels, s.inference, s.seed
                )
            )

        return Fitted(
            params=best_params,
            selection_score=search.best_score,
            write_files=write_files,
            held_out=held_out,
            tuning=own_tuning,
            fallback_tuning=search.decision_tuning,
            featurizer=kind,
            max_length=p.featurizer.embedding_max_length if kind != "tfidf" else None,
            training_report=training_report,
            reports={PARAMS: best_params},
            mlflow_params={
                "featurizer": kind,
                "balance_method": s.balance.method,
                "balance_applied": report.applied,
                "search_strategy": s.training.search.strategy,
                "cv_folds": s.training.search.cv_folds,
                "candidates": len(p.params_list),
                "seed": s.seed,
                "train_rows": len(p.y),
                **{f"best.{k}": v for k, v in best_params.items()},
            },
            mlflow_metrics={
                "cv_custom_score": search.best_score,
                "cv_custom_score_std": search.best_std,
                "cv_decision_custom_score": (
                    search.decision_tuning.custom_score if search.decision_tuning else search.best_score
                ),
            },
            pip_requirements=PIP_REQUIREMENTS,
            details={"cv_score": search.best_score, "best_params": best_params, "balance": report.to_dict()},
        )


def train_classical(
    model_name: str,
    train_df: pd.DataFrame,
    val_df: pd.DataFrame | None,
    cfg: SentinelConfig,
    out_dir: str | Path,
    progress: bool = True,
    tracking_dir: str | Path | None = None,
) -> TrainResult:
    """Search, refit, validate and save one classical model (the shared trainer sequence around it)."""
    return train_model(
        ClassicalTrainer(model_name, ClassicalSettings.from_config(cfg)),
        train_df,
        val_df,
        TrainingContext.from_config(cfg),
        out_dir,
        progress=progress,
        tracking_dir=tracking_dir,
    )
