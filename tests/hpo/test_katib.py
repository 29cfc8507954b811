"""The Katib Experiment: rendered offline, validated against the pinned schema, and its trial command run for real."""

from __future__ import annotations

import copy
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from prompt_sentinel.cluster import GPU_NODE_LABEL, GPU_RESOURCE, GPU_TOLERATION
from prompt_sentinel.config import load_config
from prompt_sentinel.errors import ConfigError, DeployError, TrainingError
from prompt_sentinel.hpo.katib import KIND, render_experiment, trial_parameter_name, validate_experiment
from prompt_sentinel.hpo.trial import KATIB_METRIC_FILTER, OBJECTIVE_METRIC, parse_metric_lines, run_trial
from tests.fixtures.tiny_bert import TINY_TRANSFORMER, build_tiny_bert, demo_frames

CLASSICAL = ["featurizer.kind=tfidf", "mlflow.enabled=false", "training.search.cv_folds=2"]


def _render(model: str, *sets: str, **kwargs):
    cfg = load_config(None, [*CLASSICAL, *sets])
    return render_experiment(model, cfg, train_uri="gs://b/train.csv", validation_uri="gs://b/val.csv", **kwargs)


def test_transformer_experiment_matches_schema_and_runs_on_the_gpu_node_pool() -> None:
    manifest = _render("transformer", "pipeline.gpu_accelerator=nvidia-a100-80gb")
    validate_experiment(manifest)  # also done by render; explicit here
    assert manifest["kind"] == KIND and manifest["apiVersion"] == "kubeflow.org/v1beta1"
    spec = manifest["spec"]
    assert spec["objective"] == {
        "type": "maximize",
        "objectiveMetricName": OBJECTIVE_METRIC,
        "additionalMetricNames": spec["objective"]["additionalMetricNames"],
        "metricStrategies": spec["objective"]["metricStrategies"],
    }
    assert spec["metricsCollectorSpec"]["collector"]["kind"] == "StdOut"
    names = {p["name"]: p for p in spec["parameters"]}
    assert {"learning_rate", "warmup_ratio", "batch_size", "max_length", "focal_gamma", "dropout"} <= set(names)
    assert names["learning_rate"]["feasibleSpace"]["distribution"] == "logUniform"
    assert "e" not in names["learning_rate"]["feasibleSpace"]["min"]  # positional, not 1e-05
    pod = spec["trialTemplate"]["trialSpec"]["spec"]["template"]["spec"]
    container = pod["containers"][0]
    # the same node pool, selector and toleration as the pipeline's transformer step
    assert pod["nodeSelector"] == {GPU_NODE_LABEL: "nvidia-a100-80gb"}
    assert pod["tolerations"] == [GPU_TOLERATION]
    assert container["resources"]["limits"] == {GPU_RESOURCE: 1}
    assert container["image"] == load_config().pipeline.gpu_image
    assert container["command"][:4] == ["sentinel", "hpo", "trial", "--model"]
    for param in names:
        assert f"{param}=${{trialParameters.{trial_parameter_name(param)}}}" in container["command"]
    # YAML round trip (what kubectl would send) validates too
    validate_experiment(yaml.safe_load(yaml.safe_dump(manifest)))


def test_pipeline_uses_the_same_gpu_constants() -> None:
    import pipelines.training_pipeline as pipeline

    assert pipeline.GPU_RESOURCE is GPU_RESOURCE and pipeline.GPU_NODE_LABEL is GPU_NODE_LABEL


def test_classical_experiment_runs_on_the_cpu_image() -> None:
    manifest = _render("linear_svm")
    pod = manifest["spec"]["trialTemplate"]["trialSpec"]["spec"]["template"]["spec"]
    assert "nodeSelector" not in pod and "resources" not in pod["containers"][0]
    assert pod["containers"][0]["image"] == load_config().pipeline.target_image
    kinds = {p["name"]: p["parameterType"] for p in manifest["spec"]["parameters"]}
    assert kinds == {"C": "double", "calibration": "categorical"}


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda m: m["spec"].pop("objective"), "'objective' is a required property"),
        (lambda m: m["spec"]["parameters"][0]["feasibleSpace"].pop("min"), "'min' is a required property"),
        (lambda m: m["spec"]["trialTemplate"]["trialParameters"][0].update(reference="nope"), "unknown parameters"),
        (lambda m: m["spec"]["trialTemplate"].update(primaryContainerName="other"), "names no container"),
        (lambda m: m["spec"]["objective"].update(objectiveMetricName="accuracy"), "not reported by the trainer"),
        (lambda m: m["spec"].update(maxTrialCount=0), "less than the minimum"),
        (lambda m: m["metadata"].update(name="Bad_Name"), "does not match"),
    ],
)
def test_broken_manifests_are_refused_with_the_field_named(mutate, message: str) -> None:
    manifest = copy.deepcopy(_render("logreg"))
    mutate(manifest)
    with pytest.raises((DeployError, ConfigError), match=message):
        validate_experiment(manifest)


def test_objective_the_trainer_does_not_report_is_refused_before_rendering() -> None:
    with pytest.raises(ConfigError, match="not reported by the trainer"):
        _render("logreg", objective="val_accuracy")


def test_bad_space_fails_before_the_experiment_exists() -> None:
    with pytest.raises(TrainingError, match="empty or inverted"):
        _render("logreg", "training.search.optuna.ranges.logreg={C: {low: 3.0, high: 1.0}}")


def _substitute(command: list[str], manifest: dict, data: Path, val: Path) -> list[str]:
    """What Katib does: each ${trialParameters.x} replaced by an assigned value (here: each range's low end)."""
    values = {}
    refs = {t["name"]: t["reference"] for t in manifest["spec"]["trialTemplate"]["trialParameters"]}
    for p in manifest["spec"]["parameters"]:
        space = p["feasibleSpace"]
        values[p["name"]] = space["list"][0] if "list" in space else space["min"]
    out = []
    for arg in command:
        arg = re.sub(r"\$\{trialParameters\.(\w+)\}", lambda m: values[refs[m.group(1)]], arg)
        out.append({"gs://b/train.csv": str(data), "gs://b/val.csv": str(val)}.get(arg, arg))
    return out


def test_the_trial_command_runs_and_prints_the_objective_as_the_collector_expects(demo_csv: Path, tmp_path) -> None:
    """The Experiment's own command line, executed as the trial Job would (the `sentinel` console script)."""
    train, val = demo_frames(demo_csv, 40, 20)
    train.to_csv(tmp_path / "train.csv", index=False)
    val.to_csv(tmp_path / "val.csv", index=False)
    manifest = _render("logreg")
    command = manifest["spec"]["trialTemplate"]["trialSpec"]["spec"]["template"]["spec"]["containers"][0]["command"]
    argv = _substitute(command, manifest, tmp_path / "train.csv", tmp_path / "val.csv")
    sentinel = Path(sys.executable).parent / argv[0]
    done = subprocess.run([str(sentinel), *argv[1:]], capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    lines = [line for line in done.stdout.splitlines() if line.strip()]
    # exactly the collector's format: every line matches its filter in full, the objective comes last
    for line in lines:
        assert re.fullmatch(KATIB_METRIC_FILTER, line), line
    assert lines[-1].startswith(f"{OBJECTIVE_METRIC}=")
    collected = parse_metric_lines(done.stdout)
    names = [
        manifest["spec"]["objective"]["objectiveMetricName"],
        *manifest["spec"]["objective"]["additionalMetricNames"],
    ]
    assert set(collected) == set(names)
    assert 0.0 <= collected[OBJECTIVE_METRIC][-1] <= 1.0


def test_transformer_trial_prints_intermediate_scores_then_the_objective(demo_csv: Path, tmp_path) -> None:
    import torch

    torch.set_num_threads(1)
    base = build_tiny_bert(tmp_path / "tiny")
    train, val = demo_frames(demo_csv)
    cfg = load_config(None, [*TINY_TRANSFORMER, f"transformer.base_model={base}"])
    printed: list[str] = []
    out = run_trial(
        "transformer",
        train,
        val,
        cfg,
        {"learning_rate": 0.001, "batch_size": 8, "max_length": 32, "dropout": 0.2},
        echo=printed.append,
    )
    collected = parse_metric_lines("\n".join(printed))
    assert len(collected[OBJECTIVE_METRIC]) == 2 + 1  # evaluations at steps 2 and 4, then the final value
    assert printed[-1] == f"{OBJECTIVE_METRIC}={out[OBJECTIVE_METRIC]:.6f}"
    assert out[OBJECTIVE_METRIC] == pytest.approx(max(collected[OBJECTIVE_METRIC][:-1]), abs=1e-6)
    with pytest.raises(TrainingError, match="learning_rate"):
        run_trial("transformer", train, val, cfg, {"learning_rate": -1.0}, echo=printed.append)


def test_submit_posts_the_experiment_through_the_kubernetes_client() -> None:
    """A loopback HTTP server stands in for the API server; the real kubernetes client talks to it."""
    import json
    import threading
    from http.server import BaseHTTPRequestHandler, HTTPServer

    from kubernetes import client

    from prompt_sentinel.hpo.katib import submit_experiment

    received: list[tuple[str, dict]] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            received.append((self.path, body))
            status = 409 if body["metadata"]["name"] == "taken" else 201
            payload = json.dumps(body if status == 201 else {"reason": "AlreadyExists"}).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        def log_message(self, *args) -> None:
            pass

    server = HTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        api = client.ApiClient(client.Configuration(host=f"http://127.0.0.1:{server.server_port}"))
        manifest = _render("logreg", namespace="ml", name="sentinel-logreg")
        created = submit_experiment(manifest, api_client=api)
        assert created["metadata"]["name"] == "sentinel-logreg"
        path, body = received[0]
        assert path == "/apis/kubeflow.org/v1beta1/namespaces/ml/experiments"
        assert body == manifest
        with pytest.raises(DeployError, match="409"):
            submit_experiment(_render("logreg", namespace="ml", name="taken"), api_client=api)
        broken = copy.deepcopy(manifest)
        broken["spec"]["objective"]["objectiveMetricName"] = "loss"
        with pytest.raises(ConfigError, match="not reported"):
            submit_experiment(broken, api_client=api)
        assert len(received) == 2  # the invalid one never reached the server
    finally:
        server.shutdown()
