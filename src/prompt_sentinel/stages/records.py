"""What a run leaves for people and for ``sentinel run``: published results, per-stage failures, the run status.

* :func:`publish` copies a human-readable result (selection, report, push result…) to ``<results_uri>/<name>``;
* :func:`stage_failures` wraps a stage body: a failure is recorded as ``<results_uri>/failures/<stage>.json``
  (stage, error type, the library's own message) before it propagates, so ``sentinel run`` and the exit handler
  can say *which* stage failed and *why*, not just "task failed";
* :func:`read_failures` / :func:`clear_failures` and :func:`record_run_status` are the exit handler's side.
"""

from __future__ import annotations

import json
import math
import re
import shutil
import sys
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from prompt_sentinel import storage
from prompt_sentinel.errors import SentinelError
from prompt_sentinel.run_layout import FAILURES_DIR, RUN_STATUS

FAILURE_MARKER = "sentinel-stage-failure:"
_SAFE = re.compile(r"[^A-Za-z0-9_.-]+")


def safe_name(text: str) -> str:
    """A file-name-safe version of a stage name (``train[logreg]`` → ``train_logreg_``)."""
    return _SAFE.sub("_", text).strip("_") or "stage"


def publish(results_uri: str, relpath: str, payload: str | bytes) -> str | None:
    """Write ``payload`` to ``<results_uri>/<relpath>`` (no-op when ``results_uri`` is empty)."""
    if not results_uri:
        return None
    target = storage.join(results_uri, relpath)
    storage.write_bytes(target, payload.encode("utf-8") if isinstance(payload, str) else payload)
    return target


def failure_record(stage_name: str, exc: BaseException) -> dict[str, Any]:
    return {
        "stage": stage_name,
        "error_type": type(exc).__name__,
        "message": str(exc) or repr(exc),
        "user_error": isinstance(exc, SentinelError),
    }


@contextmanager
def stage_failures(stage_name: str, results_uri: str = "") -> Iterator[None]:
    """Run a stage body; on failure record what went wrong (see the module docstring) and re-raise."""
    try:
        yield
    except BaseException as exc:
        record = failure_record(stage_name, exc)
        # One greppable line in the pod log, whatever else the traceback says.
        print(f"{FAILURE_MARKER} {json.dumps(record)}", file=sys.stderr, flush=True)
        if results_uri:
            try:
                publish(results_uri, f"{FAILURES_DIR}/{safe_name(stage_name)}.json", json.dumps(record, indent=2))
            except Exception as write_exc:  # never hide the real error behind a reporting problem
                print(f"could not record the failure under {results_uri}: {write_exc}", file=sys.stderr)
        raise


def read_failures(results_uri: str) -> list[dict[str, Any]]:
    """Every failure record under ``<results_uri>/failures`` (local directory or gs:// prefix)."""
    if not results_uri:
        return []
    if storage.is_gcs(results_uri):
        bucket, prefix = storage.parse_gs_uri(storage.join(results_uri, FAILURES_DIR))
        blobs = storage.gcs_client().list_blobs(bucket, prefix=prefix.rstrip("/") + "/")
        uris = sorted(f"gs://{bucket}/{b.name}" for b in blobs if b.name.endswith(".json"))
    else:
        root = Path(results_uri, FAILURES_DIR)
        uris = [str(p) for p in sorted(root.glob("*.json"))] if root.is_dir() else []
    records = []
    for uri in uris:
        try:
            records.append(json.loads(storage.read_text(uri)))
        except (SentinelError, json.JSONDecodeError):
            continue  # a half-written record must not hide the others
    return records


def clear_failures(results_uri: str) -> None:
    """Remove ``<results_uri>/failures`` once the exit handler has folded it into ``run_status.json``, so the
    next run sharing ``results_uri`` does not report this run's failures as its own."""
    if not results_uri:
        return
    if storage.is_gcs(results_uri):
        bucket, prefix = storage.parse_gs_uri(storage.join(results_uri, FAILURES_DIR))
        for blob in storage.gcs_client().list_blobs(bucket, prefix=prefix.rstrip("/") + "/"):
            blob.delete()
        return
    shutil.rmtree(Path(results_uri, FAILURES_DIR), ignore_errors=True)


def record_run_status(results_uri: str, final_status: dict[str, Any]) -> dict[str, Any]:
    """The exit handler's stage: KFP's final state plus each failed stage's own record, published as
    ``run_status.json``; never raises (a broken status write must not mask the real error)."""
    record = {**final_status, "failures": []}
    try:
        record["failures"] = read_failures(results_uri)
        publish(results_uri, RUN_STATUS, json.dumps(record, indent=2))
        clear_failures(results_uri)
    except Exception as exc:
        print(f"could not write the run status under {results_uri!r}: {exc}", file=sys.stderr)
    return record


def status_markdown(record: dict[str, Any]) -> str:
    lines = [f"# Run {record.get('state')}", ""]
    for failure in record.get("failures") or []:
        lines.append(f"- **{failure.get('stage')}** failed: {failure.get('error_type')}: {failure.get('message')}")
    if record.get("error_message") and not record.get("failures"):
        lines.append(f"- {record['error_message']}")
    return "\n".join(lines) + "\n"


def finite_scalars(values: Mapping[str, Any], prefix: str = "") -> dict[str, float]:
    """The finite numeric (and bool) entries of ``values``, flattened one level for dict values."""
    out: dict[str, float] = {}
    for key, value in values.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping) and not prefix:
            out.update(finite_scalars(value, prefix=f"{name}."))
        elif isinstance(value, bool) or (isinstance(value, int | float) and math.isfinite(float(value))):
            out[name] = float(value)
    return out
