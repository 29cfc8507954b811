"""Data loading, validation and splitting (the ``validate`` and ``split`` stages).

Public API, used by the CLI and the pipeline components:

* :func:`load_dataset` — CSV / JSONL / Parquet, local or ``gs://`` → ``DataFrame[text, label, id, source, group, row]``
* :func:`validate_dataset` → :class:`ValidationReport`; :func:`write_validation_outputs`
* :func:`split_dataset`, :func:`write_splits`, :func:`read_split`

The prepare stage that runs them is :mod:`prompt_sentinel.stages.prepare`.
"""

from __future__ import annotations

from prompt_sentinel.data.loading import Finding, detect_format, load_dataset, parse_label, read_table
from prompt_sentinel.data.split import (
    SPLIT_NAMES,
    SPLIT_REPORT,
    assert_no_leak,
    read_split,
    split_counts,
    split_dataset,
    write_splits,
)
from prompt_sentinel.data.validation import ValidationReport, validate_dataset, write_validation_outputs

__all__ = [
    "SPLIT_NAMES",
    "SPLIT_REPORT",
    "Finding",
    "ValidationReport",
    "assert_no_leak",
    "detect_format",
    "load_dataset",
    "parse_label",
    "read_split",
    "read_table",
    "split_counts",
    "split_dataset",
    "validate_dataset",
    "write_splits",
    "write_validation_outputs",
]
