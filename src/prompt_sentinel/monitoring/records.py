"""The prediction log record (schema v1): one line of JSON per classified text.

Written by the predictor (``sentinel serve --log-dir``) and by the logger sink (KServe's payload logger) through
:func:`build_records`, so both produce the same lines::

    {"schema": "prompt-sentinel.prediction/v1", "id": "<request id>[/<index>]", "request_id": "...", "index": 0,
     "ts": "2025-06-01T12:00:00.123Z", "model": "prompt-sentinel", "model_version": "v3", "protocol": "v1",
     "source": "predictor", "label": "malicious", "decision": "block", "scores": {"benign": 0.01, ...},
     "latency_ms": 12.5, "text_sha256": "...", "chars": 812, "words": 140, "script": "LATIN", "text": "..."}

``text`` is present only when ``monitoring.store_text`` is true; ``text_sha256`` is salted (the salt comes from
``monitoring.salt_env``), so a hash cannot be looked up in a table of known prompts. ``chars``, ``words`` and
``script`` (the main Unicode script of the text's letters) are computed at logging time, so the length and
unknown-script drift signals work without the text.

A record id is the request id for a one-text request and ``<request id>/<index>`` otherwise; reviewer labels
(:mod:`prompt_sentinel.monitoring.feedback`) name records by it.
"""

from __future__ import annotations

import hashlib
import os
import re
import secrets
import unicodedata
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

PREDICTION_SCHEMA = "prompt-sentinel.prediction/v1"
FEEDBACK_SCHEMA = "prompt-sentinel.feedback/v1"
SOURCES = ("predictor", "sink")
REQUIRED_FIELDS: dict[str, tuple[type, ...]] = {
    "id": (str,),
    "ts": (str,),
    "model": (str,),
    "label": (str,),
    "decision": (str,),
    "scores": (dict,),
    "chars": (int,),
}
_WORD = re.compile(r"\w+")
# Letters sampled to name a text's script: enough to be stable, bounded for 20,000-character prompts.
_SCRIPT_SAMPLE = 400
NO_SCRIPT = "NONE"


def utc_now() -> str:
    """ISO-8601 UTC timestamp with milliseconds, ``Z`` suffix (sorts as text)."""
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def parse_ts(value: str) -> datetime | None:
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00"))
    except (AttributeError, ValueError):
        return None


def main_script(text: str) -> str:
    """The Unicode script most of the text's first letters belong to (``LATIN``, ``CYRILLIC``, ``CJK``…), taken
    from the first word of each letter's Unicode name; ``NONE`` for a text without letters."""
    counts: dict[str, int] = {}
    seen = 0
    for char in text:
        if not char.isalpha():
            continue
        name = unicodedata.name(char, "")
        script = name.split(" ", 1)[0] if name else "UNKNOWN"
        counts[script] = counts.get(script, 0) + 1
        seen += 1
        if seen >= _SCRIPT_SAMPLE:
            break
    return max(counts, key=counts.__getitem__) if counts else NO_SCRIPT


def word_count(text: str) -> int:
    return len(_WORD.findall(text))


@dataclass(frozen=True)
class TextPolicy:
    """Whether the text itself is logged, and the salt of its hash."""

    store_text: bool
    salt: bytes

    @classmethod
    def from_settings(cls, store_text: bool, salt_env: str) -> TextPolicy:
        salt = os.environ.get(salt_env, "")
        return cls(store_text, salt.encode("utf-8") if salt else secrets.token_bytes(16))

    def text_fields(self, text: str) -> dict[str, Any]:
        fields: dict[str, Any] = {
            "text_sha256": hashlib.sha256(self.salt + text.encode("utf-8", "surrogatepass")).hexdigest(),
            "chars": len(text),
            "words": word_count(text),
            "script": main_script(text),
        }
        if self.store_text:
            fields["text"] = text
        return fields


def record_id(request_id: str, index: int, count: int) -> str:
    return request_id if count == 1 else f"{request_id}/{index}"


def build_records(
    texts: Sequence[str],
    labels: Sequence[str],
    decisions: Sequence[str],
    scores: Sequence[Mapping[str, float]],
    *,
    model: str,
    model_version: str | None,
    protocol: str,
    request_id: str,
    source: str,
    policy: TextPolicy,
    latency_ms: float | None = None,
    ts: str | None = None,
) -> list[dict[str, Any]]:
    """One record per text of one request (see the module docstring for the fields)."""
    stamp = ts or utc_now()
    n = len(texts)
    return [
        {
            "schema": PREDICTION_SCHEMA,
            "id": record_id(request_id, i, n),
            "request_id": request_id,
            "index": i,
            "ts": stamp,
            "model": model,
            "model_version": model_version,
            "protocol": protocol,
            "source": source,
            "label": label,
            "decision": decision,
            "scores": {name: round(float(p), 6) for name, p in row.items()},
            "latency_ms": None if latency_ms is None else round(float(latency_ms), 3),
            **policy.text_fields(text),
        }
        for i, (text, label, decision, row) in enumerate(zip(texts, labels, decisions, scores, strict=True))
    ]


def record_problem(record: Any) -> str | None:
    """Why ``record`` is not a valid v1 prediction record (None when it is)."""
    if not isinstance(record, dict):
        return f"not a JSON object ({type(record).__name__})"
    schema = record.get("schema")
    if schema != PREDICTION_SCHEMA:
        return f"schema {schema!r} is not {PREDICTION_SCHEMA!r}"
    for name, types in REQUIRED_FIELDS.items():
        value = record.get(name)
        if not isinstance(value, types) or isinstance(value, bool):
            return f"field {name!r} is {value!r}, expected {'/'.join(t.__name__ for t in types)}"
    scores = record["scores"]
    if not scores or not all(isinstance(v, int | float) and not isinstance(v, bool) for v in scores.values()):
        return f"field 'scores' must map class names to numbers, got {scores!r}"
    if record["label"] not in scores:
        return f"label {record['label']!r} is not one of the scored classes {sorted(scores)}"
    return None
