"""The ``hpo`` stage: a model's hyperparameter search, locally with Optuna or on a cluster with Katib.

* :func:`run` — a local Optuna study (``training.search.strategy`` forced to ``optuna``), then the model trained
  with the best parameters into ``out_dir`` like ``sentinel train`` would. For scikit-learn models the study runs
  inside the classical trainer's search; for the transformer it runs first (every trial a fine-tune pruned on its
  validation scores, :mod:`prompt_sentinel.training.transformer.hpo`), inside an MLflow parent run whose child
  runs are the trials, and the final fine-tune with the best parameters stores the study as ``hpo_study.json``.
  A study in ``training.search.optuna.storage`` resumes where an interrupted one stopped.
* :func:`katib` — the Katib Experiment running the same search on the cluster (rendered and validated; created
  with ``submit``).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pandas as pd

from prompt_sentinel import storage
from prompt_sentinel.config import SentinelConfig
from prompt_sentinel.data.loading import load_dataset
from prompt_sentinel.run_layout import HPO_STUDY
from prompt_sentinel.stages.train import TRANSFORMER, make_trainer, with_checkpoint_mirror
from prompt_sentinel.training import tracking
from prompt_sentinel.training.base import Fitted, Trainer, TrainingContext, TrainResult, train_model


def with_optuna(cfg: SentinelConfig) -> SentinelConfig:
    search = cfg.training.search.model_copy(update={"strategy": "optuna"})
    return cfg.model_copy(update={"training": cfg.training.model_copy(update={"search": search})})


class _WithStudy:
    """A trainer whose artifact also carries the study that chose its hyperparameters."""

    def __init__(self, inner: Trainer, study: dict[str, Any]) -> None:
        self.inner, self.study = inner, study
        self.family, self.model_type = inner.family, inner.model_type

    def check(self, train: pd.DataFrame | None, validation: pd.DataFrame | None) -> None:
        self.inner.check(train, validation)

    def run_name(self, out_dir: str) -> str:
        return self.inner.run_name(out_dir) + "-best"

    def tags(self) -> dict[str, Any]:
        return {**self.inner.tags(), "optuna_study": self.study["study_name"]}

    def fit(self, train, validation, *, out_dir: str, run: Any, progress: bool) -> Fitted:
        fitted = self.inner.fit(train, validation, out_dir=out_dir, run=run, progress=progress)
        fitted.reports = {**fitted.reports, HPO_STUDY: self.study}
        fitted.training_report = {**fitted.training_report, "optuna": self.study}
        fitted.mlflow_params.update({f"hpo.{k}": v for k, v in self.study["best_params"].items()})
        fitted.mlflow_metrics["hpo_best_value"] = self.study["best_value"]
        return fitted


def _frame(data: pd.DataFrame | str, cfg: SentinelConfig) -> pd.DataFrame:
    return data if isinstance(data, pd.DataFrame) else load_dataset(str(data), cfg)


def run(
    model_name: str,
    train: pd.DataFrame | str,
    validation: pd.DataFrame | str,
    cfg: SentinelConfig,
    out_dir: str | Path,
    *,
    base_model: str | None = None,
    progress: bool = True,
    tracking_dir: str | Path | None = None,
) -> TrainResult:
    """Search ``model_name``'s hyperparameters with Optuna and train the best into ``out_dir``."""
    from prompt_sentinel.stages import train as train_stage

    cfg = with_optuna(cfg)
    if model_name != TRANSFORMER:
        return train_stage.run(
            model_name, train, validation, cfg, out_dir, progress=progress, tracking_dir=tracking_dir
        )
    from prompt_sentinel.training.transformer.hpo import run_transformer_study, trial_settings

    train_df, val_df = _frame(train, cfg), _frame(validation, cfg)
    ctx = TrainingContext.from_config(cfg)
    out = str(out_dir).rstrip("/")
    run_dir = Path(tracking_dir) if tracking_dir else tracking.default_tracking_dir(out)
    tags = {"model_type": TRANSFORMER, "family": TRANSFORMER, "dataset_sha256": tracking.dataset_sha256(train_df)}
    with tracking.start_run(ctx.mlflow, f"hpo-transformer-{out.rsplit('/', 1)[-1]}", run_dir, tags) as parent:
        outcome = run_transformer_study(train_df, val_df, cfg, base_model, progress=progress)
        if parent is not None:
            tracking.log_params({f"best.{k}": v for k, v in outcome.best_params.items()})
            tracking.log_metrics({"best_value": outcome.best_value, "trials": len(outcome.trials)})
    best = trial_settings(cfg, outcome.best_params).transformer
    best_cfg = with_checkpoint_mirror(
        cfg.model_copy(
            update={"transformer": best.model_copy(update={"checkpoint_uri": cfg.transformer.checkpoint_uri})}
        ),
        out,
        None,
    )
    study = {**outcome.summary(), "trials_detail": outcome.trials}
    trainer = _WithStudy(make_trainer(TRANSFORMER, best_cfg, base_model), study)
    return train_model(
        trainer,
        train_df,
        val_df,
        ctx,
        out,
        progress=progress,
        tracking_dir=tracking_dir,
    )


def katib(
    model_name: str,
    cfg: SentinelConfig,
    *,
    train_uri: str,
    validation_uri: str,
    out: str | Path | None = None,
    submit: bool = False,
    name: str | None = None,
    namespace: str | None = None,
    parallel_trials: int = 2,
    objective: str | None = None,
    base_model: str | None = None,
) -> dict[str, Any]:
    """Render (and with ``submit`` create) the Katib Experiment; ``out`` also writes it as YAML."""
    import yaml

    from prompt_sentinel.hpo.katib import render_experiment, submit_experiment
    from prompt_sentinel.hpo.trial import OBJECTIVE_METRIC

    manifest = render_experiment(
        model_name,
        with_optuna(cfg),
        train_uri=train_uri,
        validation_uri=validation_uri,
        name=name,
        namespace=namespace,
        parallel_trials=parallel_trials,
        objective=objective or OBJECTIVE_METRIC,
        base_model=base_model,
    )
    if out is not None:
        storage.write_text(str(out), yaml.safe_dump(manifest, sort_keys=False, width=1000))
    created = submit_experiment(manifest) if submit else None
    return {"manifest": manifest, "created": json.loads(json.dumps(created, default=str)) if created else None}
