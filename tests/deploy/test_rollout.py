"""The deploy stage: server-side apply against a loopback Kubernetes API, and the GitOps artifact."""

from __future__ import annotations

import copy
import json
import os
import shutil
import socket
import subprocess
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
import typer
import yaml
from typer.testing import CliRunner

from prompt_sentinel.cli import deploy as deploy_cli
from prompt_sentinel.config import load_config
from prompt_sentinel.deploy import deploy_model, validate_kserve_object
from prompt_sentinel.errors import DeployError, RegistryError

REPO = Path(__file__).resolve().parents[2]
ISVC_PATH = "/apis/serving.kserve.io/v1beta1/namespaces/prompt-sentinel-dev/inferenceservices/prompt-sentinel"
URL = "http://prompt-sentinel.prompt-sentinel-dev.example.com"


@dataclass
class FakeKubeAPI:
    """What a Kubernetes API server does for one InferenceService, recording every request."""

    ready_after_gets: int = 1  # the n-th GET after the apply reports Ready; 0 = never
    patch_status: int = 200
    requests: list[dict[str, Any]] = field(default_factory=list)
    stored: dict[str, Any] | None = None
    gets: int = 0
    url: str = ""

    def respond(self, method: str, path: str, query: dict[str, list[str]], headers: dict, body: bytes):
        self.requests.append({"method": method, "path": path, "query": query, "headers": headers, "body": body})
        if path != ISVC_PATH:
            return 404, {"kind": "Status", "message": f"no route {path}"}
        if method == "PATCH":
            if self.patch_status != 200:
                return self.patch_status, {
                    "kind": "Status",
                    "status": "Failure",
                    "reason": "Forbidden",
                    "message": 'inferenceservices.serving.kserve.io "prompt-sentinel" is forbidden: '
                    "User cannot patch resource",
                }
            obj = yaml.safe_load(body)
            generation = (self.stored or {}).get("metadata", {}).get("generation", 0) + 1
            obj["metadata"]["generation"] = generation
            obj["status"] = {
                "observedGeneration": generation - 1,
                "conditions": [
                    {
                        "type": "Ready",
                        "status": "False",
                        "reason": "RevisionMissing",
                        "message": "new revision starting",
                    }
                ],
            }
            self.stored, self.gets = obj, 0
            return 200, obj
        if method == "GET":
            if self.stored is None:
                return 404, {"kind": "Status", "message": "not found"}
            self.gets += 1
            obj = copy.deepcopy(self.stored)
            if self.ready_after_gets and self.gets >= self.ready_after_gets:
                obj["status"] = {
                    "observedGeneration": obj["metadata"]["generation"],
                    "url": URL,
                    "conditions": [{"type": "Ready", "status": "True"}],
                }
            return 200, obj
        return 405, {"kind": "Status", "message": "method not allowed"}


@pytest.fixture
def kube_api() -> Iterator[FakeKubeAPI]:
    api = FakeKubeAPI()

    class Handler(BaseHTTPRequestHandler):
        def _handle(self) -> None:
            parts = urlsplit(self.path)
            length = int(self.headers.get("Content-Length") or 0)
            status, payload = api.respond(
                self.command, parts.path, parse_qs(parts.query), dict(self.headers), self.rfile.read(length)
            )
            data = json.dumps(payload).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        do_GET = do_PATCH = do_POST = _handle

        def log_message(self, *args: Any) -> None:  # keep test output clean
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    api.url = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        yield api
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture
def checkout(tmp_path: Path) -> Path:
    shutil.copytree(REPO / "manifests", tmp_path / "repo" / "manifests")
    return tmp_path / "repo" / "manifests"


@pytest.fixture
def version_uri(tmp_path: Path) -> str:
    directory = tmp_path / "registry" / "prompt-sentinel" / "v4"
    directory.mkdir(parents=True)
    (directory / "sentinel_model.json").write_text("{}")
    (directory / "_COMPLETE").write_text("")
    return str(directory)


def _cfg(checkout: Path, **deploy: Any):
    overrides = {"deploy.manifests_dir": str(checkout), "deploy.environment": "dev", "deploy.poll_interval_s": 0.05}
    overrides.update({f"deploy.{k}": v for k, v in deploy.items()})
    return load_config(None, overrides)


def _snapshot(directory: Path) -> dict[str, bytes]:
    return {p.relative_to(directory).as_posix(): p.read_bytes() for p in sorted(directory.rglob("*")) if p.is_file()}


def test_apply_mode_sends_a_server_side_apply_and_waits_for_ready(kube_api, checkout, version_uri, tmp_path):
    kube_api.ready_after_gets = 3
    before = _snapshot(checkout)
    out = tmp_path / "out"
    result = deploy_model(version_uri, "prompt-sentinel", 4, _cfg(checkout, mode="apply"), str(out), kube_api.url)

    patch = kube_api.requests[0]
    assert patch["method"] == "PATCH" and patch["path"] == ISVC_PATH
    assert patch["query"] == {"fieldManager": ["prompt-sentinel"], "force": ["true"]}
    assert patch["headers"]["Content-Type"] == "application/apply-patch+yaml"
    body = yaml.safe_load(patch["body"])
    assert (body["apiVersion"], body["kind"]) == ("serving.kserve.io/v1beta1", "InferenceService")
    assert body["metadata"]["namespace"] == "prompt-sentinel-dev" and body["metadata"]["name"] == "prompt-sentinel"
    assert body["metadata"]["labels"]["prompt-sentinel.io/model-version"] == "v4"
    assert body["spec"]["predictor"]["model"]["storageUri"] == version_uri + "/"
    assert "status" not in body
    validate_kserve_object(body)
    # Polled until the status described the applied generation as Ready.
    assert [r["method"] for r in kube_api.requests] == ["PATCH", "GET", "GET", "GET"]

    assert result.ready and result.url == URL and result.mode == "apply"
    assert (result.namespace, result.name, result.version) == ("prompt-sentinel-dev", "prompt-sentinel", 4)
    assert _snapshot(checkout) == before  # apply mode never edits the checkout
    saved = json.loads((out / "deploy_result.json").read_text())
    assert saved["url"] == URL and saved["ready"] is True
    assert yaml.safe_load((out / "inferenceservice.yaml").read_text()) == body


def test_apply_mode_times_out_with_the_last_condition(kube_api, checkout, version_uri, tmp_path):
    kube_api.ready_after_gets = 0
    out = tmp_path / "out"
    with pytest.raises(DeployError, match=r"not Ready after 1 s \(Ready=False; RevisionMissing: new revision starting"):
        deploy_model(
            version_uri, "prompt-sentinel", 4, _cfg(checkout, mode="apply", ready_timeout_s=1), str(out), kube_api.url
        )
    assert len(kube_api.requests) > 2
    assert not out.exists()  # nothing half-written


def test_apply_mode_reports_a_refusal(kube_api, checkout, version_uri):
    kube_api.patch_status = 403
    with pytest.raises(DeployError, match=r"\(403\).*forbidden: User cannot patch"):
        deploy_model(version_uri, "prompt-sentinel", 4, _cfg(checkout, mode="apply"), None, kube_api.url)


def test_apply_mode_reports_an_unreachable_api(checkout, version_uri):
    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{sock.getsockname()[1]}"
    with pytest.raises(DeployError, match="cannot reach the Kubernetes API"):
        deploy_model(version_uri, "prompt-sentinel", 4, _cfg(checkout, mode="apply"), None, url)


def test_gitops_mode_writes_the_overlay_change_as_an_artifact(checkout, version_uri, tmp_path):
    before = _snapshot(checkout)
    out = tmp_path / "gitops"
    result = deploy_model(version_uri, "prompt-sentinel", 4, _cfg(checkout), str(out))

    assert result.mode == "gitops" and not result.ready and result.url is None
    assert result.changed_files == ["manifests/overlays/dev/model.yaml"]
    assert _snapshot(checkout) == before  # the change is an artifact, not an edit of the checkout
    changed = (out / "files" / "manifests" / "overlays" / "dev" / "model.yaml").read_text()
    assert f"storageUri: {version_uri}/" in changed and "model-version: v4" in changed
    diff = (out / "promotion.diff").read_text()
    assert diff == result.diff and f"+      storageUri: {version_uri}/" in diff
    # The artifact is a patch that applies to the checkout.
    subprocess.run(["git", "apply", str(out / "promotion.diff")], cwd=checkout.parent, check=True, capture_output=True)
    assert (checkout / "overlays" / "dev" / "model.yaml").read_text() == changed
    isvc = yaml.safe_load((out / "inferenceservice.yaml").read_text())
    assert isvc["spec"]["predictor"]["model"]["storageUri"] == version_uri + "/"
    assert json.loads((out / "deploy_result.json").read_text())["changed_files"] == result.changed_files


def test_gitops_mode_can_commit_to_a_branch(checkout, version_uri):
    repo = checkout.parent
    env = {"GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@t"}

    def git(*args: str) -> str:
        return subprocess.run(
            ["git", "-C", str(repo), *args], check=True, capture_output=True, text=True, env={**os.environ, **env}
        ).stdout.strip()

    git("init", "-q", "-b", "main")
    git("add", "-A")
    git("commit", "-q", "-m", "initial")
    result = deploy_model(
        version_uri, "prompt-sentinel", 4, _cfg(checkout, git_branch="promote/{env}-{model}-v{version}")
    )
    assert result.branch == "promote/dev-prompt-sentinel-v4"
    assert git("rev-parse", result.branch) == result.commit
    assert git("status", "--porcelain") == ""
    assert f"storageUri: {version_uri}/" in git("show", f"{result.branch}:manifests/overlays/dev/model.yaml")


def test_deploy_refuses_an_incomplete_version_before_anything_else(kube_api, checkout, version_uri, tmp_path):
    Path(version_uri, "_COMPLETE").unlink()
    out = tmp_path / "out"
    with pytest.raises(RegistryError, match="no _COMPLETE"):
        deploy_model(version_uri, "prompt-sentinel", 4, _cfg(checkout, mode="apply"), str(out), kube_api.url)
    assert kube_api.requests == [] and not out.exists()
    with pytest.raises(Exception, match="version 0"):
        deploy_model(version_uri, "prompt-sentinel", 0, _cfg(checkout), None)


def test_cli_deploy_dry_run_prints_the_rendered_service(checkout, tmp_path, version_uri):
    app = typer.Typer()
    deploy_cli.register(app)
    registry = str(Path(version_uri).parents[1])
    result = CliRunner().invoke(
        app,
        [
            "deploy",
            "--version",
            "v4",
            "--env",
            "staging",
            "--registry",
            registry,
            "--manifests",
            str(checkout),
            "--dry-run",
        ],
    )
    assert result.exit_code == 0, result.output
    isvc = yaml.safe_load(result.output)
    assert isvc["metadata"]["namespace"] == "prompt-sentinel-staging"
    assert isvc["spec"]["predictor"]["model"]["storageUri"] == version_uri + "/"
    bad = CliRunner().invoke(app, ["deploy", "--version", "v4", "--mode", "yolo", "--manifests", str(checkout)])
    assert "--mode 'yolo'" in str(bad.exception)
