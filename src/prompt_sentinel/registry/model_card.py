"""Model cards and metric summaries built from a registry version's ``metadata.json``.

Evaluation results arrive as nested JSON whose exact shape belongs to the evaluation stage, so everything
here is tolerant: numeric leaves are flattened to dotted names, and a leaf that carries a confidence
interval — ``{"value"|"point"|"mean"|"estimate": x, "ci_low"/"ci_high" | "lower"/"upper" | "ci": [lo, hi]}``
or a sibling ``<name>_ci: [lo, hi]`` — is shown as ``x [lo, hi]``.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

_POINT_KEYS = ("value", "point", "mean", "estimate")
_LOW_KEYS = ("ci_low", "lower", "low", "ci_lower")
_HIGH_KEYS = ("ci_high", "upper", "high", "ci_upper")
# Sections searched, in order, for headline metrics: flat keys, then the held-out test set; never the blind
# set, robustness or efficiency sections, which have their own rows in the card.
_HEADLINE_SECTIONS = ("", "metrics", "test", "overall", "evaluation", "validation", "val")
HEADLINE, TEST, BLIND, ROBUSTNESS, EFFICIENCY = (
    "Headline",
    "Test set",
    "Blind set",
    "Robustness",
    "Efficiency",
)
_NESTED_TITLES = {
    "metrics": TEST,
    "test": TEST,
    "external": BLIND,
    "blind": BLIND,
    "robustness": ROBUSTNESS,
    "efficiency": EFFICIENCY,
}
_EFFICIENCY_KEYS = frozenset({"latency_p50_ms", "latency_p95_ms", "throughput_per_s", "size_mb", "peak_memory_mb"})
# Parts of an evaluation.json that are descriptions, not metrics.
_NOT_METRICS = frozenset(
    {"schema_version", "config", "curves", "confident_mistakes", "dataset", "best_params", "final_alpha"}
)

INTENDED_USE = (
    "Screening prompts sent to an LLM application for prompt-injection and jailbreak attempts. The model "
    "returns class probabilities and an allow / review / block decision; blocking decisions on business-"
    "critical traffic should be reviewed by a human, and the model is one layer of defence, not the only one."
)
DEFAULT_LIMITATIONS = (
    "Trained on the data sources listed above; new attack styles, other languages and very long prompts "
    "may be classified less reliably than the metrics suggest.",
    "Metrics come from held-out data drawn from the same sources; production traffic may differ — monitor "
    "the false-alarm and missed-threat rates after deployment.",
    "Text is normalized (NFKC, invisible characters removed) before scoring; obfuscations outside that "
    "normalization (e.g. encodings, translations) are only caught if present in training data.",
)


@dataclass(frozen=True)
class MetricValue:
    value: float
    low: float | None = None
    high: float | None = None

    def format(self, digits: int = 4) -> str:
        text = f"{self.value:.{digits}f}"
        if self.low is not None and self.high is not None:
            text += f" [{self.low:.{digits}f}, {self.high:.{digits}f}]"
        return text


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    value = float(value)
    return value if math.isfinite(value) else None


def _interval(value: Any) -> tuple[float, float] | None:
    if isinstance(value, list | tuple) and len(value) == 2:
        low, high = _number(value[0]), _number(value[1])
        if low is not None and high is not None:
            return low, high
    return None


def _as_metric(node: Mapping[str, Any]) -> MetricValue | None:
    """A dict that is one metric with a confidence interval, else None."""
    point = next((_number(node[k]) for k in _POINT_KEYS if k in node and _number(node[k]) is not None), None)
    if point is None:
        return None
    low = next((_number(node[k]) for k in _LOW_KEYS if _number(node.get(k)) is not None), None)
    high = next((_number(node[k]) for k in _HIGH_KEYS if _number(node.get(k)) is not None), None)
    interval = _interval(node.get("ci"))
    if interval:
        low, high = interval
    return MetricValue(point, low, high)


def _interval_of(node: Any) -> tuple[float, float] | None:
    """``[lo, hi]`` or ``{"low": lo, "high": hi, ...}`` (the evaluation suite's bootstrap CI format)."""
    if isinstance(node, Mapping):
        low = next((_number(node[k]) for k in _LOW_KEYS if _number(node.get(k)) is not None), None)
        high = next((_number(node[k]) for k in _HIGH_KEYS if _number(node.get(k)) is not None), None)
        return (low, high) if low is not None and high is not None else None
    return _interval(node)


def flatten_metrics(metrics: Mapping[str, Any] | None, prefix: str = "") -> dict[str, MetricValue]:
    """Numeric leaves of a nested metrics dict, keyed by dotted path, confidence intervals attached.

    Intervals come from a sibling ``confidence_intervals: {name: {low, high}}`` map (the evaluation suite's
    format), a sibling ``<name>_ci: [lo, hi]``, or a leaf dict carrying ``value`` plus bounds.
    """
    out: dict[str, MetricValue] = {}
    if not isinstance(metrics, Mapping):
        return out
    intervals = metrics.get("confidence_intervals")
    intervals = intervals if isinstance(intervals, Mapping) else {}
    for key, value in metrics.items():
        if key == "confidence_intervals" or (prefix == "" and key in _NOT_METRICS):
            continue
        path = f"{prefix}{key}"
        if isinstance(value, Mapping):
            metric = _as_metric(value)
            if metric is not None:
                out[path] = metric
            else:
                out.update(flatten_metrics(value, prefix=f"{path}."))
            continue
        number = _number(value)
        if number is None or str(key).endswith("_ci"):
            continue
        bounds = _interval_of(intervals.get(key)) or _interval(metrics.get(f"{key}_ci"))
        out[path] = MetricValue(number, *(bounds or (None, None)))
    return out


def headline_metrics(metrics: Mapping[str, Any] | None, names: Iterable[str]) -> dict[str, float]:
    """The first value found for each wanted metric name, searching the test-set sections first."""
    flat = flatten_metrics(metrics)
    found: dict[str, float] = {}
    for name in names:
        for section in _HEADLINE_SECTIONS:
            key = f"{section}.{name}" if section else name
            if key in flat:
                found[name] = flat[key].value
                break
    return found


def _flat_key_section(key: str) -> str:
    """Where a top-level (flat, headline-style) metric belongs in the card."""
    if key.endswith("_external"):
        return BLIND
    if key.startswith(("robust_", "probe_")):
        return ROBUSTNESS
    if key in _EFFICIENCY_KEYS:
        return EFFICIENCY
    return HEADLINE


def metric_sections(metrics: Mapping[str, Any] | None) -> dict[str, dict[str, MetricValue]]:
    """Metrics grouped for the card: Headline, Test set, Blind set, Robustness, Efficiency, then the rest."""
    sections: dict[str, dict[str, MetricValue]] = {}
    for key, value in flatten_metrics(metrics).items():
        top, _, rest = key.partition(".")
        if rest:
            title = _NESTED_TITLES.get(top, top)
            sections.setdefault(title, {})[rest] = value
        else:
            sections.setdefault(_flat_key_section(key), {})[key] = value
    ordered = {t: sections.pop(t) for t in (HEADLINE, TEST, BLIND, ROBUSTNESS, EFFICIENCY) if t in sections}
    ordered.update(sorted(sections.items()))
    return ordered


def _table(rows: list[tuple[str, str]], header: tuple[str, str]) -> list[str]:
    lines = [f"| {header[0]} | {header[1]} |", "|---|---|"]
    lines += [f"| {a} | {b} |" for a, b in rows]
    return lines


def render_model_card(metadata: Mapping[str, Any], limitations: Iterable[str] = DEFAULT_LIMITATIONS) -> str:
    """Markdown model card: intended use, labels, data sources, metrics with CIs, robustness, limitations."""
    name = metadata.get("name", "model")
    version = metadata.get("version", "?")
    labels = metadata.get("labels") or {}
    lines = [
        f"# Model card: {name} v{version}",
        "",
        f"- **Family / type:** {metadata.get('family', '?')} / {metadata.get('model_type', '?')}",
        f"- **Created:** {metadata.get('created_at', '?')}",
        f"- **Registry URI:** `{metadata.get('uri', '?')}`",
        "",
        "## Intended use",
        "",
        INTENDED_USE,
        "",
        "## Labels",
        "",
    ]
    names = labels.get("names") or []
    roles = {labels.get(r): r for r in ("benign", "suspicious", "malicious") if labels.get(r)}
    lines += _table([(f"{i}: {n}", roles.get(n, "—")) for i, n in enumerate(names)], ("class", "security role"))
    decision = metadata.get("decision") or {}
    if decision:
        lines += ["", "## Decision rule", ""]
        lines += [
            "The label is the class of least expected cost: every mistake costs 1 except labelling a benign prompt "
            "malicious (false alarm) and a malicious prompt benign (missed threat). A malicious label blocks, any "
            "other non-benign label goes to review; the thresholds can only make that stricter. Operators can "
            "override every value with `serving.decision.*`.",
            "",
        ]
        lines += _table(
            [(str(k), f"`{v}`") for k, v in decision.items()],
            ("setting", "value"),
        )
    lines += ["", "## Data sources", ""]
    datasets = metadata.get("datasets") or {}
    if datasets:
        lines += _table([(k, f"`{v}`") for k, v in sorted(datasets.items())], ("dataset", "sha256"))
    else:
        lines.append("No dataset checksums were recorded for this version.")

    sections = metric_sections(metadata.get("metrics"))
    lines += ["", "## Metrics", ""]
    main = {t: v for t, v in sections.items() if t not in (BLIND, ROBUSTNESS, EFFICIENCY)}
    if not sections:
        lines.append("This version was registered without evaluation results.")
    else:
        lines.append("Values with a range show the point estimate and its bootstrap confidence interval.")
    for title, values in main.items():
        lines += ["", f"### {title}", ""]
        lines += _table([(k, v.format()) for k, v in sorted(values.items())], ("metric", "value"))
    for title, note in (
        (BLIND, "External blind set: reported only, never used for training or model selection."),
        (ROBUSTNESS, "Detection under adversarial perturbations of the test prompts (see the evaluation report)."),
        (EFFICIENCY, ""),
    ):
        if title not in sections and title == EFFICIENCY:
            continue
        lines += ["", f"## {title}", ""]
        if title not in sections:
            lines.append(f"No {title.lower()} evaluation was recorded for this version.")
            continue
        if note:
            lines += [note, ""]
        lines += _table([(k, v.format()) for k, v in sorted(sections[title].items())], ("metric", "value"))

    params = dict(metadata.get("params") or {})
    members = params.pop("members", None)
    lines += _inference_section(params.pop("inference", None))
    if isinstance(members, list) and members:
        lines += ["", "## Ensemble members", ""]
        lines += [
            "Soft voting: the probabilities are the weighted average of the members' (weights and decision costs "
            "tuned together on the validation split). Each member is a complete model directory inside this one.",
            "",
            "| member | family / type | weight |",
            "|---|---|---:|",
        ]
        lines += [
            f"| {m.get('name', '?')} | {m.get('family', '?')} / {m.get('model_type', '?')} | {m.get('weight', '?')} |"
            for m in members
            if isinstance(m, Mapping)
        ]
    if params:
        lines += ["", "## Hyperparameters", ""]
        lines += _table([(str(k), f"`{v}`") for k, v in sorted(params.items())], ("parameter", "value"))
    lineage = metadata.get("lineage") or {}
    lines += ["", "## Lineage", ""]
    lines += _table(
        [(str(k), f"`{v}`") for k, v in sorted(lineage.items()) if v is not None] or [("—", "not recorded")],
        ("field", "value"),
    )
    lines += ["", "## Limitations", ""]
    lines += [f"- {item}" for item in limitations]
    return "\n".join(lines) + "\n"


def _inference_section(record: Any) -> list[str]:
    """The parity gate's outcome per inference backend (``params.inference`` of the descriptor)."""
    if not isinstance(record, Mapping):
        return []
    from prompt_sentinel.inference.parity import InferenceRecord, describe

    try:
        parsed = InferenceRecord.model_validate(record)
    except ValueError:
        return []
    thresholds = ", ".join(f"{k} {v}" for k, v in parsed.thresholds.items())
    lines = [
        "",
        "## Inference backends",
        "",
        f"Each export was compared with torch on the {parsed.parity_set} ({thresholds}); `inference.backend: auto` "
        f"runs **{parsed.auto}**, the fastest that passed.",
        "",
    ]
    return lines + _table([(f"`{name}`", summary) for name, summary in describe(parsed)], ("backend", "parity"))
