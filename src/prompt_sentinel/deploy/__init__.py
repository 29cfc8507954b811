"""Deployment: kustomize rendering, GitOps promotion and rolling a registry version out.

* :func:`deploy_model` — the pipeline's deploy step (GitOps change or server-side apply + wait for Ready).
* :func:`promote` / :func:`promote_between` — `sentinel promote`: rewrite an overlay's pinned version.
* :func:`kustomize_build`, :func:`validate_kserve_object` — render ``manifests/`` and check KServe objects.
"""

from __future__ import annotations

from prompt_sentinel.deploy.promote import (
    Pin,
    Promotion,
    check_registry_version,
    parse_version,
    plan_promotion,
    promote,
    promote_between,
    read_pin,
)
from prompt_sentinel.deploy.render import (
    find_inference_service,
    kustomize_build,
    resolve_manifests_dir,
    validate_kserve_object,
)
from prompt_sentinel.deploy.rollout import DeployResult, deploy_model

__all__ = [
    "DeployResult",
    "Pin",
    "Promotion",
    "check_registry_version",
    "deploy_model",
    "find_inference_service",
    "kustomize_build",
    "parse_version",
    "plan_promotion",
    "promote",
    "promote_between",
    "read_pin",
    "resolve_manifests_dir",
    "validate_kserve_object",
]
