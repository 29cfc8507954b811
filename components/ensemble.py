"""Stage 4c — soft-voting ensemble of the fine-tuned transformer and the classical models, then its evaluation.

Runs after the classical fan-out and the transformer branch. The transformer arrives as its evaluation URI (the
pipeline's ``dsl.OneOf`` over the branch; its ``source.json`` names the model): KFP's compiler refuses
``dsl.Collected`` inside a condition group, and ``kfp.local`` resolves ``dsl.OneOf`` over parameters only. Calls
:func:`prompt_sentinel.training.ensemble.build_ensemble` (member weights and decision costs tuned on
``splits/validation.csv``, which no member was fitted on) and evaluates the result exactly like
``evaluate_candidate`` does, so the ensemble reaches selection as one more candidate.

Returns the evaluation URI, or ``""`` (nothing for selection) when the transformer branch did not run,
``training.ensemble.enabled`` is false or no classical model was trained; the skipped outputs then hold a
``skipped.json`` saying why, because a cluster's launcher uploads every declared output.
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
    from components._runtime import (
        SOURCE_FILE,
        evaluate_into,
        read_json,
        seal_metrics,
        stage,
        stage_config,
        tracking_dir_for,
    )

    with stage("ensemble", results_uri):
        import json
        from pathlib import Path

        from prompt_sentinel import storage
        from prompt_sentinel.data import read_split
        from prompt_sentinel.models.ensemble import ENSEMBLE_FAMILY
        from prompt_sentinel.training.ensemble import build_ensemble

        cfg = stage_config(config_json, mlflow_uri=mlflow_uri)
        skipped = None
        if not transformer_evaluation:
            skipped = "the transformer branch did not run"
        elif not cfg.training.ensemble.enabled:
            skipped = "training.ensemble.enabled is false"
        elif not classical:
            skipped = "no classical model was trained, so there is nothing to ensemble the transformer with"
        if skipped is not None:
            for artifact in (model, evaluation):
                Path(artifact.path).mkdir(parents=True, exist_ok=True)
                Path(artifact.path, "skipped.json").write_text(json.dumps({"skipped": skipped}))
            seal_metrics(metrics, confusion)
            return ""
        transformer = read_json(storage.join(transformer_evaluation, SOURCE_FILE))["model_uri"]
        members = [m.path for m in classical] + [transformer]
        result = build_ensemble(
            members,
            read_split(splits.path, "validation"),
            cfg,
            model.path,
            tracking_dir=tracking_dir_for(model.uri, model.path),
        )
        model.metadata.update(
            {
                "model_type": ENSEMBLE_FAMILY,
                "family": ENSEMBLE_FAMILY,
                "members": dict(zip(result.members, result.weights, strict=True)),
                "validation_custom_score": result.validation_custom_score,
            }
        )
        return evaluate_into(cfg, model.path, model.uri, splits.path, evaluation, metrics, confusion)
