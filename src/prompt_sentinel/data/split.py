"""The ``split`` stage: a seeded, stratified, group-aware train/validation/test split.

Near-duplicate texts form a group (:func:`prompt_sentinel.data.near_duplicates.near_duplicate_groups`: word
shingle Jaccard >= ``split.near_duplicate_jaccard``, exact duplicates included), and a group always lands in one
split, so a model is never validated or tested on a near-copy of a training prompt. Groups are assigned class
by class: each class's groups are put in a seeded order (larger groups first, so they cannot overshoot a small
split late), and each goes to the split furthest below its target share for that class. The result depends on
the seed and the data, not on the row order.

An external blind set is never split: it is validated, checked for leaks against the whole dataset (hence
against every split) and written beside the splits as ``blind.csv``.
"""

from __future__ import annotations

import json
from collections import Counter, defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from prompt_sentinel import storage
from prompt_sentinel.checksums import sha256_bytes
from prompt_sentinel.config import SentinelConfig
from prompt_sentinel.data.loading import (
    check_labelled_frame,
    frame_to_csv_bytes,
    group_key,
    read_data_csv,
    write_output_files,
)
from prompt_sentinel.data.near_duplicates import near_duplicate_groups
from prompt_sentinel.data.validation import ValidationReport, validate_dataset
from prompt_sentinel.errors import DataError, DataValidationError

SPLIT_NAMES = ("train", "validation", "test")
BLIND = "blind"
SPLIT_REPORT = "split_report.json"
SPLIT_SUFFIX = ".csv"


def assign_groups(keys: list[str], labels: list[int], ratios: dict[str, float], seed: int) -> dict[str, str]:
    """Map each group key to a split name, stratified by the group's (majority) label.

    Pure function of its inputs (order-independent): the same keys, labels, ratios and seed give the same map.
    """
    label_votes: dict[str, Counter[int]] = defaultdict(Counter)
    for key, label in zip(keys, labels, strict=True):
        label_votes[key][label] += 1
    sizes = {k: sum(v.values()) for k, v in label_votes.items()}
    # A group's class: its most common label, ties to the lowest id (groups with mixed labels only exist
    # when conflicting_labels is off).
    group_label = {k: min(v.items(), key=lambda kv: (-kv[1], kv[0]))[0] for k, v in label_votes.items()}
    by_class: dict[int, list[str]] = defaultdict(list)
    for key in sorted(group_label):
        by_class[group_label[key]].append(key)
    active = [s for s in SPLIT_NAMES if ratios.get(s, 0) > 0]
    rng = np.random.default_rng(seed)
    assignment: dict[str, str] = {}
    for cls in sorted(by_class):
        groups = by_class[cls]
        order = rng.permutation(len(groups))
        shuffled = [groups[i] for i in order]
        shuffled.sort(key=lambda k: -sizes[k])  # stable: seeded order among equal sizes
        total = sum(sizes[k] for k in shuffled)
        target = {s: total * ratios[s] for s in active}
        filled = dict.fromkeys(active, 0)
        for key in shuffled:
            # furthest below target (relative, then absolute), ties in SPLIT_NAMES order
            best = max(
                active,
                key=lambda s: (
                    (target[s] - filled[s]) / target[s],
                    target[s] - filled[s],
                    -SPLIT_NAMES.index(s),
                ),
            )
            assignment[key] = best
            filled[best] += sizes[key]
    return assignment


def row_groups(texts: list[str], cfg: SentinelConfig) -> list[str]:
    """The near-duplicate group of each text under ``cfg.split``'s grouping settings (splits and CV folds).

    A group is named by the smallest dedup key among its members, so the names, and hence the split, do not
    depend on the row order.
    """
    ids = near_duplicate_groups(texts, cfg.split.near_duplicate_jaccard, cfg.split.shingle_words)
    names: dict[int, str] = {}
    for group, text in zip(ids, texts, strict=True):
        key = group_key(text)
        if group not in names or key < names[group]:
            names[group] = key
    return [names[group] for group in ids]


def split_dataset(
    df: pd.DataFrame, cfg: SentinelConfig, group_keys: Sequence[str] | None = None
) -> dict[str, pd.DataFrame]:
    """Split a cleaned dataset into ``train``, ``validation`` and ``test`` (cfg.split ratios, cfg.seed).

    Every returned frame has the input's columns, rows in their original order and a fresh index; a split with
    ratio 0 comes back empty. ``group_keys`` (one per row, from :func:`row_groups`) saves recomputing the groups
    when the caller needs them too (the split report).
    """
    check_labelled_frame(df, cfg, "split_dataset")
    if group_keys is not None and len(group_keys) != len(df):
        raise DataError(f"split_dataset: {len(group_keys)} group keys for {len(df)} rows")
    keys = list(group_keys) if group_keys is not None else row_groups(df["text"].tolist(), cfg)
    labels = [int(x) for x in df["label"]]
    ratios = {s: float(getattr(cfg.split, s)) for s in SPLIT_NAMES}
    assignment = assign_groups(keys, labels, ratios, cfg.seed)
    where = np.array([assignment[k] for k in keys])
    out = {}
    for name in SPLIT_NAMES:
        part = df.loc[where == name].reset_index(drop=True)
        if "label" in part:
            part["label"] = part["label"].astype("int64")
        out[name] = part
    return out


def assert_no_leak(sets: dict[str, pd.DataFrame]) -> None:
    """Raise :class:`DataError` when a normalized text appears in more than one of ``sets``."""
    owner: dict[str, str] = {}
    for name, frame in sets.items():
        for text in frame["text"]:
            key = group_key(text)
            first = owner.setdefault(key, name)
            if first != name:
                raise DataError(f"text {text[:60]!r} appears in both the {first} and the {name} set")


def split_counts(sets: dict[str, pd.DataFrame], cfg: SentinelConfig) -> dict[str, dict[str, int]]:
    """Rows per label name in each set (every configured label listed)."""
    out = {}
    for name, frame in sets.items():
        counts = Counter(int(x) for x in frame["label"])
        out[name] = {label: counts.get(i, 0) for i, label in enumerate(cfg.labels.names)}
    return out


def split_report(
    sets: dict[str, pd.DataFrame], cfg: SentinelConfig, group_keys: Sequence[str] | None = None, **extra: Any
) -> dict[str, Any]:
    """The ``split_report.json`` content: counts per class per split, ratios, seed, group statistics.

    ``group_keys`` are the split rows' near-duplicate groups when the caller already has them (any row order).
    """
    counts = split_counts(sets, cfg)
    if group_keys is None:
        group_keys = row_groups([t for n, f in sets.items() if n in SPLIT_NAMES for t in f["text"]], cfg)
    group_sizes = Counter(group_keys)
    multi = [n for n in group_sizes.values() if n > 1]
    return {
        "seed": cfg.seed,
        "ratios": {s: getattr(cfg.split, s) for s in SPLIT_NAMES},
        "label_names": list(cfg.labels.names),
        "counts": counts,
        "totals": {name: int(sum(c.values())) for name, c in counts.items()},
        "proportions": {
            name: {label: (n / max(sum(c.values()), 1)) for label, n in c.items()} for name, c in counts.items()
        },
        "groups": {
            "near_duplicate_jaccard": cfg.split.near_duplicate_jaccard,
            "shingle_words": cfg.split.shingle_words,
            "total": len(group_sizes),
            "near_duplicate_groups": len(multi),
            "rows_in_near_duplicate_groups": int(sum(multi)),
        },
        **extra,
    }


def write_splits(
    sets: dict[str, pd.DataFrame],
    out_dir: str | Path,
    cfg: SentinelConfig,
    group_keys: Sequence[str] | None = None,
    **extra: Any,
) -> dict[str, Any]:
    """Write ``<name>.csv`` for each set plus ``split_report.json`` (last) into ``out_dir``, atomically.

    Returns the report, which also records each file's rows and sha256.
    """
    files = {f"{name}{SPLIT_SUFFIX}": frame_to_csv_bytes(frame) for name, frame in sets.items()}
    report = split_report(sets, cfg, group_keys, **extra)
    report["files"] = {
        name: {
            "file": f"{name}{SPLIT_SUFFIX}",
            "rows": len(frame),
            "sha256": sha256_bytes(files[f"{name}{SPLIT_SUFFIX}"]),
        }
        for name, frame in sets.items()
    }
    files[SPLIT_REPORT] = json.dumps(report, indent=2, ensure_ascii=False).encode("utf-8")
    # blind.csv of an earlier run with a blind set may be replaced by a run without one
    previous = {f"{n}{SPLIT_SUFFIX}" for n in (*SPLIT_NAMES, BLIND)}
    write_output_files(out_dir, files, replaceable=previous)
    return report


def read_split(path: str | Path, name: str | None = None) -> pd.DataFrame:
    """Read a split file (``text, label, id, source, row``); with ``name``, ``path`` is the split directory."""
    uri = storage.join(str(path), f"{name}{SPLIT_SUFFIX}") if name else str(path)
    return read_data_csv(uri)


def _validation_summary(report: ValidationReport) -> dict[str, Any]:
    return {
        "uri": report.uri,
        "sha256": report.sha256,
        "rows_read": report.rows_read,
        "rows_clean": report.rows_clean,
        "class_counts": report.class_counts,
        "warnings": [f.to_dict() for f in report.warnings],
    }


def run_split(data_uri: str, cfg: SentinelConfig, out_dir: str | Path, blind_uri: str | None = None) -> dict[str, Any]:
    """The whole stage: validate ``data_uri`` (and ``blind_uri``), split, check for leaks, write everything.

    Raises :class:`DataValidationError` (nothing written) when either dataset fails validation.
    """
    reports = {}
    if blind_uri:
        reports[BLIND] = validate_dataset(blind_uri, cfg)
    # Leaks into the blind set are checked against the whole dataset, i.e. against every split at once;
    # as a warning they drop the training-side row, never the blind one.
    reports["data"] = validate_dataset(data_uri, cfg, against={BLIND: blind_uri} if blind_uri else None)
    failed = [r for r in reports.values() if not r.ok]
    if failed:
        message = "\n".join(r.error_message() for r in failed)
        raise DataValidationError(message, [f for r in failed for f in r.errors])
    cleaned = reports["data"].cleaned
    group_keys = row_groups(cleaned["text"].tolist(), cfg)  # once, for the split and its report
    sets: dict[str, pd.DataFrame] = dict(split_dataset(cleaned, cfg, group_keys))
    if blind_uri:
        sets[BLIND] = reports[BLIND].cleaned
    # An invariant of the above, checked so a regression cannot ship a leaky split. The blind set takes part
    # unless the user turned the leak check off.
    assert_no_leak(sets if cfg.validation.cross_set_leak != "off" else {s: sets[s] for s in SPLIT_NAMES})
    return write_splits(
        sets,
        out_dir,
        cfg,
        group_keys,
        source={"data": data_uri, BLIND: blind_uri},
        validation={name: _validation_summary(r) for name, r in reports.items()},
    )
