"""The Katib ``Experiment`` (``kubeflow.org/v1beta1``) that runs a model's hyperparameter search on a cluster.

:func:`render_experiment` builds it from the same search space a local Optuna study uses
(:func:`~prompt_sentinel.training.classical.search_space.optuna_space`,
:func:`~prompt_sentinel.training.transformer.search_space.transformer_space`):

* ``parameters`` — one per range (``double`` / ``int`` with ``uniform`` or ``logUniform``, or ``categorical``);
* ``objective`` — maximize ``validation_custom_score``, read by Katib's ``StdOut`` metrics collector from the
  lines ``sentinel hpo trial`` prints (:mod:`prompt_sentinel.hpo.trial`; ``latest`` strategy: the trial's
  final line); other reported metrics ride along as ``additionalMetricNames``;
* ``algorithm`` — Katib's ``tpe`` seeded with ``seed``, ``maxTrialCount`` = ``training.search.optuna.n_trials``;
* ``trialTemplate`` — a ``batch/v1`` Job running ``sentinel hpo trial`` in the pipeline image (the CUDA image,
  one ``nvidia.com/gpu``, the GPU node pool's node selector and toleration for the transformer: the constants of
  :mod:`prompt_sentinel.cluster`, which the pipeline's transformer step uses too), with the config passed as
  JSON and the MLflow token from ``pipeline.mlflow_secret``.

:func:`validate_experiment` checks a manifest against the pinned schema of the fields Katib requires
(``katib_experiment.schema.json`` beside this module) and the cross-references the webhook checks (every
``${trialParameters.x}`` declared, every reference a parameter, the objective a metric the trainer reports).
Both run before :func:`submit_experiment` creates anything.
"""

from __future__ import annotations

import json
import re
from functools import cache
from pathlib import Path
from typing import Any

from prompt_sentinel.cluster import GPU_RESOURCE, MLFLOW_TOKEN_ENV, gpu_node_selector, gpu_tolerations
from prompt_sentinel.config import CLASSICAL_MODELS, SentinelConfig
from prompt_sentinel.errors import ConfigError, DeployError
from prompt_sentinel.hpo.trial import KATIB_METRIC_FILTER, OBJECTIVE_METRIC, REPORTED_METRICS
from prompt_sentinel.training.search_ranges import Range

GROUP, VERSION, PLURAL, KIND = "kubeflow.org", "v1beta1", "experiments", "Experiment"
API_VERSION = f"{GROUP}/{VERSION}"
CONTAINER = "training-container"
SCHEMA_FILE = Path(__file__).with_name("katib_experiment.schema.json")
_TRIAL_PARAMETER = re.compile(r"\$\{trialParameters\.([A-Za-z0-9_]+)\}")
_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")


def _space(model: str, cfg: SentinelConfig) -> tuple[dict[str, Range], Any]:
    """The model's validated search space and its ``integer(name)`` rule."""
    if model in CLASSICAL_MODELS:
        from prompt_sentinel.training.classical.search_space import SEARCHABLE, is_integer, optuna_space

        return optuna_space(model, cfg.training.search), lambda name: is_integer(SEARCHABLE[model][name])
    if model == "transformer":
        from prompt_sentinel.training.transformer.search_space import is_integer, transformer_space

        return transformer_space(cfg.training.search, cfg.transformer, cfg.labels), is_integer
    raise ConfigError(f"unknown model {model!r}; allowed: {[*CLASSICAL_MODELS, 'transformer']}")


def trial_parameter_name(name: str) -> str:
    """``learning_rate`` → ``learningRate``: how the trial template refers to a parameter."""
    head, *rest = name.split("_")
    return head + "".join(part[:1].upper() + part[1:] for part in rest)


def check_objective(objective: str, additional: list[str]) -> None:
    """The objective and additional metrics must be ones the trial prints, or Katib would wait for them forever."""
    unknown = [m for m in [objective, *additional] if m not in REPORTED_METRICS]
    if unknown:
        raise ConfigError(
            f"Katib metric(s) {unknown} are not reported by the trainer (sentinel hpo trial prints "
            f"{list(REPORTED_METRICS)}); choose the objective among those"
        )


def render_experiment(
    model: str,
    cfg: SentinelConfig,
    *,
    train_uri: str,
    validation_uri: str,
    name: str | None = None,
    namespace: str | None = None,
    parallel_trials: int = 2,
    objective: str = OBJECTIVE_METRIC,
    base_model: str | None = None,
) -> dict[str, Any]:
    """The Experiment manifest (a dict) for ``model``'s search on ``train_uri`` / ``validation_uri`` (gs:// URIs)."""
    check_objective(objective, [])
    space, integer = _space(model, cfg)
    name = name or f"sentinel-{model.replace('_', '-')}-hpo"
    namespace = namespace or cfg.deploy.namespace
    for label, value in (("name", name), ("namespace", namespace)):
        if not _DNS_LABEL.match(value) or len(value) > 63:
            raise ConfigError(f"Experiment {label} {value!r} must be a DNS label (lowercase letters, digits, '-')")
    gpu = model == "transformer"
    optuna_cfg = cfg.training.search.optuna
    command = ["sentinel", "hpo", "trial", "--model", model, "--data", train_uri, "--val", validation_uri]
    if base_model:
        command += ["--base-model", base_model]
    command += ["--config-json", cfg.model_dump_json()]
    for param in space:
        command += ["--param", f"{param}=${{trialParameters.{trial_parameter_name(param)}}}"]
    container: dict[str, Any] = {
        "name": CONTAINER,
        "image": cfg.pipeline.gpu_image if gpu else cfg.pipeline.target_image,
        "command": command,
        "env": [{"name": "PYTHONUNBUFFERED", "value": "1"}],  # metric lines reach the collector as printed
    }
    if cfg.pipeline.mlflow_secret:
        container["env"].append(
            {
                "name": MLFLOW_TOKEN_ENV,
                "valueFrom": {
                    "secretKeyRef": {"name": cfg.pipeline.mlflow_secret, "key": MLFLOW_TOKEN_ENV, "optional": True}
                },
            }
        )
    pod_spec: dict[str, Any] = {"containers": [container], "restartPolicy": "Never"}
    if gpu:
        container["resources"] = {"limits": {GPU_RESOURCE: 1}}
        pod_spec["nodeSelector"] = gpu_node_selector(cfg.pipeline)
        pod_spec["tolerations"] = gpu_tolerations()
    additional = [m for m in REPORTED_METRICS if m != objective]
    manifest = {
        "apiVersion": API_VERSION,
        "kind": KIND,
        "metadata": {"name": name, "namespace": namespace, "labels": {"app.kubernetes.io/part-of": "prompt-sentinel"}},
        "spec": {
            "objective": {
                "type": "maximize",
                "objectiveMetricName": objective,
                "additionalMetricNames": additional,
                "metricStrategies": [{"name": m, "value": "latest"} for m in [objective, *additional]],
            },
            "algorithm": {
                "algorithmName": "tpe",
                "algorithmSettings": [{"name": "random_state", "value": str(cfg.seed)}],
            },
            "parallelTrialCount": parallel_trials,
            "maxTrialCount": optuna_cfg.n_trials,
            "maxFailedTrialCount": max(1, optuna_cfg.n_trials // 4),
            "metricsCollectorSpec": {
                "collector": {"kind": "StdOut"},
                "source": {"filter": {"metricsFormat": [KATIB_METRIC_FILTER]}},
            },
            "parameters": [rng.katib_parameter(param, integer(param)) for param, rng in space.items()],
            "trialTemplate": {
                "primaryContainerName": CONTAINER,
                "trialParameters": [
                    {"name": trial_parameter_name(param), "description": f"{model} {param}", "reference": param}
                    for param in space
                ],
                "trialSpec": {
                    "apiVersion": "batch/v1",
                    "kind": "Job",
                    "spec": {"backoffLimit": 0, "template": {"spec": pod_spec}},
                },
            },
        },
    }
    validate_experiment(manifest)
    return manifest


@cache
def experiment_schema() -> dict[str, Any]:
    return json.loads(SCHEMA_FILE.read_text())


def validate_experiment(manifest: dict[str, Any]) -> None:
    """Schema (pinned required fields) and cross-reference checks; :class:`DeployError` naming the path."""
    import jsonschema

    validator = jsonschema.Draft202012Validator(experiment_schema())
    errors = sorted(validator.iter_errors(manifest), key=lambda e: list(e.absolute_path))
    if errors:
        lines = [f"  {'.'.join(str(p) for p in e.absolute_path) or '<root>'}: {e.message}" for e in errors[:10]]
        raise DeployError("the Katib Experiment does not match the Experiment schema:\n" + "\n".join(lines))
    spec = manifest["spec"]
    parameters = {p["name"] for p in spec["parameters"]}
    template = spec["trialTemplate"]
    declared = {t["name"]: t["reference"] for t in template["trialParameters"]}
    dangling = {n: r for n, r in declared.items() if r not in parameters}
    if dangling:
        raise DeployError(f"trialParameters reference unknown parameters: {dangling}; parameters: {sorted(parameters)}")
    containers = template["trialSpec"]["spec"]["template"]["spec"]["containers"]
    if template["primaryContainerName"] not in {c["name"] for c in containers}:
        raise DeployError(f"primaryContainerName {template['primaryContainerName']!r} names no container")
    used = {m for c in containers for arg in c["command"] for m in _TRIAL_PARAMETER.findall(arg)}
    undeclared = used - set(declared)
    if undeclared:
        raise DeployError(f"the trial command uses undeclared trialParameters {sorted(undeclared)}")
    objective = spec["objective"]
    check_objective(objective["objectiveMetricName"], objective.get("additionalMetricNames", []))


def submit_experiment(manifest: dict[str, Any], api_client: Any | None = None) -> dict[str, Any]:
    """Create the Experiment through the Kubernetes API (``CustomObjectsApi``); validated first."""
    validate_experiment(manifest)
    from kubernetes import client, config

    if api_client is None:
        try:
            config.load_incluster_config()
        except config.ConfigException:
            try:
                config.load_kube_config()
            except Exception as exc:  # no kubeconfig, no in-cluster service account
                raise DeployError(f"no Kubernetes credentials to submit the Katib Experiment: {exc}") from exc
    api = client.CustomObjectsApi(api_client)
    try:
        return api.create_namespaced_custom_object(GROUP, VERSION, manifest["metadata"]["namespace"], PLURAL, manifest)
    except client.ApiException as exc:
        raise DeployError(
            f"creating Experiment {manifest['metadata']['name']} failed: {exc.status} {exc.reason}: {exc.body}"
        ) from exc
