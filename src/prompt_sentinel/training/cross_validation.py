"""K-fold cross-validation around any trainer (``sentinel train --cv K``): how stable is the model?

:class:`CrossValidatedTrainer` wraps the trainer of the model being trained. Before the usual fit it trains
one model per fold on the other ``K - 1`` folds of the training split — the full shared sequence
(:func:`~prompt_sentinel.training.base.train_model`: calibration, tuned decision costs; the validation split
still drives early stopping and tuning) into a throw-away directory — loads it back like any artifact and
scores its held-out fold under its own decision rule. Folds are stratified and grouped: near-duplicates (and,
with ``training.search.group_by_source_family``, source families) never straddle two folds. ``K`` larger than
the number of groups of the smallest class is refused before any training.

The mean ± std over folds of every headline metric goes into ``cv_summary.json`` in the model directory (which
evaluation carries into ``evaluation.json``, the report and the ``gates.max_cv_std`` gate), ``training.json``
and the MLflow run (``cv_<metric>_mean`` / ``_std``, and each fold's value as a step of ``cv_fold_<metric>``).
"""

from __future__ import annotations

import dataclasses
import logging
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from prompt_sentinel.config import SearchConfig, SplitConfig
from prompt_sentinel.data.split import row_groups
from prompt_sentinel.errors import TrainingError
from prompt_sentinel.metrics import macro_f1, security_score
from prompt_sentinel.run_layout import CV_SUMMARY
from prompt_sentinel.training import tracking
from prompt_sentinel.training.base import Fitted, Trainer, TrainingContext, labelled_texts, train_model
from prompt_sentinel.training.folds import check_groups_per_class, merge_source_families

log = logging.getLogger(__name__)

CV_METRICS = (
    "custom_score",
    "macro_f1",
    "accuracy",
    "recall_c2",
    "precision_c1",
    "f1_c0",
    "false_alarm_rate",
    "missed_threat_rate",
)


def fold_metrics(y: np.ndarray, pred: np.ndarray, ctx: TrainingContext) -> dict[str, float | None]:
    n = ctx.labels.num_classes
    score = security_score(y, pred, ctx.labels.roles, n).as_dict()
    return {
        **{k: score.get(k) for k in CV_METRICS if k in score},
        "macro_f1": macro_f1(y, pred, n),
        "accuracy": float(np.mean(y == pred)),
    }


def summarize(folds: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Per metric: mean, std (population, as scikit-learn's CV reports) and the fold values."""
    out = {}
    for metric in CV_METRICS:
        values = [f[metric] for f in folds if f.get(metric) is not None]
        if values:
            out[metric] = {
                "mean": float(np.mean(values)),
                "std": float(np.std(values)),
                "folds": [float(v) for v in values],
            }
    return out


class CrossValidatedTrainer:
    """``inner`` behind the trainer contract, with K grouped folds trained and scored first (module docstring)."""

    def __init__(
        self,
        inner: Trainer,
        make_fold_trainer: Callable[[], Trainer],
        k: int,
        ctx: TrainingContext,
        split: SplitConfig,
        search: SearchConfig,
        seed: int,
    ) -> None:
        if k < 2:
            raise TrainingError(f"--cv {k}: cross-validation needs at least 2 folds")
        self.inner = inner
        self.make_fold_trainer = make_fold_trainer
        self.k = k
        self.ctx = ctx
        self.split = split
        self.search = search
        self.seed = seed
        self.family = inner.family
        self.model_type = inner.model_type
        self._folds: list[tuple[np.ndarray, np.ndarray]] | None = None

    def run_name(self, out_dir: str) -> str:
        return f"{self.inner.run_name(out_dir)}-cv{self.k}"

    def tags(self) -> dict[str, Any]:
        return {**self.inner.tags(), "cv_folds": self.k}

    def check(self, train: pd.DataFrame | None, validation: pd.DataFrame | None) -> None:
        from sklearn.model_selection import StratifiedGroupKFold

        texts, y = labelled_texts(train, "training data", self.ctx.labels)
        groups = row_groups(texts, self.split)
        by_family = self.search.group_by_source_family
        if by_family:
            if "source" not in train.columns:
                raise TrainingError("training.search.group_by_source_family needs a 'source' column")
            groups = merge_source_families(groups, [str(s) for s in train["source"].fillna("")])
        check_groups_per_class(groups, y, self.ctx.labels, self.k, "--cv", by_family=by_family)
        splitter = StratifiedGroupKFold(n_splits=self.k, shuffle=True, random_state=self.seed)
        self._folds = list(splitter.split(np.zeros(len(y)), y, groups))
        self.inner.check(train, validation)

    def fit(
        self, train: pd.DataFrame | None, validation: pd.DataFrame | None, *, out_dir: str, run: Any, progress: bool
    ) -> Fitted:
        from prompt_sentinel.models.loading import load_model

        if self._folds is None:
            self.check(train, validation)
        assert self._folds is not None and train is not None
        quiet = dataclasses.replace(self.ctx, mlflow=self.ctx.mlflow.model_copy(update={"enabled": False}))
        results: list[dict[str, Any]] = []
        for k, (train_idx, held_idx) in enumerate(self._folds):
            fold_train = train.iloc[train_idx].reset_index(drop=True)
            held = train.iloc[held_idx].reset_index(drop=True)
            log.info(
                "cross-validation fold %d/%d: %d training rows, %d held out", k + 1, self.k, len(fold_train), len(held)
            )
            with tempfile.TemporaryDirectory(prefix=f"sentinel-cv{k}-") as tmp:
                result = train_model(
                    self.make_fold_trainer(), fold_train, validation, quiet, Path(tmp) / "model", progress=progress
                )
                model = load_model(result.model_dir)
                pred = model.predict(held["text"].tolist())
            metrics = fold_metrics(held["label"].to_numpy(dtype=np.int64), pred, self.ctx)
            results.append({"fold": k, "train_rows": len(fold_train), "held_out_rows": len(held), **metrics})
            if run is not None:
                tracking.log_metrics({f"cv_fold_{m}": v for m, v in metrics.items()}, step=k)
        summary = {
            "folds": self.k,
            "grouping": {
                "near_duplicate_jaccard": self.split.near_duplicate_jaccard,
                "source_families": self.search.group_by_source_family,
            },
            "scored_on": "each fold's held-out rows, under the fold model's own tuned decision rule",
            "metrics": summarize(results),
            "per_fold": results,
        }
        fitted = self.inner.fit(train, validation, out_dir=out_dir, run=run, progress=progress)
        fitted.reports = {**fitted.reports, CV_SUMMARY: summary}
        fitted.training_report = {**fitted.training_report, "cross_validation": summary}
        for metric, stats in summary["metrics"].items():
            fitted.mlflow_metrics[f"cv_{metric}_mean"] = stats["mean"]
            fitted.mlflow_metrics[f"cv_{metric}_std"] = stats["std"]
        fitted.mlflow_params["cv_folds"] = self.k
        fitted.details = {**fitted.details, "cross_validation": summary}
        custom = summary["metrics"].get("custom_score", {})
        log.info(
            "%s %d-fold CV custom score %.4f ± %.4f",
            self.model_type,
            self.k,
            custom.get("mean", float("nan")),
            custom.get("std", float("nan")),
        )
        return fitted


def cv_summary_from_search(folds: list[float], k: int, source: str) -> dict[str, Any]:
    """``cv_summary.json`` of a classical search: the chosen candidate's custom score on each CV fold."""
    values = [float(v) for v in folds if v is not None and np.isfinite(v)]
    return {
        "folds": k,
        "scored_on": source,
        "metrics": {"custom_score": {"mean": float(np.mean(values)), "std": float(np.std(values)), "folds": values}}
        if values
        else {},
    }
