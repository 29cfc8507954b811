"""Optuna search for the scikit-learn models (``training.search.strategy: optuna``).

The same grouped folds as random / grid search (:func:`~prompt_sentinel.training.classical.trainer.
cross_validation_folds`: near-duplicates, and with ``group_by_source_family`` source families, never straddle
folds); each fold's featurizer is fitted once and shared by every trial. A trial fits its candidate fold by
fold, reports the running mean custom score after each fold (what the pruner compares), and returns the score
the random search ranks by: the custom score of its out-of-fold probabilities under decision costs tuned on
them (argmax custom score when tuning is off). The result is an ordinary :class:`SearchResult`, so the refit,
the artifact and tracking are unchanged.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import pandas as pd

from prompt_sentinel.decision import tune_costs
from prompt_sentinel.metrics import custom_score, macro_f1
from prompt_sentinel.training.classical.estimators import ModelSpec
from prompt_sentinel.training.classical.search import (
    ClassicalSettings,
    SearchResult,
    class_probabilities,
    cross_validation_folds,
    fit_estimator,
    jsonable,
    prepare_fold,
)
from prompt_sentinel.training.classical.search_space import SEARCHABLE, is_integer
from prompt_sentinel.training.optuna_search import run_study
from prompt_sentinel.training.search_ranges import Range


def run_optuna_search(
    spec: ModelSpec,
    texts: list[str],
    y: np.ndarray,
    settings: ClassicalSettings,
    make_featurizer: Callable[[], Any],
    space: dict[str, Range],
    study_name: str,
    *,
    progress: bool = False,
    groups: list[str] | None = None,
    families: list[str] | None = None,
    callbacks: Sequence[Callable[[Any, Any], None]] = (),
) -> SearchResult:
    """Run (or resume) the Optuna study of ``spec`` over ``space``; see the module docstring."""
    import optuna

    started = time.perf_counter()
    search = settings.training.search
    labels = settings.labels
    roles, n_classes = labels.roles, labels.num_classes
    tuning_cfg = settings.training.decision_tuning
    folds_source = f"{search.cv_folds}-fold out-of-fold"
    text_arr = np.asarray(texts, dtype=object)
    splits = cross_validation_folds(texts, y, settings, groups, families)
    folds = [prepare_fold(k, tr, held, text_arr, y, settings, make_featurizer) for k, (tr, held) in enumerate(splits)]
    declared = SEARCHABLE[spec.name]
    oof_by_trial: dict[int, np.ndarray] = {}

    def evaluate(params: dict[str, Any], trial: Any | None) -> tuple[float, dict[str, Any], np.ndarray]:
        oof = np.zeros((len(y), n_classes))
        scores, f1s, fit_seconds = [], [], []
        for k, fold in enumerate(folds):
            estimator = spec.build(params, fold.build)
            t0 = time.perf_counter()
            fit_estimator(estimator, fold.X_train, fold.y_train, fold.weights)
            fit_seconds.append(time.perf_counter() - t0)
            proba = class_probabilities(estimator, fold.X_held, n_classes)
            oof[fold.held_idx] = proba
            pred = proba.argmax(axis=1)
            scores.append(custom_score(y[fold.held_idx], pred, roles, n_classes))
            f1s.append(macro_f1(y[fold.held_idx], pred, n_classes))
            if trial is not None:
                trial.report(float(np.mean(scores)), step=k)
                if k + 1 < len(folds) and trial.should_prune():
                    trial.set_user_attr("split_custom_scores", scores)
                    raise optuna.TrialPruned(f"pruned after fold {k}: running mean custom score {np.mean(scores):.4f}")
        tuned = tune_costs(y, oof, roles, tuning_cfg.cost_grid, source=folds_source) if tuning_cfg.enabled else None
        attrs = {
            "split_custom_scores": [float(v) for v in scores],
            "mean_custom_score": float(np.mean(scores)),
            "std_custom_score": float(np.std(scores)),
            "mean_macro_f1": float(np.mean(f1s)),
            "mean_fit_seconds": float(np.mean(fit_seconds)),
            "false_alarm_cost": tuned.false_alarm_cost if tuned else 1.0,
            "missed_threat_cost": tuned.missed_threat_cost if tuned else 1.0,
        }
        objective = tuned.custom_score if tuned else attrs["mean_custom_score"]
        return float(objective), attrs, oof

    best_so_far = {"value": -np.inf}

    def objective(trial: Any, params: dict[str, Any]) -> float:
        value, attrs, oof = evaluate(params, trial)
        for key, item in attrs.items():
            trial.set_user_attr(key, item)
        if value > best_so_far["value"]:  # keep only the best trial's out-of-fold probabilities
            best_so_far["value"] = value
            oof_by_trial.clear()
            oof_by_trial[trial.number] = oof
        return value

    outcome = run_study(
        search.optuna,
        study_name,
        space,
        lambda name: is_integer(declared[name]),
        objective,
        seed=settings.seed,
        max_resource=len(folds),
        progress=progress,
        callbacks=callbacks,
        run_prefix=f"{spec.name}-trial",
    )
    best_params = outcome.best_params
    oof = oof_by_trial.get(outcome.best_number)
    if oof is None:  # the best trial ran before this process (a resumed study): score it again
        _, attrs, oof = evaluate(best_params, None)
    else:
        attrs = {k.removeprefix("attr_"): v for k, v in outcome.best_attrs.items()}
    tuning = tune_costs(y, oof, roles, tuning_cfg.cost_grid, source=folds_source) if tuning_cfg.enabled else None
    table = _table(outcome.trials, search.cv_folds)
    return SearchResult(
        best_index=int(np.flatnonzero(table["candidate"].to_numpy() == outcome.best_number)[0]),
        best_params=best_params,
        best_score=float(attrs["mean_custom_score"]),
        best_std=float(attrs["std_custom_score"]),
        table=table,
        folds=[fold.record for fold in folds],
        seconds=time.perf_counter() - started,
        decision_tuning=tuning,
        study=outcome.summary(),
    )


def _table(trials: list[dict[str, Any]], n_folds: int) -> pd.DataFrame:
    """``cv_results.csv`` of an Optuna search: one row per trial, the random search's columns plus the state."""
    rows = []
    for t in trials:
        scores = t.get("attr_split_custom_scores") or []
        row: dict[str, Any] = {
            "candidate": t["number"],
            "state": t["state"],
            "params": json.dumps(jsonable(t["params"]), sort_keys=True),
        }
        row.update({f"param_{k}": json.dumps(jsonable(v)) for k, v in t["params"].items()})
        row.update({f"split{k}_custom_score": scores[k] if k < len(scores) else None for k in range(n_folds)})
        row.update(
            {
                "mean_custom_score": t.get("attr_mean_custom_score"),
                "std_custom_score": t.get("attr_std_custom_score"),
                # a pruned trial's stored value is only its last intermediate score
                "decision_custom_score": t["value"] if t["state"] == "COMPLETE" else None,
                "false_alarm_cost": t.get("attr_false_alarm_cost"),
                "missed_threat_cost": t.get("attr_missed_threat_cost"),
                "mean_macro_f1": t.get("attr_mean_macro_f1"),
                "mean_fit_seconds": t.get("attr_mean_fit_seconds"),
                "seconds": t["seconds"],
            }
        )
        rows.append(row)
    table = pd.DataFrame(rows)
    value = pd.to_numeric(table["decision_custom_score"], errors="coerce").fillna(-np.inf)
    table["rank"] = (-value).rank(method="first").astype(int)
    return table
