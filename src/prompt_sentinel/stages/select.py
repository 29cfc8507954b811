"""The ``select`` stage: gates, ranking and the champion-vs-challenger rule over every candidate's evaluation.

Candidates are evaluation directories (``evaluation.json``, and ``source.json`` naming the evaluated model when an
evaluate step wrote it). The current champion — given explicitly, or the registry's ``champion`` alias — is
re-evaluated on the same test set, so the comparison is paired on the same prompts. Writes into ``out_dir``:
``selection.json``, ``results.csv``, ``report.html`` (every model, charts embedded), ``candidates.json`` (where
each candidate's model and evaluation are) and, when a model is promoted, ``winner_evaluation.json``; with
``champion_out`` the winning model directory is copied there for the push stage.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from prompt_sentinel import storage
from prompt_sentinel.config import SentinelConfig
from prompt_sentinel.errors import DataError, StorageError
from prompt_sentinel.evaluation.evaluate import evaluate_model
from prompt_sentinel.evaluation.report import render_report, write_results_csv
from prompt_sentinel.evaluation.selection import (
    SelectionResult,
    load_evaluations,
    read_evaluation,
    select_champion,
    write_selection,
)
from prompt_sentinel.registry import CHAMPION, ModelRegistry
from prompt_sentinel.run_layout import (
    CANDIDATES,
    CHAMPION_EVALUATION_DIR,
    EVALUATED_SOURCE,
    REPORT_HTML,
    RESULTS_CSV,
    SELECTION,
    WINNER_EVALUATION,
)

PUBLISHED = (SELECTION, RESULTS_CSV, REPORT_HTML, CANDIDATES)


@dataclass
class SelectOutcome:
    result: SelectionResult
    candidates: list[dict[str, Any]]
    index: dict[str, dict[str, Any]]  # candidates.json
    winner: dict[str, Any] | None = None  # the winner's evaluation
    champion_evaluation: dict[str, Any] | None = None
    files: list[str] = field(default_factory=list)

    @property
    def promoted(self) -> bool:
        return bool(self.result.promoted)

    def markdown(self) -> str:
        verdict = f"**promoted `{self.result.winner}`**" if self.result.promoted else "**no promotion**"
        lines = [f"# Selection: {verdict}", "", self.result.reason, ""]
        lines += ["| model | custom_score | status |", "|---|---:|---|"]
        for ev in self.candidates:
            score = ev.get("custom_score")
            shown = f"{score:.4f}" if isinstance(score, int | float) else "n/a"
            lines.append(f"| {ev['model']} | {shown} | {self.result.status_of(str(ev['model']))} |")
        return "\n".join(lines) + "\n"

    def metrics(self) -> dict[str, float]:
        values = {
            "promoted": float(self.result.promoted),
            "candidates": float(len(self.candidates)),
            "passed_gates": float(len(self.result.ranking)),
        }
        if self.winner:
            for key in ("custom_score", "f1_macro", "recall_c2"):
                if isinstance(self.winner.get(key), int | float):
                    values[f"winner.{key}"] = float(self.winner[key])
        return values


def _candidates(evaluations: str | Path | Sequence[str]) -> list[dict[str, Any]]:
    if isinstance(evaluations, str | Path):
        return load_evaluations(evaluations)
    return [read_evaluation(location) for location in evaluations]


def _model_uri(evaluation: dict[str, Any]) -> str:
    """Where the evaluated model is: ``source.json`` of an evaluate step, else what the evaluation recorded.

    ``sentinel evaluate`` run by hand writes no ``source.json`` (its caller knows the model), so a missing or
    unreadable one falls back to the ``source`` field of ``evaluation.json``.
    """
    try:
        source = json.loads(storage.read_text(storage.join(evaluation["evaluation_dir"], EVALUATED_SOURCE)))
        return str(source["model_uri"])
    except (DataError, StorageError, json.JSONDecodeError, KeyError, TypeError, OSError):
        return str(evaluation.get("source") or "")


def registry_champion(cfg: SentinelConfig) -> str | None:
    """``<name>/v<N>`` of the registry's current champion of ``cfg.registry.model_name`` (None without one)."""
    name = cfg.registry.model_name
    registry = ModelRegistry(cfg.registry.root, cfg)
    if name not in registry.list_models():
        return None
    version = registry.aliases(name).get(CHAMPION)
    return None if version is None else f"{name}/v{version}"


def run(
    evaluations: str | Path | Sequence[str],
    test_set: pd.DataFrame | str | None,
    cfg: SentinelConfig,
    out_dir: str | Path,
    *,
    champion: str | None = None,
    champion_out: str | Path | None = None,
    report_path: str | Path | None = None,
) -> SelectOutcome:
    """Select over ``evaluations`` (a results directory of evaluation sub-directories, or a list of them).

    ``champion``: the current champion (model directory, gs:// URI or registry ref), re-evaluated on ``test_set``
    (default: the set the candidates were evaluated on). ``report_path``: also copy ``report.html`` there.
    """
    out = str(out_dir)
    candidates = _candidates(evaluations)
    champion_eval = None
    if champion:
        data = test_set if test_set is not None else (candidates[0].get("dataset") or {}).get("uri")
        if data is None:
            raise DataError("the champion needs a test set: the candidates' evaluations do not record theirs")
        champion_eval = evaluate_model(
            champion,
            data,
            cfg,
            out_dir=storage.join(out, CHAMPION_EVALUATION_DIR),
            robustness=False,
            efficiency=False,
            name=f"champion-{champion.rsplit('/', 1)[-1]}" if "/v" in champion else "champion",
        )
    result = select_champion(candidates, cfg, champion_evaluation=champion_eval)
    sources = {str(ev["model"]): _model_uri(ev) for ev in candidates}
    write_selection(result, storage.join(out, SELECTION))
    write_results_csv(candidates, storage.join(out, RESULTS_CSV), result)
    shown = [*candidates, champion_eval] if champion_eval else candidates
    report = render_report(shown, result, storage.join(out, REPORT_HTML))
    if report_path is not None:  # e.g. the KFP HTML artifact the UI shows
        storage.write_bytes(str(report_path), storage.read_bytes(report))
    index = {
        str(ev["model"]): {
            "model_uri": sources[str(ev["model"])],
            "evaluation_uri": ev["evaluation_dir"],
            "custom_score": ev.get("custom_score"),
            "status": result.status_of(str(ev["model"])),
        }
        for ev in candidates
    }
    storage.write_text(storage.join(out, CANDIDATES), json.dumps(index, indent=2))
    outcome = SelectOutcome(result, candidates, index, champion_evaluation=champion_eval)
    if champion_out is not None:
        Path(champion_out).mkdir(parents=True, exist_ok=True)
    if result.promoted:
        outcome.winner = next(ev for ev in candidates if ev["model"] == result.winner)
        storage.write_text(storage.join(out, WINNER_EVALUATION), json.dumps(outcome.winner, indent=2, default=str))
        if champion_out is not None:
            local = storage.download_to_local(sources[str(result.winner)])
            shutil.rmtree(champion_out)
            shutil.copytree(local, champion_out)
    return outcome
