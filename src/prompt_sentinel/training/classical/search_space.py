"""Hyperparameter search spaces of the classical models: constraints declared as data, one validator.

Every searchable hyperparameter is declared once, below, as scikit-learn parameter constraints — the same
``Interval`` / ``StrOptions`` objects scikit-learn's estimators declare in their ``_parameter_constraints`` — and
every value of a configured grid (``training.param_grids.<model>``) goes through scikit-learn's own validator,
so a bad grid fails before any training with one message shape: the model, the parameter, the value and what is
allowed. The built-in spaces (:data:`DEFAULT_SPACES`) are validated the same way.
"""

from __future__ import annotations

from dataclasses import dataclass
from numbers import Integral, Real
from typing import Any

from sklearn.model_selection import ParameterGrid, ParameterSampler
from sklearn.utils._param_validation import (
    Interval,
    InvalidParameterError,
    StrOptions,
    validate_parameter_constraints,
)

from prompt_sentinel.config import CLASSICAL_MODELS, SearchConfig, TrainingConfig
from prompt_sentinel.errors import TrainingError

POSITIVE = Interval(Real, 0, None, closed="neither")
NON_NEGATIVE = Interval(Real, 0, None, closed="left")
FRACTION = Interval(Real, 0, 1, closed="right")
COUNT = Interval(Integral, 1, None, closed="left")


@dataclass(frozen=True)
class Hyperparameter:
    """scikit-learn constraints of one hyperparameter; ``sequence``: a non-empty list, each element constrained."""

    constraints: tuple[Any, ...]
    sequence: bool = False

    def describe(self) -> str:
        shown = " or ".join("None" if c is None else str(c) for c in self.constraints)
        return f"a non-empty list, each element {shown}" if self.sequence else shown


def _h(*constraints: Any, sequence: bool = False) -> Hyperparameter:
    return Hyperparameter(tuple(constraints), sequence)


SEARCHABLE: dict[str, dict[str, Hyperparameter]] = {
    "logreg": {"C": _h(POSITIVE), "max_iter": _h(COUNT)},
    "linear_svm": {"C": _h(POSITIVE), "max_iter": _h(COUNT), "calibration": _h(StrOptions({"sigmoid", "isotonic"}))},
    "random_forest": {
        "n_estimators": _h(COUNT),
        "max_depth": _h(COUNT, None),
        "min_samples_leaf": _h(COUNT),
        "max_features": _h(StrOptions({"sqrt", "log2"})),
    },
    "hist_gb": {
        "learning_rate": _h(FRACTION),
        "max_iter": _h(COUNT),
        "max_leaf_nodes": _h(Interval(Integral, 2, None, closed="left")),
        "l2_regularization": _h(NON_NEGATIVE),
    },
    "complement_nb": {"alpha": _h(POSITIVE), "norm": _h("boolean")},
    "mlp": {
        "hidden_layer_sizes": _h(COUNT, sequence=True),
        "alpha": _h(NON_NEGATIVE),
        "learning_rate_init": _h(POSITIVE),
        "max_iter": _h(COUNT),
    },
}

DEFAULT_SPACES: dict[str, dict[str, list[Any]]] = {
    "logreg": {"C": [0.5, 1.0, 2.0, 5.0, 10.0, 20.0, 50.0]},
    "linear_svm": {"C": [0.05, 0.1, 0.2, 0.5, 1.0, 2.0], "calibration": ["sigmoid"]},
    "random_forest": {
        "n_estimators": [300],
        "max_depth": [None, 60],
        "min_samples_leaf": [1, 2],
        "max_features": ["sqrt"],
    },
    "hist_gb": {
        "learning_rate": [0.05, 0.1, 0.2],
        "max_iter": [150, 300],
        "max_leaf_nodes": [15, 31],
        "l2_regularization": [0.0, 1.0],
    },
    "complement_nb": {"alpha": [0.01, 0.03, 0.1, 0.3, 1.0], "norm": [False, True]},
    "mlp": {"hidden_layer_sizes": [[128], [256]], "alpha": [1e-4, 1e-3, 1e-2], "learning_rate_init": [1e-3, 3e-3]},
}
assert set(SEARCHABLE) == set(DEFAULT_SPACES) == set(CLASSICAL_MODELS), "every classical model needs a search space"


def _allowed(error: InvalidParameterError, hyperparameter: Hyperparameter) -> str:
    """What scikit-learn says is allowed ("a float in the range (0.0, inf)"), from its message."""
    message = str(error)
    start, end = message.find(" must be "), message.rfind(". Got ")
    return message[start + len(" must be ") : end] if 0 <= start < end else hyperparameter.describe()


def check_value(model: str, name: str, hyperparameter: Hyperparameter, value: Any) -> Any:
    """``value`` in the form the estimator takes, or :class:`TrainingError` naming model, parameter, value, allowed."""
    where = f"training.param_grids.{model}.{name}"
    if hyperparameter.sequence and isinstance(value, int) and not isinstance(value, bool):
        value = [value]  # one hidden layer: 128 means [128], as scikit-learn reads it
    elements = value if hyperparameter.sequence else [value]
    if hyperparameter.sequence and (not isinstance(value, list | tuple) or not value):
        raise TrainingError(f"{where}: invalid value {value!r}; allowed: {hyperparameter.describe()}")
    for element in elements:
        if isinstance(element, bool) and "boolean" not in hyperparameter.constraints:
            # bool is an int to Python; as a learning rate or a count it is always a mistake
            raise TrainingError(f"{where}: invalid value {value!r}; allowed: {hyperparameter.describe()}")
        try:
            validate_parameter_constraints({name: list(hyperparameter.constraints)}, {name: element}, where)
        except InvalidParameterError as exc:
            raise TrainingError(f"{where}: invalid value {value!r}; allowed: {_allowed(exc, hyperparameter)}") from None
    return tuple(value) if hyperparameter.sequence else value


def search_space(model: str, training: TrainingConfig) -> dict[str, list[Any]]:
    """The validated search space for ``model``: ``training.param_grids[model]`` or the built-in one.

    A configured grid replaces the built-in space entirely (unlisted hyperparameters keep their defaults).
    """
    if model not in SEARCHABLE:
        raise TrainingError(f"unknown classical model {model!r}; allowed: {list(CLASSICAL_MODELS)}")
    unknown_models = [m for m in training.param_grids if m not in SEARCHABLE and m != "transformer"]
    if unknown_models:
        raise TrainingError(
            f"training.param_grids has unknown model(s) {unknown_models}; allowed: {list(CLASSICAL_MODELS)}"
        )
    raw = training.param_grids.get(model)
    if raw is None:
        raw = DEFAULT_SPACES[model]
    elif not raw:
        raise TrainingError(f"training.param_grids.{model} is empty; give at least one parameter")
    declared = SEARCHABLE[model]
    space: dict[str, list[Any]] = {}
    for name, values in raw.items():
        if name not in declared:
            raise TrainingError(
                f"training.param_grids.{model}: unknown parameter {name!r}; allowed: {sorted(declared)}"
            )
        if not isinstance(values, list) or not values:
            raise TrainingError(
                f"training.param_grids.{model}.{name}: expected a non-empty list of values, got {values!r}"
            )
        space[name] = [check_value(model, name, declared[name], value) for value in values]
    return space


def candidates(space: dict[str, list[Any]], search: SearchConfig, seed: int) -> list[dict[str, Any]]:
    """Parameter sets to try: the full grid, or ``search.n_iter`` distinct random draws from it."""
    grid = list(ParameterGrid(space))
    if search.strategy == "grid" or search.n_iter >= len(grid):
        return grid
    return list(ParameterSampler(space, n_iter=search.n_iter, random_state=seed))
