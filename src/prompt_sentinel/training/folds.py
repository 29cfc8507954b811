"""Groups for cross-validation folds: near-duplicate groups, optionally merged into source families.

The split stage keeps near-duplicate prompts (template variants) in one split; CV folds must too, or a held-out
fold holds near-copies of its training rows. With ``training.search.group_by_source_family`` whole source
families (the ``source`` column up to its first ``/``: ``deepset/injection`` → ``deepset``) stay in one fold as
well, so the CV score is measured on families the fold's model never saw — the out-of-source question the
product is judged by. A near-duplicate group spanning two families joins them (connected components), so no
group is ever cut.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence

import numpy as np

from prompt_sentinel.config import LabelConfig
from prompt_sentinel.errors import TrainingError


def source_family(source: str) -> str:
    """``deepset/injection`` → ``deepset``; empty for a missing source."""
    return str(source or "").strip().split("/", 1)[0]


def merge_source_families(groups: Sequence[str], sources: Sequence[str]) -> list[str]:
    """Each row's group after joining near-duplicate groups and source families into connected components.

    Rows without a source keep their near-duplicate group. The component is named by its smallest member key, so
    names do not depend on row order.
    """
    if len(groups) != len(sources):
        raise ValueError(f"{len(groups)} groups for {len(sources)} sources")
    parent: dict[str, str] = {}

    def find(key: str) -> str:
        parent.setdefault(key, key)
        while parent[key] != key:
            parent[key] = parent[parent[key]]
            key = parent[key]
        return key

    def union(a: str, b: str) -> None:
        ra, rb = find(a), find(b)
        if ra != rb:
            parent[max(ra, rb)] = min(ra, rb)

    for group, source in zip(groups, sources, strict=True):
        node = f"g:{group}"
        find(node)
        family = source_family(source)
        if family:
            union(node, f"f:{family}")
    return [find(f"g:{group}") for group in groups]


def check_groups_per_class(
    groups: Sequence[str], y: np.ndarray, labels: LabelConfig, folds: int, option: str, by_family: bool = False
) -> None:
    """Every class spread over at least ``folds`` groups, else :class:`TrainingError` naming the smallest class.

    A class held by fewer groups than folds leaves some fold without that class in its held-out part (or, when it
    is one group, without it in its training part): the per-fold scores would not be comparable.
    """
    per_class: dict[int, set[str]] = defaultdict(set)
    for group, label in zip(groups, np.asarray(y).tolist(), strict=True):
        per_class[int(label)].add(group)
    counts = {labels.names[c]: len(per_class.get(c, ())) for c in range(labels.num_classes)}
    smallest = min(counts, key=lambda name: counts[name])
    if counts[smallest] < folds:
        raise TrainingError(
            f"{option}={folds} is larger than the number of groups of class {smallest!r}: {counts[smallest]} "
            f"(groups per class: {counts}; near-duplicates{' and source families' if by_family else ''} "
            f"stay in one fold). Use at most {counts[smallest]} folds, add data, or raise split.near_duplicate_jaccard"
        )
