"""Soft-voting ensemble of the fine-tuned transformer and the classical models, then its evaluation:
:func:`prompt_sentinel.stages.ensemble.run_candidate`.

Runs after the classical fan-out and the transformer branch. The transformer arrives as its evaluation URI (the
pipeline's ``dsl.OneOf`` over the branch; its ``source.json`` names the model): KFP's compiler refuses
``dsl.Collected`` inside a condition group, and ``kfp.local`` resolves ``dsl.OneOf`` over parameters only.

Returns the evaluation URI, or ``""`` (nothing for selection) when the stage was skipped; the outputs then hold a
``skipped.json`` saying why.
"""

from kfp.dsl import Artifact, ClassificationMetrics, Dataset, Input, Metrics, Model, Output

from components._base import sentinel_component


@sentinel_component()
def ensemble_candidate(
    config_json: str,
    mlflow_uri: str,
    results_uri: str,
    splits: Input[Dataset],
    classical: Input[list[Model]],
    transformer_evaluation: str,
    model: Output[Model],
    evaluation: Output[Artifact],
    metrics: Output[Metrics],
    confusion: Output[ClassificationMetrics],
) -> str:
    """Build the ensemble of ``classical`` + the transformer and evaluate it on the test split."""
    from components._runtime import record_evaluation, seal_metrics, stage_config, tracking_dir_for
    from prompt_sentinel.stages import ensemble
    from prompt_sentinel.stages.records import stage_failures

    with stage_failures("ensemble", results_uri):
        outcome = ensemble.run_candidate(
            [m.path for m in classical],
            transformer_evaluation,
            splits.path,
            stage_config(config_json, mlflow_uri=mlflow_uri),
            model.path,
            evaluation.path,
            model_uri=model.uri,
            evaluation_uri=evaluation.uri,
            tracking_dir=tracking_dir_for(model.uri, model.path),
        )
        if outcome.skipped is not None:
            seal_metrics(metrics, confusion)
            return ""
        trained = outcome.trained
        model.metadata.update(
            {
                "model_type": trained.model_type,
                "family": trained.family,
                "members": dict(zip(trained.details["members"], trained.details["weights"], strict=True)),
                "validation_custom_score": trained.selection_score,
            }
        )
        record_evaluation(evaluation, metrics, confusion, outcome.evaluation)
        return evaluation.uri
