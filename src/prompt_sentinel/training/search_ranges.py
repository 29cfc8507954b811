"""Optuna search ranges declared as data: one :class:`Range` per searchable hyperparameter.

A range is either numeric (``low``..``high``, optionally log-uniform, optionally stepped) or a list of
``choices``. Whether a numeric range is drawn as an int or a float is not declared here: it follows the
hyperparameter's own declared constraints (an ``Integral`` scikit-learn interval, an ``int`` config field), so
the two declarations cannot disagree. :func:`parse_range` turns a configured ``{low, high, log}`` /
``{choices: [...]}`` mapping into a :class:`Range`, refusing empty or inverted ranges with a message naming the
field; the caller checks each bound / choice against the hyperparameter's constraints.

The same ranges render Katib ``parameters`` (:meth:`Range.katib_parameter`), so a cluster search and a local
Optuna study search the same space.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from prompt_sentinel.errors import TrainingError

RANGE_KEYS = {"low", "high", "log", "step"}


@dataclass(frozen=True)
class Range:
    """One hyperparameter's search range: numeric (``low``/``high``/``log``/``step``) or ``choices``."""

    low: float | None = None
    high: float | None = None
    log: bool = False
    step: float | None = None
    choices: tuple[Any, ...] | None = None

    @property
    def categorical(self) -> bool:
        return self.choices is not None

    def describe(self) -> str:
        if self.choices is not None:
            return f"one of {list(self.choices)}"
        scale = ", log scale" if self.log else ""
        step = f", step {self.step:g}" if self.step else ""
        return f"[{self.low:g}, {self.high:g}]{scale}{step}"

    def suggest(self, trial: Any, name: str, integer: bool) -> Any:
        """Draw the value of ``name`` for an Optuna ``trial``."""
        if self.choices is not None:
            # Optuna stores categorical choices as JSON-able scalars; lists (hidden layer sizes) go as JSON text
            encoded = [json.dumps(c) if isinstance(c, list | tuple) else c for c in self.choices]
            picked = trial.suggest_categorical(name, encoded)
            return self.choices[encoded.index(picked)]
        if integer:
            return trial.suggest_int(name, int(self.low), int(self.high), log=self.log, step=int(self.step or 1))
        return trial.suggest_float(name, float(self.low), float(self.high), log=self.log, step=self.step)

    def katib_parameter(self, name: str, integer: bool) -> dict[str, Any]:
        """This range as a Katib ``ParameterSpec`` (feasible-space bounds are strings in Katib's API)."""
        if self.choices is not None:
            return {
                "name": name,
                "parameterType": "categorical",
                "feasibleSpace": {"list": [katib_value(c) for c in self.choices]},
            }
        space: dict[str, Any] = {
            "min": katib_value(int(self.low) if integer else float(self.low)),
            "max": katib_value(int(self.high) if integer else float(self.high)),
            "distribution": "logUniform" if self.log else "uniform",
        }
        if self.step:
            space["step"] = katib_value(self.step)
        return {"name": name, "parameterType": "int" if integer else "double", "feasibleSpace": space}


def katib_value(value: Any) -> str:
    """A value as Katib passes it to a trial: a plain string (JSON for lists / None / booleans)."""
    if isinstance(value, str):
        return value
    if isinstance(value, float):
        # positional, never 1e-05: YAML 1.1 readers would take the exponent form for a string, 1.2 for a float
        return np.format_float_positional(value, trim="0")
    return json.dumps(value)


def numeric(low: float, high: float, log: bool = False, step: float | None = None) -> Range:
    return Range(low=low, high=high, log=log, step=step)


def choices(*values: Any) -> Range:
    return Range(choices=tuple(values))


def parse_range(raw: Any, where: str) -> Range:
    """A configured range (``{low, high[, log][, step]}`` or ``{choices: [...]}``), structurally checked.

    Raises :class:`TrainingError` naming ``where`` for anything else, an empty choice list, a missing or
    non-numeric bound, ``low >= high`` (empty or inverted), a log range not above 0, or a non-positive step.
    """
    if not isinstance(raw, dict):
        raise TrainingError(f"{where}: expected {{low, high, log}} or {{choices: [...]}}, got {raw!r}")
    if "choices" in raw:
        extra = set(raw) - {"choices"}
        if extra:
            raise TrainingError(f"{where}: 'choices' cannot be combined with {sorted(extra)}")
        values = raw["choices"]
        if not isinstance(values, list) or not values:
            raise TrainingError(f"{where}.choices: expected a non-empty list, got {values!r}")
        return Range(choices=tuple(tuple(v) if isinstance(v, list) else v for v in values))
    unknown = set(raw) - RANGE_KEYS
    if unknown:
        raise TrainingError(f"{where}: unknown key(s) {sorted(unknown)}; allowed: {sorted(RANGE_KEYS)} or 'choices'")
    bounds = {}
    for key in ("low", "high"):
        value = raw.get(key)
        if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
            raise TrainingError(f"{where}.{key}: expected a finite number, got {value!r}")
        bounds[key] = value
    low, high = bounds["low"], bounds["high"]
    if not low < high:
        raise TrainingError(
            f"{where}: empty or inverted range: low={low!r} must be below high={high!r}; for a fixed value use "
            f"{{choices: [{low!r}]}}"
        )
    log = raw.get("log", False)
    if not isinstance(log, bool):
        raise TrainingError(f"{where}.log: expected true or false, got {log!r}")
    if log and low <= 0:
        raise TrainingError(f"{where}: a log-scale range needs low > 0, got low={low!r}")
    step = raw.get("step")
    if step is not None and (isinstance(step, bool) or not isinstance(step, int | float) or not step > 0):
        raise TrainingError(f"{where}.step: expected a number > 0, got {step!r}")
    if step is not None and log:
        raise TrainingError(f"{where}: 'step' and 'log' cannot be combined (Optuna draws a log range continuously)")
    return Range(low=low, high=high, log=log, step=step)


def space_fingerprint(space: dict[str, Range]) -> str:
    """A stable text of a space: a stored study is resumed only by a search over the same space."""
    return json.dumps(
        {name: [r.low, r.high, r.log, r.step, list(r.choices) if r.choices else None] for name, r in space.items()},
        sort_keys=True,
        default=str,
    )
