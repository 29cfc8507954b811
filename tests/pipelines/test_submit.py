"""``sentinel submit`` against a fake Kubeflow Pipelines API on 127.0.0.1 that records every request kfp.Client
sends (no cluster here): the pipeline spec inside the run, the typed parameters, the cron schedule, the token."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlparse

import pytest
from typer.testing import CliRunner

from pipelines.submit import submit_pipeline
from prompt_sentinel.cli import app
from prompt_sentinel.config import SentinelConfig
from prompt_sentinel.errors import ConfigError, PipelineError

API = "/apis/v2beta1"


class FakeKfp:
    """Answers the v2beta1 endpoints kfp.Client calls and keeps (method, path, query, headers, body)."""

    def __init__(self) -> None:
        self.requests: list[dict[str, Any]] = []
        self.experiments: list[dict[str, Any]] = []
        self.fail_runs = False

    def handle(self, method: str, raw_path: str, headers: dict[str, str], body: bytes) -> tuple[int, dict[str, Any]]:
        url = urlparse(raw_path)
        payload = json.loads(body) if body else None
        self.requests.append(
            {"method": method, "path": url.path, "query": parse_qs(url.query), "headers": headers, "body": payload}
        )
        if method == "GET" and url.path == f"{API}/healthz":
            return 200, {"multi_user": False}
        if method == "GET" and url.path == f"{API}/experiments":
            wanted = json.loads(parse_qs(url.query)["filter"][0])["predicates"][0]["stringValue"]
            return 200, {"experiments": [e for e in self.experiments if e["display_name"] == wanted]}
        if method == "POST" and url.path == f"{API}/experiments":
            experiment = {**payload, "experiment_id": f"exp-{len(self.experiments) + 1}"}
            self.experiments.append(experiment)
            return 200, experiment
        if method == "POST" and url.path == f"{API}/runs":
            if self.fail_runs:
                return 403, {"error": "permission denied", "code": 7}
            return 200, {**payload, "run_id": "run-123", "state": "PENDING"}
        if method == "POST" and url.path == f"{API}/recurringruns":
            return 200, {**payload, "recurring_run_id": "rr-9", "status": "ENABLED"}
        return 404, {"error": f"unexpected {method} {url.path}"}

    def calls(self, method: str, path: str) -> list[dict[str, Any]]:
        return [r for r in self.requests if r["method"] == method and r["path"] == f"{API}{path}"]


@pytest.fixture
def kfp_api(monkeypatch: pytest.MonkeyPatch, tmp_path) -> Iterator[tuple[str, FakeKfp]]:
    import kfp

    # kfp.Client reads ~/.config/kfp/context.json; keep this machine's (if any) out of the test.
    monkeypatch.setattr(kfp.Client, "_LOCAL_KFP_CONTEXT", str(tmp_path / "context.json"))
    monkeypatch.delenv("KF_PIPELINES_TOKEN", raising=False)
    fake = FakeKfp()

    class Handler(BaseHTTPRequestHandler):
        def _serve(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            status, reply = fake.handle(
                self.command, self.path, {k.lower(): v for k, v in self.headers.items()}, self.rfile.read(length)
            )
            data = json.dumps(reply).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        do_GET = do_POST = _serve

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", fake
    finally:
        server.shutdown()
        server.server_close()


def test_submit_creates_a_run_with_the_compiled_spec_and_typed_params(kfp_api) -> None:
    host, fake = kfp_api
    result = submit_pipeline(
        host,
        ["data_uri=gs://bucket/prompts.csv", "models=logreg,complement_nb", "train_transformer=true"],
        token="s3cret",
        run_name="nightly",
        pipeline_root="gs://bucket/kfp-root",
    )
    assert result.run_id == "run-123"
    assert result.run_url == f"{host}/#/runs/details/run-123"

    [create_exp] = fake.calls("POST", "/experiments")
    assert create_exp["body"]["display_name"] == "prompt-sentinel"
    [run] = fake.calls("POST", "/runs")
    assert run["headers"]["authorization"] == "Bearer s3cret"
    body = run["body"]
    assert body["display_name"] == "nightly"
    assert body["experiment_id"] == "exp-1"
    assert body["pipeline_spec"]["pipeline_spec"]["pipelineInfo"]["name"] == "prompt-sentinel-training"
    executors = body["pipeline_spec"]["platform_spec"]["platforms"]["kubernetes"]["deploymentSpec"]["executors"]
    assert any("nodeSelector" in e for e in executors.values())
    assert body["runtime_config"]["parameters"] == {
        "data_uri": "gs://bucket/prompts.csv",
        "models": ["logreg", "complement_nb"],
        "train_transformer": True,
    }
    assert body["runtime_config"]["pipeline_root"] == "gs://bucket/kfp-root"
    assert not fake.calls("POST", "/recurringruns")


def test_submit_with_cron_creates_a_recurring_run_and_passes_the_config(kfp_api, monkeypatch) -> None:
    host, fake = kfp_api
    monkeypatch.setenv("KF_PIPELINES_TOKEN", "from-env")
    cfg = SentinelConfig()
    cfg.gates.min_custom_score = 0.7
    result = submit_pipeline(
        host, {"data_uri": "gs://b/d.csv"}, cfg, config_given=True, cron="0 3 * * *", experiment="nightly-exp"
    )
    assert result.recurring_run_id == "rr-9" and result.run_id is None
    assert result.recurring_run_url == f"{host}/#/recurringrun/details/rr-9"
    [rr] = fake.calls("POST", "/recurringruns")
    assert rr["headers"]["authorization"] == "Bearer from-env"
    body = rr["body"]
    assert body["trigger"]["cron_schedule"]["cron"] == "0 0 3 * * *"
    assert body["mode"] == "ENABLE"
    assert str(body["max_concurrency"]) == "1" and body["no_catchup"] is True
    assert body["experiment_id"] == fake.experiments[0]["experiment_id"]
    assert fake.experiments[0]["display_name"] == "nightly-exp"
    params = body["runtime_config"]["parameters"]
    assert SentinelConfig.model_validate_json(params["config_json"]).gates.min_custom_score == 0.7
    assert "pipeline_spec" in body["pipeline_spec"]


def test_existing_experiment_is_reused(kfp_api) -> None:
    host, fake = kfp_api
    fake.experiments.append({"display_name": "prompt-sentinel", "experiment_id": "exp-old"})
    submit_pipeline(host, {"data_uri": "gs://b/d.csv"})
    assert not fake.calls("POST", "/experiments")
    assert fake.calls("POST", "/runs")[0]["body"]["experiment_id"] == "exp-old"


@pytest.mark.parametrize(
    ("params", "needle"),
    [
        (["dataset=gs://b/d.csv"], "no such parameter"),
        ([], "exactly one of --param data_uri"),
        (["data_uri=gs://b/d.csv", "recipe_uri=gs://b/r.yaml"], "exactly one of --param data_uri"),
        (["data_uri=/home/me/prompts.csv"], "cannot read local paths"),
        (["recipe_uri=gs://b/r.yaml", "exclude_uris=[/home/me/test.csv]"], "exclude_uris: /home/me/test.csv"),
        (["data_uri=gs://b/d.csv", "models=[logreg,catboost]"], "catboost"),
    ],
)
def test_bad_params_are_refused_before_anything_is_sent(kfp_api, params: list[str], needle: str) -> None:
    host, fake = kfp_api
    with pytest.raises(ConfigError, match=needle):
        submit_pipeline(host, params)
    assert fake.requests == []


def test_api_errors_become_pipeline_errors(kfp_api) -> None:
    host, fake = kfp_api
    fake.fail_runs = True
    with pytest.raises(PipelineError, match="403"):
        submit_pipeline(host, {"data_uri": "gs://b/d.csv"}, token="t")


def test_cli_submit_prints_the_run_url(kfp_api) -> None:
    host, fake = kfp_api
    result = CliRunner().invoke(
        app, ["submit", "--host", host, "--param", "data_uri=gs://b/d.csv", "--token", "cli-token"]
    )
    assert result.exit_code == 0, result.output
    assert f"{host}/#/runs/details/run-123" in result.output
    assert fake.calls("POST", "/runs")[0]["headers"]["authorization"] == "Bearer cli-token"
    bad = CliRunner().invoke(app, ["submit", "--host", "kfp.example.com", "--param", "data_uri=gs://b/d.csv"])
    assert bad.exit_code == 1 and "http://" in str(bad.exception)
