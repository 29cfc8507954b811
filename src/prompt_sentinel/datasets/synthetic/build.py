"""Build ``defensive_coding.csv`` and ``roleplay.csv`` from the reviewed YAML inputs next to this module.

    python -m prompt_sentinel.datasets.synthetic.build [--out DIR] [--check] [--seed N] [--quiet]

Deterministic: the same inputs and seed give byte-identical files (every random choice comes from a
``random.Random`` seeded with a string, which does not depend on ``PYTHONHASHSEED``). ``--check`` builds in
memory and exits 1 when a committed file differs (run it in CI after editing a YAML file). The README's
statistics block, between the ``GENERATED STATS`` markers, is rewritten by the build as well.

How rows are made (README.md has the full story):

* templated rows: each template is filled with ``rows_per_template`` vocabulary items drawn from a shuffled deck
  per vocabulary (cycled, so every item is used about equally often; a sample, not the cross product);
  ``[[a|b]]`` alternatives and the name slots are chosen per row;
* dual role-play templates are filled with harmful goals (label 2) and with benign goals (label 0);
* code snippets give one row per question asked about them; hand-written rows are taken as written;
* everything is de-duplicated on :func:`prompt_sentinel.text.dedup_key` (hand-written rows win).

Group rule: templated rows -> the template id; snippet rows -> ``dc-snip-<snippet id>``; hand-written rows ->
``dc-hw-<id>`` or, for role-play pairs, ``rp-hw-<id>`` shared by the jailbreak and its benign twin; bare goals ->
``goal-<goal id>``. Groups of dual templates and hand-written pairs hold both label 0 and label 2 on purpose.
"""

from __future__ import annotations

import argparse
import csv
import io
import os
import random
import re
import statistics
import sys
import tempfile
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from prompt_sentinel.errors import DataError
from prompt_sentinel.text import dedup_key

__all__ = [
    "COLUMNS",
    "DATA_DIR",
    "FAMILIES",
    "OUTPUT_FILES",
    "ROWS_PER_TEMPLATE",
    "SEED",
    "SOURCES",
    "SyntheticRow",
    "build_outputs",
    "build_rows",
    "changed_outputs",
    "dataset_stats",
    "input_counts",
    "main",
    "rows_to_csv_bytes",
    "write_outputs",
]

DATA_DIR = Path(__file__).resolve().parent
SEED = 19
COLUMNS = ("text", "label", "source", "group")
DEFENSIVE_FILE = "defensive_coding.csv"
ROLEPLAY_FILE = "roleplay.csv"
README_FILE = "README.md"
OUTPUT_FILES = (DEFENSIVE_FILE, ROLEPLAY_FILE, README_FILE)

SRC_SECURITY = "sentinel-defensive/security"
SRC_CODING = "sentinel-defensive/coding"
SRC_JAILBREAK = "sentinel-roleplay/jailbreak"
SRC_BENIGN_RP = "sentinel-roleplay/benign"
SRC_GOAL = "sentinel-roleplay/goal"
SOURCES = (SRC_SECURITY, SRC_CODING, SRC_JAILBREAK, SRC_BENIGN_RP, SRC_GOAL)
FAMILIES = ("sentinel-defensive", "sentinel-roleplay")

# Rows drawn per template (per label for dual role-play templates). Chosen so that each file lands in the
# documented 400-600 range per part while no template dominates (README: counts table).
ROWS_PER_TEMPLATE = {
    "security_code": 6,
    "security_ops": 5,
    "security_concept": 5,
    "coding": 6,
    "everyday": 5,
    "dual": 5,
    "attack_only": 6,
    "benign_only": 6,
}
DEFENSIVE_KIND_SOURCE = {
    "security_code": SRC_SECURITY,
    "security_ops": SRC_SECURITY,
    "security_concept": SRC_SECURITY,
    "coding": SRC_CODING,
    "everyday": SRC_CODING,
}
DEFENSIVE_KIND_VOCAB = {
    "security_code": "security_code_tasks",
    "security_ops": "security_ops_tasks",
    "security_concept": "security_concepts",
    "coding": "coding_tasks",
    "everyday": "everyday_tasks",
}
SNIPPET_SOURCE = {"security": SRC_SECURITY, "coding": SRC_CODING}

STATS_BEGIN = "<!-- BEGIN GENERATED STATS (python -m prompt_sentinel.datasets.synthetic.build) -->"
STATS_END = "<!-- END GENERATED STATS -->"

_SPIN = re.compile(r"\[\[(.*?)\]\]", flags=re.DOTALL)
_SLOT = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)\}")
_WORD = re.compile(r"\w+", flags=re.UNICODE)
_OPEN_BRACE, _CLOSE_BRACE = "\x00", "\x01"  # stand-ins for {{ and }} while slots are filled


@dataclass(frozen=True)
class SyntheticRow:
    """One output row plus its provenance (the provenance is not written to the CSV)."""

    text: str
    label: int
    source: str
    group: str
    template: str  # template, snippet or hand-written id
    item: str  # goal id / vocabulary entry / "" for hand-written rows
    lang: str  # ISO 639-1 code
    kind: str  # template kind or framing

    @property
    def file(self) -> str:
        return DEFENSIVE_FILE if self.source.startswith("sentinel-defensive/") else ROLEPLAY_FILE


# --- reading and validating the inputs -----------------------------------------------------------------------


def _load_yaml(data_dir: Path, name: str) -> dict[str, Any]:
    path = data_dir / name
    try:
        with path.open(encoding="utf-8") as fh:
            data = yaml.safe_load(fh)
    except FileNotFoundError as exc:
        raise DataError(f"{path}: synthetic-data input file is missing") from exc
    except yaml.YAMLError as exc:
        raise DataError(f"{path}: not valid YAML ({exc})") from exc
    if not isinstance(data, dict):
        raise DataError(f"{path}: expected a mapping at the top level, got {type(data).__name__}")
    return data


def _require(entry: Mapping[str, Any], key: str, where: str, kind: type = str) -> Any:
    value = entry.get(key) if isinstance(entry, Mapping) else None
    if not isinstance(value, kind) or (isinstance(value, str | list) and not value):
        shown = "missing" if value is None else f"{value!r}"
        raise DataError(f"{where}: field '{key}' must be a non-empty {kind.__name__}, got {shown}")
    return value


def _list(data: Mapping[str, Any], key: str, where: str) -> list[Any]:
    return _require(data, key, where, list)


@dataclass(frozen=True)
class _Entry:
    """A vocabulary entry: the text and the languages it may be combined with (None = the default list)."""

    key: str
    text: str
    langs: tuple[str, ...] | None = None


def _vocabulary(data: Mapping[str, Any], key: str, where: str) -> list[_Entry]:
    entries: list[_Entry] = []
    for i, raw in enumerate(_list(data, key, where), start=1):
        at = f"{where}, {key} entry {i}"
        if isinstance(raw, str) and raw.strip():
            entries.append(_Entry(f"{key}:{i}", raw.strip()))
        elif isinstance(raw, Mapping):
            text = _require(raw, "text", at).strip()
            langs = raw.get("langs")
            if langs is not None and (not isinstance(langs, list) or not all(isinstance(x, str) for x in langs)):
                raise DataError(f"{at}: field 'langs' must be a list of language names, got {langs!r}")
            entries.append(_Entry(f"{key}:{i}", text, tuple(langs) if langs else None))
        else:
            raise DataError(f"{at}: expected a non-empty string or a mapping with 'text', got {raw!r}")
    return entries


def _goals(data: Mapping[str, Any], key: str, where: str) -> list[dict[str, str]]:
    goals = []
    seen: set[str] = set()
    for i, raw in enumerate(_list(data, key, where), start=1):
        at = f"{where}, {key} entry {i}"
        goal = {field: _require(raw, field, at).strip() for field in ("id", "do", "ing", "expert")}
        if goal["id"] in seen:
            raise DataError(f"{at}: duplicate goal id {goal['id']!r}")
        seen.add(goal["id"])
        goals.append(goal)
    return goals


def _templates(entries: Iterable[Any], where: str, kinds: Iterable[str] | None = None) -> list[dict[str, str]]:
    out = []
    for i, raw in enumerate(entries, start=1):
        at = f"{where}, template {i}"
        template = {"id": _require(raw, "id", at), "text": _require(raw, "text", at)}
        if kinds is not None:
            template["kind"] = _require(raw, "kind", at)
            if template["kind"] not in kinds:
                raise DataError(f"{at} ({template['id']}): kind {template['kind']!r}; allowed: {sorted(kinds)}")
        template["framing"] = str(raw.get("framing", template.get("kind", "")))
        out.append(template)
    return out


# --- filling templates ---------------------------------------------------------------------------------------


def _rng(seed: int, *parts: str) -> random.Random:
    return random.Random(":".join([str(seed), *parts]))


def _spin(text: str, rng: random.Random) -> str:
    """Resolve ``[[a|b]]`` (one alternative) and ``[[#tag:a|b]]`` (the same position for every group with ``tag``)."""
    positions: dict[str, int] = {}

    def choose(match: re.Match[str]) -> str:
        body = match.group(1)
        if body.startswith("#") and ":" in body:
            tag, body = body[1:].split(":", 1)
            options = body.split("|")
            position = positions.setdefault(tag, rng.randrange(len(options)))
            return options[min(position, len(options) - 1)]
        return rng.choice(body.split("|"))

    return _SPIN.sub(choose, text)


def _fill(template: str, values: Mapping[str, str], where: str) -> str:
    """Replace ``{slot}`` (``{Slot}``: first letter upper-cased, ``{SLOT}``: all upper-cased); ``{{ }}`` stay."""

    def replace(match: re.Match[str]) -> str:
        name = match.group(1)
        value = values.get(name.lower())
        if value is None:
            allowed = ", ".join(sorted(values))
            raise DataError(f"{where}: unknown slot {{{name}}} in the template; this template can use: {allowed}")
        if len(name) > 1 and name.isupper():
            return value.upper()
        if name[0].isupper():
            return value[:1].upper() + value[1:]
        return value

    text = template.replace("{{", _OPEN_BRACE).replace("}}", _CLOSE_BRACE)
    text = _SLOT.sub(replace, text)
    return text.replace(_OPEN_BRACE, "{").replace(_CLOSE_BRACE, "}").strip()


class _Deck:
    """Cycles through a shuffled vocabulary so every entry is used about equally often across templates."""

    def __init__(self, items: Sequence[Any], rng: random.Random) -> None:
        self._items = list(items)
        self._rng = rng
        self._pile: list[Any] = []

    def draw(self, count: int, accept: Any = None) -> list[Any]:
        """``count`` distinct entries (fewer only if the vocabulary is smaller), skipping rejected ones."""
        drawn: list[Any] = []
        skipped: list[Any] = []
        for _ in range(2 * len(self._items) + count):
            if len(drawn) == count:
                break
            if not self._pile:
                self._pile = self._items[:]
                self._rng.shuffle(self._pile)
            item = self._pile.pop()
            if item in drawn or (accept is not None and not accept(item)):
                skipped.append(item)
                continue
            drawn.append(item)
        self._pile.extend(reversed(skipped))  # skipped entries come up again first
        return drawn


# --- the two parts -------------------------------------------------------------------------------------------


def _defensive_rows(data_dir: Path, seed: int) -> list[SyntheticRow]:
    vocab_file, templates_file = "defensive_vocabularies.yaml", "defensive_templates.yaml"
    vocab = _load_yaml(data_dir, vocab_file)
    languages = [str(x) for x in _list(vocab, "languages", vocab_file)]
    decks = {
        kind: _Deck(_vocabulary(vocab, key, vocab_file), _rng(seed, "deck", key))
        for kind, key in DEFENSIVE_KIND_VOCAB.items()
    }
    rows: list[SyntheticRow] = []

    # hand-written rows first, so they win the de-duplication
    hw_file = "handwritten_defensive.yaml"
    for i, raw in enumerate(_list(_load_yaml(data_dir, hw_file), "rows", hw_file), start=1):
        at = f"{hw_file}, row {i}"
        source = _require(raw, "source", at)
        if source not in SNIPPET_SOURCE:
            raise DataError(f"{at}: source {source!r}; allowed: {sorted(SNIPPET_SOURCE)}")
        row_id = _require(raw, "id", at)
        rows.append(
            SyntheticRow(
                text=_require(raw, "text", at).strip(),
                label=0,
                source=SNIPPET_SOURCE[source],
                group=f"dc-hw-{row_id}",
                template=f"dc-hw-{row_id}",
                item="",
                lang=_require(raw, "lang", at),
                kind=f"handwritten-{source}",
            )
        )

    template_entries = _list(_load_yaml(data_dir, templates_file), "templates", templates_file)
    for template in _templates(template_entries, templates_file, DEFENSIVE_KIND_VOCAB):
        kind, template_id = template["kind"], template["id"]
        rng = _rng(seed, template_id)
        uses_lang = "{lang}" in template["text"]
        entries = decks[kind].draw(ROWS_PER_TEMPLATE[kind])
        for entry in entries:
            values = {"task": entry.text, "concept": entry.text}
            if uses_lang:
                values["lang"] = rng.choice(list(entry.langs or languages))
            text = _fill(_spin(template["text"], rng), values, f"{templates_file}, template {template_id}")
            rows.append(
                SyntheticRow(text, 0, DEFENSIVE_KIND_SOURCE[kind], template_id, template_id, entry.key, "en", kind)
            )

    snippets_file = "code_snippets.yaml"
    snippets_data = _load_yaml(data_dir, snippets_file)
    layouts = [str(x) for x in _list(snippets_data, "layouts", snippets_file)]
    for i, raw in enumerate(_list(snippets_data, "snippets", snippets_file), start=1):
        at = f"{snippets_file}, snippet {i}"
        snippet_id = _require(raw, "id", at)
        source = _require(raw, "source", at)
        if source not in SNIPPET_SOURCE:
            raise DataError(f"{at} ({snippet_id}): source {source!r}; allowed: {sorted(SNIPPET_SOURCE)}")
        code, fence = _require(raw, "code", at).rstrip(), _require(raw, "fence", at)
        rng = _rng(seed, "snippet", snippet_id)
        for j, ask in enumerate(_list(raw, "asks", at), start=1):
            layout = rng.choice(layouts)
            values = {"ask": str(ask).strip(), "code": code, "fence": fence}
            text = _fill(layout, values, f"{snippets_file}, layout {layout!r}")
            group = f"dc-snip-{snippet_id}"
            rows.append(SyntheticRow(text, 0, SNIPPET_SOURCE[source], group, group, f"ask:{j}", "en", "snippet"))
    return rows


def _roleplay_rows(data_dir: Path, seed: int) -> list[SyntheticRow]:
    goals_file, templates_file, hw_file = "goals.yaml", "roleplay_templates.yaml", "handwritten_roleplay.yaml"
    goals_data = _load_yaml(data_dir, goals_file)
    harmful = _goals(goals_data, "harmful_goals", goals_file)
    benign = _goals(goals_data, "benign_goals", goals_file)
    data = _load_yaml(data_dir, templates_file)
    slots_data = _require(data, "slots", templates_file, dict)
    slot_lists = {name: [str(x) for x in _list(slots_data, name, f"{templates_file}, slots")] for name in slots_data}
    harmful_deck = _Deck(harmful, _rng(seed, "deck", "harmful"))
    benign_deck = _Deck(benign, _rng(seed, "deck", "benign"))
    rows: list[SyntheticRow] = []

    for i, raw in enumerate(_list(_load_yaml(data_dir, hw_file), "pairs", hw_file), start=1):
        at = f"{hw_file}, pair {i}"
        group = f"rp-hw-{_require(raw, 'id', at)}"
        lang, framing = _require(raw, "lang", at), _require(raw, "framing", at)
        if "jailbreak" not in raw and "benign" not in raw:
            raise DataError(f"{at} ({group}): needs a 'jailbreak' text, a 'benign' text or both")
        for field, label, source in (("jailbreak", 2, SRC_JAILBREAK), ("benign", 0, SRC_BENIGN_RP)):
            if field in raw:
                text = _require(raw, field, at).strip()
                rows.append(SyntheticRow(text, label, source, group, group, "", lang, framing))

    def fill(template: dict[str, str], goal: dict[str, str], rng: random.Random) -> str:
        values = {name: rng.choice(options) for name, options in slot_lists.items()}
        values.update({"do": goal["do"], "ing": goal["ing"], "expert": goal["expert"]})
        return _fill(_spin(template["text"], rng), values, f"{templates_file}, template {template['id']}")

    plans = (
        ("dual", ((harmful_deck, 2, SRC_JAILBREAK), (benign_deck, 0, SRC_BENIGN_RP))),
        ("attack_only", ((harmful_deck, 2, SRC_JAILBREAK),)),
        ("benign_only", ((benign_deck, 0, SRC_BENIGN_RP),)),
    )
    for kind, fills in plans:
        for template in _templates(_list(data, kind, templates_file), f"{templates_file}, {kind}"):
            rng = _rng(seed, template["id"])
            for deck, label, source in fills:
                for goal in deck.draw(ROWS_PER_TEMPLATE[kind]):
                    text = fill(template, goal, rng)
                    rows.append(
                        SyntheticRow(text, label, source, template["id"], template["id"], goal["id"], "en", kind)
                    )

    requests = [str(x) for x in _list(data, "goal_requests", templates_file)]
    for goal in harmful:
        rng = _rng(seed, "goal", goal["id"])
        text = _fill(rng.choice(requests), goal, f"{templates_file}, goal_requests")
        group = f"goal-{goal['id']}"
        rows.append(SyntheticRow(text, 1, SRC_GOAL, group, group, goal["id"], "en", "bare-goal"))
    return rows


def _deduplicate(rows: Iterable[SyntheticRow]) -> tuple[list[SyntheticRow], int]:
    kept: dict[str, SyntheticRow] = {}
    dropped = 0
    for row in rows:
        key = dedup_key(row.text)
        first = kept.get(key)
        if first is None:
            kept[key] = row
            continue
        if first.label != row.label:
            raise DataError(
                f"the same text is built with label {first.label} ({first.group}) and label {row.label} "
                f"({row.group}): {row.text[:80]!r}; reword one of them"
            )
        dropped += 1
    return list(kept.values()), dropped


def build_rows(data_dir: Path = DATA_DIR, seed: int = SEED) -> tuple[list[SyntheticRow], int]:
    """Every row of both files (de-duplicated, sorted) and the number of duplicates dropped."""
    rows, dropped = _deduplicate([*_defensive_rows(data_dir, seed), *_roleplay_rows(data_dir, seed)])
    rows.sort(key=lambda r: (r.source, r.group, -r.label, r.text))
    return rows, dropped


# --- outputs -------------------------------------------------------------------------------------------------


def rows_to_csv_bytes(rows: Iterable[SyntheticRow]) -> bytes:
    """RFC 4180 CSV (CRLF between records, quotes where needed), UTF-8, columns ``text,label,source,group``."""
    buffer = io.StringIO(newline="")
    writer = csv.writer(buffer, lineterminator="\r\n")
    writer.writerow(COLUMNS)
    for row in rows:
        writer.writerow((row.text, row.label, row.source, row.group))
    return buffer.getvalue().encode("utf-8")


def _word_5grams(text: str) -> list[str]:
    words = _WORD.findall(dedup_key(text))
    return [" ".join(words[i : i + 5]) for i in range(len(words) - 4)]


def _percentile(sorted_values: Sequence[int], q: float) -> int:
    return sorted_values[min(len(sorted_values) - 1, round(q * (len(sorted_values) - 1)))]


def dataset_stats(rows: Sequence[SyntheticRow]) -> dict[str, Any]:
    """Counts and review statistics per (file, source, label): lengths, distinct 5-gram ratio, openers, languages."""
    parts: dict[tuple[str, str, int], list[SyntheticRow]] = defaultdict(list)
    for row in rows:
        parts[(row.file, row.source, row.label)].append(row)
    table = []
    for (file, source, label), part in sorted(parts.items()):
        lengths = sorted(len(r.text) for r in part)
        grams = [g for r in part for g in _word_5grams(r.text)]
        openers = Counter(" ".join(_WORD.findall(r.text.casefold())[:2]) for r in part)
        top_opener, top_count = openers.most_common(1)[0]
        table.append(
            {
                "file": file,
                "source": source,
                "label": label,
                "rows": len(part),
                "groups": len({r.group for r in part}),
                "handwritten": sum(r.item == "" for r in part),
                "non_english": sum(r.lang != "en" for r in part),
                "multiline": sum("\n" in r.text for r in part),
                "chars_min": lengths[0],
                "chars_p10": _percentile(lengths, 0.1),
                "chars_median": int(statistics.median(lengths)),
                "chars_p90": _percentile(lengths, 0.9),
                "chars_max": lengths[-1],
                "distinct_5gram_ratio": round(len(set(grams)) / len(grams), 3) if grams else 1.0,
                "top_opener": top_opener,
                "top_opener_share": round(top_count / len(part), 3),
            }
        )
    languages = Counter(r.lang for r in rows)
    return {"parts": table, "languages": dict(sorted(languages.items()))}


def input_counts(data_dir: Path = DATA_DIR) -> dict[str, int]:
    """How many goals, templates, vocabulary entries, snippets and hand-written rows the inputs hold."""
    goals = _load_yaml(data_dir, "goals.yaml")
    rp = _load_yaml(data_dir, "roleplay_templates.yaml")
    vocab = _load_yaml(data_dir, "defensive_vocabularies.yaml")
    hw_def = _list(_load_yaml(data_dir, "handwritten_defensive.yaml"), "rows", "handwritten_defensive.yaml")
    hw_rp = _list(_load_yaml(data_dir, "handwritten_roleplay.yaml"), "pairs", "handwritten_roleplay.yaml")
    snippets = _list(_load_yaml(data_dir, "code_snippets.yaml"), "snippets", "code_snippets.yaml")
    counts = {
        "harmful goals": len(goals.get("harmful_goals", [])),
        "benign goals": len(goals.get("benign_goals", [])),
        "dual role-play templates": len(rp.get("dual", [])),
        "attack-only role-play templates": len(rp.get("attack_only", [])),
        "benign-only role-play templates": len(rp.get("benign_only", [])),
        "bare-goal phrasings": len(rp.get("goal_requests", [])),
        "hand-written role-play pairs": len(hw_rp),
        "non-English role-play pairs": sum(isinstance(p, Mapping) and p.get("lang") != "en" for p in hw_rp),
        "defensive templates": len(_load_yaml(data_dir, "defensive_templates.yaml").get("templates", [])),
    }
    counts.update({f"vocabulary: {key}": len(vocab.get(key, [])) for key in DEFENSIVE_KIND_VOCAB.values()})
    counts.update(
        {
            "code/config/log snippets": len(snippets),
            "questions about snippets": sum(len(s.get("asks", [])) for s in snippets if isinstance(s, Mapping)),
            "hand-written defensive rows": len(hw_def),
            "non-English hand-written defensive rows": sum(
                isinstance(r, Mapping) and r.get("lang") != "en" for r in hw_def
            ),
        }
    )
    return counts


def _stats_markdown(rows: Sequence[SyntheticRow], dropped: int, inputs: Mapping[str, int]) -> str:
    stats = dataset_stats(rows)
    lines = [
        STATS_BEGIN,
        "",
        "Inputs: " + "; ".join(f"{name} {count}" for name, count in inputs.items()) + ".",
        "",
        "| file | source | label | rows | groups | hand-written | non-English | multi-line |",
        "|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for p in stats["parts"]:
        lines.append(
            f"| `{p['file']}` | `{p['source']}` | {p['label']} | {p['rows']} | {p['groups']} | {p['handwritten']} "
            f"| {p['non_english']} | {p['multiline']} |"
        )
    per_file = Counter(r.file for r in rows)
    lines += [
        "",
        "Rows per file: " + ", ".join(f"`{f}` {n}" for f, n in sorted(per_file.items())) + f"; {dropped} "
        "generated duplicates (same `dedup_key`) were dropped.",
        "",
        "| source | label | chars min | p10 | median | p90 | max | distinct word 5-gram ratio | most common opener "
        "(share) |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for p in stats["parts"]:
        lines.append(
            f"| `{p['source']}` | {p['label']} | {p['chars_min']} | {p['chars_p10']} | {p['chars_median']} "
            f"| {p['chars_p90']} | {p['chars_max']} | {p['distinct_5gram_ratio']:.3f} "
            f'| "{p["top_opener"]}" ({p["top_opener_share"]:.0%}) |'
        )
    langs = ", ".join(f"{lang} {n}" for lang, n in stats["languages"].items())
    lines += ["", f"Languages (rows): {langs}.", "", STATS_END]
    return "\n".join(lines)


def _readme_with_stats(readme: str, stats_block: str) -> str:
    start, end = readme.find(STATS_BEGIN), readme.find(STATS_END)
    if start < 0 or end < start:
        raise DataError(
            f"{README_FILE}: the generated-statistics markers are missing ({STATS_BEGIN!r} ... {STATS_END!r})"
        )
    return readme[:start] + stats_block + readme[end + len(STATS_END) :]


def build_outputs(data_dir: Path = DATA_DIR, seed: int = SEED) -> tuple[dict[str, bytes], list[SyntheticRow], int]:
    """The bytes of every output file (the two CSVs and the README with fresh statistics)."""
    rows, dropped = build_rows(data_dir, seed)
    readme_path = data_dir / README_FILE
    try:
        readme = readme_path.read_text(encoding="utf-8")
    except FileNotFoundError as exc:
        raise DataError(f"{readme_path}: missing (the build rewrites its statistics block)") from exc
    outputs = {
        DEFENSIVE_FILE: rows_to_csv_bytes(r for r in rows if r.file == DEFENSIVE_FILE),
        ROLEPLAY_FILE: rows_to_csv_bytes(r for r in rows if r.file == ROLEPLAY_FILE),
        README_FILE: _readme_with_stats(readme, _stats_markdown(rows, dropped, input_counts(data_dir))).encode("utf-8"),
    }
    return outputs, rows, dropped


def changed_outputs(outputs: Mapping[str, bytes], directory: Path) -> list[str]:
    """Names of the files in ``directory`` that are missing or differ from ``outputs``."""
    changed = []
    for name, content in outputs.items():
        path = directory / name
        if not path.is_file() or path.read_bytes() != content:
            changed.append(name)
    return changed


def write_outputs(outputs: Mapping[str, bytes], out_dir: Path) -> None:
    """Write every file to a temporary name first and rename them into place only when all are written."""
    out_dir.mkdir(parents=True, exist_ok=True)
    staged: list[tuple[str, Path]] = []
    try:
        for name, content in outputs.items():
            fd, tmp = tempfile.mkstemp(prefix=f".{name}.", dir=out_dir)
            with os.fdopen(fd, "wb") as fh:
                fh.write(content)
            staged.append((tmp, out_dir / name))
        for tmp, final in staged:
            os.replace(tmp, final)
    finally:
        for tmp, _ in staged:
            if os.path.exists(tmp):
                os.unlink(tmp)


def _print_stats(rows: Sequence[SyntheticRow], dropped: int) -> None:
    stats = dataset_stats(rows)
    header = f"{'source':30} {'lbl':>3} {'rows':>5} {'grp':>4} {'hw':>4} {'!en':>4} {'med':>5} {'p10':>5} {'p90':>5}"
    print(header + f" {'5gram':>6}  top opener")
    for p in stats["parts"]:
        print(
            f"{p['source']:30} {p['label']:>3} {p['rows']:>5} {p['groups']:>4} {p['handwritten']:>4} "
            f"{p['non_english']:>4} {p['chars_median']:>5} {p['chars_p10']:>5} {p['chars_p90']:>5} "
            f"{p['distinct_5gram_ratio']:>6.3f}  {p['top_opener']!r} {p['top_opener_share']:.0%}"
        )
    print(f"languages: {stats['languages']}; duplicates dropped: {dropped}")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m prompt_sentinel.datasets.synthetic.build",
        description="Build the team-written synthetic datasets (defensive_coding.csv, roleplay.csv).",
    )
    parser.add_argument("--out", type=Path, default=DATA_DIR, help=f"output directory (default: {DATA_DIR})")
    parser.add_argument("--check", action="store_true", help="write nothing; exit 1 if the files in --out differ")
    parser.add_argument("--seed", type=int, default=SEED, help=f"sampling seed (default: {SEED})")
    parser.add_argument("--quiet", action="store_true", help="do not print the statistics")
    args = parser.parse_args(argv)
    try:
        outputs, rows, dropped = build_outputs(DATA_DIR, args.seed)
    except DataError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if not args.quiet:
        _print_stats(rows, dropped)
    if args.check:
        changed = changed_outputs(outputs, args.out)
        if changed:
            print(f"out of date in {args.out}: {', '.join(changed)} (rebuild without --check)", file=sys.stderr)
            return 1
        print(f"up to date: {', '.join(outputs)} in {args.out}")
        return 0
    write_outputs(outputs, args.out)
    print(f"wrote {', '.join(outputs)} to {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
