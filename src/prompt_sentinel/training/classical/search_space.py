"""Hyperparameter search spaces of the classical models: constraints declared as data, one validator.

Every searchable hyperparameter is declared once, below, as scikit-learn parameter constraints — the same
``Interval`` / ``StrOptions`` objects scikit-learn's estimators declare in their ``_parameter_constraints`` — and
every value of a configured grid (``training.param_grids.<model>``) goes through scikit-learn's own validator,
so a bad grid fails before any training with one message shape: the model, the parameter, the value and what is
allowed. The built-in spaces (:data:`DEFAULT_SPACES`) are validated the same way.

The Optuna ranges (:data:`OPTUNA_SPACES`, overridden by ``training.search.optuna.ranges``) sit next to them as
data: every bound and choice goes through the same validator, and whether a numeric range is drawn as an int
follows the declared constraint (an ``Integral`` interval).
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
from prompt_sentinel.training.search_ranges import Range, choices, numeric, parse_range

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

# Optuna's view of the same hyperparameters: ranges instead of grids (log scale where a factor matters more than
# a difference). Int or float follows SEARCHABLE.
OPTUNA_SPACES: dict[str, dict[str, Range]] = {
    "logreg": {"C": numeric(0.01, 100.0, log=True)},
    "linear_svm": {"C": numeric(0.005, 10.0, log=True), "calibration": choices("sigmoid", "isotonic")},
    "random_forest": {
        "n_estimators": numeric(100, 500, log=True),
        "max_depth": choices(None, 30, 60),
        "min_samples_leaf": numeric(1, 4),
        "max_features": choices("sqrt", "log2"),
    },
    "hist_gb": {
        "learning_rate": numeric(0.02, 0.3, log=True),
        "max_iter": numeric(100, 400, log=True),
        "max_leaf_nodes": numeric(8, 63, log=True),
        "l2_regularization": numeric(0.0, 2.0),
    },
    "complement_nb": {"alpha": numeric(0.003, 3.0, log=True), "norm": choices(False, True)},
    "mlp": {
        "hidden_layer_sizes": choices((128,), (256,), (256, 64)),
        "alpha": numeric(1e-5, 1e-1, log=True),
        "learning_rate_init": numeric(3e-4, 1e-2, log=True),
    },
}
assert set(OPTUNA_SPACES) == set(CLASSICAL_MODELS), "every classical model needs an Optuna space"


def _allowed(error: InvalidParameterError, hyperparameter: Hyperparameter) -> str:
    """What scikit-learn says is allowed ("a float in the range (0.0, inf)"), from its message."""
    message = str(error)
    start, end = message.find(" must be "), message.rfind(". Got ")
    return message[start + len(" must be ") : end] if 0 <= start < end else hyperparameter.describe()


def check_value(model: str, name: str, hyperparameter: Hyperparameter, value: Any, where: str | None = None) -> Any:
    """``value`` in the form the estimator takes, or :class:`TrainingError` naming model, parameter, value, allowed.

    ``where`` names the config field in the message (default ``training.param_grids.<model>.<name>``).
    """
    where = where or f"training.param_grids.{model}.{name}"
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


def is_integer(hyperparameter: Hyperparameter) -> bool:
    """Whether a numeric range of this hyperparameter is drawn as an int (its declared interval is ``Integral``)."""
    return any(isinstance(c, Interval) and c.type is Integral for c in hyperparameter.constraints)


def optuna_space(model: str, search: SearchConfig) -> dict[str, Range]:
    """The validated Optuna space of ``model``: ``search.optuna.ranges[model]`` or :data:`OPTUNA_SPACES`.

    Every bound and choice is checked against the declared constraints (so ``C: {low: 0, high: 1}`` fails: C must
    be > 0), ranges must not be empty or inverted, and int parameters need whole-number bounds — all before any
    trial. A configured space replaces the built-in one entirely (unlisted hyperparameters keep their defaults).
    """
    if model not in SEARCHABLE:
        raise TrainingError(f"unknown classical model {model!r}; allowed: {list(CLASSICAL_MODELS)}")
    configured = search.optuna.ranges
    unknown_models = [m for m in configured if m not in SEARCHABLE and m != "transformer"]
    if unknown_models:
        raise TrainingError(
            f"training.search.optuna.ranges has unknown model(s) {unknown_models}; allowed: "
            f"{[*CLASSICAL_MODELS, 'transformer']}"
        )
    declared = SEARCHABLE[model]
    if model in configured:
        if not configured[model]:
            raise TrainingError(f"training.search.optuna.ranges.{model} is empty; give at least one parameter")
        raw = {
            name: parse_range(spec, f"training.search.optuna.ranges.{model}.{name}")
            for name, spec in configured[model].items()
        }
    else:
        raw = OPTUNA_SPACES[model]
    space: dict[str, Range] = {}
    for name, rng in raw.items():
        where = f"training.search.optuna.ranges.{model}.{name}"
        if name not in declared:
            raise TrainingError(f"{where}: unknown parameter {name!r}; allowed: {sorted(declared)}")
        hyperparameter = declared[name]
        if rng.categorical:
            checked = tuple(check_value(model, name, hyperparameter, v, where) for v in rng.choices or ())
            space[name] = Range(choices=checked)
            continue
        if hyperparameter.sequence or not any(isinstance(c, Interval) for c in hyperparameter.constraints):
            raise TrainingError(f"{where}: {name} takes {hyperparameter.describe()}; give it as {{choices: [...]}}")
        integer = is_integer(hyperparameter)
        for bound in (rng.low, rng.high):
            if integer and float(bound) != int(bound):
                raise TrainingError(f"{where}: {name} is an integer; got the bound {bound!r}")
            check_value(model, name, hyperparameter, int(bound) if integer else float(bound), where)
        space[name] = rng
    return space
