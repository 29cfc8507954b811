"""Security evaluation (issue 5): metric suite, blind-set validation, adversarial robustness, efficiency, reports.

Public API:

* :func:`evaluate_model` — one model on a test set (and optional blind set) → evaluation dict / ``evaluation.json``
* :func:`write_results_csv`, :func:`render_report` — ``results.csv`` and the self-contained HTML report
* :func:`compute_metrics` — the metric suite on arrays (no model)

Selection (gates, champion vs challenger) lives in :mod:`prompt_sentinel.selection`.
"""

from __future__ import annotations

from prompt_sentinel.evaluation.evaluate import (
    EVALUATION_FILE,
    PREDICTIONS_FILE,
    evaluate_loaded_model,
    evaluate_model,
    read_predictions,
    write_evaluation,
)
from prompt_sentinel.evaluation.metrics_suite import compute_metrics
from prompt_sentinel.evaluation.report import RESULTS_COLUMNS, render_report, write_results_csv

__all__ = [
    "EVALUATION_FILE",
    "PREDICTIONS_FILE",
    "RESULTS_COLUMNS",
    "compute_metrics",
    "evaluate_loaded_model",
    "evaluate_model",
    "read_predictions",
    "render_report",
    "write_evaluation",
    "write_results_csv",
]
