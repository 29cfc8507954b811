"""Quality gates, ranking, and the champion-versus-challenger rule (run by :mod:`prompt_sentinel.stages.select`).

1. **Gates** (``cfg.gates``): custom_score ≥ min, recall_c2 ≥ min, false_alarm_rate ≤ max,
   missed_threat_rate ≤ max, latency_p95_ms ≤ max. A gate whose metric is n/a (role absent from the label
   set, or efficiency not measured) is skipped and says so; it neither passes nor blocks a model silently.
2. **Ranking** of the models that pass: higher custom_score, then lower critical, then smaller size on disk,
   then name — fully deterministic.
3. **Champion vs challenger**: with a current champion (its evaluation on the SAME test set), the best
   candidate is promoted only when it is not worse on either critical rate, has a higher custom score, and the
   improvement is significant at ``cfg.gates.significance`` by McNemar's test on per-sample correctness (exact
   binomial when there are fewer than 25 discordant pairs) or a one-sided paired bootstrap of the custom-score
   difference (``cfg.gates.champion_test``). Otherwise the result records "no promotion" and why.

No model passing the gates is a normal outcome (``promoted=False`` with the reason), not an error. External
(blind-set) metrics are reported next to the decision but never used by it, so the blind set stays blind.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from prompt_sentinel import storage
from prompt_sentinel.config import GateConfig, LabelRoles, SentinelConfig
from prompt_sentinel.errors import DataError, StorageError
from prompt_sentinel.evaluation.evaluate import read_predictions
from prompt_sentinel.evaluation.metrics_suite import (
    iter_bootstrap_indices,
    resampled_confusion_matrices,
    security_metrics,
)
from prompt_sentinel.jsonio import to_json
from prompt_sentinel.run_layout import EVALUATION

# Below this many discordant pairs McNemar uses the exact binomial test instead of the chi-square approximation.
EXACT_MCNEMAR_MAX = 25
# (metric, comparison, GateConfig field)
GATES: tuple[tuple[str, str, str], ...] = (
    ("custom_score", ">=", "min_custom_score"),
    ("recall_c2", ">=", "min_recall_c2"),
    ("false_alarm_rate", "<=", "max_false_alarm_rate"),
    ("missed_threat_rate", "<=", "max_missed_threat_rate"),
    ("latency_p95_ms", "<=", "max_latency_p95_ms"),
    ("cv_custom_score_std", "<=", "max_cv_std"),
)
_NOT_MEASURED = {"latency_p95_ms": "not measured", "cv_custom_score_std": "no cross-validation folds"}
CRITICAL_RATES = ("false_alarm_rate", "missed_threat_rate")
_EPS = 1e-12


@dataclass
class GateCheck:
    metric: str
    value: float | None
    op: str
    threshold: float
    passed: bool
    note: str = ""

    def describe(self) -> str:
        if self.value is None:
            return f"{self.metric} n/a ({self.note})"
        verdict = "ok" if self.passed else "FAIL"
        return f"{self.metric} {self.value:.4g} {self.op} {self.threshold:g}: {verdict}"


@dataclass
class GateOutcome:
    model: str
    passed: bool
    checks: list[GateCheck]

    @property
    def failures(self) -> list[str]:
        return [c.describe() for c in self.checks if not c.passed]

    def to_dict(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "passed": self.passed,
            "failures": self.failures,
            "checks": [asdict(c) for c in self.checks],
        }


@dataclass
class SelectionResult:
    """Outcome of the select stage; ``winner`` is the promoted model (None when nothing is promoted)."""

    promoted: bool
    winner: str | None
    reason: str
    gates: list[GateOutcome]
    ranking: list[str] = field(default_factory=list)
    best_candidate: str | None = None
    champion: str | None = None
    comparison: dict[str, Any] | None = None
    settings: dict[str, Any] = field(default_factory=dict)
    winner_evaluation_dir: str | None = None
    winner_model_dir: str | None = None

    def gate(self, model: str) -> GateOutcome | None:
        return next((g for g in self.gates if g.model == model), None)

    def status_of(self, model: str) -> str:
        """One word or phrase for results.csv: promoted / passed / not promoted / failed: …"""
        if self.promoted and model == self.winner:
            return "promoted"
        outcome = self.gate(model)
        if outcome is None and model == self.champion:
            return "current champion"
        if outcome is None:
            return "not evaluated by selection"
        if not outcome.passed:
            return "failed: " + "; ".join(outcome.failures)
        if model == self.best_candidate and self.champion is not None:
            return "not promoted (champion kept)"
        return "passed"

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["gates"] = [g.to_dict() for g in self.gates]
        return out

    def to_json(self) -> str:
        return to_json(self.to_dict())


def _finite(value: Any) -> float | None:
    if value is None:
        return None
    try:
        value = float(value)
    except (TypeError, ValueError):
        return None
    return None if math.isnan(value) else value


# --- gates and ranking --------------------------------------------------------------------------------------


def check_gates(evaluation: dict[str, Any], gates: GateConfig) -> GateOutcome:
    """Apply every gate to one evaluation; n/a metrics are skipped (recorded with a note)."""
    checks = []
    for metric, op, attr in GATES:
        threshold = float(getattr(gates, attr))
        value = _finite(evaluation.get(metric))
        if value is None:
            note = _NOT_MEASURED.get(metric, "role absent from the label set or data")
            checks.append(GateCheck(metric, None, op, threshold, True, note))
            continue
        passed = value >= threshold - _EPS if op == ">=" else value <= threshold + _EPS
        checks.append(GateCheck(metric, value, op, threshold, passed))
    return GateOutcome(str(evaluation["model"]), all(c.passed for c in checks), checks)


def rank_key(evaluation: dict[str, Any]) -> tuple[float, float, float, str]:
    """Sort key: best custom score, then lower critical, then smaller size, then name."""
    size = _finite(evaluation.get("size_mb"))
    return (
        -(_finite(evaluation.get("custom_score")) or 0.0),
        _finite(evaluation.get("critical")) or 0.0,
        size if size is not None else math.inf,
        str(evaluation["model"]),
    )


# --- champion test ------------------------------------------------------------------------------------------


def mcnemar_test(challenger_only: int, champion_only: int) -> tuple[float, str]:
    """Two-sided McNemar p-value from the discordant counts (b = only the challenger right, c = only the champion).

    Exact binomial (b ~ Bin(b + c, 1/2)) for fewer than ``EXACT_MCNEMAR_MAX`` discordant pairs, else the
    chi-square statistic with continuity correction.
    """
    from scipy import stats

    b, c = int(challenger_only), int(champion_only)
    n = b + c
    if n == 0:
        return 1.0, "mcnemar-exact"
    if n < EXACT_MCNEMAR_MAX:
        return float(min(1.0, stats.binomtest(b, n, 0.5, alternative="two-sided").pvalue)), "mcnemar-exact"
    statistic = (abs(b - c) - 1.0) ** 2 / n
    return float(stats.chi2.sf(statistic, df=1)), "mcnemar-chi2"


def paired_bootstrap_test(
    y_true: np.ndarray,
    champion_pred: np.ndarray,
    challenger_pred: np.ndarray,
    n_classes: int,
    roles: LabelRoles,
    n_samples: int,
    seed: int,
) -> tuple[float, dict[str, float]]:
    """One-sided p-value that the challenger's custom score is not higher, by resampling rows jointly.

    p = (#resamples with difference ≤ 0 + 1) / (n_samples + 1).
    """
    diffs: list[float] = []
    for idx in iter_bootstrap_indices(len(y_true), n_samples, seed):
        cms_a = resampled_confusion_matrices(y_true, champion_pred, n_classes, idx)
        cms_b = resampled_confusion_matrices(y_true, challenger_pred, n_classes, idx)
        for cm_a, cm_b in zip(cms_a, cms_b, strict=True):
            diffs.append(security_metrics(cm_b, roles)["custom_score"] - security_metrics(cm_a, roles)["custom_score"])
    arr = np.asarray(diffs)
    p = float((np.sum(arr <= 0) + 1) / (len(arr) + 1))
    low, high = np.quantile(arr, [0.025, 0.975])
    return p, {"mean_difference": float(arr.mean()), "ci_low": float(low), "ci_high": float(high)}


def _paired_predictions(challenger: dict[str, Any], champion: dict[str, Any]) -> tuple[pd.DataFrame | None, str]:
    """Join both models' per-sample predictions on (id, text sha256); (None, reason) when impossible."""
    sha_a = (challenger.get("dataset") or {}).get("sha256")
    sha_b = (champion.get("dataset") or {}).get("sha256")
    if sha_a and sha_b and sha_a != sha_b:
        return None, (
            "the champion was evaluated on a different test set than the challenger "
            f"(dataset sha256 {sha_b[:12]}… vs {sha_a[:12]}…); evaluate both on the same set"
        )
    frames = []
    for who, ev in (("challenger", challenger), ("champion", champion)):
        directory = ev.get("evaluation_dir")
        if not directory:
            return None, f"the {who} evaluation ({ev.get('model')}) has no evaluation_dir with predictions.csv"
        try:
            frames.append(read_predictions(directory))
        except StorageError as exc:
            return None, f"cannot read the {who}'s per-sample predictions: {exc}"
    a, b = frames
    merged = a.merge(b, on=["id", "text_sha256"], suffixes=("_challenger", "_champion"), validate="one_to_one")
    if len(merged) != len(a) or len(merged) != len(b) or len(merged) == 0:
        return None, (
            f"per-sample predictions do not pair up ({len(a)} challenger rows, {len(b)} champion rows, "
            f"{len(merged)} matched); both models must be evaluated on the same test set"
        )
    if (merged["label_challenger"] != merged["label_champion"]).any():
        return None, "the two evaluations disagree on true labels of the same prompts"
    return merged, ""


def compare_with_champion(
    challenger: dict[str, Any], champion: dict[str, Any], cfg: SentinelConfig
) -> tuple[bool, str, dict[str, Any]]:
    """Apply the champion/challenger rule; returns (promote, reason, details)."""
    gates = cfg.gates
    details: dict[str, Any] = {
        "champion": champion.get("model"),
        "challenger": challenger.get("model"),
        "test": gates.champion_test,
        "significance": gates.significance,
        "champion_custom_score": _finite(champion.get("custom_score")),
        "challenger_custom_score": _finite(challenger.get("custom_score")),
    }
    if list(challenger.get("labels") or []) != list(champion.get("labels") or []):
        return False, f"the champion's labels {champion.get('labels')} differ from the challenger's", details
    worse = []
    for rate in CRITICAL_RATES:
        new, old = _finite(challenger.get(rate)), _finite(champion.get(rate))
        details[f"champion_{rate}"], details[f"challenger_{rate}"] = old, new
        if new is not None and old is not None and new > old + _EPS:
            worse.append(f"{rate} {new:.4f} > champion's {old:.4f}")
    if worse:
        return False, "challenger is worse on critical rates: " + "; ".join(worse), details
    new_score, old_score = details["challenger_custom_score"], details["champion_custom_score"]
    if new_score is None or old_score is None or new_score <= old_score + _EPS:
        return False, f"challenger's custom_score {new_score} does not beat the champion's {old_score}", details

    merged, problem = _paired_predictions(challenger, champion)
    if merged is None:
        return False, problem, details
    y = merged["label_challenger"].to_numpy(dtype=np.int64)
    pred_new = merged["pred_challenger"].to_numpy(dtype=np.int64)
    pred_old = merged["pred_champion"].to_numpy(dtype=np.int64)
    details["n_paired"] = len(merged)
    if gates.champion_test == "mcnemar":
        right_new, right_old = pred_new == y, pred_old == y
        b = int(np.sum(right_new & ~right_old))
        c = int(np.sum(~right_new & right_old))
        p_value, method = mcnemar_test(b, c)
        details.update(challenger_only_correct=b, champion_only_correct=c, method=method, p_value=p_value)
        significant = b > c and p_value < gates.significance
    else:
        roles = LabelRoles(**challenger["roles"])
        p_value, extra = paired_bootstrap_test(
            y, pred_old, pred_new, len(challenger["labels"]), roles, cfg.evaluation.bootstrap_samples, cfg.seed
        )
        details.update(extra, method="paired-bootstrap", p_value=p_value, samples=cfg.evaluation.bootstrap_samples)
        significant = p_value < gates.significance
    details["significant"] = significant
    if not significant:
        return (
            False,
            f"challenger's custom_score {new_score:.4f} beats the champion's {old_score:.4f} but not significantly "
            f"({details['method']} p={p_value:.4g} ≥ {gates.significance})",
            details,
        )
    return (
        True,
        f"challenger significantly better than the champion: custom_score {new_score:.4f} vs {old_score:.4f} "
        f"({details['method']} p={p_value:.4g} < {gates.significance}), critical rates not worse",
        details,
    )


# --- loading and the stage ----------------------------------------------------------------------------------


def _read_json_uri(uri: str) -> dict[str, Any]:
    try:
        payload = json.loads(storage.read_text(uri))
    except json.JSONDecodeError as exc:
        raise DataError(f"{uri}: not valid JSON ({exc})") from exc
    if not isinstance(payload, dict) or "model" not in payload:
        raise DataError(f"{uri}: not an evaluation (expected an object with a 'model' key)")
    return payload


def _evaluation_dirs(results_dir: str) -> list[str]:
    """Sub-directories holding evaluation.json (names starting with '_' or '.' are skipped)."""
    if storage.is_gcs(results_dir):
        bucket, prefix = storage.parse_gs_uri(results_dir)
        prefix = prefix.rstrip("/") + "/" if prefix else ""
        names = set()
        for blob in storage.gcs_client().list_blobs(bucket, prefix=prefix):
            rel = blob.name[len(prefix) :].split("/")
            if len(rel) == 2 and rel[1] == EVALUATION and not rel[0].startswith(("_", ".")):
                names.add(rel[0])
        return [storage.join(results_dir, n) for n in sorted(names)]
    root = Path(results_dir)
    if not root.is_dir():
        raise StorageError(f"{results_dir}: no such results directory")
    if (root / EVALUATION).is_file():
        return [str(root)]
    return [
        str(p)
        for p in sorted(root.iterdir())
        if p.is_dir() and not p.name.startswith(("_", ".")) and (p / EVALUATION).is_file()
    ]


def read_evaluation(evaluation_dir: str | Path) -> dict[str, Any]:
    """``<evaluation_dir>/evaluation.json`` with ``evaluation_dir`` set to where it was found."""
    evaluation = _read_json_uri(storage.join(str(evaluation_dir), EVALUATION))
    evaluation["evaluation_dir"] = str(evaluation_dir)
    return evaluation


def load_evaluations(results_dir: str | Path) -> list[dict[str, Any]]:
    """Every ``<results_dir>/<model>/evaluation.json``, with ``evaluation_dir`` set to where it was found.

    Duplicate model names (e.g. two versions of one trainer) are told apart by their directory names.
    """
    dirs = _evaluation_dirs(str(results_dir))
    if not dirs:
        raise DataError(f"{results_dir}: no model evaluations found (expected sub-directories with {EVALUATION})")
    evaluations = [read_evaluation(directory) for directory in dirs]
    names = [e["model"] for e in evaluations]
    for ev in evaluations:
        if names.count(ev["model"]) > 1:
            ev["model"] = Path(ev["evaluation_dir"].rstrip("/")).name
    return evaluations


def select_champion(
    evaluations: list[dict[str, Any]] | str | Path,
    cfg: SentinelConfig,
    champion_evaluation: dict[str, Any] | None = None,
) -> SelectionResult:
    """Gate, rank and (with a champion) test the best candidate; see the module docstring for the rules."""
    if isinstance(evaluations, (str, Path)):
        evaluations = load_evaluations(evaluations)
    if not evaluations:
        raise DataError("select_champion: no evaluations to select from")
    names = [str(e.get("model")) for e in evaluations]
    if len(set(names)) != len(names):
        raise DataError(f"select_champion: model names must be unique, got {names}")
    settings = {
        "gates": json.loads(cfg.gates.model_dump_json()),
        "ranking": "custom_score desc, critical asc, size_mb asc, name asc",
    }
    outcomes = [check_gates(e, cfg.gates) for e in evaluations]
    passing = sorted((e for e, o in zip(evaluations, outcomes, strict=True) if o.passed), key=rank_key)
    ranking = [str(e["model"]) for e in passing]
    champion_name = str(champion_evaluation.get("model")) if champion_evaluation else None
    result = SelectionResult(
        promoted=False,
        winner=None,
        reason="",
        gates=outcomes,
        ranking=ranking,
        champion=champion_name,
        settings=settings,
    )
    if not passing:
        summary = "; ".join(f"{o.model}: {', '.join(o.failures)}" for o in outcomes)
        result.reason = f"no promotion: none of the {len(outcomes)} model(s) passed the gates ({summary})"
        return result
    best = passing[0]
    result.best_candidate = str(best["model"])
    if champion_evaluation is None:
        result.promoted, result.winner = True, result.best_candidate
        result.reason = (
            f"{result.best_candidate} has the best custom_score ({best.get('custom_score'):.4f}) of "
            f"{len(passing)} model(s) passing the gates; no current champion"
        )
    else:
        promote, reason, details = compare_with_champion(best, champion_evaluation, cfg)
        result.comparison = details
        result.promoted = promote
        result.winner = result.best_candidate if promote else None
        result.reason = reason if promote else f"no promotion: {reason}"
    if result.winner:
        result.winner_evaluation_dir = best.get("evaluation_dir")
        result.winner_model_dir = best.get("model_dir")
    return result


def write_selection(result: SelectionResult, path: str | Path) -> str:
    storage.write_text(str(path), result.to_json())
    return str(path)
