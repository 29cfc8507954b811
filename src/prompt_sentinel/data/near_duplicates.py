"""Near-duplicate grouping: prompts that are variants of one another (one DAN template with a changed name, one
injection with a different lead-in sentence) must land in the same split and the same cross-validation fold.

Exact duplicates are not enough: with only exact grouping, a validation split full of near-copies of training
prompts scores far above the test set, and everything tuned on it (decision costs, the best checkpoint, the
champion) is tuned for an easier problem than the one users bring.

Two texts are near-duplicates when the Jaccard similarity of their word ``n``-gram sets ("shingles") is at
least ``threshold``; groups are the transitive closure (union-find). Candidate pairs come from bottom-k sketches
of the hashed shingles (shared sketch values, and neighbours in sorted-sketch order), and every candidate is
verified with the exact Jaccard, so there are no false merges; a pair can be missed only when two texts share
little of their sketch, i.e. are barely above the threshold, and a transitive chain usually joins them anyway.
Hashing is blake2b, so groups do not depend on ``PYTHONHASHSEED``.
"""

from __future__ import annotations

import hashlib
import re
from collections import Counter, defaultdict
from collections.abc import Iterator, Sequence

from prompt_sentinel.text import dedup_key

__all__ = ["near_duplicate_groups", "near_duplicate_pairs", "word_shingles"]

_WORD = re.compile(r"\w+", re.UNICODE)


def word_shingles(text: str, n: int = 5) -> frozenset[int]:
    """Hashed word ``n``-grams of the dedup-normalized text; a text shorter than ``n`` words is one shingle."""
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    words = _WORD.findall(dedup_key(text))
    if not words:
        return frozenset()
    grams = [" ".join(words)] if len(words) < n else [" ".join(words[i : i + n]) for i in range(len(words) - n + 1)]
    return frozenset(int.from_bytes(hashlib.blake2b(g.encode("utf-8"), digest_size=8).digest(), "big") for g in grams)


def _check_parameters(threshold: float, n: int, sketch_size: int) -> None:
    if not 0 < threshold <= 1:
        raise ValueError(f"threshold must be in (0, 1], got {threshold}")
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    if sketch_size < 1:
        raise ValueError(f"sketch_size must be >= 1, got {sketch_size}")


def near_duplicate_pairs(
    texts: Sequence[str],
    threshold: float = 0.6,
    n: int = 5,
    sketch_size: int = 24,
    min_shared: int = 2,
    max_bucket: int = 200,
    window: int = 8,
) -> Iterator[tuple[int, int, float]]:
    """``(i, j, jaccard)`` for every verified pair ``i < j`` with word-``n``-gram Jaccard >= ``threshold``.

    Candidates: texts whose sketches share at least ``min_shared`` values, counted over sketch values held by at
    most ``max_bucket`` texts; plus each text's ``window`` neighbours in the order of sorted sketches, where
    near-duplicates sit side by side (their smallest shingle hashes coincide). Skipping the crowded values keeps
    the work linear when thousands of prompts share one template's shingles without being near-duplicates
    (all pairs of a 6,000-prompt, 3-template set took 27 s; 100k would take hours).
    """
    _check_parameters(threshold, n, sketch_size)
    shingles = [word_shingles(t, n) for t in texts]
    sketches = [sorted(s)[:sketch_size] for s in shingles]
    by_value: dict[int, list[int]] = defaultdict(list)
    for i, sketch in enumerate(sketches):
        for value in sketch:
            by_value[value].append(i)
    shared: Counter[tuple[int, int]] = Counter()
    for ids in by_value.values():
        if len(ids) > max_bucket:
            continue
        for a in range(len(ids)):
            for b in range(a + 1, len(ids)):
                shared[(ids[a], ids[b])] += 1
    candidates = {
        pair
        for pair, count in shared.items()
        if count >= min(min_shared, len(sketches[pair[0]]), len(sketches[pair[1]]))
    }
    order = sorted((i for i in range(len(texts)) if sketches[i]), key=lambda i: (sketches[i], i))
    for pos, i in enumerate(order):
        for j in order[pos + 1 : pos + 1 + window]:
            candidates.add((min(i, j), max(i, j)))
    for i, j in sorted(candidates):
        a, b = shingles[i], shingles[j]
        if not a or not b:
            continue
        jaccard = len(a & b) / len(a | b)
        if jaccard >= threshold:
            yield i, j, jaccard


class _DisjointSets:
    def __init__(self, size: int) -> None:
        self.parent = list(range(size))

    def find(self, x: int) -> int:
        while self.parent[x] != x:
            self.parent[x] = self.parent[self.parent[x]]
            x = self.parent[x]
        return x

    def union(self, a: int, b: int) -> None:
        a, b = self.find(a), self.find(b)
        if a != b:
            self.parent[max(a, b)] = min(a, b)


def near_duplicate_groups(texts: Sequence[str], threshold: float = 0.6, n: int = 5) -> list[int]:
    """A group id per text: the smallest index in its group of near-duplicates (exact duplicates included).

    ``threshold=1.0`` groups only texts with identical shingle sets; texts with no words at all (emoji only)
    group by their exact dedup key.
    """
    _check_parameters(threshold, n, 1)
    sets = _DisjointSets(len(texts))
    first_with_key: dict[str, int] = {}
    for i, text in enumerate(texts):
        sets.union(first_with_key.setdefault(dedup_key(text), i), i)
    for i, j, _ in near_duplicate_pairs(texts, threshold, n):
        sets.union(i, j)
    return [sets.find(i) for i in range(len(texts))]
