"""Model references: ``name@alias``, ``name/v<N>``, optionally ``<registry root>::`` in front; name and alias rules.

Parsing only: which version a reference points at is :func:`prompt_sentinel.registry.aliases.version_of`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from prompt_sentinel.errors import RegistryError
from prompt_sentinel.messages import clip
from prompt_sentinel.registry.layout import VERSION_DIR_RE

ROOT_SEPARATOR = "::"
LATEST = "latest"
CHAMPION, CANDIDATE, PREVIOUS = "champion", "candidate", "previous"

NAME_RE = re.compile(r"^[a-z0-9][a-z0-9-]{0,62}$")
ALIAS_RE = re.compile(r"^[a-z][a-z0-9_-]{0,62}$")


@dataclass(frozen=True)
class ModelRef:
    """``[root::]name@alias`` or ``[root::]name/v<N>``."""

    name: str
    version: int | None = None
    alias: str | None = None
    root: str | None = None

    def __str__(self) -> str:
        ref = f"{self.name}/v{self.version}" if self.version is not None else f"{self.name}@{self.alias}"
        return f"{self.root}{ROOT_SEPARATOR}{ref}" if self.root else ref

    def local(self) -> ModelRef:
        """The same reference without its registry root."""
        return ModelRef(self.name, self.version, self.alias)


def validate_model_name(name: str) -> str:
    if not isinstance(name, str) or not NAME_RE.match(name):
        raise RegistryError(
            f"invalid model name {clip(name)}: use 1-63 lowercase letters, digits and '-', starting with a letter "
            "or digit"
        )
    return name


def validate_alias(alias: str) -> str:
    if not isinstance(alias, str) or not ALIAS_RE.match(alias) or VERSION_DIR_RE.match(alias):
        raise RegistryError(
            f"invalid alias {clip(alias)}: use 1-63 lowercase letters, digits, '-' or '_', starting with a letter "
            "(and not of the form v<N>)"
        )
    if alias == LATEST:
        raise RegistryError(f"alias {LATEST!r} is reserved: it always means the highest complete version")
    return alias


def parse_ref(ref: str) -> ModelRef:
    """Parse ``name@alias``, ``name/v3`` (``name/3`` too) or either prefixed with ``<registry root>::``."""
    text = str(ref).strip()
    root: str | None = None
    if ROOT_SEPARATOR in text:
        root, _, text = text.rpartition(ROOT_SEPARATOR)
        root = root.strip() or None
    allowed = "expected 'name@alias', 'name/v<N>' or '<registry-root>::name@alias'"
    if "@" in text:
        name, _, alias = text.partition("@")
        validate_model_name(name)
        if alias != LATEST:
            validate_alias(alias)
        return ModelRef(name=name, alias=alias, root=root)
    if "/" in text:
        name, _, version = text.partition("/")
        validate_model_name(name)
        match = re.fullmatch(r"v?([1-9][0-9]*)", version)
        if not match:
            raise RegistryError(f"invalid version {clip(version)} in model reference {clip(ref)}; {allowed}")
        return ModelRef(name=name, version=int(match.group(1)), root=root)
    raise RegistryError(f"invalid model reference {clip(ref)}; {allowed}")


def as_ref(ref: str | ModelRef) -> ModelRef:
    return parse_ref(ref) if isinstance(ref, str) else ref


def looks_like_ref(text: str) -> bool:
    try:
        parse_ref(text)
    except RegistryError:
        return False
    return True
