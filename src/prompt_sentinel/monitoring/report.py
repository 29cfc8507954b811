"""The drift report as one self-contained HTML page: the verdict, a table of signals, and for each signal a plot of
the reference against the current window (histograms, bar charts, the MMD null distribution), embedded as PNG."""

from __future__ import annotations

import base64
import html
import io
from typing import Any

import numpy as np

from prompt_sentinel.monitoring.drift import DriftReport, Signal

_COLORS = {"ok": "#2e7d32", "warn": "#ef6c00", "retrain": "#c62828", "skipped": "#757575"}


def _figure() -> Any:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(5.2, 2.8), dpi=90, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def signal_png(signal: Signal) -> bytes | None:
    """Reference (grey) against current (colour of the status) for one signal, or None when there is nothing to plot."""
    plot = signal.plot
    if not plot:
        return None
    fig = _figure()
    ax = fig.add_subplot()
    color = _COLORS.get(signal.status, "#1565c0")
    kind = plot.get("kind")
    if kind == "bars":
        cats = list(plot["categories"])
        ref = np.asarray(plot["reference"], dtype=float)
        cur = np.asarray(plot["current"], dtype=float)
        ref, cur = ref / max(ref.sum(), 1e-9), cur / max(cur.sum(), 1e-9)
        x = np.arange(len(cats))
        ax.bar(x - 0.2, ref, 0.4, label="reference", color="#9e9e9e")
        ax.bar(x + 0.2, cur, 0.4, label="current", color=color)
        ax.set_xticks(x, cats, rotation=20, fontsize=8)
        ax.set_ylabel("share")
    elif kind == "hist":
        ref, cur = np.asarray(plot["reference"]), np.asarray(plot["current"])
        bins = np.histogram_bin_edges(np.concatenate([ref, cur]), bins=20, range=plot.get("range"))
        ax.hist(ref, bins=bins, density=True, alpha=0.55, label="reference", color="#9e9e9e")
        ax.hist(cur, bins=bins, density=True, alpha=0.55, label="current", color=color)
        ax.set_xlabel(plot.get("xlabel", signal.name))
    elif kind == "null":
        ax.hist(plot["null"], bins=30, color="#9e9e9e", label="no drift (permutations)")
        ax.axvline(plot["observed"], color=color, linewidth=2, label="observed")
        ax.set_xlabel("MMD²")
    else:
        return None
    ax.set_title(f"{signal.name}: {signal.status}", fontsize=10)
    ax.legend(fontsize=7)
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return buf.getvalue()


def _fmt(value: float | None) -> str:
    if value is None or not np.isfinite(value):
        return "–"
    return f"{value:.4g}"


def render_html(report: DriftReport, title: str = "Prompt Sentinel drift report") -> str:
    esc = html.escape
    rows = "".join(
        f"<tr><td>{esc(s.name)}</td><td style='color:{_COLORS.get(s.status, '#000')}'><b>{s.status}</b></td>"
        f"<td>{_fmt(s.effect)}</td><td>{_fmt(s.warn_at)} / {_fmt(s.retrain_at)}</td><td>{_fmt(s.p_value)}</td>"
        f"<td>{s.current_n}</td><td>{esc(s.test)}</td><td>{esc(s.detail)}</td></tr>"
        for s in report.signals
    )
    images = []
    for s in report.signals:
        png = signal_png(s)
        if png:
            data = base64.b64encode(png).decode("ascii")
            images.append(f"<img alt='{esc(s.name)}' src='data:image/png;base64,{data}'>")
    live = ""
    if report.live_metrics:
        m = report.live_metrics
        live = (
            f"<h2>Reviewer-labelled traffic ({m['labelled']} records)</h2><p>custom score {_fmt(m['custom_score'])}, "
            f"false alarm rate {_fmt(m['false_alarm_rate'])}, missed threat rate {_fmt(m['missed_threat_rate'])}</p>"
            "<table><tr><th>class</th><th>precision</th><th>recall</th><th>support</th></tr>"
            + "".join(
                f"<tr><td>{esc(k)}</td><td>{_fmt(v['precision'])}</td><td>{_fmt(v['recall'])}</td>"
                f"<td>{v['support']}</td></tr>"
                for k, v in m["per_class"].items()
            )
            + "</table>"
        )
    skipped = ", ".join(f"{k}: {v}" for k, v in (report.logs.get("skipped") or {}).items()) or "none"
    color = _COLORS.get(report.verdict, "#000")
    return f"""<!doctype html><html><head><meta charset="utf-8"><title>{esc(title)}</title>
<style>body{{font-family:sans-serif;margin:2em}}table{{border-collapse:collapse}}td,th{{border:1px solid #ccc;
padding:4px 8px;font-size:13px;vertical-align:top}}img{{margin:6px}}</style></head><body>
<h1>{esc(title)}</h1>
<p style="font-size:20px">verdict: <b style="color:{color}">{esc(report.verdict)}</b></p><p>{esc(report.reason)}</p>
<p>window: {report.window.get("records")} records, {esc(str(report.window.get("first")))} …
{esc(str(report.window.get("last")))}, model versions {esc(str(report.window.get("model_versions")))};
skipped log lines: {esc(skipped)}</p>
<table><tr><th>signal</th><th>status</th><th>effect</th><th>warn / retrain at</th><th>p-value</th><th>n</th>
<th>test</th><th>detail</th></tr>{rows}</table>
{live}
<h2>Reference vs current</h2>{"".join(images)}
</body></html>
"""
