"""Drift signals: a window of logged traffic against the model's training reference, and one verdict.

Each signal is a two-sample (or goodness-of-fit) test from scipy plus an effect size; it fires only when the test
is significant (``p < thresholds.p_value``) *and* the effect reaches the configured level, because with thousands
of records a harmless shift is always significant:

=================  ==========================================  ===============================================
signal             test (scipy.stats)                          effect size (warn / retrain levels in config)
=================  ==========================================  ===============================================
``label``          chi-square goodness of fit of the predicted  PSI of the predicted-label mix
                   labels against the reference's held-out mix
``score:<class>``  two-sample Kolmogorov–Smirnov               PSI over 10 reference-quantile bins
``length``         two-sample KS of log(1 + characters)         the KS statistic
``oov``            one-sided Mann–Whitney U of per-text         rise of the mean out-of-vocabulary rate (needs
                   out-of-vocabulary rates                      the text: ``monitoring.store_text``)
``script``         one-sided binomial test of texts whose main  share of such texts
                   Unicode script the reference rarely has
``embedding``      MMD permutation test on sentence embeddings  MMD² (RBF kernel, median-distance bandwidth);
                                                                needs the text
``feedback``       reviewer labels: live custom score and       a gate of ``gates`` failed on the labelled part
                   critical error rates
=================  ==========================================  ===============================================

Verdict: ``retrain`` if any signal asks for it, else ``warn`` if any warns, else ``ok``. A window smaller than
``monitoring.min_window_records`` gets ``warn`` with the reason: too little data is never reported as "no drift".
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
from scipy import stats

from prompt_sentinel.config import DriftThresholds, GateConfig, LabelConfig, MonitoringConfig
from prompt_sentinel.metrics import security_score
from prompt_sentinel.monitoring.reference import Reference, oov_rate

STATUSES = ("ok", "warn", "retrain")
SKIPPED = "skipped"
_EPS = 1e-4
# Scripts below this share of the reference's texts count as "unknown" to it.
KNOWN_SCRIPT_SHARE = 0.01


@dataclass
class Signal:
    """One drift signal's statistics and status (``ok``, ``warn``, ``retrain`` or ``skipped``)."""

    name: str
    status: str
    test: str
    statistic: float | None = None
    p_value: float | None = None
    effect: float | None = None
    warn_at: float | None = None
    retrain_at: float | None = None
    detail: str = ""
    current_n: int = 0
    plot: dict[str, Any] = field(default_factory=dict)  # reference/current values for the HTML page

    def to_dict(self, with_plot: bool = False) -> dict[str, Any]:
        data = asdict(self)
        if not with_plot:
            data.pop("plot")
        return data


def _status(effect: float, p_value: float | None, warn_at: float, retrain_at: float, alpha: float) -> str:
    if p_value is not None and p_value >= alpha:
        return "ok"
    if effect >= retrain_at:
        return "retrain"
    if effect >= warn_at:
        return "warn"
    return "ok"


def psi(reference: np.ndarray, current: np.ndarray) -> float:
    """Population stability index of two distributions over the same bins (proportions, smoothed)."""
    ref = np.asarray(reference, dtype=np.float64) + _EPS
    cur = np.asarray(current, dtype=np.float64) + _EPS
    ref, cur = ref / ref.sum(), cur / cur.sum()
    return float(np.sum((cur - ref) * np.log(cur / ref)))


def quantile_bins(reference: np.ndarray, bins: int = 10) -> np.ndarray:
    """Inner bin edges at the reference's quantiles (ties merged), for PSI of a continuous value."""
    edges = np.unique(np.quantile(reference, np.linspace(0, 1, bins + 1)[1:-1]))
    return edges


def binned(values: np.ndarray, edges: np.ndarray) -> np.ndarray:
    return np.bincount(np.searchsorted(edges, values, side="right"), minlength=len(edges) + 1)


# --- the signals ------------------------------------------------------------------------------------------------


def label_signal(reference: Reference, records: Sequence[dict[str, Any]], t: DriftThresholds) -> Signal:
    names = reference.labels
    ref_counts = reference.profile.get("predicted_label_counts")
    test = "chi-square goodness of fit + PSI"
    if not ref_counts:
        return Signal("label", SKIPPED, test, detail="the reference has no held-out predictions")
    cur = Counter(r["label"] for r in records)
    unknown = sorted(set(cur) - set(names))
    if unknown:
        return Signal("label", "retrain", test, detail=f"labels {unknown} are not the reference's {names}")
    ref = np.array([ref_counts.get(n, 0) for n in names], dtype=np.float64)
    obs = np.array([cur.get(n, 0) for n in names], dtype=np.float64)
    expected = (ref + 0.5) / (ref + 0.5).sum() * obs.sum()
    chi2, p = stats.chisquare(obs, expected)
    effect = psi(ref, obs)
    status = _status(effect, float(p), t.label_psi_warn, t.label_psi_retrain, t.p_value)
    shares = ", ".join(
        f"{n} {o / max(obs.sum(), 1):.1%} (ref {r / max(ref.sum(), 1):.1%})"
        for n, o, r in zip(names, obs, ref, strict=True)
    )
    return Signal(
        "label", status, test, float(chi2), float(p), effect, t.label_psi_warn, t.label_psi_retrain, shares,
        int(obs.sum()), {"kind": "bars", "categories": names, "reference": ref.tolist(), "current": obs.tolist()},
    )  # fmt: skip


def score_signals(reference: Reference, records: Sequence[dict[str, Any]], t: DriftThresholds) -> list[Signal]:
    scores = reference.profile.get("scores")
    test = "two-sample KS + PSI (reference-quantile bins)"
    if not scores:
        return [Signal("score", SKIPPED, test, detail="the reference has no held-out scores")]
    signals = []
    for name in reference.labels:
        ref = np.asarray(scores.get(name) or [], dtype=np.float64)
        cur = np.asarray([float(r["scores"].get(name, np.nan)) for r in records], dtype=np.float64)
        cur = cur[np.isfinite(cur)]
        if not len(ref) or not len(cur):
            signals.append(Signal(f"score:{name}", SKIPPED, test, detail="no scores for this class"))
            continue
        ks = stats.ks_2samp(ref, cur)
        edges = quantile_bins(ref)
        effect = psi(binned(ref, edges), binned(cur, edges))
        status = _status(effect, float(ks.pvalue), t.score_psi_warn, t.score_psi_retrain, t.p_value)
        detail = f"mean P({name}) {cur.mean():.3f} (ref {ref.mean():.3f})"
        plot = {"kind": "hist", "reference": ref.tolist(), "current": cur.tolist(), "range": [0.0, 1.0]}
        signals.append(
            Signal(f"score:{name}", status, test, float(ks.statistic), float(ks.pvalue), effect,
                   t.score_psi_warn, t.score_psi_retrain, detail, len(cur), plot)
        )  # fmt: skip
    return signals


def length_signal(reference: Reference, records: Sequence[dict[str, Any]], t: DriftThresholds) -> Signal:
    ref = np.log1p(np.asarray(reference.profile.get("lengths") or [], dtype=np.float64))
    cur = np.log1p(np.asarray([r["chars"] for r in records], dtype=np.float64))
    test = "two-sample KS of log(1 + characters)"
    if not len(ref) or not len(cur):
        return Signal("length", SKIPPED, test, detail="no lengths")
    ks = stats.ks_2samp(ref, cur)
    status = _status(float(ks.statistic), float(ks.pvalue), t.length_ks_warn, t.length_ks_retrain, t.p_value)
    detail = f"median {np.expm1(np.median(cur)):.0f} chars (ref {np.expm1(np.median(ref)):.0f})"
    plot = {"kind": "hist", "reference": ref.tolist(), "current": cur.tolist(), "xlabel": "log(1 + characters)"}
    return Signal("length", status, test, float(ks.statistic), float(ks.pvalue), float(ks.statistic),
                  t.length_ks_warn, t.length_ks_retrain, detail, len(cur), plot)  # fmt: skip


def _texts(records: Sequence[dict[str, Any]]) -> list[str]:
    return [r["text"] for r in records if isinstance(r.get("text"), str)]


def oov_signal(reference: Reference, records: Sequence[dict[str, Any]], t: DriftThresholds) -> Signal:
    test = "one-sided Mann-Whitney U of out-of-vocabulary rates"
    texts = _texts(records)
    vocabulary = set(reference.profile.get("vocabulary") or [])
    ref = np.asarray(reference.profile.get("oov_rates") or [], dtype=np.float64)
    if not texts:
        return Signal("oov", SKIPPED, test, detail="the logs hold no text (monitoring.store_text is false)")
    if not vocabulary or not len(ref):
        return Signal("oov", SKIPPED, test, detail="the reference has no vocabulary")
    cur = np.asarray([r for x in texts if (r := oov_rate(x, vocabulary)) is not None], dtype=np.float64)
    if not len(cur):
        return Signal("oov", SKIPPED, test, detail="no words in the logged texts")
    u = stats.mannwhitneyu(cur, ref, alternative="greater")
    effect = float(cur.mean() - ref.mean())
    status = _status(effect, float(u.pvalue), t.oov_increase_warn, t.oov_increase_retrain, t.p_value)
    detail = f"mean OOV rate {cur.mean():.3f} (ref {ref.mean():.3f})"
    plot = {"kind": "hist", "reference": ref.tolist(), "current": cur.tolist(), "range": [0.0, 1.0]}
    return Signal("oov", status, test, float(u.statistic), float(u.pvalue), effect,
                  t.oov_increase_warn, t.oov_increase_retrain, detail, len(cur), plot)  # fmt: skip


def script_signal(reference: Reference, records: Sequence[dict[str, Any]], t: DriftThresholds) -> Signal:
    test = "one-sided binomial test of texts in a script the reference rarely has"
    shares: dict[str, float] = reference.profile.get("scripts") or {}
    scripts = [r.get("script") for r in records if isinstance(r.get("script"), str)]
    if not shares or not scripts:
        return Signal("script", SKIPPED, test, detail="no script information")
    known = {s for s, share in shares.items() if share >= KNOWN_SCRIPT_SHARE}
    expected = max(sum(share for s, share in shares.items() if s not in known), 0.001)
    unknown = [s for s in scripts if s not in known and s != "NONE"]
    share = len(unknown) / len(scripts)
    p = stats.binomtest(len(unknown), len(scripts), expected, alternative="greater").pvalue
    effect = max(share - expected, 0.0)
    status = _status(effect, float(p), t.unknown_script_warn, t.unknown_script_retrain, t.p_value)
    top = ", ".join(f"{s} {n}" for s, n in Counter(unknown).most_common(3))
    detail = f"{share:.1%} of texts in scripts the reference rarely has ({top or 'none'}); known: {sorted(known)}"
    cats = sorted(set(known) | set(Counter(unknown)))
    current = Counter(scripts)
    plot = {"kind": "bars", "categories": cats, "reference": [shares.get(c, 0.0) * len(scripts) for c in cats],
            "current": [float(current.get(c, 0)) for c in cats]}  # fmt: skip
    return Signal("script", status, test, float(len(unknown)), float(p), effect,
                  t.unknown_script_warn, t.unknown_script_retrain, detail, len(scripts), plot)  # fmt: skip


def mmd_permutation_test(
    x: np.ndarray, y: np.ndarray, permutations: int = 200, seed: int = 0
) -> tuple[float, float, list[float]]:
    """Unbiased MMD² of samples ``x`` and ``y`` (RBF kernel, median pairwise distance as bandwidth) and its
    permutation p-value; also returns the null MMD² values (for the plot)."""
    pooled = np.vstack([x, y]).astype(np.float64)
    sq = np.sum(pooled**2, axis=1)
    d2 = np.maximum(sq[:, None] + sq[None, :] - 2 * pooled @ pooled.T, 0.0)
    upper = d2[np.triu_indices_from(d2, k=1)]
    bandwidth = float(np.median(upper)) or 1.0
    kernel = np.exp(-d2 / bandwidth)
    np.fill_diagonal(kernel, 0.0)
    n, m = len(x), len(y)

    def mmd2(idx: np.ndarray) -> float:
        a, b = idx[:n], idx[n:]
        kxx = kernel[np.ix_(a, a)].sum() / (n * (n - 1))
        kyy = kernel[np.ix_(b, b)].sum() / (m * (m - 1))
        kxy = kernel[np.ix_(a, b)].sum() / (n * m)
        return float(kxx + kyy - 2 * kxy)

    observed = mmd2(np.arange(n + m))
    rng = np.random.default_rng(seed)
    null = [mmd2(rng.permutation(n + m)) for _ in range(permutations)]
    p = (1 + sum(v >= observed for v in null)) / (1 + permutations)
    return observed, float(p), null


def embedding_signal(
    reference: Reference,
    records: Sequence[dict[str, Any]],
    settings: MonitoringConfig,
    current_embeddings: np.ndarray | None = None,
    seed: int = 0,
) -> Signal:
    t = settings.thresholds
    test = f"MMD permutation test ({settings.permutations} permutations) on sentence embeddings"
    meta = reference.profile.get("embedding")
    if not meta or reference.embeddings is None:
        return Signal("embedding", SKIPPED, test, detail="the reference has no embedding summary")
    if current_embeddings is None:
        texts = _texts(records)
        if len(texts) < 10:
            return Signal("embedding", SKIPPED, test, detail="the logs hold no text (monitoring.store_text is false)")
        rng = np.random.default_rng(seed)
        if len(texts) > settings.embedding_sample:
            texts = [texts[i] for i in rng.choice(len(texts), settings.embedding_sample, replace=False)]
        from prompt_sentinel.encoders import make_encoder

        encoder = make_encoder(str(meta["model"]))
        if encoder.fingerprint != meta.get("fingerprint"):
            return Signal(
                "embedding", SKIPPED, test,
                detail=f"encoder {meta['model']} differs from the one that embedded the reference (fingerprint)",
            )  # fmt: skip
        current_embeddings = encoder.encode([x[: int(meta.get("max_chars") or 512)] for x in texts], progress=False)
    current = np.asarray(current_embeddings, dtype=np.float32)
    observed, p, null = mmd_permutation_test(reference.embeddings, current, settings.permutations, seed)
    status = _status(observed, p, t.embedding_mmd_warn, t.embedding_mmd_retrain, t.p_value)
    detail = f"MMD² {observed:.4f} (95th percentile under no drift {np.percentile(null, 95):.4f})"
    plot = {"kind": "null", "null": null, "observed": observed}
    return Signal("embedding", status, test, observed, p, observed, t.embedding_mmd_warn, t.embedding_mmd_retrain,
                  detail, len(current), plot)  # fmt: skip


def feedback_signal(
    records: Sequence[dict[str, Any]], feedback: dict[str, str], labels: LabelConfig, gates: GateConfig,
    t: DriftThresholds,
) -> tuple[Signal, dict[str, Any] | None]:  # fmt: skip
    """Live quality on the reviewer-labelled records: the custom score and critical error rates against the gates."""
    test = "live custom score and critical error rates on reviewer-labelled records vs the gates"
    index = labels.label2id
    pairs = [(index[feedback[r["id"]]], index[r["label"]]) for r in records if r["id"] in feedback]
    if not pairs:
        return Signal("feedback", SKIPPED, test, detail="no reviewer labels for this window"), None
    y_true = np.array([p[0] for p in pairs])
    y_pred = np.array([p[1] for p in pairs])
    score = security_score(y_true, y_pred, labels.roles, labels.num_classes)
    from sklearn.metrics import precision_recall_fscore_support

    precision, recall, _, support = precision_recall_fscore_support(
        y_true, y_pred, labels=list(range(labels.num_classes)), zero_division=0
    )
    live = {
        **score.as_dict(),
        "labelled": len(pairs),
        "per_class": {
            name: {"precision": float(precision[i]), "recall": float(recall[i]), "support": int(support[i])}
            for i, name in enumerate(labels.names)
        },
    }
    failures = []
    if score.custom_score < gates.min_custom_score:
        failures.append(f"custom score {score.custom_score:.3f} < {gates.min_custom_score}")
    if score.false_alarm_rate is not None and score.false_alarm_rate > gates.max_false_alarm_rate:
        failures.append(f"false alarm rate {score.false_alarm_rate:.3f} > {gates.max_false_alarm_rate}")
    if score.missed_threat_rate is not None and score.missed_threat_rate > gates.max_missed_threat_rate:
        failures.append(f"missed threat rate {score.missed_threat_rate:.3f} > {gates.max_missed_threat_rate}")
    if len(pairs) < t.feedback_min_labelled:
        status = "ok"
        detail = f"{len(pairs)} labelled records (< {t.feedback_min_labelled}: reported, not judged)"
    else:
        status = "retrain" if failures else "ok"
        detail = "; ".join(failures) or f"custom score {score.custom_score:.3f} passes the gates"
    return Signal("feedback", status, test, score.custom_score, None, float(len(failures)), None, None, detail,
                  len(pairs)), live  # fmt: skip


# --- the report -------------------------------------------------------------------------------------------------


@dataclass
class DriftReport:
    verdict: str
    reason: str
    window: dict[str, Any]
    signals: list[Signal]
    live_metrics: dict[str, Any] | None = None
    reference: dict[str, Any] = field(default_factory=dict)
    logs: dict[str, Any] = field(default_factory=dict)
    feedback: dict[str, Any] = field(default_factory=dict)

    @property
    def fired(self) -> list[str]:
        return [s.name for s in self.signals if s.status in ("warn", "retrain")]

    def to_dict(self) -> dict[str, Any]:
        return {
            "verdict": self.verdict,
            "reason": self.reason,
            "fired": self.fired,
            "window": self.window,
            "signals": [s.to_dict() for s in self.signals],
            "live_metrics": self.live_metrics,
            "reference": self.reference,
            "logs": self.logs,
            "feedback": self.feedback,
        }

    def metrics(self) -> dict[str, float]:
        """Finite numbers for KFP Metrics: verdict code, window size, each signal's effect and p-value."""
        values: dict[str, float] = {
            "verdict_code": float(STATUSES.index(self.verdict)),
            "window_records": float(self.window.get("records", 0)),
            "signals_fired": float(len(self.fired)),
        }
        for s in self.signals:
            for key, value in (("effect", s.effect), ("p_value", s.p_value)):
                if value is not None and math.isfinite(value):
                    values[f"{s.name}.{key}"] = float(value)
        return values


def verdict_of(signals: Sequence[Signal], window: int, min_window: int) -> tuple[str, str]:
    if window < min_window:
        return "warn", (
            f"only {window} logged records in the window (< monitoring.min_window_records={min_window}): "
            "too few to tell drift from noise"
        )
    worst = max((STATUSES.index(s.status) for s in signals if s.status in STATUSES), default=0)
    verdict = STATUSES[worst]
    fired = [f"{s.name} ({s.detail})" for s in signals if s.status == verdict and verdict != "ok"]
    if verdict == "ok":
        judged = [s.name for s in signals if s.status != SKIPPED]
        return "ok", f"no signal fired ({', '.join(judged) or 'none judged'})"
    return verdict, f"{verdict}: " + "; ".join(fired)


def detect_drift(
    reference: Reference,
    records: Sequence[dict[str, Any]],
    labels: LabelConfig,
    settings: MonitoringConfig,
    gates: GateConfig,
    *,
    feedback: dict[str, str] | None = None,
    current_embeddings: np.ndarray | None = None,
    seed: int = 0,
) -> DriftReport:
    """Every signal on ``records`` (already windowed) and the verdict."""
    if list(reference.labels) != list(labels.names):
        from prompt_sentinel.errors import DataError

        raise DataError(f"the reference's labels {reference.labels} differ from the configured {labels.names}")
    t = settings.thresholds
    signals: list[Signal] = []
    live = None
    if records:
        signals.append(label_signal(reference, records, t))
        signals.extend(score_signals(reference, records, t))
        signals.append(length_signal(reference, records, t))
        signals.append(oov_signal(reference, records, t))
        signals.append(script_signal(reference, records, t))
        signals.append(embedding_signal(reference, records, settings, current_embeddings, seed))
        fb, live = feedback_signal(records, feedback or {}, labels, gates, t)
        signals.append(fb)
    verdict, reason = verdict_of(signals, len(records), settings.min_window_records)
    versions = Counter(str(r.get("model_version")) for r in records)
    window = {
        "records": len(records),
        "first": records[0]["ts"] if records else None,
        "last": records[-1]["ts"] if records else None,
        "model_versions": dict(versions),
        "with_text": sum(isinstance(r.get("text"), str) for r in records),
    }
    return DriftReport(verdict, reason, window, signals, live)
