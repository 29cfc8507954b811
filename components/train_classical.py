"""Stage 4a — train one classical model (one task per model, fanned out with ``dsl.ParallelFor``).

Calls :func:`prompt_sentinel.training.classical.trainer.train_classical` on the train split (validation split for the held-out
score), which searches hyperparameters by cross-validation, balances inside every fold, refits and writes the
model artifact directory atomically. Output ``model`` (Model) is that directory; ``metrics`` carries the CV
score and the validation metrics. The MLflow run goes to ``mlflow_uri`` (token from the ``MLFLOW_TRACKING_TOKEN``
secret on a cluster).
"""

from kfp.dsl import Dataset, Input, Metrics, Model, Output

from components._base import sentinel_component


@sentinel_component()
def train_classical_model(
    model_name: str,
    config_json: str,
    mlflow_uri: str,
    results_uri: str,
    splits: Input[Dataset],
    model: Output[Model],
    metrics: Output[Metrics],
):
    """Train ``model_name`` (one of ``prompt_sentinel.config.CLASSICAL_MODELS``) on ``splits``."""
    from components._runtime import log_scalars, seal_metrics, stage, stage_config, tracking_dir_for

    with stage(f"train[{model_name}]", results_uri):
        from prompt_sentinel.data import read_split
        from prompt_sentinel.training.classical.trainer import train_classical

        cfg = stage_config(config_json, mlflow_uri=mlflow_uri)
        train = read_split(splits.path, "train")
        validation = read_split(splits.path, "validation")
        result = train_classical(
            model_name,
            train,
            validation if len(validation) else None,
            cfg,
            model.path,
            progress=False,
            tracking_dir=tracking_dir_for(model.uri, model.path),
        )
        metrics.log_metric("cv_custom_score", float(result.cv_score))
        metrics.log_metric("train_seconds", float(result.train_seconds))
        log_scalars(metrics, result.val_metrics, prefix="validation.")
        seal_metrics(metrics)
        model.metadata.update(
            {
                "model_type": model_name,
                "family": "sklearn",
                "best_params": result.best_params,
                "mlflow_run_id": result.mlflow_run_id or "",
            }
        )
