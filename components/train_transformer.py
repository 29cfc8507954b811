"""Fine-tune the transformer (runs only when requested; GPU node pool on a cluster):
:func:`prompt_sentinel.stages.train.run` with ``model_name="transformer"``.

The pipeline retries this task (``cfg.pipeline.training_retries``) because GPU nodes are often preemptible:
checkpoints are written during training, and a retry resumes from the latest one instead of starting over.
Locally they live beside the output; on a cluster the output is a ``gs://`` artifact, so checkpoints are mirrored
to ``<model uri>-checkpoints`` (unless ``cfg.transformer.checkpoint_uri`` names another place), which survives
the pod.
"""

from kfp.dsl import Dataset, Input, Metrics, Model, Output

from components._base import sentinel_component


@sentinel_component(gpu=True)
def train_transformer_model(
    config_json: str,
    mlflow_uri: str,
    results_uri: str,
    splits: Input[Dataset],
    model: Output[Model],
    metrics: Output[Metrics],
):
    """Fine-tune ``cfg.transformer.base_model`` on ``splits`` (resuming from a checkpoint after preemption)."""
    from components._runtime import log_scalars, seal_metrics, stage_config, tracking_dir_for
    from prompt_sentinel import storage
    from prompt_sentinel.data.split import read_split
    from prompt_sentinel.stages import train
    from prompt_sentinel.stages.records import stage_failures

    with stage_failures("train[transformer]", results_uri):
        result = train.run(
            "transformer",
            read_split(splits.path, "train"),
            read_split(splits.path, "validation"),
            stage_config(config_json, mlflow_uri=mlflow_uri),
            model.path,
            checkpoint_uri=model.uri.rstrip("/") + "-checkpoints" if storage.is_gcs(model.uri) else None,
            progress=False,
            tracking_dir=tracking_dir_for(model.uri, model.path),
        )
        details = result.details
        metrics.log_metric("best_score", float(result.selection_score))
        metrics.log_metric("train_seconds", float(result.train_seconds))
        metrics.log_metric("resumed_from_step", float(details["resumed_from_step"]))
        log_scalars(metrics, result.validation_metrics, prefix="validation.")
        seal_metrics(metrics)
        model.metadata.update(
            {
                "model_type": "transformer",
                "family": "transformer",
                "device": details["device"],
                "global_step": details["global_step"],
                "mlflow_run_id": result.mlflow_run_id or "",
            }
        )
