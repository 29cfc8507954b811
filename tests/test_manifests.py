"""The kustomize manifests: every overlay renders, validates strictly and follows the security policy."""

from __future__ import annotations

import copy
import inspect
import re
import shutil
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from prompt_sentinel.config import DeployConfig, PipelineConfig, RegistryConfig
from prompt_sentinel.deploy.promote import image_name
from prompt_sentinel.deploy.render import (
    find_inference_service,
    is_kserve_kind,
    kustomize_build,
    validate_kserve_object,
)
from prompt_sentinel.errors import DeployError

REPO = Path(__file__).resolve().parents[1]
MANIFESTS = REPO / "manifests"
ENVS = ("dev", "staging", "prod")
K8S_VERSION = kubernetes_validate.latest_version()
EXPECTED_KINDS = {
    "ServiceAccount", "Role", "RoleBinding", "NetworkPolicy", "ServingRuntime", "InferenceService", "Service",
    "Deployment",
}  # fmt: skip


@pytest.fixture(scope="module")
def renders(tmp_path_factory: pytest.TempPathFactory) -> dict[str, list[dict[str, Any]]]:
    """Every overlay, plus prod with the Hugging Face GPU component (as an environment would opt in)."""
    out = {env: kustomize_build(MANIFESTS / "overlays" / env) for env in ENVS}
    scratch = tmp_path_factory.mktemp("gpu") / "manifests"
    shutil.copytree(MANIFESTS, scratch)
    gpu = scratch / "overlays" / "prod-gpu"
    gpu.mkdir()
    (gpu / "kustomization.yaml").write_text("resources: [../prod]\ncomponents: [../../components/huggingface-gpu]\n")
    out["prod-gpu"] = kustomize_build(gpu)
    return out


def _by_kind(objects: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [o for o in objects if o["kind"] == kind]


def _namespace(name: str) -> str:
    return f"prompt-sentinel-{name.removesuffix('-gpu')}"


def test_every_overlay_renders_all_kinds_into_its_namespace(renders):
    base = kustomize_build(MANIFESTS / "base")
    assert {o["kind"] for o in base} == EXPECTED_KINDS
    for name, objects in renders.items():
        assert {o["kind"] for o in objects} == EXPECTED_KINDS, name
        assert {o["metadata"]["namespace"] for o in objects} == {_namespace(name)}, name
        assert len(objects) == len({(o["kind"], o["metadata"]["name"]) for o in objects}), name


def test_builtin_kinds_validate_strictly(renders):
    checked = 0
    for name, objects in renders.items():
        for obj in objects:
            if is_kserve_kind(obj):
                continue
            kubernetes_validate.validate(obj, K8S_VERSION, strict=True)
            checked += 1
        assert checked, name
    # The validator is strict: a misspelt field is an error, not silently dropped.
    role = copy.deepcopy(_by_kind(renders["dev"], "Role")[0])
    role["rules"][0]["verb"] = role["rules"][0].pop("verbs")
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(role, K8S_VERSION, strict=True)


def test_kserve_objects_match_the_sdk_models(renders):
    for name, objects in renders.items():
        kserve_objects = [o for o in objects if is_kserve_kind(o)]
        assert len(kserve_objects) == 2, name
        for obj in kserve_objects:
            validate_kserve_object(obj)
    isvc = find_inference_service(renders["prod"])
    typo = copy.deepcopy(isvc)
    typo["spec"]["predictor"]["model"]["storageURI"] = typo["spec"]["predictor"]["model"].pop("storageUri")
    with pytest.raises(DeployError, match="storageURI: unknown field"):
        validate_kserve_object(typo)
    wrong_type = copy.deepcopy(isvc)
    wrong_type["spec"]["predictor"]["minReplicas"] = "3"
    with pytest.raises(DeployError, match="minReplicas: expected int"):
        validate_kserve_object(wrong_type)


# --- policy -----------------------------------------------------------------------------------------------

_CPU = re.compile(r"^([0-9.]+)(m?)$")
_MEM = re.compile(r"^([0-9.]+)(Ki|Mi|Gi|Ti|k|M|G|T)?$")
_MEM_UNITS = {None: 1, "k": 1e3, "M": 1e6, "G": 1e9, "T": 1e12, "Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40}


def _quantity(resource: str, value: str) -> float:
    if resource == "cpu":
        number, milli = _CPU.match(str(value)).groups()
        return float(number) / (1000 if milli else 1)
    if resource == "memory":
        number, unit = _MEM.match(str(value)).groups()
        return float(number) * _MEM_UNITS[unit]
    return float(value)


def _containers(obj: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """Every container an object defines, with a path for messages."""
    spec = obj.get("spec") or {}
    found: list[tuple[str, dict[str, Any]]] = []
    if obj["kind"] in ("ServingRuntime", "ClusterServingRuntime"):
        found += [(f"spec.containers[{i}]", c) for i, c in enumerate(spec.get("containers") or [])]
    if obj["kind"] in ("Deployment", "StatefulSet", "DaemonSet"):
        pod = (spec.get("template") or {}).get("spec") or {}
        for key in ("containers", "initContainers"):
            found += [(f"spec.template.spec.{key}[{i}]", c) for i, c in enumerate(pod.get(key) or [])]
    if obj["kind"] == "InferenceService":
        for component in ("predictor", "transformer", "explainer"):
            part = spec.get(component) or {}
            if "model" in part:
                found.append((f"spec.{component}.model", part["model"]))
            for key in ("containers", "initContainers"):
                found += [(f"spec.{component}.{key}[{i}]", c) for i, c in enumerate(part.get(key) or [])]
    return found


def policy_violations(objects: list[dict[str, Any]]) -> list[str]:
    problems: list[str] = []
    for obj in objects:
        where = f"{obj['kind']}/{obj['metadata']['name']}"
        containers = _containers(obj)
        if obj["kind"] in ("ServingRuntime", "InferenceService", "Deployment") and not containers:
            problems.append(f"{where}: no containers found")
        for path, c in containers:
            sc = c.get("securityContext") or {}
            if sc.get("runAsNonRoot") is not True:
                problems.append(f"{where} {path}: runAsNonRoot is not true")
            if sc.get("allowPrivilegeEscalation") is not False:
                problems.append(f"{where} {path}: allowPrivilegeEscalation is not false")
            if "ALL" not in ((sc.get("capabilities") or {}).get("drop") or []):
                problems.append(f"{where} {path}: capabilities.drop lacks ALL")
            if sc.get("readOnlyRootFilesystem") is not True:
                problems.append(f"{where} {path}: readOnlyRootFilesystem is not true")
            if (sc.get("seccompProfile") or {}).get("type") != "RuntimeDefault":
                problems.append(f"{where} {path}: seccompProfile is not RuntimeDefault")
            if sc.get("runAsUser") == 0 or sc.get("privileged"):
                problems.append(f"{where} {path}: runs as root or privileged")
            resources = c.get("resources") or {}
            for res in ("cpu", "memory"):
                request = (resources.get("requests") or {}).get(res)
                limit = (resources.get("limits") or {}).get(res)
                if request is None or limit is None:
                    problems.append(f"{where} {path}: {res} request and limit are required")
                elif _quantity(res, request) > _quantity(res, limit):
                    problems.append(f"{where} {path}: {res} request {request} exceeds limit {limit}")
            image = c.get("image")
            if image is not None and (
                "@sha256:" not in image and (image_name(image) == image or image.endswith(":latest"))
            ):
                problems.append(f"{where} {path}: image {image!r} is not pinned to a tag")
        if obj["kind"] == "InferenceService":
            predictor = obj["spec"]["predictor"]
            pod = predictor.get("securityContext") or {}
            if pod.get("runAsNonRoot") is not True or (pod.get("seccompProfile") or {}).get("type") != "RuntimeDefault":
                problems.append(f"{where}: pod securityContext needs runAsNonRoot and RuntimeDefault seccomp")
            empty_dirs = {v["name"] for v in predictor.get("volumes") or [] if "emptyDir" in v}
            mounts = {m["mountPath"]: m["name"] for m in predictor["model"].get("volumeMounts") or []}
            if mounts.get("/tmp") not in empty_dirs:
                problems.append(f"{where}: a read-only root filesystem needs an emptyDir mounted at /tmp")
    return problems


def test_every_container_is_hardened_limited_and_pinned(renders):
    for name, objects in renders.items():
        assert policy_violations(objects) == [], name
    # The policy check itself catches what it claims to.
    broken = copy.deepcopy(renders["prod"])
    isvc = find_inference_service(broken)
    isvc["spec"]["predictor"]["model"]["securityContext"]["capabilities"]["drop"] = []
    del isvc["spec"]["predictor"]["model"]["resources"]["limits"]["memory"]
    _by_kind(broken, "ServingRuntime")[0]["spec"]["containers"][0]["image"] = "ghcr.io/x/serving:latest"
    found = "\n".join(policy_violations(broken))
    assert "capabilities.drop lacks ALL" in found
    assert "memory request and limit are required" in found
    assert "is not pinned" in found


def test_inference_service_essentials(renders):
    min_replicas = {}
    for name, objects in renders.items():
        isvc = find_inference_service(objects)
        predictor = isvc["spec"]["predictor"]
        model = predictor["model"]
        match = re.fullmatch(r"gs://[^/]+/.+/([a-z0-9-]+)/v([0-9]+)/", model["storageUri"])
        assert match, model["storageUri"]
        assert isvc["metadata"]["labels"]["prompt-sentinel.io/model-version"] == f"v{match.group(2)}"
        assert isvc["metadata"]["annotations"]["prompt-sentinel.io/model-name"] == match.group(1)
        assert 1 <= predictor["minReplicas"] <= predictor["maxReplicas"]
        assert model["readinessProbe"]["httpGet"]["path"]
        sa = {o["metadata"]["name"]: o for o in _by_kind(objects, "ServiceAccount")}
        serving_sa = sa[predictor["serviceAccountName"]]
        assert serving_sa["metadata"]["annotations"]["iam.gke.io/gcp-service-account"].endswith(".gserviceaccount.com")
        assert serving_sa["automountServiceAccountToken"] is False
        if name != "prod-gpu":
            runtime = _by_kind(objects, "ServingRuntime")[0]
            assert model["runtime"] == runtime["metadata"]["name"]
            formats = {f["name"] for f in runtime["spec"]["supportedModelFormats"]}
            assert model["modelFormat"]["name"] in formats
            min_replicas[name] = predictor["minReplicas"]
        # Only prod canaries; the caveat lives next to the setting.
        assert ("canaryTrafficPercent" in predictor) == name.startswith("prod"), name
    assert min_replicas["prod"] >= 2 and min_replicas["prod"] >= min_replicas["staging"] >= min_replicas["dev"]
    assert "RawDeployment" in (MANIFESTS / "overlays" / "prod" / "model.yaml").read_text()


def test_gpu_variant_runs_the_hugging_face_runtime_on_a_gpu(renders):
    isvc = find_inference_service(renders["prod-gpu"])
    predictor = isvc["spec"]["predictor"]
    model = predictor["model"]
    assert model["modelFormat"]["name"] == "huggingface"
    assert {"--task=sequence_classification", "--return_probabilities"} <= set(model["args"])
    assert model["resources"]["requests"]["nvidia.com/gpu"] == model["resources"]["limits"]["nvidia.com/gpu"] == "1"
    assert predictor["nodeSelector"]["cloud.google.com/gke-accelerator"] == PipelineConfig().gpu_accelerator
    assert any(t["key"] == "nvidia.com/gpu" for t in predictor["tolerations"])
    shm = {m["name"] for m in model["volumeMounts"] if m["mountPath"] == "/dev/shm"}
    assert any(v["name"] in shm and v["emptyDir"].get("medium") == "Memory" for v in predictor["volumes"])
    # The overlay's pin still applies to the variant.
    assert model["storageUri"] == find_inference_service(renders["prod"])["spec"]["predictor"]["model"]["storageUri"]


def test_rbac_lets_the_pipeline_change_inference_services_in_its_namespace_only(renders):
    for name, objects in renders.items():
        (role,) = _by_kind(objects, "Role")
        assert role["rules"] == [
            {
                "apiGroups": ["serving.kserve.io"],
                "resources": ["inferenceservices"],
                "verbs": ["get", "create", "patch"],
            }
        ]
        (binding,) = _by_kind(objects, "RoleBinding")
        assert binding["roleRef"] == {
            "apiGroup": "rbac.authorization.k8s.io",
            "kind": "Role",
            "name": role["metadata"]["name"],
        }
        (subject,) = binding["subjects"]
        accounts = {o["metadata"]["name"] for o in _by_kind(objects, "ServiceAccount")}
        assert subject["kind"] == "ServiceAccount" and subject["name"] in accounts
        assert subject["namespace"] == _namespace(name)
    assert not _by_kind(renders["dev"], "ClusterRole") and not _by_kind(renders["dev"], "ClusterRoleBinding")


def test_network_policy_admits_only_the_gateway_path_and_the_namespace(renders):
    for objects in renders.values():
        (policy,) = [
            p for p in _by_kind(objects, "NetworkPolicy") if p["metadata"]["name"] == "prompt-sentinel-predictor"
        ]
        isvc = find_inference_service(objects)
        spec = policy["spec"]
        assert spec["podSelector"]["matchLabels"] == {"serving.kserve.io/inferenceservice": isvc["metadata"]["name"]}
        assert spec["policyTypes"] == ["Ingress"]
        (rule,) = spec["ingress"]
        assert "ports" not in rule or rule["ports"]
        sources = rule["from"]
        same_namespace = [s for s in sources if set(s) == {"podSelector"}]
        assert same_namespace == [{"podSelector": {}}]
        others = [s for s in sources if "namespaceSelector" in s]
        assert len(others) + len(same_namespace) == len(sources)
        for source in others:
            # Each outside source is one named namespace AND specific pods in it, never a whole namespace.
            assert set(source["namespaceSelector"]["matchLabels"]) == {"kubernetes.io/metadata.name"}
            assert source["podSelector"]["matchLabels"]
        names = {s["namespaceSelector"]["matchLabels"]["kubernetes.io/metadata.name"] for s in others}
        assert names == {"istio-system", "knative-serving"}


def test_predictions_are_logged_to_the_sink_and_only_the_predictor_reaches_it(renders):
    for name, objects in renders.items():
        isvc = find_inference_service(objects)
        logger = isvc["spec"]["predictor"]["logger"]
        assert logger["mode"] == "all"
        (service,) = [o for o in _by_kind(objects, "Service") if o["metadata"]["name"] == "prompt-sentinel-logger-sink"]
        assert logger["url"] == f"http://{service['metadata']['name']}/", name  # same namespace, short name
        (deployment,) = _by_kind(objects, "Deployment")
        pod = deployment["spec"]["template"]
        assert service["spec"]["selector"].items() <= pod["metadata"]["labels"].items()
        (container,) = pod["spec"]["containers"]
        assert container["image"].startswith("ghcr.io/prompt-sentinel/logger-sink:")
        assert any(a.startswith("--log-dir=gs://") for a in container["args"])
        assert service["spec"]["ports"][0]["targetPort"] == container["ports"][0]["containerPort"]
        accounts = {o["metadata"]["name"]: o for o in _by_kind(objects, "ServiceAccount")}
        assert accounts[pod["spec"]["serviceAccountName"]]["automountServiceAccountToken"] is False
        (policy,) = [
            p for p in _by_kind(objects, "NetworkPolicy") if p["metadata"]["name"] == deployment["metadata"]["name"]
        ]
        assert policy["spec"]["podSelector"]["matchLabels"].items() <= pod["metadata"]["labels"].items()
        sources = policy["spec"]["ingress"][0]["from"]
        assert {
            "podSelector": {"matchLabels": {"serving.kserve.io/inferenceservice": isvc["metadata"]["name"]}}
        } in sources
        assert all(s.get("podSelector", {}).get("matchLabels") for s in sources), "never a whole namespace"


def _exported_metrics() -> set[str]:
    """Every sample name the predictor and the logger sink export (counters with _total, histograms with buckets)."""
    from prometheus_client import REGISTRY

    import serving.metrics  # noqa: F401 - registers the predictor's metrics
    from prompt_sentinel.config import MonitoringConfig
    from serving.logger_sink import LoggerSink

    class _Writer:
        written = dropped = 0

    sink = LoggerSink(_Writer(), MonitoringConfig(), None)  # type: ignore[arg-type]
    names = set()
    for registry in (REGISTRY, sink.registry):
        for family in registry.collect():
            if family.name.startswith("sentinel_"):
                suffixes = {"counter": ["_total"], "histogram": ["_bucket", "_sum", "_count"]}.get(family.type, [""])
                names |= {family.name + suffix for suffix in suffixes}
    return names


def _metric_names(expr: str) -> set[str]:
    return set(re.findall(r"\b(sentinel_[a-z_]+)", expr))


def test_monitoring_dashboard_and_alerts_render_and_use_only_exported_metrics():
    import json

    objects = kustomize_build(MANIFESTS / "monitoring")
    kinds = {o["kind"]: o for o in objects}
    assert set(kinds) == {"ConfigMap", "PrometheusRule"}
    assert {o["metadata"]["namespace"] for o in objects} == {"monitoring"}
    configmap = kinds["ConfigMap"]
    kubernetes_validate.validate(configmap, K8S_VERSION, strict=True)
    assert configmap["metadata"]["labels"]["grafana_dashboard"] == "1"
    (dashboard_json,) = configmap["data"].values()
    dashboard = json.loads(dashboard_json)
    exported = _exported_metrics()
    assert {"sentinel_predictions_total", "sentinel_request_latency_seconds_bucket", "sentinel_model_info"} <= exported
    used: set[str] = set()
    for panel in dashboard["panels"]:
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            assert target["expr"].count("(") == target["expr"].count(")"), target["expr"]
            used |= _metric_names(target["expr"])
    assert used <= exported, used - exported
    assert {"sentinel_prediction_score_bucket", "sentinel_request_latency_seconds_bucket"} <= used

    rules = kinds["PrometheusRule"]["spec"]["groups"]
    alerts = {r["alert"]: r for g in rules for r in g["rules"]}
    assert {"PromptSentinelHighErrorRate", "PromptSentinelLatencyP95High", "PromptSentinelBlockRateJump"} <= set(alerts)
    for name, rule in alerts.items():
        assert rule["labels"]["severity"] in ("warning", "critical"), name
        assert rule["annotations"]["summary"] and re.fullmatch(r"[0-9]+m", rule["for"]), name
        assert rule["expr"].count("(") == rule["expr"].count(")"), name
        assert _metric_names(rule["expr"]) <= exported, (name, _metric_names(rule["expr"]) - exported)
    # The latency alert holds the served model to the same p95 limit selection demanded offline.
    from prompt_sentinel.config import GateConfig

    limit = float(re.search(r"> ([0-9.]+)\s*$", alerts["PromptSentinelLatencyP95High"]["expr"].strip()).group(1))
    assert limit * 1000 == GateConfig().max_latency_p95_ms


def test_argocd_has_one_application_per_environment(renders):
    objects = kustomize_build(MANIFESTS / "argocd")
    apps = {o["metadata"]["name"]: o for o in objects if o["kind"] == "Application"}
    (project,) = [o for o in objects if o["kind"] == "AppProject"]
    allowed = {(d["server"], d["namespace"]) for d in project["spec"]["destinations"]}
    assert set(apps) == {f"prompt-sentinel-{env}" for env in ENVS}
    for env in ENVS:
        spec = apps[f"prompt-sentinel-{env}"]["spec"]
        assert spec["project"] == project["metadata"]["name"]
        assert spec["source"]["path"] == f"manifests/overlays/{env}"
        assert spec["source"]["repoURL"] in project["spec"]["sourceRepos"]
        assert (REPO / spec["source"]["path"] / "kustomization.yaml").is_file()
        overlay = yaml.safe_load((REPO / spec["source"]["path"] / "kustomization.yaml").read_text())
        assert spec["destination"]["namespace"] == overlay["namespace"]
        assert (spec["destination"]["server"], spec["destination"]["namespace"]) in allowed
    rendered_kinds = {(o["apiVersion"].rpartition("/")[0], o["kind"]) for env in ENVS for o in renders[env]}
    whitelist = {(w["group"], w["kind"]) for w in project["spec"]["namespaceResourceWhitelist"]}
    assert rendered_kinds <= whitelist


def test_manifests_agree_with_the_config_defaults():
    base = {(o["kind"], o["metadata"]["name"]): o for o in kustomize_build(MANIFESTS / "base")}
    runtime = base[("ServingRuntime", "prompt-sentinel")]
    assert runtime["spec"]["containers"][0]["image"] == DeployConfig().serving_image
    assert ("InferenceService", RegistryConfig().model_name) in base
    environments = set(inspect.get_annotations(DeployConfig, eval_str=True)["environment"].__args__)
    overlays = {p.name for p in (MANIFESTS / "overlays").iterdir() if (p / "kustomization.yaml").is_file()}
    assert environments == overlays == set(ENVS)


@pytest.mark.parametrize("name", ["recurring-run.yaml", "monitoring-recurring-run.yaml"])
def test_recurring_run_definition_matches_the_kfp_client(name):
    import kfp

    spec = yaml.safe_load((MANIFESTS / "kfp" / name).read_text())
    accepted = set(inspect.signature(kfp.Client.create_recurring_run).parameters) - {"self", "experiment_id"}
    assert set(spec) <= accepted
    assert spec["max_concurrency"] == 1 and len(spec["cron_expression"].split()) == 6
    service_accounts = {
        o["metadata"]["name"] for o in kustomize_build(MANIFESTS / "base") if o["kind"] == "ServiceAccount"
    }
    assert spec["service_account"] in service_accounts
    compiled = REPO / spec["pipeline_package_path"]
    assert compiled.is_file(), "run `make compile`"
    pipeline_spec = next(yaml.safe_load_all(compiled.read_text()))
    inputs = pipeline_spec["root"]["inputDefinitions"]["parameters"]
    required = {name for name, p in inputs.items() if not p.get("isOptional")}
    assert required <= set(spec["params"]) <= set(inputs)
