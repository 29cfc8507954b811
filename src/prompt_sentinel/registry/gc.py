"""Garbage collection: remove versions that never got their completion marker (crashed or killed pushes).

A version without ``_COMPLETE`` is invisible to readers. Once it has been idle longer than the grace period
(``registry.gc_grace_seconds``) it is removed; younger ones may be pushes in flight and are only reported.
Aliases pointing at missing versions are reported, not changed: where they should point is a human call.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field

from prompt_sentinel.registry import aliases
from prompt_sentinel.registry.backends import Backend
from prompt_sentinel.registry.layout import CLAIM_FILE, COMPLETE_FILE, version_key, version_ref
from prompt_sentinel.registry.versions import version_numbers

log = logging.getLogger(__name__)


@dataclass
class GcReport:
    removed: list[str] = field(default_factory=list)
    in_flight: list[str] = field(default_factory=list)
    swept: int = 0  # leftovers of interrupted local writes (temp files, half-deleted directories)
    dangling_aliases: dict[str, list[str]] = field(default_factory=dict)


def collect_garbage(backend: Backend, names: Sequence[str], grace_seconds: float) -> GcReport:
    """Remove unfinished versions of ``names`` idle for at least ``grace_seconds``; report the rest."""
    report = GcReport()
    for model in names:
        keys = set(backend.list_keys(model))
        complete = set()
        for version in version_numbers(backend, model):
            if version_key(model, version, COMPLETE_FILE) in keys:
                complete.add(version)
                continue
            probe = version_key(model, version, CLAIM_FILE)
            if probe not in keys:
                prefix = version_key(model, version) + "/"
                probe = next((k for k in sorted(keys) if k.startswith(prefix)), probe)
            age = backend.age_seconds(probe)
            ref = version_ref(model, version)
            if age is not None and age < grace_seconds:
                report.in_flight.append(ref)
                continue
            backend.delete_prefix(version_key(model, version))
            report.removed.append(ref)
            log.info("gc: removed unfinished version %s", ref)
        report.swept += backend.sweep(model, grace_seconds)
        dangling = [a for a, v in aliases.current(backend, model).items() if v not in complete]
        if dangling:
            report.dangling_aliases[model] = sorted(dangling)
    return report
