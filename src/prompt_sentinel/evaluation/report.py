"""Outputs of selection: ``results.csv`` and one self-contained HTML report of every evaluated model.

Charts (:mod:`prompt_sentinel.evaluation.charts`) are embedded as ``data:image/png;base64`` URIs, so the report is
a single file that opens anywhere. Prompt texts are attacker-controlled: the template autoescapes everything.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from prompt_sentinel import storage
from prompt_sentinel.evaluation.charts import comparison_png, data_uri, role_pr_png, stored_or_new_charts
from prompt_sentinel.evaluation.metrics_suite import HEADLINE_METRICS
from prompt_sentinel.evaluation.selection import GATES, SelectionResult

RESULTS_COLUMNS = (
    "model",
    "precision_macro",
    "recall_macro",
    "f1_macro",
    "roc_auc",
    "best_params",
    "status",
    "f1_external",
    "precision_c1",
    "recall_c2",
    "f1_c0",
    "custom_score",
    "false_alarm_rate",
    "missed_threat_rate",
    "final_alpha",
    "per_class_f1",
    "latency_p95_ms",
    "size_mb",
)
_JSON_COLUMNS = ("best_params", "final_alpha", "per_class_f1")


# --- results.csv --------------------------------------------------------------------------------------------


def results_rows(evaluations: Sequence[dict[str, Any]], selection: SelectionResult | None = None) -> list[dict]:
    rows = []
    for ev in evaluations:
        row: dict[str, Any] = {}
        for col in RESULTS_COLUMNS:
            if col == "status":
                row[col] = selection.status_of(str(ev["model"])) if selection else "evaluated"
            elif col in _JSON_COLUMNS:
                value = ev.get(col)
                row[col] = "" if value is None else json.dumps(value, sort_keys=True)
            else:
                value = ev.get(col)
                row[col] = "" if value is None else value
        rows.append(row)
    return rows


def write_results_csv(
    evaluations: Sequence[dict[str, Any]], path: str | Path, selection: SelectionResult | None = None
) -> str:
    """One row per model with the columns in ``RESULTS_COLUMNS`` (n/a values are empty cells)."""
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(RESULTS_COLUMNS), lineterminator="\n")
    writer.writeheader()
    writer.writerows(results_rows(evaluations, selection))
    storage.write_text(str(path), buf.getvalue())
    return str(path)


SOURCE_ROWS = 15  # the worst sources shown per model; evaluation.json keeps them all


def _went(source_slice: dict[str, Any]) -> str:
    """'malicious: suspicious 26, malicious 36; benign: benign 40' — where a source's prompts were labelled."""
    return "; ".join(
        f"{true}: " + ", ".join(f"{pred} {count}" for pred, count in went.items())
        for true, went in source_slice.get("predicted", {}).items()
    )


# --- HTML -----------------------------------------------------------------------------------------------------

_TEMPLATE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Prompt Sentinel evaluation report</title>
<style>
body{font-family:system-ui,sans-serif;margin:2em;max-width:1200px;color:#222}
table{border-collapse:collapse;margin:0.5em 0 1.5em}td,th{border:1px solid #ccc;padding:3px 8px;font-size:13px}
th{background:#f3f3f3}.pass{color:#0a7a22}.fail{color:#b00020}.na{color:#888}
.outcome{padding:0.8em 1em;border-radius:6px;background:#eef5ff;border:1px solid #9bc}
.text{max-width:600px;white-space:pre-wrap;word-break:break-word;font-family:monospace;font-size:12px}
img{max-width:100%;margin:0.3em}section{border-top:2px solid #ddd;margin-top:2em}
</style></head><body>
<h1>Prompt Sentinel evaluation report</h1>
<p>Generated {{ generated }} · {{ evaluations|length }} model(s)</p>
{% if selection %}
<div class="outcome"><b>{{ "Promoted: " ~ selection.winner if selection.promoted else "No promotion" }}</b><br>
{{ selection.reason }}</div>
{% if selection.comparison %}<h3>Champion vs challenger</h3><table>
{% for k, v in selection.comparison.items() %}<tr><th>{{ k }}</th><td>{{ fmt(v) }}</td></tr>{% endfor %}
</table>{% endif %}
<h2>Gates</h2><table><tr><th>model</th><th>result</th>{% for c in gate_metrics %}<th>{{ c }}</th>{% endfor %}</tr>
{% for g in selection.gates %}<tr><td>{{ g.model }}</td>
<td class="{{ 'pass' if g.passed else 'fail' }}">{{ selection.status_of(g.model) }}</td>
{% for c in g.checks %}<td class="{{ 'na' if c.value is none else ('pass' if c.passed else 'fail') }}">
{{ 'n/a' if c.value is none else fmt(c.value) }} {{ c.op }} {{ c.threshold }}</td>{% endfor %}</tr>{% endfor %}
</table>
{% endif %}
<h2>Results</h2><table><tr>{% for c in columns %}<th>{{ c }}</th>{% endfor %}</tr>
{% for row in rows %}<tr>{% for c in columns %}<td>{{ fmt(row[c]) }}</td>{% endfor %}</tr>{% endfor %}</table>
<img alt="model comparison" src="{{ comparison }}">
{% if role_pr %}<img alt="threat-class precision-recall curves" src="{{ role_pr }}">{% endif %}
{% for m in models %}
<section><h2>{{ m.ev.model }} <small>({{ m.ev.family }}, {{ m.ev.model_dir }})</small></h2>
<table><tr><th>metric</th><th>test</th><th>95% CI</th><th>blind set</th></tr>
{% for k in headline %}<tr><td>{{ k }}</td><td>{{ fmt(m.ev.get(k)) }}</td>
<td>{% set ci = m.ci.get(k) %}{% if ci and ci.low is not none %}{{ fmt(ci.low) }} – {{ fmt(ci.high) }}{% endif %}</td>
<td>{{ fmt(m.ev.get(k ~ '_external')) }}</td></tr>{% endfor %}
<tr><td>recall_c2 at false-alarm budget {{ fmt(m.ev.metrics.false_alarm_budget.budget) }}</td>
<td>{{ fmt(m.ev.recall_c2_at_budget) }} (threshold {{ fmt(m.ev.threshold_at_budget) }})</td><td></td><td></td></tr>
<tr><td>ECE</td><td>{{ fmt(m.ev.ece) }}</td><td></td><td></td></tr>
{% if m.ev.decision %}<tr><td>decision rule</td><td colspan="3">least expected cost; false alarm cost
{{ m.ev.decision.false_alarm_cost }}, missed threat cost {{ m.ev.decision.missed_threat_cost }};
block at P(malicious) &ge; {{ m.ev.decision.block_threshold }}, review at P(non-benign) &ge;
{{ m.ev.decision.review_threshold }}</td></tr>{% endif %}
</table>
{% for title, uri in m.charts %}<img alt="{{ title }}" src="{{ uri }}">{% endfor %}
{% if m.ev.efficiency %}<h3>Efficiency (CPU, in-process)</h3><table>
{% for k in ['latency_p50_ms','latency_p95_ms','throughput_per_s','size_mb','peak_memory_mb','rss_peak_delta_mb'] %}
<tr><th>{{ k }}</th><td>{{ fmt(m.ev.efficiency[k]) }}</td></tr>{% endfor %}
<tr><th>memory method</th><td>{{ m.ev.efficiency.peak_memory_method }}</td></tr></table>{% endif %}
{% set rob = m.ev.robustness %}
{% if rob and rob.applicable %}
<h3>Adversarial robustness ({{ rob.n_prompts }} prompts: {{ rob.applied_to|join(', ') }})</h3>
<table><tr><th>transform</th><th>detection rate</th><th>attack success rate</th><th>malicious retained</th>
<th>example</th></tr>
<tr><td>(none)</td><td>{{ fmt(rob.baseline.detection_rate) }}</td><td>{{ fmt(rob.baseline.attack_success_rate) }}</td>
<td>{{ fmt(rob.baseline.malicious_retained) }}</td><td></td></tr>
{% for name, r in rob.transforms.items() %}<tr><td>{{ name }}</td><td>{{ fmt(r.detection_rate) }}</td>
<td>{{ fmt(r.attack_success_rate) }}</td><td>{{ fmt(r.malicious_retained) }}</td>
<td class="text">{{ r.example[:120] }}</td></tr>{% endfor %}</table>
{% if rob.false_alarm_probe and rob.false_alarm_probe.applicable %}
<p>False-alarm probe: {{ rob.false_alarm_probe.n }} hard benign prompts, flagged
{{ fmt(rob.false_alarm_probe.flagged_rate) }}, blocked {{ fmt(rob.false_alarm_probe.blocked_rate) }}.</p>
{% if rob.false_alarm_probe.flagged %}<table><tr><th>flagged benign prompt</th><th>predicted</th></tr>
{% for f in rob.false_alarm_probe.flagged %}<tr><td class="text">{{ f.text }}</td><td>{{ f.predicted }}</td></tr>
{% endfor %}</table>{% endif %}{% endif %}
{% elif rob %}<p>Robustness: n/a ({{ rob.reason }})</p>{% endif %}
{% for title, rows in m.sources if rows %}<h3>{{ title }} (worst first)</h3>
<table><tr><th>source</th><th>n</th><th>accuracy</th><th>false alarms</th><th>missed threats</th>
<th>true → predicted</th></tr>
{% for x, went in rows %}<tr><td>{{ x.source }}</td><td>{{ x.n }}</td><td>{{ fmt(x.accuracy) }}</td>
<td>{{ x.false_alarms }}</td><td>{{ x.missed_threats }}</td><td>{{ went }}</td></tr>{% endfor %}</table>{% endfor %}
<h3>Most confident mistakes</h3>
<table><tr><th>id</th><th>true</th><th>predicted</th><th>confidence</th><th>text</th></tr>
{% for x in m.ev.confident_mistakes %}<tr><td>{{ x.id }}</td><td>{{ x.true }}</td><td>{{ x.predicted }}</td>
<td>{{ fmt(x.confidence) }}</td><td class="text">{{ x.text }}</td></tr>{% endfor %}</table>
{% if m.ev.cv_custom_score_std is not none %}<h3>Cross-validation</h3><table>
<tr><th>metric</th><th>mean ± std over {{ m.ev.cv.folds }} folds</th><th>folds</th></tr>
{% for k, s in m.ev.cv.metrics.items() %}<tr><td>{{ k }}</td><td>{{ fmt(s.mean) }} ± {{ fmt(s.std) }}</td>
<td>{{ s.folds|map('round', 4)|join(', ') }}</td></tr>{% endfor %}</table>{% endif %}
{% set cal = m.ev.calibration %}{% if cal %}<p>Calibration: {{ cal.method or 'none' }}{% if cal.training %}
({{ cal.training.reason }}){% endif %}.</p>{% endif %}
{% set ea = m.ev.error_analysis %}{% if ea %}
<h3>Error analysis</h3>
<p>Accuracy and critical errors (false alarms + missed threats) by input length ({{ ea.length_unit }}) and by
language (detector: {{ ea.language_detector }}).</p>
{% for title, rows in [('input length', ea.by_length), ('language', ea.by_language)] %}
<table><tr><th>{{ title }}</th><th>n</th><th>accuracy</th><th>false alarms</th><th>missed threats</th>
<th>critical rate</th></tr>{% for r in rows %}<tr><td>{{ r.slice }}</td><td>{{ r.n }}</td><td>{{ fmt(r.accuracy) }}</td>
<td>{{ r.false_alarms }}</td><td>{{ r.missed_threats }}</td><td>{{ fmt(r.critical_rate) }}</td></tr>{% endfor %}
</table>{% endfor %}
<h4>Most confident mistakes per confusion cell</h4>
<p class="na">Highlighted words pushed the prompt toward the predicted class (red) or the true class (blue).</p>
{% for cell in ea.confident_mistakes %}<h4>true {{ cell.true }} → predicted {{ cell.predicted }}
({{ cell.count }})</h4><table><tr><th>id</th><th>source</th><th>lang</th><th>chars</th><th>confidence</th>
<th>P(true)</th><th>text</th></tr>
{% for x in cell.rows %}<tr><td>{{ x.id }}</td><td>{{ x.source }}</td><td>{{ x.language }}</td><td>{{ x.chars }}</td>
<td>{{ fmt(x.confidence) }}</td><td>{{ fmt(x.p_true) }}</td><td class="text">{% if x.attribution %}
{%- for seg in x.attribution.segments %}<span style="{{ highlight(seg.weight) }}">{{ seg.text }}</span>{% endfor %}
{%- else %}{{ x.excerpt }}{% endif %}{% if x.truncated %}…{% endif %}</td></tr>{% endfor %}</table>
{% if cell.rows and cell.rows[0].attribution %}<p class="na">{{ cell.rows[0].attribution.method }}</p>{% endif %}
{% endfor %}
<h4>Least confident correct predictions</h4>
<table><tr><th>id</th><th>source</th><th>label</th><th>confidence</th><th>text</th></tr>
{% for x in ea.low_confidence_correct %}<tr><td>{{ x.id }}</td><td>{{ x.source }}</td><td>{{ x.true }}</td>
<td>{{ fmt(x.confidence) }}</td><td class="text">{{ x.excerpt }}</td></tr>{% endfor %}</table>
{% endif %}
</section>
{% endfor %}
{% for section in generalization %}{{ section }}{% endfor %}
</body></html>
"""

_HEADLINE = (*HEADLINE_METRICS, "pr_auc")


def _highlight(weight: float) -> str:
    """Inline style of an attributed word: red toward the predicted class, blue toward the true one."""
    alpha = min(abs(float(weight)), 1.0) * 0.6
    if alpha < 0.03:
        return ""
    return f"background: rgba(220,0,0,{alpha:.2f})" if weight > 0 else f"background: rgba(0,90,220,{alpha:.2f})"


def _fmt(value: Any) -> str:
    if value is None or value == "":
        return "n/a"
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, float):
        return f"{value:.4f}" if abs(value) < 1000 else f"{value:.1f}"
    return str(value)


def render_report(
    evaluations: Sequence[dict[str, Any]],
    selection: SelectionResult | None,
    out_html: str | Path,
    generalization: Sequence[dict[str, Any]] = (),
) -> str:
    """Write one self-contained HTML report (images embedded as base64 data URIs); returns its path.

    ``generalization``: out-of-source reports (``generalization.json`` contents) shown as sections at the end.
    """
    import jinja2
    from markupsafe import Markup

    from prompt_sentinel.evaluation.generalization import render_section

    env = jinja2.Environment(autoescape=True, undefined=jinja2.ChainableUndefined)
    template = env.from_string(_TEMPLATE)
    models = []
    for ev in evaluations:
        charts = stored_or_new_charts(ev)
        models.append(
            {
                "ev": ev,
                "ci": (ev.get("metrics") or {}).get("confidence_intervals") or {},
                "charts": [(name, data_uri(png)) for name, png in charts.items()],
                "sources": [
                    (title, [(x, _went(x)) for x in ((ev.get("slices") or {}).get(key) or [])[:SOURCE_ROWS]])
                    for title, key in (("By data source", "source"), ("Blind set by source", "source_external"))
                ],
            }
        )
    role_pr = role_pr_png(evaluations)
    html = template.render(
        generated=datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        evaluations=evaluations,
        selection=selection,
        gate_metrics=[g[0] for g in GATES],
        columns=RESULTS_COLUMNS,
        rows=results_rows(evaluations, selection),
        comparison=data_uri(comparison_png(evaluations)),
        role_pr=data_uri(role_pr) if role_pr else None,
        models=models,
        headline=_HEADLINE,
        fmt=_fmt,
        generalization=[Markup(render_section(report)) for report in generalization],  # autoescaped inside
        highlight=_highlight,
    )
    storage.write_text(str(out_html), html)
    return str(out_html)
