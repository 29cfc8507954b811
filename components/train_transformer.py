"""Stage 4b — fine-tune the transformer (runs only when requested; GPU node pool on a cluster).

Calls :func:`prompt_sentinel.training.transformer.trainer.train_transformer`. The pipeline retries this task
(``cfg.pipeline.training_retries``) because GPU nodes are often preemptible: checkpoints are written during
training, and a retry resumes from the latest one instead of starting over. Locally they live beside the
output; on a cluster the output is a ``gs://`` artifact, so checkpoints are mirrored to ``<model uri>-checkpoints``
(unless ``cfg.transformer.checkpoint_uri`` names another place), which survives the pod.
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
    from components._runtime import log_scalars, seal_metrics, stage, stage_config, tracking_dir_for

    with stage("train[transformer]", results_uri):
        from prompt_sentinel import storage
        from prompt_sentinel.data import read_split
        from prompt_sentinel.training.transformer.trainer import result_summary, train_transformer

        cfg = stage_config(config_json, mlflow_uri=mlflow_uri)
        if storage.is_gcs(model.uri) and not cfg.transformer.checkpoint_uri:
            cfg.transformer.checkpoint_uri = model.uri.rstrip("/") + "-checkpoints"
        result = train_transformer(
            read_split(splits.path, "train"),
            read_split(splits.path, "validation"),
            cfg,
            model.path,
            progress=False,
            tracking_dir=tracking_dir_for(model.uri, model.path),
        )
        summary = result_summary(result)
        metrics.log_metric("best_score", float(result.best_score))
        metrics.log_metric("train_seconds", float(result.train_seconds))
        metrics.log_metric("resumed_from_step", float(result.resumed_from_step))
        log_scalars(metrics, result.best_metrics, prefix="validation.")
        seal_metrics(metrics)
        model.metadata.update(
            {
                "model_type": "transformer",
                "family": "transformer",
                "device": summary["device"],
                "global_step": summary["global_step"],
                "mlflow_run_id": result.mlflow_run_id or "",
            }
        )
