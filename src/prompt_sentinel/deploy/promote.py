"""GitOps promotion: pin a registry version in an environment's overlay, as a reviewable change.

Each overlay pins its model in ``overlays/<env>/model.yaml`` (storageUri, version label, model name and, where
declared, ``canaryTrafficPercent``) and its predictor image tag in ``overlays/<env>/kustomization.yaml``
(``images:``). Promotion rewrites only those values with a ruamel.yaml round trip, so layout and comments are
kept byte for byte, renders the result with kustomize in a scratch copy before touching the checkout, and
returns the unified diff. Nothing here talks to a cluster.
"""

from __future__ import annotations

import difflib
import io
import os
import re
import subprocess
import tempfile
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap

from prompt_sentinel import storage
from prompt_sentinel.config import SentinelConfig
from prompt_sentinel.deploy.render import (
    find_inference_service,
    kustomize_build,
    manifests_copy,
    overlay_dir,
    validate_kserve_object,
)
from prompt_sentinel.errors import ConfigError, DeployError, RegistryError, StorageError
from prompt_sentinel.registry import ModelRef, ModelRegistry
from prompt_sentinel.run_layout import MODEL_DESCRIPTOR

MODEL_FILE = "model.yaml"
KUSTOMIZATION_FILE = "kustomization.yaml"
COMPLETE_MARKER = "_COMPLETE"
VERSION_LABEL = "prompt-sentinel.io/model-version"
MODEL_NAME_ANNOTATION = "prompt-sentinel.io/model-name"
_MODEL_NAME_RE = re.compile(r"^[a-z0-9][a-z0-9-]{0,62}$")  # same rule as RegistryConfig.model_name
_VERSION_RE = re.compile(r"^v?([0-9]+)$")
_TAG_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$")  # the OCI tag grammar
_VERSION_DIR_RE = re.compile(r"^v([0-9]+)$")


@dataclass(frozen=True)
class Pin:
    """What an environment runs: the registry version, where it is stored, the image tag and the canary."""

    model_name: str
    version: int
    storage_uri: str
    image_tag: str | None = None
    canary_percent: int | None = None

    def describe(self) -> str:
        canary = f", canary {self.canary_percent}%" if self.canary_percent is not None else ""
        return f"{self.model_name} v{self.version} ({self.storage_uri}), image tag {self.image_tag}{canary}"


@dataclass(frozen=True)
class FileChange:
    path: Path
    relpath: str  # relative to the repository root (the manifests directory's parent), POSIX separators
    before: str
    after: str


@dataclass
class Promotion:
    """A planned (or written) overlay change."""

    environment: str
    manifests: Path
    before: Pin
    after: Pin
    changes: list[FileChange] = field(default_factory=list)
    written: bool = False

    @property
    def changed(self) -> bool:
        return bool(self.changes)

    @property
    def diff(self) -> str:
        return "".join(
            line
            for c in self.changes
            for line in difflib.unified_diff(
                c.before.splitlines(keepends=True),
                c.after.splitlines(keepends=True),
                fromfile=f"a/{c.relpath}",
                tofile=f"b/{c.relpath}",
            )
        )


# --- parameters -------------------------------------------------------------------------------------------


def parse_version(value: str | int) -> int:
    """``v3``, ``3`` or 3 → 3."""
    match = _VERSION_RE.match(str(value).strip())
    if not match or int(match.group(1)) < 1:
        raise ConfigError(f"--version {value!r} is not a registry version; expected v<N> with N >= 1, e.g. v3")
    return int(match.group(1))


def check_model_name(name: str) -> str:
    if not _MODEL_NAME_RE.match(name or ""):
        raise ConfigError(
            f"--model {name!r} is not a registry model name; expected lowercase letters, digits and '-' "
            "(at most 63 characters, starting with a letter or digit)"
        )
    return name


def check_canary(percent: int | None) -> int | None:
    if percent is not None and not 0 <= percent <= 100:
        raise ConfigError(f"--canary {percent} is out of range; expected a traffic percentage from 0 to 100")
    return percent


def check_image_tag(tag: str | None) -> str | None:
    if tag is None:
        return None
    if not _TAG_RE.match(tag) or tag == "latest":
        raise ConfigError(f"--image-tag {tag!r} is not a pinned image tag; expected e.g. 0.2.0 (never 'latest')")
    return tag


def image_name(image: str) -> str:
    """``ghcr.io/x/serving:0.1.0`` → ``ghcr.io/x/serving`` (a registry port's ':' is not a tag)."""
    image = image.split("@", 1)[0]
    slash = image.rfind("/")
    colon = image.rfind(":")
    return image[:colon] if colon > slash else image


# --- the registry -----------------------------------------------------------------------------------------


def storage_uri_for(uri: str) -> str:
    """The form pinned in manifests: KServe copies a *prefix*, written with a trailing slash."""
    return uri.rstrip("/") + "/"


def _listed_versions(registry_root: str, model_name: str) -> list[int]:
    """Version numbers present under ``<root>/<model>/`` (complete or not), for error messages."""
    try:
        if storage.is_gcs(registry_root):
            bucket, prefix = storage.parse_gs_uri(storage.join(registry_root, model_name))
            blobs = storage.gcs_client().list_blobs(bucket, prefix=prefix.rstrip("/") + "/", delimiter="/")
            list(blobs)  # the prefixes are filled in only once the listing is consumed
            names = [p.rstrip("/").rsplit("/", 1)[-1] for p in blobs.prefixes]
        else:
            root = Path(registry_root, model_name)
            names = [p.name for p in root.iterdir() if p.is_dir()] if root.is_dir() else []
    except Exception:
        return []  # best effort: only used to make an error message more helpful
    return sorted(int(m.group(1)) for n in names if (m := _VERSION_DIR_RE.match(n)))


def check_complete(uri: str, what: str) -> None:
    """Refuse a version directory that is missing or lacks its ``_COMPLETE`` marker."""
    try:
        if storage.exists(storage.join(uri, COMPLETE_MARKER)):
            return
        partial = storage.exists(storage.join(uri, MODEL_DESCRIPTOR)) or (
            not storage.is_gcs(uri) and Path(uri).is_dir()
        )
    except StorageError as exc:
        raise RegistryError(f"cannot check {what} at {uri}: {exc}") from exc
    if partial:
        raise RegistryError(
            f"{what} at {uri} is incomplete: it has no {COMPLETE_MARKER} marker (still being written, or its "
            "registration failed); refusing to deploy it"
        )
    raise RegistryError(f"{what} is not in the registry: nothing at {uri}")


def check_registry_version(registry_root: str, model_name: str, version: int, cfg: SentinelConfig | None = None) -> str:
    """The version's URI, once the registry knows it as complete; :class:`RegistryError` otherwise."""
    try:
        registry = ModelRegistry(registry_root, cfg)
        uri = registry.version_uri(model_name, version)
        if registry.exists(ModelRef(model_name, version)):
            return uri
    except StorageError as exc:
        raise RegistryError(f"cannot read registry {registry_root}: {exc}") from exc
    # Not visible in the registry: say precisely why (never registered, or registration never completed).
    try:
        check_complete(uri, f"{model_name} v{version}")
    except RegistryError as exc:
        if "not in the registry" in str(exc):
            known = _listed_versions(registry_root, model_name)
            hint = f"versions present: {', '.join(f'v{v}' for v in known)}" if known else "no versions present"
            raise RegistryError(f"{exc} (registry {registry_root}; {hint})") from None
        raise
    raise RegistryError(f"{model_name} v{version} is not a complete version in registry {registry_root}")


# --- reading and rewriting overlays ------------------------------------------------------------------------


def _yaml() -> YAML:
    # The manifests' own style (2-space maps, sequences indented under their key), so an untouched node is
    # written back exactly as it was read.
    y = YAML()
    y.preserve_quotes = True
    y.indent(mapping=2, sequence=4, offset=2)
    y.width = 4096
    return y


def _load(path: Path) -> Any:
    if not path.is_file():
        raise DeployError(
            f"{path} is missing; every overlay pins its model in {MODEL_FILE} and its image in {KUSTOMIZATION_FILE}"
        )
    try:
        return _yaml().load(path.read_text())
    except Exception as exc:
        raise DeployError(f"{path} is not valid YAML: {exc}") from exc


def _dump(data: Any) -> str:
    buffer = io.StringIO()
    _yaml().dump(data, buffer)
    return buffer.getvalue()


def _child(node: CommentedMap, key: str, path: Path) -> CommentedMap:
    if key not in node or node[key] is None:
        node[key] = CommentedMap()
    if not isinstance(node[key], dict):
        raise DeployError(f"{path}: '{key}' must be a mapping")
    return node[key]


def _image_entry(kustomization: Any, image: str, path: Path) -> Any:
    name = image_name(image)
    for entry in kustomization.get("images") or []:
        if isinstance(entry, dict) and entry.get("name") == name:
            return entry
    raise DeployError(f"{path}: no `images:` entry named {name!r} (deploy.serving_image) to pin the tag in")


def read_pin(manifests: Path, environment: str, cfg: SentinelConfig) -> Pin:
    """What ``environment``'s overlay runs now."""
    directory = overlay_dir(manifests, environment)
    model_doc = _load(directory / MODEL_FILE)
    kustomization = _load(directory / KUSTOMIZATION_FILE)
    try:
        labels = model_doc["metadata"].get("labels") or {}
        annotations = model_doc["metadata"].get("annotations") or {}
        predictor = model_doc["spec"]["predictor"]
        uri = predictor["model"]["storageUri"]
    except (KeyError, TypeError) as exc:
        raise DeployError(f"{directory / MODEL_FILE}: no spec.predictor.model.storageUri pinned ({exc})") from exc
    raw_version = labels.get(VERSION_LABEL) or Path(str(uri).rstrip("/")).name
    match = _VERSION_DIR_RE.match(str(raw_version))
    if not match:
        raise DeployError(f"{directory / MODEL_FILE}: cannot tell the pinned version from {raw_version!r}")
    canary = predictor.get("canaryTrafficPercent")
    return Pin(
        model_name=str(annotations.get(MODEL_NAME_ANNOTATION) or cfg.registry.model_name),
        version=int(match.group(1)),
        storage_uri=str(uri),
        image_tag=_image_entry(kustomization, cfg.deploy.serving_image, directory / KUSTOMIZATION_FILE).get("newTag"),
        canary_percent=None if canary is None else int(canary),
    )


def plan_promotion(
    manifests: Path,
    environment: str,
    cfg: SentinelConfig,
    *,
    model_name: str | None = None,
    version: int | None = None,
    storage_uri: str | None = None,
    image_tag: str | None = None,
    canary: int | None = None,
) -> Promotion:
    """Compute the overlay change (nothing is written).

    A new version starts as a canary (``deploy.canary_percent``) in overlays that declare
    ``canaryTrafficPercent``, unless ``canary`` says otherwise; ``canary`` alone changes only the traffic split.
    """
    check_canary(canary)
    check_image_tag(image_tag)
    directory = overlay_dir(manifests, environment)
    before = read_pin(manifests, environment, cfg)
    model_path, kust_path = directory / MODEL_FILE, directory / KUSTOMIZATION_FILE
    model_text, kust_text = model_path.read_text(), kust_path.read_text()
    model_doc, kust_doc = _yaml().load(model_text), _yaml().load(kust_text)

    after = before
    if model_name is not None or version is not None or storage_uri is not None:
        if model_name is None or version is None or storage_uri is None:
            raise ConfigError("a new pin needs the model name, the version and its storage URI together")
        after = replace(after, model_name=check_model_name(model_name), version=version, storage_uri=storage_uri)
    if image_tag is not None:
        after = replace(after, image_tag=image_tag)
    new_model = (after.model_name, after.version, after.storage_uri) != (
        before.model_name,
        before.version,
        before.storage_uri,
    )
    if canary is not None:
        after = replace(after, canary_percent=canary)
    elif new_model and before.canary_percent is not None:
        after = replace(after, canary_percent=cfg.deploy.canary_percent)

    metadata = _child(model_doc, "metadata", model_path)
    _child(metadata, "labels", model_path)[VERSION_LABEL] = f"v{after.version}"
    _child(metadata, "annotations", model_path)[MODEL_NAME_ANNOTATION] = after.model_name
    predictor = _child(_child(model_doc, "spec", model_path), "predictor", model_path)
    _child(predictor, "model", model_path)["storageUri"] = after.storage_uri
    if after.canary_percent is not None:
        if "canaryTrafficPercent" in predictor:
            predictor["canaryTrafficPercent"] = after.canary_percent
        else:
            predictor.insert(0, "canaryTrafficPercent", after.canary_percent)
    if after.image_tag is not None:
        _image_entry(kust_doc, cfg.deploy.serving_image, kust_path)["newTag"] = after.image_tag

    root = manifests.parent
    changes = [
        FileChange(path, path.relative_to(root).as_posix(), text, new_text)
        for path, text, new_text in (
            (kust_path, kust_text, _dump(kust_doc)),
            (model_path, model_text, _dump(model_doc)),
        )
        if new_text != text
    ]
    return Promotion(environment, manifests, before, after, changes)


def render_promotion(promotion: Promotion, validate: bool = True) -> dict[str, Any]:
    """Render the overlay with the change applied (in a scratch copy) and return its InferenceService.

    ``validate`` also checks it against the KServe SDK models (importing kserve costs seconds, so the
    promote CLI, which only rewrites scalar values the tests cover, skips it; the deploy stage does not).
    """
    with manifests_copy(promotion.manifests) as scratch:
        for change in promotion.changes:
            (scratch / change.path.relative_to(promotion.manifests)).write_text(change.after)
        objects = kustomize_build(scratch / "overlays" / promotion.environment)
    isvc = find_inference_service(objects)
    if validate:
        validate_kserve_object(isvc)
    return isvc


def write_promotion(promotion: Promotion) -> None:
    for change in promotion.changes:
        storage.write_text(str(change.path), change.after)  # atomic: temp file + rename
    promotion.written = True


def apply_promotion(promotion: Promotion, dry_run: bool = False) -> Promotion:
    """Render the changed overlay (never write one that no longer renders), then write it unless ``dry_run``."""
    render_promotion(promotion, validate=False)
    if not dry_run:
        write_promotion(promotion)
    return promotion


def promote(
    manifests: Path,
    environment: str,
    cfg: SentinelConfig,
    *,
    registry_root: str,
    model_name: str | None = None,
    version: int | None = None,
    image_tag: str | None = None,
    canary: int | None = None,
    dry_run: bool = False,
) -> Promotion:
    """Pin ``model_name`` ``v<version>`` (checked complete in the registry) in ``environment``'s overlay."""
    uri = None
    if version is not None:
        model_name = check_model_name(model_name or cfg.registry.model_name)
        uri = storage_uri_for(check_registry_version(registry_root, model_name, version, cfg))
    elif image_tag is None and canary is None:
        raise ConfigError("nothing to promote: give --version, --image-tag or --canary")
    else:
        model_name = None
    promotion = plan_promotion(
        manifests,
        environment,
        cfg,
        model_name=model_name,
        version=version,
        storage_uri=uri,
        image_tag=image_tag,
        canary=canary,
    )
    return apply_promotion(promotion, dry_run)


def promote_between(
    manifests: Path,
    source: str,
    target: str,
    cfg: SentinelConfig,
    *,
    canary: int | None = None,
    dry_run: bool = False,
) -> Promotion:
    """Copy what ``source`` runs (model, version, storage URI, image tag) into ``target``'s overlay."""
    if source == target:
        raise ConfigError(f"--from and --to are both {source!r}; promote between two environments")
    pin = read_pin(manifests, source, cfg)
    check_complete(pin.storage_uri, f"{pin.model_name} v{pin.version} (pinned in {source})")
    promotion = plan_promotion(
        manifests,
        target,
        cfg,
        model_name=pin.model_name,
        version=pin.version,
        storage_uri=pin.storage_uri,
        image_tag=pin.image_tag,
        canary=canary,
    )
    return apply_promotion(promotion, dry_run)


# --- optional: the change as a commit on a new branch ------------------------------------------------------


def _git(repo: Path, *args: str, env: dict[str, str] | None = None, stdin: str | None = None) -> str:
    try:
        proc = subprocess.run(
            ["git", "-C", str(repo), *args], capture_output=True, text=True, input=stdin, env=env, check=False
        )
    except FileNotFoundError as exc:
        raise DeployError("git is not installed; cannot write the promotion to a branch") from exc
    if proc.returncode != 0:
        raise DeployError(f"`git {' '.join(args)}` failed in {repo}: {proc.stderr.strip()}")
    return proc.stdout.strip()


def commit_to_branch(promotion: Promotion, branch: str, message: str) -> str:
    """Commit the promotion's files onto a new branch off HEAD; returns the commit id.

    Uses git plumbing with a private index, so the working tree, the real index and HEAD stay untouched —
    the branch is a change ready to push and review, nothing more.
    """
    if not promotion.changes:
        raise DeployError("the promotion changes nothing; no branch created")
    repo = Path(_git(promotion.manifests, "rev-parse", "--show-toplevel"))
    _git(repo, "check-ref-format", "--branch", branch)
    ref = f"refs/heads/{branch}"
    exists = subprocess.run(["git", "-C", str(repo), "rev-parse", "--verify", "--quiet", ref], capture_output=True)
    if exists.returncode == 0:
        raise DeployError(f"branch {branch!r} already exists in {repo}; choose another deploy.git_branch")
    parent = _git(repo, "rev-parse", "HEAD")
    env = dict(os.environ)
    if not subprocess.run(["git", "-C", str(repo), "config", "user.email"], capture_output=True).stdout.strip():
        for var, value in (("NAME", "prompt-sentinel"), ("EMAIL", "prompt-sentinel@localhost")):
            env.setdefault(f"GIT_AUTHOR_{var}", value)
            env.setdefault(f"GIT_COMMITTER_{var}", value)
    with tempfile.TemporaryDirectory(prefix="sentinel-git-") as tmp:
        env["GIT_INDEX_FILE"] = str(Path(tmp) / "index")
        _git(repo, "read-tree", parent, env=env)
        for change in promotion.changes:
            blob = _git(repo, "hash-object", "-w", "--stdin", env=env, stdin=change.after)
            rel = change.path.resolve().relative_to(repo.resolve()).as_posix()
            _git(repo, "update-index", "--add", "--cacheinfo", f"100644,{blob},{rel}", env=env)
        tree = _git(repo, "write-tree", env=env)
        commit = _git(repo, "commit-tree", tree, "-p", parent, "-m", message, env=env)
    _git(repo, "update-ref", ref, commit, "0" * 40)  # the all-zero old value: create only, never move
    return commit
