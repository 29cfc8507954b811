"""Showing user-supplied values inside error messages without letting them take over the message.

A value from a file or a request can be megabytes long (a 5,000-digit "label", a header line that is really a
prompt). Messages show it through :func:`clip`: a string as its ``repr`` (so control characters and quotes are visible),
cut to a fixed length with the full length stated.
"""

from __future__ import annotations

from typing import Any

DEFAULT_LIMIT = 60


def clip(value: Any, limit: int = DEFAULT_LIMIT) -> str:
    """``repr`` of a string, ``str`` of anything else, cut to about ``limit`` characters:
    ``'99999…' (5,000 characters)``.

    Strings are cut before ``repr`` so the length named is the value's own; other values are cut after.
    """
    if isinstance(value, str):
        if len(value) <= limit:
            return repr(value)
        return f"{value[:limit]!r}… ({len(value):,} characters)"
    text = str(value)  # numbers as people write them (5, not np.int64(5))
    if len(text) <= limit:
        return text
    return f"{text[:limit]}… ({type(value).__name__}, {len(text):,} characters as text)"


def clip_list(values: list[Any], limit: int = DEFAULT_LIMIT, items: int = 10) -> str:
    """A list shown with each item clipped and at most ``items`` items (``[...] and 95 more``)."""
    shown = ", ".join(clip(v, limit) for v in values[:items])
    more = f" and {len(values) - items:,} more" if len(values) > items else ""
    return f"[{shown}]{more}"
