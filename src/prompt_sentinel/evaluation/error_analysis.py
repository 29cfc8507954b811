"""Where and why a model is wrong: the ``error_analysis`` section of ``evaluation.json`` and the report.

* the most confident mistakes, top ``evaluation.mistakes_per_cell`` per (true, predicted) confusion cell, with a
  text excerpt, the source, and — for linear TF-IDF models and transformers — per-word attributions toward the
  predicted class over the true one (:mod:`prompt_sentinel.evaluation.attribution`);
* accuracy and critical errors by input length (``evaluation.length_buckets``, characters) and by language;
* the least confident correct predictions (right, but barely);
* per-class reliability (one-vs-rest calibration curves: mean P(class) vs the share that is the class, per bin).

Language comes from **py3langid** (the langid.py model, 97 languages, pure Python + numpy) on the first
``LANGUAGE_CHARS`` characters; languages with fewer than ``MIN_LANGUAGE_ROWS`` rows are pooled as ``other``.
Prompts are attacker-controlled: they are stored as plain text here and escaped by the report's template.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import pandas as pd

from prompt_sentinel.config import EvaluationConfig, LabelConfig
from prompt_sentinel.metrics import confusion_matrix

log = logging.getLogger(__name__)

EXCERPT_CHARS = 400
LANGUAGE_CHARS = 500
MIN_LANGUAGE_ROWS = 5
LANGUAGE_DETECTOR = "py3langid (langid.py model, 97 languages) on the first 500 characters"


def detect_languages(texts: list[str]) -> list[str]:
    """ISO 639-1 code per text ('und' for texts without letters)."""
    import py3langid

    out = []
    for text in texts:
        sample = text[:LANGUAGE_CHARS]
        out.append(py3langid.classify(sample)[0] if any(ch.isalpha() for ch in sample) else "und")
    return out


def length_bucket_names(bounds: list[int]) -> list[str]:
    names, low = [], 0
    for high in bounds:
        names.append(f"{low}-{high}")
        low = high + 1
    return [*names, f">{bounds[-1]}"]


def _slice_rows(keys: np.ndarray, order: list[str], y: np.ndarray, pred: np.ndarray, labels: LabelConfig) -> list:
    benign, malicious = labels.roles.benign, labels.roles.malicious
    rows = []
    for key in order:
        mask = keys == key
        n = int(mask.sum())
        if not n:
            continue
        cm = confusion_matrix(y[mask], pred[mask], labels.num_classes)
        false_alarms = int(cm[benign, malicious]) if benign is not None and malicious is not None else 0
        missed = int(cm[malicious, benign]) if benign is not None and malicious is not None else 0
        rows.append(
            {
                "slice": key,
                "n": n,
                "accuracy": float(np.trace(cm) / n),
                "false_alarms": false_alarms,
                "missed_threats": missed,
                "critical_rate": (false_alarms + missed) / n,
                "class_counts": {labels.names[k]: int((y[mask] == k).sum()) for k in range(labels.num_classes)},
            }
        )
    return rows


def per_class_reliability(y: np.ndarray, proba: np.ndarray, labels: LabelConfig, n_bins: int) -> dict[str, Any]:
    """One-vs-rest reliability per class: in each equal-width bin of P(class), mean P vs share of that class; ECE."""
    out = {}
    for k, name in enumerate(labels.names):
        p = proba[:, k]
        hit = (y == k).astype(float)
        bins = np.clip(np.ceil(p * n_bins).astype(int) - 1, 0, n_bins - 1)
        counts = np.bincount(bins, minlength=n_bins)
        conf = np.bincount(bins, weights=p, minlength=n_bins)
        freq = np.bincount(bins, weights=hit, minlength=n_bins)
        table = [
            {
                "lower": b / n_bins,
                "upper": (b + 1) / n_bins,
                "count": int(counts[b]),
                "mean_probability": float(conf[b] / counts[b]) if counts[b] else None,
                "observed_share": float(freq[b] / counts[b]) if counts[b] else None,
            }
            for b in range(n_bins)
        ]
        out[name] = {"ece": float(np.abs(freq - conf).sum() / len(y)) if len(y) else 0.0, "bins": table}
    return out


def _row(frame: pd.DataFrame, i: int, proba: np.ndarray, pred: np.ndarray, labels: LabelConfig, lang: str) -> dict:
    text = str(frame["text"].iloc[i])
    true = int(frame["label"].iloc[i])
    return {
        "index": int(i),
        "id": str(frame["id"].iloc[i]),
        "source": str(frame["source"].iloc[i]) if "source" in frame.columns else "",
        "true": labels.names[true],
        "predicted": labels.names[int(pred[i])],
        "confidence": float(proba[i, int(pred[i])]),
        "p_true": float(proba[i, true]),
        "chars": len(text),
        "language": lang,
        "excerpt": text[:EXCERPT_CHARS],
        "truncated": len(text) > EXCERPT_CHARS,
    }


def analyze_errors(
    frame: pd.DataFrame,
    proba: np.ndarray,
    pred: np.ndarray,
    labels: LabelConfig,
    cfg: EvaluationConfig,
    model: Any | None = None,
) -> dict[str, Any]:
    """The error analysis of one evaluation (see the module docstring); ``model`` enables attributions."""
    y = frame["label"].to_numpy(dtype=np.int64)
    texts = frame["text"].astype(str).tolist()
    languages = np.asarray(detect_languages(texts), dtype=object)
    common = {lang for lang in set(languages) if (languages == lang).sum() >= MIN_LANGUAGE_ROWS}
    pooled = np.asarray([lang if lang in common else "other" for lang in languages], dtype=object)
    lengths = np.asarray([len(t) for t in texts])
    names = length_bucket_names(cfg.length_buckets)
    bucket = np.asarray([names[int(np.searchsorted(cfg.length_buckets, n))] for n in lengths], dtype=object)

    confidence = proba[np.arange(len(pred)), pred]
    mistakes = []
    for t in range(labels.num_classes):
        for p in range(labels.num_classes):
            if t == p:
                continue
            cell = np.flatnonzero((y == t) & (pred == p))
            if not len(cell) or cfg.mistakes_per_cell == 0:
                continue
            top = cell[np.lexsort((cell, -confidence[cell]))][: cfg.mistakes_per_cell]
            rows = [_row(frame, int(i), proba, pred, labels, str(languages[i])) for i in top]
            if model is not None and cfg.attributions:
                _attach_attributions(rows, model, texts, t, p, cfg.attribution_steps)
            mistakes.append({"true": labels.names[t], "predicted": labels.names[p], "count": len(cell), "rows": rows})

    correct = np.flatnonzero(y == pred)
    low = correct[np.lexsort((correct, confidence[correct]))][: cfg.low_confidence_correct]
    language_order = sorted(set(pooled), key=lambda lang: (-(pooled == lang).sum(), lang))
    return {
        "language_detector": LANGUAGE_DETECTOR,
        "length_unit": "characters",
        "confident_mistakes": mistakes,
        "by_length": _slice_rows(bucket, names, y, pred, labels),
        "by_language": _slice_rows(pooled, language_order, y, pred, labels),
        "low_confidence_correct": [_row(frame, int(i), proba, pred, labels, str(languages[i])) for i in low],
        "reliability_per_class": per_class_reliability(y, proba, labels, cfg.calibration_bins),
    }


def _attach_attributions(rows: list[dict], model: Any, texts: list[str], true: int, pred: int, steps: int) -> None:
    from prompt_sentinel.evaluation.attribution import attribute

    for row in rows:
        try:
            found = attribute(model, texts[row["index"]], pred, true, steps)
        except Exception as exc:  # an explanation must never fail the evaluation
            log.warning("no attributions for %s: %s", row["id"], exc)
            return
        if found is None:
            return  # this model family has none: do not try the other rows
        row["attribution"] = {
            "method": found.method,
            "segments": found.segments(EXCERPT_CHARS),
            "top_words": found.top_words(),
            "logit_difference": found.logit_difference,
        }
