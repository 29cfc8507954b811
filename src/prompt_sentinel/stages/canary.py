"""The ``canary`` stage: judge a canary from the logs of both versions, then complete it or roll it back.

:func:`evaluate` reads which versions run from the environment's overlay (the canary pin and the stable version
recorded when the canary started; ``stable``/``canary`` override them), compares their logged records over the
window (:func:`prompt_sentinel.monitoring.canary.compare_versions`) and writes ``canary.json``. :func:`conclude`
turns a verdict into the overlay change: ``promote`` → all traffic to the canary, ``rollback`` → the stable version
pinned again; ``wait`` changes nothing. Both are reviewed GitOps changes (the diff is returned, and written to the
checkout unless ``dry_run``).
"""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path
from typing import Any

from prompt_sentinel import storage
from prompt_sentinel.config import SentinelConfig
from prompt_sentinel.deploy.canary import complete_canary, read_canary_state, rollback_canary
from prompt_sentinel.deploy.promote import Promotion
from prompt_sentinel.deploy.render import resolve_manifests_dir
from prompt_sentinel.errors import ConfigError, DataError
from prompt_sentinel.monitoring.canary import CanaryVerdict, compare_versions
from prompt_sentinel.monitoring.feedback import load_feedback
from prompt_sentinel.monitoring.logstore import read_logs
from prompt_sentinel.run_layout import CANARY_REPORT

ACTIONS = {"promote": "complete", "rollback": "rollback"}


def evaluate(
    logs: str,
    cfg: SentinelConfig,
    out_dir: str | Path | None = None,
    *,
    environment: str | None = None,
    stable: str | None = None,
    canary: str | None = None,
    since: datetime | None = None,
) -> CanaryVerdict:
    env = environment or cfg.deploy.environment
    if stable is None or canary is None:
        state = read_canary_state(resolve_manifests_dir(cfg.deploy.manifests_dir), env, cfg)
        if state.stable_version is None:
            raise ConfigError(
                f"{env} runs no canary (its model.yaml records no stable version): pass --stable vN --canary vM"
            )
        stable = stable or f"v{state.stable_version}"
        canary = canary or f"v{state.pin.version}"
    read = read_logs(logs, since=since)
    feedback, _ = load_feedback(logs, cfg.labels)
    verdict = compare_versions(read.records, stable, canary, cfg.labels, cfg.monitoring, cfg.gates, feedback)
    verdict.checks["logs"] = read.summary()
    verdict.checks["environment"] = env
    if out_dir is not None:
        out = str(out_dir)
        if not storage.is_gcs(out):
            Path(out).mkdir(parents=True, exist_ok=True)
        storage.write_text(storage.join(out, CANARY_REPORT), json.dumps(verdict.to_dict(), indent=2, default=str))
    return verdict


def read_verdict(path: str | Path) -> dict[str, Any]:
    uri = str(path)
    if not uri.endswith(".json"):
        uri = storage.join(uri, CANARY_REPORT)
    try:
        verdict = json.loads(storage.read_text(uri))
    except json.JSONDecodeError as exc:
        raise DataError(f"{uri} is not valid JSON ({exc})") from None
    if not isinstance(verdict, dict) or verdict.get("verdict") not in ("promote", "rollback", "wait"):
        raise DataError(f"{uri} holds no canary verdict (expected 'verdict': promote, rollback or wait)")
    return verdict


def conclude(action: str, cfg: SentinelConfig, *, environment: str | None = None, dry_run: bool = False) -> Promotion:
    """``complete`` (canary → 100 %) or ``rollback`` (stable version pinned again) as an overlay change."""
    env = environment or cfg.deploy.environment
    manifests = resolve_manifests_dir(cfg.deploy.manifests_dir)
    if action == "complete":
        return complete_canary(manifests, env, cfg, dry_run=dry_run)
    if action == "rollback":
        return rollback_canary(manifests, env, cfg, dry_run=dry_run)
    raise ConfigError(f"canary action {action!r}: expected 'complete' or 'rollback'")
