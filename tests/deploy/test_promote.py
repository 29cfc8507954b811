"""`sentinel promote`: overlay rewrites that keep layout and comments, render, and refuse bad versions."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from prompt_sentinel import storage
from prompt_sentinel.cli import deploy as deploy_cli
from prompt_sentinel.config import load_config
from prompt_sentinel.deploy.promote import (
    _dump,
    _load,
    check_registry_version,
    commit_to_branch,
    parse_version,
    plan_promotion,
    promote,
    promote_between,
    read_pin,
)
from prompt_sentinel.deploy.render import find_inference_service, kustomize_build
from prompt_sentinel.errors import ConfigError, DeployError, RegistryError

REPO = Path(__file__).resolve().parents[2]


def _version(root: Path, name: str, version: int, complete: bool = True) -> str:
    directory = root / name / f"v{version}"
    directory.mkdir(parents=True)
    (directory / "sentinel_model.json").write_text("{}")
    if complete:
        (directory / "_COMPLETE").write_text("")
    return str(directory)


@pytest.fixture
def checkout(tmp_path: Path) -> Path:
    """A copy of manifests/ inside a fresh repository directory."""
    shutil.copytree(REPO / "manifests", tmp_path / "repo" / "manifests")
    return tmp_path / "repo" / "manifests"


@pytest.fixture
def registry(tmp_path: Path) -> Path:
    root = tmp_path / "registry"
    _version(root, "prompt-sentinel", 1)
    _version(root, "prompt-sentinel", 2)
    _version(root, "prompt-sentinel", 3, complete=False)
    return root


@pytest.fixture
def cfg():
    return load_config(None, [])


def _snapshot(directory: Path) -> dict[str, bytes]:
    return {p.relative_to(directory).as_posix(): p.read_bytes() for p in sorted(directory.rglob("*")) if p.is_file()}


def _isvc(checkout: Path, env: str) -> dict:
    return find_inference_service(kustomize_build(checkout / "overlays" / env))


def test_round_trip_without_changes_is_byte_identical():
    for path in sorted((REPO / "manifests" / "overlays").glob("*/*.yaml")):
        assert _dump(_load(path)) == path.read_text(), path


def test_promote_rewrites_only_the_pin_keeps_comments_and_renders(checkout, registry, cfg):
    model_file = checkout / "overlays" / "staging" / "model.yaml"
    before = model_file.read_text()
    promotion = promote(checkout, "staging", cfg, registry_root=str(registry), version=1)
    after = model_file.read_text()

    expected_uri = str(registry / "prompt-sentinel" / "v1") + "/"
    changed = [line for line in promotion.diff.splitlines() if line[:1] in "+-" and line[:3] not in ("+++", "---")]
    assert changed == [
        "-    prompt-sentinel.io/model-version: v2",
        "+    prompt-sentinel.io/model-version: v1",
        "-      storageUri: gs://prompt-sentinel-models/registry/prompt-sentinel/v2/",
        f"+      storageUri: {expected_uri}",
    ]
    assert promotion.diff.startswith(
        "--- a/manifests/overlays/staging/model.yaml\n+++ b/manifests/overlays/staging/model.yaml"
    )
    # Every comment line and the layout around the change survive.
    assert [line for line in before.splitlines() if line.lstrip().startswith("#")] == [
        line for line in after.splitlines() if line.lstrip().startswith("#")
    ]
    assert len(before.splitlines()) == len(after.splitlines())

    isvc = _isvc(checkout, "staging")
    assert isvc["spec"]["predictor"]["model"]["storageUri"] == expected_uri
    assert isvc["metadata"]["labels"]["prompt-sentinel.io/model-version"] == "v1"
    assert read_pin(checkout, "staging", cfg).version == 1

    # Promoting the same version again is a no-op.
    again = promote(checkout, "staging", cfg, registry_root=str(registry), version=1)
    assert not again.changed and again.diff == ""
    assert model_file.read_text() == after


def test_the_printed_diff_applies_with_git(checkout, registry, cfg, tmp_path):
    pristine = tmp_path / "pristine"
    shutil.copytree(checkout.parent, pristine)
    promotion = promote(checkout, "dev", cfg, registry_root=str(registry), version=1, image_tag="0.2.0")
    assert {c.relpath for c in promotion.changes} == {
        "manifests/overlays/dev/model.yaml",
        "manifests/overlays/dev/kustomization.yaml",
    }
    patch = tmp_path / "promotion.diff"
    patch.write_text(promotion.diff)
    subprocess.run(["git", "apply", str(patch)], cwd=pristine, check=True, capture_output=True)
    assert _snapshot(pristine / "manifests") == _snapshot(checkout)


@pytest.mark.parametrize(
    ("version", "message"),
    [(3, "incomplete: it has no _COMPLETE"), (7, r"not in the registry.*versions present: v1, v2, v3")],
)
def test_refuses_versions_missing_or_without_complete_marker(checkout, registry, cfg, version, message):
    snapshot = _snapshot(checkout)
    with pytest.raises(RegistryError, match=message):
        promote(checkout, "staging", cfg, registry_root=str(registry), version=version)
    assert _snapshot(checkout) == snapshot


def test_from_staging_to_prod_copies_the_pin_and_starts_a_canary(checkout, registry, cfg):
    promote(checkout, "staging", cfg, registry_root=str(registry), version=1, image_tag="0.3.1")
    promote(checkout, "prod", cfg, registry_root=str(registry), canary=100)  # the last rollout completed
    assert read_pin(checkout, "prod", cfg).canary_percent == 100

    promotion = promote_between(checkout, "staging", "prod", cfg)
    staging, prod = read_pin(checkout, "staging", cfg), read_pin(checkout, "prod", cfg)
    assert (prod.model_name, prod.version, prod.storage_uri, prod.image_tag) == (
        staging.model_name,
        staging.version,
        staging.storage_uri,
        "0.3.1",
    )
    # A new version in an overlay that declares a canary starts at deploy.canary_percent again.
    assert prod.canary_percent == cfg.deploy.canary_percent == promotion.after.canary_percent
    objects = kustomize_build(checkout / "overlays" / "prod")
    isvc = find_inference_service(objects)
    assert isvc["spec"]["predictor"]["canaryTrafficPercent"] == cfg.deploy.canary_percent
    assert isvc["spec"]["predictor"]["model"]["storageUri"] == staging.storage_uri
    runtime = next(o for o in objects if o["kind"] == "ServingRuntime")
    assert runtime["spec"]["containers"][0]["image"] == "ghcr.io/prompt-sentinel/serving:0.3.1"

    explicit = promote_between(checkout, "staging", "prod", cfg, canary=25)
    assert [c.relpath for c in explicit.changes] == ["manifests/overlays/prod/model.yaml"]
    assert "+    canaryTrafficPercent: 25" in explicit.diff.splitlines()


def test_from_refuses_a_source_pin_that_is_not_complete(checkout, registry, cfg):
    # The repository's own staging pin points at a bucket this machine cannot see as complete.
    promote(checkout, "staging", cfg, registry_root=str(registry), version=1)
    (registry / "prompt-sentinel" / "v1" / "_COMPLETE").unlink()
    with pytest.raises(RegistryError, match="incomplete"):
        promote_between(checkout, "staging", "prod", cfg)


def test_canary_is_inserted_where_the_overlay_has_none(checkout, cfg):
    promotion = promote(checkout, "staging", cfg, registry_root="unused", canary=50)
    assert [c.relpath for c in promotion.changes] == ["manifests/overlays/staging/model.yaml"]
    assert _isvc(checkout, "staging")["spec"]["predictor"]["canaryTrafficPercent"] == 50


def test_dry_run_writes_nothing(checkout, registry, cfg):
    snapshot = _snapshot(checkout)
    promotion = promote(checkout, "dev", cfg, registry_root=str(registry), version=2, dry_run=True)
    assert promotion.changed and not promotion.written
    assert _snapshot(checkout) == snapshot


def test_bad_parameters_are_named(checkout, registry, cfg):
    assert parse_version("v12") == parse_version("12") == parse_version(12) == 12
    for bad in ("x", "v0", "v-1", "1.2"):
        with pytest.raises(ConfigError, match="--version"):
            parse_version(bad)
    with pytest.raises(ConfigError, match="--canary 101"):
        promote(checkout, "prod", cfg, registry_root=str(registry), canary=101)
    with pytest.raises(ConfigError, match="--image-tag 'latest'"):
        promote(checkout, "prod", cfg, registry_root=str(registry), image_tag="latest")
    with pytest.raises(ConfigError, match=r"environment 'qa'.*\['dev', 'prod', 'staging'\]"):
        promote(checkout, "qa", cfg, registry_root=str(registry), version=1)
    with pytest.raises(ConfigError, match="--model 'Bad_Name'"):
        promote(checkout, "dev", cfg, registry_root=str(registry), model_name="Bad_Name", version=1)
    with pytest.raises(ConfigError, match="nothing to promote"):
        promote(checkout, "dev", cfg, registry_root=str(registry))
    with pytest.raises(ConfigError, match="--from and --to are both"):
        promote_between(checkout, "prod", "prod", cfg)


def test_an_overlay_that_stops_rendering_is_never_written(checkout, registry, cfg):
    (checkout / "base" / "inferenceservice.yaml").write_text("kind: [unterminated\n")
    snapshot = _snapshot(checkout)
    with pytest.raises(DeployError, match="kubectl kustomize"):
        promote(checkout, "dev", cfg, registry_root=str(registry), version=2)
    assert _snapshot(checkout) == snapshot


def test_registry_check_on_gcs(gcs_bucket):
    root = f"gs://{gcs_bucket}/registry"
    storage.write_text(f"{root}/prompt-sentinel/v1/sentinel_model.json", "{}")
    storage.write_text(f"{root}/prompt-sentinel/v1/_COMPLETE", "")
    storage.write_text(f"{root}/prompt-sentinel/v2/sentinel_model.json", "{}")
    assert check_registry_version(root, "prompt-sentinel", 1) == f"{root}/prompt-sentinel/v1"
    with pytest.raises(RegistryError, match="incomplete"):
        check_registry_version(root, "prompt-sentinel", 2)
    with pytest.raises(RegistryError, match="versions present: v1, v2"):
        check_registry_version(root, "prompt-sentinel", 9)


def test_commit_to_branch_leaves_the_working_tree_alone(checkout, registry, cfg):
    repo = checkout.parent

    def git(*args: str) -> str:
        env = {
            "GIT_AUTHOR_NAME": "t",
            "GIT_AUTHOR_EMAIL": "t@t",
            "GIT_COMMITTER_NAME": "t",
            "GIT_COMMITTER_EMAIL": "t@t",
        }
        return subprocess.run(
            ["git", "-C", str(repo), *args], check=True, capture_output=True, text=True, env={**os.environ, **env}
        ).stdout.strip()

    git("init", "-q", "-b", "main")
    git("add", "-A")
    git("commit", "-q", "-m", "initial")
    head = git("rev-parse", "HEAD")
    promotion = plan_promotion(
        checkout, "dev", cfg, model_name="prompt-sentinel", version=2, storage_uri="gs://b/r/prompt-sentinel/v2/"
    )
    commit = commit_to_branch(promotion, "promote/dev-v2", "Promote v2 to dev")

    assert git("rev-parse", "promote/dev-v2") == commit
    assert git("rev-parse", f"{commit}^") == head
    assert git("rev-parse", "HEAD") == head and git("status", "--porcelain") == ""
    shown = git("show", "promote/dev-v2:manifests/overlays/dev/model.yaml")
    assert "storageUri: gs://b/r/prompt-sentinel/v2/" in shown
    assert git("diff", "--name-only", head, commit) == "manifests/overlays/dev/model.yaml"
    with pytest.raises(DeployError, match="already exists"):
        commit_to_branch(promotion, "promote/dev-v2", "again")


def test_cli_promote_prints_the_diff_and_refuses_bad_versions(checkout, registry):
    app = typer.Typer()
    deploy_cli.register(app)
    runner = CliRunner()
    base = ["--manifests", str(checkout), "--registry", str(registry)]
    result = runner.invoke(app, ["promote", "--model", "prompt-sentinel", "--version", "v1", "--env", "staging", *base])
    assert result.exit_code == 0, result.output
    assert "+      storageUri: " in result.output and "model-version: v1" in result.output

    result = runner.invoke(
        app, ["promote", "--from", "staging", "--to", "prod", "--canary", "10", "--manifests", str(checkout)]
    )
    assert result.exit_code == 0, result.output
    assert "manifests/overlays/prod/model.yaml" in result.output

    result = runner.invoke(app, ["promote", "--version", "v3", "--env", "staging", *base])
    assert result.exit_code != 0 and isinstance(result.exception, RegistryError)
    result = runner.invoke(app, ["promote", "--from", "staging", "--manifests", str(checkout)])
    assert isinstance(result.exception, ConfigError)
