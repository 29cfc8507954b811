"""Append-only, partitioned JSONL prediction logs in a local folder or under a ``gs://`` prefix.

Layout under a log root::

    predictions/dt=2025-06-01/hour=12/<model>-<host>-<pid>-<start>-<random>[-<part>].jsonl
    feedback/<time>-<random>.jsonl

**Writing** (:class:`PredictionLogWriter`): records go into an in-memory buffer (a list append under a lock: the
serving hot path never waits for a disk or a bucket); a background thread writes the buffer every
``flush_interval_s``. Locally it appends to the writer's own file (never fsynced per request; a new file after
``rotate_records`` records or a new hour); on ``gs://`` each flush is a new object, created with
``if_generation_match=0`` so nothing is ever overwritten. Every file name is unique (host, pid, start time, random
suffix), so two writers never share a file and a crash can at most leave a partly written *last line* of the
writer's current file: earlier logs are never touched. When the buffer is full, new records are dropped and counted
(``dropped``), never queued without bound.

**Reading** (:func:`read_logs`): every ``.jsonl`` file under the root, newest partitions first. Bad content is
skipped and counted by reason, never fatal: ``truncated_line`` (a last line without newline that does not parse: a
writer died mid-line), ``invalid_json``, ``other_schema`` (another schema version), ``invalid_record``,
``empty_file``.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import orjson

from prompt_sentinel import storage
from prompt_sentinel.errors import DataError, StorageError
from prompt_sentinel.monitoring.records import FEEDBACK_SCHEMA, PREDICTION_SCHEMA, parse_ts, record_problem
from prompt_sentinel.run_layout import FEEDBACK_DIR, LOG_FILE_SUFFIX, PREDICTIONS_DIR

log = logging.getLogger(__name__)
_SAFE = str.maketrans({c: "-" for c in '/\\:*?"<>| '})


def _safe(part: str) -> str:
    return (part or "unknown").translate(_SAFE)[:60]


def partition(ts: datetime) -> str:
    return f"dt={ts:%Y-%m-%d}/hour={ts:%H}"


def unique_stem(prefix: str) -> str:
    """``<prefix>-<host>-<pid>-<UTC start>-<random>``: unique across pods, processes and restarts."""
    now = datetime.now(timezone.utc)
    return f"{_safe(prefix)}-{_safe(socket.gethostname())}-{os.getpid()}-{now:%Y%m%dT%H%M%S}-{uuid.uuid4().hex[:8]}"


def encode_lines(records: Iterable[dict[str, Any]]) -> bytes:
    return b"".join(orjson.dumps(r, option=orjson.OPT_SERIALIZE_NUMPY) + b"\n" for r in records)


def write_new_file(uri: str, data: bytes) -> None:
    """Create ``uri`` with ``data``; refuses to replace an existing file or object (append-only logs)."""
    if storage.is_gcs(uri):
        bucket, name = storage.parse_gs_uri(uri)
        blob = storage.gcs_client().bucket(bucket).blob(name)
        try:
            blob.upload_from_string(data, content_type="application/x-ndjson", if_generation_match=0)
        except Exception as exc:
            raise StorageError(f"cannot create {uri}: {type(exc).__name__}: {exc}") from exc
        return
    path = Path(uri)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp")
    tmp.write_bytes(data)
    try:
        os.link(tmp, path)  # fails when the target exists: create-only, atomic
    except FileExistsError:
        raise StorageError(f"{path} already exists; log files are never overwritten") from None
    finally:
        tmp.unlink(missing_ok=True)


class PredictionLogWriter:
    """Buffered, append-only writer of prediction records (see the module docstring)."""

    def __init__(
        self,
        root: str,
        *,
        prefix: str = "predictions",
        flush_interval_s: float = 2.0,
        max_buffered: int = 50_000,
        rotate_records: int = 20_000,
        on_written: Callable[[int], None] | None = None,
        on_dropped: Callable[[int], None] | None = None,
        start_thread: bool = True,
    ) -> None:
        self.root = str(root).rstrip("/")
        self.gcs = storage.is_gcs(self.root)
        if not self.gcs:
            Path(self.root).mkdir(parents=True, exist_ok=True)
            if not os.access(self.root, os.W_OK):
                raise StorageError(f"log directory {self.root} is not writable")
        self.prefix = prefix
        self.flush_interval_s = flush_interval_s
        self.max_buffered = max_buffered
        self.rotate_records = rotate_records
        self._on_written = on_written
        self._on_dropped = on_dropped
        self._buffer: list[dict[str, Any]] = []
        self._lock = threading.Lock()
        self._write_lock = threading.Lock()
        self._stop = threading.Event()
        self._stem = unique_stem(prefix)
        self._part = 0
        self._file: Any = None
        self._file_partition: str | None = None
        self._file_records = 0
        self.written = 0
        self.dropped = 0
        self.files: list[str] = []
        self._thread: threading.Thread | None = None
        if start_thread:
            self._thread = threading.Thread(target=self._run, name="prediction-log-writer", daemon=True)
            self._thread.start()

    # -- hot path ------------------------------------------------------------------------------------------
    def write(self, records: list[dict[str, Any]]) -> int:
        """Queue ``records``; returns how many were accepted (the rest are dropped and counted)."""
        with self._lock:
            room = self.max_buffered - len(self._buffer)
            accepted = records if room >= len(records) else records[: max(room, 0)]
            self._buffer.extend(accepted)
        lost = len(records) - len(accepted)
        if lost:
            self.dropped += lost
            if self._on_dropped:
                self._on_dropped(lost)
        return len(accepted)

    # -- background -----------------------------------------------------------------------------------------
    def _run(self) -> None:
        while not self._stop.wait(self.flush_interval_s):
            try:
                self.flush()
            except Exception:  # a bucket outage must not kill the thread; the records stay counted as lost
                log.exception("prediction log flush failed")

    def flush(self) -> int:
        """Write everything buffered now; returns the number of records written."""
        with self._lock:
            batch, self._buffer = self._buffer, []
        if not batch:
            return 0
        with self._write_lock:
            try:
                if self.gcs:
                    self._write_object(batch)
                else:
                    self._append_local(batch)
            except Exception:
                self.dropped += len(batch)
                if self._on_dropped:
                    self._on_dropped(len(batch))
                raise
        self.written += len(batch)
        if self._on_written:
            self._on_written(len(batch))
        return len(batch)

    def _next_name(self, part_dir: str) -> str:
        self._part += 1
        suffix = "" if self._part == 1 else f"-{self._part:05d}"
        return f"{part_dir}/{self._stem}{suffix}{LOG_FILE_SUFFIX}"

    def _write_object(self, batch: list[dict[str, Any]]) -> None:
        now = datetime.now(timezone.utc)
        uri = storage.join(self.root, PREDICTIONS_DIR, self._next_name(partition(now)))
        write_new_file(uri, encode_lines(batch))
        self.files.append(uri)

    def _append_local(self, batch: list[dict[str, Any]]) -> None:
        now_partition = partition(datetime.now(timezone.utc))
        if self._file is None or self._file_partition != now_partition or self._file_records >= self.rotate_records:
            self._close_file()
            path = Path(self.root, PREDICTIONS_DIR, self._next_name(now_partition))
            path.parent.mkdir(parents=True, exist_ok=True)
            self._file = open(path, "xb")  # noqa: SIM115 - held open across flushes; "x": never reuse a file
            self._file_partition, self._file_records = now_partition, 0
            self.files.append(str(path))
        self._file.write(encode_lines(batch))
        self._file.flush()  # to the OS: readable by `sentinel monitor`, survives a process crash (not a power cut)
        self._file_records += len(batch)

    def _close_file(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None

    def close(self) -> None:
        """Stop the background thread, write what is buffered and close the current file."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=max(5.0, self.flush_interval_s * 2))
        try:
            self.flush()
        finally:
            with self._write_lock:
                self._close_file()


# --- reading -------------------------------------------------------------------------------------------------


@dataclass
class LogRead:
    """Records read from a log root, with what was skipped and why."""

    records: list[dict[str, Any]] = field(default_factory=list)
    files: int = 0
    skipped: Counter[str] = field(default_factory=Counter)
    examples: dict[str, str] = field(default_factory=dict)  # one example location per skip reason

    def skip(self, reason: str, where: str) -> None:
        self.skipped[reason] += 1
        self.examples.setdefault(reason, where)

    def summary(self) -> dict[str, Any]:
        return {
            "files": self.files,
            "records": len(self.records),
            "skipped": dict(self.skipped),
            "skipped_examples": self.examples,
        }


def list_log_files(root: str, subdir: str) -> list[str]:
    """Every ``.jsonl`` file under ``<root>/<subdir>`` (sorted, so partitions come in time order)."""
    base = storage.join(str(root).rstrip("/"), subdir)
    if storage.is_gcs(base):
        bucket, prefix = storage.parse_gs_uri(base)
        try:
            blobs = storage.gcs_client().list_blobs(bucket, prefix=prefix.rstrip("/") + "/")
            names = [b.name for b in blobs if b.name.endswith(LOG_FILE_SUFFIX)]
        except Exception as exc:
            raise StorageError(f"cannot list {base}: {type(exc).__name__}: {exc}") from exc
        return sorted(f"gs://{bucket}/{n}" for n in names)
    path = Path(base)
    if not path.is_dir():
        return []
    return sorted(str(p) for p in path.rglob(f"*{LOG_FILE_SUFFIX}") if not p.name.startswith("."))


def _iter_lines(data: bytes) -> Iterator[tuple[int, bytes, bool]]:
    """(line number, line, complete) for each line; the last one is incomplete when there is no final newline."""
    lines = data.split(b"\n")
    last = len(lines) - 1
    for number, line in enumerate(lines, start=1):
        if number - 1 == last:
            if line.strip():
                yield number, line, False
            return
        yield number, line, True


def parse_log_file(uri: str, data: bytes, schema: str, result: LogRead) -> None:
    """Parse one file's lines into ``result`` (valid records appended, the rest counted)."""
    result.files += 1
    if not data.strip():
        result.skip("empty_file", uri)
        return
    for number, line, complete in _iter_lines(data):
        if not line.strip():
            continue
        where = f"{uri}:{number}"
        try:
            record = orjson.loads(line)
        except orjson.JSONDecodeError:
            result.skip("invalid_json" if complete else "truncated_line", where)
            continue
        found = record.get("schema") if isinstance(record, dict) else None
        if found != schema:
            result.skip("other_schema", f"{where} (schema {found!r})")
            continue
        problem = record_problem(record) if schema == PREDICTION_SCHEMA else _feedback_problem(record)
        if problem:
            result.skip("invalid_record", f"{where}: {problem}")
            continue
        result.records.append(record)


def _feedback_problem(record: dict[str, Any]) -> str | None:
    for name in ("id", "label", "ts"):
        if not isinstance(record.get(name), str) or not record[name]:
            return f"field {name!r} is {record.get(name)!r}, expected a non-empty string"
    return None


def _read(uri: str) -> bytes:
    try:
        return storage.read_bytes(uri)
    except StorageError:
        raise
    except OSError as exc:
        raise StorageError(f"cannot read {uri}: {exc}") from exc


def read_logs(root: str, *, last: int | None = None, since: datetime | None = None) -> LogRead:
    """Valid prediction records under ``root`` in time order: the ``last`` N (all when None), not before ``since``.

    A root without any log file raises :class:`DataError` naming it (an empty window must not pass for "no drift").
    """
    files = list_log_files(root, PREDICTIONS_DIR)
    if not files:
        raise DataError(
            f"no prediction logs under {root}: expected {PREDICTIONS_DIR}/dt=YYYY-MM-DD/hour=HH/*{LOG_FILE_SUFFIX} "
            "(written by `sentinel serve --log-dir` or the logger sink)"
        )
    result = LogRead()
    for uri in files:
        parse_log_file(uri, _read(uri), PREDICTION_SCHEMA, result)
    records = result.records
    if since is not None:
        records = [r for r in records if (t := parse_ts(r["ts"])) is not None and t >= since]
    records.sort(key=lambda r: r["ts"])
    if last is not None:
        records = records[-last:]
    result.records = records
    return result


def read_feedback(root: str) -> LogRead:
    """Every reviewer label under ``<root>/feedback`` (oldest first; later labels of one id win)."""
    result = LogRead()
    for uri in list_log_files(root, FEEDBACK_DIR):
        parse_log_file(uri, _read(uri), FEEDBACK_SCHEMA, result)
    result.records.sort(key=lambda r: r["ts"])
    return result


def wait_for(predicate: Callable[[], bool], timeout: float, interval: float = 0.05) -> bool:
    """Poll ``predicate`` until true or ``timeout`` seconds pass (tests and the sink's shutdown)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return predicate()
