"""Classical model training (the ``train`` stage for scikit-learn models; one call per model).

``train_classical(name, train_df, val_df, cfg, out_dir)``:

1. validates everything up front (model name, search space, labels present, rows per class vs. folds),
   so bad input fails before any work and leaves no artifact;
2. searches hyperparameters (random or grid, stratified k-fold) scored by the security custom score. Each fold
   fits the featurizer on its training part once, balances that part only (:func:`balance_features`), and
   fits every candidate on it — equivalent to an imblearn ``Pipeline(featurizer, sampler, estimator)`` in a
   ``GridSearchCV`` but without refitting TF-IDF / re-embedding per candidate;
3. refits the best candidate on the full (balanced) training split and scores the validation split;
4. writes the artifact atomically: ``model.skops`` (a plain ``Pipeline(features, model)``: samplers only
   matter at fit time), ``sentinel_model.json``, ``params.json``, ``cv_results.csv``, ``training.json`` and,
   last, ``checksums.json``;
5. tracks the run in MLflow (params, CV and validation metrics, artifacts, dataset hash and git commit tags).
"""

from __future__ import annotations

import json
import logging
import math
import tempfile
import time
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from sklearn.exceptions import ConvergenceWarning
from sklearn.model_selection import ParameterGrid, ParameterSampler, StratifiedGroupKFold
from sklearn.pipeline import Pipeline

from prompt_sentinel import storage, tracking
from prompt_sentinel.balance import balance_features, balanced_sample_weight, check_sampling_targets, class_counts
from prompt_sentinel.checksums import MANIFEST_NAME
from prompt_sentinel.config import CLASSICAL_MODELS, SentinelConfig
from prompt_sentinel.data.loading import check_labelled_frame
from prompt_sentinel.data.split import row_groups
from prompt_sentinel.decision import CostTuning, assign_labels, tune_costs
from prompt_sentinel.errors import ConfigError, TrainingError
from prompt_sentinel.features import build_featurizer, featurization_session, is_sparse_kind
from prompt_sentinel.inference import embedding_cache_dir, onnx_parity_params
from prompt_sentinel.metrics import custom_score, macro_f1, security_score
from prompt_sentinel.modeling import ModelDescriptor
from prompt_sentinel.sklearn_artifact import probabilities_by_class_id, save_sklearn_artifact
from prompt_sentinel.text import normalize_text

log = logging.getLogger(__name__)

# --- search spaces ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ParamSpec:
    """Allowed values of one hyperparameter; ``check`` returns the value in the form the estimator takes."""

    kind: str  # "float" | "int" | "choice" | "layers"
    low: float | None = None
    high: float | None = None
    low_open: bool = False  # low itself not allowed
    choices: tuple[Any, ...] = ()
    allow_none: bool = False

    def describe(self) -> str:
        if self.kind == "choice":
            return f"one of {list(self.choices)}"
        if self.kind == "layers":
            return "a list of positive integers (hidden layer sizes), e.g. [128] or [256, 64]"
        bound = []
        if self.low is not None:
            bound.append(f"{'>' if self.low_open else '>='} {self.low:g}")
        if self.high is not None:
            bound.append(f"<= {self.high:g}")
        text = f"{'an integer' if self.kind == 'int' else 'a number'} {' and '.join(bound)}".strip()
        return f"{text} or null" if self.allow_none else text

    def check(self, value: Any) -> Any:
        if value is None and self.allow_none:
            return None
        if self.kind == "choice":
            if value in self.choices and type(value) in {type(c) for c in self.choices}:
                return value
            raise ValueError
        if self.kind == "layers":
            sizes = [value] if isinstance(value, int) else value
            if (
                isinstance(sizes, (list, tuple))
                and sizes
                and all(isinstance(s, int) and not isinstance(s, bool) and s > 0 for s in sizes)
            ):
                return tuple(sizes)
            raise ValueError
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ValueError
        if self.kind == "int" and not float(value).is_integer():
            raise ValueError
        number = int(value) if self.kind == "int" else float(value)
        if not math.isfinite(number):
            raise ValueError
        if self.low is not None and (number < self.low or (self.low_open and number == self.low)):
            raise ValueError
        if self.high is not None and number > self.high:
            raise ValueError
        return number


def _float(low: float | None = None, high: float | None = None, low_open: bool = False) -> ParamSpec:
    return ParamSpec("float", low, high, low_open)


def _int(low: int = 1, high: int | None = None, allow_none: bool = False) -> ParamSpec:
    return ParamSpec("int", low, high, allow_none=allow_none)


def _choice(*values: Any) -> ParamSpec:
    return ParamSpec("choice", choices=values)


@dataclass(frozen=True)
class BuildContext:
    """What estimator factories need beyond the hyperparameters."""

    seed: int
    calibration_folds: int = 3


@dataclass(frozen=True)
class ModelSpec:
    name: str
    params: dict[str, ParamSpec]
    default_space: dict[str, list[Any]]
    build: Callable[[dict[str, Any], BuildContext], Any]
    dense_only: bool = False  # needs dense input: TF-IDF is reduced with SVD first
    nonnegative_only: bool = False  # needs non-negative features: TF-IDF only


def _logreg(p: dict[str, Any], ctx: BuildContext) -> Any:
    from sklearn.linear_model import LogisticRegression

    return LogisticRegression(C=p.get("C", 1.0), max_iter=p.get("max_iter", 2000), random_state=ctx.seed)


def _linear_svm(p: dict[str, Any], ctx: BuildContext) -> Any:
    from sklearn.calibration import CalibratedClassifierCV
    from sklearn.svm import LinearSVC

    svm = LinearSVC(C=p.get("C", 1.0), max_iter=p.get("max_iter", 5000), random_state=ctx.seed)
    # Calibration gives the SVM probabilities (serving decisions threshold on them).
    return CalibratedClassifierCV(svm, method=p.get("calibration", "sigmoid"), cv=ctx.calibration_folds)


def _random_forest(p: dict[str, Any], ctx: BuildContext) -> Any:
    from sklearn.ensemble import RandomForestClassifier

    return RandomForestClassifier(
        n_estimators=p.get("n_estimators", 300),
        max_depth=p.get("max_depth"),
        min_samples_leaf=p.get("min_samples_leaf", 1),
        max_features=p.get("max_features", "sqrt"),
        random_state=ctx.seed,
        n_jobs=1,  # the trainer is one pipeline step among parallel ones; keep to one core
    )


def _hist_gb(p: dict[str, Any], ctx: BuildContext) -> Any:
    from sklearn.ensemble import HistGradientBoostingClassifier

    return HistGradientBoostingClassifier(
        learning_rate=p.get("learning_rate", 0.1),
        max_iter=p.get("max_iter", 200),
        max_leaf_nodes=p.get("max_leaf_nodes", 31),
        l2_regularization=p.get("l2_regularization", 0.0),
        early_stopping=False,
        random_state=ctx.seed,
    )


def _complement_nb(p: dict[str, Any], ctx: BuildContext) -> Any:
    from sklearn.naive_bayes import ComplementNB

    return ComplementNB(alpha=p.get("alpha", 1.0), norm=p.get("norm", False))


def _mlp(p: dict[str, Any], ctx: BuildContext) -> Any:
    from sklearn.neural_network import MLPClassifier

    return MLPClassifier(
        hidden_layer_sizes=p.get("hidden_layer_sizes", (256,)),
        alpha=p.get("alpha", 1e-4),
        learning_rate_init=p.get("learning_rate_init", 1e-3),
        max_iter=p.get("max_iter", 200),
        random_state=ctx.seed,
    )


MODEL_SPECS: dict[str, ModelSpec] = {
    "logreg": ModelSpec(
        "logreg",
        {"C": _float(0, low_open=True), "max_iter": _int(1)},
        {"C": [0.5, 1.0, 2.0, 5.0, 10.0, 20.0, 50.0]},
        _logreg,
    ),
    "linear_svm": ModelSpec(
        "linear_svm",
        {"C": _float(0, low_open=True), "max_iter": _int(1), "calibration": _choice("sigmoid", "isotonic")},
        {"C": [0.05, 0.1, 0.2, 0.5, 1.0, 2.0], "calibration": ["sigmoid"]},
        _linear_svm,
    ),
    "random_forest": ModelSpec(
        "random_forest",
        {
            "n_estimators": _int(1),
            "max_depth": _int(1, allow_none=True),
            "min_samples_leaf": _int(1),
            "max_features": _choice("sqrt", "log2"),
        },
        {"n_estimators": [300], "max_depth": [None, 60], "min_samples_leaf": [1, 2], "max_features": ["sqrt"]},
        _random_forest,
    ),
    "hist_gb": ModelSpec(
        "hist_gb",
        {
            "learning_rate": _float(0, 1, low_open=True),
            "max_iter": _int(1),
            "max_leaf_nodes": _int(2),
            "l2_regularization": _float(0),
        },
        {
            "learning_rate": [0.05, 0.1, 0.2],
            "max_iter": [150, 300],
            "max_leaf_nodes": [15, 31],
            "l2_regularization": [0.0, 1.0],
        },
        _hist_gb,
        dense_only=True,
    ),
    "complement_nb": ModelSpec(
        "complement_nb",
        {"alpha": _float(0, low_open=True), "norm": _choice(False, True)},
        {"alpha": [0.01, 0.03, 0.1, 0.3, 1.0], "norm": [False, True]},
        _complement_nb,
        nonnegative_only=True,
    ),
    "mlp": ModelSpec(
        "mlp",
        {
            "hidden_layer_sizes": ParamSpec("layers"),
            "alpha": _float(0),
            "learning_rate_init": _float(0, low_open=True),
            "max_iter": _int(1),
        },
        {"hidden_layer_sizes": [[128], [256]], "alpha": [1e-4, 1e-3, 1e-2], "learning_rate_init": [1e-3, 3e-3]},
        _mlp,
        dense_only=True,
    ),
}
assert set(MODEL_SPECS) == set(CLASSICAL_MODELS), "every configured classical model needs a spec"


def model_spec(name: str) -> ModelSpec:
    if name not in MODEL_SPECS:
        raise TrainingError(f"unknown classical model {name!r}; allowed: {list(CLASSICAL_MODELS)}")
    return MODEL_SPECS[name]


def search_space(name: str, cfg: SentinelConfig) -> dict[str, list[Any]]:
    """The validated search space for ``name``: ``cfg.training.param_grids[name]`` or the built-in one.

    A configured grid replaces the built-in space entirely (unlisted hyperparameters keep their defaults).
    Raises :class:`TrainingError` naming the model, parameter, value and what is allowed.
    """
    spec = model_spec(name)
    unknown_models = [m for m in cfg.training.param_grids if m not in MODEL_SPECS and m != "transformer"]
    if unknown_models:
        raise TrainingError(
            f"training.param_grids has unknown model(s) {unknown_models}; allowed: {list(CLASSICAL_MODELS)}"
        )
    raw = cfg.training.param_grids.get(name)
    if raw is None:
        raw = spec.default_space
    elif not raw:
        raise TrainingError(f"training.param_grids.{name} is empty; give at least one parameter")
    space: dict[str, list[Any]] = {}
    for param, values in raw.items():
        allowed_spec = spec.params.get(param)
        if allowed_spec is None:
            raise TrainingError(
                f"training.param_grids.{name}: unknown parameter {param!r}; allowed: {sorted(spec.params)}"
            )
        if not isinstance(values, list) or not values:
            raise TrainingError(
                f"training.param_grids.{name}.{param}: expected a non-empty list of values, got {values!r}"
            )
        checked = []
        for value in values:
            try:
                checked.append(allowed_spec.check(value))
            except (ValueError, TypeError):
                raise TrainingError(
                    f"training.param_grids.{name}.{param}: invalid value {value!r}; allowed: {allowed_spec.describe()}"
                ) from None
        space[param] = checked
    return space


def candidates(space: dict[str, list[Any]], cfg: SentinelConfig) -> list[dict[str, Any]]:
    """Parameter sets to try: the full grid, or ``n_iter`` distinct random draws from it."""
    grid = list(ParameterGrid(space))
    search = cfg.training.search
    if search.strategy == "grid" or search.n_iter >= len(grid):
        return grid
    return list(ParameterSampler(space, n_iter=search.n_iter, random_state=cfg.seed))


# --- input checks -------------------------------------------------------------------------------------------


def _min_rows_for_folds(folds: int) -> int:
    """Smallest class size for which every fold's training part keeps >= 2 rows (calibration, SMOTE)."""
    n = folds
    while n - math.ceil(n / folds) < 2:
        n += 1
    return n


def _check_frame(df: Any, what: str, cfg: SentinelConfig) -> tuple[list[str], np.ndarray]:
    check_labelled_frame(df, cfg, what, TrainingError)
    return [normalize_text(t) for t in df["text"]], df["label"].to_numpy(dtype=np.int64)


def check_training_data(y: np.ndarray, cfg: SentinelConfig) -> None:
    """Every class present, and enough rows per class for the fold count."""
    counts = class_counts(y, cfg.labels)
    absent = [name for name, n in counts.items() if n == 0]
    if absent:
        raise TrainingError(
            f"training data has no rows of class(es) {absent} (counts: {counts}); every configured label "
            f"{cfg.labels.names} must be present — check filtering, or change labels.names"
        )
    folds = cfg.training.search.cv_folds
    need = _min_rows_for_folds(folds)
    small = {name: n for name, n in counts.items() if n < need}
    if small:
        raise TrainingError(
            f"too few training rows per class for {folds}-fold cross-validation: {small}; each class needs at "
            f"least {need} (set training.search.cv_folds lower or add data)"
        )


# --- search and refit ---------------------------------------------------------------------------------------


@dataclass
class TrainResult:
    model_dir: Path | str
    best_params: dict[str, Any]
    cv_score: float
    val_metrics: dict[str, Any]
    train_seconds: float
    balance: dict[str, Any] = field(default_factory=dict)
    mlflow_run_id: str | None = None


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


def _fit(estimator: Any, X: Any, y: np.ndarray, sample_weight: np.ndarray | None) -> Any:
    with warnings.catch_warnings():
        # A capped iteration budget is part of the search space; the CV score judges the result.
        warnings.simplefilter("ignore", ConvergenceWarning)
        if sample_weight is None:
            return estimator.fit(X, y)
        return estimator.fit(X, y, sample_weight=sample_weight)


def cross_validation_folds(texts: list[str], y: np.ndarray, cfg: SentinelConfig) -> list[tuple[np.ndarray, np.ndarray]]:
    """Stratified k-fold splits that keep each near-duplicate group in one fold (the split stage's grouping).

    Without the groups, a held-out fold holds near-copies of its training rows (template variants), so the
    out-of-fold scores that rank candidates and tune the decision costs would be optimistic.
    """
    folds = cfg.training.search.cv_folds
    groups = row_groups(texts, cfg)
    splitter = StratifiedGroupKFold(n_splits=folds, shuffle=True, random_state=cfg.seed)
    try:
        splits = list(splitter.split(np.zeros(len(y)), y, groups))
    except ValueError as exc:  # fewer groups than folds
        raise TrainingError(
            f"cannot make {folds} grouped cross-validation folds from {len(set(groups))} near-duplicate groups "
            f"({exc}); lower training.search.cv_folds or add data"
        ) from exc
    need = 2  # as in _min_rows_for_folds: calibration and SMOTE need two rows of every class
    for k, (train_idx, _) in enumerate(splits):
        counts = class_counts(y[train_idx], cfg.labels)
        short = {name: n for name, n in counts.items() if n < need}
        if short:
            raise TrainingError(
                f"cross-validation fold {k}: its training part has too few rows of {short} (needs >= {need}) "
                f"because near-duplicate groups of that class are large; lower training.search.cv_folds, add data, "
                f"or raise split.near_duplicate_jaccard (now {cfg.split.near_duplicate_jaccard})"
            )
    return splits


def _calibration_folds(y: np.ndarray) -> int:
    return max(2, min(3, int(np.bincount(y)[np.bincount(y) > 0].min())))


def run_search(
    spec: ModelSpec,
    texts: list[str],
    y: np.ndarray,
    cfg: SentinelConfig,
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
    folds = cfg.training.search.cv_folds
    fold_splits = cross_validation_folds(texts, y, cfg)
    roles = cfg.labels.roles
    n_classes = cfg.labels.num_classes
    tuning_cfg = cfg.training.decision_tuning
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
            X_bal, y_bal, report = balance_features(X_fold, y[train_idx], cfg)
            weights = balanced_sample_weight(y_bal) if report.applied == "class_weight" else None
            ctx = BuildContext(cfg.seed, _calibration_folds(y_bal))
            fold_records.append(
                {
                    "fold": k,
                    "train_rows": len(train_idx),
                    "train_rows_after_balance": len(y_bal),
                    "validation_rows": len(val_idx),
                    "validation_counts": class_counts(y[val_idx], cfg.labels),
                    "balance": report.to_dict(),
                }
            )
            for i, params in enumerate(params_list):
                estimator = spec.build(params, ctx)
                t0 = time.perf_counter()
                _fit(estimator, X_bal, y_bal, weights)
                fit_times[i, k] = time.perf_counter() - t0
                proba = _class_probabilities(estimator, X_hold, n_classes)
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
        row: dict[str, Any] = {"candidate": i, "params": json.dumps(_jsonable(params), sort_keys=True)}
        row.update({f"param_{k}": json.dumps(_jsonable(v)) for k, v in params.items()})
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


def _decision_tuning(
    search: SearchResult, y_val: np.ndarray, val_proba: np.ndarray | None, cfg: SentinelConfig
) -> CostTuning | None:
    """The critical-error costs the artifact stores (None: tuning disabled, labels are argmax).

    Validation predictions of the refit model are preferred (``source`` 'auto'/'validation'): fold models see
    less data, are less sure of themselves, and on small data their out-of-fold predictions ask for costs too
    aggressive for the model that is actually served.
    """
    tuning_cfg = cfg.training.decision_tuning
    if not tuning_cfg.enabled:
        return None
    if tuning_cfg.source != "out_of_fold" and val_proba is not None and len(y_val):
        return tune_costs(y_val, val_proba, cfg.labels.roles, tuning_cfg.cost_grid, source="validation")
    return search.decision_tuning


def _class_probabilities(estimator: Any, X: Any, n_classes: int) -> np.ndarray:
    return probabilities_by_class_id(estimator.predict_proba(X), estimator.classes_, n_classes)


def _jsonable(value: Any) -> Any:
    if isinstance(value, tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, np.generic):
        return value.item()
    return value


def evaluate_predictions(y_true: np.ndarray, y_pred: np.ndarray, cfg: SentinelConfig) -> dict[str, Any]:
    """Validation metrics: custom score and its parts, macro F1, accuracy, per-class F1, confusion matrix."""
    from sklearn.metrics import confusion_matrix, f1_score

    n = cfg.labels.num_classes
    score = security_score(y_true, y_pred, cfg.labels.roles, n)
    per_class = f1_score(y_true, y_pred, labels=list(range(n)), average=None, zero_division=0)
    return {
        **score.as_dict(),
        "macro_f1": macro_f1(y_true, y_pred, n),
        "accuracy": float(np.mean(np.asarray(y_true) == np.asarray(y_pred))),
        "f1_per_class": {name: float(per_class[i]) for i, name in enumerate(cfg.labels.names)},
        "confusion_matrix": confusion_matrix(y_true, y_pred, labels=list(range(n))).tolist(),
        "rows": len(y_true),
    }


# --- the stage ----------------------------------------------------------------------------------------------


def _versions() -> dict[str, str]:
    import imblearn
    import sklearn
    import skops

    return {"scikit-learn": sklearn.__version__, "imbalanced-learn": imblearn.__version__, "skops": skops.__version__}


def train_classical(
    model_name: str,
    train_df: pd.DataFrame,
    val_df: pd.DataFrame | None,
    cfg: SentinelConfig,
    out_dir: str | Path,
    progress: bool = True,
    tracking_dir: str | Path | None = None,
) -> TrainResult:
    """Search, refit, validate and save one classical model; returns where it went and how it scored.

    ``out_dir`` (local or gs://) receives the model directory, written atomically. MLflow tracking goes to
    ``cfg.mlflow.tracking_uri`` or ``sqlite:///<tracking_dir>/mlflow.db`` (default: ``out_dir``'s parent).
    """
    started = time.perf_counter()
    out = str(out_dir)
    # --- validate everything before any work -----------------------------------------------------------------
    spec = model_spec(model_name)
    kind = cfg.featurizer.kind
    if spec.nonnegative_only and kind != "tfidf":
        # Naive Bayes models counts-like, non-negative features: it is a TF-IDF model by definition, so it keeps
        # TF-IDF whatever the shared featurizer is (the descriptor records what it really uses).
        log.info("%s needs non-negative features: using featurizer 'tfidf' instead of %r", model_name, kind)
        cfg = cfg.model_copy(update={"featurizer": cfg.featurizer.model_copy(update={"kind": "tfidf"})})
        kind = "tfidf"
    space = search_space(model_name, cfg)
    params_list = candidates(space, cfg)
    texts, y = _check_frame(train_df, "training data", cfg)
    check_training_data(y, cfg)
    tuning_cfg = cfg.training.decision_tuning
    if tuning_cfg.enabled and tuning_cfg.source == "validation" and val_df is None:
        raise TrainingError(
            "training.decision_tuning.source='validation' needs validation data; pass it or use source 'auto'"
        )
    try:
        check_sampling_targets(y, cfg)
    except ConfigError as exc:
        raise TrainingError(str(exc)) from exc
    val_texts: list[str] = []
    y_val = np.zeros(0, dtype=np.int64)
    if val_df is not None:
        val_texts, y_val = _check_frame(val_df, "validation data", cfg)
        absent = [name for name, n in class_counts(y_val, cfg.labels).items() if n == 0]
        if absent:
            log.warning("validation data has no rows of class(es) %s; their recall is reported as 0", absent)

    dense = spec.dense_only and is_sparse_kind(kind)

    def make_featurizer() -> Any:
        return build_featurizer(cfg.featurizer, seed=cfg.seed, dense=dense)

    train_sha = tracking.dataset_sha256(train_df)
    commit = tracking.git_commit()
    tags = {
        "model_type": model_name,
        "family": "sklearn",
        "featurizer": kind,
        "dataset_sha256": train_sha,
        "git_commit": commit,
    }
    run_dir = Path(tracking_dir) if tracking_dir else tracking.default_tracking_dir(out)
    with (
        tracking.start_run(cfg, f"{model_name}-{kind}", run_dir, tags) as run,
        featurization_session(
            cache=not is_sparse_kind(kind), progress=progress, disk_cache=embedding_cache_dir(cfg.inference)
        ),
        tempfile.TemporaryDirectory(prefix="sentinel-classical-") as staging,
    ):
        log.info("training %s on %d rows (%s features, %d candidates)", model_name, len(y), kind, len(params_list))
        search = run_search(spec, texts, y, cfg, make_featurizer, params_list, progress=progress)

        refit_started = time.perf_counter()
        featurizer = make_featurizer()
        X = featurizer.fit_transform(texts, y)
        X_bal, y_bal, report = balance_features(X, y, cfg)
        weights = balanced_sample_weight(y_bal) if report.applied == "class_weight" else None
        estimator = spec.build(search.best_params, BuildContext(cfg.seed, _calibration_folds(y_bal)))
        _fit(estimator, X_bal, y_bal, weights)
        pipeline = Pipeline([("features", featurizer), ("model", estimator)])
        refit_seconds = time.perf_counter() - refit_started

        val_proba = _class_probabilities(pipeline, val_texts, cfg.labels.num_classes) if val_df is not None else None
        tuning = _decision_tuning(search, y_val, val_proba, cfg)
        decision = tuning.apply(cfg.serving.decision) if tuning is not None else cfg.serving.decision
        if tuning is not None:
            log.info(
                "decision costs tuned on %s predictions: false alarm %.1f, missed threat %.1f "
                "(custom score %.4f with argmax, %.4f with the tuned rule)",
                tuning.source,
                decision.false_alarm_cost,
                decision.missed_threat_cost,
                tuning.argmax_custom_score,
                tuning.custom_score,
            )
        val_metrics: dict[str, Any] = {}
        if val_proba is not None:
            val_metrics = evaluate_predictions(y_val, assign_labels(val_proba, cfg.labels.roles, decision), cfg)
        train_seconds = time.perf_counter() - started

        best_params = _jsonable(search.best_params)
        training = {
            "model_type": model_name,
            "family": "sklearn",
            "featurizer": {
                **cfg.featurizer.model_dump(mode="json"),
                "dense_reduction": (
                    f"TruncatedSVD({cfg.featurizer.svd_components}) after TF-IDF for a dense-only estimator"
                    if dense
                    else None
                ),
            },
            "train_seconds": train_seconds,
            "search_seconds": search.seconds,
            "refit_seconds": refit_seconds,
            "dataset": {
                "train_sha256": train_sha,
                "train_rows": len(y),
                "validation_sha256": tracking.dataset_sha256(val_df) if val_df is not None else None,
                "validation_rows": len(y_val),
            },
            "class_counts": {
                "train_before_balance": report.counts_before,
                "train_after_balance": report.counts_after,
                "validation": class_counts(y_val, cfg.labels) if val_df is not None else None,
            },
            "balance": report.to_dict(),
            "search": {
                "strategy": cfg.training.search.strategy,
                "space": _jsonable(space),
                "candidates": len(params_list),
                "cv_folds": cfg.training.search.cv_folds,
                "cv_grouping": {
                    "near_duplicate_jaccard": cfg.split.near_duplicate_jaccard,
                    "shingle_words": cfg.split.shingle_words,
                },
                "scoring": "custom_score",
                "best_params": best_params,
                "best_cv_custom_score": search.best_score,
                "best_cv_custom_score_std": search.best_std,
                "folds": search.folds,
            },
            "decision_tuning": tuning.as_dict() if tuning else None,
            "validation": val_metrics,
            "seed": cfg.seed,
            "git_commit": commit,
            "versions": _versions(),
            "config": json.loads(cfg.model_dump_json()),
        }
        descriptor = ModelDescriptor(
            family="sklearn",
            model_type=model_name,
            labels=cfg.labels,
            decision=decision,
            featurizer=kind,
            max_length=cfg.featurizer.embedding_max_length if kind != "tfidf" else None,
            params={**best_params, **onnx_parity_params(pipeline, texts, val_texts, val_proba, decision, cfg)},
        )
        local_model = _write_artifact(out, pipeline, descriptor, best_params, search.table, training, Path(staging))
        model_dir = out if storage.is_gcs(out) else Path(out)

        run_id = None
        if run is not None:
            run_id = run.info.run_id
            tracking.log_params(
                {
                    "model_type": model_name,
                    "featurizer": kind,
                    "balance_method": cfg.balance.method,
                    "balance_applied": report.applied,
                    "search_strategy": cfg.training.search.strategy,
                    "cv_folds": cfg.training.search.cv_folds,
                    "candidates": len(params_list),
                    "seed": cfg.seed,
                    "train_rows": len(y),
                }
            )
            tracking.log_params(best_params, prefix="best.")
            tracking.log_metrics(
                {
                    "cv_custom_score": search.best_score,
                    "cv_custom_score_std": search.best_std,
                    "cv_decision_custom_score": (
                        search.decision_tuning.custom_score if search.decision_tuning else search.best_score
                    ),
                    "decision_tuning_custom_score": tuning.custom_score if tuning else search.best_score,
                    "false_alarm_cost": decision.false_alarm_cost,
                    "missed_threat_cost": decision.missed_threat_cost,
                    "train_seconds": train_seconds,
                }
            )
            tracking.log_metrics({k: v for k, v in val_metrics.items() if k != "confusion_matrix"}, prefix="val_")
            tracking.log_artifact_dir(local_model, artifact_path="model")

    return TrainResult(
        model_dir=model_dir,
        best_params=best_params,
        cv_score=search.best_score,
        val_metrics=val_metrics,
        train_seconds=train_seconds,
        balance=report.to_dict(),
        mlflow_run_id=run_id,
    )


def _write_artifact(
    out: str,
    pipeline: Pipeline,
    descriptor: ModelDescriptor,
    params: Mapping[str, Any],
    cv_table: pd.DataFrame,
    training: dict[str, Any],
    staging: Path,
) -> Path:
    """Write the model directory atomically (local) or stage it in ``staging`` and upload it (gs://); returns a
    local copy (``out`` itself, or ``staging``)."""

    def fill(directory: Path) -> None:
        cv_table.to_csv(directory / "cv_results.csv", index=False)
        # the manifest is written last by save_sklearn_artifact and covers cv_results.csv too
        save_sklearn_artifact(
            pipeline, directory, descriptor, extra_json={"params.json": dict(params), "training.json": training}
        )

    return storage.publish_directory(out, fill, last=(MANIFEST_NAME,), staging=staging)
