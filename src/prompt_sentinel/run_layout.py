"""Every file name that steps hand each other, and that a model directory holds: the contracts between stages.

A stage writes ``run_layout.EVALUATION`` and the next one reads ``run_layout.EVALUATION``; nothing else in the
code base spells these names. Grouped by the directory that holds them:

* a **model directory** (every trainer writes one; :func:`prompt_sentinel.models.loading.load_model` reads it),
* the **prepared data** (validate + split stages),
* an **evaluation directory** (evaluate stage; selection reads it),
* a run's **results directory** (human-readable copies: selection, report, push/deploy results, run status),
* the **local run** layout of ``sentinel run`` (:class:`LocalRunPaths`).

The registry's own store layout (version claims, aliases) lives in :mod:`prompt_sentinel.registry`, and the
transformer's resumable checkpoints in its checkpoint store: both are private to one module.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

# --- model directory ----------------------------------------------------------------------------------------
MODEL_DESCRIPTOR = "sentinel_model.json"
CHECKSUMS = "checksums.json"  # written last; covers every other file of the directory
SKOPS_MODEL = "model.skops"
SAFETENSORS_WEIGHTS = "model.safetensors"
PARAMS = "params.json"
TRAINING_REPORT = "training.json"
CV_RESULTS = "cv_results.csv"
TRAINING_ARGS = "training_args.json"
METRICS_HISTORY = "metrics_history.json"
ALPHA_TRAJECTORY = "alpha_trajectory.json"
ENSEMBLE_REPORT = "ensemble.json"
ENSEMBLE_MEMBERS_DIR = "members"
MODEL_REQUIREMENTS = "model_requirements.txt"  # logged to MLflow beside a model directory
CALIBRATION = "calibration.json"  # the fitted probability calibrator (descriptor field ``calibration``)
CV_SUMMARY = "cv_summary.json"  # mean ± std of the headline metrics over cross-validation folds
HPO_STUDY = "hpo_study.json"  # the Optuna study that chose a transformer's hyperparameters
ONNX_DIR = "onnx"  # a transformer's ONNX exports that passed the parity gate
ONNX_CLASSIFIER = f"{ONNX_DIR}/model.onnx"
ONNX_CLASSIFIER_INT8 = f"{ONNX_DIR}/model.int8.onnx"
# What the drift detector compares live traffic with (prompt_sentinel.monitoring.reference), written at training time
MONITORING_REFERENCE = "monitoring_reference.json"
REFERENCE_EMBEDDINGS = "monitoring_reference.safetensors"

# --- prepared data (validate + split) -----------------------------------------------------------------------
CLEANED_DATA = "cleaned.csv"
VALIDATION_REPORT_JSON = "report.json"
VALIDATION_REPORT_MD = "report.md"
VALIDATION_REPORT_HTML = "report.html"
DATASET_DIR = "data"  # the cleaned training dataset inside the validate step's output
BLIND = "blind"  # the external blind set: a sub-directory of the validate output, a file of the splits
SPLIT_NAMES = ("train", "validation", "test")
SPLIT_REPORT = "split_report.json"
BALANCE_REPORT = "balance.json"


def split_file(name: str) -> str:
    """The file one split (or the blind set) is written to inside the splits directory."""
    return f"{name}.csv"


# --- evaluation directory -----------------------------------------------------------------------------------
EVALUATION = "evaluation.json"
PREDICTIONS = "predictions.csv"
EVALUATED_SOURCE = "source.json"  # which model artifact an evaluation belongs to (selection copies the winner)
SKIPPED = "skipped.json"  # why an optional step produced nothing
CHAMPION_EVALUATION_DIR = "_champion"  # the registry champion re-evaluated on this run's test split

# --- selection, push, deploy: a run's results directory -----------------------------------------------------
SELECTION = "selection.json"
RESULTS_CSV = "results.csv"
REPORT_HTML = "report.html"
CANDIDATES = "candidates.json"
WINNER_EVALUATION = "winner_evaluation.json"
PUSH_RESULT = "push_result.json"
DEPLOY_RESULT = "deploy_result.json"
DEPLOY_DIFF = "deploy_promotion.diff"
PROMOTION_DIFF = "promotion.diff"  # inside the deploy step's own output
RENDERED_INFERENCE_SERVICE = "inferenceservice.yaml"
RUN_STATUS = "run_status.json"
FAILURES_DIR = "failures"  # one record per failed stage, folded into RUN_STATUS by the exit handler

# --- monitoring: prediction logs, drift and canary reports ---------------------------------------------------
PREDICTIONS_DIR = "predictions"  # <log root>/predictions/dt=YYYY-MM-DD/hour=HH/<unique>.jsonl, append-only
FEEDBACK_DIR = "feedback"  # <log root>/feedback/<unique>.jsonl: reviewer labels, append-only
LOG_FILE_SUFFIX = ".jsonl"
DRIFT_REPORT = "drift.json"
DRIFT_HTML = "drift.html"
CANARY_REPORT = "canary.json"
CANARY_DIFF = "canary.diff"
RETRAINING_DATA = "retraining_data.csv"  # the base dataset plus reviewer-labelled traffic
RETRAINING_REPORT = "retraining.json"

# --- pipeline packages --------------------------------------------------------------------------------------
COMPILED_PIPELINE = "training_pipeline.yaml"
COMPILED_MONITORING_PIPELINE = "monitoring_pipeline.yaml"


@dataclass(frozen=True)
class LocalRunPaths:
    """Where ``sentinel run`` puts everything (all under ``output``)."""

    output: Path

    @property
    def pipeline_root(self) -> Path:
        return self.output / "pipeline_root"

    @property
    def registry(self) -> Path:
        return self.output / "registry"

    @property
    def mlflow_db(self) -> Path:
        return self.output / "mlflow.db"

    @property
    def mlflow_uri(self) -> str:
        return f"sqlite:///{self.mlflow_db}"

    @property
    def mlflow_artifacts(self) -> Path:
        return self.output / "mlartifacts"

    @property
    def results(self) -> Path:
        return self.output / "results"

    @property
    def log_file(self) -> Path:
        return self.output / "logs" / "pipeline.log"


# --- out-of-source (generalization) evaluation --------------------------------------------------------------
GENERALIZATION = "generalization.json"  # written last: marks a complete generalization directory
GENERALIZATION_PREDICTIONS = "generalization_predictions.csv"
GENERALIZATION_REPORT_HTML = "generalization.html"
GENERALIZATION_FOLDS_DIR = "fold_models"  # the fold models, when kept
