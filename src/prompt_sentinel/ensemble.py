"""Soft-voting ensembles of trained candidates: one artifact, one decision rule, served like any other model.

The classical models and the fine-tuned transformer make different mistakes (the TF-IDF/embedding models
hedge on role-play jailbreaks, the transformer is over-confident on short German injections), so a weighted
average of their probabilities scores higher than either. Every subset of two or more candidates is tried with
every weight vector on a grid over the simplex, and for each the critical-error costs are tuned
(:func:`prompt_sentinel.decision.tune_costs`) on the **validation split**, which none of the members was fitted
on. The best (members, weights, costs) wins; ties go to fewer members, then to more even weights, and a candidate
that only adds noise is left out.

The artifact is an ordinary model directory: ``sentinel_model.json`` (family ``ensemble``, members and weights in
``params``), ``ensemble.json`` (the whole weight search), and a verbatim copy of every member under
``members/<name>/``; the top-level ``checksums.json`` covers every file, members included, so
:func:`prompt_sentinel.modeling.load_model` verifies the whole tree once before anything is deserialized.
"""

from __future__ import annotations

import itertools
import json
import logging
import shutil
import tempfile
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from prompt_sentinel import storage, tracking
from prompt_sentinel.checksums import MANIFEST_NAME, write_manifest
from prompt_sentinel.config import DecisionConfig, InferenceConfig, LabelRoles, SentinelConfig
from prompt_sentinel.decision import assign_labels, tune_costs
from prompt_sentinel.errors import ModelFormatError, TrainingError
from prompt_sentinel.metrics import security_score
from prompt_sentinel.modeling import ModelDescriptor, SentinelModel, load_model

__all__ = [
    "ENSEMBLE_FAMILY",
    "ENSEMBLE_REPORT",
    "MEMBERS_DIR",
    "EnsembleResult",
    "EnsembleSentinelModel",
    "WeightTrial",
    "blend",
    "build_ensemble",
    "load_ensemble_model",
    "search_weights",
    "simplex_grid",
]

log = logging.getLogger(__name__)

ENSEMBLE_FAMILY = "ensemble"
MEMBERS_DIR = "members"
ENSEMBLE_REPORT = "ensemble.json"


# --- pure logic ---------------------------------------------------------------------------------------------


def simplex_grid(n_members: int, step: float) -> list[tuple[float, ...]]:
    """Every weight vector whose weights are positive multiples of ``step`` summing to 1, most even first.

    Every member keeps a weight of at least ``step``: a member the search would drop should not be in the
    ensemble at all (it would still cost its latency at serving time).
    """
    if n_members < 2:
        raise ValueError(f"an ensemble needs at least 2 members, got {n_members}")
    units = round(1 / step) if step > 0 else 0
    if not 0 < step <= 1 / n_members or abs(units * step - 1) > 1e-9:
        raise ValueError(f"step must divide 1 into at least {n_members} equal parts (e.g. 0.25, 0.125), got {step}")

    def compositions(total: int, parts: int) -> list[tuple[int, ...]]:
        if parts == 1:
            return [(total,)]
        return [
            (first, *rest) for first in range(1, total - parts + 2) for rest in compositions(total - first, parts - 1)
        ]

    vectors = [tuple(u / units for u in c) for c in compositions(units, n_members)]
    return sorted(vectors, key=lambda w: (max(w) - min(w), tuple(-x for x in w)))


def blend(member_proba: Sequence[np.ndarray], weights: Sequence[float]) -> np.ndarray:
    """The weighted average of the members' probabilities (rows still sum to 1)."""
    if len(member_proba) != len(weights) or not member_proba:
        raise ValueError(f"got {len(member_proba)} probability arrays for {len(weights)} weights")
    shapes = {p.shape for p in member_proba}
    if len(shapes) != 1:
        raise ValueError(f"member probabilities differ in shape: {sorted(shapes)}")
    out = np.zeros(member_proba[0].shape, dtype=np.float64)
    for proba, weight in zip(member_proba, weights, strict=True):
        out += weight * np.asarray(proba, dtype=np.float64)
    return out / float(sum(weights))


@dataclass(frozen=True)
class WeightTrial:
    """One subset of the candidates with one weight vector, scored on the validation split."""

    members: tuple[int, ...]  # indices into the candidate list, in order
    weights: tuple[float, ...]  # one per member
    custom_score: float
    argmax_custom_score: float
    false_alarm_cost: float
    missed_threat_cost: float


def search_weights(
    y: np.ndarray,
    member_proba: Sequence[np.ndarray],
    roles: LabelRoles,
    step: float,
    cost_grid: Sequence[float] | None,
) -> tuple[WeightTrial, list[WeightTrial]]:
    """The best subset of two or more candidates, its weights and its tuned costs on held-out ``y``.

    Every subset small enough for ``step`` (k members need ``step <= 1/k``) is tried with every weight vector
    of :func:`simplex_grid`, so a candidate that only adds noise is left out rather than forced in at the
    smallest weight. Ties go to fewer members (cheaper to serve), then to more even weights. ``cost_grid=None``
    keeps argmax labels.
    """
    y = np.asarray(y, dtype=np.int64)
    if len(member_proba) < 2:
        raise ValueError(f"an ensemble needs at least 2 candidates, got {len(member_proba)}")
    largest = min(len(member_proba), round(1 / step))
    trials = []
    for size in range(2, largest + 1):
        for subset in itertools.combinations(range(len(member_proba)), size):
            chosen = [member_proba[i] for i in subset]
            for weights in simplex_grid(size, step):
                proba = blend(chosen, weights)
                if cost_grid is None:
                    score = security_score(y, proba.argmax(axis=1), roles, proba.shape[1]).custom_score
                    trials.append(WeightTrial(subset, weights, score, score, 1.0, 1.0))
                    continue
                tuning = tune_costs(y, proba, roles, cost_grid, source="validation")
                trials.append(
                    WeightTrial(
                        subset,
                        weights,
                        tuning.custom_score,
                        tuning.argmax_custom_score,
                        tuning.false_alarm_cost,
                        tuning.missed_threat_cost,
                    )
                )
    best = trials[0]
    for trial in trials[1:]:  # strictly better only: ties keep fewer members, then the more even weights
        if trial.custom_score > best.custom_score + 1e-12:
            best = trial
    return best, trials


# --- the artifact -------------------------------------------------------------------------------------------


class EnsembleSentinelModel(SentinelModel):
    """Loaded members and their weights; probabilities are the weighted average of the members'."""

    def __init__(
        self, path: Path, descriptor: ModelDescriptor, members: list[SentinelModel], weights: list[float]
    ) -> None:
        super().__init__(path, descriptor)
        self.members = members
        self.weights = weights

    def _predict_proba(self, texts: list[str], batch_size: int) -> np.ndarray:
        # texts are normalized already (SentinelModel.predict_proba); normalization is idempotent, but members'
        # private hook skips the second pass.
        return blend([m._predict_proba(texts, batch_size=batch_size) for m in self.members], self.weights)

    def warmup(self) -> None:
        for member in self.members:
            member.warmup()


def _member_entries(descriptor: ModelDescriptor) -> list[dict[str, Any]]:
    entries = descriptor.params.get("members")
    if not isinstance(entries, list) or len(entries) < 2:
        raise ModelFormatError("ensemble descriptor: params.members must list at least 2 members")
    for i, entry in enumerate(entries):
        if not isinstance(entry, dict) or not isinstance(entry.get("path"), str):
            raise ModelFormatError(f"ensemble descriptor: params.members[{i}] needs a 'path' string")
        weight = entry.get("weight")
        if not isinstance(weight, int | float) or not weight > 0:
            raise ModelFormatError(f"ensemble descriptor: params.members[{i}].weight must be > 0, got {weight!r}")
        parts = Path(entry["path"]).parts
        if Path(entry["path"]).is_absolute() or ".." in parts or not parts or parts[0] != MEMBERS_DIR:
            raise ModelFormatError(
                f"ensemble descriptor: params.members[{i}].path={entry['path']!r} must lie under {MEMBERS_DIR}/"
            )
    return entries


def load_ensemble_model(
    path: Path, descriptor: ModelDescriptor, inference: InferenceConfig | None = None
) -> EnsembleSentinelModel:
    """Load the members of a verified ensemble directory (the caller verified the whole tree's checksums).

    Each member runs on its own backend (``inference``: the same setting, resolved per member's parity record).
    """
    members = []
    for entry in _member_entries(descriptor):
        member = load_model(path / entry["path"], verify=False, inference=inference)
        if member.descriptor.labels != descriptor.labels:
            raise ModelFormatError(
                f"{path / entry['path']}: member labels {member.descriptor.labels.names} differ from the "
                f"ensemble's {descriptor.labels.names}"
            )
        members.append(member)
    return EnsembleSentinelModel(path, descriptor, members, [float(e["weight"]) for e in descriptor.params["members"]])


# --- building one -------------------------------------------------------------------------------------------


@dataclass
class EnsembleResult:
    model_dir: Path | str
    members: list[str]
    weights: list[float]
    validation_custom_score: float
    validation_argmax_custom_score: float
    decision: DecisionConfig
    member_scores: dict[str, float]
    trials: list[WeightTrial] = field(default_factory=list)
    seconds: float = 0.0


def _check_validation(df: Any, cfg: SentinelConfig) -> tuple[list[str], np.ndarray]:
    from prompt_sentinel.data.loading import check_labelled_frame

    check_labelled_frame(df, cfg, "ensemble validation data (weights and costs are tuned on it)", TrainingError)
    return df["text"].tolist(), df["label"].to_numpy(dtype=np.int64)


def _member_names(models: Sequence[SentinelModel], names: Sequence[str] | None) -> list[str]:
    if names is not None:
        if len(names) != len(models):
            raise TrainingError(f"ensemble: {len(names)} names for {len(models)} members")
        chosen = list(names)
    else:
        chosen = []
        for model in models:
            base = model.descriptor.model_type
            chosen.append(base if base not in chosen else f"{base}-{sum(c.startswith(base) for c in chosen) + 1}")
    bad = [n for n in chosen if not n or "/" in n or n.startswith(".")]
    if bad or len(set(chosen)) != len(chosen):
        raise TrainingError(f"ensemble: member names must be unique plain names, got {chosen}")
    return chosen


def build_ensemble(
    member_uris: Sequence[str | Path],
    validation: pd.DataFrame,
    cfg: SentinelConfig,
    out_dir: str | Path,
    names: Sequence[str] | None = None,
    tracking_dir: str | Path | None = None,
) -> EnsembleResult:
    """Search member weights and decision costs on ``validation`` and write the ensemble artifact.

    Members are model directories (local or gs://) trained on the same labels and **not** on ``validation``.
    Nothing is written when any check fails. Like the trainers, it logs an MLflow run (members, weights, costs,
    validation scores, the artifact) to ``cfg.mlflow.tracking_uri`` or a SQLite store in ``tracking_dir``.
    """
    started = time.perf_counter()
    step = cfg.training.ensemble.weight_step
    if len(member_uris) < 2:
        raise TrainingError(f"ensemble: needs at least 2 members, got {len(member_uris)}")
    texts, y = _check_validation(validation, cfg)
    with tempfile.TemporaryDirectory(prefix="sentinel-ensemble-") as cache:
        models = []
        for i, uri in enumerate(member_uris):
            model = load_model(str(uri), cache_dir=Path(cache) / str(i))
            if model.family == ENSEMBLE_FAMILY:
                raise TrainingError(f"ensemble: member {uri} is itself an ensemble; list its members instead")
            if model.descriptor.labels != cfg.labels:
                raise TrainingError(
                    f"ensemble: member {uri} was trained for labels {model.descriptor.labels.names} "
                    f"(roles {model.roles}), the config has {cfg.labels.names} (roles {cfg.labels.roles})"
                )
            models.append(model)
        candidate_names = _member_names(models, names)
        log.info("ensemble: scoring %d candidates on %d validation rows", len(models), len(y))
        candidate_proba = [m.predict_proba(texts) for m in models]
        member_scores = {
            name: security_score(y, model.labels_for(proba), cfg.labels.roles, cfg.labels.num_classes).custom_score
            for name, model, proba in zip(candidate_names, models, candidate_proba, strict=True)
        }
        tuning_cfg = cfg.training.decision_tuning
        best, trials = search_weights(
            y, candidate_proba, cfg.labels.roles, step, tuning_cfg.cost_grid if tuning_cfg.enabled else None
        )
        models = [models[i] for i in best.members]
        member_names = [candidate_names[i] for i in best.members]
        member_uris = [member_uris[i] for i in best.members]
        member_proba = [candidate_proba[i] for i in best.members]
        decision = cfg.serving.decision.model_copy(
            update={"false_alarm_cost": best.false_alarm_cost, "missed_threat_cost": best.missed_threat_cost}
        )
        blended = blend(member_proba, best.weights)
        labels = assign_labels(blended, cfg.labels.roles, decision)
        score = security_score(y, labels, cfg.labels.roles, blended.shape[1])
        descriptor = ModelDescriptor(
            family=ENSEMBLE_FAMILY,
            model_type=ENSEMBLE_FAMILY,
            labels=cfg.labels,
            decision=decision,
            params={
                "members": [
                    {
                        "name": name,
                        "path": f"{MEMBERS_DIR}/{name}",
                        "weight": weight,
                        "family": model.family,
                        "model_type": model.descriptor.model_type,
                        "source": str(uri),
                    }
                    for name, model, weight, uri in zip(member_names, models, best.weights, member_uris, strict=True)
                ],
                "method": "soft_voting",
                "weight_step": step,
            },
        )
        report = {
            "candidates": candidate_names,
            "members": member_names,
            "member_validation_custom_score": member_scores,
            "best": {**asdict(best), "members": member_names},
            "validation": score.as_dict(),
            "validation_rows": len(y),
            "trials": [{**asdict(t), "members": [candidate_names[i] for i in t.members]} for t in trials],
        }

        def fill(directory: Path) -> None:
            for name, model in zip(member_names, models, strict=True):
                shutil.copytree(model.path, directory / MEMBERS_DIR / name)
            descriptor.write(directory)
            (directory / ENSEMBLE_REPORT).write_text(json.dumps(report, indent=2))
            write_manifest(directory)

        out = str(out_dir)
        model_dir: Path | str = out if storage.is_gcs(out) else Path(out)
        with tempfile.TemporaryDirectory() as staging:
            local = storage.publish_directory(out, fill, last=(MANIFEST_NAME,), staging=staging)
            _track(
                cfg, model_dir, local, tracking_dir, member_names, best, score.custom_score, member_scores, validation
            )
    log.info(
        "ensemble: weights %s, costs %s/%s, validation custom score %.4f (members: %s)",
        dict(zip(member_names, best.weights, strict=True)),
        best.false_alarm_cost,
        best.missed_threat_cost,
        score.custom_score,
        {k: round(v, 4) for k, v in member_scores.items()},
    )
    return EnsembleResult(
        model_dir=model_dir,
        members=member_names,
        weights=list(best.weights),
        validation_custom_score=score.custom_score,
        validation_argmax_custom_score=best.argmax_custom_score,
        decision=decision,
        member_scores=member_scores,
        trials=trials,
        seconds=time.perf_counter() - started,
    )


def _track(
    cfg: SentinelConfig,
    model_dir: Path | str,
    local_copy: Path,
    tracking_dir: str | Path | None,
    member_names: list[str],
    best: WeightTrial,
    validation_score: float,
    member_scores: dict[str, float],
    validation: pd.DataFrame,
) -> None:
    run_dir = Path(tracking_dir) if tracking_dir else tracking.default_tracking_dir(str(model_dir))
    tags = {
        "model_type": ENSEMBLE_FAMILY,
        "family": ENSEMBLE_FAMILY,
        "validation_sha256": tracking.dataset_sha256(validation),
        "git_commit": tracking.git_commit(),
    }
    with tracking.start_run(cfg, ENSEMBLE_FAMILY, run_dir, tags) as run:
        if run is None:
            return
        tracking.log_params(
            {
                "members": ",".join(member_names),
                "weight_step": cfg.training.ensemble.weight_step,
                **{f"weight.{name}": w for name, w in zip(member_names, best.weights, strict=True)},
            }
        )
        tracking.log_metrics(
            {
                "val_custom_score": validation_score,
                "val_custom_score_argmax": best.argmax_custom_score,
                "false_alarm_cost": best.false_alarm_cost,
                "missed_threat_cost": best.missed_threat_cost,
                **{f"member_val_custom_score.{name}": v for name, v in member_scores.items()},
            }
        )
        tracking.log_artifact_dir(local_copy, "model")
