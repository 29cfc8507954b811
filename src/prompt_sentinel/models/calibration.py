"""Post-hoc probability calibrators stored with a model and applied on its one prediction path.

A calibrated artifact names its method in the descriptor (``calibration``) and holds the fitted parameters in
``calibration.json`` (plain numbers: nothing is deserialized but JSON, and ``checksums.json`` covers it).
:class:`~prompt_sentinel.models.base.SentinelModel` loads it with the model and applies it inside
``predict_proba`` — so evaluation, the MLflow pyfunc, ensembles (each member its own) and the KServe predictor
all serve the same calibrated probabilities, and the decision rule's tuned costs were tuned on them.

* ``temperature`` — ``softmax(log p / T)``: the transformer's logits divided by T (equal to the softmax of the
  logits over T, since log-softmax differs from the logits by a per-row constant); argmax unchanged;
* ``sigmoid`` — per class, Platt scaling of the class's logit: ``σ(a_k · logit(p_k) + b_k)``, rows renormalized;
* ``isotonic`` — per class, a monotone step function of ``p_k`` (its thresholds), rows renormalized.

Fitting lives in :mod:`prompt_sentinel.training.calibration`.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from prompt_sentinel.errors import ModelFormatError
from prompt_sentinel.run_layout import CALIBRATION

METHODS = ("temperature", "sigmoid", "isotonic")
EPS = 1e-7


def _renormalize(q: np.ndarray) -> np.ndarray:
    q = np.clip(q, EPS, None)
    return q / q.sum(axis=1, keepdims=True)


def logit(p: np.ndarray) -> np.ndarray:
    p = np.clip(p, EPS, 1 - EPS)
    return np.log(p) - np.log1p(-p)


@dataclass(frozen=True)
class Calibrator:
    """A fitted calibrator: ``method`` and its parameters (see the module docstring)."""

    method: str
    params: dict[str, Any] = field(default_factory=dict)

    def apply(self, proba: np.ndarray) -> np.ndarray:
        """Calibrated probabilities of ``proba`` (n, K); rows sum to 1."""
        p = np.asarray(proba, dtype=np.float64)
        if p.size == 0:
            return p
        if self.method == "temperature":
            logits = np.log(np.clip(p, 1e-12, None)) / float(self.params["temperature"])
            logits -= logits.max(axis=1, keepdims=True)
            q = np.exp(logits)
            return q / q.sum(axis=1, keepdims=True)
        if self.method == "sigmoid":
            a = np.asarray(self.params["slopes"], dtype=np.float64)
            b = np.asarray(self.params["intercepts"], dtype=np.float64)
            return _renormalize(1.0 / (1.0 + np.exp(-(logit(p) * a + b))))
        if self.method == "isotonic":
            q = np.column_stack(
                [
                    np.interp(p[:, k], np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64))
                    for k, (x, y) in enumerate(zip(self.params["x"], self.params["y"], strict=True))
                ]
            )
            return _renormalize(q)
        raise ModelFormatError(f"unknown calibration method {self.method!r}; allowed: {list(METHODS)}")

    def to_dict(self) -> dict[str, Any]:
        return {"method": self.method, "params": self.params}

    def write(self, directory: str | Path) -> Path:
        path = Path(directory) / CALIBRATION
        path.write_text(json.dumps(self.to_dict(), indent=1))
        return path


def calibrator_from_dict(data: Any, n_classes: int, where: str) -> Calibrator:
    """Check a stored calibrator's shape (method known, parameters finite, one entry per class)."""
    if not isinstance(data, dict) or data.get("method") not in METHODS or not isinstance(data.get("params"), dict):
        raise ModelFormatError(f"{where}: expected {{method: one of {list(METHODS)}, params: {{...}}}}")
    method, params = data["method"], data["params"]

    def finite(values: Any, name: str, length: int | None = None) -> None:
        arr = np.asarray(values, dtype=np.float64) if isinstance(values, list) else None
        if arr is None or not np.isfinite(arr).all() or (length is not None and len(arr) != length):
            raise ModelFormatError(f"{where}: params.{name} must be a list of {length or 'some'} finite numbers")

    if method == "temperature":
        t = params.get("temperature")
        if not isinstance(t, int | float) or isinstance(t, bool) or not math.isfinite(t) or t <= 0:
            raise ModelFormatError(f"{where}: params.temperature must be a number > 0, got {t!r}")
    elif method == "sigmoid":
        finite(params.get("slopes"), "slopes", n_classes)
        finite(params.get("intercepts"), "intercepts", n_classes)
    else:
        xs, ys = params.get("x"), params.get("y")
        if not isinstance(xs, list) or not isinstance(ys, list) or len(xs) != n_classes or len(ys) != n_classes:
            raise ModelFormatError(f"{where}: params.x and params.y need one threshold list per class ({n_classes})")
        for k, (x, y) in enumerate(zip(xs, ys, strict=True)):
            finite(x, f"x[{k}]")
            finite(y, f"y[{k}]", len(x))
            if len(x) == 0 or np.any(np.diff(np.asarray(x, dtype=np.float64)) < 0):
                raise ModelFormatError(f"{where}: params.x[{k}] must be non-empty and increasing")
    return Calibrator(method, params)


def load_calibrator(directory: str | Path, method: str | None, n_classes: int) -> Calibrator | None:
    """The calibrator a descriptor names (``method``), read from ``calibration.json``; None when uncalibrated."""
    if method is None:
        return None
    path = Path(directory) / CALIBRATION
    if not path.is_file():
        raise ModelFormatError(f"{directory}: the descriptor names calibration {method!r} but {CALIBRATION} is missing")
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ModelFormatError(f"{path}: not readable JSON ({exc})") from exc
    calibrator = calibrator_from_dict(data, n_classes, str(path))
    if calibrator.method != method:
        raise ModelFormatError(f"{path}: holds {calibrator.method!r}, but the descriptor names {method!r}")
    return calibrator
