"""One Katib trial: train with the parameters Katib assigned and print the objective for its metrics collector.

``sentinel hpo trial --model M --data TRAIN --val VAL --param name=value ...`` (what the rendered Katib trial
template runs, in the pipeline image) trains exactly as the local search does — a scikit-learn model with the
assigned values as its single candidate, or a transformer fine-tune (:func:`~prompt_sentinel.training.
transformer.hpo.fit_trial`) — and prints its metrics to stdout, one per line, in the format Katib's ``StdOut``
metrics collector parses with its default filter ``([\\w|-]+)\\s*=\\s*((-?\\d+)(\\.\\d+)?)``::

    validation_custom_score=0.812345

Fixed-point decimals (the collector's filter has no exponent), names from :data:`REPORTED_METRICS`. A
transformer also prints ``validation_custom_score`` after every evaluation (intermediate values); the last line
is the trial's result, which the Experiment reads with the ``latest`` metric strategy.
"""

from __future__ import annotations

import json
import re
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pandas as pd
import yaml

from prompt_sentinel.config import CLASSICAL_MODELS, SentinelConfig
from prompt_sentinel.errors import ConfigError, TrainingError

OBJECTIVE_METRIC = "validation_custom_score"
# Every metric a trial prints: a Katib objective or additional metric must be one of these.
REPORTED_METRICS = (
    OBJECTIVE_METRIC,
    "validation_custom_score_argmax",
    "validation_macro_f1",
    "validation_recall_c2",
    "validation_false_alarm_rate",
)
# Katib's StdOut collector default filter (pkg/metricscollector/v1beta1/common/const.go), set explicitly in the
# Experiment so a change of default cannot break the contract.
KATIB_METRIC_FILTER = r"([\w|-]+)\s*=\s*((-?\d+)(\.\d+)?)"


def metric_line(name: str, value: float) -> str:
    """``name=0.123456``: one metric as the collector reads it."""
    if name not in REPORTED_METRICS:
        raise ValueError(f"{name!r} is not a reported metric {REPORTED_METRICS}")
    return f"{name}={float(value):.6f}"


def parse_metric_lines(text: str) -> dict[str, list[float]]:
    """What Katib's StdOut collector would collect from ``text`` (reported names only), in order."""
    found: dict[str, list[float]] = {}
    for line in text.splitlines():
        match = re.search(KATIB_METRIC_FILTER, line)
        if match and match.group(1) in REPORTED_METRICS:
            found.setdefault(match.group(1), []).append(float(match.group(2)))
    return found


def parse_params(pairs: list[str]) -> dict[str, Any]:
    """``name=value`` strings (values as Katib substitutes them: YAML scalars / JSON lists) → a dict."""
    params: dict[str, Any] = {}
    for pair in pairs:
        if "=" not in pair:
            raise ConfigError(f"--param {pair!r} must look like name=value")
        name, raw = pair.split("=", 1)
        try:
            value = yaml.safe_load(raw) if raw.strip() else None
        except yaml.YAMLError as exc:
            raise ConfigError(f"--param {pair!r}: value is not a scalar or list ({exc})") from exc
        params[name.strip()] = tuple(value) if isinstance(value, list) else value
    return params


def _classical_config(model: str, cfg: SentinelConfig, params: dict[str, Any]) -> SentinelConfig:
    """``cfg`` whose grid for ``model`` is the single assigned candidate (validated by the declared constraints)."""
    from prompt_sentinel.training.classical.search_space import SEARCHABLE, check_value

    declared = SEARCHABLE[model]
    grid = {}
    for name, value in params.items():
        if name not in declared:
            raise TrainingError(f"--param {name}: unknown parameter of {model}; allowed: {sorted(declared)}")
        checked = check_value(model, name, declared[name], value, where=f"--param {name}")
        grid[name] = [list(checked) if isinstance(checked, tuple) else checked]
    training = cfg.training.model_copy(
        update={
            "param_grids": {**cfg.training.param_grids, model: grid},
            "search": cfg.training.search.model_copy(update={"strategy": "grid"}),
        }
    )
    # the trial's artifact is thrown away after scoring: no ONNX export or parity gate for it
    inference = cfg.inference.model_copy(update={"export_onnx": False})
    return cfg.model_copy(update={"training": training, "inference": inference})


def run_trial(
    model: str,
    train: pd.DataFrame,
    validation: pd.DataFrame,
    cfg: SentinelConfig,
    params: dict[str, Any],
    *,
    base_model: str | None = None,
    echo: Callable[[str], None] = print,
) -> dict[str, float]:
    """Train ``model`` with ``params`` and ``echo`` its metric lines (the objective last); returns the metrics."""
    if model in CLASSICAL_MODELS:
        from prompt_sentinel.training.base import TrainingContext, train_model
        from prompt_sentinel.training.classical.search import ClassicalSettings
        from prompt_sentinel.training.classical.trainer import ClassicalTrainer

        trial_cfg = _classical_config(model, cfg, params)
        with tempfile.TemporaryDirectory(prefix="sentinel-katib-trial-") as tmp:
            result = train_model(
                ClassicalTrainer(model, ClassicalSettings.from_config(trial_cfg)),
                train,
                validation,
                TrainingContext.from_config(trial_cfg),
                Path(tmp) / model,
                progress=False,
                tracking_dir=tmp,
            )
        metrics = result.validation_metrics
        final = float(metrics["custom_score"])  # under the tuned rule the model will serve
        argmax = float((result.decision_tuning or {}).get("argmax_custom_score", final))
    elif model == "transformer":
        from prompt_sentinel.training.transformer.hpo import fit_trial

        def intermediate(entry: dict[str, Any]) -> None:
            echo(metric_line(OBJECTIVE_METRIC, entry["decision_custom_score"]))

        final, metrics = fit_trial(train, validation, cfg, params, base_model, eval_callback=intermediate)
        argmax = float(metrics.get("custom_score", final))
    else:
        raise ConfigError(f"--model {model!r} is not a known model; allowed: {[*CLASSICAL_MODELS, 'transformer']}")
    out = {
        "validation_custom_score_argmax": argmax,
        "validation_macro_f1": float(metrics.get("macro_f1", 0.0)),
        "validation_recall_c2": float(metrics.get("recall_c2") or 0.0),
        "validation_false_alarm_rate": float(metrics.get("false_alarm_rate") or 0.0),
        OBJECTIVE_METRIC: final,
    }
    for name, value in out.items():  # the objective last: the Experiment reads the latest value
        echo(metric_line(name, value))
    return out


def params_json(params: dict[str, Any]) -> str:
    return json.dumps({k: list(v) if isinstance(v, tuple) else v for k, v in params.items()}, sort_keys=True)
