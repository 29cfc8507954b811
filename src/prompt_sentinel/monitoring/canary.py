"""The canary verdict: the logs of the stable and the canary version over the canary window, compared.

* **decision rates**: a chi-square test of independence of (version × allow/review/block); the canary fails when the
  test is significant and its block or review rate moved more than ``monitoring.canary_max_decision_shift``;
* **latency**: the canary's p95 over the stable version's p95 must stay under ``monitoring.canary_max_latency_ratio``;
* **critical errors** (on reviewer-labelled records, when each version has ``thresholds.feedback_min_labelled``):
  the canary's false-alarm and missed-threat rates may not exceed the stable version's by more than one standard
  error of the difference, nor the gates.

Verdict: ``rollback`` when any check fails, ``wait`` when either version has fewer than
``monitoring.canary_min_records`` records (no claim either way), else ``promote``.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
from scipy import stats

from prompt_sentinel.config import GateConfig, LabelConfig, MonitoringConfig
from prompt_sentinel.metrics import security_score

DECISIONS = ("allow", "review", "block")


@dataclass
class VersionStats:
    version: str
    records: int
    decision_rates: dict[str, float]
    latency_p95_ms: float | None
    labelled: int
    false_alarm_rate: float | None = None
    missed_threat_rate: float | None = None
    custom_score: float | None = None


@dataclass
class CanaryVerdict:
    verdict: str  # promote | rollback | wait
    reasons: list[str]
    stable: VersionStats
    canary: VersionStats
    checks: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "verdict": self.verdict,
            "reasons": self.reasons,
            "stable": asdict(self.stable),
            "canary": asdict(self.canary),
            "checks": self.checks,
        }


def _version_stats(
    version: str, records: Sequence[dict[str, Any]], feedback: dict[str, str], labels: LabelConfig
) -> VersionStats:
    n = len(records)
    counts = Counter(r["decision"] for r in records)
    latencies = [float(r["latency_ms"]) for r in records if isinstance(r.get("latency_ms"), int | float)]
    stats_ = VersionStats(
        version=version,
        records=n,
        decision_rates={d: counts.get(d, 0) / n if n else 0.0 for d in DECISIONS},
        latency_p95_ms=float(np.percentile(latencies, 95)) if latencies else None,
        labelled=0,
    )
    index = labels.label2id
    pairs = [(index[feedback[r["id"]]], index[r["label"]]) for r in records if r["id"] in feedback]
    if pairs:
        y_true, y_pred = np.array([p[0] for p in pairs]), np.array([p[1] for p in pairs])
        score = security_score(y_true, y_pred, labels.roles, labels.num_classes)
        stats_.labelled = len(pairs)
        stats_.false_alarm_rate, stats_.missed_threat_rate = score.false_alarm_rate, score.missed_threat_rate
        stats_.custom_score = score.custom_score
    return stats_


def _rate_worse(new: float | None, old: float | None, n_new: int, n_old: int) -> bool:
    """``new`` exceeds ``old`` by more than one standard error of the difference of two proportions."""
    if new is None or old is None or not n_new or not n_old:
        return False
    pooled = (new * n_new + old * n_old) / (n_new + n_old)
    se = math.sqrt(max(pooled * (1 - pooled), 1e-9) * (1 / n_new + 1 / n_old))
    return new - old > se


def compare_versions(
    records: Sequence[dict[str, Any]],
    stable: str,
    canary: str,
    labels: LabelConfig,
    settings: MonitoringConfig,
    gates: GateConfig,
    feedback: dict[str, str] | None = None,
) -> CanaryVerdict:
    """The canary verdict from the logged records of both versions (``model_version`` names them)."""
    feedback = feedback or {}
    by_version = {v: [r for r in records if str(r.get("model_version")) == v] for v in (stable, canary)}
    s = _version_stats(stable, by_version[stable], feedback, labels)
    c = _version_stats(canary, by_version[canary], feedback, labels)
    reasons: list[str] = []
    checks: dict[str, Any] = {}
    if min(s.records, c.records) < settings.canary_min_records:
        reasons.append(
            f"not enough traffic yet: stable {stable} has {s.records} records, canary {canary} {c.records} "
            f"(each needs monitoring.canary_min_records={settings.canary_min_records})"
        )
        return CanaryVerdict("wait", reasons, s, c, checks)

    table = np.array(
        [[Counter(r["decision"] for r in by_version[v]).get(d, 0) for d in DECISIONS] for v in (stable, canary)]
    )
    table = table[:, table.sum(axis=0) > 0]
    p_value = float(stats.chi2_contingency(table).pvalue) if table.shape[1] > 1 else 1.0
    shifts = {d: c.decision_rates[d] - s.decision_rates[d] for d in ("block", "review")}
    checks["decisions"] = {"p_value": p_value, "shift": shifts}
    moved = {d: v for d, v in shifts.items() if abs(v) > settings.canary_max_decision_shift}
    if p_value < settings.thresholds.p_value and moved:
        reasons.append(
            "decision rates moved: "
            + ", ".join(f"{d} {s.decision_rates[d]:.1%} → {c.decision_rates[d]:.1%}" for d in moved)
            + f" (chi-square p={p_value:.3g})"
        )

    if s.latency_p95_ms and c.latency_p95_ms:
        ratio = c.latency_p95_ms / s.latency_p95_ms
        checks["latency_p95_ratio"] = ratio
        if ratio > settings.canary_max_latency_ratio:
            reasons.append(
                f"p95 latency {c.latency_p95_ms:.1f} ms vs {s.latency_p95_ms:.1f} ms "
                f"(ratio {ratio:.2f} > {settings.canary_max_latency_ratio})"
            )

    enough = min(s.labelled, c.labelled) >= settings.thresholds.feedback_min_labelled
    checks["labelled"] = {"stable": s.labelled, "canary": c.labelled, "judged": enough}
    if enough:
        for rate, limit in (("false_alarm_rate", gates.max_false_alarm_rate),
                            ("missed_threat_rate", gates.max_missed_threat_rate)):  # fmt: skip
            new, old = getattr(c, rate), getattr(s, rate)
            if _rate_worse(new, old, c.labelled, s.labelled) or (new is not None and new > limit):
                reasons.append(f"{rate} {new:.3f} on reviewer labels (stable {old:.3f}, gate {limit})")
    if reasons:
        return CanaryVerdict("rollback", reasons, s, c, checks)
    return CanaryVerdict(
        "promote",
        [f"canary {canary} matches stable {stable} on decisions, latency and labelled critical errors"],
        s,
        c,
        checks,
    )
