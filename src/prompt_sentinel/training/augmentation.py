"""Training rows that generalize: augmented copies (:class:`~prompt_sentinel.config.AugmentationConfig`) and
length-stratified oversampling (:class:`~prompt_sentinel.config.LengthBalanceConfig`).

:func:`prepare_training_rows` is the one entry point. Trainers call it on the rows they fit on — each
cross-validation fold's training part and the final refit (classical), the training split (transformer) — and
never on validation, test, blind or held-out rows, which are scored as they are.

Everything is a seeded function of the text (sha256 of seed, kind and text): a row gets the same copy in every
fold and every run, so sentence embeddings of augmented texts are computed once and cached like the originals.

Label policy (also in the config's description):

==========================  ===============================  =================================================
copy                        made from                        label
==========================  ===============================  =================================================
obfuscated                  suspicious, malicious            malicious: an obfuscated harmful request is an
                                                             obfuscated attack (encodings, leetspeak,
                                                             homoglyphs, spaced letters)
surface (casing, noise)     every class                      kept
wrapped (document, code)    benign, malicious                kept: an injection inside a document is an
                                                             indirect injection; a benign request pasted with a
                                                             document stays benign
random-token suffix         suspicious                       malicious (an adversarial-suffix attack)
random-token suffix         benign                           kept (gibberish alone is no attack)
cropped window              long rows of every class         kept
==========================  ===============================  =================================================

Suspicious rows are not wrapped: whether a harmful request quoted inside a document is a request at all is a
policy question this module does not settle.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from prompt_sentinel.config import AugmentationConfig, LabelConfig, LengthBalanceConfig
from prompt_sentinel.text import normalize_text
from prompt_sentinel.transforms import transform_text

SURFACE = ("random_case", "whitespace_punctuation_noise")
WRAPPERS = ("document_wrap", "code_comment_wrap")


@dataclass
class RowPreparation:
    """What :func:`prepare_training_rows` did to one training part (JSON-able)."""

    rows_in: int
    rows_out: int
    augmented: dict[str, int] = field(default_factory=dict)  # copies per kind ("obfuscate:base64", "wrap:...")
    length_balanced: int = 0  # duplicated rows added by length balancing
    counts_in: dict[str, int] = field(default_factory=dict)
    counts_out: dict[str, int] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _unit(seed: int, kind: str, text: str) -> float:
    """A uniform number in [0, 1) that depends only on (seed, kind, text)."""
    digest = hashlib.sha256(f"{seed}\x00{kind}\x00{text}".encode("utf-8", "surrogatepass")).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def _pick(seed: int, kind: str, text: str, options: tuple[str, ...] | list[str]) -> str:
    return options[int(_unit(seed, kind + ":pick", text) * len(options))]


def augmented_copies(
    text: str, label: int, cfg: AugmentationConfig, labels: LabelConfig, seed: int
) -> list[tuple[str, int, str]]:
    """The augmented copies of one normalized training row: ``(text, label, kind)`` each, normalized."""
    roles = labels.roles
    benign, suspicious, malicious = roles.benign, roles.suspicious, roles.malicious
    harmful = {r for r in (suspicious, malicious) if r is not None}
    out: list[tuple[str, int, str]] = []

    def add(kind: str, name: str, new_label: int) -> None:
        copy = normalize_text(transform_text(text, name, seed))
        if copy and copy != text:
            out.append((copy, new_label, f"{kind}:{name}"))

    if malicious is not None and label in harmful and _unit(seed, "obfuscate", text) < cfg.obfuscate_share:
        add("obfuscate", _pick(seed, "obfuscate", text, cfg.obfuscations), malicious)
    if _unit(seed, "surface", text) < cfg.surface_share:
        add("surface", _pick(seed, "surface", text, SURFACE), label)
    if label in {benign, malicious} - {None} and _unit(seed, "wrap", text) < cfg.wrap_share:
        add("wrap", _pick(seed, "wrap", text, WRAPPERS), label)
    if _unit(seed, "suffix", text) < cfg.suffix_share:
        if label == suspicious and malicious is not None:
            add("suffix", "random_suffix", malicious)
        elif label == benign:
            add("suffix", "random_suffix", label)
    if len(text) >= cfg.crop_min_chars and _unit(seed, "crop", text) < cfg.crop_share:
        add("crop", "crop", label)
    return out


def length_bucket(length: int, edges: list[int] | tuple[int, ...]) -> int:
    """Index of the bucket ``length`` falls in: 0 below ``edges[0]``, ``len(edges)`` at or above the last edge."""
    return int(np.searchsorted(np.asarray(edges), length, side="right"))


def length_balanced_indices(texts: list[str], y: np.ndarray, cfg: LengthBalanceConfig, seed: int) -> np.ndarray:
    """Row indices after oversampling: every row once, plus seeded duplicates that bring each class of a length
    bucket towards the bucket's largest class (at most ``max_factor`` times its own size)."""
    buckets = np.array([length_bucket(len(t), cfg.bucket_edges) for t in texts], dtype=np.int64)
    rng = np.random.default_rng(seed)
    extra: list[np.ndarray] = []
    for bucket in np.unique(buckets):
        in_bucket = buckets == bucket
        counts = Counter(y[in_bucket].tolist())
        target = max(counts.values())
        for cls in sorted(counts):
            members = np.flatnonzero(in_bucket & (y == cls))
            want = min(target, int(cfg.max_factor * len(members))) - len(members)
            if want > 0:
                extra.append(rng.choice(members, size=want, replace=True))
    return np.concatenate([np.arange(len(texts)), *extra]) if extra else np.arange(len(texts))


def prepare_training_rows(
    texts: list[str],
    y: np.ndarray,
    augmentation: AugmentationConfig,
    length_balance: LengthBalanceConfig,
    labels: LabelConfig,
    seed: int,
) -> tuple[list[str], np.ndarray, RowPreparation]:
    """The rows to fit on: ``texts`` (normalized) and ``y`` with the augmented copies appended, then length-
    balanced. Returns the input unchanged (and a report saying so) when both switches are off."""
    y = np.asarray(y, dtype=np.int64)

    def counts(labels_: np.ndarray) -> dict[str, int]:
        found = np.bincount(labels_, minlength=labels.num_classes)
        return {name: int(found[i]) for i, name in enumerate(labels.names)}

    report = RowPreparation(rows_in=len(texts), rows_out=len(texts), counts_in=counts(y))
    out_texts, out_y = list(texts), y
    if augmentation.enabled:
        seen = set(texts)
        new_texts: list[str] = []
        new_labels: list[int] = []
        kinds: Counter[str] = Counter()
        for text, label in zip(texts, y.tolist(), strict=True):
            for copy, copy_label, kind in augmented_copies(text, label, augmentation, labels, seed):
                if copy in seen:  # a copy equal to a real row (or another copy) would only double it
                    continue
                seen.add(copy)
                new_texts.append(copy)
                new_labels.append(copy_label)
                kinds[kind] += 1
        out_texts = out_texts + new_texts
        out_y = np.concatenate([y, np.asarray(new_labels, dtype=np.int64)])
        report.augmented = dict(sorted(kinds.items()))
    if length_balance.enabled:
        order = length_balanced_indices(out_texts, out_y, length_balance, seed)
        report.length_balanced = int(len(order) - len(out_texts))
        out_texts = [out_texts[i] for i in order]
        out_y = out_y[order]
    report.rows_out = len(out_texts)
    report.counts_out = counts(out_y)
    return out_texts, out_y, report
