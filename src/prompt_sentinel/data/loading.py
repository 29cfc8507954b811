"""Reading labelled prompt datasets (CSV, JSONL, Parquet; local path or ``gs://``) and writing data outputs.

Schema (column names come from ``cfg.data.*_column``): ``text`` (string) and ``label`` (an integer class id or
a label name from ``cfg.labels.names``) are required; ``id``, ``source`` and ``group`` (the template / scenario id
that keeps variants on one side of a split) are optional. Files written by Prompt Sentinel itself (cleaned data,
splits) always use the canonical names ``id,text,label,source,group,row``; when
a configured column is absent but its canonical name is present, the canonical column is used, so outputs can be
read back with any config.

Row numbers are what a user sees in the file:

* CSV: the header is row 1, so the first data record is row 2 (blank lines are not records). Because a quoted
  text may span several lines, messages also give the physical line where the record starts when it differs:
  ``data.csv row 5 (line 9)``.
* JSONL: the line number (1-based, blank lines counted).
* Parquet: the 1-based record index.

Class ids are plain ASCII integers (``0``, ``2``; surrounding blanks are ignored) or configured label names:
lookalikes such as ``1.0``, ``1e0``, ``-0``, ``+1``, Arabic-Indic ``١`` or full-width ``２`` are refused rather
than guessed at. JSON and Parquet numbers with an integral value (``2``, ``2.0``) count as ids, because those
formats store an integer column with gaps as floats. Values shown in messages are cut
(:func:`prompt_sentinel.messages.clip`). A UTF-16/UTF-32 file is refused as such, naming the encoding.

The CSV files this package writes are spreadsheet-safe (:mod:`prompt_sentinel.data.spreadsheet_safe`): a text
that a spreadsheet would run as a formula gets a leading ``'``, which the readers here remove again.

Two layers: :func:`read_table` parses a file into raw records and never raises for problems in the data (they
come back as :class:`Finding` objects, so validation can report every one of them), and :func:`load_dataset`
converts strictly, raising :class:`~prompt_sentinel.errors.DataError` on the first structural problem or
:class:`~prompt_sentinel.errors.DataValidationError` listing every row that cannot be represented.
"""

from __future__ import annotations

import csv
import io
import json
import math
import numbers
import re
from collections.abc import Collection, Mapping
from dataclasses import asdict, dataclass, field
from functools import lru_cache
from pathlib import Path, PurePosixPath
from typing import Any, Literal

import pandas as pd

from prompt_sentinel import storage
from prompt_sentinel.checksums import sha256_bytes
from prompt_sentinel.config import LabelConfig, SentinelConfig
from prompt_sentinel.data.encoding import encoding_problem
from prompt_sentinel.data.spreadsheet_safe import escape_cell, unescape_cell
from prompt_sentinel.errors import DataError, DataValidationError, SentinelError, StorageError
from prompt_sentinel.messages import clip, clip_list
from prompt_sentinel.text import dedup_key

FindingSeverity = Literal["error", "warning"]
DataFormat = Literal["csv", "jsonl", "parquet"]

# Canonical columns of every DataFrame this package returns and every data file it writes.
CANONICAL_FIELDS = ("text", "label", "id", "source", "group")
OUTPUT_COLUMNS = ("id", "text", "label", "source", "group", "row")
# The header of files written before the group column existed: still read as this package's own (escaped) files.
LEGACY_OUTPUT_COLUMNS = ("id", "text", "label", "source", "row")
REQUIRED_FIELDS = ("text", "label")
# String columns of OUTPUT_COLUMNS: escaped for spreadsheets on writing, restored on reading.
ESCAPED_COLUMNS = ("id", "text", "source", "group")
_PLAIN_CLASS_ID = re.compile(r"[0-9]+")  # ASCII digits only: \d would also match "١" or "２"

FORMAT_BY_SUFFIX: dict[str, DataFormat] = {
    ".csv": "csv",
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
    ".parquet": "parquet",
    ".pq": "parquet",
}

# Structural checks: always errors (not configurable, since nothing can be validated past them).
MISSING_FILE = "missing_file"
UNKNOWN_FORMAT = "unknown_format"
UNREADABLE = "unreadable"
MISSING_COLUMN = "missing_column"
INVALID_TYPE = "invalid_type"


@dataclass(frozen=True)
class Finding:
    """One problem found in a dataset. ``row``/``line`` are None for file- or dataset-level findings."""

    severity: FindingSeverity
    check: str
    file: str
    message: str
    row: int | None = None
    field: str | None = None
    line: int | None = None

    @property
    def location(self) -> str:
        """``file row R (line L), field 'F'`` with the parts that are known."""
        return format_location(self.file, self.row, self.line, self.field)

    def __str__(self) -> str:
        return f"{self.severity} [{self.check}] {self.location}: {self.message}"

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "location": self.location}


def format_location(file: str, row: int | None, line: int | None = None, field: str | None = None) -> str:
    parts = [file]
    if row is not None:
        parts.append(f"row {row}" + (f" (line {line})" if line is not None and line != row else ""))
    elif line is not None:
        parts.append(f"line {line}")
    text = " ".join(parts)
    return f"{text}, field '{field}'" if field else text


@dataclass
class RawRecord:
    """One record as read, before any conversion: ``values`` maps canonical field → raw value (None = missing)."""

    row: int
    line: int | None
    values: dict[str, Any]


@dataclass
class RawTable:
    """A parsed file: its records plus structural findings (missing file, bad format, missing column...)."""

    uri: str
    format: DataFormat | None
    records: list[RawRecord] = field(default_factory=list)
    findings: list[Finding] = field(default_factory=list)
    columns: dict[str, str] = field(default_factory=dict)  # canonical field → column name used in the file
    sha256: str | None = None

    @property
    def readable(self) -> bool:
        return not self.findings


def detect_format(uri: str) -> DataFormat:
    """Data format from the file extension; raises :class:`DataError` naming the allowed extensions."""
    suffix = PurePosixPath(str(uri)).suffix.lower()
    fmt = FORMAT_BY_SUFFIX.get(suffix)
    if fmt is None:
        allowed = ", ".join(sorted(FORMAT_BY_SUFFIX))
        shown = clip(suffix, 20) if suffix else "no extension"
        raise DataError(f"{uri}: unknown data format ({shown}); expected a file ending in one of {allowed}")
    return fmt


def _column_map(header: list[str], cfg: SentinelConfig) -> tuple[dict[str, str], list[str]]:
    """Map canonical fields to file columns; returns (mapping, names of missing required columns)."""
    configured = {
        "text": cfg.data.text_column,
        "label": cfg.data.label_column,
        "id": cfg.data.id_column,
        "source": cfg.data.source_column,
        "group": cfg.data.group_column,
    }
    present = set(header)
    mapping: dict[str, str] = {}
    missing: list[str] = []
    for canonical, name in configured.items():
        if name in present:
            mapping[canonical] = name
        elif canonical in present:  # a file written by Prompt Sentinel (canonical names)
            mapping[canonical] = canonical
        elif canonical in REQUIRED_FIELDS:
            missing.append(name)
    return mapping, missing


def _structural(uri: str, check: str, message: str, **where: Any) -> Finding:
    return Finding("error", check, uri, message, **where)


def _missing_columns_finding(uri: str, missing: list[str], header: list[str]) -> Finding:
    names = ", ".join(clip(m) for m in missing)
    return _structural(
        uri,
        MISSING_COLUMN,
        f"required column(s) {names} not found; the file has columns {clip_list(header)} "
        "(set data.text_column / data.label_column to use other names)",
        field=missing[0],
    )


def _read_csv(table: RawTable, text: str, cfg: SentinelConfig) -> None:
    # surrogateescape-decoded text: invalid bytes survive as lone surrogates, so every bad byte can be
    # reported at its own row and field instead of failing the whole file.
    # The csv module refuses fields over 128 KiB by default; a long text must reach the text_too_long check.
    csv.field_size_limit(max(csv.field_size_limit(), 2**31 - 1))
    reader = csv.reader(io.StringIO(text, newline=""), strict=True)
    uri = table.uri
    prev_line = 0
    header: list[str] | None = None
    mapping: dict[str, str] = {}
    index: dict[str, int] = {}
    row = 1
    ours = False  # a file this package wrote: its string cells carry the spreadsheet escape
    try:
        for fields in reader:
            start_line, prev_line = prev_line + 1, reader.line_num
            if not fields or fields == [""]:  # blank line
                continue
            if header is None:
                header = [h.strip() for h in fields]
                mapping, missing = _column_map(header, cfg)
                if missing:
                    table.findings.append(_missing_columns_finding(uri, missing, header))
                    return
                for canonical, name in mapping.items():
                    if header.count(name) > 1:
                        table.findings.append(
                            _structural(
                                uri,
                                UNREADABLE,
                                f"column '{name}' appears {header.count(name)} times in the header",
                                row=1,
                                field=name,
                            )
                        )
                        return
                    index[canonical] = header.index(name)
                table.columns = mapping
                ours = tuple(header) in (OUTPUT_COLUMNS, LEGACY_OUTPUT_COLUMNS)
                continue
            row += 1
            if len(fields) != len(header):
                table.findings.append(
                    _structural(
                        uri,
                        UNREADABLE,
                        f"record has {len(fields)} fields but the header has {len(header)}",
                        row=row,
                        line=start_line,
                    )
                )
                continue
            # CSV cannot tell an empty field from a missing value; like pandas, an empty field is missing.
            values = {c: (fields[i] if fields[i] != "" else None) for c, i in index.items()}
            if ours:
                values = {c: unescape_cell(v) if v and c in ESCAPED_COLUMNS else v for c, v in values.items()}
            table.records.append(RawRecord(row=row, line=start_line, values=values))
    except csv.Error as exc:
        message = f"malformed CSV in the record starting at line {prev_line + 1} ({exc})"
        table.findings.append(_structural(uri, UNREADABLE, message, line=prev_line + 1))
        return
    if header is None:
        table.findings.append(_structural(uri, UNREADABLE, "the file is empty (no header row)"))


def _read_jsonl(table: RawTable, text: str, cfg: SentinelConfig) -> None:
    uri = table.uri
    any_record = False
    for line_no, line in enumerate(text.split("\n"), start=1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as exc:
            table.findings.append(
                _structural(uri, UNREADABLE, f"not valid JSON ({exc.msg} at column {exc.colno})", row=line_no)
            )
            continue
        if not isinstance(obj, dict):
            message = f"expected a JSON object, got {type(obj).__name__}"
            table.findings.append(_structural(uri, UNREADABLE, message, row=line_no))
            continue
        any_record = True
        mapping, missing = _column_map(list(obj), cfg)
        if missing:
            table.findings.append(
                _structural(
                    uri,
                    MISSING_COLUMN,
                    f"required key(s) {clip_list(missing)} not found in this object (keys: {clip_list(list(obj))})",
                    row=line_no,
                    field=missing[0],
                )
            )
            continue
        table.columns.update(mapping)
        values = {c: obj.get(name) for c, name in mapping.items()}
        # JSONL rows are line numbers, so no separate line is recorded.
        table.records.append(RawRecord(row=line_no, line=None, values=values))
    if not any_record and not table.findings:
        table.findings.append(_structural(uri, UNREADABLE, "the file holds no JSON records"))


def _read_parquet(table: RawTable, data: bytes, cfg: SentinelConfig) -> None:
    uri = table.uri
    try:
        frame = pd.read_parquet(io.BytesIO(data))
    except Exception as exc:  # pyarrow raises several unrelated types for corrupt files
        table.findings.append(_structural(uri, UNREADABLE, f"not a readable Parquet file ({exc})"))
        return
    header = [str(c) for c in frame.columns]
    mapping, missing = _column_map(header, cfg)
    if missing:
        table.findings.append(_missing_columns_finding(uri, missing, header))
        return
    table.columns = mapping
    columns = {c: frame[name].tolist() for c, name in mapping.items()}
    for i in range(len(frame)):
        values = {c: _parquet_value(col[i]) for c, col in columns.items()}
        table.records.append(RawRecord(row=i + 1, line=None, values=values))


def _parquet_value(value: Any) -> Any:
    if value is None or (isinstance(value, float) and math.isnan(value)) or value is pd.NA:
        return None
    if isinstance(value, bytes):  # a binary column: decode like CSV so bad bytes are reported per row
        return value.decode("utf-8", errors="surrogateescape")
    return value


def read_table(uri: str, cfg: SentinelConfig) -> RawTable:
    """Parse ``uri`` into raw records; problems come back as findings, never as exceptions."""
    uri = str(uri)
    table = RawTable(uri=uri, format=None)
    try:
        table.format = detect_format(uri)
    except DataError as exc:
        table.findings.append(_structural(uri, UNKNOWN_FORMAT, str(exc).removeprefix(f"{uri}: ")))
        return table
    try:
        data = storage.read_bytes(uri)
    except StorageError as exc:
        message = str(exc).removeprefix(f"{uri}: ")
        missing = "no such" in message
        table.findings.append(_structural(uri, MISSING_FILE if missing else UNREADABLE, message))
        return table
    table.sha256 = sha256_bytes(data)
    if table.format == "parquet":
        _read_parquet(table, data, cfg)
        return table
    problem = encoding_problem(data)
    if problem:
        table.findings.append(_structural(uri, UNREADABLE, problem))
        return table
    if data.startswith(b"\xef\xbb\xbf"):  # UTF-8 BOM written by spreadsheet tools
        data = data[3:]
    text = data.decode("utf-8", errors="surrogateescape")
    if table.format == "csv":
        _read_csv(table, text, cfg)
    else:
        _read_jsonl(table, text, cfg)
    return table


# --- value conversion -------------------------------------------------------------------------------------


def invalid_unicode(value: str) -> str | None:
    """Describe the first invalid byte / lone surrogate in ``value`` (None when it is valid Unicode)."""
    for pos, ch in enumerate(value):
        code = ord(ch)
        if 0xDC80 <= code <= 0xDCFF:  # a byte that was not valid UTF-8 (kept by surrogateescape)
            return f"invalid UTF-8 byte 0x{code - 0xDC00:02X} at character {pos + 1}"
        if 0xD800 <= code <= 0xDFFF:
            return f"lone UTF-16 surrogate U+{code:04X} at character {pos + 1}"
    return None


def repair_unicode(value: str) -> str:
    """Replace invalid bytes / lone surrogates with U+FFFD (used when invalid_utf8 is off)."""
    return "".join("\ufffd" if 0xD800 <= ord(ch) <= 0xDFFF else ch for ch in value)


def parse_label(value: Any, cfg: SentinelConfig) -> int:
    """Class id for a raw label: a label name (exact, then case-insensitive) or an integer id in range.

    A string id must be plain ASCII digits (``"2"``, blanks around it ignored); a number must be an integer or
    an integral float (JSON/Parquet). Raises ``ValueError`` with a message naming the value (cut when long)
    and the allowed ones.
    """
    names = cfg.labels.names
    allowed = f"allowed: names {names} or ids 0..{len(names) - 1}"
    if value is None:
        raise ValueError(f"label is missing; {allowed}")
    if isinstance(value, bool):
        raise ValueError(f"label {value!r} is a boolean; {allowed}")
    if isinstance(value, str):
        raw = value.strip()
        if not raw:
            raise ValueError(f"label is empty; {allowed}")
        label2id = cfg.labels.label2id
        if raw in label2id:
            return label2id[raw]
        folded = [i for n, i in label2id.items() if n.casefold() == raw.casefold()]
        if len(folded) == 1:
            return folded[0]
        if not _PLAIN_CLASS_ID.fullmatch(raw):
            if any(ch.isnumeric() for ch in raw):
                raise ValueError(
                    f"label {clip(value)} is not an integer class id: ids are plain ASCII integers "
                    f"(digits 0-9 only: no sign, decimal point, exponent or other scripts' digits); {allowed}"
                )
            raise ValueError(f"unknown label {clip(value)}; {allowed}")
        # compared as text first: int() of thousands of digits is slow and refused by Python itself
        if len(raw.lstrip("0")) > len(str(len(names))) or int(raw) >= len(names):
            raise ValueError(f"label {clip(value)} is outside the configured classes; {allowed}")
        return int(raw)
    if isinstance(value, float):
        if not value.is_integer():
            raise ValueError(f"label {clip(value)} is not an integer class id; {allowed}")
        number = int(value)
    elif isinstance(value, numbers.Integral):  # int and numpy integers
        number = int(value)
    else:
        raise ValueError(f"label {clip(value)} has type {type(value).__name__}; {allowed}")
    if not 0 <= number < len(names):
        raise ValueError(f"label {clip(value)} is outside the configured classes; {allowed}")
    return number


def check_labelled_frame(df: Any, labels: LabelConfig, where: str, error: type[SentinelError] = DataError) -> None:
    """Raise ``error`` (naming ``where``) unless ``df`` is a non-empty DataFrame of string texts and class ids."""
    if not isinstance(df, pd.DataFrame):
        raise error(f"{where}: expected a pandas DataFrame, got {type(df).__name__}")
    missing = [c for c in ("text", "label") if c not in df.columns]
    if missing:
        raise error(f"{where}: DataFrame lacks column(s) {missing}; got {list(df.columns)}")
    if df.empty:
        raise error(f"{where}: the dataset has no rows")
    ids = pd.to_numeric(df["label"], errors="coerce")
    n = labels.num_classes
    bad = df.index[ids.isna() | (ids < 0) | (ids >= n) | (ids % 1 != 0)]
    if len(bad):
        raise error(
            f"{where}: column 'label' must hold class ids 0..{n - 1} {labels.names}; "
            f"found {clip(df.loc[bad[0], 'label'])} at index {clip(bad[0])}"
            + (f" and {len(bad) - 1} more" if len(bad) > 1 else "")
        )
    if not df["text"].map(lambda t: isinstance(t, str)).all():
        raise error(f"{where}: column 'text' must hold strings only")


@lru_cache(maxsize=65_536)
def group_key(text: str) -> str:
    """:func:`prompt_sentinel.text.dedup_key`, cached: validate, split and the leak checks each need every
    text's key, and normalization dominates their run time."""
    return dedup_key(text)


def default_id(uri: str, row: int) -> str:
    """Stable id for a record without one: ``<file stem>-<row>``."""
    return f"{PurePosixPath(str(uri)).stem}-{row}"


def optional_str(value: Any) -> str:
    """An optional id/source value as a string ('' when missing; 3.0 → '3')."""
    if value is None:
        return ""
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    return str(value)


def load_dataset(uri: str, cfg: SentinelConfig) -> pd.DataFrame:
    """Read a dataset strictly into a DataFrame with columns ``text, label (int), id, source, group, row``.

    Raises :class:`DataError` when the file is missing, of unknown format, unreadable or lacks a required column,
    and :class:`DataValidationError` (listing them all) when rows have no text, an unknown label, a value of the
    wrong type or invalid UTF-8. Other checks (length, duplicates, leaks...) are
    :func:`prompt_sentinel.data.validation.validate_dataset`'s job.
    """
    table = read_table(uri, cfg)
    if table.findings:
        first = table.findings[0]
        more = f" (and {len(table.findings) - 1} more problem(s))" if len(table.findings) > 1 else ""
        raise DataError(f"{first.location}: {first.message}{more}")
    rows: list[dict[str, Any]] = []
    problems: list[Finding] = []
    for rec in table.records:
        problem = None
        text = rec.values.get("text")
        if text is None:
            problem = ("null_text", "text", "text is missing")
        elif not isinstance(text, str):
            problem = (INVALID_TYPE, "text", f"text must be a string, got {type(text).__name__}")
        else:
            bad = invalid_unicode(text)
            if bad:
                problem = ("invalid_utf8", "text", bad)
        label: int | None = None
        if problem is None:
            try:
                label = parse_label(rec.values.get("label"), cfg)
            except ValueError as exc:
                problem = ("unknown_label", "label", str(exc))
        if problem is not None:
            check, fld, message = problem
            problems.append(
                Finding("error", check, table.uri, message, row=rec.row, field=_column(table, fld), line=rec.line)
            )
            continue
        rows.append(
            {
                "text": text,
                "label": label,
                "id": optional_str(rec.values.get("id")) or default_id(table.uri, rec.row),
                "source": optional_str(rec.values.get("source")),
                "group": optional_str(rec.values.get("group")),
                "row": rec.row,
            }
        )
    if problems:
        shown = "\n".join(f"  {p}" for p in problems[:20])
        more = f"\n  ... and {len(problems) - 20} more" if len(problems) > 20 else ""
        raise DataValidationError(f"{table.uri}: {len(problems)} row(s) cannot be loaded:\n{shown}{more}", problems)
    return records_frame(rows)


def _column(table: RawTable, canonical: str) -> str:
    return table.columns.get(canonical, canonical)


def records_frame(rows: list[Mapping[str, Any]]) -> pd.DataFrame:
    """The canonical DataFrame (``text, label, id, source, group, row``) with stable dtypes, also when empty.

    ``group`` is '' for rows without one (a row missing the key gets '')."""
    frame = pd.DataFrame(list(rows), columns=["text", "label", "id", "source", "group", "row"])
    frame["group"] = frame["group"].fillna("")
    return frame.astype(
        {"text": object, "label": "int64", "id": object, "source": object, "group": object, "row": "int64"}
    )


# --- writing ------------------------------------------------------------------------------------------------


def frame_to_csv_bytes(df: pd.DataFrame) -> bytes:
    """Serialize a canonical DataFrame as UTF-8 CSV with the columns ``id,text,label,source,group,row``.

    Spreadsheet-safe: ``id``, ``text`` and ``source`` cells that a spreadsheet would run as a formula get a
    leading ``'`` (:mod:`prompt_sentinel.data.spreadsheet_safe`); :func:`read_data_csv` restores them.
    """
    missing = [c for c in ("text", "label") if c not in df.columns]
    if missing:
        raise DataError(f"cannot write data without column(s) {missing}; got {list(df.columns)}")
    out = df.reindex(columns=list(OUTPUT_COLUMNS))
    out["id"] = out["id"].fillna("").astype(str)
    out["source"] = out["source"].fillna("").astype(str)
    out["group"] = out["group"].fillna("").astype(str)
    out["row"] = out["row"].fillna(0).astype("int64")
    out["label"] = out["label"].astype("int64")
    for column in ESCAPED_COLUMNS:
        out[column] = out[column].map(lambda v: escape_cell(v) if isinstance(v, str) else v)
    # Every string quoted: with "\n" as the line terminator the csv module would leave a bare "\r" in a text
    # unquoted, and every reader then splits the record there.
    return out.to_csv(index=False, lineterminator="\n", quoting=csv.QUOTE_NONNUMERIC).encode("utf-8")


def read_data_csv(uri: str) -> pd.DataFrame:
    """Read a data CSV written by this package (cleaned data or a split) back into the canonical DataFrame.

    The file is trusted to hold integer labels; texts such as ``NA`` or ``null`` stay strings. The spreadsheet
    escape :func:`frame_to_csv_bytes` adds is removed, so every text reads back exactly as it was.
    """
    try:
        data = storage.read_bytes(str(uri))
    except StorageError as exc:
        raise DataError(str(exc)) from exc
    problem = encoding_problem(data)
    if problem:
        raise DataError(f"{uri}: {problem}")
    try:
        frame = pd.read_csv(io.BytesIO(data), dtype=str, keep_default_na=False, na_filter=False, encoding="utf-8")
    except (ValueError, pd.errors.ParserError, UnicodeDecodeError) as exc:
        raise DataError(f"{uri}: not a readable data CSV ({exc})") from exc
    missing = [c for c in ("text", "label") if c not in frame.columns]
    if missing:
        raise DataError(f"{uri}: missing column(s) {missing}; the file has {list(frame.columns)}")
    try:
        labels = frame["label"].astype("int64")
    except ValueError as exc:
        raise DataError(f"{uri}: column 'label' must hold integer class ids ({exc})") from exc
    for column in ESCAPED_COLUMNS:
        if column in frame:
            frame[column] = frame[column].map(unescape_cell)
    rows = pd.DataFrame(
        {
            "text": frame["text"],
            "label": labels,
            "id": frame["id"] if "id" in frame else [default_id(uri, i + 2) for i in range(len(frame))],
            "source": frame.get("source", ""),
            "group": frame.get("group", ""),
            "row": frame["row"].replace("", "0").astype("int64") if "row" in frame else range(2, len(frame) + 2),
        }
    )
    return records_frame(rows.to_dict("records"))


def write_output_files(out: str | Path, files: Mapping[str, bytes], replaceable: Collection[str] = ()) -> list[str]:
    """Write ``files`` (name → bytes, in the given order) into the directory ``out``, all or nothing.

    Local: everything goes into a temp directory renamed into place on success. An existing ``out`` is replaced
    only when it holds nothing but files named in ``files`` or ``replaceable`` (an earlier run's outputs), so a
    mistaken ``--out`` can never wipe an unrelated directory. ``gs://``: every file is serialized before the
    first upload and they go up in order, so the last one (by convention the report) marks a complete set.
    """
    out = str(out)
    if storage.is_gcs(out):
        written = []
        for name, payload in files.items():
            target = storage.join(out, name)
            storage.write_bytes(target, payload)
            written.append(target)
        return written
    target = Path(out)
    if target.exists():
        if not target.is_dir():
            raise DataError(f"output {out} exists and is not a directory")
        foreign = sorted(p.name for p in target.iterdir() if p.name not in {*files, *replaceable})
        if foreign:
            shown = ", ".join(foreign[:5]) + (" ..." if len(foreign) > 5 else "")
            raise DataError(
                f"output directory {out} already holds other files ({shown}); it would be replaced as a whole, "
                "so choose a new or empty directory"
            )
    with storage.atomic_output_dir(out) as tmp:
        tmp.chmod(0o755)  # mkdtemp makes it owner-only; data outputs are read by other users and containers
        for name, payload in files.items():
            Path(tmp, name).write_bytes(payload)
    return [str(Path(out, name)) for name in files]
