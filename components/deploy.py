"""Deploy the pushed version to ``cfg.deploy.environment`` (after a successful push):
:func:`prompt_sentinel.stages.deploy.run`.

In the default ``gitops`` mode nothing talks to a cluster: the overlay change (diff, changed files, rendered
InferenceService, ``deploy_result.json``) becomes the ``deployment`` artifact, for a reviewer to merge and Argo CD
to roll out. ``apply`` mode applies and waits for Ready. ``canary_percent`` > 0 (the monitoring pipeline's retrained
model) starts the version as a canary taking that share of the traffic. Never cached.
"""

from kfp.dsl import Artifact, Input, Output

from components._base import sentinel_component


@sentinel_component()
def deploy_model_version(
    config_json: str,
    results_uri: str,
    registered: Input[Artifact],
    deployment: Output[Artifact],
    canary_percent: int = 0,
):
    """Deploy the version described by ``registered/push_result.json`` (as a canary with ``canary_percent`` > 0)."""
    import json

    from components._runtime import stage_config
    from prompt_sentinel.run_layout import DEPLOY_DIFF, DEPLOY_RESULT
    from prompt_sentinel.stages import deploy
    from prompt_sentinel.stages.records import publish, stage_failures

    with stage_failures("deploy", results_uri):
        result = deploy.run(registered.path, stage_config(config_json), deployment.path, canary=canary_percent)
        deployment.metadata.update(
            {"mode": result.mode, "environment": result.environment, "changed_files": len(result.changed_files)}
        )
        publish(results_uri, DEPLOY_RESULT, json.dumps(result.to_dict(), indent=2))
        if result.diff:
            publish(results_uri, DEPLOY_DIFF, result.diff)
