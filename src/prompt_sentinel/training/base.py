"""The one contract every trainer implements, and the sequence all of them share.

A trainer (:mod:`~prompt_sentinel.training.classical`, :mod:`~prompt_sentinel.training.transformer`,
:mod:`~prompt_sentinel.training.ensemble`) knows how to check its inputs, fit its family and write its family's
files. Everything around that is written once, in :func:`train_model`:

1. ``Trainer.check`` — every input check, before any work (bad input leaves no artifact and no MLflow run);
2. an MLflow run with the common tags (model type, family, dataset hash, git commit);
3. ``Trainer.fit`` → :class:`Fitted`: the fitted state, predictions on held-out rows, reports; then a probability
   calibrator fitted on the validation predictions, kept only when it lowers their cross-fitted NLL
   (:mod:`prompt_sentinel.training.calibration`) — the costs and metrics below are then those of the calibrated
   probabilities the model will serve;
4. the critical-error costs of the decision rule: tuned by the trainer itself when it must (the transformer picks
   its best checkpoint by the tuned score, the ensemble tunes costs jointly with its weights), else here on the
   held-out probabilities (:func:`prompt_sentinel.decision.tune_costs`);
5. validation metrics under the rule that will be served;
6. the descriptor and the artifact directory — family files, reports, the monitoring reference
   (:mod:`prompt_sentinel.monitoring.reference`: label, score, length, vocabulary and embedding summaries the drift
   detector compares live traffic with), ``sentinel_model.json``, then ``checksums.json`` last — published
   atomically (local) or staged and uploaded with the manifest last (gs://);
7. MLflow params, metrics and the artifact directory;
8. one :class:`TrainResult`, whatever the family.
"""

from __future__ import annotations

import logging
import tempfile
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import pandas as pd

from prompt_sentinel import storage
from prompt_sentinel.checksums import write_manifest
from prompt_sentinel.config import (
    CalibrationConfig,
    DecisionConfig,
    DecisionTuningConfig,
    InferenceConfig,
    LabelConfig,
    MlflowConfig,
    MonitoringConfig,
    SentinelConfig,
)
from prompt_sentinel.data.loading import check_labelled_frame
from prompt_sentinel.decision import CostTuning, assign_labels, tune_costs
from prompt_sentinel.errors import TrainingError
from prompt_sentinel.inference.backends import Backend, choose_backend, requested_backend
from prompt_sentinel.inference.parity import record_from_params
from prompt_sentinel.jsonio import to_json_lenient
from prompt_sentinel.metrics import macro_f1, security_score
from prompt_sentinel.models.base import ModelDescriptor, ModelFamily
from prompt_sentinel.monitoring.reference import Reference, build_reference, write_reference
from prompt_sentinel.run_layout import CHECKSUMS, MODEL_REQUIREMENTS, TRAINING_REPORT
from prompt_sentinel.text import normalize_text
from prompt_sentinel.training import tracking
from prompt_sentinel.training.calibration import CalibrationOutcome, calibrate

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class HeldOut:
    """Labels and predicted probabilities of rows the model was not fitted on (validation or out-of-fold)."""

    labels: np.ndarray
    proba: np.ndarray
    source: str  # "validation", "3-fold out-of-fold", ...
    backend: str | None = None  # the inference backend that scored the rows when the written model did


@dataclass
class Fitted:
    """What ``Trainer.fit`` hands back to the shared sequence."""

    params: dict[str, Any]  # recorded in the descriptor: chosen hyperparameters, members and weights, ...
    selection_score: float  # the score the trainer chose this model by (CV / best validation custom score)
    # writes the family's own files into a (staging) model directory; may add to the descriptor's params (e.g. the
    # ONNX parity record, which depends on the decision rule the sequence settled on)
    write_files: Callable[[Path, ModelDescriptor], None]
    held_out: HeldOut | None = None  # for the shared cost tuning and the validation metrics
    # Costs the trainer tuned itself; when set they win over tuning on ``held_out`` (which is then only used
    # for the validation metrics). ``fallback_tuning`` is used when there is no held-out data.
    tuning: CostTuning | None = None
    fallback_tuning: CostTuning | None = None
    validation_metrics: dict[str, Any] | None = None  # computed by the trainer itself (no held_out then)
    featurizer: str | None = None
    max_length: int | None = None
    training_report: dict[str, Any] = field(default_factory=dict)  # training.json (tuning + validation added)
    reports: dict[str, Any] = field(default_factory=dict)  # other JSON files of the artifact
    mlflow_params: dict[str, Any] = field(default_factory=dict)
    mlflow_metrics: dict[str, Any] = field(default_factory=dict)
    pip_requirements: tuple[str, ...] = ()  # logged to MLflow beside the artifact
    details: dict[str, Any] = field(default_factory=dict)  # family-specific, returned in TrainResult.details
    after_publish: Callable[[], None] | None = None  # e.g. discard resumable checkpoints


@dataclass
class TrainResult:
    """What every trainer returns (CLI summaries, pipeline metrics, benchmarks)."""

    model_dir: Path | str  # a str for gs:// outputs
    family: ModelFamily
    model_type: str
    params: dict[str, Any]
    selection_score: float
    validation_metrics: dict[str, Any]
    decision: DecisionConfig
    decision_tuning: dict[str, Any] | None
    train_seconds: float
    mlflow_run_id: str | None = None
    details: dict[str, Any] = field(default_factory=dict)

    def summary(self) -> dict[str, Any]:
        """JSON-able scalars for CLI tables and pipeline metadata."""
        return {
            "model": self.model_type,
            "family": self.family,
            "model_dir": str(self.model_dir),
            "selection_score": self.selection_score,
            "false_alarm_cost": self.decision.false_alarm_cost,
            "missed_threat_cost": self.decision.missed_threat_cost,
            "train_seconds": self.train_seconds,
            "mlflow_run_id": self.mlflow_run_id,
            "validation": {
                k: v
                for k, v in self.validation_metrics.items()
                if isinstance(v, int | float) and not isinstance(v, bool)
            },
        }


class Trainer(Protocol):
    """One model family's training; :func:`train_model` runs the shared sequence around it."""

    family: ModelFamily
    model_type: str

    def check(self, train: pd.DataFrame | None, validation: pd.DataFrame | None) -> None:
        """Raise :class:`~prompt_sentinel.errors.TrainingError` for any bad input, before any work."""

    def run_name(self, out_dir: str) -> str:
        """The MLflow run name."""

    def tags(self) -> dict[str, Any]:
        """Family-specific MLflow tags (model type and family are added by the sequence)."""

    def fit(
        self,
        train: pd.DataFrame | None,
        validation: pd.DataFrame | None,
        *,
        out_dir: str,
        run: Any,
        progress: bool,
    ) -> Fitted:
        """Fit the family; ``run`` is the active MLflow run (None when tracking is off)."""


@dataclass(frozen=True)
class TrainingContext:
    """The config sections the shared sequence needs."""

    labels: LabelConfig
    decision: DecisionConfig  # the serving defaults the tuned costs are applied to
    decision_tuning: DecisionTuningConfig
    mlflow: MlflowConfig
    calibration: CalibrationConfig = field(default_factory=CalibrationConfig)
    monitoring: MonitoringConfig = field(default_factory=MonitoringConfig)  # the drift reference's settings
    seed: int = 42
    # the backend the model will be served on: the reference's held-out scores come from it (predicted_held_out)
    inference: InferenceConfig = field(default_factory=InferenceConfig)

    @classmethod
    def from_config(cls, cfg: SentinelConfig) -> TrainingContext:
        return cls(
            cfg.labels,
            cfg.serving.decision,
            cfg.training.decision_tuning,
            cfg.mlflow,
            cfg.training.calibration,
            cfg.monitoring,
            cfg.seed,
            cfg.inference,
        )


def labelled_texts(df: Any, what: str, labels: LabelConfig) -> tuple[list[str], np.ndarray]:
    """Normalized texts and class ids of a checked labelled frame (:class:`TrainingError` naming ``what``)."""
    check_labelled_frame(df, labels, what, TrainingError)
    return [normalize_text(t) for t in df["text"]], df["label"].to_numpy(dtype=np.int64)


def validation_metrics(y_true: np.ndarray, y_pred: np.ndarray, labels: LabelConfig) -> dict[str, Any]:
    """Custom score and its parts, macro F1, accuracy, per-class F1 and the confusion matrix of held-out rows."""
    from sklearn.metrics import confusion_matrix, f1_score

    n = labels.num_classes
    score = security_score(y_true, y_pred, labels.roles, n)
    per_class = f1_score(y_true, y_pred, labels=list(range(n)), average=None, zero_division=0)
    return {
        **score.as_dict(),
        "macro_f1": macro_f1(y_true, y_pred, n),
        "accuracy": float(np.mean(np.asarray(y_true) == np.asarray(y_pred))),
        "f1_per_class": {name: float(per_class[i]) for i, name in enumerate(labels.names)},
        "confusion_matrix": confusion_matrix(y_true, y_pred, labels=list(range(n))).tolist(),
        "rows": len(y_true),
    }


def choose_tuning(fitted: Fitted, ctx: TrainingContext) -> CostTuning | None:
    """The costs the artifact stores: the trainer's own, else tuned on held-out rows, else its fallback."""
    if not ctx.decision_tuning.enabled:
        return None
    if fitted.tuning is not None:
        return fitted.tuning
    held = fitted.held_out
    if held is not None and len(held.labels):
        return tune_costs(held.labels, held.proba, ctx.labels.roles, ctx.decision_tuning.cost_grid, source=held.source)
    return fitted.fallback_tuning


def apply_calibration(fitted: Fitted, family: ModelFamily, ctx: TrainingContext) -> CalibrationOutcome:
    """Fit the family's calibrator on the validation predictions; when kept, the held-out probabilities become the
    calibrated ones and costs / metrics tuned on the raw ones are dropped, to be redone on what will be served."""
    held = fitted.held_out
    if held is None or held.source != "validation" or not len(held.labels):
        return CalibrationOutcome(None, {"kept": False, "reason": "no validation predictions"})
    outcome = calibrate(family, held.labels, held.proba, ctx.calibration, ctx.seed)
    if outcome.calibrator is not None:
        fitted.held_out = HeldOut(held.labels, outcome.calibrator.apply(held.proba), held.source)
        if fitted.tuning is not None and fitted.tuning.source.startswith("validation"):
            fitted.tuning = None
        fitted.validation_metrics = None
    return outcome


def served_backend(descriptor: ModelDescriptor, inference: InferenceConfig, directory: Path) -> Backend:
    """The backend ``load_model(..., inference=inference)`` will pick for an artifact with this descriptor."""
    record = record_from_params(descriptor.params)
    return choose_backend(requested_backend(inference), record.passed() if record else None, str(directory))


def predicted_held_out(
    directory: Path, validation: pd.DataFrame, labels: LabelConfig, inference: InferenceConfig
) -> HeldOut:
    """Validation probabilities of the model just written to ``directory``, for trainers that keep none (the
    transformer keeps only its best checkpoint's metrics): the reference's scores come from the model as it will
    be served, on the backend ``inference`` picks for it (the ONNX export when it passed the parity gate)."""
    from prompt_sentinel.models.loading import load_model

    texts, y = labelled_texts(validation, "validation", labels)
    model = load_model(directory, verify=False, inference=inference)
    return HeldOut(y, model.predict_proba(texts), "validation", model.inference_backend)


def monitoring_reference(
    train: pd.DataFrame | None,
    validation: pd.DataFrame | None,
    held: HeldOut | None,
    decision: DecisionConfig,
    ctx: TrainingContext,
) -> Reference:
    """The drift reference of the model being trained: training texts, and its held-out predictions under the
    decision rule that will be served (validation rows, or out-of-fold rows of the training split)."""
    source = train if train is not None else validation
    texts = [normalize_text(t) for t in source["text"]]
    held_texts: list[str] = []
    proba = predicted = None
    if held is not None and len(held.labels):
        if held.source == "validation" and validation is not None and len(validation) == len(held.labels):
            held_texts = [normalize_text(t) for t in validation["text"]]
        elif train is not None and len(train) == len(held.labels):
            held_texts = texts
        proba = held.proba
        predicted = assign_labels(held.proba, ctx.labels.roles, decision)
    elif validation is not None and source is not validation:
        held_texts = [normalize_text(t) for t in validation["text"]]
    try:
        reference = build_reference(
            texts, source["label"].to_numpy(), ctx.labels, ctx.monitoring, held_texts=held_texts, held_proba=proba,
            held_predicted=predicted, held_source=held.source if held else "none", seed=ctx.seed,
        )  # fmt: skip
    except Exception as exc:  # the encoder is optional: a reference without embeddings beats no model at all
        if ctx.monitoring.embedding_model.lower() == "none":
            raise
        log.warning("monitoring reference without embeddings (%s: %s)", type(exc).__name__, exc)
        settings = ctx.monitoring.model_copy(update={"embedding_model": "none"})
        reference = build_reference(
            texts, source["label"].to_numpy(), ctx.labels, settings, held_texts=held_texts, held_proba=proba,
            held_predicted=predicted, held_source=held.source if held else "none", seed=ctx.seed,
        )  # fmt: skip
        reference.profile["embedding_error"] = f"{type(exc).__name__}: {exc}"
    if held is not None and held.backend and reference.profile.get("held_out"):
        reference.profile["held_out"]["backend"] = held.backend
    return reference


def _write_reports(directory: Path, reports: Mapping[str, Any]) -> None:
    for name, payload in reports.items():
        (directory / name).write_text(to_json_lenient(payload))


def train_model(
    trainer: Trainer,
    train: pd.DataFrame | None,
    validation: pd.DataFrame | None,
    ctx: TrainingContext,
    out_dir: str | Path,
    *,
    progress: bool = True,
    tracking_dir: str | Path | None = None,
    dataset_hashes: Mapping[str, str] | None = None,
) -> TrainResult:
    """Check, fit, tune the decision costs, write the artifact and track the run (see the module docstring).

    ``out_dir`` (local or gs://) receives the model directory. MLflow tracking goes to ``ctx.mlflow.tracking_uri``
    or ``sqlite:///<tracking_dir>/mlflow.db`` (default: ``out_dir``'s parent).
    """
    started = time.perf_counter()
    out = str(out_dir).rstrip("/")
    trainer.check(train, validation)
    hashes = dict(dataset_hashes or {})
    if train is not None and "dataset_sha256" not in hashes:
        hashes["dataset_sha256"] = tracking.dataset_sha256(train)
    if validation is not None and "validation_sha256" not in hashes:
        hashes["validation_sha256"] = tracking.dataset_sha256(validation)
    commit = tracking.git_commit()
    tags = {"model_type": trainer.model_type, "family": trainer.family, **hashes, "git_commit": commit}
    tags.update(trainer.tags())
    run_dir = Path(tracking_dir) if tracking_dir else tracking.default_tracking_dir(out)
    with tracking.start_run(ctx.mlflow, trainer.run_name(out), run_dir, tags) as run:
        fitted = trainer.fit(train, validation, out_dir=out, run=run, progress=progress)
        calibration = apply_calibration(fitted, trainer.family, ctx)
        tuning = choose_tuning(fitted, ctx)
        decision = tuning.apply(ctx.decision) if tuning is not None else ctx.decision
        if tuning is not None:
            log.info(
                "%s: decision costs tuned on %s predictions: false alarm %.1f, missed threat %.1f "
                "(custom score %.4f with argmax, %.4f with the tuned rule)",
                trainer.model_type,
                tuning.source,
                decision.false_alarm_cost,
                decision.missed_threat_cost,
                tuning.argmax_custom_score,
                tuning.custom_score,
            )
        metrics = fitted.validation_metrics
        if metrics is None:
            held = fitted.held_out
            metrics = (
                validation_metrics(held.labels, assign_labels(held.proba, ctx.labels.roles, decision), ctx.labels)
                if held is not None and held.source == "validation" and len(held.labels)
                else {}
            )
        train_seconds = time.perf_counter() - started
        training_report = {
            **fitted.training_report,
            "dataset": {
                **fitted.training_report.get("dataset", {}),
                "train_sha256": hashes.get("dataset_sha256"),
                "validation_sha256": hashes.get("validation_sha256"),
            },
            "train_seconds": train_seconds,
            "decision_tuning": tuning.as_dict() if tuning is not None else None,
            "calibration": calibration.report,
            "validation": metrics,
            "git_commit": commit,
        }
        descriptor = ModelDescriptor(
            family=trainer.family,
            model_type=trainer.model_type,
            labels=ctx.labels,
            decision=decision,
            featurizer=fitted.featurizer,
            max_length=fitted.max_length,
            params=fitted.params,
            calibration=calibration.calibrator.method if calibration.calibrator is not None else None,
        )

        def fill(directory: Path) -> None:
            if calibration.calibrator is not None:  # first: the family's parity checks serve calibrated answers
                calibration.calibrator.write(directory)
            fitted.write_files(directory, descriptor)
            _write_reports(directory, {**fitted.reports, TRAINING_REPORT: training_report})
            descriptor.write(directory)
            held = fitted.held_out
            # The reference must hold the scores of the model as served: held-out probabilities computed at
            # training time come from torch, so when the artifact will run on an ONNX export that passed its parity
            # gate (or the trainer kept none), the written model predicts the validation split again.
            missing = held is None or not len(held.labels)
            if (missing or served_backend(descriptor, ctx.inference, directory) != "torch") and (
                validation is not None and len(validation)
            ):
                held = predicted_held_out(directory, validation, ctx.labels, ctx.inference)
            write_reference(monitoring_reference(train, validation, held, decision, ctx), directory)
            write_manifest(directory)  # last: covers every file above

        with tempfile.TemporaryDirectory(prefix=f"sentinel-{trainer.family}-") as staging:
            local_copy = storage.publish_directory(out, fill, last=(CHECKSUMS,), staging=staging)
            run_id = None
            if run is not None:
                run_id = run.info.run_id
                tracking.log_params({"model_type": trainer.model_type, **fitted.mlflow_params})
                tracking.log_metrics(
                    {
                        **fitted.mlflow_metrics,
                        "selection_score": fitted.selection_score,
                        "false_alarm_cost": decision.false_alarm_cost,
                        "missed_threat_cost": decision.missed_threat_cost,
                        "train_seconds": train_seconds,
                        "calibration_kept": float(calibration.calibrator is not None),
                        **{
                            f"val_{k}": v
                            for k, v in calibration.report.items()
                            if k.startswith("nll_") and isinstance(v, float)
                        },
                    }
                )
                tracking.log_metrics({k: v for k, v in metrics.items() if k != "confusion_matrix"}, prefix="val_")
                tracking.log_artifact_dir(local_copy, artifact_path="model")
                if fitted.pip_requirements:
                    tracking.log_text("\n".join(fitted.pip_requirements) + "\n", MODEL_REQUIREMENTS)
    if fitted.after_publish is not None:
        fitted.after_publish()
    log.info("%s artifact written to %s (selection score %.4f)", trainer.model_type, out, fitted.selection_score)
    return TrainResult(
        model_dir=out if storage.is_gcs(out) else Path(out),
        family=trainer.family,
        model_type=trainer.model_type,
        params=fitted.params,
        selection_score=float(fitted.selection_score),
        validation_metrics=metrics,
        decision=decision,
        decision_tuning=tuning.as_dict() if tuning is not None else None,
        train_seconds=train_seconds,
        mlflow_run_id=run_id,
        details=fitted.details,
    )
