"""Reviewer labels joined onto logged predictions (``sentinel feedback add``).

A labels file (CSV or JSONL, local or gs://) has an ``id`` column (a record id from the logs: the request id, or
``<request id>/<index>`` for a multi-text request) and a ``label`` column (a configured label name or class id).
It is checked whole before anything is written:

* a label that is not a configured class, an empty id or label, or one id given two different labels is an
  error naming the file, the row, the value and what is allowed (nothing is written);
* an id that no logged record has is skipped and counted (reviewers may label traffic older than the logs kept).

Accepted labels go into a new, uniquely named file under ``<logs>/feedback/``; prediction logs are never
rewritten. When one id is labelled again later, the latest label wins (:func:`labels_by_id`).
"""

from __future__ import annotations

import csv
import io
import json
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

from prompt_sentinel import storage
from prompt_sentinel.config import LabelConfig
from prompt_sentinel.errors import DataError
from prompt_sentinel.monitoring.logstore import encode_lines, read_feedback, read_logs, write_new_file
from prompt_sentinel.monitoring.records import FEEDBACK_SCHEMA, utc_now
from prompt_sentinel.run_layout import FEEDBACK_DIR, LOG_FILE_SUFFIX


@dataclass
class FeedbackResult:
    added: int
    unknown_ids: int
    repeated: int  # the same id and label twice in the file: kept once
    file: str | None
    unknown_examples: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "added": self.added,
            "unknown_ids": self.unknown_ids,
            "repeated": self.repeated,
            "file": self.file,
            "unknown_examples": self.unknown_examples,
        }


def _label_name(value: Any, labels: LabelConfig, where: str) -> str:
    text = str(value).strip() if value is not None else ""
    if text in labels.names:
        return text
    if text.isascii() and text.isdigit() and int(text) < labels.num_classes:
        return labels.names[int(text)]
    allowed = ", ".join(f"{i}/{n}" for i, n in enumerate(labels.names))
    raise DataError(f"{where}: label {value!r} is not a configured class (allowed: {allowed})")


def read_label_rows(uri: str) -> list[tuple[int, dict[str, Any]]]:
    """(row number, record) of a CSV or JSONL labels file."""
    text = storage.read_text(uri)
    if uri.endswith((".jsonl", ".ndjson")):
        rows = []
        for number, line in enumerate(text.splitlines(), start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as exc:
                raise DataError(f"{uri}:{number}: not valid JSON ({exc.msg})") from None
            if not isinstance(record, dict):
                raise DataError(f"{uri}:{number}: expected a JSON object with 'id' and 'label'")
            rows.append((number, record))
        return rows
    if not uri.endswith(".csv"):
        raise DataError(f"{uri}: labels must be a .csv or .jsonl file with columns id,label")
    reader = csv.DictReader(io.StringIO(text))
    missing = {"id", "label"} - set(reader.fieldnames or [])
    if missing:
        raise DataError(f"{uri}: missing column(s) {sorted(missing)}; found {reader.fieldnames}")
    return [(number, dict(row)) for number, row in enumerate(reader, start=2)]


def parse_labels(uri: str, labels: LabelConfig) -> tuple[dict[str, str], int]:
    """``{record id: label name}`` of a labels file and how many rows repeated an earlier (id, label)."""
    chosen: dict[str, str] = {}
    where_of: dict[str, str] = {}
    repeated = 0
    rows = read_label_rows(uri)
    if not rows:
        raise DataError(f"{uri}: no labels in the file")
    for number, row in rows:
        where = f"{uri} row {number}"
        rid = str(row.get("id") or "").strip()
        if not rid:
            raise DataError(f"{where}: field 'id' is empty; give the record id from the prediction logs")
        name = _label_name(row.get("label"), labels, f"{where}, field 'label'")
        if rid in chosen:
            if chosen[rid] != name:
                raise DataError(
                    f"{where}: id {rid!r} labelled {name!r} here but {chosen[rid]!r} in {where_of[rid]}; "
                    "give each record one label"
                )
            repeated += 1
            continue
        chosen[rid], where_of[rid] = name, where
    return chosen, repeated


def add_feedback(logs_uri: str, labels_uri: str, labels: LabelConfig, *, reviewer: str = "") -> FeedbackResult:
    """Check ``labels_uri`` against the configured classes and the logged ids; append the known ones."""
    wanted, repeated = parse_labels(labels_uri, labels)
    logged = {r["id"] for r in read_logs(logs_uri).records}
    known = {rid: name for rid, name in wanted.items() if rid in logged}
    unknown = [rid for rid in wanted if rid not in logged]
    target = None
    if known:
        stamp = utc_now()
        records = [
            {"schema": FEEDBACK_SCHEMA, "id": rid, "label": name, "ts": stamp, "source": labels_uri,
             **({"reviewer": reviewer} if reviewer else {})}
            for rid, name in known.items()
        ]  # fmt: skip
        # Two labellings within one millisecond share a "ts"; the stable sort then keeps file order, so the
        # name carries microseconds (the random suffix alone would order them by chance).
        now = datetime.now(timezone.utc)
        target = storage.join(
            logs_uri.rstrip("/"), FEEDBACK_DIR, f"{now:%Y%m%dT%H%M%S%f}-{uuid.uuid4().hex[:8]}{LOG_FILE_SUFFIX}"
        )
        write_new_file(target, encode_lines(records))
    return FeedbackResult(len(known), len(unknown), repeated, target, unknown[:5])


def labels_by_id(feedback_records: Iterable[dict[str, Any]], labels: LabelConfig) -> tuple[dict[str, str], int]:
    """The latest label of each id (records in time order); labels no longer configured are skipped and counted."""
    chosen: dict[str, str] = {}
    stale = 0
    for record in feedback_records:
        if record["label"] not in labels.names:
            stale += 1
            continue
        chosen[record["id"]] = record["label"]
    return chosen, stale


def load_feedback(logs_uri: str, labels: LabelConfig) -> tuple[dict[str, str], dict[str, Any]]:
    """The reviewer labels stored under ``logs_uri`` and a summary (files, skipped lines, stale labels)."""
    read = read_feedback(logs_uri)
    chosen, stale = labels_by_id(read.records, labels)
    summary = {**read.summary(), "labelled_ids": len(chosen), "unknown_class": stale}
    return chosen, summary
