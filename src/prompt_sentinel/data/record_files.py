"""Reading records of any schema from source files for corpus recipes (local or ``gs://``, optionally ``.gz``).

Unlike :mod:`prompt_sentinel.data.loading` (the labelled ``text,label`` loader), these readers return every field of
every record as a dict, for recipes to template, filter and map. Formats: ``csv`` (header row), ``jsonl`` (one
object per line), ``json`` (a list, or the list at a dotted ``records`` path; ``*`` flattens an object of lists),
``parquet``, ``lines`` (one record ``{text}`` per non-empty line) and ``document`` (the whole file is one record).
Scalars in JSON lists become ``{value: x}``. A file whose content does not match its declared format is an error
that says what the content looks like instead.
"""

from __future__ import annotations

import csv
import fnmatch
import gzip
import io
import json
import math
from pathlib import Path, PurePosixPath
from typing import Any

from prompt_sentinel import storage
from prompt_sentinel.checksums import sha256_bytes
from prompt_sentinel.errors import DataError, StorageError

__all__ = ["SUFFIX_FORMATS", "expand_paths", "infer_format", "read_records"]

SUFFIX_FORMATS = {
    ".csv": "csv",
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
    ".json": "json",
    ".parquet": "parquet",
    ".pq": "parquet",
    ".txt": "lines",
}
_WILDCARDS = set("*?[")


def _strip_gz(uri: str) -> str:
    return uri[:-3] if uri.lower().endswith(".gz") else uri


def infer_format(uri: str) -> str | None:
    """The format implied by the file extension (ignoring a trailing ``.gz``); None when it does not say."""
    return SUFFIX_FORMATS.get(PurePosixPath(_strip_gz(str(uri))).suffix.lower())


def _has_wildcard(pattern: str) -> bool:
    return any(c in _WILDCARDS for c in pattern)


def expand_paths(patterns: list[str], base: str, missing_ok: bool = False) -> list[tuple[str, str]]:
    """``(uri, shown)`` for each file the patterns (relative to ``base`` unless absolute) name, in sorted order.

    A pattern without wildcards must name an existing file and a glob must match at least one file, unless
    ``missing_ok`` (then such a pattern contributes nothing).
    """
    found: list[tuple[str, str]] = []
    for pattern in patterns:
        absolute = storage.is_gcs(pattern) or Path(pattern).is_absolute()
        full = pattern if absolute else storage.join(base, pattern)
        if not _has_wildcard(pattern):
            problem = None
            if storage.is_gcs(full):
                if not storage.exists(full):
                    problem = f"{full}: no such object"
            elif not Path(full).is_file():
                problem = f"{full}: no such file" if not Path(full).exists() else f"{full}: is not a file"
            if problem and not missing_ok:
                raise DataError(problem)
            if not problem:
                found.append((full, pattern))
            continue
        matches = _glob_gcs(full) if storage.is_gcs(full) else _glob_local(full)
        if not matches and not missing_ok:
            raise DataError(f"{full}: the pattern matches no file")
        for uri in matches:
            shown = uri if absolute else _relative(uri, base)
            found.append((uri, shown))
    return found


def _relative(uri: str, base: str) -> str:
    if storage.is_gcs(uri):
        return uri[len(base.rstrip("/")) + 1 :] if uri.startswith(base.rstrip("/") + "/") else uri
    try:
        return Path(uri).relative_to(base).as_posix()
    except ValueError:
        return uri


def _glob_local(pattern: str) -> list[str]:
    path = Path(pattern)
    anchor = Path(path.anchor)
    relative = path.relative_to(anchor).as_posix()
    return sorted(str(p) for p in anchor.glob(relative) if p.is_file())


def _glob_gcs(pattern: str) -> list[str]:
    bucket, blob_pattern = storage.parse_gs_uri(pattern)
    prefix = blob_pattern[: min(blob_pattern.index(c) for c in _WILDCARDS if c in blob_pattern)]
    try:
        names = [b.name for b in storage.gcs_client().list_blobs(bucket, prefix=prefix)]
    except Exception as exc:
        raise DataError(f"cannot list gs://{bucket}/{prefix}: {exc}") from exc
    return sorted(f"gs://{bucket}/{n}" for n in names if fnmatch.fnmatchcase(n, blob_pattern))


def read_bytes(uri: str) -> tuple[bytes, str]:
    """The file's content (gunzipped when it ends in .gz) and the sha256 of the stored bytes."""
    try:
        data = storage.read_bytes(uri)
    except StorageError as exc:
        raise DataError(str(exc)) from exc
    digest = sha256_bytes(data)
    if uri.lower().endswith(".gz"):
        if not data.startswith(b"\x1f\x8b"):
            raise DataError(f"{uri}: the name ends in .gz but the content is not gzip-compressed")
        try:
            data = gzip.decompress(data)
        except (OSError, EOFError) as exc:
            raise DataError(f"{uri}: cannot decompress ({exc})") from exc
    return data, digest


def _decode(uri: str, data: bytes) -> str:
    if data.startswith(b"\xef\xbb\xbf"):
        data = data[3:]
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise DataError(f"{uri}: not valid UTF-8 at byte {exc.start}") from None


def _looks_like(text: str, data: bytes) -> str:
    """A short guess at what a file holds, for format-mismatch messages."""
    if data.startswith(b"PAR1"):
        return "Parquet"
    if data.startswith(b"\x1f\x8b"):
        return "gzip-compressed data"
    head = text.lstrip()[:1]
    if head in ("{", "["):
        first_line = text.lstrip().split("\n", 1)[0]
        try:
            json.loads(first_line)
            return "JSON Lines" if "\n" in text.strip() and head == "{" else "JSON"
        except json.JSONDecodeError:
            return "JSON"
    if "," in text.split("\n", 1)[0]:
        return "CSV"
    return "plain text"


def read_records(
    uri: str, fmt: str, records: str | None = None, json_unescape: bool = False
) -> tuple[list[dict[str, Any]], str]:
    """Every record of ``uri`` read as ``fmt`` (see the module doc) and the sha256 of the stored file."""
    data, digest = read_bytes(uri)
    if fmt == "parquet":
        return _read_parquet(uri, data), digest
    if data.startswith(b"PAR1"):
        raise DataError(f"{uri}: declared as {fmt} but the content is Parquet (set format: parquet)")
    text = _decode(uri, data)
    if fmt == "csv":
        return _read_csv(uri, text, data), digest
    if fmt == "jsonl":
        return _read_jsonl(uri, text, data), digest
    if fmt == "json":
        return _read_json(uri, text, data, records), digest
    if fmt == "lines":
        return _read_lines(uri, text, json_unescape), digest
    if fmt == "document":
        return [{"text": text}], digest
    raise DataError(f"{uri}: unknown format {fmt!r}")


def _read_csv(uri: str, text: str, data: bytes) -> list[dict[str, Any]]:
    if text.lstrip()[:1] in ("{", "["):
        raise DataError(f"{uri}: declared as csv but the content looks like {_looks_like(text, data)}")
    csv.field_size_limit(max(csv.field_size_limit(), 2**31 - 1))
    reader = csv.reader(io.StringIO(text, newline=""), strict=True)
    header: list[str] | None = None
    out: list[dict[str, Any]] = []
    row = 1
    try:
        for fields in reader:
            if not fields or fields == [""]:
                continue
            if header is None:
                header = [h.strip() for h in fields]
                duplicated = sorted({h for h in header if header.count(h) > 1})
                if duplicated:
                    raise DataError(f"{uri}: column(s) {duplicated} appear more than once in the header")
                continue
            row += 1
            if len(fields) != len(header):
                raise DataError(
                    f"{uri} row {row} (line {reader.line_num}): {len(fields)} fields but the header has {len(header)}"
                    " (is the file really CSV?)"
                )
            out.append(dict(zip(header, fields, strict=True)))
    except csv.Error as exc:
        raise DataError(f"{uri}: malformed CSV near line {reader.line_num} ({exc})") from None
    if header is None:
        raise DataError(f"{uri}: the file is empty (no header row)")
    return out


def _read_jsonl(uri: str, text: str, data: bytes) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for line_no, line in enumerate(text.split("\n"), start=1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as exc:
            looks = _looks_like(text, data)
            hint = f"; the content looks like {looks}" if looks != "JSON Lines" else ""
            raise DataError(f"{uri} line {line_no}: not valid JSON ({exc.msg}){hint}") from None
        if not isinstance(obj, dict):
            raise DataError(f"{uri} line {line_no}: expected a JSON object per line, got {type(obj).__name__}")
        out.append(obj)
    return out


def _read_json(uri: str, text: str, data: bytes, records: str | None) -> list[dict[str, Any]]:
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as exc:
        looks = _looks_like(text, data)
        hint = " (one JSON value per line: set format: jsonl)" if "Extra data" in exc.msg else ""
        raise DataError(
            f"{uri}: declared as json but not a JSON document ({exc.msg} at line {exc.lineno}){hint}; "
            f"the content looks like {looks}"
        ) from None
    node: Any = doc
    if records == "*":
        if not isinstance(doc, dict):
            raise DataError(f"{uri}: records '*' needs a JSON object of lists, got {type(doc).__name__}")
        items: list[dict[str, Any]] = []
        for key in sorted(doc):
            if not isinstance(doc[key], list):
                raise DataError(f"{uri}: records '*': key {key!r} holds {type(doc[key]).__name__}, not a list")
            items.extend({**_as_record(v), "_key": key} for v in doc[key])
        return items
    if records:
        for part in records.split("."):
            if not isinstance(node, dict) or part not in node:
                keys = sorted(node) if isinstance(node, dict) else type(node).__name__
                raise DataError(f"{uri}: records path {records!r}: no key {part!r} (found {keys})")
            node = node[part]
    if isinstance(node, dict):
        raise DataError(
            f"{uri}: the JSON {'at ' + repr(records) if records else 'document'} is an object; set records: to the "
            f"key holding the list (keys: {sorted(node)}) or '*' to flatten an object of lists"
        )
    if not isinstance(node, list):
        raise DataError(f"{uri}: expected a JSON list of records, got {type(node).__name__}")
    return [_as_record(v) for v in node]


def _as_record(value: Any) -> dict[str, Any]:
    return dict(value) if isinstance(value, dict) else {"value": value}


def _read_lines(uri: str, text: str, json_unescape: bool) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for line_no, line in enumerate(text.splitlines(), start=1):
        line = line.strip()
        if not line:
            continue
        if json_unescape:
            try:
                line = json.loads('"' + line + '"')
            except json.JSONDecodeError as exc:
                raise DataError(f"{uri} line {line_no}: not a JSON-escaped string body ({exc.msg})") from None
        out.append({"text": line, "_line": line_no})
    return out


def _read_parquet(uri: str, data: bytes) -> list[dict[str, Any]]:
    import pandas as pd

    if not data.startswith(b"PAR1"):
        text = data[:4096].decode("utf-8", errors="replace")
        raise DataError(f"{uri}: declared as parquet but the content looks like {_looks_like(text, data)}")
    try:
        frame = pd.read_parquet(io.BytesIO(data))
    except Exception as exc:  # pyarrow raises several unrelated types for corrupt files
        raise DataError(f"{uri}: not a readable Parquet file ({exc})") from exc
    rows = frame.to_dict("records")
    return [{str(k): _plain(v) for k, v in row.items()} for row in rows]


def _plain(value: Any) -> Any:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    if hasattr(value, "tolist"):  # numpy scalars and arrays
        return value.tolist()
    return value
