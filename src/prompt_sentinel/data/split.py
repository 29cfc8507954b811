"""A seeded, stratified, group-aware train/validation/test split (run by :mod:`prompt_sentinel.stages.prepare`).

Near-duplicate texts form a group (:func:`prompt_sentinel.data.near_duplicates.near_duplicate_groups`: word
shingle Jaccard >= ``split.near_duplicate_jaccard``, exact duplicates included), joined with the rows sharing an
explicit ``group`` value (a template or scenario id of composed rows, ``data.group_column``), and a group always
lands in one split, so a model is never validated or tested on a near-copy or a template variant of a training
prompt. Groups are assigned class
by class: each class's groups are put in a seeded order (larger groups first, so they cannot overshoot a small
split late), and each goes to the split furthest below its target share for that class. The result depends on
the seed and the data, not on the row order.

An external blind set is never split: it is validated, checked for leaks against the whole dataset (hence
against every split) and written beside the splits as ``blind.csv``.
"""

from __future__ import annotations

import json
from collections import Counter, defaultdict
from collections.abc import Hashable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from prompt_sentinel import storage
from prompt_sentinel.checksums import sha256_bytes
from prompt_sentinel.config import SentinelConfig, SplitConfig
from prompt_sentinel.data.loading import (
    check_labelled_frame,
    frame_to_csv_bytes,
    group_key,
    read_data_csv,
    write_output_files,
)
from prompt_sentinel.data.near_duplicates import near_duplicate_groups
from prompt_sentinel.errors import DataError
from prompt_sentinel.run_layout import BLIND, SPLIT_NAMES, SPLIT_REPORT, split_file


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


def union_labels(size: int, *labelings: Sequence[Hashable]) -> list[int]:
    """Connected components of rows that share a label in any of ``labelings`` (one label per row each; a label
    of ``None`` or ``''`` joins nothing): a group id per row, the smallest row index of its component."""
    parent = list(range(size))

    def find(x: int) -> int:
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    for labels in labelings:
        if len(labels) != size:
            raise DataError(f"union_labels: {len(labels)} labels for {size} rows")
        first: dict[Hashable, int] = {}
        for i, label in enumerate(labels):
            if label is None or label == "":
                continue
            a, b = find(first.setdefault(label, i)), find(i)
            if a != b:
                parent[max(a, b)] = min(a, b)
    return [find(i) for i in range(size)]


def row_groups(texts: list[str], settings: SplitConfig, explicit: Sequence[str] | None = None) -> list[str]:
    """The group of each text under the split's grouping settings (splits, CV folds, out-of-source folds).

    Near-duplicate groups, joined with the rows sharing an ``explicit`` group value (the ``group`` column; ''
    for none), transitively: a template's variants and a near-copy of one of them are one group. A group is named
    by the smallest dedup key among its members, so the names, and hence the split, do not depend on the row
    order.
    """
    near = near_duplicate_groups(texts, settings.near_duplicate_jaccard, settings.shingle_words)
    ids = union_labels(len(texts), near, explicit) if explicit is not None else near
    names: dict[int, str] = {}
    for group, text in zip(ids, texts, strict=True):
        key = group_key(text)
        if group not in names or key < names[group]:
            names[group] = key
    return [names[group] for group in ids]


def frame_groups(df: pd.DataFrame, settings: SplitConfig) -> list[str]:
    """:func:`row_groups` of a canonical frame, with its ``group`` column when it has one."""
    explicit = df["group"].fillna("").astype(str).tolist() if "group" in df.columns else None
    return row_groups(df["text"].tolist(), settings, explicit)


def split_dataset(
    df: pd.DataFrame, cfg: SentinelConfig, group_keys: Sequence[str] | None = None
) -> dict[str, pd.DataFrame]:
    """Split a cleaned dataset into ``train``, ``validation`` and ``test`` (cfg.split ratios, cfg.seed).

    Every returned frame has the input's columns, rows in their original order and a fresh index; a split with
    ratio 0 comes back empty. ``group_keys`` (one per row, from :func:`row_groups`) saves recomputing the groups
    when the caller needs them too (the split report).
    """
    check_labelled_frame(df, cfg.labels, "split_dataset")
    if group_keys is not None and len(group_keys) != len(df):
        raise DataError(f"split_dataset: {len(group_keys)} group keys for {len(df)} rows")
    keys = list(group_keys) if group_keys is not None else frame_groups(df, cfg.split)
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
        parts = [f for n, f in sets.items() if n in SPLIT_NAMES]
        group_keys = frame_groups(pd.concat(parts, ignore_index=True), cfg.split) if parts else []
    group_sizes = Counter(group_keys)
    multi = [n for n in group_sizes.values() if n > 1]
    explicit = {
        g for n, f in sets.items() if n in SPLIT_NAMES and "group" in f.columns for g in f["group"].fillna("") if g
    }
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
            "explicit_groups": len(explicit),
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
    files = {split_file(name): frame_to_csv_bytes(frame) for name, frame in sets.items()}
    report = split_report(sets, cfg, group_keys, **extra)
    report["files"] = {
        name: {
            "file": split_file(name),
            "rows": len(frame),
            "sha256": sha256_bytes(files[split_file(name)]),
        }
        for name, frame in sets.items()
    }
    files[SPLIT_REPORT] = json.dumps(report, indent=2, ensure_ascii=False).encode("utf-8")
    # blind.csv of an earlier run with a blind set may be replaced by a run without one
    previous = {split_file(n) for n in (*SPLIT_NAMES, BLIND)}
    write_output_files(out_dir, files, replaceable=previous)
    return report


def read_split(path: str | Path, name: str | None = None) -> pd.DataFrame:
    """Read a split file (``text, label, id, source, group, row``); with ``name``, ``path`` is the split directory."""
    uri = storage.join(str(path), split_file(name)) if name else str(path)
    return read_data_csv(uri)
