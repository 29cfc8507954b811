"""Classical model training: the :class:`ClassicalTrainer` of the ``train`` stage for scikit-learn models.

Per model (``train_model(ClassicalTrainer(name, settings), train, validation, ...)``):

1. ``check`` validates everything up front (model name, search space, labels present, rows per class vs. folds),
   so bad input fails before any work and leaves no artifact;
2. ``fit`` searches hyperparameters (random or grid, stratified k-fold with near-duplicate and explicit groups
   kept in one fold; whole source families per fold with ``decision_tuning.source='out_of_source'``) scored by the
   security custom score. Each fold augments its training part
   (:func:`~prompt_sentinel.training.augmentation.prepare_training_rows`, when switched on), fits the featurizer on
   it once, balances that part only (:func:`~prompt_sentinel.training.balance.balance_features`), and fits every
   candidate on it —
   equivalent to an imblearn ``Pipeline(featurizer, sampler, estimator)`` in a ``GridSearchCV`` but without
   refitting TF-IDF / re-embedding per candidate; then it refits the best candidate on the full (balanced)
   training split and predicts the validation split;
3. the shared sequence (:func:`prompt_sentinel.training.base.train_model`) tunes the decision costs, writes the
   artifact — ``model.skops`` (a plain ``Pipeline(features, model)``: samplers only matter at fit time),
   ``params.json``, ``cv_results.csv``, ``training.json``, the descriptor and, last, ``checksums.json`` — and
   tracks the run in MLflow.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from sklearn.pipeline import Pipeline

from prompt_sentinel.config import (
    FeaturizerConfig,
    SentinelConfig,
)
from prompt_sentinel.errors import ConfigError, TrainingError
from prompt_sentinel.features import build_featurizer, featurization_session, is_sparse_kind
from prompt_sentinel.inference import embedding_cache_dir
from prompt_sentinel.models.base import ModelDescriptor
from prompt_sentinel.models.calibration import load_calibrator
from prompt_sentinel.models.sklearn import save_sklearn_estimator
from prompt_sentinel.run_layout import CV_RESULTS, CV_SUMMARY, PARAMS
from prompt_sentinel.training.augmentation import prepare_training_rows
from prompt_sentinel.training.balance import (
    balance_features,
    balanced_sample_weight,
    check_sampling_targets,
    class_counts,
)
from prompt_sentinel.training.base import Fitted, HeldOut, TrainingContext, TrainResult, labelled_texts, train_model
from prompt_sentinel.training.classical.estimators import BuildContext, ModelSpec, model_spec
from prompt_sentinel.training.classical.onnx_parity import onnx_parity_params
from prompt_sentinel.training.classical.search import (
    ClassicalSettings,
    SearchResult,
    calibration_folds,
    check_training_data,
    class_probabilities,
    families_wanted,
    fit_estimator,
    jsonable,
    run_search,
    source_families,
)
from prompt_sentinel.training.classical.search_space import candidates, optuna_space, search_space

log = logging.getLogger(__name__)

PIP_REQUIREMENTS = ("prompt-sentinel", "scikit-learn", "imbalanced-learn", "skops", "numpy")


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
    groups: list[str] | None = None  # the training frame's explicit groups (its `group` column)
    families: list[str] | None = None  # source families, when CV folds hold out whole families
    optuna_space: dict[str, Any] | None = None  # strategy optuna: the validated ranges
    study_name: str | None = None


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
        search = s.training.search
        space = search_space(self.model_type, s.training)
        ranges = None
        if search.strategy == "optuna":
            from prompt_sentinel.training.optuna_search import check_settings

            ranges = optuna_space(self.model_type, search)
            check_settings(search.optuna, ranges)
            params_list: list[dict[str, Any]] = []
        else:
            params_list = candidates(space, search, s.seed)
        texts, y = labelled_texts(train, "training data", s.labels)
        check_training_data(y, s.labels, search.cv_folds)
        groups = train["group"].fillna("").astype(str).tolist() if "group" in train.columns else None
        families = source_families(train, search.cv_folds) if families_wanted(s) else None
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
        prepared = _Prepared(spec, featurizer, dense, space, params_list, texts, y, groups=groups, families=families)
        if ranges is not None:
            from prompt_sentinel.training.optuna_search import default_study_name
            from prompt_sentinel.training.tracking import dataset_sha256

            prepared.optuna_space = ranges
            prepared.study_name = search.optuna.study_name or default_study_name(
                f"{self.model_type}-{featurizer.kind}", dataset_sha256(train)
            )
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
            return build_featurizer(p.featurizer, seed=s.seed, dense=p.dense, benign_label=s.labels.roles.benign)

        with featurization_session(
            cache=not is_sparse_kind(kind), progress=progress, disk_cache=embedding_cache_dir(s.inference)
        ):
            if p.optuna_space is not None:
                from prompt_sentinel.training.classical.optuna_search import run_optuna_search

                log.info(
                    "training %s on %d rows (%s features, Optuna study %r, %d trials)",
                    self.model_type,
                    len(p.y),
                    kind,
                    p.study_name,
                    s.training.search.optuna.n_trials,
                )
                search = run_optuna_search(
                    p.spec,
                    p.texts,
                    p.y,
                    s,
                    make_featurizer,
                    p.optuna_space,
                    p.study_name or self.model_type,
                    progress=progress,
                    groups=p.groups,
                    families=p.families,
                )
            else:
                log.info(
                    "training %s on %d rows (%s features, %d candidates)",
                    self.model_type,
                    len(p.y),
                    kind,
                    len(p.params_list),
                )
                search = run_search(
                    p.spec,
                    p.texts,
                    p.y,
                    s,
                    make_featurizer,
                    p.params_list,
                    progress=progress,
                    groups=p.groups,
                    families=p.families,
                )
            refit_started = time.perf_counter()
            fit_texts, fit_y, rows = prepare_training_rows(
                p.texts, p.y, s.training.augmentation, s.training.length_balance, s.labels, s.seed
            )
            featurizer = make_featurizer()
            X = featurizer.fit_transform(fit_texts, fit_y)
            X_bal, y_bal, report = balance_features(X, fit_y, s.balance, s.labels, s.seed)
            weights = balanced_sample_weight(y_bal) if report.applied == "class_weight" else None
            estimator = p.spec.build(search.best_params, BuildContext(s.seed, calibration_folds(y_bal)))
            fit_estimator(estimator, X_bal, y_bal, weights)
            pipeline = Pipeline([("features", featurizer), ("model", estimator)])
            refit_seconds = time.perf_counter() - refit_started
            val_proba = class_probabilities(pipeline, p.val_texts, s.labels.num_classes) if p.has_validation else None

        # The costs the artifact stores: tuned on the refit model's validation predictions when there are any
        # (source 'auto'/'validation'): fold models see less data, are less sure of themselves, and on small data
        # their out-of-fold predictions ask for costs too aggressive for the model that is actually served.
        # Out-of-fold costs otherwise, or when asked for ('out_of_source': the folds held out whole source families).
        held_out = HeldOut(p.y_val, val_proba, "validation") if val_proba is not None else None
        own_tuning = (
            search.decision_tuning if s.training.decision_tuning.source in ("out_of_fold", "out_of_source") else None
        )
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
            "training_rows": rows.to_dict(),
            "search": {
                "strategy": s.training.search.strategy,
                "space": (
                    {k: r.describe() for k, r in p.optuna_space.items()}
                    if p.optuna_space is not None
                    else jsonable(p.space)
                ),
                "candidates": len(search.table),
                "optuna": search.study,
                "cv_folds": s.training.search.cv_folds,
                "cv_grouping": {
                    "near_duplicate_jaccard": s.split.near_duplicate_jaccard,
                    "shingle_words": s.split.shingle_words,
                    "explicit_groups": p.groups is not None,
                    "source_families": sorted(set(p.families)) if p.families is not None else None,
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
            # (calibration.json is already in ``directory``: the gate compares calibrated, served probabilities)
            calibrator = load_calibrator(directory, descriptor.calibration, s.labels.num_classes)
            descriptor.params.update(
                onnx_parity_params(
                    pipeline,
                    p.texts,
                    p.val_texts,
                    val_proba,
                    descriptor.decision,
                    s.labels,
                    s.inference,
                    s.seed,
                    calibrator,
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
            reports={PARAMS: best_params, CV_SUMMARY: _cv_summary(search, s.training.search.cv_folds)},
            mlflow_params={
                "featurizer": kind,
                "balance_method": s.balance.method,
                "balance_applied": report.applied,
                "search_strategy": s.training.search.strategy,
                "cv_folds": s.training.search.cv_folds,
                "candidates": len(search.table),
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


def _cv_summary(search: SearchResult, folds: int) -> dict[str, Any]:
    """The chosen candidate's custom score on each CV fold (what ``gates.max_cv_std`` judges)."""
    from prompt_sentinel.training.cross_validation import cv_summary_from_search

    row = search.table.iloc[search.best_index]
    values = [row.get(f"split{k}_custom_score") for k in range(folds)]
    return cv_summary_from_search(values, folds, "the chosen candidate's held-out CV folds (argmax labels)")


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
