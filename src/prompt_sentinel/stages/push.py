"""The ``push`` stage: register the promoted model (runs only when selection promoted one).

Calls :func:`prompt_sentinel.registry.push_model`: a new immutable version under ``registry.root`` with aliases
``candidate`` and ``champion`` (the previous champion becomes ``previous``), the winner's headline metrics and the
run's lineage; mirrored into the MLflow Model Registry. Writes ``push_result.json`` (name, version, URI), which
the deploy stage reads.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from prompt_sentinel.config import SentinelConfig
from prompt_sentinel.registry import CANDIDATE, CHAMPION, push_model
from prompt_sentinel.run_layout import PUSH_RESULT, SELECTION, WINNER_EVALUATION
from prompt_sentinel.stages.records import finite_scalars

PIPELINE_NAME = "prompt-sentinel-training"


@dataclass
class PushOutcome:
    name: str
    version: int
    uri: str
    ref: str
    aliases: list[str]
    mlflow_version: Any
    mlflow_error: str | None

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2)


def _read_json(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text()) if path.is_file() else {}


def run(
    champion_dir: str | Path,
    selection_dir: str | Path,
    cfg: SentinelConfig,
    out_file: str | Path,
    *,
    source_uri: str | None = None,
) -> PushOutcome:
    """Push ``champion_dir`` with the winner's headline metrics and the run's lineage; write ``push_result.json``."""
    chosen = _read_json(Path(selection_dir, SELECTION))
    evaluation = _read_json(Path(selection_dir, WINNER_EVALUATION))
    headline = {
        k: v
        for k, v in finite_scalars({k: v for k, v in evaluation.items() if not isinstance(v, dict)}).items()
        if k != "schema_version"
    }
    result = push_model(
        str(champion_dir),
        cfg,
        name=cfg.registry.model_name,
        aliases=(CANDIDATE, CHAMPION),
        metrics=headline,
        lineage={
            "pipeline": PIPELINE_NAME,
            "pipeline_run_id": os.environ.get("KFP_RUN_ID") or os.environ.get("PIPELINE_RUN_ID") or "",
            "selection_reason": chosen.get("reason"),
            "evaluation_uri": evaluation.get("evaluation_dir", ""),
            "source_uri": source_uri or str(champion_dir),
        },
    )
    outcome = PushOutcome(
        name=result.name,
        version=result.version,
        uri=result.uri,
        ref=result.ref,
        aliases=list(result.aliases),
        mlflow_version=result.mlflow_version,
        mlflow_error=result.mlflow_error,
    )
    target = Path(out_file)
    if target.is_dir():
        target = target / PUSH_RESULT
    target.write_text(outcome.to_json())
    return outcome
