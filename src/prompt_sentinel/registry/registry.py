"""The model registry: immutable numbered versions plus movable aliases, on a local directory or GCS.

Layout under the root (a local directory or ``gs://bucket/prefix``)::

    <name>/aliases.json            {"aliases": {"champion": 3, ...}, "history": [...]}   (compare-and-swap)
    <name>/v<N>/_CLAIM.json        create-only: whoever creates it owns version N
    <name>/v<N>/<model files>      the artifact directory, file for file
    <name>/v<N>/metadata.json      version, lineage, labels, params, metrics, sha256 of every file
    <name>/v<N>/model_card.md
    <name>/v<N>/_COMPLETE          create-only, written last; holds the sha256 of metadata.json and the card

Readers only see versions with ``_COMPLETE``; a push that dies before it leaves an invisible directory that
:meth:`ModelRegistry.gc` removes once it is older than ``registry.gc_grace_seconds``.
"""

from __future__ import annotations

import json
import logging
import os
import random
import re
import shutil
import subprocess
import tempfile
import time
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from importlib import metadata as importlib_metadata
from pathlib import Path
from typing import Any

from prompt_sentinel import storage
from prompt_sentinel.checksums import MANIFEST_NAME, read_manifest, sha256_bytes, sha256_file, verify_manifest
from prompt_sentinel.config import SentinelConfig
from prompt_sentinel.errors import ChecksumError, ModelFormatError, RegistryError, SentinelError
from prompt_sentinel.models.base import read_descriptor
from prompt_sentinel.registry import model_card
from prompt_sentinel.registry.backends import Backend, make_backend
from prompt_sentinel.run_layout import MODEL_DESCRIPTOR

log = logging.getLogger(__name__)

ALIASES_FILE = "aliases.json"
CLAIM_FILE = "_CLAIM.json"
COMPLETE_FILE = "_COMPLETE"
METADATA_FILE = "metadata.json"
CARD_FILE = "model_card.md"
EVALUATION_FILE = "evaluation.json"
RESERVED_FILES = (CLAIM_FILE, COMPLETE_FILE, METADATA_FILE, CARD_FILE)
ROOT_SEPARATOR = "::"
LATEST = "latest"
CHAMPION, CANDIDATE, PREVIOUS = "champion", "candidate", "previous"
METADATA_SCHEMA = 1

_NAME_RE = re.compile(r"^[a-z0-9][a-z0-9-]{0,62}$")
_ALIAS_RE = re.compile(r"^[a-z][a-z0-9_-]{0,62}$")
_VERSION_DIR_RE = re.compile(r"^v([1-9][0-9]*)$")
_HISTORY_KEEP = 200
_MAX_ALLOCATION_ATTEMPTS = 1000
_MAX_CAS_ATTEMPTS = 100
_TRACKED_PACKAGES = (
    "prompt-sentinel",
    "scikit-learn",
    "skops",
    "imbalanced-learn",
    "numpy",
    "scipy",
    "torch",
    "transformers",
    "safetensors",
    "sentence-transformers",
    "mlflow",
)


# --------------------------------------------------------------------------------------------- references
@dataclass(frozen=True)
class ModelRef:
    """``[root::]name@alias`` or ``[root::]name/v<N>``."""

    name: str
    version: int | None = None
    alias: str | None = None
    root: str | None = None

    def __str__(self) -> str:
        ref = f"{self.name}/v{self.version}" if self.version is not None else f"{self.name}@{self.alias}"
        return f"{self.root}{ROOT_SEPARATOR}{ref}" if self.root else ref


def validate_model_name(name: str) -> str:
    if not isinstance(name, str) or not _NAME_RE.match(name):
        raise RegistryError(
            f"invalid model name {name!r}: use 1-63 lowercase letters, digits and '-', starting with a letter or digit"
        )
    return name


def validate_alias(alias: str) -> str:
    if not isinstance(alias, str) or not _ALIAS_RE.match(alias) or _VERSION_DIR_RE.match(alias):
        raise RegistryError(
            f"invalid alias {alias!r}: use 1-63 lowercase letters, digits, '-' or '_', starting with a letter "
            "(and not of the form v<N>)"
        )
    if alias == LATEST:
        raise RegistryError(f"alias {LATEST!r} is reserved: it always means the highest complete version")
    return alias


def parse_ref(ref: str) -> ModelRef:
    """Parse ``name@alias``, ``name/v3`` (``name/3`` too) or either prefixed with ``<registry root>::``."""
    text = str(ref).strip()
    root: str | None = None
    if ROOT_SEPARATOR in text:
        root, _, text = text.rpartition(ROOT_SEPARATOR)
        root = root.strip() or None
    allowed = "expected 'name@alias', 'name/v<N>' or '<registry-root>::name@alias'"
    if "@" in text:
        name, _, alias = text.partition("@")
        validate_model_name(name)
        if alias != LATEST:
            validate_alias(alias)
        return ModelRef(name=name, alias=alias, root=root)
    if "/" in text:
        name, _, version = text.partition("/")
        validate_model_name(name)
        match = re.fullmatch(r"v?([1-9][0-9]*)", version)
        if not match:
            raise RegistryError(f"invalid version {version!r} in model reference {ref!r}; {allowed}")
        return ModelRef(name=name, version=int(match.group(1)), root=root)
    raise RegistryError(f"invalid model reference {ref!r}; {allowed}")


# ------------------------------------------------------------------------------------------------ results
@dataclass
class PushResult:
    name: str
    version: int
    uri: str
    ref: str
    aliases: list[str]
    metadata_sha256: str
    files: int
    metadata: dict[str, Any] = field(repr=False)
    mlflow_version: str | None = None
    mlflow_error: str | None = None


@dataclass
class VersionInfo:
    name: str
    version: int
    uri: str
    created_at: str
    family: str
    model_type: str
    aliases: list[str]
    metrics: dict[str, float]


@dataclass
class GcReport:
    removed: list[str] = field(default_factory=list)
    in_flight: list[str] = field(default_factory=list)
    swept: int = 0  # leftovers of interrupted local writes (temp files, half-deleted directories)
    dangling_aliases: dict[str, list[str]] = field(default_factory=dict)


# -------------------------------------------------------------------------------------------------- utils
def _now() -> str:
    return datetime.now(timezone.utc).isoformat()


def _json_bytes(payload: Any) -> bytes:
    return (json.dumps(payload, indent=2, sort_keys=True, default=str) + "\n").encode("utf-8")


def _load_json(data: bytes, where: str) -> Any:
    try:
        return json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise RegistryError(f"{where}: not valid JSON ({exc})") from exc


def _package_versions() -> dict[str, str]:
    import platform

    versions = {"python": platform.python_version()}
    for dist in _TRACKED_PACKAGES:
        try:
            versions[dist] = importlib_metadata.version(dist)
        except importlib_metadata.PackageNotFoundError:
            continue
    return versions


def _git_commit() -> str | None:
    for var in ("SENTINEL_GIT_COMMIT", "GIT_COMMIT"):
        if os.environ.get(var):
            return os.environ[var]
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5, check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    commit = out.stdout.strip()
    return commit if out.returncode == 0 and re.fullmatch(r"[0-9a-f]{40}", commit) else None


def _dataset_hashes(node: Any, path: str = "") -> dict[str, str]:
    """Every ``*sha256*`` string that looks like a sha256, keyed by its dotted path in ``training.json``."""
    found: dict[str, str] = {}
    if isinstance(node, Mapping):
        for key, value in node.items():
            sub = f"{path}.{key}" if path else str(key)
            if isinstance(value, str) and "sha256" in str(key).lower() and re.fullmatch(r"[0-9a-f]{64}", value):
                found[sub] = value
            else:
                found.update(_dataset_hashes(value, sub))
    return found


def _read_json_file(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise RegistryError(f"{path}: not readable JSON ({exc})") from exc


def default_cache_dir(cfg: SentinelConfig) -> Path:
    if cfg.registry.cache_dir:
        return Path(cfg.registry.cache_dir).expanduser()
    if os.environ.get("PROMPT_SENTINEL_CACHE"):
        return Path(os.environ["PROMPT_SENTINEL_CACHE"]).expanduser()
    return Path.home() / ".cache" / "prompt-sentinel"


def verify_files(directory: Path, files: Mapping[str, Any]) -> None:
    """Check each ``{relative path: {"sha256": ...}}`` entry; raise :class:`ChecksumError` on any mismatch."""
    for rel, entry in files.items():
        expected = entry["sha256"] if isinstance(entry, Mapping) else str(entry)
        path = directory / rel
        if not path.is_file():
            raise ChecksumError(f"{directory}: {rel} is missing (listed in the registry metadata)")
        actual = sha256_file(path)
        if actual != expected:
            raise ChecksumError(
                f"{path}: sha256 mismatch (registry recorded {expected[:12]}…, file has {actual[:12]}…); "
                "refusing a modified or corrupted model file"
            )


# ---------------------------------------------------------------------------------------------- registry
class ModelRegistry:
    """Versions and aliases of models under one registry root (local directory or ``gs://bucket/prefix``)."""

    def __init__(
        self,
        root: str | None = None,
        cfg: SentinelConfig | None = None,
        *,
        cache_dir: str | Path | None = None,
        client: Any = None,
    ) -> None:
        self.cfg = cfg or SentinelConfig()
        self.root = str(root or self.cfg.registry.root)
        self.backend: Backend = make_backend(self.root, client=client)
        self.root = self.backend.root
        self.cache_dir = Path(cache_dir).expanduser() if cache_dir else default_cache_dir(self.cfg)
        # Test seam: called after every file and metadata is uploaded, right before the _COMPLETE marker.
        self.before_complete: Callable[[int], None] | None = None

    def __repr__(self) -> str:
        return f"ModelRegistry({self.root!r})"

    # ---------------------------------------------------------------- keys
    @staticmethod
    def _vkey(name: str, version: int, file: str = "") -> str:
        return f"{name}/v{version}/{file}" if file else f"{name}/v{version}"

    def version_uri(self, name: str, version: int) -> str:
        return self.backend.uri(self._vkey(validate_model_name(name), int(version)))

    def _other(self, ref: ModelRef) -> ModelRegistry | None:
        """The registry a root-qualified reference points at, when it is not this one."""
        if not ref.root:
            return None
        other = make_backend(ref.root).root
        if other == self.root:
            return None
        return ModelRegistry(other, self.cfg, cache_dir=self.cache_dir)

    # ---------------------------------------------------------------- reading
    def list_models(self) -> list[str]:
        return [n for n in self.backend.list_children("") if _NAME_RE.match(n)]

    def _version_numbers(self, name: str) -> list[int]:
        """Every allocated version number (complete or not)."""
        numbers = []
        for child in self.backend.list_children(name):
            match = _VERSION_DIR_RE.match(child)
            if match:
                numbers.append(int(match.group(1)))
        return sorted(numbers)

    def _complete_versions(self, name: str) -> list[int]:
        keys = set(self.backend.list_keys(name))
        return [v for v in self._version_numbers(name) if self._vkey(name, v, COMPLETE_FILE) in keys]

    def _is_complete(self, name: str, version: int) -> bool:
        return self.backend.read(self._vkey(name, version, COMPLETE_FILE)) is not None

    def _known_model(self, name: str) -> None:
        validate_model_name(name)
        if not self._version_numbers(name) and self.backend.read(f"{name}/{ALIASES_FILE}") is None:
            known = self.list_models()
            raise RegistryError(
                f"unknown model {name!r} in registry {self.root}; "
                + (f"known models: {', '.join(known)}" if known else "the registry is empty")
            )

    def _read_aliases(self, name: str) -> tuple[dict[str, Any], Any]:
        data, generation = self.backend.read_versioned(f"{name}/{ALIASES_FILE}")
        if data is None:
            return {"aliases": {}, "history": []}, generation
        state = _load_json(data, self.backend.uri(f"{name}/{ALIASES_FILE}"))
        if not isinstance(state, dict) or not isinstance(state.get("aliases"), dict):
            raise RegistryError(f"{self.backend.uri(f'{name}/{ALIASES_FILE}')}: malformed alias file")
        state.setdefault("history", [])
        return state, generation

    def aliases(self, name: str) -> dict[str, int]:
        """Alias → version for ``name``."""
        validate_model_name(name)
        return {k: int(v) for k, v in self._read_aliases(name)[0]["aliases"].items()}

    def alias_history(self, name: str) -> list[dict[str, Any]]:
        return list(self._read_aliases(name)[0]["history"])

    def version_of(self, ref: str | ModelRef) -> tuple[str, int]:
        """``(name, version)`` a reference points at; the version is complete (visible)."""
        parsed = parse_ref(ref) if isinstance(ref, str) else ref
        other = self._other(parsed)
        if other is not None:
            return other.version_of(ModelRef(parsed.name, parsed.version, parsed.alias))
        name = parsed.name
        self._known_model(name)
        if parsed.version is not None:
            if not self._is_complete(name, parsed.version):
                complete = self._complete_versions(name)
                raise RegistryError(
                    f"{name} has no version v{parsed.version} in {self.root}; "
                    + (f"versions: {', '.join(f'v{v}' for v in complete)}" if complete else "no complete versions")
                )
            return name, parsed.version
        if parsed.alias == LATEST:
            complete = self._complete_versions(name)
            if not complete:
                raise RegistryError(f"{name} has no complete versions in {self.root}")
            return name, complete[-1]
        aliases = self.aliases(name)
        if parsed.alias not in aliases:
            raise RegistryError(
                f"{name} has no alias {parsed.alias!r}; aliases: "
                + (", ".join(f"{a}→v{v}" for a, v in sorted(aliases.items())) or "none")
            )
        version = aliases[parsed.alias]
        if not self._is_complete(name, version):
            raise RegistryError(
                f"alias {name}@{parsed.alias} points at v{version}, which does not exist in {self.root}"
            )
        return name, version

    def _read_verified_metadata(self, name: str, version: int) -> tuple[dict[str, Any], bytes, dict[str, Any]]:
        """metadata.json checked against the sha256 in the _COMPLETE marker."""
        marker_raw = self.backend.read(self._vkey(name, version, COMPLETE_FILE))
        if marker_raw is None:
            raise RegistryError(f"{name}/v{version} is not a complete version in {self.root}")
        marker = _load_json(marker_raw, self.backend.uri(self._vkey(name, version, COMPLETE_FILE)))
        raw = self.backend.read(self._vkey(name, version, METADATA_FILE))
        if raw is None:
            raise ChecksumError(f"{self.version_uri(name, version)}: {METADATA_FILE} is missing")
        if sha256_bytes(raw) != marker.get("metadata_sha256"):
            raise ChecksumError(
                f"{self.version_uri(name, version)}/{METADATA_FILE}: sha256 does not match the value recorded "
                "when the version was completed; the registry entry was modified"
            )
        return _load_json(raw, METADATA_FILE), raw, marker

    def get_metadata(self, ref: str | ModelRef) -> dict[str, Any]:
        parsed = parse_ref(ref) if isinstance(ref, str) else ref
        other = self._other(parsed)
        if other is not None:
            return other.get_metadata(ModelRef(parsed.name, parsed.version, parsed.alias))
        name, version = self.version_of(parsed)
        metadata = self._read_verified_metadata(name, version)[0]
        metadata["aliases"] = sorted(a for a, v in self.aliases(name).items() if v == version)
        return metadata

    def get_model_card(self, ref: str | ModelRef) -> str:
        parsed = parse_ref(ref) if isinstance(ref, str) else ref
        other = self._other(parsed)
        if other is not None:
            return other.get_model_card(ModelRef(parsed.name, parsed.version, parsed.alias))
        name, version = self.version_of(parsed)
        _, _, marker = self._read_verified_metadata(name, version)
        raw = self.backend.read(self._vkey(name, version, CARD_FILE)) or b""
        if marker.get("model_card_sha256") and sha256_bytes(raw) != marker["model_card_sha256"]:
            raise ChecksumError(f"{self.version_uri(name, version)}/{CARD_FILE}: sha256 mismatch")
        return raw.decode("utf-8")

    def exists(self, ref: str | ModelRef) -> bool:
        try:
            self.version_of(ref)
        except RegistryError:
            return False
        return True

    def list_versions(self, name: str) -> list[VersionInfo]:
        """Complete versions of ``name`` (oldest first) with their aliases and headline metrics."""
        self._known_model(name)
        by_version: dict[int, list[str]] = {}
        for alias, version in self.aliases(name).items():
            by_version.setdefault(version, []).append(alias)
        infos = []
        for version in self._complete_versions(name):
            metadata = self._read_verified_metadata(name, version)[0]
            infos.append(
                VersionInfo(
                    name=name,
                    version=version,
                    uri=self.version_uri(name, version),
                    created_at=str(metadata.get("created_at", "")),
                    family=str(metadata.get("family", "")),
                    model_type=str(metadata.get("model_type", "")),
                    aliases=sorted(by_version.get(version, [])),
                    metrics=model_card.headline_metrics(metadata.get("metrics"), self.cfg.registry.headline_metrics),
                )
            )
        return infos

    def resolve(self, ref: str | ModelRef) -> Path:
        """A local, checksum-verified copy of the version ``ref`` points at (cached by metadata sha256)."""
        parsed = parse_ref(ref) if isinstance(ref, str) else ref
        other = self._other(parsed)
        if other is not None:
            return other.resolve(ModelRef(parsed.name, parsed.version, parsed.alias))
        name, version = self.version_of(parsed)
        metadata, raw, _ = self._read_verified_metadata(name, version)
        digest = sha256_bytes(raw)
        files: dict[str, Any] = metadata.get("files") or {}
        target = self.cache_dir / name / f"v{version}-{digest[:16]}"
        if target.is_dir():
            try:
                verify_files(target, files)  # a tampered cache is refused, not silently re-used
            except ChecksumError as exc:
                raise ChecksumError(
                    f"{exc} (cached copy of {name}/v{version}; delete {target} to fetch it again)"
                ) from None
            return target
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            staging = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp"))
        except OSError as exc:
            raise RegistryError(
                f"cannot write the model cache {self.cache_dir} ({exc.strerror}); set registry.cache_dir "
                "or $PROMPT_SENTINEL_CACHE to a writable directory"
            ) from exc
        try:
            for rel in [*files, CARD_FILE]:
                self.backend.download_file(self._vkey(name, version, rel), staging / rel)
            (staging / METADATA_FILE).write_bytes(raw)
            verify_files(staging, files)
            if (staging / MANIFEST_NAME).is_file():
                verify_manifest(staging)
            try:
                staging.rename(target)
            except OSError:
                if not target.is_dir():  # lost a race with another resolver: theirs is as good as ours
                    raise
                shutil.rmtree(staging, ignore_errors=True)
                verify_files(target, files)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        log.info("resolved %s/v%s to %s", name, version, target)
        return target

    # ---------------------------------------------------------------- pushing
    def _prepare_source(self, model_dir: str | Path) -> tuple[Path, Path | None]:
        """A local copy of ``model_dir`` validated as a model artifact; (path, temp dir to delete)."""
        source = str(model_dir)
        temp: Path | None = None
        if storage.is_gcs(source):
            temp = Path(tempfile.mkdtemp(prefix="sentinel-push-"))
            try:
                local = storage.download_to_local(source, cache_dir=temp)
            except SentinelError as exc:
                shutil.rmtree(temp, ignore_errors=True)
                raise RegistryError(f"cannot read model directory {source}: {exc}") from exc
        else:
            local = Path(source)
        try:
            if not local.is_dir():
                raise RegistryError(f"model directory {source} does not exist or is not a directory")
            missing = [f for f in (MODEL_DESCRIPTOR, MANIFEST_NAME) if not (local / f).is_file()]
            if missing:
                raise RegistryError(
                    f"{source} is not a complete model artifact: missing {', '.join(missing)} (a directory "
                    "written by `sentinel train` has both)"
                )
            try:
                read_descriptor(local)
            except ModelFormatError as exc:
                raise RegistryError(f"{source}: {exc}") from exc
            verify_manifest(local)
        except BaseException:
            if temp is not None:
                shutil.rmtree(temp, ignore_errors=True)
            raise
        return local, temp

    def _source_files(self, local: Path) -> dict[str, dict[str, Any]]:
        manifest = read_manifest(local)
        files: dict[str, dict[str, Any]] = {}
        for path in sorted(p for p in local.rglob("*") if p.is_file()):
            rel = path.relative_to(local).as_posix()
            if any(part.startswith(".") for part in rel.split("/")):
                continue  # editor/OS droppings and temp files are not part of an artifact
            if rel in RESERVED_FILES:
                if rel in manifest:
                    raise RegistryError(f"{local}: the artifact's {rel} clashes with a registry file name")
                continue  # written by a previous registry download: regenerated for this version
            files[rel] = {"sha256": sha256_file(path), "size": path.stat().st_size}
        return files

    def _build_metadata(
        self,
        local: Path,
        name: str,
        files: dict[str, dict[str, Any]],
        metrics: Mapping[str, Any] | None,
        lineage: Mapping[str, Any] | None,
        source: str,
    ) -> dict[str, Any]:
        descriptor = read_descriptor(local)
        params: Any = descriptor.params
        if (local / "params.json").is_file():
            params = _read_json_file(local / "params.json")
        training: dict[str, Any] = {}
        if (local / "training.json").is_file():
            loaded = _read_json_file(local / "training.json")
            training = loaded if isinstance(loaded, dict) else {}
        if metrics is None and (local / EVALUATION_FILE).is_file():
            metrics = _read_json_file(local / EVALUATION_FILE)
        lineage = dict(lineage or {})
        datasets = _dataset_hashes(training)
        if isinstance(metrics, Mapping) and isinstance(metrics.get("dataset"), Mapping):
            datasets.update(_dataset_hashes({"evaluation": metrics["dataset"]}))  # evaluate_model's fingerprint
        datasets.update(dict(lineage.pop("datasets", {}) or {}))
        lineage.setdefault("git_commit", _git_commit())
        lineage.setdefault("pipeline_run_id", os.environ.get("KFP_RUN_ID") or os.environ.get("PIPELINE_RUN_ID"))
        lineage.setdefault("source_uri", source)
        return {
            "schema_version": METADATA_SCHEMA,
            "name": name,
            "created_at": _now(),
            "family": descriptor.family,
            "model_type": descriptor.model_type,
            "labels": json.loads(descriptor.labels.model_dump_json()),
            "label_map": {str(i): n for i, n in descriptor.labels.id2label.items()},
            "decision": json.loads(descriptor.decision.model_dump_json()),
            "params": params if isinstance(params, dict) else {"value": params},
            "training": {k: v for k, v in training.items() if not isinstance(v, dict | list)},
            "metrics": dict(metrics or {}),
            "datasets": datasets,
            "lineage": lineage,
            "package_versions": _package_versions(),
            "files": files,
        }

    def _allocate_version(self, name: str, claim: dict[str, Any]) -> int:
        """Claim the next free version number with a create-only write; exactly one pusher wins each."""
        candidate = (max(self._version_numbers(name), default=0)) + 1
        for _ in range(_MAX_ALLOCATION_ATTEMPTS):
            payload = _json_bytes({**claim, "version": candidate})
            key = self._vkey(name, candidate, CLAIM_FILE)
            if self.backend.create(key, payload):
                return candidate
            # A retried create whose first attempt landed reports a conflict with ourselves.
            existing = self.backend.read(key)
            if existing is not None and _load_json(existing, key).get("push_id") == claim["push_id"]:
                return candidate
            candidate = max(candidate + 1, max(self._version_numbers(name), default=0) + 1)
        raise RegistryError(f"could not allocate a version of {name} after {_MAX_ALLOCATION_ATTEMPTS} attempts")

    def push(
        self,
        model_dir: str | Path,
        name: str | None = None,
        aliases: Sequence[str] = (CANDIDATE,),
        metrics: Mapping[str, Any] | None = None,
        lineage: Mapping[str, Any] | None = None,
    ) -> PushResult:
        """Upload ``model_dir`` as the next version of ``name``, then point ``aliases`` at it.

        Everything is validated before the registry is touched; a failure during upload removes the partial
        version (and a crash leaves one that readers never see and ``gc`` removes).
        """
        name = validate_model_name(name or self.cfg.registry.model_name)
        aliases = [validate_alias(a) for a in dict.fromkeys(aliases or ())]
        local, temp = self._prepare_source(model_dir)
        try:
            files = self._source_files(local)
            metadata = self._build_metadata(local, name, files, metrics, lineage, str(model_dir))
            self.backend.check_writable()
            push_id = uuid.uuid4().hex
            claim = {"push_id": push_id, "created_at": _now(), "host": os.uname().nodename, "pid": os.getpid()}
            version = self._allocate_version(name, claim)
            try:
                metadata.update(
                    version=version,
                    push_id=push_id,
                    uri=self.version_uri(name, version),
                    registry_root=self.root,
                )
                for rel in files:
                    self.backend.upload_file(local / rel, self._vkey(name, version, rel))
                metadata_raw = _json_bytes(metadata)
                card_raw = model_card.render_model_card(metadata).encode("utf-8")
                self.backend.write(self._vkey(name, version, METADATA_FILE), metadata_raw)
                self.backend.write(self._vkey(name, version, CARD_FILE), card_raw)
                if self.before_complete is not None:
                    self.before_complete(version)
                marker = {
                    "version": version,
                    "push_id": push_id,
                    "completed_at": _now(),
                    "metadata_sha256": sha256_bytes(metadata_raw),
                    "model_card_sha256": sha256_bytes(card_raw),
                }
                marker_key = self._vkey(name, version, COMPLETE_FILE)
                if not self.backend.create(marker_key, _json_bytes(marker)):
                    # a retried create whose first attempt landed conflicts with itself: that is success
                    existing = self.backend.read(marker_key)
                    if existing is None or _load_json(existing, marker_key).get("push_id") != push_id:
                        raise RegistryError(f"{name}/v{version} was completed by someone else; this push is void")
            except BaseException:
                self._discard(name, version)
                raise
            log.info("pushed %s as %s/v%s (%s)", model_dir, name, version, self.version_uri(name, version))
            result = PushResult(
                name=name,
                version=version,
                uri=self.version_uri(name, version),
                ref=f"{name}/v{version}",
                aliases=[],
                metadata_sha256=sha256_bytes(metadata_raw),
                files=len(files),
                metadata=metadata,
            )
            changes: dict[str, int | None] = {}
            if aliases:
                changes = self._assign(
                    name, version, aliases, promote=None, mirror=False, op=f"push v{version}: {','.join(aliases)}"
                )
            result.aliases = aliases
            self._mirror_push(result, local, changes)
            return result
        finally:
            if temp is not None:
                shutil.rmtree(temp, ignore_errors=True)

    def _discard(self, name: str, version: int) -> None:
        try:
            self.backend.delete_prefix(self._vkey(name, version))
        except Exception as exc:  # the original error matters more; gc removes what is left
            log.warning("could not remove the partial version %s/v%s: %s", name, version, exc)

    # ---------------------------------------------------------------- aliases
    def _update_aliases(
        self, name: str, op: str, mutate: Callable[[dict[str, int]], dict[str, int]]
    ) -> dict[str, int | None]:
        """Compare-and-swap ``aliases.json``; returns the aliases that changed (None = removed).

        ``mutate`` receives a copy of the current aliases and returns the new mapping (or raises, leaving the
        registry unchanged). On a conflict the file is re-read and ``mutate`` re-applied, so no concurrent
        update is lost. Each update carries an id recorded in the history, which makes a retried write
        whose first attempt did land (lost response) a no-op instead of a double application.
        """
        key = f"{name}/{ALIASES_FILE}"
        op_id = uuid.uuid4().hex
        for attempt in range(_MAX_CAS_ATTEMPTS):
            state, generation = self._read_aliases(name)
            current = {k: int(v) for k, v in state["aliases"].items()}
            if any(entry.get("op_id") == op_id for entry in state["history"]):
                return {}
            updated = mutate(dict(current))
            changes = {a: updated.get(a) for a in set(current) | set(updated) if current.get(a) != updated.get(a)}
            if not changes:
                return {}
            entry = {"op_id": op_id, "at": _now(), "op": op, "changes": changes}
            new_state = {
                "aliases": dict(sorted(updated.items())),
                "history": [*state["history"], entry][-_HISTORY_KEEP:],
            }
            if self.backend.write_if(key, _json_bytes(new_state), generation):
                log.info("%s: %s (%s)", name, op, ", ".join(f"{a}→{v}" for a, v in sorted(changes.items())))
                return changes
            time.sleep(min(1.0, 0.01 * (2 ** min(attempt, 6))) * random.uniform(0.5, 1.5))
        raise RegistryError(f"{self.backend.uri(key)}: too much contention, gave up after {_MAX_CAS_ATTEMPTS} tries")

    def _assign(
        self,
        name: str,
        version: int,
        aliases: Sequence[str],
        promote: bool | None,
        mirror: bool = True,
        op: str | None = None,
    ) -> dict[str, int | None]:
        """Point every alias in ``aliases`` at ``version`` in ONE atomic update.

        ``promote`` keeps the displaced version as ``previous`` (for ``champion``) or ``previous-<alias>``;
        None promotes only ``champion`` and plainly sets the rest (what a push does).
        """
        aliases = [validate_alias(a) for a in aliases]
        if not self._is_complete(name, version):
            raise RegistryError(
                f"{name} has no version v{version} in {self.root}; cannot point {', '.join(aliases)} at it"
            )

        def mutate(current: dict[str, int]) -> dict[str, int]:
            for alias in aliases:
                old = current.get(alias)
                current[alias] = version
                if (alias == CHAMPION if promote is None else promote) and old is not None and old != version:
                    current[PREVIOUS if alias == CHAMPION else f"{PREVIOUS}-{alias}"] = old
            return current

        verb = "promote" if promote else "set"
        changes = self._update_aliases(name, op or f"{verb} {','.join(aliases)}=v{version}", mutate)
        if mirror:
            self._mirror_aliases(name, changes)
        return changes

    def set_alias(self, name: str, alias: str, version: int) -> dict[str, int | None]:
        """Point ``alias`` at ``version`` (no other alias moves)."""
        self._known_model(name)
        return self._assign(name, int(version), [alias], promote=False)

    def remove_alias(self, name: str, alias: str) -> dict[str, int | None]:
        self._known_model(name)
        validate_alias(alias)

        def mutate(current: dict[str, int]) -> dict[str, int]:
            if alias not in current:
                raise RegistryError(f"{name} has no alias {alias!r}; aliases: {', '.join(sorted(current)) or 'none'}")
            del current[alias]
            return current

        changes = self._update_aliases(name, f"remove {alias}", mutate)
        self._mirror_aliases(name, changes)
        return changes

    def promote(self, name: str, version: int, alias: str = CHAMPION) -> dict[str, int | None]:
        """Point ``alias`` at ``version``; the version it displaces becomes ``previous`` (for ``champion``)
        or ``previous-<alias>``, in the same atomic update."""
        self._known_model(name)
        return self._assign(name, int(version), [alias], promote=True)

    def rollback(self, name: str) -> dict[str, int | None]:
        """Swap ``champion`` and ``previous`` (champion ← previous), atomically; rolling back twice undoes it."""
        self._known_model(name)

        def mutate(current: dict[str, int]) -> dict[str, int]:
            if PREVIOUS not in current:
                raise RegistryError(f"{name} has no {PREVIOUS!r} alias to roll back to")
            if not self._is_complete(name, current[PREVIOUS]):
                raise RegistryError(f"{name}@{PREVIOUS} points at v{current[PREVIOUS]}, which does not exist")
            old_champion = current.get(CHAMPION)
            current[CHAMPION] = current.pop(PREVIOUS)
            if old_champion is not None and old_champion != current[CHAMPION]:
                current[PREVIOUS] = old_champion
            return current

        changes = self._update_aliases(name, "rollback", mutate)
        self._mirror_aliases(name, changes)
        return changes

    # ---------------------------------------------------------------- garbage collection
    def gc(self, name: str | None = None, older_than_s: float | None = None) -> GcReport:
        """Remove versions that never got their ``_COMPLETE`` marker, once older than the grace period.

        Younger ones may be pushes in flight and are only reported. Aliases pointing at missing versions are
        reported, not changed (deciding where they should point is a human call).
        """
        grace = self.cfg.registry.gc_grace_seconds if older_than_s is None else float(older_than_s)
        names = [validate_model_name(name)] if name else self.list_models()
        if name:
            self._known_model(name)
        report = GcReport()
        for model in names:
            keys = set(self.backend.list_keys(model))
            complete = set()
            for version in self._version_numbers(model):
                if self._vkey(model, version, COMPLETE_FILE) in keys:
                    complete.add(version)
                    continue
                probe = self._vkey(model, version, CLAIM_FILE)
                if probe not in keys:
                    probe = next((k for k in sorted(keys) if k.startswith(self._vkey(model, version) + "/")), probe)
                age = self.backend.age_seconds(probe)
                ref = f"{model}/v{version}"
                if age is not None and age < grace:
                    report.in_flight.append(ref)
                    continue
                self.backend.delete_prefix(self._vkey(model, version))
                report.removed.append(ref)
                log.info("gc: removed unfinished version %s", ref)
            report.swept += self.backend.sweep(model, grace)
            dangling = [a for a, v in self.aliases(model).items() if v not in complete]
            if dangling:
                report.dangling_aliases[model] = sorted(dangling)
        return report

    # ---------------------------------------------------------------- MLflow mirror
    def _tracking_uri(self) -> str | None:
        if not self.cfg.mlflow.enabled:
            return None
        from prompt_sentinel.registry.mlflow_sync import default_tracking_uri

        return default_tracking_uri(self.cfg, self.root)

    def _mirror_push(self, result: PushResult, local: Path, changes: Mapping[str, int | None]) -> None:
        uri = self._tracking_uri()
        if uri is None:
            if self.cfg.mlflow.enabled:
                result.mlflow_error = "no mlflow.tracking_uri configured for a gs:// registry; not mirrored"
                log.warning("%s/v%s: %s", result.name, result.version, result.mlflow_error)
            return
        from prompt_sentinel.registry import mlflow_sync

        try:
            result.mlflow_version = mlflow_sync.register_version(
                local, {**result.metadata, "metadata_sha256": result.metadata_sha256}, self.cfg, uri
            )
            mlflow_sync.sync_aliases(result.name, changes, uri)
        except Exception as exc:  # the registry is the source of truth; the mirror must not undo a push
            result.mlflow_error = f"{type(exc).__name__}: {exc}"
            log.warning(
                "%s/v%s pushed but not mirrored to MLflow (%s): %s",
                result.name,
                result.version,
                uri,
                result.mlflow_error,
            )

    def _mirror_aliases(self, name: str, changes: Mapping[str, int | None]) -> None:
        uri = self._tracking_uri()
        if uri is None or not changes:
            return
        from prompt_sentinel.registry import mlflow_sync

        try:
            mlflow_sync.sync_aliases(name, changes, uri)
        except Exception as exc:
            log.warning("%s: alias change not mirrored to MLflow (%s): %s", name, uri, exc)


# ------------------------------------------------------------------------------------- one-call helpers
def push_model(
    model_dir: str | Path,
    cfg: SentinelConfig | None = None,
    name: str | None = None,
    aliases: Iterable[str] = (CANDIDATE,),
    metrics: Mapping[str, Any] | None = None,
    lineage: Mapping[str, Any] | None = None,
    root: str | None = None,
) -> PushResult:
    """Push ``model_dir`` to ``root`` (default ``cfg.registry.root``) — the pipeline's push stage."""
    cfg = cfg or SentinelConfig()
    return ModelRegistry(root or cfg.registry.root, cfg).push(
        model_dir, name=name, aliases=tuple(aliases), metrics=metrics, lineage=lineage
    )


def _looks_like_ref(text: str) -> bool:
    try:
        parse_ref(text)
    except RegistryError:
        return False
    return True


def resolve_model_ref(ref_or_path: str | Path, cfg: SentinelConfig | None = None) -> Path:
    """A local, checksum-verified model directory for any way of naming a model.

    Accepts a local model directory, a ``gs://`` model directory, ``name@alias``, ``name/v<N>`` (in
    ``cfg.registry.root``) or ``<registry-root>::name@alias``. Serving and evaluation call this.
    """
    cfg = cfg or SentinelConfig()
    text = str(ref_or_path)
    if ROOT_SEPARATOR in text:
        ref = parse_ref(text)
        return ModelRegistry(ref.root, cfg).resolve(ModelRef(ref.name, ref.version, ref.alias))
    if storage.is_gcs(text):
        return _resolve_gcs_dir(text, cfg)
    path = Path(text).expanduser()
    if path.is_dir():
        if not (path / MODEL_DESCRIPTOR).is_file():
            raise RegistryError(f"{path} is a directory but not a model artifact (no {MODEL_DESCRIPTOR})")
        verify_manifest(path)
        return path
    if _looks_like_ref(text):
        return ModelRegistry(cfg.registry.root, cfg).resolve(text)
    raise RegistryError(
        f"{text!r} is neither an existing model directory nor a registry reference "
        "('name@alias', 'name/v<N>', '<root>::name@alias', 'gs://bucket/model-dir')"
    )


def _resolve_gcs_dir(uri: str, cfg: SentinelConfig) -> Path:
    """Download a gs:// model directory into the cache (keyed by its checksums.json sha256) and verify it."""
    try:
        manifest_raw = storage.read_bytes(storage.join(uri, MANIFEST_NAME))
    except SentinelError as exc:
        raise RegistryError(f"{uri} is not a model artifact: cannot read its {MANIFEST_NAME} ({exc})") from exc
    target = default_cache_dir(cfg) / "gcs" / sha256_bytes(manifest_raw)[:24]
    if target.is_dir():
        verify_manifest(target)
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp"))
    try:
        storage.download_to_local(uri, cache_dir=staging)
        if sha256_file(staging / MANIFEST_NAME) != sha256_bytes(manifest_raw):
            raise ChecksumError(f"{uri}/{MANIFEST_NAME} changed while it was being downloaded")
        verify_manifest(staging)
        try:
            staging.rename(target)
        except OSError:
            if not target.is_dir():
                raise
            shutil.rmtree(staging, ignore_errors=True)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return target
