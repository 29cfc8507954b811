"""Adaptive class-weight controller: nudges the loss's per-class weights toward the security targets.

After every validation evaluation the trainer hands the controller the validation confusion matrix. Each
target (``cfg.transformer.controller``) is checked:

================  ===============================  ==========================================
target            off when                          class whose weight is raised
================  ===============================  ==========================================
recall_c2         recall(malicious) < target        malicious
precision_c1      precision(suspicious) < target    the class most often mis-predicted as
                                                    suspicious (suspicious itself if it is never
                                                    predicted at all)
f1_c0             F1(benign) < target               benign
false_alarm_rate  P(pred malicious | benign) > max  benign
missed_threat     P(pred benign | malicious) > max  malicious
================  ===============================  ==========================================

Low suspicious *precision* means other classes leak into "suspicious"; raising the suspicious weight would
make the model predict it even more often and lower precision further, so the weight of the class that leaks
most is raised instead.

A target must stay off for ``patience`` consecutive evaluations before it acts; its counter then restarts, so
a persistent miss raises the weight once every ``patience`` evaluations. A class is raised at most once per
evaluation (by ``alpha_step``) however many targets point at it, and every weight stays within
``[alpha_min, alpha_max]``. Roles come from the label config, so targets whose role is absent are skipped.

Pure Python + numpy (no torch) so it can be unit-tested on a scripted metric sequence.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from prompt_sentinel.config import ControllerConfig, LabelConfig
from prompt_sentinel.errors import TrainingError
from prompt_sentinel.metrics import SecurityScore, score_from_confusion


@dataclass(frozen=True)
class Target:
    """One security target: ``metric`` (a :class:`SecurityScore` field) must be ``>=`` or ``<=`` ``threshold``."""

    name: str
    metric: str
    direction: Literal["min", "max"]
    threshold: float

    def is_off(self, value: float) -> bool:
        return value < self.threshold if self.direction == "min" else value > self.threshold


def build_targets(cfg: ControllerConfig, labels: LabelConfig) -> list[Target]:
    """The targets that apply to this label set (a target needs the roles it talks about)."""
    roles = labels.roles
    targets: list[Target] = []
    if roles.malicious is not None:
        targets.append(Target("recall_c2", "recall_c2", "min", cfg.target_recall_c2))
    if roles.suspicious is not None:
        targets.append(Target("precision_c1", "precision_c1", "min", cfg.target_precision_c1))
    if roles.benign is not None:
        targets.append(Target("f1_c0", "f1_c0", "min", cfg.target_f1_c0))
    if roles.benign is not None and roles.malicious is not None:
        targets.append(Target("false_alarm_rate", "false_alarm_rate", "max", cfg.max_false_alarm_rate))
        targets.append(Target("missed_threat_rate", "missed_threat_rate", "max", cfg.max_missed_threat_rate))
    return targets


class AlphaController:
    """Holds the current per-class loss weights and adjusts them from validation confusion matrices."""

    def __init__(self, initial_alpha: Sequence[float], labels: LabelConfig, cfg: ControllerConfig) -> None:
        if len(initial_alpha) != labels.num_classes:
            raise TrainingError(
                f"initial alpha has {len(initial_alpha)} values but labels.names has {labels.num_classes}"
            )
        if cfg.alpha_min > cfg.alpha_max:
            raise TrainingError(
                f"transformer.controller.alpha_min ({cfg.alpha_min}) must be <= alpha_max ({cfg.alpha_max})"
            )
        self.cfg = cfg
        self.labels = labels
        self.roles = labels.roles
        self.targets = build_targets(cfg, labels)
        self.alpha: list[float] = [float(a) for a in initial_alpha]
        self.off_counts: dict[str, int] = {t.name: 0 for t in self.targets}
        self.trajectory: list[dict[str, Any]] = [
            {"evaluation": 0, "step": 0, "epoch": 0.0, "alpha": list(self.alpha), "off_target": [], "actions": []}
        ]

    @property
    def evaluations(self) -> int:
        return len(self.trajectory) - 1

    def _class_to_raise(self, target: Target, cm: np.ndarray) -> int | None:
        b, s, m = self.roles.benign, self.roles.suspicious, self.roles.malicious
        if target.name in ("recall_c2", "missed_threat_rate"):
            return m
        if target.name in ("f1_c0", "false_alarm_rate"):
            return b
        if target.name == "precision_c1" and s is not None:
            leaks = cm[:, s].astype(float).copy()
            leaks[s] = 0.0
            if cm[:, s].sum() == 0 or leaks.sum() == 0:
                return s  # never predicted (precision 0 by convention): the model under-predicts it
            return int(leaks.argmax())
        return None

    def observe(
        self, cm: Sequence[Sequence[float]] | np.ndarray, step: int, epoch: float | None = None
    ) -> list[dict[str, Any]]:
        """Record one evaluation; returns the weight changes made (possibly none)."""
        matrix = np.asarray(cm, dtype=float)
        n = self.labels.num_classes
        if matrix.shape != (n, n):
            raise TrainingError(f"confusion matrix must be {n}x{n}, got shape {matrix.shape}")
        score: SecurityScore = score_from_confusion(matrix, self.roles)
        values = score.as_dict()

        off_target: list[str] = []
        raise_reasons: dict[int, list[str]] = {}
        for target in self.targets:
            value = values[target.metric]
            if value is None or not target.is_off(float(value)):
                self.off_counts[target.name] = 0
                continue
            off_target.append(target.name)
            self.off_counts[target.name] += 1
            if self.cfg.enabled and self.off_counts[target.name] >= self.cfg.patience:
                self.off_counts[target.name] = 0
                cls = self._class_to_raise(target, matrix)
                if cls is not None:
                    raise_reasons.setdefault(cls, []).append(target.name)

        actions: list[dict[str, Any]] = []
        for cls, reasons in sorted(raise_reasons.items()):
            before = self.alpha[cls]
            after = float(min(self.cfg.alpha_max, max(self.cfg.alpha_min, before + self.cfg.alpha_step)))
            self.alpha[cls] = after
            actions.append(
                {
                    "class_id": cls,
                    "label": self.labels.names[cls],
                    "from": before,
                    "to": after,
                    "targets": reasons,
                    "clipped": after != before + self.cfg.alpha_step,
                }
            )
        self.trajectory.append(
            {
                "evaluation": self.evaluations + 1,
                "step": int(step),
                "epoch": None if epoch is None else float(epoch),
                "metrics": {t.metric: values[t.metric] for t in self.targets},
                "off_target": off_target,
                "actions": actions,
                "alpha": list(self.alpha),
            }
        )
        return actions

    def state_dict(self) -> dict[str, Any]:
        """JSON-serializable state, for checkpoint/resume."""
        return {"alpha": list(self.alpha), "off_counts": dict(self.off_counts), "trajectory": self.trajectory}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        alpha = [float(a) for a in state["alpha"]]
        if len(alpha) != self.labels.num_classes:
            raise TrainingError(f"controller state has {len(alpha)} weights, expected {self.labels.num_classes}")
        self.alpha = alpha
        self.off_counts = {t.name: int(state.get("off_counts", {}).get(t.name, 0)) for t in self.targets}
        self.trajectory = list(state["trajectory"])
