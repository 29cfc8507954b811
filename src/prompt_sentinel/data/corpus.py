"""Corpus assembly: a recipe of labelled public sources → one de-duplicated, decontaminated training corpus.

:func:`assemble_corpus` (the stage) reads every recipe entry (:mod:`prompt_sentinel.data.recipe`), composes the
derived ones with their builders (:mod:`prompt_sentinel.data.corpus_builders`), and then, in this order:

1. normalizes each text with :func:`prompt_sentinel.text.normalize_text` (what every model sees) and applies the
   entry's length limits;
2. drops exact duplicates (:func:`prompt_sentinel.text.dedup_key`; the first entry in recipe order keeps the text)
   and label conflicts (a text carrying two labels: every copy is dropped);
3. **decontaminates**: a row is dropped when it falls in one near-duplicate group (word-shingle Jaccard, the split's
   settings, exact duplicates included, joined transitively) with a text of an evaluation set passed in
   ``excludes``; builder payload pools are cleaned the same way before any row is composed;
4. applies each entry's caps (seeded samples) — after dedup and decontamination, so a cap is the number of rows
   the corpus really gets;
5. groups near-duplicates (:func:`prompt_sentinel.data.near_duplicates.near_duplicate_groups`, ``SplitConfig``
   settings) joined with the builders' template/payload/scenario groups into the ``group`` column.

It writes, all at once (a temp directory renamed into place; nothing on failure): the corpus CSV (``text, label,
source, group``; labels are class ids, loadable by :func:`prompt_sentinel.data.load_dataset`), ``corpus_stats.json``
and ``corpus_stats.md`` (rows per source and label at every step, groups, excluded sets, files with sha256),
``SOURCES.md`` (provenance and licence of every source, with the rows it contributed) and ``licenses/`` (the licence
files the recipe's provenance table names, copied from the root).

Bad recipes fail before anything is read when the recipe alone shows it (schema, builders, label classes), and
before anything is written otherwise (missing files, format mismatches, template fields no record has, unmapped
label values), with the entry and field named.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import os
import random
import re
import shutil
import tempfile
import time
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from prompt_sentinel import storage
from prompt_sentinel.config import LabelConfig, SplitConfig
from prompt_sentinel.data.corpus_builders import BUILDERS, BuildContext, Item
from prompt_sentinel.data.near_duplicates import near_duplicate_groups
from prompt_sentinel.data.recipe import SOURCE_TAG, ReadSpec, Recipe, SourceEntry, load_recipe
from prompt_sentinel.data.record_files import expand_paths, infer_format, read_records
from prompt_sentinel.data.templating import Template, as_text, resolve_field, top_field
from prompt_sentinel.errors import ConfigError, DataError, SentinelError
from prompt_sentinel.text import dedup_key, normalize_text

__all__ = [
    "CORPUS_COLUMNS",
    "SOURCES_MD",
    "STATS_JSON",
    "STATS_MD",
    "AssemblyResult",
    "BuiltCorpus",
    "EntryReport",
    "Exclusion",
    "SourceLabelCounts",
    "assemble_corpus",
    "build_corpus",
    "write_corpus",
]

CORPUS_COLUMNS = ("text", "label", "source", "group")
STATS_JSON = "corpus_stats.json"
STATS_MD = "corpus_stats.md"
SOURCES_MD = "SOURCES.md"
LICENSES_DIR = "licenses"
STEPS = ("after_filters", "duplicates", "conflicts", "decontaminated", "capped", "final")


# --- results -------------------------------------------------------------------------------------------------


@dataclass
class SourceLabelCounts:
    """Rows of one source tag and label at each step (``after_filters`` in, ``final`` out; the rest removed)."""

    source: str
    label: str
    after_filters: int = 0
    duplicates: int = 0
    conflicts: int = 0
    decontaminated: int = 0
    capped: int = 0
    final: int = 0

    @property
    def family(self) -> str:
        return self.source.split("/", 1)[0]


@dataclass
class EntryReport:
    """What one recipe entry read, dropped and produced."""

    index: int
    name: str
    builder: str | None
    files: list[dict[str, str]]  # {"path": shown path, "sha256": ...}
    loaded: int  # records read (or rows built)
    dropped: dict[str, int]  # reason -> rows removed before dedup (filters, label map null, length)
    after_filters: int
    final: int
    sources: list[str]
    provenance: list[str]
    licence: str | None
    notes: str | None
    builder_notes: dict[str, int] = field(default_factory=dict)


@dataclass
class AssemblyResult:
    """Counts of every step and the paths written by :func:`assemble_corpus`."""

    recipe: str
    out: str
    corpus_path: str
    stats_json_path: str
    stats_md_path: str
    sources_md_path: str
    rows: int
    per_label: dict[str, int]
    counts: list[SourceLabelCounts]
    entries: list[EntryReport]
    groups: dict[str, int]
    excludes: list[dict[str, Any]]
    seconds: float

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        for row, counts in zip(data["counts"], self.counts, strict=True):
            row["family"] = counts.family
        return data


# --- the in-memory corpus --------------------------------------------------------------------------------------


@dataclass
class _Row:
    text: str  # normalized
    label: int
    source: str
    group: str | None  # explicit group, namespaced by family
    entry: int


@dataclass
class BuiltCorpus:
    """The assembled rows and their statistics, before anything is written (:func:`build_corpus`)."""

    recipe: Recipe
    rows: list[dict[str, Any]]  # text, label, source, group
    counts: dict[tuple[str, int], SourceLabelCounts]
    entries: list[EntryReport]
    groups: dict[str, int]
    excludes: list[dict[str, Any]]
    labels: LabelConfig
    licence_files: list[tuple[str, str]]  # (uri, relative name under licenses/)
    seconds: float = 0.0


# --- decontamination ----------------------------------------------------------------------------------------------


class Exclusion:
    """Texts of evaluation sets that must not reach training, with the near-duplicate settings to compare by."""

    def __init__(self, texts: Sequence[str], split_cfg: SplitConfig) -> None:
        self.texts = [t for t in texts if normalize_text(t)]
        self.split_cfg = split_cfg

    @classmethod
    def from_files(cls, uris: Sequence[str], split_cfg: SplitConfig) -> tuple[Exclusion, list[dict[str, Any]]]:
        texts: list[str] = []
        report = []
        for uri in uris:
            fmt = infer_format(uri)
            if fmt not in ("csv", "jsonl", "json", "parquet"):
                raise DataError(
                    f"exclude file {uri}: cannot tell its format; use a .csv, .jsonl, .json or .parquet file"
                )
            records, digest = read_records(uri, fmt)
            if not any("text" in r for r in records):
                keys = sorted({k for r in records[:50] for k in r})
                raise DataError(f"exclude file {uri}: no 'text' column (it has {keys}); an evaluation set needs one")
            file_texts = [as_text(r.get("text")) for r in records]
            texts.extend(file_texts)
            report.append({"path": uri, "rows": len(file_texts), "sha256": digest})
        return cls(texts, split_cfg), report

    def contaminated(self, texts: Sequence[str]) -> list[bool]:
        """For each text: is it in one near-duplicate group with an excluded text (exact duplicates included)?"""
        if not self.texts or not texts:
            return [False] * len(texts)
        pooled = [*texts, *self.texts]
        ids = near_duplicate_groups(pooled, self.split_cfg.near_duplicate_jaccard, self.split_cfg.shingle_words)
        tainted = set(ids[len(texts) :])
        return [ids[i] in tainted for i in range(len(texts))]

    def clean_items(self, items: Sequence[Item]) -> list[Item]:
        mask = self.contaminated([normalize_text(i.text) for i in items])
        return [item for item, bad in zip(items, mask, strict=True) if not bad]


# --- reading entries ------------------------------------------------------------------------------------------


def _base_dir(spec: ReadSpec, root: str | None, where: str) -> str:
    if spec.base == "recipe":
        return str(spec._recipe_dir)
    if root is None:
        raise ConfigError(
            f"{where}: paths are relative to the recipe's root, but the recipe sets no root: and none was given"
        )
    return root


def _read_spec_records(
    spec: ReadSpec, root: str | None, where: str, files: list[dict[str, str]]
) -> tuple[list[dict[str, Any]], str]:
    """All records of a spec's files, with meta fields and extracted fields; returns (records, format)."""
    base = _base_dir(spec, root, where)
    try:
        paths = expand_paths(spec.path or [], base)
    except DataError as exc:
        raise DataError(f"{where}, field 'path': {exc}") from None
    out: list[dict[str, Any]] = []
    fmt_used = spec.format
    for uri, shown in paths:
        fmt = spec.format or infer_format(uri)
        if fmt is None:
            raise DataError(
                f"{where}, field 'format': cannot tell the format of {shown}; set format: one of "
                "csv, jsonl, json, parquet, lines, document"
            )
        fmt_used = fmt_used or fmt
        try:
            records, digest = read_records(uri, fmt, spec.records, spec.json_unescape)
        except DataError as exc:
            field_name = "format" if "declared as" in str(exc) else "path"
            raise DataError(f"{where}, field '{field_name}': {exc}") from None
        files.append({"path": shown, "sha256": digest})
        stem = Path(shown).name.split(".")[0]
        parent = Path(shown).parent.name
        for i, record in enumerate(records):
            record.update({"_file": shown, "_stem": stem, "_dir": parent, "_index": i})
            for name, ext in spec.extract.items():
                match = re.search(ext.pattern, as_text(resolve_field(record, ext.field)))
                record[name] = (match.group(ext.group) or "") if match else ext.default
            out.append(record)
    return out, fmt_used or ""


def _any_file(entry: SourceEntry, root: str | None, where: str) -> bool:
    """Whether every file spec of an optional entry names at least one existing file."""
    specs: list[ReadSpec] = [entry] if entry.builder is None else [s for v in entry.inputs.values() for s in v]
    return all(expand_paths(s.path or [], _base_dir(s, root, where), missing_ok=True) for s in specs)


def _check_fields(where: str, records: list[dict[str, Any]], refs: Iterable[tuple[str, str]]) -> None:
    """Every referenced top-level field must exist in at least one record."""
    present: set[str] = set()
    for record in records:
        present.update(record)
    for what, name in refs:
        top = top_field(name)
        if top not in present:
            shown = sorted(k for k in present if not k.startswith("_")) + sorted(
                k for k in present if k.startswith("_")
            )
            raise DataError(
                f"{where}, field '{what}': names field {top!r}, which no record has; the records have {shown}"
            )


def _apply_filters(spec: ReadSpec, records: list[dict[str, Any]], dropped: Counter[str]) -> list[dict[str, Any]]:
    for flt in spec.filters:
        keep = flt.compile()
        before = len(records)
        records = [r for r in records if keep(r)]
        if before > len(records):
            dropped[f"filter {flt.field} {flt.condition.rstrip('_')}"] += before - len(records)
    return records


def _read_items(spec: ReadSpec, root: str | None, where: str, files: list[dict[str, str]]) -> list[Item]:
    records, fmt = _read_spec_records(spec, root, where, files)
    try:
        text_template = spec.text_template(fmt)
    except ValueError as exc:
        raise ConfigError(f"{where}, field 'text': {exc}") from None
    refs = [("text", f) for f in text_template.fields]
    refs += [(f"filters[{i}].field", f.field) for i, f in enumerate(spec.filters)]
    refs += [(f"extract.{n}.field", e.field) for n, e in spec.extract.items()]
    if spec.group:
        refs += [("group", f) for f in Template.parse(spec.group).fields]
    _check_fields(where, records, refs)
    records = _apply_filters(spec, records, Counter())
    group_template = Template.parse(spec.group) if spec.group else None
    items = []
    for record in records:
        text = _clean(text_template.render(record))
        if not text:
            continue
        group = group_template.render(record).strip() if group_template else None
        items.append(Item(text=text, fields=record, key=f"{record['_file']}#{record['_index']}", group=group or None))
    return items


def _clean(text: str) -> str:
    return text.replace("\r\n", "\n").replace("\r", "\n").strip()


def class_id(target: int | str, labels: LabelConfig) -> int | None:
    """The class id a label-map target names (a label name, case-insensitive, or an id); None when unknown."""
    names = labels.names
    if isinstance(target, bool):
        return None
    if isinstance(target, int):
        return target if 0 <= target < len(names) else None
    raw = str(target).strip()
    if raw in names:
        return names.index(raw)
    folded = [i for i, n in enumerate(names) if n.casefold() == raw.casefold()]
    if len(folded) == 1:
        return folded[0]
    if raw.isdigit() and int(raw) < len(names):
        return int(raw)
    return None


def check_label_targets(recipe: Recipe, labels: LabelConfig) -> None:
    """Every class a recipe maps to must exist in ``labels`` (checked before any file is read)."""
    for entry in recipe.sources:
        for where, target in entry.label.targets():
            if class_id(target, labels) is None:
                raise ConfigError(
                    f"{entry.where}, field '{where}': {target!r} is not a class; allowed: names {labels.names} "
                    f"or ids 0..{labels.num_classes - 1}"
                )


def _map_labels(
    entry: SourceEntry, records: list[dict[str, Any]], labels: LabelConfig, dropped: Counter[str]
) -> list[tuple[dict[str, Any], int]]:
    spec = entry.label
    if spec.fixed is not None:
        fixed = class_id(spec.fixed, labels)
        assert fixed is not None  # checked by check_label_targets
        return [(r, fixed) for r in records]
    assert spec.field is not None
    out: list[tuple[dict[str, Any], int]] = []
    unmapped: Counter[str] = Counter()
    for record in records:
        value = as_text(resolve_field(record, spec.field))
        if spec.map is None:
            target: Any = value
        elif value in spec.map:
            target = spec.map[value]
            if target is None:
                dropped[f"label map: {value!r} -> null"] += 1
                continue
        else:
            unmapped[value] += 1
            continue
        cid = class_id(target, labels)
        if cid is None:
            unmapped[value] += 1
            continue
        out.append((record, cid))
    if unmapped:
        shown = ", ".join(f"{v!r} ({n} row{'s' if n > 1 else ''})" for v, n in unmapped.most_common(5))
        more = f" and {len(unmapped) - 5} more value(s)" if len(unmapped) > 5 else ""
        hint = (
            "map each value to a class name, an id, or null to drop the rows"
            if spec.map is not None
            else f"the values must be class names {labels.names} or ids; add a map:"
        )
        raise DataError(
            f"{entry.where}, field 'label.map': {sum(unmapped.values())} row(s) have a value of "
            f"'{spec.field}' that maps to no class: {shown}{more}; {hint}"
        )
    return out


def _load_entry(
    entry: SourceEntry,
    index: int,
    recipe: Recipe,
    labels: LabelConfig,
    exclusion: Exclusion,
) -> tuple[list[_Row], EntryReport, Counter[tuple[str, int]]]:
    """Rows of one entry (``index``: its position in the merged recipe) after its filters, labels and limits."""
    where = entry.where
    root = recipe.resolved_root
    report = EntryReport(
        index=index,
        name=entry.display_name,
        builder=entry.builder,
        files=[],
        loaded=0,
        dropped={},
        after_filters=0,
        final=0,
        sources=[],
        provenance=list(entry.provenance or []),
        licence=entry.licence,
        notes=entry.notes,
    )
    if entry.optional and not _any_file(entry, root, where):
        report.builder_notes = {"skipped: optional entry whose files do not exist": 1}
        return [], report, Counter()
    files: list[dict[str, str]] = []
    dropped: Counter[str] = Counter()
    builder_notes: dict[str, int] = {}
    if entry.builder is not None:
        inputs: dict[str, list[Item]] = {}
        for name, specs in entry.inputs.items():
            items: list[Item] = []
            for k, spec in enumerate(specs):
                items.extend(_read_items(spec, root, f"{where}, inputs.{name}[{k}]", files))
            if not items:
                raise DataError(f"{where}, field 'inputs.{name}': the input holds no records (after its filters)")
            inputs[name] = items
        split_cfg = exclusion.split_cfg
        ctx = BuildContext(
            rng=random.Random(f"{recipe.seed}:{entry.display_name}"),
            clean=exclusion.clean_items,
            near_groups=lambda texts: near_duplicate_groups(
                texts, split_cfg.near_duplicate_jaccard, split_cfg.shingle_words
            ),
        )
        try:
            records = BUILDERS[entry.builder](inputs, entry.builder_params(), ctx)
        except SentinelError as exc:
            raise type(exc)(f"{where}, builder {entry.builder!r}: {exc}") from None
        builder_notes = dict(ctx.notes)
        text_template = Template.parse("{text}")
        fmt = "builder"
    else:
        records, fmt = _read_spec_records(entry, root, where, files)
        try:
            text_template = entry.text_template(fmt)
        except ValueError as exc:
            raise ConfigError(f"{where}, field 'text': {exc}") from None
    loaded = len(records)
    if not records:
        raise DataError(f"{where}: {'the builder made' if entry.builder else 'the files hold'} no records")
    refs = [("text", f) for f in text_template.fields]
    refs += [(f"filters[{i}].field", f.field) for i, f in enumerate(entry.filters)]
    refs += [(f"extract.{n}.field", e.field) for n, e in entry.extract.items()]
    refs += [("source", f) for f in Template.parse(entry.source).fields]
    if entry.group:
        refs += [("group", f) for f in Template.parse(entry.group).fields]
    if entry.label.field:
        refs.append(("label.field", entry.label.field))
    _check_fields(where, records, refs)
    records = _apply_filters(entry, records, dropped)
    labelled = _map_labels(entry, records, labels, dropped)
    source_template = Template.parse(entry.source)
    group_template = Template.parse(entry.group) if entry.group else None
    max_chars = min(entry.max_chars or recipe.max_chars, recipe.max_chars)
    rows: list[_Row] = []
    kept: Counter[tuple[str, int]] = Counter()
    for record, label in labelled:
        text = normalize_text(_clean(text_template.render(record)))
        if len(text) < entry.min_chars:
            dropped["shorter than min_chars" if text else "empty text"] += 1
            continue
        if len(text) > max_chars:
            dropped[f"longer than {max_chars} chars"] += 1
            continue
        source = source_template.render(record).strip()
        if not source or ("{" in entry.source and not _valid_tag(source)):
            raise DataError(f"{where}, field 'source': the template gives {source!r}, not a 'family/part' tag")
        if entry.builder is not None:
            group = record.get("group")
        else:
            group = group_template.render(record).strip() if group_template else None
        family = source.split("/", 1)[0]
        rows.append(_Row(text, label, source, f"{family}:{group}" if group else None, index))
        kept[(source, label)] += 1
    report.files = files
    report.loaded = loaded
    report.dropped = dict(dropped)
    report.after_filters = len(rows)
    report.sources = sorted({r.source for r in rows})
    report.builder_notes = builder_notes
    return rows, report, kept


def _valid_tag(tag: str) -> bool:
    return bool(SOURCE_TAG.match(tag))


# --- assembly -----------------------------------------------------------------------------------------------------


def _dedup(rows: list[_Row], counts: dict[tuple[str, int], SourceLabelCounts], labels: LabelConfig) -> list[_Row]:
    by_key: dict[str, list[int]] = defaultdict(list)
    for i, row in enumerate(rows):
        by_key[dedup_key(row.text) or "\0" + row.text].append(i)
    keep: list[int] = []
    for members in by_key.values():
        if len({rows[i].label for i in members}) > 1:
            for i in members:
                _counts(counts, rows[i], labels).conflicts += 1
            continue
        keep.append(members[0])
        for i in members[1:]:
            _counts(counts, rows[i], labels).duplicates += 1
    return [rows[i] for i in sorted(keep)]


def _counts(counts: dict[tuple[str, int], SourceLabelCounts], row: _Row, labels: LabelConfig) -> SourceLabelCounts:
    key = (row.source, row.label)
    if key not in counts:
        counts[key] = SourceLabelCounts(row.source, labels.names[row.label])
    return counts[key]


def _cap(
    rows: list[_Row], recipe: Recipe, counts: dict[tuple[str, int], SourceLabelCounts], labels: LabelConfig
) -> list[_Row]:
    by_entry: dict[int, list[int]] = defaultdict(list)
    for i, row in enumerate(rows):
        by_entry[row.entry].append(i)
    removed: set[int] = set()
    for position, members in by_entry.items():
        entry = recipe.sources[position]
        rng = random.Random(f"{recipe.seed}:cap:{entry.display_name}")
        survivors = list(members)
        if entry.cap_per_label is not None:
            by_label: dict[int, list[int]] = defaultdict(list)
            for i in survivors:
                by_label[rows[i].label].append(i)
            survivors = []
            for label in sorted(by_label):
                group = by_label[label]
                survivors.extend(rng.sample(group, entry.cap_per_label) if len(group) > entry.cap_per_label else group)
            survivors.sort()
        if entry.cap is not None and len(survivors) > entry.cap:
            survivors = sorted(rng.sample(survivors, entry.cap))
        removed.update(set(members) - set(survivors))
    for i in removed:
        _counts(counts, rows[i], labels).capped += 1
    return [row for i, row in enumerate(rows) if i not in removed]


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


def _group_names(rows: list[_Row], split_cfg: SplitConfig) -> list[str]:
    """One group per row: near-duplicates and rows sharing an explicit group, joined transitively.

    A group is named by the smallest explicit group in it, else ``text:`` + a hash of its smallest dedup key,
    so names do not depend on the row order.
    """
    texts = [r.text for r in rows]
    ids = near_duplicate_groups(texts, split_cfg.near_duplicate_jaccard, split_cfg.shingle_words)
    sets = _DisjointSets(len(rows))
    first_explicit: dict[str, int] = {}
    for i, row in enumerate(rows):
        sets.union(ids[i], i)
        if row.group is not None:
            sets.union(first_explicit.setdefault(row.group, i), i)
    explicit: dict[int, str] = {}
    smallest_key: dict[int, str] = {}
    for i, row in enumerate(rows):
        root = sets.find(i)
        if row.group is not None and (root not in explicit or row.group < explicit[root]):
            explicit[root] = row.group
        key = dedup_key(row.text) or row.text
        if root not in smallest_key or key < smallest_key[root]:
            smallest_key[root] = key
    names = {}
    for root, key in smallest_key.items():
        names[root] = explicit.get(root) or "text:" + hashlib.blake2b(key.encode("utf-8"), digest_size=6).hexdigest()
    return [names[sets.find(i)] for i in range(len(rows))]


def build_corpus(
    recipe: Recipe | str | Path,
    excludes: Sequence[str] = (),
    labels: LabelConfig | None = None,
    split_cfg: SplitConfig | None = None,
    root: str | None = None,
    progress: bool = True,
) -> BuiltCorpus:
    """Assemble the corpus in memory (every step of the module doc); nothing is written."""
    started = time.perf_counter()
    labels = labels or LabelConfig()
    split_cfg = split_cfg or SplitConfig()
    if not isinstance(recipe, Recipe):
        recipe = load_recipe(recipe)
    if root is not None:
        recipe._root = root if storage.is_gcs(root) else os.path.abspath(root)
    if not recipe.sources:
        raise ConfigError(f"recipe {recipe.path}: no sources")
    check_label_targets(recipe, labels)
    exclusion, exclude_report = Exclusion.from_files(list(excludes), split_cfg)

    from tqdm.auto import tqdm

    rows: list[_Row] = []
    entries: list[EntryReport] = []
    counts: dict[tuple[str, int], SourceLabelCounts] = {}
    bar = tqdm(recipe.sources, desc="corpus sources", unit="source", disable=not progress)
    for position, entry in enumerate(bar):
        bar.set_postfix_str(entry.display_name[:40])
        entry_rows, report, kept = _load_entry(entry, position, recipe, labels, exclusion)
        for (source, label), n in kept.items():
            key = (source, label)
            if key not in counts:
                counts[key] = SourceLabelCounts(source, labels.names[label])
            counts[key].after_filters += n
        rows.extend(entry_rows)
        entries.append(report)
    bar.close()

    rows = _dedup(rows, counts, labels)
    tainted = exclusion.contaminated([r.text for r in rows])
    for row, bad in zip(rows, tainted, strict=True):
        if bad:
            _counts(counts, row, labels).decontaminated += 1
    rows = [row for row, bad in zip(rows, tainted, strict=True) if not bad]
    rows = _cap(rows, recipe, counts, labels)
    groups = _group_names(rows, split_cfg) if rows else []
    for row in rows:
        _counts(counts, row, labels).final += 1
    final_per_entry = Counter(r.entry for r in rows)
    for report in entries:
        report.final = final_per_entry.get(report.index, 0)
    if not rows:
        raise DataError(f"recipe {recipe.path}: no rows are left after de-duplication, decontamination and caps")
    sizes = Counter(groups)
    multi = [n for n in sizes.values() if n > 1]
    group_stats = {
        "groups": len(sizes),
        "groups_with_more_than_one_row": len(multi),
        "rows_in_such_groups": sum(multi),
        "largest_group": max(sizes.values()),
    }
    out_rows = [
        {"text": r.text, "label": r.label, "source": r.source, "group": g} for r, g in zip(rows, groups, strict=True)
    ]
    licence_files = _licence_files(recipe, entries)
    built = BuiltCorpus(
        recipe=recipe,
        rows=out_rows,
        counts=counts,
        entries=entries,
        groups=group_stats,
        excludes=exclude_report,
        labels=labels,
        licence_files=licence_files,
    )
    built.seconds = time.perf_counter() - started
    return built


def _licence_files(recipe: Recipe, entries: list[EntryReport]) -> list[tuple[str, str]]:
    used = {key for report in entries if report.final for key in report.provenance}
    out: list[tuple[str, str]] = []
    for key in sorted(used):
        for name in recipe.provenance[key].licence_files:
            root = recipe.resolved_root
            if root is None:
                raise ConfigError(f"recipe {recipe.path}, provenance.{key}.licence_files: the recipe has no root")
            uri = storage.join(root, name)
            if not storage.exists(uri):
                raise DataError(f"recipe {recipe.path}, field 'provenance.{key}.licence_files': {uri}: no such file")
            out.append((uri, name))
    return out


# --- writing --------------------------------------------------------------------------------------------------------


def _corpus_csv(rows: list[dict[str, Any]]) -> bytes:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(CORPUS_COLUMNS)
    for row in rows:
        writer.writerow([row[c] for c in CORPUS_COLUMNS])
    return buffer.getvalue().encode("utf-8")


def _sorted_counts(built: BuiltCorpus) -> list[SourceLabelCounts]:
    return [built.counts[k] for k in sorted(built.counts, key=lambda k: (k[1], k[0]))]


def _display_path(path: str | None) -> str | None:
    """A local path relative to the working directory (stats stay free of machine-specific absolute paths)."""
    if path is None or storage.is_gcs(path):
        return path
    return os.path.relpath(path)


def stats_dict(built: BuiltCorpus, files: dict[str, str]) -> dict[str, Any]:
    recipe = built.recipe
    per_label = Counter(built.labels.names[r["label"]] for r in built.rows)
    per_family = Counter(r["source"].split("/", 1)[0] for r in built.rows)
    totals = {step: sum(getattr(c, step) for c in built.counts.values()) for step in STEPS}
    return {
        "recipe": recipe.path,
        "name": recipe.name,
        "root": _display_path(recipe.resolved_root),
        "seed": recipe.seed,
        "rows": len(built.rows),
        "per_label": {name: per_label.get(name, 0) for name in built.labels.names},
        "per_family": dict(sorted(per_family.items())),
        "totals": totals,
        "counts": [{**asdict(c), "family": c.family} for c in _sorted_counts(built)],
        "entries": [asdict(e) for e in built.entries],
        "groups": built.groups,
        "excludes": built.excludes,
        "files": files,
    }


def _md_cell(text: Any) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def stats_markdown(built: BuiltCorpus) -> str:
    recipe = built.recipe
    lines = [f"# Corpus statistics: {recipe.name or Path(recipe.path).stem}", ""]
    if recipe.description:
        lines += [recipe.description.strip(), ""]
    per_label = Counter(built.labels.names[r["label"]] for r in built.rows)
    shown_labels = ", ".join(f"{name} {per_label.get(name, 0)}" for name in built.labels.names)
    lines += [
        f"Recipe `{Path(recipe.path).name}`, seed {recipe.seed}: **{len(built.rows)} rows** ({shown_labels}) from "
        f"{len({r['source'] for r in built.rows})} source tags in "
        f"{len({r['source'].split('/')[0] for r in built.rows})} families.",
        "",
    ]
    if built.excludes:
        names = ", ".join(f"`{Path(e['path']).name}` ({e['rows']} rows)" for e in built.excludes)
        lines += [f"Decontaminated against {names}: near-duplicate groups holding an excluded text are dropped.", ""]
    lines += [
        "## Rows per source and label",
        "",
        "`after filters` counts the rows an entry produced; the next four columns are rows removed at each step; "
        "`final` is what the corpus holds.",
        "",
        "| source | label | after filters | duplicates | conflicts | decontaminated | capped | final |",
        "|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for c in _sorted_counts(built):
        lines.append(
            f"| {c.source} | {c.label} | {c.after_filters} | {c.duplicates} | {c.conflicts} | {c.decontaminated} "
            f"| {c.capped} | {c.final} |"
        )
    totals = {step: sum(getattr(c, step) for c in built.counts.values()) for step in STEPS}
    lines.append("| **total** | | " + " | ".join(f"**{totals[s]}**" for s in STEPS) + " |")
    lines += [
        "",
        "## Entries",
        "",
        "| # | entry | builder | files | loaded | dropped before dedup | final | licence |",
        "|---:|---|---|---|---:|---|---:|---|",
    ]
    for e in built.entries:
        dropped = "; ".join(f"{k}: {v}" for k, v in e.dropped.items()) or "–"
        if e.builder_notes:
            dropped += "; " + "; ".join(f"{k}: {v}" for k, v in e.builder_notes.items())
        files = ", ".join(f"`{f['path']}`" for f in e.files[:3]) + (
            f" (+{len(e.files) - 3})" if len(e.files) > 3 else ""
        )
        licence = e.licence or ", ".join(recipe.provenance[k].licence for k in e.provenance if k in recipe.provenance)
        lines.append(
            f"| {e.index} | {_md_cell(e.name)} | {e.builder or '–'} | {files} | {e.loaded} | {_md_cell(dropped)} "
            f"| {e.final} | {_md_cell(licence or '–')} |"
        )
    g = built.groups
    lines += [
        "",
        f"Groups (near-duplicates and builder template/payload/scenario groups, joined): {g['groups']}; "
        f"{g['groups_with_more_than_one_row']} hold more than one row ({g['rows_in_such_groups']} rows), "
        f"the largest {g['largest_group']}.",
        "",
    ]
    return "\n".join(lines)


def _file_owner(path: str, keys: list[str], recipe: Recipe) -> str | None:
    """The provenance key a file belongs to: the one whose licence file folder is the longest prefix of its path."""
    best, best_len = None, -1
    for key in keys:
        for licence in recipe.provenance[key].licence_files:
            folder = licence.rsplit("/", 1)[0] + "/" if "/" in licence else ""
            if path.startswith(folder) and len(folder) > best_len:
                best, best_len = key, len(folder)
    return best if best is not None else (keys[0] if len(keys) == 1 else None)


def _summarize_files(paths: Iterable[str], limit: int = 4) -> str:
    """Files as code spans; a folder holding more than ``limit`` of them is shown as ``folder/ (N files)``."""
    by_folder: dict[str, list[str]] = defaultdict(list)
    for path in sorted(set(paths)):
        by_folder[path.rsplit("/", 1)[0] if "/" in path else ""].append(path)
    shown = []
    for folder, members in sorted(by_folder.items()):
        if len(members) > limit:
            shown.append(f"`{folder}/` ({len(members)} files)")
        else:
            shown.extend(f"`{m}`" for m in members)
    return ", ".join(shown)


def sources_markdown(built: BuiltCorpus) -> str:
    recipe = built.recipe
    final_by_key: Counter[str] = Counter()
    files_by_key: dict[str, set[str]] = defaultdict(set)
    entries_by_key: dict[str, list[str]] = defaultdict(list)
    unattributed = []
    for e in built.entries:
        if not e.final:
            continue
        if not e.provenance:
            unattributed.append(e)
        for key in e.provenance:
            final_by_key[key] += e.final
            entries_by_key[key].extend(e.sources)
        for f in e.files:
            owner = _file_owner(f["path"], e.provenance, recipe)
            if owner is not None:
                files_by_key[owner].add(f["path"])
    lines = [
        f"# Sources of the {recipe.name or Path(recipe.path).stem} corpus",
        "",
        "Every upstream source this corpus takes rows from, with the licence under which it is redistributed. "
        f"The licence texts are in `{LICENSES_DIR}/`. A row composed from several sources (a template filled with a "
        "request) counts for each of them.",
        "",
        "| source | repository @ commit | files | licence | source tags | rows used |",
        "|---|---|---|---|---|---:|",
    ]
    for key in sorted(final_by_key):
        p = recipe.provenance[key]
        repo = f"{p.repository} @ {p.commit[:7]}" if p.repository and p.commit else (p.repository or "–")
        files = _summarize_files(files_by_key[key]) or "–"
        tags = ", ".join(sorted(set(entries_by_key[key])))
        lines.append(f"| {key} | {_md_cell(repo)} | {files} | {_md_cell(p.licence)} | {tags} | {final_by_key[key]} |")
    for e in unattributed:
        files = _summarize_files(f["path"] for f in e.files)
        lines.append(
            f"| {e.name} | – | {files} | {_md_cell(e.licence or 'not stated')} | {', '.join(e.sources)} | {e.final} |"
        )
    notes = [(k, recipe.provenance[k].notes) for k in sorted(final_by_key) if recipe.provenance[k].notes]
    if notes:
        lines += ["", "## Notes", ""]
        lines += [f"- **{k}**: {_md_cell(n)}" for k, n in notes]
    commits = [(k, recipe.provenance[k]) for k in sorted(final_by_key) if recipe.provenance[k].commit]
    if commits:
        lines += ["", "Full commits:", ""]
        lines += [f"- {k}: `{p.repository}` @ `{p.commit}`" for k, p in commits]
    return "\n".join(lines) + "\n"


def _names(files: dict[str, str]) -> dict[str, str]:
    """File names only: the stats of a rebuilt corpus do not depend on where it was written."""
    return {key: path.rstrip("/").rsplit("/", 1)[-1] for key, path in files.items()}


def _own_names(recipe: Recipe) -> set[str]:
    return {recipe.corpus_file, STATS_JSON, STATS_MD, SOURCES_MD, LICENSES_DIR}


def write_corpus(built: BuiltCorpus, out: str) -> dict[str, str]:
    """Write the corpus directory at ``out`` all at once; returns {name: path} of the files written."""
    out = str(out)
    recipe = built.recipe
    names = _own_names(recipe)
    if not storage.is_gcs(out):
        target = Path(out)
        if target.exists():
            if not target.is_dir():
                raise DataError(f"output {out} exists and is not a directory")
            foreign = sorted(p.name for p in target.iterdir() if p.name not in names)
            if foreign:
                shown = ", ".join(foreign[:5]) + (" ..." if len(foreign) > 5 else "")
                raise DataError(
                    f"output directory {out} already holds other files ({shown}); it would be replaced as a whole, "
                    "so choose a new or empty directory"
                )
    files = {
        "corpus": storage.join(out, recipe.corpus_file),
        "stats_json": storage.join(out, STATS_JSON),
        "stats_md": storage.join(out, STATS_MD),
        "sources_md": storage.join(out, SOURCES_MD),
    }
    licence_payloads = [(name, storage.read_bytes(uri)) for uri, name in built.licence_files]
    payloads = {
        recipe.corpus_file: _corpus_csv(built.rows),
        STATS_MD: stats_markdown(built).encode("utf-8"),
        SOURCES_MD: sources_markdown(built).encode("utf-8"),
        STATS_JSON: (json.dumps(stats_dict(built, _names(files)), indent=2, ensure_ascii=False) + "\n").encode("utf-8"),
    }

    def fill(folder: Path) -> None:
        folder.chmod(0o755)
        for name, data in payloads.items():
            (folder / name).write_bytes(data)
        for name, data in licence_payloads:
            target = folder / LICENSES_DIR / name
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(data)

    if storage.is_gcs(out):
        staging = tempfile.mkdtemp(prefix="sentinel-corpus-")
        try:
            storage.publish_directory(out, fill, last=(STATS_JSON,), staging=staging)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    else:
        storage.publish_directory(out, fill)
    return files


def assemble_corpus(
    recipe: Recipe | str | Path,
    out: str,
    excludes: Sequence[str] = (),
    labels: LabelConfig | None = None,
    split_cfg: SplitConfig | None = None,
    root: str | None = None,
    progress: bool = True,
) -> AssemblyResult:
    """The corpus stage: assemble ``recipe`` (a :class:`Recipe` or a YAML path) and write it to the folder ``out``.

    ``excludes``: evaluation sets (files with a ``text`` column) whose exact and near duplicates are dropped.
    ``labels``: the classes label maps refer to. ``split_cfg``: the near-duplicate settings. ``root``: overrides the
    recipe's root. Raises :class:`ConfigError` / :class:`DataError` naming the entry and field; writes nothing then.
    """
    built = build_corpus(recipe, excludes, labels, split_cfg, root, progress)
    files = write_corpus(built, out)
    per_label = Counter(built.labels.names[r["label"]] for r in built.rows)
    return AssemblyResult(
        recipe=built.recipe.path,
        out=str(out),
        corpus_path=files["corpus"],
        stats_json_path=files["stats_json"],
        stats_md_path=files["stats_md"],
        sources_md_path=files["sources_md"],
        rows=len(built.rows),
        per_label={name: per_label.get(name, 0) for name in built.labels.names},
        counts=_sorted_counts(built),
        entries=built.entries,
        groups=built.groups,
        excludes=built.excludes,
        seconds=built.seconds,
    )
