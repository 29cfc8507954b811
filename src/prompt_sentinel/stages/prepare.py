"""The ``prepare`` stage: validate the dataset (and the blind set), then split it.

Two steps, because the pipeline runs (and caches) them as two tasks — and one :func:`run` doing both for
``sentinel split``, through the very same functions, so the CLI and the pipeline cannot drift apart:

* :func:`validate` checks ``data_uri`` (and ``blind_uri``, whose texts must not leak into the dataset) and writes
  ``<out>/data/`` and ``<out>/blind/``, each with ``cleaned.csv`` and the validation report (Markdown, HTML, JSON).
  Error-level findings raise :class:`~prompt_sentinel.errors.DataValidationError` and write nothing.
* :func:`split` reads that directory, splits the cleaned rows (seeded, stratified, near-duplicate groups kept
  together), carries the blind set along unsplit, checks no text is in two sets (unless
  ``validation.cross_set_leak`` is ``off``) and writes ``train/validation/test[/blind].csv`` + ``split_report.json``.
"""

from __future__ import annotations

import json
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from prompt_sentinel import storage
from prompt_sentinel.config import SentinelConfig
from prompt_sentinel.data.loading import read_data_csv
from prompt_sentinel.data.split import assert_no_leak, frame_groups, split_dataset, write_splits
from prompt_sentinel.data.validation import ValidationReport, validate_dataset, write_validation_outputs
from prompt_sentinel.errors import DataValidationError
from prompt_sentinel.run_layout import (
    BLIND,
    CLEANED_DATA,
    DATASET_DIR,
    SPLIT_NAMES,
    VALIDATION_REPORT_JSON,
)


@dataclass
class ValidationOutcome:
    """The validation reports (``data`` and, with a blind set, ``blind``) of passing datasets."""

    reports: dict[str, ValidationReport]

    def markdown(self) -> str:
        return "\n\n".join(r.to_markdown() for r in self.reports.values())

    def html(self) -> str:
        return self.reports[DATASET_DIR].to_html()

    def metrics(self) -> dict[str, float]:
        values: dict[str, float] = {}
        for name, rep in self.reports.items():
            values[f"{name}.rows_read"] = rep.rows_read
            values[f"{name}.rows_clean"] = rep.rows_clean
            values[f"{name}.warnings"] = len(rep.warnings)
            for label, count in rep.class_counts.items():
                values[f"{name}.rows.{label}"] = count
        return values


@dataclass
class SplitOutcome:
    """``split_report.json`` and the sizes of the written sets."""

    report: dict[str, Any]
    rows: dict[str, int]

    def markdown(self, label_names: list[str]) -> str:
        lines = ["# Data split", "", f"seed {self.report['seed']}", ""]
        lines += ["| set | " + " | ".join(label_names) + " | total |", "|---|" + "---:|" * (len(label_names) + 1)]
        for name, counts in self.report["counts"].items():
            total = sum(counts.values())
            lines.append(f"| {name} | " + " | ".join(str(counts[n]) for n in label_names) + f" | {total} |")
        return "\n".join(lines) + "\n"


def validate(data_uri: str, blind_uri: str | None, cfg: SentinelConfig, out_dir: str | Path) -> ValidationOutcome:
    """Validate the dataset and the blind set; write their cleaned rows and reports under ``out_dir``."""
    reports: dict[str, ValidationReport] = {}
    if blind_uri:
        reports[BLIND] = validate_dataset(blind_uri, cfg)
    # Leaks into the blind set are checked against the whole dataset, i.e. against every split at once; as a
    # warning they drop the training-side row, never the blind one.
    reports[DATASET_DIR] = validate_dataset(data_uri, cfg, against={BLIND: blind_uri} if blind_uri else None)
    failed = [r for r in reports.values() if not r.ok]
    if failed:
        raise DataValidationError("\n".join(r.error_message() for r in failed), [f for r in failed for f in r.errors])
    for name, rep in reports.items():
        write_validation_outputs(rep, Path(out_dir) / name)
    return ValidationOutcome(reports)


def _validation_summary(report_uri: str) -> dict[str, Any]:
    """What ``split_report.json`` records of a validation report: the file, its rows and its warnings."""
    report = json.loads(storage.read_text(report_uri))
    keep = ("uri", "sha256", "rows_read", "rows_clean", "class_counts")
    warnings = [f for f in report.get("findings") or [] if f.get("severity") == "warning"]
    return {**{k: report.get(k) for k in keep}, "warnings": warnings}


def split(cleaned_dir: str | Path, cfg: SentinelConfig, out_dir: str | Path) -> SplitOutcome:
    """Split ``<cleaned_dir>/data/cleaned.csv`` per ``cfg.split`` and ``cfg.seed``; the blind set rides along."""
    root = Path(cleaned_dir)
    data = read_data_csv(str(root / DATASET_DIR / CLEANED_DATA))
    group_keys = frame_groups(data, cfg.split)  # once, for the split and its report
    sets: dict[str, pd.DataFrame] = dict(split_dataset(data, cfg, group_keys))
    blind_csv = root / BLIND / CLEANED_DATA
    if blind_csv.is_file():
        sets[BLIND] = read_data_csv(str(blind_csv))
    # An invariant of the above, checked so a regression cannot ship a leaky split. The blind set takes part
    # unless the user turned the leak check off.
    assert_no_leak(sets if cfg.validation.cross_set_leak != "off" else {s: sets[s] for s in SPLIT_NAMES})
    validation = {
        name: _validation_summary(str(root / name / VALIDATION_REPORT_JSON))
        for name in (DATASET_DIR, BLIND)
        if (root / name / VALIDATION_REPORT_JSON).is_file()
    }
    report = write_splits(
        sets,
        out_dir,
        cfg,
        group_keys,
        source={name: summary.get("uri") for name, summary in validation.items()},
        validation=validation,
    )
    return SplitOutcome(report, {name: len(frame) for name, frame in sets.items()})


def run(data_uri: str, blind_uri: str | None, cfg: SentinelConfig, out_dir: str | Path) -> SplitOutcome:
    """The whole stage (``sentinel split``): validate, then split into ``out_dir``; nothing written on failure."""
    with tempfile.TemporaryDirectory(prefix="sentinel-prepare-") as cleaned:
        validate(data_uri, blind_uri, cfg, cleaned)
        return split(cleaned, cfg, out_dir)
