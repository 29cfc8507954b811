"""PNG charts of an evaluation: confusion matrix, precision-recall curves, calibration, model comparison.

Drawn with matplotlib's object API on the Agg canvas (no pyplot, no global backend switch). Evaluation writes
the per-model charts next to ``evaluation.json``; the HTML report embeds them as ``data:`` URIs.
"""

from __future__ import annotations

import base64
import io
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from prompt_sentinel import storage
from prompt_sentinel.errors import StorageError

if TYPE_CHECKING:
    from matplotlib.figure import Figure

COMPARISON_METRICS = ("custom_score", "f1_macro", "recall_c2", "precision_c1", "f1_c0")


def _figure(width: float, height: float) -> Figure:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=90, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _png(fig: Figure) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return buf.getvalue()


def confusion_png(cm: Sequence[Sequence[int]], labels: Sequence[str], title: str) -> bytes:
    matrix = np.asarray(cm, dtype=float)
    rows = matrix.sum(axis=1, keepdims=True)
    share = np.divide(matrix, rows, out=np.zeros_like(matrix), where=rows > 0)
    size = 1.2 + 0.9 * len(labels)
    fig = _figure(size + 1, size)
    ax = fig.add_subplot()
    image = ax.imshow(share, cmap="Blues", vmin=0, vmax=1)
    fig.colorbar(image, ax=ax, fraction=0.046, label="share of true class")
    for i in range(matrix.shape[0]):
        for j in range(matrix.shape[1]):
            ax.text(
                j, i, f"{int(matrix[i, j])}", ha="center", va="center", color="white" if share[i, j] > 0.5 else "black"
            )
    ax.set_xticks(range(len(labels)), labels, rotation=30, ha="right")
    ax.set_yticks(range(len(labels)), labels)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title)
    return _png(fig)


def pr_curves_png(curves: dict[str, dict[str, list[float]]], title: str) -> bytes:
    fig = _figure(5, 4)
    ax = fig.add_subplot()
    for name, curve in curves.items():
        ax.plot(curve["recall"], curve["precision"], label=name)
    ax.set_xlabel("recall")
    ax.set_ylabel("precision")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.02)
    ax.set_title(title)
    if curves:
        ax.legend(loc="lower left")
    return _png(fig)


def calibration_png(bins: list[dict[str, Any]], title: str) -> bytes:
    fig = _figure(4.5, 4)
    ax = fig.add_subplot()
    ax.plot([0, 1], [0, 1], linestyle="--", color="grey", label="perfect")
    used = [b for b in bins if b["count"]]
    ax.plot([b["confidence"] for b in used], [b["accuracy"] for b in used], marker="o", label="model")
    ax.set_xlabel("confidence")
    ax.set_ylabel("accuracy")
    ax.set_title(title)
    ax.legend(loc="upper left")
    return _png(fig)


def comparison_png(evaluations: Sequence[dict[str, Any]]) -> bytes:
    names = [str(e["model"]) for e in evaluations]
    fig = _figure(max(6, 1.2 * len(names) * 1.5), 4)
    ax = fig.add_subplot()
    width = 0.8 / len(COMPARISON_METRICS)
    x = np.arange(len(names))
    for k, metric in enumerate(COMPARISON_METRICS):
        values = [e.get(metric) if e.get(metric) is not None else 0.0 for e in evaluations]
        ax.bar(x + (k - (len(COMPARISON_METRICS) - 1) / 2) * width, values, width, label=metric)
    ax.set_xticks(x, names, rotation=20, ha="right")
    ax.set_ylim(0, 1.05)
    ax.set_title("model comparison (test set)")
    ax.legend(loc="lower right", fontsize="small")
    return _png(fig)


def role_pr_png(evaluations: Sequence[dict[str, Any]]) -> bytes | None:
    """PR curve of the malicious class (or the last class) for every model on one chart."""
    fig = _figure(5, 4)
    ax = fig.add_subplot()
    drawn = 0
    for ev in evaluations:
        labels = ev.get("labels") or []
        malicious = (ev.get("roles") or {}).get("malicious")
        cls = labels[malicious] if malicious is not None else (labels[-1] if labels else None)
        curve = ((ev.get("curves") or {}).get("pr") or {}).get(cls)
        if curve:
            ax.plot(curve["recall"], curve["precision"], label=f"{ev['model']} ({cls})")
            drawn += 1
    if not drawn:
        return None
    ax.set_xlabel("recall")
    ax.set_ylabel("precision")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.02)
    ax.set_title("precision–recall, threat class")
    ax.legend(loc="lower left", fontsize="small")
    return _png(fig)


def reliability_per_class_png(reliability: dict[str, Any], title: str) -> bytes:
    """One-vs-rest reliability diagram per class: mean P(class) per bin against the observed share of the class."""
    fig = _figure(4.2 * max(len(reliability), 1), 3.8)
    for k, (name, curve) in enumerate(reliability.items()):
        ax = fig.add_subplot(1, max(len(reliability), 1), k + 1)
        ax.plot([0, 1], [0, 1], linestyle="--", color="grey")
        used = [b for b in curve["bins"] if b["count"]]
        ax.plot([b["mean_probability"] for b in used], [b["observed_share"] for b in used], marker="o")
        for b in used:
            ax.annotate(str(b["count"]), (b["mean_probability"], b["observed_share"]), fontsize=6, alpha=0.6)
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1)
        ax.set_xlabel(f"predicted P({name})")
        ax.set_ylabel("observed share")
        ax.set_title(f"{name} (ECE {curve['ece']:.3f})", fontsize=9)
    fig.suptitle(title)
    return _png(fig)


def error_slices_png(by_length: list[dict[str, Any]], by_language: list[dict[str, Any]], title: str) -> bytes:
    """Accuracy and critical-error rate per input-length bucket and per language (bar charts, n on each bar)."""
    fig = _figure(9, 3.6)
    for k, (rows, label) in enumerate(((by_length, "input length (chars)"), (by_language, "language"))):
        ax = fig.add_subplot(1, 2, k + 1)
        x = np.arange(len(rows))
        ax.bar(x - 0.2, [r["accuracy"] for r in rows], 0.4, label="accuracy")
        ax.bar(x + 0.2, [r["critical_rate"] for r in rows], 0.4, label="critical error rate", color="#b00020")
        for i, r in enumerate(rows):
            ax.annotate(f"n={r['n']}", (i, 1.02), ha="center", fontsize=7)
        ax.set_xticks(x, [r["slice"] for r in rows], rotation=30, ha="right", fontsize=8)
        ax.set_ylim(0, 1.1)
        ax.set_xlabel(label)
        if k == 0:
            ax.legend(loc="lower left", fontsize="small")
    fig.suptitle(title)
    return _png(fig)


CHART_NAMES = ("confusion_matrix", "pr_curves", "calibration", "reliability_per_class", "error_slices")


def model_charts(evaluation: dict[str, Any]) -> dict[str, bytes]:
    """The per-model PNGs (name → bytes) written next to evaluation.json and embedded in the report."""
    name = str(evaluation["model"])
    metrics = evaluation["metrics"]
    charts = {
        "confusion_matrix": confusion_png(metrics["confusion_matrix"], evaluation["labels"], f"{name}: confusion"),
        "pr_curves": pr_curves_png((evaluation.get("curves") or {}).get("pr") or {}, f"{name}: precision–recall"),
        "calibration": calibration_png(
            metrics["calibration"]["bins"], f"{name}: calibration (ECE {metrics['calibration']['ece']:.3f})"
        ),
    }
    analysis = evaluation.get("error_analysis")
    if analysis:
        charts["reliability_per_class"] = reliability_per_class_png(
            analysis["reliability_per_class"], f"{name}: reliability per class"
        )
        charts["error_slices"] = error_slices_png(
            analysis["by_length"], analysis["by_language"], f"{name}: accuracy by input length and language"
        )
    return charts


def stored_or_new_charts(evaluation: dict[str, Any]) -> dict[str, bytes]:
    """The PNGs written next to ``evaluation.json`` when all are there (drawing is the slow part), else new ones."""
    directory = evaluation.get("evaluation_dir")
    if directory:
        try:
            return {name: storage.read_bytes(storage.join(str(directory), f"{name}.png")) for name in CHART_NAMES}
        except StorageError:
            pass
    return model_charts(evaluation)


def data_uri(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def family_accuracy_png(families: Sequence[dict[str, Any]], title: str) -> bytes:
    """Out-of-source accuracy per held-out source family (worst at the top), critical errors marked in red."""
    rows = list(families)
    fig = _figure(7, max(2.5, 0.28 * len(rows) + 1.2))
    ax = fig.add_subplot()
    names = [f"{r['family']} ({r['rows']})" for r in rows]
    y = np.arange(len(rows))[::-1]
    accuracy = [r["accuracy"] for r in rows]
    critical = [(r["false_alarms"] + r["missed_threats"]) / max(r["rows"], 1) for r in rows]
    ax.barh(y, accuracy, color="#4a7fb5", label="accuracy")
    ax.barh(y, critical, color="#c0392b", label="critical errors (share of rows)")
    ax.set_yticks(y, names, fontsize="small")
    ax.set_xlim(0, 1)
    ax.set_xlabel("share of the family's prompts")
    ax.set_title(title)
    ax.legend(loc="lower right", fontsize="small")
    return _png(fig)


def length_bucket_png(buckets: Sequence[dict[str, Any]], title: str) -> bytes:
    """Accuracy, macro F1 and the critical error rates per prompt-length bucket."""
    rows = [b for b in buckets if b["rows"]]
    fig = _figure(6, 3.6)
    ax = fig.add_subplot()
    x = np.arange(len(rows))
    series = (
        ("accuracy", "accuracy"),
        ("macro_f1", "macro F1 (classes present)"),
        ("false_alarm_rate", "P(benign → malicious)"),
        ("missed_threat_rate", "P(malicious → benign)"),
    )
    width = 0.8 / len(series)
    for k, (key, label) in enumerate(series):
        values = [r.get(key) if r.get(key) is not None else 0.0 for r in rows]
        ax.bar(x + (k - (len(series) - 1) / 2) * width, values, width, label=label)
    ax.set_xticks(x, [f"{r['bucket']}\n(n={r['rows']})" for r in rows], fontsize="small")
    ax.set_ylim(0, 1.05)
    ax.set_xlabel("prompt length (characters)")
    ax.set_title(title)
    ax.legend(loc="upper right", fontsize="x-small")
    return _png(fig)
