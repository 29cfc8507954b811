"""The ``deploy`` stage: put the pushed version into ``deploy.environment`` (after a successful push).

Reads ``push_result.json`` and calls :func:`prompt_sentinel.deploy.rollout.deploy_model`. In the default
``gitops`` mode nothing talks to a cluster: the overlay change (diff, changed files, rendered InferenceService,
``deploy_result.json``) is written to ``out_dir`` for a reviewer to merge and Argo CD to roll out; ``apply`` mode
applies and waits for Ready.
"""

from __future__ import annotations

import json
from pathlib import Path

from prompt_sentinel.config import SentinelConfig
from prompt_sentinel.deploy.rollout import DeployResult, deploy_model
from prompt_sentinel.run_layout import PUSH_RESULT


def run(
    push_result: str | Path, cfg: SentinelConfig, out_dir: str | Path, *, canary: int | None = None
) -> DeployResult:
    """Deploy the version ``push_result`` (a ``push_result.json`` file, or the directory holding it) describes;
    ``canary``: as a canary with that share of the traffic (the monitoring pipeline's retrained model)."""
    source = Path(push_result)
    if source.is_dir():
        source = source / PUSH_RESULT
    pushed = json.loads(source.read_text())
    return deploy_model(
        pushed["uri"], pushed["name"], int(pushed["version"]), cfg, out_dir=str(out_dir), canary=canary or None
    )
