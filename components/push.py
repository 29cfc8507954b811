"""Register the promoted model (runs only when selection promoted one): :func:`prompt_sentinel.stages.push.run`.

A new immutable version under ``registry_root`` with aliases ``candidate`` and ``champion`` (the previous champion
becomes ``previous``), the winner's headline metrics and the run's lineage, mirrored into the MLflow Model
Registry at ``mlflow_uri``. Output ``registered`` holds ``push_result.json`` (name, version, URI), which the
deploy step reads. Never cached.
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
    from components._runtime import stage_config
    from prompt_sentinel.run_layout import PUSH_RESULT
    from prompt_sentinel.stages import push
    from prompt_sentinel.stages.records import publish, stage_failures

    with stage_failures("push", results_uri):
        cfg = stage_config(config_json, registry_root=registry_root, model_name=model_name, mlflow_uri=mlflow_uri)
        outcome = push.run(champion.path, selection.path, cfg, registered.path, source_uri=champion.uri)
        registered.metadata.update({"version": outcome.version, "registry_uri": outcome.uri, "ref": outcome.ref})
        publish(results_uri, PUSH_RESULT, outcome.to_json())
        return outcome.uri
