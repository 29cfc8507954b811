"""The ``validate`` stage: check a dataset, report every finding, produce a cleaned copy.

Each check's severity comes from ``cfg.validation.<check>``:

* ``error`` — reported; the dataset fails validation and nothing is written.
* ``warning`` — reported; the offending row is left out of the cleaned data (for ``exact_duplicate`` the later
  copies, for ``conflicting_labels`` every row of the conflicting group, for ``cross_set_leak`` the row of
  *this* dataset, never the test/blind one). The dataset-level checks ``class_too_small`` and
  ``single_class`` have no row to drop and are only reported.
* ``off`` — not checked. Rows that cannot be represented at all (no text, unknown label) are still left out
  of the cleaned data; ``rows_read`` vs ``rows_clean`` in the report shows it. With ``invalid_utf8: off``
  invalid bytes are replaced by U+FFFD.

Structural problems (``missing_file``, ``unknown_format``, ``unreadable``, ``missing_column``, ``invalid_type``,
``no_rows``) are always errors. Duplicates, conflicts and leaks compare :func:`prompt_sentinel.text.dedup_key`
(NFKC, case, whitespace and punctuation folded), except ``exact_duplicate``, which needs identical text and label.
"""

from __future__ import annotations

import html
import json
import re
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pandas as pd

from prompt_sentinel.config import SentinelConfig, Severity
from prompt_sentinel.data.loading import (
    INVALID_TYPE,
    Finding,
    RawRecord,
    RawTable,
    default_id,
    frame_to_csv_bytes,
    group_key,
    invalid_unicode,
    optional_str,
    parse_label,
    read_table,
    records_frame,
    repair_unicode,
    write_output_files,
)
from prompt_sentinel.errors import DataValidationError
from prompt_sentinel.messages import clip
from prompt_sentinel.run_layout import (
    CLEANED_DATA,
    VALIDATION_REPORT_HTML,
    VALIDATION_REPORT_JSON,
    VALIDATION_REPORT_MD,
)
from prompt_sentinel.text import normalize_text

NO_ROWS = "no_rows"
_ROW_FIELDS = ("text", "label", "id", "source", "group")
_MAX_OTHERS_NAMED = 5
# Unicode category Cc is exactly these ranges; tab, newline and carriage return are allowed (the same rule as
# prompt_sentinel.text.has_control_characters, as a regex so each character found can be named).
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]")


@dataclass
class ValidationReport:
    """Everything the validate stage found, plus the cleaned rows (canonical columns)."""

    uri: str
    format: str | None
    label_names: list[str]
    findings: list[Finding]
    cleaned: pd.DataFrame
    rows_read: int
    sha256: str | None = None
    against: dict[str, str] = field(default_factory=dict)
    settings: dict[str, Any] = field(default_factory=dict)
    created_at: str = field(default_factory=lambda: datetime.now(timezone.utc).isoformat(timespec="seconds"))

    @property
    def errors(self) -> list[Finding]:
        return [f for f in self.findings if f.severity == "error"]

    @property
    def warnings(self) -> list[Finding]:
        return [f for f in self.findings if f.severity == "warning"]

    @property
    def ok(self) -> bool:
        return not self.errors

    @property
    def rows_clean(self) -> int:
        return len(self.cleaned)

    @property
    def class_counts(self) -> dict[str, int]:
        """Rows per label name in the cleaned data (every configured label, zeros included)."""
        counts = Counter(self.cleaned["label"].tolist()) if len(self.cleaned) else Counter()
        return {name: int(counts.get(i, 0)) for i, name in enumerate(self.label_names)}

    def summary(self) -> dict[str, dict[str, int]]:
        """Number of findings per check and severity."""
        out: dict[str, dict[str, int]] = {}
        for f in self.findings:
            out.setdefault(f.check, {"error": 0, "warning": 0})[f.severity] += 1
        return out

    def error_message(self, limit: int = 20) -> str:
        errors = self.errors
        lines = [f"{self.uri}: validation failed with {len(errors)} error(s):"]
        lines += [f"  {f.location}: [{f.check}] {f.message}" for f in errors[:limit]]
        if len(errors) > limit:
            lines.append(f"  ... and {len(errors) - limit} more (see the report)")
        return "\n".join(lines)

    def raise_if_errors(self) -> None:
        if not self.ok:
            raise DataValidationError(self.error_message(), self.errors)

    def to_dict(self) -> dict[str, Any]:
        return {
            "uri": self.uri,
            "format": self.format,
            "sha256": self.sha256,
            "ok": self.ok,
            "created_at": self.created_at,
            "rows_read": self.rows_read,
            "rows_clean": self.rows_clean,
            "class_counts": self.class_counts,
            "label_ids": {name: i for i, name in enumerate(self.label_names)},
            "against": self.against,
            "summary": self.summary(),
            "n_errors": len(self.errors),
            "n_warnings": len(self.warnings),
            "findings": [f.to_dict() for f in self.findings],
            "settings": self.settings,
        }

    def to_json(self, indent: int | None = 2) -> str:
        return json.dumps(self.to_dict(), indent=indent, ensure_ascii=False)

    def to_markdown(self) -> str:
        status = "PASSED" if self.ok else "FAILED"
        lines = [
            f"# Data validation report — {status}",
            "",
            f"- file: `{self.uri}` ({self.format or 'unknown format'})",
            f"- sha256: `{self.sha256 or '-'}`",
            f"- rows read: {self.rows_read}; rows in cleaned data: {self.rows_clean}",
            f"- findings: {len(self.errors)} error(s), {len(self.warnings)} warning(s)",
        ]
        if self.against:
            lines.append("- checked for leaks against: " + ", ".join(f"{n} (`{u}`)" for n, u in self.against.items()))
        total = max(self.rows_clean, 1)
        lines += ["", "## Class counts (cleaned data)", "", "| id | label | rows | share |", "|---:|---|---:|---:|"]
        for i, (name, n) in enumerate(self.class_counts.items()):
            lines.append(f"| {i} | {_md(name)} | {n} | {n / total:.1%} |")
        if self.findings:
            lines += ["", "## Findings by check", "", "| check | errors | warnings |", "|---|---:|---:|"]
            lines += [f"| {c} | {s['error']} | {s['warning']} |" for c, s in sorted(self.summary().items())]
            lines += ["", "## All findings", "", "| severity | check | location | message |", "|---|---|---|---|"]
            lines += [f"| {f.severity} | {f.check} | {_md(f.location)} | {_md(f.message)} |" for f in self.findings]
        else:
            lines += ["", "No findings."]
        return "\n".join(lines) + "\n"

    def to_html(self) -> str:
        esc = html.escape
        status = "PASSED" if self.ok else "FAILED"
        counts = "".join(
            f"<tr><td>{i}</td><td>{esc(n)}</td><td>{c}</td></tr>" for i, (n, c) in enumerate(self.class_counts.items())
        )
        rows = "".join(
            f"<tr class='{f.severity}'><td>{f.severity}</td><td>{esc(f.check)}</td>"
            f"<td>{esc(f.location)}</td><td>{esc(f.message)}</td></tr>"
            for f in self.findings
        )
        return (
            "<!doctype html><html><head><meta charset='utf-8'>"
            f"<title>Data validation — {esc(self.uri)}</title><style>"
            "body{font-family:sans-serif;margin:2em}table{border-collapse:collapse}"
            "td,th{border:1px solid #ccc;padding:4px 8px;text-align:left;vertical-align:top}"
            "tr.error td{background:#fdd}tr.warning td{background:#ffd}</style></head><body>"
            f"<h1>Data validation report — {status}</h1>"
            f"<p>file <code>{esc(self.uri)}</code> ({esc(self.format or 'unknown format')}); "
            f"{self.rows_read} rows read, {self.rows_clean} in cleaned data; "
            f"{len(self.errors)} error(s), {len(self.warnings)} warning(s)</p>"
            f"<h2>Class counts</h2><table><tr><th>id</th><th>label</th><th>rows</th></tr>{counts}</table>"
            "<h2>Findings</h2><table><tr><th>severity</th><th>check</th><th>location</th><th>message</th></tr>"
            f"{rows}</table></body></html>\n"
        )


def _md(text: str) -> str:
    """Escape a value for one Markdown table cell."""
    return text.replace("\\", "\\\\").replace("|", "\\|").replace("\r", " ").replace("\n", " ")


def _preview(text: str, limit: int = 40) -> str:
    flat = normalize_text(text)
    return repr(flat if len(flat) <= limit else flat[: limit - 1] + "…")


class _Checker:
    """Accumulates findings for one dataset, applying the configured severity of each check."""

    def __init__(self, table: RawTable, cfg: SentinelConfig) -> None:
        self.table = table
        self.cfg = cfg
        self.findings: list[Finding] = list(table.findings)

    def severity(self, check: str) -> Severity:
        return getattr(self.cfg.validation, check)

    def column(self, canonical: str) -> str:
        defaults = {
            "text": self.cfg.data.text_column,
            "label": self.cfg.data.label_column,
            "id": self.cfg.data.id_column,
            "source": self.cfg.data.source_column,
            "group": self.cfg.data.group_column,
        }
        return self.table.columns.get(canonical, defaults[canonical])

    def report(self, check: str, message: str, rec: RawRecord | None = None, fld: str | None = None) -> bool:
        """Record a finding for a configurable check; returns True when the row must leave the cleaned data."""
        severity = self.severity(check)
        if severity == "off":
            return False
        self.add(severity, check, message, rec, fld)
        return True

    def add(self, severity: Any, check: str, message: str, rec: RawRecord | None, fld: str | None) -> None:
        self.findings.append(
            Finding(
                severity,
                check,
                self.table.uri,
                message,
                row=rec.row if rec else None,
                field=self.column(fld) if fld else None,
                line=rec.line if rec else None,
            )
        )


@dataclass
class _Row:
    rec: RawRecord
    text: str
    label: int
    key: str


def _check_record(ck: _Checker, rec: RawRecord) -> _Row | None:
    """Row-level checks; returns the row when it stays in the cleaned data."""
    cfg = ck.cfg
    values = dict(rec.values)
    text = values.get("text")
    if text is None:
        ck.report("null_text", "text is missing (null or empty field)", rec, "text")
        return None
    if not isinstance(text, str):
        ck.add("error", INVALID_TYPE, f"text must be a string, got {type(text).__name__} {clip(text)}", rec, "text")
        return None
    drop = False
    for fld in _ROW_FIELDS:
        value = values.get(fld)
        if isinstance(value, str) and (bad := invalid_unicode(value)):
            if ck.severity("invalid_utf8") == "off":
                values[fld] = repair_unicode(value)
            else:
                drop |= ck.report("invalid_utf8", f"{bad}; the file must be UTF-8", rec, fld)
    text = values["text"]
    key = group_key(text)
    if not key and not normalize_text(text):  # a non-empty key implies a non-empty normalized text
        shown = "empty" if not text else "whitespace or invisible characters only"
        drop |= ck.report("empty_text", f"text is {shown}", rec, "text")
    if len(text) > cfg.data.max_chars:
        drop |= ck.report(
            "text_too_long",
            f"text has {len(text):,} characters; the maximum is {cfg.data.max_chars:,} (data.max_chars)",
            rec,
            "text",
        )
    controls = sorted({f"U+{ord(ch):04X}" for ch in _CONTROL.findall(text)})
    if controls:
        drop |= ck.report(
            "control_characters", f"text holds control character(s) {', '.join(controls[:5])}", rec, "text"
        )
    try:
        label = parse_label(values.get("label"), cfg)
    except ValueError as exc:
        ck.report("unknown_label", str(exc), rec, "label")
        return None
    if drop:
        return None
    rec.values = values
    return _Row(rec=rec, text=text, label=label, key=key)


def _check_duplicates(ck: _Checker, rows: list[_Row]) -> list[_Row]:
    if ck.severity("exact_duplicate") == "off":
        return rows
    first: dict[tuple[str, int], _Row] = {}
    kept = []
    for r in rows:
        original = first.setdefault((r.text, r.label), r)
        if original is not r:
            message = f"exact duplicate of row {original.rec.row} (same text and label {_name(ck, r.label)!r})"
            if ck.report("exact_duplicate", message, r.rec, "text"):
                continue
        kept.append(r)
    return kept


def _check_conflicts(ck: _Checker, rows: list[_Row]) -> list[_Row]:
    if ck.severity("conflicting_labels") == "off":
        return rows
    groups: dict[str, list[_Row]] = defaultdict(list)
    for r in rows:
        groups[r.key].append(r)
    dropped: set[int] = set()
    for group in groups.values():
        if len({r.label for r in group}) < 2:
            continue
        for r in group:
            others = [o for o in group if o is not r and o.label != r.label]
            named = ", ".join(f"row {o.rec.row} ({_name(ck, o.label)!r})" for o in others[:_MAX_OTHERS_NAMED])
            more = f" and {len(others) - _MAX_OTHERS_NAMED} more" if len(others) > _MAX_OTHERS_NAMED else ""
            message = f"label {_name(ck, r.label)!r} conflicts with the same normalized text at {named}{more}"
            if ck.report("conflicting_labels", message, r.rec, "label"):
                dropped.add(id(r))
    return [r for r in rows if id(r) not in dropped]


def _check_leaks(ck: _Checker, rows: list[_Row], against: dict[str, str]) -> list[_Row]:
    if not against or ck.severity("cross_set_leak") == "off":
        return rows
    seen: dict[str, tuple[str, str, int]] = {}  # dedup key → (set name, uri, row)
    for name, uri in against.items():
        other = read_table(uri, ck.cfg)
        if other.findings:
            first = other.findings[0]
            message = f"cannot check leaks against {name} set: {first.message}"
            ck.findings.append(Finding("error", first.check, uri, message, row=first.row, field=first.field))
            continue
        for rec in other.records:
            text = rec.values.get("text")
            if isinstance(text, str) and normalize_text(text):
                seen.setdefault(group_key(repair_unicode(text)), (name, uri, rec.row))
    kept = []
    for r in rows:
        hit = seen.get(r.key)
        if hit is not None:
            name, uri, row = hit
            message = f"text {_preview(r.text)} also appears in the {name} set ({uri} row {row})"
            if ck.report("cross_set_leak", message, r.rec, "text"):
                continue
        kept.append(r)
    return kept


def _check_classes(ck: _Checker, rows: list[_Row]) -> None:
    names = ck.cfg.labels.names
    if not rows:
        if not any(f.severity == "error" for f in ck.findings):
            ck.add("error", NO_ROWS, "the dataset has no usable rows", None, None)
        return
    counts = Counter(r.label for r in rows)
    if len(counts) == 1:
        (only,) = counts
        ck.report(
            "single_class",
            f"every usable row has label {names[only]!r}; a classifier needs at least 2 of {names}",
            None,
            "label",
        )
    minimum = ck.cfg.data.min_rows_per_class
    for i, name in enumerate(names):
        if counts.get(i, 0) < minimum:
            ck.report(
                "class_too_small",
                f"class {name!r} (id {i}) has {counts.get(i, 0)} row(s); the minimum is {minimum} "
                "(data.min_rows_per_class)",
                None,
                "label",
            )


def _name(ck: _Checker, label: int) -> str:
    return ck.cfg.labels.names[label]


def validate_dataset(
    uri: str,
    cfg: SentinelConfig,
    against: dict[str, str] | None = None,
    raise_on_error: bool = False,
) -> ValidationReport:
    """Run every check on ``uri`` and return the report with the cleaned rows.

    ``against`` maps a set name (``test``, ``blind``…) to a dataset URI whose texts must not appear in this one.
    With ``raise_on_error`` a failing report raises :class:`DataValidationError` (its ``findings`` hold the errors).
    """
    uri = str(uri)
    against = {str(k): str(v) for k, v in (against or {}).items()}
    table = read_table(uri, cfg)
    ck = _Checker(table, cfg)
    rows: list[_Row] = []
    if table.readable:
        rows = [r for rec in table.records if (r := _check_record(ck, rec)) is not None]
        rows = _check_duplicates(ck, rows)
        rows = _check_conflicts(ck, rows)
        rows = _check_leaks(ck, rows, against)
        _check_classes(ck, rows)
    cleaned = records_frame(
        [
            {
                "text": r.text,
                "label": r.label,
                "id": optional_str(r.rec.values.get("id")) or default_id(uri, r.rec.row),
                "source": optional_str(r.rec.values.get("source")),
                "group": optional_str(r.rec.values.get("group")),
                "row": r.rec.row,
            }
            for r in rows
        ]
    )
    report = ValidationReport(
        uri=uri,
        format=table.format,
        label_names=list(cfg.labels.names),
        findings=ck.findings,
        cleaned=cleaned,
        rows_read=len(table.records),
        sha256=table.sha256,
        against=against,
        settings={
            "checks": cfg.validation.model_dump(),
            "max_chars": cfg.data.max_chars,
            "min_rows_per_class": cfg.data.min_rows_per_class,
            "columns": {c: ck.column(c) for c in _ROW_FIELDS},
        },
    )
    if raise_on_error:
        report.raise_if_errors()
    return report


def write_validation_outputs(report: ValidationReport, out: str | Path) -> list[str]:
    """Write ``cleaned.csv``, ``report.md``, ``report.html`` and ``report.json`` (last) into ``out``, atomically.

    A report with errors raises :class:`DataValidationError` and writes nothing.
    """
    report.raise_if_errors()
    files = {
        CLEANED_DATA: frame_to_csv_bytes(report.cleaned),
        VALIDATION_REPORT_MD: report.to_markdown().encode("utf-8"),
        VALIDATION_REPORT_HTML: report.to_html().encode("utf-8"),
        VALIDATION_REPORT_JSON: report.to_json().encode("utf-8"),
    }
    return write_output_files(out, files)  # same names each run: a rerun replaces its own outputs
