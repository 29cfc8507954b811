"""Runs here for real: the KServe model server logs its predictions, `sentinel monitor` reads them.

A model trained through the shared training sequence (so it carries its reference) is served with
``--log_dir``; one window of traffic like its held-out data, then one shifted window (Russian and German requests)
go through the V1 and V2 protocols; the monitor says ``ok`` for the first and ``retrain`` for the second, naming
the signals that fired.
"""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest
from typer.testing import CliRunner

from prompt_sentinel.cli import app
from prompt_sentinel.client import classify
from prompt_sentinel.monitoring.logstore import read_logs, wait_for
from prompt_sentinel.run_layout import DRIFT_HTML, DRIFT_REPORT
from serving.local import running_server
from tests.monitoring.helpers import shifted_texts, train_monitored_model

pytestmark = pytest.mark.slow


def _send(url: str, texts: list[str], protocol: str) -> None:
    for start in range(0, len(texts), 8):
        classify(url, texts[start : start + 8], protocol=protocol, model_name="watched")


def _monitor(logs: Path, model: Path, out: Path, window: int) -> dict:
    result = CliRunner().invoke(
        app,
        ["monitor", "--logs", str(logs), "--reference", str(model), "--out", str(out), "--window", str(window),
         "--set", "monitoring.min_window_records=50"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert (out / DRIFT_HTML).is_file()
    return json.loads((out / DRIFT_REPORT).read_text())


def test_served_traffic_is_logged_and_a_language_shift_asks_for_retraining(tmp_path: Path) -> None:
    model, held_out, _ = train_monitored_model(tmp_path / "model")
    logs = tmp_path / "logs"
    normal = list(held_out["text"])
    shifted = shifted_texts(len(normal))
    args = ["--log_dir", str(logs), "--set", "monitoring.store_text=true", "--set", "monitoring.flush_interval_s=0.2"]
    with running_server(str(model), model_name="watched", extra_args=args, timeout=180) as url:
        _send(url, normal[: len(normal) // 2], "v1")
        _send(url, normal[len(normal) // 2 :], "v2")
        assert wait_for(lambda: len(read_logs(str(logs)).records) == len(normal), timeout=30)
        first = _monitor(logs, model, tmp_path / "first", len(normal))
        _send(url, shifted, "v1")
        assert wait_for(lambda: len(read_logs(str(logs)).records) == 2 * len(normal), timeout=30)
        metrics = httpx.get(f"{url}/metrics").text
        answer = httpx.post(f"{url}/v1/models/watched:predict", json={"instances": ["hi"]}).json()
    second = _monitor(logs, model, tmp_path / "second", len(shifted))

    # What the dashboard and the alerts read, with the model version (a plain directory: "unknown").
    for sample in (
        'sentinel_predictions_total{decision="allow",label="benign",model="watched",model_version="unknown"}',
        'sentinel_prediction_score_bucket{label="malicious",le="0.5",model="watched",model_version="unknown"}',
        'sentinel_request_latency_seconds_count{model="watched",model_version="unknown",protocol="v2"}',
        'sentinel_model_info{family="sklearn",inference_backend="none",model="watched",model_type="logreg",'
        'model_version="unknown"} 1.0',
        f'sentinel_prediction_log_records_total{{model="watched",outcome="written"}} {2.0 * len(normal)}',
    ):
        assert sample in metrics, sample
    assert answer["model_version"] == "unknown" and len(answer["predictions"]) == 1

    records = read_logs(str(logs)).records
    assert {r["protocol"] for r in records} == {"v1", "v2"}
    assert {r["model"] for r in records} == {"watched"}
    assert all(r["text"] and r["text_sha256"] and r["chars"] == len(r["text"]) for r in records)

    assert first["verdict"] == "ok", first["reason"]
    assert first["window"]["records"] == len(normal)
    assert second["verdict"] == "retrain", second["reason"]
    fired = {s["name"]: s for s in second["signals"] if s["status"] == "retrain"}
    assert {"script", "oov"} <= set(fired), second["signals"]
    assert "CYRILLIC" in fired["script"]["detail"]
    assert all(name in second["reason"] for name in fired)
