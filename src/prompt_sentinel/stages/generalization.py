"""The ``evaluate-generalization`` stage: a model trained out of source, fold by fold, scored on unseen families.

:func:`run` loads a corpus (``text, label, source`` and optionally ``group``), builds the fold trainer for the
model name (:func:`fold_trainer`: any of ``ALL_MODELS`` through :func:`prompt_sentinel.stages.train.make_trainer`,
or ``ensemble``: every model of ``training.models`` per fold, then the soft-voting ensemble of them tuned on the
fold's validation part), runs :func:`prompt_sentinel.evaluation.generalization.evaluate_generalization`, writes
the report (JSON, predictions, charts, HTML) and logs one MLflow run. The CLI (``sentinel
evaluate-generalization``) and the benchmarks come through here.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from prompt_sentinel.config import ALL_MODELS, SentinelConfig
from prompt_sentinel.data.loading import load_dataset
from prompt_sentinel.errors import ConfigError, TrainingError
from prompt_sentinel.evaluation.generalization import (
    ContractFoldTrainer,
    FoldTrainer,
    GeneralizationResult,
    evaluate_generalization,
    log_to_mlflow,
    write_generalization,
)
from prompt_sentinel.stages import train as train_stage
from prompt_sentinel.training import tracking
from prompt_sentinel.training.base import TrainingContext, train_model
from prompt_sentinel.training.ensemble import build_ensemble

ENSEMBLE = "ensemble"
GENERALIZATION_MODELS = (*ALL_MODELS, ENSEMBLE)


def _fold_config(cfg: SentinelConfig, track_folds: bool) -> SentinelConfig:
    """``cfg`` for the fold models: their MLflow runs off unless asked for (the evaluation logs one run)."""
    if track_folds:
        return cfg
    return cfg.model_copy(update={"mlflow": cfg.mlflow.model_copy(update={"enabled": False})})


@dataclass
class EnsembleFoldTrainer:
    """Per fold: every model of ``training.models`` trained on the fold's train part, then their soft-voting
    ensemble with weights and costs tuned on the fold's validation part (as the pipeline's ensemble step)."""

    cfg: SentinelConfig
    progress: bool = False
    name: str = ENSEMBLE

    @property
    def members(self) -> list[str]:
        return list(self.cfg.training.models)

    def check(self, train: pd.DataFrame, validation: pd.DataFrame | None) -> None:
        if len(self.members) < 2:
            raise ConfigError(f"an ensemble needs at least 2 models in training.models, got {self.members}")
        if validation is None or validation.empty:
            raise TrainingError("an ensemble is tuned on a validation part; set split.validation > 0")
        for member in self.members:
            train_stage.make_trainer(member, self.cfg).check(train, validation)

    def fit(self, train: pd.DataFrame, validation: pd.DataFrame | None, out_dir: Path) -> Path:
        ctx = TrainingContext.from_config(self.cfg)
        member_dirs = []
        for member in self.members:
            result = train_model(
                train_stage.make_trainer(member, self.cfg),
                train,
                validation,
                ctx,
                out_dir / "members" / member,
                progress=self.progress,
            )
            member_dirs.append(str(result.model_dir))
        assert validation is not None
        result = build_ensemble(member_dirs, validation, self.cfg, out_dir / "ensemble", names=self.members)
        return Path(result.model_dir)


def fold_trainer(model: str, cfg: SentinelConfig, *, track_folds: bool = False, progress: bool = False) -> FoldTrainer:
    """The fold trainer for ``model`` (one of :data:`GENERALIZATION_MODELS`)."""
    if model not in GENERALIZATION_MODELS:
        raise ConfigError(f"model {model!r} is not known; allowed: {list(GENERALIZATION_MODELS)}")
    fold_cfg = _fold_config(cfg, track_folds)
    if model == ENSEMBLE:
        return EnsembleFoldTrainer(fold_cfg, progress)
    return ContractFoldTrainer(
        model, lambda: train_stage.make_trainer(model, fold_cfg), TrainingContext.from_config(fold_cfg), progress
    )


@dataclass
class GeneralizationOutcome:
    """The stage's result: the report, where it was written and the MLflow run."""

    result: GeneralizationResult
    out_dir: str | None
    mlflow_run_id: str | None

    @property
    def report(self) -> dict[str, Any]:
        return self.result.report


def run(
    data: pd.DataFrame | str,
    model: str,
    cfg: SentinelConfig,
    out_dir: str | Path | None = None,
    *,
    folds: int | None = None,
    together: list[list[str]] | None = None,
    keep_models: bool = False,
    track_folds: bool = False,
    progress: bool = True,
    tracking_dir: str | Path | None = None,
) -> GeneralizationOutcome:
    """Evaluate ``model`` out of source on ``data`` (a frame or a dataset URI); write the report to ``out_dir``.

    ``keep_models``: copy every fold's model into ``<out_dir>/fold_models/``. ``track_folds``: also log each
    fold model's training to MLflow (off: one run for the whole evaluation).
    """
    trainer = fold_trainer(model, cfg, track_folds=track_folds, progress=False)
    frame = data if isinstance(data, pd.DataFrame) else load_dataset(str(data), cfg)
    data_uri = None if isinstance(data, pd.DataFrame) else str(data)
    with tempfile.TemporaryDirectory(prefix="sentinel-fold-models-") as kept:
        result = evaluate_generalization(
            frame,
            trainer,
            cfg,
            folds=folds,
            together=together or [],
            models_dir=kept if keep_models and out_dir is not None else None,
            progress=progress,
            data_uri=data_uri,
        )
        written = write_generalization(result, out_dir) if out_dir is not None else None
    run_dir = Path(tracking_dir) if tracking_dir else tracking.default_tracking_dir(str(out_dir or "."))
    run_id = log_to_mlflow(result.report, written, cfg.mlflow, run_dir)
    return GeneralizationOutcome(result, written, run_id)
