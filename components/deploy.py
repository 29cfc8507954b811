"""Stage 8 — deploy: put the pushed version into ``cfg.deploy.environment`` (after a successful push).

Calls :func:`prompt_sentinel.deploy.deploy_model`. In the default ``gitops`` mode nothing talks to a cluster:
the overlay change (diff, changed files, rendered InferenceService, ``deploy_result.json``) becomes the
``deployment`` artifact, for a reviewer to merge and Argo CD to roll out. ``apply`` mode applies and waits for
Ready. Never cached.
"""

from kfp.dsl import Artifact, Input, Output

from components._base import sentinel_component


@sentinel_component()
def deploy_model_version(
    config_json: str,
    results_uri: str,
    registered: Input[Artifact],
    deployment: Output[Artifact],
):
    """Deploy the version described by ``registered/push_result.json``."""
    from components._runtime import stage, stage_config

    with stage("deploy", results_uri):
        import json
        from pathlib import Path

        from components._runtime import publish
        from prompt_sentinel.deploy import deploy_model

        cfg = stage_config(config_json)
        pushed = json.loads(Path(registered.path).read_text())
        result = deploy_model(pushed["uri"], pushed["name"], int(pushed["version"]), cfg, out_dir=deployment.path)
        payload = json.dumps(result.to_dict(), indent=2)
        deployment.metadata.update(
            {"mode": result.mode, "environment": result.environment, "changed_files": len(result.changed_files)}
        )
        publish(results_uri, "deploy_result.json", payload)
        if result.diff:
            publish(results_uri, "deploy_promotion.diff", result.diff)
