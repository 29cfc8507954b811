"""Canary rollouts as overlay changes, and `sentinel canary evaluate | promote` driven by prediction logs."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from prompt_sentinel.cli import app
from prompt_sentinel.config import load_config
from prompt_sentinel.deploy.canary import (
    STABLE_URI_ANNOTATION,
    STABLE_VERSION_ANNOTATION,
    complete_canary,
    read_canary_state,
    rollback_canary,
    start_canary,
)
from prompt_sentinel.deploy.render import find_inference_service, kustomize_build
from prompt_sentinel.errors import DeployError
from prompt_sentinel.monitoring.logstore import PredictionLogWriter
from prompt_sentinel.monitoring.records import TextPolicy, build_records
from prompt_sentinel.run_layout import CANARY_REPORT

REPO = Path(__file__).resolve().parents[2]
NEW_URI = "gs://prompt-sentinel-models/registry/prompt-sentinel/v4/"


@pytest.fixture
def manifests(tmp_path: Path) -> Path:
    shutil.copytree(REPO / "manifests", tmp_path / "repo" / "manifests")
    return tmp_path / "repo" / "manifests"


def _predictor(manifests: Path, env: str) -> dict:
    return find_inference_service(kustomize_build(manifests / "overlays" / env))["spec"]["predictor"]


def test_start_complete_and_rollback_are_rendering_overlay_changes(manifests: Path) -> None:
    cfg = load_config()
    started = start_canary(manifests, "dev", cfg, model_name="prompt-sentinel", version=4, storage_uri=NEW_URI)
    assert "+    canaryTrafficPercent: 10" in started.diff and f"+    {STABLE_VERSION_ANNOTATION}: v3" in started.diff
    assert _predictor(manifests, "dev")["canaryTrafficPercent"] == 10
    state = read_canary_state(manifests, "dev", cfg)
    assert state.in_progress and state.stable_version == 3 and state.pin.version == 4
    with pytest.raises(DeployError, match="already runs a canary"):
        start_canary(manifests, "dev", cfg, model_name="prompt-sentinel", version=5, storage_uri=NEW_URI)

    text_before = (manifests / "overlays" / "dev" / "model.yaml").read_text()
    dry = rollback_canary(manifests, "dev", cfg, dry_run=True)
    assert (manifests / "overlays" / "dev" / "model.yaml").read_text() == text_before and dry.after.version == 3
    rollback_canary(manifests, "dev", cfg)
    predictor = _predictor(manifests, "dev")
    assert predictor["canaryTrafficPercent"] == 100 and predictor["model"]["storageUri"].endswith("/v3/")
    rolled = read_canary_state(manifests, "dev", cfg)
    assert rolled.stable_version is None and not rolled.in_progress
    with pytest.raises(DeployError, match="no canary in progress"):
        complete_canary(manifests, "dev", cfg)

    start_canary(manifests, "prod", cfg, model_name="prompt-sentinel", version=4, storage_uri=NEW_URI, percent=20)
    done = complete_canary(manifests, "prod", cfg)
    assert done.after.canary_percent == 100 and done.after.version == 4
    text = (manifests / "overlays" / "prod" / "model.yaml").read_text()
    assert STABLE_URI_ANNOTATION not in text and "# Canary: a new storageUri" in text  # comments kept


def _log(logs: Path, version: str, n: int, block_share: float, latency_ms: float) -> None:
    writer = PredictionLogWriter(str(logs), start_thread=False)
    policy = TextPolicy(False, b"s")
    for i in range(n):
        blocked = i < n * block_share
        label, decision = ("malicious", "block") if blocked else ("benign", "allow")
        scores = {"benign": 0.1, "suspicious": 0.1, "malicious": 0.8} if blocked else {"benign": 0.8, "suspicious": 0.1,
                                                                                          "malicious": 0.1}  # fmt: skip
        writer.write(build_records([f"text {version} {i}"], [label], [decision], [scores], model="prompt-sentinel",
                                   model_version=version, protocol="v1", request_id=f"{version}-{i}", source="sink",
                                   policy=policy, latency_ms=latency_ms))  # fmt: skip
    writer.close()


def _cli(*args: str) -> str:
    result = CliRunner().invoke(app, list(args))
    assert result.exit_code == 0, result.output
    return result.output


def test_canary_verdict_from_logs_then_the_matching_overlay_change(manifests: Path, tmp_path: Path) -> None:
    cfg = load_config()
    start_canary(manifests, "prod", cfg, model_name="prompt-sentinel", version=4, storage_uri=NEW_URI)
    settings = ["--set", f"deploy.manifests_dir={manifests}", "--set", "monitoring.canary_min_records=100"]
    healthy, broken = tmp_path / "healthy", tmp_path / "broken"
    _log(healthy, "v1", 300, 0.1, 20.0)
    _log(healthy, "v4", 120, 0.1, 22.0)
    output = _cli(
        "canary", "evaluate", "--logs", str(healthy), "--env", "prod", "--out", str(tmp_path / "ok"), *settings
    )
    assert "verdict: promote" in output
    _log(broken, "v1", 300, 0.1, 20.0)
    _log(broken, "v4", 120, 0.4, 60.0)
    output = _cli(
        "canary", "evaluate", "--logs", str(broken), "--env", "prod", "--out", str(tmp_path / "bad"), *settings
    )
    verdict = json.loads((tmp_path / "bad" / CANARY_REPORT).read_text())
    assert verdict["verdict"] == "rollback" and "verdict: rollback" in output
    assert any("block 10.0% → 40.0%" in r for r in verdict["reasons"])
    assert any("p95 latency" in r for r in verdict["reasons"])
    few = tmp_path / "few"
    _log(few, "v1", 30, 0.1, 20.0)
    _log(few, "v4", 5, 0.1, 20.0)
    output = _cli("canary", "evaluate", "--logs", str(few), "--env", "prod", "--out", str(tmp_path / "wait"), *settings)
    assert "verdict: wait" in output
    result = CliRunner().invoke(app, ["canary", "promote", "--verdict", str(tmp_path / "wait"), *settings])
    assert result.exit_code == 1 and "nothing to change yet" in str(result.exception)

    output = _cli("canary", "promote", "--verdict", str(tmp_path / "bad" / CANARY_REPORT), *settings)
    assert (
        "rollback:" in output
        and "-      storageUri: gs://prompt-sentinel-models/registry/prompt-sentinel/v4/" in output
    )
    assert _predictor(manifests, "prod")["model"]["storageUri"].endswith("/v1/")
