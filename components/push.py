"""Stage 7 — push: register the promoted model (runs only when selection promoted one).

Calls :func:`prompt_sentinel.registry.push_model`: a new immutable version under ``registry_root`` with aliases
``candidate`` and ``champion`` (the previous champion becomes ``previous``), the winner's headline metrics and
the run's lineage; it is mirrored into the MLflow Model Registry at ``mlflow_uri``. Output ``registered``
holds ``push_result.json`` (name, version, URI), which the deploy step reads. Never cached.
"""

from kfp.dsl import Artifact, Input, Model, Output

from components._base import sentinel_component


@sentinel_component()
def push_model_version(
    config_json: str,
    registry_root: str,
    model_name: str,
    mlflow_uri: str,
    results_uri: str,
    champion: Input[Model],
    selection: Input[Artifact],
    registered: Output[Artifact],
) -> str:
    """Push ``champion`` to the registry; returns the version's URI."""
    from components._runtime import stage, stage_config

    with stage("push", results_uri):
        import json
        import os
        from pathlib import Path

        from components._runtime import finite_scalars, publish
        from prompt_sentinel.registry import CANDIDATE, CHAMPION, push_model
        from prompt_sentinel.selection import SELECTION_FILE

        cfg = stage_config(config_json, registry_root=registry_root, model_name=model_name, mlflow_uri=mlflow_uri)
        chosen = json.loads(Path(selection.path, SELECTION_FILE).read_text())
        winner_file = Path(selection.path, "winner_evaluation.json")
        evaluation = json.loads(winner_file.read_text()) if winner_file.is_file() else {}
        headline = {
            k: v
            for k, v in finite_scalars({k: v for k, v in evaluation.items() if not isinstance(v, dict)}).items()
            if k not in {"schema_version"}
        }
        result = push_model(
            champion.path,
            cfg,
            name=cfg.registry.model_name,
            aliases=(CANDIDATE, CHAMPION),
            metrics=headline,
            lineage={
                "pipeline": "prompt-sentinel-training",
                "pipeline_run_id": os.environ.get("KFP_RUN_ID") or os.environ.get("PIPELINE_RUN_ID") or "",
                "selection_reason": chosen.get("reason"),
                "evaluation_uri": evaluation.get("evaluation_dir", ""),
                "source_uri": champion.uri,
            },
        )
        payload = {
            "name": result.name,
            "version": result.version,
            "uri": result.uri,
            "ref": result.ref,
            "aliases": list(result.aliases),
            "mlflow_version": result.mlflow_version,
            "mlflow_error": result.mlflow_error,
        }
        Path(registered.path).write_text(json.dumps(payload, indent=2))
        registered.metadata.update({"version": result.version, "registry_uri": result.uri, "ref": result.ref})
        publish(results_uri, "push_result.json", json.dumps(payload, indent=2))
        return result.uri
