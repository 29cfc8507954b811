"""Optuna search over the transformer's hyperparameters, pruned on its intermediate validation scores.

Each trial fine-tunes with the drawn hyperparameters (:func:`fit_trial`: the real :class:`TransformerTrainer`,
checkpoints in a throw-away directory, no artifact) and reports the validation custom score of every
evaluation — each epoch, or every ``transformer.eval_every_steps`` — under its tuned decision rule; the pruner
stops a trial whose running scores trail the others'. The trial's result is its best evaluation's score, the
one the trainer selects checkpoints by. The same :func:`fit_trial` is what a Katib trial runs
(:mod:`prompt_sentinel.hpo.trial`).
"""

from __future__ import annotations

import dataclasses
import logging
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from prompt_sentinel.config import SentinelConfig
from prompt_sentinel.training.optuna_search import StudyOutcome, check_settings, default_study_name, run_study
from prompt_sentinel.training.tracking import dataset_sha256
from prompt_sentinel.training.transformer.search_space import (
    apply_params,
    is_integer,
    largest_max_length,
    transformer_space,
)
from prompt_sentinel.training.transformer.trainer import TransformerSettings, TransformerTrainer

log = logging.getLogger(__name__)

TRIAL_WHERE = "transformer trial parameters"


def trial_settings(cfg: SentinelConfig, params: dict[str, Any]) -> TransformerSettings:
    """The trainer settings of one trial: ``cfg``'s, with ``params`` applied (validated) and no checkpoint mirror."""
    tcfg = apply_params(cfg.transformer, cfg.labels, params, TRIAL_WHERE).model_copy(update={"checkpoint_uri": None})
    return dataclasses.replace(TransformerSettings.from_config(cfg), transformer=tcfg)


def fit_trial(
    train: pd.DataFrame,
    validation: pd.DataFrame,
    cfg: SentinelConfig,
    params: dict[str, Any],
    base_model: str | None = None,
    eval_callback: Callable[[dict[str, Any]], None] | None = None,
    progress: bool = False,
) -> tuple[float, dict[str, Any]]:
    """Fine-tune once with ``params``; returns (best validation score under the tuned rule, its metrics)."""
    trainer = TransformerTrainer(trial_settings(cfg, params), base_model, eval_callback=eval_callback)
    with tempfile.TemporaryDirectory(prefix="sentinel-trial-") as tmp:
        trainer.check(train, validation)
        fitted = trainer.fit(train, validation, out_dir=str(Path(tmp) / "model"), run=None, progress=progress)
    return float(fitted.selection_score), dict(fitted.validation_metrics or {})


def check_search(train: pd.DataFrame, validation: pd.DataFrame, cfg: SentinelConfig, base_model: str | None) -> dict:
    """Everything a study needs, checked before its first trial: settings, space, data, base model limits."""
    space = transformer_space(cfg.training.search, cfg.transformer, cfg.labels)
    check_settings(cfg.training.search.optuna, space)
    longest = largest_max_length(space, cfg.transformer)
    probe = trial_settings(cfg, {"max_length": longest})
    # the real checks of a trial (data, labels, base model, max_length within its limit) on the longest input
    TransformerTrainer(probe, base_model).check(train, validation)
    return space


def run_transformer_study(
    train: pd.DataFrame,
    validation: pd.DataFrame,
    cfg: SentinelConfig,
    base_model: str | None = None,
    *,
    progress: bool = False,
    callbacks: Sequence[Callable[[Any, Any], None]] = (),
) -> StudyOutcome:
    """Run (or resume) the transformer's Optuna study; each trial is an MLflow child run of the active run."""
    import optuna

    space = check_search(train, validation, cfg, base_model)
    optuna_cfg = cfg.training.search.optuna
    study_name = optuna_cfg.study_name or default_study_name("transformer", dataset_sha256(train))
    evaluations = _evaluations_per_trial(train, cfg)

    def objective(trial: Any, params: dict[str, Any]) -> float:
        def report(entry: dict[str, Any]) -> None:
            score = float(entry["decision_custom_score"])
            trial.report(score, step=int(entry["step"]))
            if trial.should_prune():
                raise optuna.TrialPruned(f"pruned at step {entry['step']}: validation custom score {score:.4f}")

        score, best = fit_trial(train, validation, cfg, params, base_model, eval_callback=report)
        trial.set_user_attr("best_step", best.get("step"))
        trial.set_user_attr("best_custom_score_argmax", best.get("custom_score"))
        return score

    return run_study(
        optuna_cfg,
        study_name,
        space,
        is_integer,
        objective,
        seed=cfg.seed,
        max_resource=evaluations,
        progress=progress,
        callbacks=callbacks,
        run_prefix="transformer-trial",
    )


def _evaluations_per_trial(train: pd.DataFrame, cfg: SentinelConfig) -> int:
    """About how many validation evaluations a trial makes (Hyperband's max resource)."""
    import math

    tcfg = cfg.transformer
    steps_per_epoch = math.ceil(math.ceil(len(train) / tcfg.batch_size) / tcfg.gradient_accumulation_steps)
    total = tcfg.max_steps or max(1, math.ceil(tcfg.epochs * steps_per_epoch))
    every = tcfg.eval_every_steps or steps_per_epoch
    return max(1, math.ceil(total / every))
