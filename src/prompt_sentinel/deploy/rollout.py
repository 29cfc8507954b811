"""Roll a registry version out to ``deploy.environment`` (the work behind the pipeline's deploy stage).

``deploy.mode``:

* ``gitops`` (default): pin the version in the environment's overlay as a reviewable change — the diff, the
  changed files and the rendered InferenceService go to ``out_dir`` (a pipeline artifact), and optionally onto
  a new git branch (``deploy.git_branch``). Argo CD rolls it out once the change is merged.
* ``apply``: render the same overlay with the version pinned, server-side apply its InferenceService and wait
  for ``Ready``. Meant for environments Argo CD does not self-heal (dev: see ``manifests/argocd/dev.yaml``).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from prompt_sentinel import storage
from prompt_sentinel.config import SentinelConfig
from prompt_sentinel.deploy.apply import apply_and_wait, service_url
from prompt_sentinel.deploy.canary import plan_canary_start
from prompt_sentinel.deploy.promote import (
    check_complete,
    check_model_name,
    commit_to_branch,
    plan_promotion,
    render_promotion,
    storage_uri_for,
)
from prompt_sentinel.deploy.render import overlay_dir, resolve_manifests_dir, to_yaml
from prompt_sentinel.errors import ConfigError
from prompt_sentinel.run_layout import DEPLOY_RESULT, PROMOTION_DIFF, RENDERED_INFERENCE_SERVICE

FILES_DIR = "files"


@dataclass
class DeployResult:
    mode: str
    environment: str
    namespace: str
    name: str
    model_name: str
    version: int
    storage_uri: str
    changed_files: list[str] = field(default_factory=list)
    diff: str = ""
    ready: bool = False
    url: str | None = None
    branch: str | None = None
    commit: str | None = None
    out_dir: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _write_outputs(out_dir: str, files: dict[str, str]) -> None:
    if storage.is_gcs(out_dir):
        for rel, text in files.items():
            storage.write_text(storage.join(out_dir, rel), text)
        return
    with storage.atomic_output_dir(out_dir) as tmp:  # all files or none
        for rel, text in files.items():
            path = Path(tmp, rel)
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)


def deploy_model(
    version_uri: str,
    model_name: str,
    version: int,
    cfg: SentinelConfig,
    out_dir: str | None = None,
    kube_api: str | None = None,
    canary: int | None = None,
) -> DeployResult:
    """Deploy the registry version at ``version_uri`` (``<root>/<model_name>/v<version>``) to
    ``cfg.deploy.environment`` in ``cfg.deploy.mode``; refuses versions without ``_COMPLETE``.

    ``out_dir``: where the diff, changed overlay files, rendered InferenceService and ``deploy_result.json``
    go (local or gs://). ``kube_api``: API server URL for apply mode (None: in-cluster, else kubeconfig).
    ``canary``: start the version as a canary with this share of the traffic, also where the overlay declares no
    ``canaryTrafficPercent`` (:func:`prompt_sentinel.deploy.canary.plan_canary_start`; the monitoring pipeline).
    """
    check_model_name(model_name)
    if isinstance(version, bool) or not isinstance(version, int) or version < 1:
        raise ConfigError(f"version {version!r} is not a registry version; expected an integer >= 1")
    if not version_uri or not str(version_uri).strip():
        raise ConfigError("version_uri is empty; pass the registry version's URI (<root>/<model>/v<N>)")
    check_complete(version_uri, f"{model_name} v{version}")

    manifests = resolve_manifests_dir(cfg.deploy.manifests_dir)
    environment = cfg.deploy.environment
    overlay_dir(manifests, environment)
    if canary:
        promotion = plan_canary_start(
            manifests, environment, cfg, model_name=model_name, version=version,
            storage_uri=storage_uri_for(version_uri), percent=canary,
        )  # fmt: skip
    else:
        promotion = plan_promotion(
            manifests,
            environment,
            cfg,
            model_name=model_name,
            version=version,
            storage_uri=storage_uri_for(version_uri),
        )
    isvc = render_promotion(promotion)
    metadata = isvc["metadata"]
    result = DeployResult(
        mode=cfg.deploy.mode,
        environment=environment,
        namespace=metadata["namespace"],
        name=metadata["name"],
        model_name=model_name,
        version=version,
        storage_uri=promotion.after.storage_uri,
        changed_files=[c.relpath for c in promotion.changes],
        diff=promotion.diff,
        out_dir=out_dir,
    )
    if cfg.deploy.mode == "apply":
        final = apply_and_wait(isvc, kube_api, cfg.deploy.ready_timeout_s, cfg.deploy.poll_interval_s)
        result.ready, result.url = True, service_url(final)
    elif cfg.deploy.git_branch and promotion.changed:
        try:
            result.branch = cfg.deploy.git_branch.format(env=environment, model=model_name, version=version)
        except (KeyError, IndexError, ValueError) as exc:
            raise ConfigError(
                f"deploy.git_branch {cfg.deploy.git_branch!r} has an unknown placeholder ({exc}); "
                "allowed: {env}, {model}, {version}"
            ) from None
        result.commit = commit_to_branch(
            promotion,
            result.branch,
            f"Promote {model_name} v{version} to {environment}\n\n{promotion.before.describe()}\n"
            f"-> {promotion.after.describe()}\n",
        )

    if out_dir:
        files = {RENDERED_INFERENCE_SERVICE: to_yaml(isvc), PROMOTION_DIFF: promotion.diff}
        files.update({f"{FILES_DIR}/{c.relpath}": c.after for c in promotion.changes})
        files[DEPLOY_RESULT] = json.dumps(result.to_dict(), indent=2) + "\n"
        _write_outputs(out_dir, files)
    return result
