"""Apply an InferenceService with server-side apply and wait for it to become Ready.

Only the InferenceService is applied: the ServingRuntime, service accounts, RBAC and NetworkPolicy belong to
GitOps (Argo CD), and the pipeline's service account may only get/create/patch InferenceServices
(``manifests/base/rbac.yaml``).
"""

from __future__ import annotations

import contextlib
import json
import logging
import time
from typing import TYPE_CHECKING, Any

from prompt_sentinel.deploy.render import ISVC_GROUP, ISVC_PLURAL, ISVC_VERSION
from prompt_sentinel.errors import DeployError

if TYPE_CHECKING:
    from kubernetes.client import ApiClient

log = logging.getLogger(__name__)

FIELD_MANAGER = "prompt-sentinel"
APPLY_CONTENT_TYPE = "application/apply-patch+yaml"
_REQUEST_TIMEOUT_S = 30


def api_client(kube_api: str | None = None) -> ApiClient:
    """A Kubernetes API client.

    ``kube_api``: an API server URL reached without credentials (``kubectl proxy``, tests). None: the pod's
    service account when running in a cluster (the pipeline step), else the current kubeconfig context.
    """
    from kubernetes import client, config

    if kube_api:
        if not kube_api.startswith(("http://", "https://")):
            raise DeployError(f"kube_api {kube_api!r} is not an http(s) URL")
        configuration = client.Configuration()
        configuration.host = kube_api.rstrip("/")
        return client.ApiClient(configuration)
    try:
        config.load_incluster_config()
    except config.ConfigException:
        try:
            config.load_kube_config()
        except (config.ConfigException, FileNotFoundError, TypeError) as exc:
            raise DeployError(
                "no Kubernetes API to deploy to: not in a cluster and no usable kubeconfig "
                f"({exc}); pass --kube-api or use deploy.mode=gitops"
            ) from exc
    return client.ApiClient()


def isvc_path(namespace: str, name: str) -> str:
    return f"/apis/{ISVC_GROUP}/{ISVC_VERSION}/namespaces/{namespace}/{ISVC_PLURAL}/{name}"


def _call(client: ApiClient, method: str, path: str, **kwargs: Any) -> dict[str, Any]:
    from kubernetes.client.exceptions import ApiException
    from urllib3.exceptions import HTTPError

    try:
        return client.call_api(
            path,
            method,
            response_type="object",
            auth_settings=["BearerToken"],
            _return_http_data_only=True,
            _request_timeout=_REQUEST_TIMEOUT_S,
            **kwargs,
        )
    except ApiException as exc:
        detail = exc.reason
        with contextlib.suppress(TypeError, ValueError, AttributeError):  # not a Kubernetes Status body
            detail = json.loads(exc.body).get("message") or detail
        raise DeployError(f"{method} {path} was refused by the Kubernetes API ({exc.status}): {detail}") from None
    except HTTPError as exc:
        host = client.configuration.host
        raise DeployError(f"cannot reach the Kubernetes API at {host}: {exc}") from exc


def server_side_apply(client: ApiClient, obj: dict[str, Any]) -> dict[str, Any]:
    """PATCH ``obj`` as a server-side apply owned by the ``prompt-sentinel`` field manager (forced).

    Forcing takes over fields another manager set by hand (``kubectl edit``): the pipeline is the declared
    owner of the InferenceService in apply-mode environments.
    """
    metadata = obj.get("metadata") or {}
    namespace, name = metadata.get("namespace"), metadata.get("name")
    if not namespace or not name:
        raise DeployError(f"the InferenceService to apply needs metadata.name and metadata.namespace, got {metadata}")
    return _call(
        client,
        "PATCH",
        isvc_path(namespace, name),
        query_params=[("fieldManager", FIELD_MANAGER), ("force", "true")],
        header_params={"Content-Type": APPLY_CONTENT_TYPE, "Accept": "application/json"},
        body=obj,  # serialized as JSON, which is valid YAML for the apply-patch+yaml content type
    )


def get_inference_service(client: ApiClient, namespace: str, name: str) -> dict[str, Any]:
    return _call(client, "GET", isvc_path(namespace, name), header_params={"Accept": "application/json"})


def ready_condition(obj: dict[str, Any]) -> dict[str, Any] | None:
    for condition in (obj.get("status") or {}).get("conditions") or []:
        if condition.get("type") == "Ready":
            return condition
    return None


def is_ready(obj: dict[str, Any]) -> bool:
    """Ready, and the status describes the spec we applied (not the previous generation's)."""
    condition = ready_condition(obj)
    if not condition or condition.get("status") != "True":
        return False
    generation = (obj.get("metadata") or {}).get("generation")
    observed = (obj.get("status") or {}).get("observedGeneration")
    return generation is None or observed is None or observed >= generation


def service_url(obj: dict[str, Any]) -> str | None:
    status = obj.get("status") or {}
    return status.get("url") or (status.get("address") or {}).get("url")


def wait_until_ready(
    client: ApiClient, namespace: str, name: str, timeout_s: float, poll_interval_s: float
) -> dict[str, Any]:
    """Poll until the InferenceService is Ready; :class:`DeployError` with the last condition on timeout."""
    deadline = time.monotonic() + timeout_s
    while True:
        obj = get_inference_service(client, namespace, name)
        if is_ready(obj):
            return obj
        if time.monotonic() >= deadline:
            condition = ready_condition(obj) or {}
            state = condition.get("status", "no Ready condition yet")
            reason = ": ".join(str(p) for p in (condition.get("reason"), condition.get("message")) if p)
            raise DeployError(
                f"InferenceService {namespace}/{name} not Ready after {timeout_s:g} s (Ready={state}"
                f"{'; ' + reason if reason else ''}); check `kubectl -n {namespace} describe isvc {name}`"
            )
        log.info("waiting for %s/%s to become Ready (%s)", namespace, name, (ready_condition(obj) or {}).get("reason"))
        time.sleep(min(poll_interval_s, max(0.0, deadline - time.monotonic())))


def apply_and_wait(
    isvc: dict[str, Any], kube_api: str | None, timeout_s: float, poll_interval_s: float
) -> dict[str, Any]:
    """Server-side apply ``isvc``, then wait until it is Ready; returns the final object."""
    client = api_client(kube_api)
    try:
        applied = server_side_apply(client, isvc)
        metadata = applied.get("metadata") or isvc["metadata"]
        return wait_until_ready(client, metadata["namespace"], metadata["name"], timeout_s, poll_interval_s)
    finally:
        client.close()
