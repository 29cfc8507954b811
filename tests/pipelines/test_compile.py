"""The compiled pipeline: golden file, every stage present, cluster settings (GPU, resources, retries, caching,
secrets) on the right tasks. Parses the YAML; nothing runs."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from pipelines.submit import compile_pipeline, compiled_pipeline_path, pipeline_inputs
from prompt_sentinel.config import SentinelConfig

STAGES = {
    "plan-data",
    "assemble-corpus",
    "given-dataset",
    "validate-data",
    "split-data",
    "balance-report",
    "plan-classical",
    "plan-transformer",
    "train-classical-model",
    "train-transformer-model",
    "evaluate-candidate",
    "ensemble-candidate",
    "select-model",
    "push-model-version",
    "deploy-model-version",
    "record-run-status",
}


@pytest.fixture(scope="module")
def compiled(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any], dict[str, Any]]:
    path = compile_pipeline(tmp_path_factory.mktemp("compile") / "pipeline.yaml")
    docs = list(yaml.safe_load_all(path.read_text()))
    assert len(docs) == 2, "expected the pipeline spec and the kubernetes platform spec"
    return path, docs[0], docs[1]["platforms"]["kubernetes"]["deploymentSpec"]["executors"]


def _all_tasks(spec: dict[str, Any]) -> dict[str, tuple[str, dict[str, Any]]]:
    """Every task in the root DAG and nested DAGs: name -> (enclosing component, task spec)."""
    found = {"root": spec["root"]}
    found.update(spec["components"])
    tasks = {}
    for owner, comp in found.items():
        for name, task in (comp.get("dag") or {}).get("tasks", {}).items():
            tasks[name] = (owner, task)
    return tasks


def _executor(spec: dict[str, Any], task: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    label = spec["components"][task["componentRef"]["name"]]["executorLabel"]
    return label, spec["deploymentSpec"]["executors"][label]["container"]


def test_committed_yaml_matches_a_fresh_compile(compiled, repo_root: Path) -> None:
    path, _, _ = compiled
    golden = compiled_pipeline_path()
    assert golden == repo_root / "pipelines" / "compiled" / "training_pipeline.yaml"
    assert golden.is_file(), "run `make compile` and commit pipelines/compiled/training_pipeline.yaml"
    assert path.read_text() == golden.read_text(), (
        "the pipeline changed shape: run `make compile` and commit pipelines/compiled/training_pipeline.yaml"
    )


def test_compile_is_deterministic_and_has_no_local_paths(compiled, tmp_path: Path, repo_root: Path) -> None:
    path, _, _ = compiled
    again = compile_pipeline(tmp_path / "again.yaml")
    text = path.read_text()
    assert again.read_text() == text
    for local in (str(repo_root), str(tmp_path.parent), "/tmp/", str(Path.home())):
        assert local not in text


def test_every_stage_is_a_task(compiled) -> None:
    _, spec, _ = compiled
    tasks = _all_tasks(spec)
    missing = {s for s in STAGES if not any(n == s or n.startswith(f"{s}-") for n in tasks)}
    assert not missing
    # display names make the KFP UI readable
    assert tasks["train-transformer-model"][1]["taskInfo"]["name"] == "train transformer (GPU)"
    assert spec["pipelineInfo"]["name"] == "prompt-sentinel-training"


def test_pipeline_parameters(compiled) -> None:
    path, _, _ = compiled
    inputs = pipeline_inputs(path)
    # a run starts from a dataset or from a corpus recipe: neither parameter is required on its own
    assert inputs["data_uri"] == {"type": "STRING", "default": "", "required": False}
    assert inputs["recipe_uri"] == {"type": "STRING", "default": "", "required": False}
    assert inputs["exclude_uris"] == {"type": "LIST", "default": [], "required": False}
    assert inputs["models"]["type"] == "LIST"
    assert inputs["models"]["default"] == SentinelConfig().training.models
    assert inputs["train_transformer"] == {"type": "BOOLEAN", "default": False, "required": False}
    for name in ("recipe_root", "blind_uri", "config_json", "registry_root", "model_name", "mlflow_uri", "results_uri"):
        assert inputs[name]["default"] == "" and not inputs[name]["required"]


def test_transformer_task_runs_on_a_gpu_node(compiled) -> None:
    _, spec, platform = compiled
    owner, task = _all_tasks(spec)["train-transformer-model"]
    label, container = _executor(spec, task)
    assert container["resources"]["accelerator"]["resourceType"] == "nvidia.com/gpu"
    assert container["resources"]["accelerator"]["resourceCount"] == "1"
    assert container["image"] == SentinelConfig().pipeline.gpu_image
    k8s = platform[label]
    accelerator = SentinelConfig().pipeline.gpu_accelerator
    assert k8s["nodeSelector"]["labels"] == {"cloud.google.com/gke-accelerator": accelerator}
    assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in k8s["tolerations"]
    # Only when requested: the branch's trigger is the plan-transformer output.
    branch = _all_tasks(spec)[owner.removeprefix("comp-")][1]
    assert "plan-transformer-Output" in branch["triggerPolicy"]["condition"]


def test_resources_on_every_task_and_gpu_only_on_the_transformer(compiled) -> None:
    _, spec, _ = compiled
    for name, (_, task) in _all_tasks(spec).items():
        if "executorLabel" not in spec["components"][task["componentRef"]["name"]]:
            continue  # a DAG (loop / condition / exit handler), not a container
        _, container = _executor(spec, task)
        resources = container.get("resources") or {}
        assert resources.get("resourceCpuRequest") and resources.get("resourceMemoryRequest"), name
        if name != "train-transformer-model":
            assert "accelerator" not in resources, name
        assert container["image"] in {SentinelConfig().pipeline.target_image, SentinelConfig().pipeline.gpu_image}


def test_retries_caching_and_secrets(compiled) -> None:
    _, spec, platform = compiled
    tasks = _all_tasks(spec)
    retries = SentinelConfig().pipeline.training_retries
    for name in ("train-classical-model", "train-transformer-model"):
        assert tasks[name][1]["retryPolicy"]["maxRetryCount"] == retries
        label, _ = _executor(spec, tasks[name][1])
        assert platform[label]["secretAsEnv"][0]["secretName"] == SentinelConfig().pipeline.mlflow_secret
    for name in ("validate-data", "split-data", "balance-report", "train-classical-model", "evaluate-candidate"):
        assert tasks[name][1]["cachingOptions"].get("enableCache") is True, name
    for name in ("select-model", "push-model-version", "deploy-model-version", "record-run-status"):
        assert not tasks[name][1]["cachingOptions"].get("enableCache"), name


def test_control_flow(compiled) -> None:
    _, spec, _ = compiled
    tasks = _all_tasks(spec)
    # classical fan-out over the plan's output, collected by selection
    loop_owner = tasks["train-classical-model"][0].removeprefix("comp-")
    loop = tasks[loop_owner][1]
    assert "plan-classical-Output" in loop["parameterIterator"]["items"]["inputParameter"]
    # the ensemble step sits after both branches: the collected classical models plus the transformer's evaluation
    # URI (the branch's OneOf), and selection takes its evaluation URI
    ensemble = tasks["ensemble-candidate"][1]
    assert ensemble["inputs"]["artifacts"]["classical"]["taskOutputArtifact"]["producerTask"].startswith("for-loop")
    assert "transformer_evaluation" in ensemble["inputs"]["parameters"]
    select_inputs = tasks["select-model"][1]["inputs"]["parameters"]
    assert select_inputs["ensemble_evaluation"]["taskOutputParameter"]["producerTask"] == "ensemble-candidate"
    # push and deploy only when selection promoted a model
    push_owner = tasks["push-model-version"][0].removeprefix("comp-")
    assert tasks["deploy-model-version"][0].removeprefix("comp-") == push_owner
    assert "select-model-Output" in tasks[push_owner][1]["triggerPolicy"]["condition"]
    # the exit handler records the final status whatever happens
    status = tasks["record-run-status"][1]
    assert status["triggerPolicy"]["strategy"] == "ALL_UPSTREAM_TASKS_COMPLETED"
    assert "taskFinalStatus" in status["inputs"]["parameters"]["status"]


def test_compile_settings_come_from_the_config(tmp_path: Path) -> None:
    cfg = SentinelConfig()
    cfg.pipeline.gpu_accelerator = "nvidia-tesla-t4"
    cfg.pipeline.training_retries = 0
    cfg.pipeline.mlflow_secret = None
    docs = list(yaml.safe_load_all(compile_pipeline(tmp_path / "p.yaml", cfg).read_text()))
    spec, executors = docs[0], docs[1]["platforms"]["kubernetes"]["deploymentSpec"]["executors"]
    tasks = _all_tasks(spec)
    label, _ = _executor(spec, tasks["train-transformer-model"][1])
    assert executors[label]["nodeSelector"]["labels"]["cloud.google.com/gke-accelerator"] == "nvidia-tesla-t4"
    assert "secretAsEnv" not in executors[label]
    assert "retryPolicy" not in tasks["train-classical-model"][1]


@pytest.mark.parametrize("bad", ["pipeline.json", "compiled_dir"])
def test_compile_refuses_a_bad_output_path(tmp_path: Path, bad: str) -> None:
    from prompt_sentinel.errors import ConfigError

    target = tmp_path / bad
    if bad == "compiled_dir":
        target.mkdir()
    with pytest.raises(ConfigError, match="--out"):
        compile_pipeline(target)
