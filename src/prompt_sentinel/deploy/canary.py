"""Canary rollouts as reviewed overlay changes: start one, complete it, or roll it back.

* :func:`start_canary` pins a new version with ``canaryTrafficPercent`` (``deploy.canary_percent`` unless given),
  also in an overlay that declared none, and records what ran before in two annotations of the overlay's
  ``model.yaml`` (``prompt-sentinel.io/stable-model-version`` and ``…/stable-storage-uri``), so the rollback knows
  where to go back to without asking anything but Git;
* :func:`complete_canary` sends all traffic to the canary (``canaryTrafficPercent: 100``) and drops the annotations;
* :func:`rollback_canary` pins the stable version again at 100 % and drops the annotations.

Each returns a :class:`~prompt_sentinel.deploy.promote.Promotion` (diff, changed files) that renders before anything
is written, exactly like ``sentinel promote``.
"""

from __future__ import annotations

import io
from dataclasses import dataclass, replace
from pathlib import Path

from ruamel.yaml import YAML

from prompt_sentinel.config import SentinelConfig
from prompt_sentinel.deploy.promote import (
    MODEL_FILE,
    FileChange,
    Pin,
    Promotion,
    apply_promotion,
    plan_promotion,
    read_pin,
)
from prompt_sentinel.deploy.render import overlay_dir
from prompt_sentinel.errors import DeployError

STABLE_VERSION_ANNOTATION = "prompt-sentinel.io/stable-model-version"
STABLE_URI_ANNOTATION = "prompt-sentinel.io/stable-storage-uri"
FULL_TRAFFIC = 100


@dataclass(frozen=True)
class CanaryState:
    """What an overlay runs: the pin, and the stable version while a canary is in progress."""

    pin: Pin
    stable_version: int | None
    stable_uri: str | None

    @property
    def in_progress(self) -> bool:
        return self.stable_version is not None and (self.pin.canary_percent or 0) < FULL_TRAFFIC


def _yaml() -> YAML:
    y = YAML()
    y.preserve_quotes = True
    y.indent(mapping=2, sequence=4, offset=2)
    y.width = 4096
    return y


def read_canary_state(manifests: Path, environment: str, cfg: SentinelConfig) -> CanaryState:
    pin = read_pin(manifests, environment, cfg)
    doc = _yaml().load((overlay_dir(manifests, environment) / MODEL_FILE).read_text())
    annotations = (doc.get("metadata") or {}).get("annotations") or {}
    raw = annotations.get(STABLE_VERSION_ANNOTATION)
    version = int(str(raw).lstrip("v")) if raw and str(raw).lstrip("v").isdigit() else None
    return CanaryState(pin, version, annotations.get(STABLE_URI_ANNOTATION))


def _annotate(promotion: Promotion, set_: dict[str, str], remove: tuple[str, ...]) -> Promotion:
    """The promotion with ``model.yaml``'s annotations changed as well (layout and comments kept)."""
    path = overlay_dir(promotion.manifests, promotion.environment) / MODEL_FILE
    existing = next((c for c in promotion.changes if c.path == path), None)
    before = existing.before if existing else path.read_text()
    doc = _yaml().load(existing.after if existing else before)
    annotations = doc["metadata"].setdefault("annotations", {})
    for key in remove:
        annotations.pop(key, None)
    annotations.update(set_)
    buffer = io.StringIO()
    _yaml().dump(doc, buffer)
    after = buffer.getvalue()
    changes = [c for c in promotion.changes if c.path != path]
    if after != before:
        changes.append(FileChange(path, path.relative_to(promotion.manifests.parent).as_posix(), before, after))
    return replace(promotion, changes=changes)


def plan_canary_start(
    manifests: Path,
    environment: str,
    cfg: SentinelConfig,
    *,
    model_name: str,
    version: int,
    storage_uri: str,
    percent: int | None = None,
) -> Promotion:
    """The overlay change that starts a canary (nothing rendered or written; see :func:`start_canary`)."""
    percent = cfg.deploy.canary_percent if percent is None else percent
    if not 1 <= percent < FULL_TRAFFIC:
        raise DeployError(f"a canary takes 1 to 99 % of the traffic, not {percent}")
    state = read_canary_state(manifests, environment, cfg)
    if state.in_progress:
        raise DeployError(
            f"{environment} already runs a canary (v{state.pin.version} at {state.pin.canary_percent}%, stable "
            f"v{state.stable_version}); complete or roll it back first (sentinel canary promote)"
        )
    if state.pin.version == version and state.pin.storage_uri == storage_uri:
        raise DeployError(f"{environment} already runs {model_name} v{version}; nothing to canary")
    promotion = plan_promotion(
        manifests, environment, cfg, model_name=model_name, version=version, storage_uri=storage_uri, canary=percent
    )
    stable = {STABLE_VERSION_ANNOTATION: f"v{state.pin.version}", STABLE_URI_ANNOTATION: state.pin.storage_uri}
    return _annotate(promotion, stable, ())


def start_canary(
    manifests: Path,
    environment: str,
    cfg: SentinelConfig,
    *,
    model_name: str,
    version: int,
    storage_uri: str,
    percent: int | None = None,
    dry_run: bool = False,
) -> Promotion:
    """Pin ``model_name`` v``version`` as a canary taking ``percent`` % of the traffic (see the module docstring)."""
    promotion = plan_canary_start(
        manifests, environment, cfg, model_name=model_name, version=version, storage_uri=storage_uri, percent=percent
    )
    return apply_promotion(promotion, dry_run)


def _require_canary(state: CanaryState, environment: str) -> None:
    if state.stable_version is None or not state.stable_uri:
        raise DeployError(
            f"{environment} has no canary in progress (no {STABLE_VERSION_ANNOTATION} annotation in its {MODEL_FILE})"
        )


def complete_canary(manifests: Path, environment: str, cfg: SentinelConfig, *, dry_run: bool = False) -> Promotion:
    """All traffic to the canary version."""
    state = read_canary_state(manifests, environment, cfg)
    _require_canary(state, environment)
    promotion = plan_promotion(manifests, environment, cfg, canary=FULL_TRAFFIC)
    return apply_promotion(_annotate(promotion, {}, (STABLE_VERSION_ANNOTATION, STABLE_URI_ANNOTATION)), dry_run)


def rollback_canary(manifests: Path, environment: str, cfg: SentinelConfig, *, dry_run: bool = False) -> Promotion:
    """The stable version pinned again, with all traffic."""
    state = read_canary_state(manifests, environment, cfg)
    _require_canary(state, environment)
    assert state.stable_version is not None and state.stable_uri is not None
    promotion = plan_promotion(
        manifests,
        environment,
        cfg,
        model_name=state.pin.model_name,
        version=state.stable_version,
        storage_uri=state.stable_uri,
        canary=FULL_TRAFFIC,
    )
    return apply_promotion(_annotate(promotion, {}, (STABLE_VERSION_ANNOTATION, STABLE_URI_ANNOTATION)), dry_run)
