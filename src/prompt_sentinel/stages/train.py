"""The ``train`` stage: one model — classical (scikit-learn) or the transformer — into a model directory.

``run`` picks the trainer for ``model_name`` (:func:`make_trainer`) and runs the trainer contract's shared sequence
(:func:`prompt_sentinel.training.base.train_model`): checks, fit, decision costs, artifact, MLflow run. The CLI
(``sentinel train``), the pipeline's two training components and the benchmarks all come through here.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from prompt_sentinel import storage
from prompt_sentinel.config import ALL_MODELS, SentinelConfig
from prompt_sentinel.data.loading import load_dataset
from prompt_sentinel.errors import ConfigError
from prompt_sentinel.training.base import Trainer, TrainingContext, TrainResult, train_model
from prompt_sentinel.training.classical.search import ClassicalSettings
from prompt_sentinel.training.classical.trainer import ClassicalTrainer

TRANSFORMER = "transformer"


def make_trainer(model_name: str, cfg: SentinelConfig, base_model: str | None = None) -> Trainer:
    """The trainer for ``model_name`` (one of ``ALL_MODELS``), holding the config sections it needs."""
    if model_name not in ALL_MODELS:
        raise ConfigError(f"model {model_name!r} is not a known model; allowed: {list(ALL_MODELS)}")
    if base_model is not None and model_name != TRANSFORMER:
        raise ConfigError(f"a base model only applies to the transformer, not {model_name!r}")
    if model_name == TRANSFORMER:
        # torch is imported only when a transformer is trained
        from prompt_sentinel.training.transformer.trainer import TransformerSettings, TransformerTrainer

        return TransformerTrainer(TransformerSettings.from_config(cfg), base_model)
    return ClassicalTrainer(model_name, ClassicalSettings.from_config(cfg))


def with_checkpoint_mirror(cfg: SentinelConfig, out_dir: str | Path, checkpoint_uri: str | None) -> SentinelConfig:
    """``cfg`` with ``transformer.checkpoint_uri`` set when unset: ``checkpoint_uri``, else ``<out_dir>-checkpoints``
    for a gs:// output (a pod's local disk does not survive preemption; the bucket does)."""
    if cfg.transformer.checkpoint_uri:
        return cfg
    mirror = checkpoint_uri or (str(out_dir).rstrip("/") + "-checkpoints" if storage.is_gcs(str(out_dir)) else None)
    if not mirror:
        return cfg
    return cfg.model_copy(update={"transformer": cfg.transformer.model_copy(update={"checkpoint_uri": mirror})})


def _frame(data: pd.DataFrame | str | None, cfg: SentinelConfig) -> pd.DataFrame | None:
    if data is None or isinstance(data, pd.DataFrame):
        return data
    return load_dataset(str(data), cfg)


def run(
    model_name: str,
    train: pd.DataFrame | str,
    validation: pd.DataFrame | str | None,
    cfg: SentinelConfig,
    out_dir: str | Path,
    *,
    base_model: str | None = None,
    checkpoint_uri: str | None = None,
    progress: bool = True,
    tracking_dir: str | Path | None = None,
    cv: int | None = None,
) -> TrainResult:
    """Train ``model_name`` on ``train`` (a frame or a dataset URI), validated on ``validation``, into ``out_dir``.

    ``checkpoint_uri``: where the transformer mirrors its resumable checkpoints (default: beside a gs:// output,
    ``<out_dir>-checkpoints``, so a preempted and retried pipeline step resumes). ``cv``: first train and score
    ``cv`` grouped folds of the training split (:mod:`prompt_sentinel.training.cross_validation`).
    """
    if model_name == TRANSFORMER:
        cfg = with_checkpoint_mirror(cfg, out_dir, checkpoint_uri)
    trainer = make_trainer(model_name, cfg, base_model)
    ctx = TrainingContext.from_config(cfg)
    if cv is not None:
        from prompt_sentinel.training.cross_validation import CrossValidatedTrainer

        # fold models are scored and thrown away: no checkpoint mirror, no ONNX export or parity gate
        fold_cfg = cfg.model_copy(
            update={
                "transformer": cfg.transformer.model_copy(update={"checkpoint_uri": None}),
                "inference": cfg.inference.model_copy(update={"export_onnx": False}),
            }
        )
        trainer = CrossValidatedTrainer(
            trainer,
            lambda: make_trainer(model_name, fold_cfg, base_model),
            cv,
            ctx,
            cfg.split,
            cfg.training.search,
            cfg.seed,
        )
    return train_model(
        trainer,
        _frame(train, cfg),
        _frame(validation, cfg),
        ctx,
        out_dir,
        progress=progress,
        tracking_dir=tracking_dir,
    )
