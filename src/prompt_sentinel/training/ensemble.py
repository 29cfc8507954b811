"""Soft-voting ensembles of trained candidates: one artifact, one decision rule, served like any other model.

The classical models and the fine-tuned transformer make different mistakes (the TF-IDF/embedding models
hedge on role-play jailbreaks, the transformer is over-confident on short German injections), so a weighted
average of their probabilities scores higher than either. Every subset of two or more candidates is tried with
every weight vector on a grid over the simplex, and for each the critical-error costs are tuned
(:func:`prompt_sentinel.decision.tune_costs`) on the **validation split**, which none of the members was fitted
on. The best (members, weights, costs) wins; ties go to fewer members, then to more even weights, and a candidate
that only adds noise is left out.

The artifact (loaded by :mod:`prompt_sentinel.models.ensemble`) is an ordinary model directory:
``sentinel_model.json`` (family ``ensemble``, members and weights in ``params``), ``ensemble.json`` (the whole
weight search), and a verbatim copy of every member under ``members/<name>/``; the top-level ``checksums.json``
covers every file, members included, so :func:`prompt_sentinel.models.loading.load_model` verifies the whole
tree once before anything is deserialized.
"""

from __future__ import annotations

import itertools
import logging
import shutil
import tempfile
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from prompt_sentinel.config import DecisionTuningConfig, EnsembleConfig, LabelConfig, LabelRoles, SentinelConfig
from prompt_sentinel.data.loading import check_labelled_frame
from prompt_sentinel.decision import CostTuning, tune_costs
from prompt_sentinel.errors import TrainingError
from prompt_sentinel.metrics import security_score
from prompt_sentinel.models.base import ModelDescriptor, SentinelModel
from prompt_sentinel.models.ensemble import ENSEMBLE_FAMILY, blend
from prompt_sentinel.models.loading import load_model
from prompt_sentinel.run_layout import ENSEMBLE_MEMBERS_DIR, ENSEMBLE_REPORT
from prompt_sentinel.training.base import Fitted, HeldOut, TrainingContext, TrainResult, train_model

log = logging.getLogger(__name__)


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


# --- building one -------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class EnsembleSettings:
    """The config sections the ensemble trainer needs."""

    labels: LabelConfig
    ensemble: EnsembleConfig
    decision_tuning: DecisionTuningConfig

    @classmethod
    def from_config(cls, cfg: SentinelConfig) -> EnsembleSettings:
        return cls(cfg.labels, cfg.training.ensemble, cfg.training.decision_tuning)


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


class EnsembleTrainer:
    """Searches member weights and decision costs on the validation split (the trainer contract's ``fit``).

    Members are model directories (local or gs://) trained on the same labels and **not** on the validation
    split; there is no training split (``train`` is None). ``check`` loads and checks every member.
    """

    family = ENSEMBLE_FAMILY
    model_type = ENSEMBLE_FAMILY

    def __init__(
        self, member_uris: Sequence[str | Path], settings: EnsembleSettings, names: Sequence[str] | None = None
    ) -> None:
        self.member_uris = [str(u) for u in member_uris]
        self.settings = settings
        self.names = names
        self._models: list[SentinelModel] = []
        self._cache: tempfile.TemporaryDirectory[str] | None = None

    def run_name(self, out_dir: str) -> str:
        return ENSEMBLE_FAMILY

    def tags(self) -> dict[str, Any]:
        return {}

    def check(self, train: pd.DataFrame | None, validation: pd.DataFrame | None) -> None:
        labels = self.settings.labels
        if len(self.member_uris) < 2:
            raise TrainingError(f"ensemble: needs at least 2 members, got {len(self.member_uris)}")
        check_labelled_frame(
            validation, labels, "ensemble validation data (weights and costs are tuned on it)", TrainingError
        )
        self._cache = tempfile.TemporaryDirectory(prefix="sentinel-ensemble-")
        models = []
        for i, uri in enumerate(self.member_uris):
            model = load_model(uri, cache_dir=Path(self._cache.name) / str(i))
            if model.family == ENSEMBLE_FAMILY:
                raise TrainingError(f"ensemble: member {uri} is itself an ensemble; list its members instead")
            if model.descriptor.labels != labels:
                raise TrainingError(
                    f"ensemble: member {uri} was trained for labels {model.descriptor.labels.names} "
                    f"(roles {model.roles}), the config has {labels.names} (roles {labels.roles})"
                )
            models.append(model)
        self._models = models
        self._names = _member_names(models, self.names)

    def fit(
        self, train: pd.DataFrame | None, validation: pd.DataFrame | None, *, out_dir: str, run: Any, progress: bool
    ) -> Fitted:
        if not self._models:
            self.check(train, validation)
        assert validation is not None
        labels, step = self.settings.labels, self.settings.ensemble.weight_step
        texts, y = validation["text"].tolist(), validation["label"].to_numpy(dtype=np.int64)
        candidate_names = self._names
        log.info("ensemble: scoring %d candidates on %d validation rows", len(self._models), len(y))
        candidate_proba = [m.predict_proba(texts) for m in self._models]
        member_scores = {
            name: security_score(y, model.labels_for(proba), labels.roles, labels.num_classes).custom_score
            for name, model, proba in zip(candidate_names, self._models, candidate_proba, strict=True)
        }
        tuning_cfg = self.settings.decision_tuning
        best, trials = search_weights(
            y, candidate_proba, labels.roles, step, tuning_cfg.cost_grid if tuning_cfg.enabled else None
        )
        models = [self._models[i] for i in best.members]
        member_names = [candidate_names[i] for i in best.members]
        member_uris = [self.member_uris[i] for i in best.members]
        blended = blend([candidate_proba[i] for i in best.members], best.weights)
        tuning = CostTuning(
            best.false_alarm_cost,
            best.missed_threat_cost,
            best.custom_score,
            best.argmax_custom_score,
            len(y),
            "validation",
        )
        log.info(
            "ensemble: weights %s, costs %s/%s, validation custom score %.4f (members: %s)",
            dict(zip(member_names, best.weights, strict=True)),
            best.false_alarm_cost,
            best.missed_threat_cost,
            best.custom_score,
            {k: round(v, 4) for k, v in member_scores.items()},
        )
        report = {
            "candidates": candidate_names,
            "members": member_names,
            "member_validation_custom_score": member_scores,
            "best": {**asdict(best), "members": member_names},
            "validation_rows": len(y),
            "trials": [{**asdict(t), "members": [candidate_names[i] for i in t.members]} for t in trials],
        }

        def write_files(directory: Path, descriptor: ModelDescriptor) -> None:
            for name, model in zip(member_names, models, strict=True):
                shutil.copytree(model.path, directory / ENSEMBLE_MEMBERS_DIR / name)

        def release() -> None:
            if self._cache is not None:
                self._cache.cleanup()

        weights = dict(zip(member_names, best.weights, strict=True))
        return Fitted(
            params={
                "members": [
                    {
                        "name": name,
                        "path": f"{ENSEMBLE_MEMBERS_DIR}/{name}",
                        "weight": weight,
                        "family": model.family,
                        "model_type": model.descriptor.model_type,
                        "source": uri,
                    }
                    for name, model, weight, uri in zip(member_names, models, best.weights, member_uris, strict=True)
                ],
                "method": "soft_voting",
                "weight_step": step,
            },
            selection_score=best.custom_score,
            write_files=write_files,
            held_out=HeldOut(y, blended, "validation"),
            tuning=tuning,
            reports={ENSEMBLE_REPORT: report},
            mlflow_params={
                "members": ",".join(member_names),
                "weight_step": step,
                **{f"weight.{name}": w for name, w in weights.items()},
            },
            mlflow_metrics={
                "val_custom_score_argmax": best.argmax_custom_score,
                **{f"member_val_custom_score.{name}": v for name, v in member_scores.items()},
            },
            details={
                "members": member_names,
                "weights": list(best.weights),
                "member_scores": member_scores,
                "validation_argmax_custom_score": best.argmax_custom_score,
                "trials": len(trials),
            },
            after_publish=release,
        )


def build_ensemble(
    member_uris: Sequence[str | Path],
    validation: pd.DataFrame,
    cfg: SentinelConfig,
    out_dir: str | Path,
    names: Sequence[str] | None = None,
    tracking_dir: str | Path | None = None,
) -> TrainResult:
    """Search member weights and decision costs on ``validation`` and write the ensemble artifact.

    Nothing is written when any check fails. Like the other trainers it logs an MLflow run (members, weights,
    costs, validation scores, the artifact) to ``cfg.mlflow.tracking_uri`` or a SQLite store in ``tracking_dir``.
    """
    return train_model(
        EnsembleTrainer(member_uris, EnsembleSettings.from_config(cfg), names),
        None,
        validation,
        TrainingContext.from_config(cfg),
        out_dir,
        progress=False,
        tracking_dir=tracking_dir,
    )
