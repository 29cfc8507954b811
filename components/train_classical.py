"""Train one classical model (one task per model, fanned out with ``dsl.ParallelFor``):
:func:`prompt_sentinel.stages.train.run` on the train split, the validation split held out.

The trainer searches hyperparameters by grouped cross-validation, balances inside every fold, refits, tunes the
decision costs and writes the model directory atomically. Output ``model`` (Model) is that directory; ``metrics``
carries the CV score and the validation metrics. The MLflow run goes to ``mlflow_uri`` (token from the
``MLFLOW_TRACKING_TOKEN`` secret on a cluster).
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
    from components._runtime import log_scalars, seal_metrics, stage_config, tracking_dir_for
    from prompt_sentinel.data.split import read_split
    from prompt_sentinel.stages import train
    from prompt_sentinel.stages.records import stage_failures

    with stage_failures(f"train[{model_name}]", results_uri):
        validation = read_split(splits.path, "validation")
        result = train.run(
            model_name,
            read_split(splits.path, "train"),
            validation if len(validation) else None,
            stage_config(config_json, mlflow_uri=mlflow_uri),
            model.path,
            progress=False,
            tracking_dir=tracking_dir_for(model.uri, model.path),
        )
        metrics.log_metric("cv_custom_score", float(result.selection_score))
        metrics.log_metric("train_seconds", float(result.train_seconds))
        log_scalars(metrics, result.validation_metrics, prefix="validation.")
        seal_metrics(metrics)
        model.metadata.update(
            {
                "model_type": model_name,
                "family": result.family,
                "best_params": result.params,
                "mlflow_run_id": result.mlflow_run_id or "",
            }
        )
