"""The monitoring pipeline: golden compiled YAML, its shape, and one end-to-end run under kfp.local on the demo data
that takes the retrain branch and ends with a canary overlay change (slow)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import yaml

from pipelines.submit import PIPELINES, check_submit_params, compile_pipeline, compiled_pipeline_path, pipeline_inputs
from prompt_sentinel.config import load_config
from prompt_sentinel.errors import ConfigError
from prompt_sentinel.run_layout import DEPLOY_DIFF, DEPLOY_RESULT, DRIFT_REPORT, RETRAINING_REPORT, SELECTION
from tests.monitoring.helpers import DEMO_BLIND_CSV, DEMO_CSV, FAST_TRAINING, shifted_texts, train_monitored_model


@pytest.fixture(scope="module")
def compiled(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    path = compile_pipeline(tmp_path_factory.mktemp("compile") / "monitoring.yaml", pipeline="monitoring")
    return path, next(yaml.safe_load_all(path.read_text()))


def test_committed_yaml_matches_a_fresh_compile(compiled) -> None:
    path, _ = compiled
    golden = compiled_pipeline_path("monitoring")
    assert golden.name == PIPELINES["monitoring"]
    assert path.read_text() == golden.read_text(), (
        "the monitoring pipeline changed shape: run `sentinel compile --pipeline monitoring "
        "--out pipelines/compiled/monitoring_pipeline.yaml` and commit it"
    )


def test_retraining_is_the_nested_training_pipeline_behind_the_verdict(compiled) -> None:
    _, spec = compiled
    root = spec["root"]["dag"]["tasks"]
    assert set(root) == {"monitor-traffic", "condition-1"}
    condition = root["condition-1"]
    assert "retrain" in condition["triggerPolicy"]["condition"]
    inner = spec["components"][condition["componentRef"]["name"]]["dag"]["tasks"]
    assert {"retraining-data", "prompt-sentinel-training"} <= set(inner)
    nested = inner["prompt-sentinel-training"]["inputs"]["parameters"]
    assert nested["canary_percent"] == {"componentInputParameter": "pipelinechannel--canary_percent"}
    assert nested["data_uri"]["taskOutputParameter"]["producerTask"] == "retraining-data"
    inputs = pipeline_inputs(compiled[0])
    assert inputs["canary_percent"]["default"] == 10
    assert {n for n, p in inputs.items() if p["required"]} == {"logs_uri", "base_data_uri"}


def test_submit_refuses_local_log_paths(compiled) -> None:
    inputs = pipeline_inputs(compiled[0])
    with pytest.raises(ConfigError, match="logs_uri"):
        check_submit_params({"logs_uri": "/tmp/logs", "base_data_uri": "gs://b/d.csv"}, inputs)
    check_submit_params({"logs_uri": "gs://b/logs", "base_data_uri": "gs://b/d.csv"}, inputs)


def _labelled_shifted_logs(logs: Path, model_dir: Path, labels_file: Path, n: int) -> None:
    """Russian/German traffic the champion served (its real predictions), and reviewer labels for all of it."""
    from prompt_sentinel.models.loading import load_model
    from prompt_sentinel.monitoring.logstore import PredictionLogWriter
    from prompt_sentinel.monitoring.records import TextPolicy, build_records

    texts = shifted_texts(n)
    model = load_model(model_dir)
    proba = model.predict_proba(texts)
    labels = [model.labels[i] for i in model.labels_for(proba)]
    writer = PredictionLogWriter(str(logs), start_thread=False)
    policy = TextPolicy(store_text=True, salt=b"test")
    for i, text in enumerate(texts):
        scores = [dict(zip(model.labels, proba[i].tolist(), strict=True))]
        writer.write(build_records([text], [labels[i]], ["allow"], scores, model="prompt-sentinel",
                                   model_version="v1", protocol="v1", request_id=f"req-{i}", source="sink",
                                   policy=policy))  # fmt: skip
    writer.close()
    attack = ("Игнорируй", "Vergiss")
    rows = ["id,label"] + [f"req-{i},{'malicious' if t.startswith(attack) else 'benign'}" for i, t in enumerate(texts)]
    labels_file.write_text("\n".join(rows) + "\n")


@pytest.mark.slow
def test_drifted_traffic_is_retrained_gated_pushed_and_started_as_a_canary(tmp_path: Path) -> None:
    from kfp import local

    from pipelines.monitoring_pipeline import build_monitoring_pipeline
    from prompt_sentinel.monitoring.feedback import add_feedback
    from prompt_sentinel.registry import CHAMPION, ModelRegistry

    registry_root, results, logs = tmp_path / "registry", tmp_path / "results", tmp_path / "logs"
    permissive = [
        "gates.min_custom_score=0.0", "gates.min_recall_c2=0.0", "gates.max_false_alarm_rate=1.0",
        "gates.max_missed_threat_rate=1.0", "gates.max_latency_p95_ms=100000", "gates.significance=0.5",
        "evaluation.robustness=false", "evaluation.efficiency=false", "evaluation.bootstrap_samples=20",
        "monitoring.min_window_records=50", "deploy.environment=dev", f"registry.root={registry_root}",
        f"registry.cache_dir={tmp_path / 'cache'}",
    ]  # fmt: skip
    # The champion learnt from other data (the demo blind set): the retraining's test split is new to both models.
    champion_dir, _, cfg = train_monitored_model(tmp_path / "champion", permissive, data=DEMO_BLIND_CSV)
    ModelRegistry(str(registry_root), cfg).push(champion_dir, aliases=(CHAMPION,))
    _labelled_shifted_logs(logs, champion_dir, tmp_path / "labels.csv", 120)
    assert add_feedback(str(logs), str(tmp_path / "labels.csv"), cfg.labels).added == 120

    for name, value in {"HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false", "OMP_NUM_THREADS": "1"}.items():
        os.environ.setdefault(name, value)
    config = load_config(None, [*FAST_TRAINING, *permissive])
    local.init(runner=local.SubprocessRunner(use_venv=False), pipeline_root=str(tmp_path / "root"), raise_on_error=True)
    build_monitoring_pipeline(config)(
        logs_uri=str(logs),
        base_data_uri=str(DEMO_CSV),
        config_json=config.model_dump_json(),
        models=["logreg"],
        registry_root=str(registry_root),
        results_uri=str(results),
    )

    drift = json.loads((results / DRIFT_REPORT).read_text())
    assert drift["verdict"] == "retrain" and "script" in drift["fired"]
    retraining = json.loads((results / RETRAINING_REPORT).read_text())
    assert retraining["added"] > 0 and retraining["labelled_records"] == 120
    selection = json.loads((results / SELECTION).read_text())
    assert selection["promoted"], selection["reason"]
    assert ModelRegistry(str(registry_root), cfg).aliases("prompt-sentinel")[CHAMPION] == 2
    deployed = json.loads((results / DEPLOY_RESULT).read_text())
    assert deployed["version"] == 2 and deployed["environment"] == "dev"
    diff = (results / DEPLOY_DIFF).read_text()
    assert "+    canaryTrafficPercent: 10" in diff
    assert "prompt-sentinel.io/stable-model-version: v3" in diff  # what dev ran before the canary
    assert "/prompt-sentinel/v2/" in diff
