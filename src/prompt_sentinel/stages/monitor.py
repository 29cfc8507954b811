"""The ``monitor`` stage: a window of logged traffic against the served model's training reference
(``sentinel monitor``, and the monitoring pipeline's first step).

The reference is the one stored in the model directory at training time (a registry ref, a model directory or a
gs:// prefix), or, for a model trained before references existed, one built from a labelled data file scored by
that model (``--reference DATA --model MODEL``). The window is the ``monitoring.window_records`` most recent valid
records (of the reference model's version when the logs say which), with reviewer labels joined. Writes
``drift.json`` and ``drift.html`` into ``out_dir``; bad log lines are skipped, counted and reported.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from prompt_sentinel import storage
from prompt_sentinel.config import SentinelConfig
from prompt_sentinel.data.loading import load_dataset
from prompt_sentinel.errors import ConfigError
from prompt_sentinel.monitoring.drift import DriftReport, detect_drift
from prompt_sentinel.monitoring.feedback import load_feedback
from prompt_sentinel.monitoring.logstore import read_logs
from prompt_sentinel.monitoring.reference import Reference, build_reference, read_reference
from prompt_sentinel.monitoring.report import render_html
from prompt_sentinel.registry import resolve_model_ref
from prompt_sentinel.registry.layout import METADATA_FILE
from prompt_sentinel.run_layout import DRIFT_HTML, DRIFT_REPORT
from prompt_sentinel.text import normalize_text

DATA_SUFFIXES = (".csv", ".jsonl", ".json", ".parquet")


@dataclass
class ReferenceSource:
    reference: Reference
    description: dict[str, Any]


def registry_version(model_dir: str | Path) -> str | None:
    """``v<N>`` when ``model_dir`` is a registry version (its ``metadata.json``), else None."""
    try:
        version = json.loads(Path(model_dir, METADATA_FILE).read_text()).get("version")
    except (OSError, ValueError, AttributeError):
        return None
    return f"v{version}" if isinstance(version, int) and not isinstance(version, bool) else None


def is_data_file(ref: str) -> bool:
    return ref.lower().endswith(DATA_SUFFIXES)


def load_reference(reference: str, cfg: SentinelConfig, model: str | None = None) -> ReferenceSource:
    """The reference of a model (stored at training time) or one built from a labelled data file."""
    if is_data_file(reference):
        if not model:
            raise ConfigError(
                f"--reference {reference} is a data file: also pass --model MODEL, whose predictions on it make the "
                "reference's label and score distributions"
            )
        from prompt_sentinel.models.loading import load_model

        frame = load_dataset(reference, cfg)
        model_dir = resolve_model_ref(model, cfg)
        texts = [normalize_text(t) for t in frame["text"]]
        loaded = load_model(model_dir, verify=True)
        proba = loaded.predict_proba(texts)
        ref = build_reference(
            texts, frame["label"].to_numpy(), cfg.labels, cfg.monitoring, held_proba=proba,
            held_predicted=loaded.labels_for(proba), held_source=f"data file {reference}", seed=cfg.seed,
        )  # fmt: skip
        ref.location = reference
        version = registry_version(model_dir)
        return ReferenceSource(ref, {"kind": "data", "uri": reference, "model": model, "model_version": version})
    model_dir = resolve_model_ref(reference, cfg)
    ref = read_reference(model_dir)
    return ReferenceSource(
        ref,
        {"kind": "model", "ref": reference, "model_dir": str(model_dir), "model_version": registry_version(model_dir)},
    )


def run(
    logs: str,
    reference: str,
    cfg: SentinelConfig,
    out_dir: str | Path,
    *,
    model: str | None = None,
    window: int | None = None,
    since: datetime | None = None,
    model_version: str | None = None,
) -> DriftReport:
    """Compare the latest ``window`` logged records under ``logs`` with ``reference``; write the report."""
    source = load_reference(reference, cfg, model)
    read = read_logs(logs, since=since)
    records = read.records
    version = model_version or source.description.get("model_version")
    versions = sorted({str(r.get("model_version")) for r in records})
    if model_version is not None or (version and version in versions):
        records = [r for r in records if str(r.get("model_version")) == version]
    records = records[-(window or cfg.monitoring.window_records) :]
    feedback, feedback_summary = load_feedback(logs, cfg.labels)
    report = detect_drift(source.reference, records, cfg.labels, cfg.monitoring, cfg.gates, feedback=feedback,
                          seed=cfg.seed)  # fmt: skip
    report.reference = {**source.description, "rows": source.reference.profile.get("rows")}
    report.logs = {**read.summary(), "uri": logs, "versions_in_logs": versions, "version_compared": version}
    report.feedback = feedback_summary
    out = str(out_dir)
    if not storage.is_gcs(out):
        Path(out).mkdir(parents=True, exist_ok=True)
    storage.write_text(storage.join(out, DRIFT_REPORT), json.dumps(report.to_dict(), indent=2, default=str))
    storage.write_text(storage.join(out, DRIFT_HTML), render_html(report))
    return report


def markdown(report: DriftReport) -> str:
    """The verdict and the signal table, for the KFP UI."""
    lines = [f"# Drift: **{report.verdict}**", "", report.reason, "", "| signal | status | effect | p | detail |"]
    lines.append("|---|---|---:|---:|---|")
    for s in report.signals:
        effect = "" if s.effect is None else f"{s.effect:.4g}"
        p = "" if s.p_value is None else f"{s.p_value:.3g}"
        lines.append(f"| {s.name} | {s.status} | {effect} | {p} | {s.detail} |")
    skipped = report.logs.get("skipped") or {}
    if skipped:
        lines += ["", "skipped log lines: " + ", ".join(f"{k} {v}" for k, v in skipped.items())]
    return "\n".join(lines) + "\n"
