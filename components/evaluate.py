"""Stage 5 — evaluate one trained model on the test split (and the blind set when there is one).

Calls :func:`prompt_sentinel.evaluation.evaluate_model`, which writes ``evaluation.json``, ``predictions.csv``
and charts into the ``evaluation`` artifact. ``metrics`` carries the headline numbers, ``confusion`` the test-set
confusion matrix (drawn by the KFP UI). ``source.json`` beside them records which model artifact was evaluated,
so selection can copy the winner without taking every model as an input.

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
    from components._runtime import evaluate_into, stage, stage_config

    name = str(model.metadata.get("model_type") or "model")
    with stage(f"evaluate[{name}]", results_uri):
        cfg = stage_config(config_json)
        return evaluate_into(cfg, model.path, model.uri, splits.path, evaluation, metrics, confusion)
