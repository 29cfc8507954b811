"""Evaluate one trained model on the test split (and the blind set): :func:`prompt_sentinel.stages.evaluate.run`.

``evaluation`` holds ``evaluation.json``, ``predictions.csv``, charts and ``source.json`` (which model artifact was
evaluated, so selection can copy the winner without taking every model as an input); ``metrics`` the headline
numbers, ``confusion`` the test-set confusion matrix (drawn by the KFP UI).

Returns the evaluation artifact's URI: the transformer branch hands it to selection through ``dsl.OneOf``
(parameters only: ``kfp.local`` cannot resolve ``dsl.OneOf`` over artifacts).
"""

from kfp.dsl import Artifact, ClassificationMetrics, Dataset, Input, Metrics, Model, Output

from components._base import sentinel_component


@sentinel_component()
def evaluate_candidate(
    config_json: str,
    results_uri: str,
    splits: Input[Dataset],
    model: Input[Model],
    evaluation: Output[Artifact],
    metrics: Output[Metrics],
    confusion: Output[ClassificationMetrics],
) -> str:
    """Evaluate ``model`` on ``splits/test.csv`` (blind: ``splits/blind.csv`` if present)."""
    from components._runtime import record_evaluation, stage_config
    from prompt_sentinel.stages import evaluate
    from prompt_sentinel.stages.records import stage_failures

    with stage_failures(f"evaluate[{model.metadata.get('model_type') or 'model'}]", results_uri):
        result = evaluate.run(
            model.path,
            splits.path,
            stage_config(config_json),
            evaluation.path,
            model_uri=model.uri,
            evaluation_uri=evaluation.uri,
        )
        record_evaluation(evaluation, metrics, confusion, result)
        return evaluation.uri
