"""Corpus recipes: a typed description of the labelled sources a training corpus is assembled from.

A recipe is a YAML file validated into :class:`Recipe` (pydantic, unknown fields rejected like
:mod:`prompt_sentinel.config`). Each entry of ``sources`` reads one or more files (CSV, JSONL, JSON, Parquet,
plain text lines or whole documents; local or ``gs://``; optionally ``.gz``) or composes rows with a registered
*builder* (:mod:`prompt_sentinel.data.corpus_builders`) from named inputs, and says how a record becomes a row:

* ``text``: a template over the record's fields, ``"{instruction}[[\\n\\n{instances[0][input]}]]"``. Fields use
  Python's format syntax (``{a}``, ``{a[0]}``, ``{a[key]}``); a ``[[...]]`` section is left out when any field in it
  is empty, so optional fields leave no dangling separators. Lists render one item per line.
* ``label``: one fixed class (name or id), or ``{field: F, map: {value: class}}`` (``null`` drops the row; a value
  missing from the map is an error, so nothing is labelled by accident).
* ``filters`` (``equals`` / ``not_equals`` / ``in`` / ``not_in`` / ``regex`` / ``not_regex`` / ``non_empty`` on a
  field), ``min_chars`` / ``max_chars``, ``cap`` / ``cap_per_label`` (a seeded sample after de-duplication and
  decontamination).
* ``source``: the tag written to the corpus, ``family/part`` (the family, before ``/``, is one upstream dataset and is
  what out-of-source evaluation holds out); it may be a template (``"llm-warden/{type}"``).
* ``group``: an optional template naming the split group (template, payload or scenario id) of each row.
* ``extract``: new fields captured by a regex from another field (``{index: {field: Index, pattern: "^(\\d+)_"}}``).
* ``provenance`` / ``licence`` / ``notes``: carried into the stats and the SOURCES table.

Every record also has the fields ``_file`` (the path as matched), ``_stem``, ``_dir`` (parent folder name) and
``_index`` (0-based position in its file; ``lines`` records also ``_line``). Paths are relative to the recipe's
``root`` (itself relative to the recipe file; ``--root`` overrides it) or, with ``base: recipe``, to the recipe
file's folder; globs are allowed. ``include`` lists recipes whose sources come first (a recipe that extends
another); ``optional: true`` skips an entry whose files do not exist (noted in the stats).

Errors name the recipe file, the entry (``sources[3] 'advbench'``) and the field.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, ValidationError, field_validator, model_validator

from prompt_sentinel.data.corpus_builders import BUILDERS
from prompt_sentinel.data.templating import Template, as_text, resolve_field, top_field
from prompt_sentinel.errors import ConfigError

__all__ = [
    "FORMATS",
    "SOURCE_TAG",
    "InputSpec",
    "LabelSpec",
    "Provenance",
    "ReadSpec",
    "Recipe",
    "RowFilter",
    "SourceEntry",
    "load_recipe",
    "recipe_from_dict",
]

FORMATS = ("csv", "jsonl", "json", "parquet", "lines", "document")
Format = Literal["csv", "jsonl", "json", "parquet", "lines", "document"]
SOURCE_TAG = re.compile(r"^[A-Za-z0-9][\w.+-]*(/[\w.+-]+)*$")


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)


def _check_template(value: str | None) -> str | None:
    if value is not None:
        Template.parse(value)
    return value


# --- the schema ---------------------------------------------------------------------------------------------


class RowFilter(_Model):
    """Keep a record only when its ``field`` passes exactly one condition (values compared as text)."""

    field: str
    equals: Any = None
    not_equals: Any = None
    in_: list[Any] | None = Field(None, alias="in")
    not_in: list[Any] | None = None
    regex: str | None = Field(None, description="Python regex searched in the value (inline flags such as (?i)).")
    not_regex: str | None = None
    non_empty: bool | None = Field(None, description="true: keep non-empty values; false: keep empty ones.")

    _CONDITIONS = ("equals", "not_equals", "in_", "not_in", "regex", "not_regex", "non_empty")

    @model_validator(mode="after")
    def _one_condition(self) -> RowFilter:
        set_ = [c for c in self._CONDITIONS if c in self.model_fields_set]
        if len(set_) != 1:
            shown = [c.rstrip("_") for c in set_]
            allowed = [c.rstrip("_") for c in self._CONDITIONS]
            raise ValueError(f"a filter needs exactly one condition of {allowed}, got {shown or 'none'}")
        top_field(self.field)
        for pattern in (self.regex, self.not_regex):
            if pattern is not None:
                try:
                    re.compile(pattern)
                except re.error as exc:
                    raise ValueError(f"invalid regex {pattern!r}: {exc}") from None
        return self

    @property
    def condition(self) -> str:
        return next(c for c in self._CONDITIONS if c in self.model_fields_set)

    def compile(self):  # -> Callable[[dict], bool]
        cond = self.condition
        field = self.field
        if cond in ("regex", "not_regex"):
            pattern = re.compile(self.regex if cond == "regex" else self.not_regex)  # type: ignore[arg-type]
            want = cond == "regex"
            return lambda r: (pattern.search(as_text(resolve_field(r, field))) is not None) == want
        if cond == "non_empty":
            want = bool(self.non_empty)
            return lambda r: bool(as_text(resolve_field(r, field)).strip()) == want
        if cond in ("in_", "not_in"):
            values = {as_text(v) for v in (self.in_ if cond == "in_" else self.not_in) or []}
            want = cond == "in_"
            return lambda r: (as_text(resolve_field(r, field)) in values) == want
        target = as_text(self.equals if cond == "equals" else self.not_equals)
        want = cond == "equals"
        return lambda r: (as_text(resolve_field(r, field)) == target) == want


class Extract(_Model):
    """A new field captured by ``pattern`` (a regex searched in ``field``); ``default`` when it does not match."""

    field: str
    pattern: str
    group: int | str = 1
    default: str = ""

    @model_validator(mode="after")
    def _valid(self) -> Extract:
        top_field(self.field)
        try:
            compiled = re.compile(self.pattern)
        except re.error as exc:
            raise ValueError(f"invalid regex {self.pattern!r}: {exc}") from None
        if isinstance(self.group, int) and self.group > compiled.groups:
            raise ValueError(f"pattern {self.pattern!r} has {compiled.groups} group(s), group {self.group} asked")
        if isinstance(self.group, str) and self.group not in compiled.groupindex:
            raise ValueError(f"pattern {self.pattern!r} has no group named {self.group!r}")
        return self


class LabelSpec(_Model):
    """``fixed`` class for every row, or the class of ``map[value of field]`` (no map: the value is a class)."""

    fixed: int | str | None = None
    field: str | None = None
    map: dict[str, int | str | None] | None = None

    @model_validator(mode="before")
    @classmethod
    def _scalar_is_fixed(cls, value: Any) -> Any:
        if isinstance(value, int | str) and not isinstance(value, bool):
            return {"fixed": value}
        if isinstance(value, dict) and isinstance(value.get("map"), dict):
            # YAML reads `0:` as an int key; record values are compared as text.
            value = {**value, "map": {as_text(k): v for k, v in value["map"].items()}}
        return value

    @model_validator(mode="after")
    def _one_kind(self) -> LabelSpec:
        if (self.fixed is None) == (self.field is None):
            raise ValueError("give either one fixed class (label: malicious) or a field (label: {field: F, map: ...})")
        if self.fixed is not None and self.map is not None:
            raise ValueError("a fixed label takes no map")
        if self.field is not None:
            top_field(self.field)
        return self

    def targets(self) -> list[tuple[str, int | str]]:
        """(where, class) for every class this spec can produce, for checking against the label set."""
        if self.fixed is not None:
            return [("label", self.fixed)]
        return [(f"label.map[{k!r}]", v) for k, v in (self.map or {}).items() if v is not None]


class ReadSpec(_Model):
    """How to read records from files and turn each into a text (shared by entries and builder inputs)."""

    path: list[str] | None = Field(None, description="File(s) relative to the base; globs allowed.")
    format: Format | None = Field(None, description="Inferred from the extension (before .gz) when not given.")
    records: str | None = Field(
        None,
        description="JSON only: dotted path to the list of records inside the document; '*' flattens an object of "
        "lists (each item gets the field _key).",
    )
    json_unescape: bool = Field(False, description="lines only: each line is a JSON-escaped string body.")
    base: Literal["root", "recipe"] = "root"
    extract: dict[str, Extract] = Field(default_factory=dict)
    filters: list[RowFilter] = Field(default_factory=list)
    text: str | None = Field(None, description="Text template; default '{text}' for lines and document formats.")
    group: str | None = Field(None, description="Template naming each row's split group.")

    _recipe_dir: Path = PrivateAttr(default=Path("."))
    _recipe_file: str = PrivateAttr(default="<recipe>")

    @field_validator("path", mode="before")
    @classmethod
    def _path_list(cls, value: Any) -> Any:
        return [value] if isinstance(value, str) else value

    @field_validator("path")
    @classmethod
    def _path_non_empty(cls, value: list[str] | None) -> list[str] | None:
        if value is not None and (not value or any(not str(p).strip() for p in value)):
            raise ValueError("path needs at least one non-empty file name or glob")
        return value

    @field_validator("text", "group")
    @classmethod
    def _template(cls, value: str | None) -> str | None:
        return _check_template(value)

    @model_validator(mode="after")
    def _format_options(self) -> ReadSpec:
        if self.records is not None and self.format not in (None, "json"):
            raise ValueError(f"'records' applies to the json format only, not {self.format}")
        if self.json_unescape and self.format not in (None, "lines"):
            raise ValueError(f"'json_unescape' applies to the lines format only, not {self.format}")
        return self

    def text_template(self, fmt: str) -> Template:
        if self.text is not None:
            return Template.parse(self.text)
        if fmt in ("lines", "document"):
            return Template.parse("{text}")
        raise ValueError("text: a template is required for this format (e.g. text: '{prompt}')")


class InputSpec(ReadSpec):
    """One named input of a builder: records read like an entry's, each becoming an item (text, fields, group)."""

    @model_validator(mode="after")
    def _needs_path(self) -> InputSpec:
        if not self.path:
            raise ValueError("a builder input needs a path")
        return self


class Provenance(_Model):
    """Where a source comes from: shown in the SOURCES table; ``licence_files`` are copied next to the corpus."""

    repository: str | None = None
    commit: str | None = None
    licence: str
    licence_files: list[str] = Field(default_factory=list, description="Paths relative to the root.")
    notes: str | None = None


class SourceEntry(ReadSpec):
    """One labelled source of the corpus: files read directly, or a builder composing rows from ``inputs``."""

    name: str | None = Field(None, description="Unique entry name (default: the source tag).")
    source: str = Field(description="Source tag 'family/part' written to the corpus; may use {fields}.")
    label: LabelSpec
    builder: str | None = None
    params: dict[str, Any] = Field(default_factory=dict)
    inputs: dict[str, list[InputSpec]] = Field(default_factory=dict)
    min_chars: int = Field(1, ge=1, description="Rows whose normalized text is shorter are dropped.")
    max_chars: int | None = Field(None, gt=0, description="Rows whose normalized text is longer are dropped.")
    cap: int | None = Field(None, gt=0, description="Keep at most this many rows (seeded sample after dedup).")
    cap_per_label: int | None = Field(None, gt=0, description="Keep at most this many rows of each label.")
    provenance: list[str] | None = Field(None, description="Keys of the recipe's provenance table.")
    optional: bool = Field(
        False, description="Skip the entry (noted in the stats) when its files do not exist, instead of failing."
    )
    licence: str | None = None
    notes: str | None = None

    @field_validator("inputs", mode="before")
    @classmethod
    def _input_lists(cls, value: Any) -> Any:
        if isinstance(value, dict):
            return {k: (v if isinstance(v, list) else [v]) for k, v in value.items()}
        return value

    @field_validator("provenance", mode="before")
    @classmethod
    def _provenance_list(cls, value: Any) -> Any:
        return [value] if isinstance(value, str) else value

    @field_validator("source")
    @classmethod
    def _source_tag(cls, value: str) -> str:
        Template.parse(value)
        if "{" not in value and not SOURCE_TAG.match(value):
            raise ValueError(f"source tag {value!r} must look like 'family' or 'family/part' (letters, digits, ._+-)")
        return value

    @model_validator(mode="after")
    def _builder_or_files(self) -> SourceEntry:
        if self.builder is None:
            if not self.path:
                raise ValueError("an entry needs a path (files to read) or a builder")
            if self.params or self.inputs:
                raise ValueError("params and inputs belong to builder entries (set builder:)")
            return self
        if self.path:
            raise ValueError("a builder entry reads its files through inputs:, not path:")
        if self.text is not None:
            raise ValueError("a builder entry takes its text from the builder; remove text:")
        builder = BUILDERS.get(self.builder)
        if builder is None:
            raise ValueError(f"unknown builder {self.builder!r}; known builders: {sorted(BUILDERS)}")
        missing = [n for n in builder.required_inputs if n not in self.inputs]
        unknown = [n for n in self.inputs if n not in (*builder.required_inputs, *builder.optional_inputs)]
        if missing or unknown:
            raise ValueError(
                f"builder {self.builder!r} takes inputs {list(builder.required_inputs)} (required) and "
                f"{list(builder.optional_inputs)} (optional); "
                + "; ".join(
                    p for p in (f"missing {missing}" if missing else "", f"unknown {unknown}" if unknown else "") if p
                )
            )
        try:
            params = builder.params.model_validate(self.params)
        except ValidationError as exc:
            problems = "; ".join(f"params.{'.'.join(str(p) for p in e['loc'])}: {_describe(e)}" for e in exc.errors())
            raise ValueError(f"bad parameters for builder {self.builder!r}: {problems}") from None
        problem = builder.check(params, set(self.inputs)) if builder.check else None
        if problem:
            raise ValueError(f"builder {self.builder!r}: {problem}")
        return self

    _position: int = PrivateAttr(default=0)

    @property
    def display_name(self) -> str:
        return self.name or self.source

    @property
    def family(self) -> str:
        """The source family (the tag before '/'); empty when the family part is itself a template."""
        head = self.source.split("/", 1)[0]
        return "" if "{" in head else head

    @property
    def where(self) -> str:
        """``recipe FILE, sources[I] 'NAME'``: how errors name this entry."""
        return f"recipe {self._recipe_file}, sources[{self._position}] {self.display_name!r}"

    def builder_params(self) -> BaseModel:
        assert self.builder is not None
        return BUILDERS[self.builder].params.model_validate(self.params)


class Recipe(_Model):
    """A corpus recipe: labelled sources, their provenance, and the output file name."""

    name: str | None = None
    description: str | None = None
    include: list[str] = Field(default_factory=list, description="Recipes (relative paths) whose sources come first.")
    seed: int = Field(1337, description="Seed of every sample (caps, builders).")
    root: str | None = Field(None, description="Folder (or gs:// prefix) source paths are relative to.")
    corpus_file: str = Field("corpus.csv", pattern=r"^[\w.-]+\.csv$")
    max_chars: int = Field(20_000, gt=0, description="Rows whose normalized text is longer are dropped.")
    provenance: dict[str, Provenance] = Field(default_factory=dict)
    sources: list[SourceEntry] = Field(default_factory=list)

    _path: str = PrivateAttr(default="<recipe>")
    _root: str | None = PrivateAttr(default=None)  # resolved root (absolute or gs://)

    @property
    def path(self) -> str:
        return self._path

    @property
    def resolved_root(self) -> str | None:
        return self._root


# --- loading ------------------------------------------------------------------------------------------------


def _describe(err: dict[str, Any]) -> str:
    if err.get("type") == "extra_forbidden":
        return "unknown field"
    message = str(err.get("msg", "invalid"))
    return message.removeprefix("Value error, ")


_EXTRA_FIELD_OWNERS = {
    "sources": SourceEntry,
    "inputs": InputSpec,
    "filters": RowFilter,
    "extract": Extract,
    "label": LabelSpec,
    "provenance": Provenance,
}


def _allowed_fields(loc: tuple[Any, ...]) -> list[str]:
    owner: type[BaseModel] = Recipe
    for part in reversed(loc[:-1]):
        if isinstance(part, str) and part in _EXTRA_FIELD_OWNERS:
            owner = _EXTRA_FIELD_OWNERS[part]
            break
    return sorted((f.alias or name) for name, f in owner.model_fields.items())


def _format_errors(err: ValidationError, raw: dict[str, Any], where: str) -> str:
    lines = [f"invalid recipe {where}:"]
    sources = raw.get("sources") if isinstance(raw.get("sources"), list) else []
    for e in err.errors():
        loc = tuple(e["loc"])
        prefix = ""
        rest = loc
        if len(loc) >= 2 and loc[0] == "sources" and isinstance(loc[1], int):
            i = loc[1]
            entry = sources[i] if i < len(sources) and isinstance(sources[i], dict) else {}
            name = entry.get("name") or entry.get("source") or "?"
            prefix = f"sources[{i}] {name!r}"
            rest = loc[2:]
        field = ".".join(str(p) for p in rest)
        message = _describe(e)
        if e.get("type") == "extra_forbidden":
            message += f"; allowed fields: {_allowed_fields(loc)}"
        elif "input" in e and e.get("type") != "missing" and not isinstance(e["input"], dict):
            shown = json.dumps(e["input"], default=str)
            shown = shown if len(shown) <= 80 else shown[:77] + "..."
            message = f"value {shown} — {message}"
        target = ", ".join(p for p in (prefix, f"field '{field}'" if field else "") if p) or "<root>"
        lines.append(f"  {target}: {message}")
    return "\n".join(lines)


def _read_yaml(path: str) -> dict[str, Any]:
    from prompt_sentinel import storage

    try:
        text = storage.read_text(path)
    except Exception as exc:
        raise ConfigError(f"cannot read recipe {path}: {exc}") from exc
    try:
        data = yaml.safe_load(text) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"recipe {path} is not valid YAML: {exc}") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"recipe {path} must hold a mapping at the top level")
    return data


def _recipe_dir(path: str) -> Path:
    # abspath, not resolve(): a root reached through a symlinked checkout keeps its spelling in the stats
    return Path(os.path.abspath(path)).parent


def _resolve_root(root: str, base: Path) -> str:
    from prompt_sentinel import storage

    return root if storage.is_gcs(root) else os.path.normpath(os.path.join(base, root))


def load_recipe(path: str | Path, _stack: tuple[str, ...] = ()) -> Recipe:
    """Read and validate a recipe (and the recipes it includes); raises :class:`ConfigError` naming the entry."""
    path = str(path)
    key = str(Path(path).resolve())
    if key in _stack:
        chain = " -> ".join([*_stack, key])
        raise ConfigError(f"recipe {path}: include cycle ({chain})")
    raw = _read_yaml(path)
    try:
        recipe = Recipe.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(_format_errors(exc, raw, path)) from None
    here = _recipe_dir(path)
    for position, entry in enumerate(recipe.sources):
        _bind(entry, here, path, position)
    root = _resolve_root(recipe.root, here) if recipe.root else None
    merged_sources: list[SourceEntry] = []
    merged_provenance: dict[str, Provenance] = {}
    for include in recipe.include:
        included_path = str(here / include)
        if not Path(included_path).is_file():
            raise ConfigError(f"recipe {path}, field 'include': {include!r} is not a file (looked for {included_path})")
        included = load_recipe(included_path, (*_stack, key))
        merged_sources.extend(included.sources)
        merged_provenance.update(included.provenance)
        if root is None:
            root = included.resolved_root
        for fld in ("seed", "corpus_file", "max_chars"):
            if fld not in recipe.model_fields_set:
                setattr(recipe, fld, getattr(included, fld))
    merged_provenance.update(recipe.provenance)
    merged_sources.extend(recipe.sources)
    _check_merged(path, merged_sources, merged_provenance)
    recipe.sources = merged_sources
    recipe.provenance = merged_provenance
    recipe._path = path
    recipe._root = root
    return recipe


def _check_merged(path: str, sources: list[SourceEntry], provenance: dict[str, Provenance]) -> None:
    """Names are unique across included recipes; provenance keys exist (default: the entry's family, if listed)."""
    first: dict[str, SourceEntry] = {}
    for entry in sources:
        if entry.provenance is None and entry.family in provenance:
            entry.provenance = [entry.family]
        other = first.setdefault(entry.display_name, entry)
        if other is not entry:
            raise ConfigError(
                f"recipe {path}: {entry.where} has the same name as {other.where}; give one a distinct name:"
            )
        for ref in entry.provenance or []:
            if ref not in provenance:
                raise ConfigError(
                    f"{entry.where}, field 'provenance': unknown key {ref!r}; the provenance table has "
                    f"{sorted(provenance)}"
                )


def _bind(entry: SourceEntry, recipe_dir: Path, recipe_file: str, position: int) -> None:
    entry._recipe_dir = recipe_dir
    entry._recipe_file = recipe_file
    entry._position = position
    for specs in entry.inputs.values():
        for spec in specs:
            spec._recipe_dir = recipe_dir
            spec._recipe_file = recipe_file


def recipe_from_dict(data: dict[str, Any], where: str = "<recipe>", base_dir: str | Path = ".") -> Recipe:
    """Validate a recipe given as a mapping (tests, programmatic use); relative paths resolve from ``base_dir``."""
    try:
        recipe = Recipe.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(_format_errors(exc, data, where)) from None
    if recipe.include:
        raise ConfigError(f"recipe {where}: include needs a recipe file (use load_recipe)")
    base = Path(os.path.abspath(base_dir))
    for position, entry in enumerate(recipe.sources):
        _bind(entry, base, where, position)
    _check_merged(where, recipe.sources, recipe.provenance)
    recipe._path = where
    recipe._root = _resolve_root(recipe.root, base) if recipe.root else None
    return recipe
