"""One factory per classical model: hyperparameters in, an unfitted scikit-learn estimator out.

Hyperparameters arrive validated (:mod:`prompt_sentinel.training.classical.search_space`); unlisted ones keep
the defaults below. ``dense_only`` models get TF-IDF reduced by SVD; ``nonnegative_only`` (naive Bayes) always
uses TF-IDF, whatever the shared featurizer is.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from prompt_sentinel.config import CLASSICAL_MODELS
from prompt_sentinel.errors import TrainingError


@dataclass(frozen=True)
class BuildContext:
    """What estimator factories need beyond the hyperparameters."""

    seed: int
    calibration_folds: int = 3


@dataclass(frozen=True)
class ModelSpec:
    name: str
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
    "logreg": ModelSpec("logreg", _logreg),
    "linear_svm": ModelSpec("linear_svm", _linear_svm),
    "random_forest": ModelSpec("random_forest", _random_forest),
    "hist_gb": ModelSpec("hist_gb", _hist_gb, dense_only=True),
    "complement_nb": ModelSpec("complement_nb", _complement_nb, nonnegative_only=True),
    "mlp": ModelSpec("mlp", _mlp, dense_only=True),
}
assert set(MODEL_SPECS) == set(CLASSICAL_MODELS), "every configured classical model needs a spec"


def model_spec(name: str) -> ModelSpec:
    if name not in MODEL_SPECS:
        raise TrainingError(f"unknown classical model {name!r}; allowed: {list(CLASSICAL_MODELS)}")
    return MODEL_SPECS[name]
