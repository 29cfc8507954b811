"""Record templates for corpus recipes: ``"{instruction}[[\n\n{instances[0][input]}]]"``.

Fields use Python's format-field syntax (``{a}``, ``{a[0]}``, ``{a[key]}``, ``{a.key}``) resolved against a record
(a dict); a missing key or index gives an empty value. A ``[[...]]`` section is left out when any field inside it
is empty, so optional fields leave no dangling separators. Values render as text with :func:`as_text` (lists one
item per line, objects as JSON). Format specs and conversions are not allowed: templates only place values.
"""

from __future__ import annotations

import _string  # type: ignore[import-not-found]  # the field-name parser str.format itself uses
import json
import re
import string
from dataclasses import dataclass
from typing import Any

__all__ = ["Template", "as_text", "resolve_field", "top_field"]

_OPTIONAL_SECTION = re.compile(r"\[\[(.*?)\]\]", re.S)


def as_text(value: Any) -> str:
    """The string form of a record value used by templates, filters and label maps (None → '')."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        if value != value:  # NaN from a Parquet/CSV null
            return ""
        if value.is_integer():
            return str(int(value))
    if isinstance(value, list | tuple):
        return "\n".join(as_text(v) for v in value)
    if isinstance(value, dict):
        return json.dumps(value, ensure_ascii=False)
    return str(value)


def _split_field(name: str) -> tuple[str, list[tuple[bool, Any]]]:
    try:
        first, rest = _string.formatter_field_name_split(name)
        return str(first), list(rest)
    except ValueError as exc:
        raise ValueError(f"invalid field reference {name!r} ({exc})") from None


def top_field(name: str) -> str:
    """The record key a field reference starts with (``instances[0][input]`` → ``instances``)."""
    return _split_field(name)[0]


_MISSING = object()


def resolve_field(record: dict[str, Any], name: str) -> Any:
    """The value of ``name`` (``a``, ``a[0]``, ``a[key]``, ``a.key``) in ``record``; None when absent."""
    first, rest = _split_field(name)
    value: Any = record.get(first, _MISSING)
    if value is _MISSING:
        return None
    for _is_attr, key in rest:
        try:
            value = value[key]
        except (KeyError, IndexError, TypeError):
            return None
    return value


@dataclass(frozen=True)
class _Piece:
    literal: str
    field: str | None


@dataclass(frozen=True)
class Template:
    """A text template: format fields plus ``[[...]]`` sections dropped when one of their fields is empty."""

    source: str
    sections: tuple[tuple[bool, tuple[_Piece, ...]], ...]  # (optional, pieces)

    @classmethod
    def parse(cls, source: str) -> Template:
        sections: list[tuple[bool, tuple[_Piece, ...]]] = []
        pos = 0
        for match in _OPTIONAL_SECTION.finditer(source):
            sections.append((False, cls._pieces(source[pos : match.start()])))
            sections.append((True, cls._pieces(match.group(1))))
            pos = match.end()
        sections.append((False, cls._pieces(source[pos:])))
        return cls(source, tuple(sections))

    @staticmethod
    def _pieces(text: str) -> tuple[_Piece, ...]:
        pieces = []
        try:
            parsed = list(string.Formatter().parse(text))
        except ValueError as exc:
            raise ValueError(f"invalid template {text!r}: {exc}") from None
        for literal, field, spec, conversion in parsed:
            if field is not None:
                if not field:
                    raise ValueError("a template field needs a name ('{}' and '{0}' are not allowed)")
                if spec or conversion:
                    raise ValueError(f"template field {{{field}}} may not have a format spec or conversion")
                top_field(field)
            pieces.append(_Piece(literal, field))
        return tuple(pieces)

    @property
    def fields(self) -> list[str]:
        return [p.field for _, pieces in self.sections for p in pieces if p.field is not None]

    @property
    def top_fields(self) -> list[str]:
        return sorted({top_field(f) for f in self.fields})

    def render(self, record: dict[str, Any]) -> str:
        out = []
        for optional, pieces in self.sections:
            parts = []
            empty = False
            for piece in pieces:
                parts.append(piece.literal)
                if piece.field is not None:
                    value = as_text(resolve_field(record, piece.field))
                    empty = empty or not value.strip()
                    parts.append(value)
            if not (optional and empty):
                out.append("".join(parts))
        return "".join(out)
