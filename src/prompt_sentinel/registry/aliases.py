"""Movable aliases: ``<name>/aliases.json`` updated by compare-and-swap, with a history of every change.

Every update reads the file with its generation, applies a pure ``mutate`` function and writes only if the file
is still at that generation; on a conflict it re-reads and re-applies, so concurrent updates are never lost.
Which version a reference (``name@alias``, ``name/v<N>``, ``name@latest``) points at is decided here too.
"""

from __future__ import annotations

import logging
import random
import time
import uuid
from collections.abc import Callable, Sequence
from typing import Any

from prompt_sentinel.errors import RegistryError
from prompt_sentinel.registry.backends import Backend, Generation
from prompt_sentinel.registry.layout import aliases_key
from prompt_sentinel.registry.records import json_bytes, load_json, now
from prompt_sentinel.registry.refs import CHAMPION, LATEST, PREVIOUS, ModelRef, validate_alias, validate_model_name
from prompt_sentinel.registry.versions import complete_versions, ensure_known_model, is_complete

log = logging.getLogger(__name__)

Changes = dict[str, int | None]  # alias → new version, None = removed
_HISTORY_KEEP = 200
_MAX_CAS_ATTEMPTS = 100


def read_state(backend: Backend, name: str) -> tuple[dict[str, Any], Generation]:
    """``{"aliases": {...}, "history": [...]}`` and its generation (an empty state when the file is absent)."""
    key = aliases_key(name)
    data, generation = backend.read_versioned(key)
    if data is None:
        return {"aliases": {}, "history": []}, generation
    state = load_json(data, backend.uri(key))
    if not isinstance(state, dict) or not isinstance(state.get("aliases"), dict):
        raise RegistryError(f"{backend.uri(key)}: malformed alias file")
    state.setdefault("history", [])
    return state, generation


def current(backend: Backend, name: str) -> dict[str, int]:
    """Alias → version for ``name``."""
    validate_model_name(name)
    return {k: int(v) for k, v in read_state(backend, name)[0]["aliases"].items()}


def history(backend: Backend, name: str) -> list[dict[str, Any]]:
    return list(read_state(backend, name)[0]["history"])


def update(backend: Backend, name: str, op: str, mutate: Callable[[dict[str, int]], dict[str, int]]) -> Changes:
    """Compare-and-swap ``aliases.json``; returns the aliases that changed (None = removed).

    ``mutate`` receives a copy of the current aliases and returns the new mapping (or raises, leaving the
    registry unchanged). On a conflict the file is re-read and ``mutate`` re-applied, so no concurrent update
    is lost. Each update carries an id recorded in the history, which makes a retried write whose first
    attempt did land (lost response) a no-op instead of a double application.
    """
    key = aliases_key(name)
    op_id = uuid.uuid4().hex
    for attempt in range(_MAX_CAS_ATTEMPTS):
        state, generation = read_state(backend, name)
        before = {k: int(v) for k, v in state["aliases"].items()}
        if any(entry.get("op_id") == op_id for entry in state["history"]):
            return {}
        after = mutate(dict(before))
        changes = {a: after.get(a) for a in set(before) | set(after) if before.get(a) != after.get(a)}
        if not changes:
            return {}
        entry = {"op_id": op_id, "at": now(), "op": op, "changes": changes}
        new_state = {"aliases": dict(sorted(after.items())), "history": [*state["history"], entry][-_HISTORY_KEEP:]}
        if backend.write_if(key, json_bytes(new_state), generation):
            log.info("%s: %s (%s)", name, op, ", ".join(f"{a}→{v}" for a, v in sorted(changes.items())))
            return changes
        time.sleep(min(1.0, 0.01 * (2 ** min(attempt, 6))) * random.uniform(0.5, 1.5))
    raise RegistryError(f"{backend.uri(key)}: too much contention, gave up after {_MAX_CAS_ATTEMPTS} tries")


def assign(
    backend: Backend, name: str, version: int, aliases: Sequence[str], promote: bool | None, op: str | None = None
) -> Changes:
    """Point every alias in ``aliases`` at ``version`` in ONE atomic update.

    ``promote`` keeps the displaced version as ``previous`` (for ``champion``) or ``previous-<alias>``;
    None promotes only ``champion`` and plainly sets the rest (what a push does).
    """
    aliases = [validate_alias(a) for a in aliases]
    if not is_complete(backend, name, version):
        raise RegistryError(
            f"{name} has no version v{version} in {backend.root}; cannot point {', '.join(aliases)} at it"
        )

    def mutate(state: dict[str, int]) -> dict[str, int]:
        for alias in aliases:
            old = state.get(alias)
            state[alias] = version
            if (alias == CHAMPION if promote is None else promote) and old is not None and old != version:
                state[PREVIOUS if alias == CHAMPION else f"{PREVIOUS}-{alias}"] = old
        return state

    verb = "promote" if promote else "set"
    return update(backend, name, op or f"{verb} {','.join(aliases)}=v{version}", mutate)


def remove(backend: Backend, name: str, alias: str) -> Changes:
    validate_alias(alias)

    def mutate(state: dict[str, int]) -> dict[str, int]:
        if alias not in state:
            raise RegistryError(f"{name} has no alias {alias!r}; aliases: {', '.join(sorted(state)) or 'none'}")
        del state[alias]
        return state

    return update(backend, name, f"remove {alias}", mutate)


def rollback(backend: Backend, name: str) -> Changes:
    """Swap ``champion`` and ``previous`` (champion ← previous), atomically; rolling back twice undoes it."""

    def mutate(state: dict[str, int]) -> dict[str, int]:
        if PREVIOUS not in state:
            raise RegistryError(f"{name} has no {PREVIOUS!r} alias to roll back to")
        if not is_complete(backend, name, state[PREVIOUS]):
            raise RegistryError(f"{name}@{PREVIOUS} points at v{state[PREVIOUS]}, which does not exist")
        old_champion = state.get(CHAMPION)
        state[CHAMPION] = state.pop(PREVIOUS)
        if old_champion is not None and old_champion != state[CHAMPION]:
            state[PREVIOUS] = old_champion
        return state

    return update(backend, name, "rollback", mutate)


def version_of(backend: Backend, ref: ModelRef) -> tuple[str, int]:
    """``(name, version)`` a root-less reference points at; the version is complete (visible)."""
    name = ref.name
    ensure_known_model(backend, name)
    if ref.version is not None:
        if not is_complete(backend, name, ref.version):
            complete = complete_versions(backend, name)
            raise RegistryError(
                f"{name} has no version v{ref.version} in {backend.root}; "
                + (f"versions: {', '.join(f'v{v}' for v in complete)}" if complete else "no complete versions")
            )
        return name, ref.version
    if ref.alias == LATEST:
        complete = complete_versions(backend, name)
        if not complete:
            raise RegistryError(f"{name} has no complete versions in {backend.root}")
        return name, complete[-1]
    aliases = current(backend, name)
    if ref.alias not in aliases:
        raise RegistryError(
            f"{name} has no alias {ref.alias!r}; aliases: "
            + (", ".join(f"{a}→v{v}" for a, v in sorted(aliases.items())) or "none")
        )
    version = aliases[ref.alias]
    if not is_complete(backend, name, version):
        raise RegistryError(f"alias {name}@{ref.alias} points at v{version}, which does not exist in {backend.root}")
    return name, version
