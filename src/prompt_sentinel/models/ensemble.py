"""Soft-voting ensemble artifacts (``family == "ensemble"``): loaded members and their weights.

The directory is an ordinary model directory: ``sentinel_model.json`` (family ``ensemble``, members and weights
in ``params``), ``ensemble.json`` (the weight search that chose them, written by
:mod:`prompt_sentinel.training.ensemble`) and a verbatim copy of every member under ``members/<name>/``. The
top-level ``checksums.json`` covers the whole tree, so :func:`prompt_sentinel.models.loading.load_model`
verifies it once and loads the members unverified through the ``load_member`` callable it passes in.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from prompt_sentinel.errors import ModelFormatError
from prompt_sentinel.models.base import ModelDescriptor, SentinelModel
from prompt_sentinel.run_layout import ENSEMBLE_MEMBERS_DIR

ENSEMBLE_FAMILY = "ensemble"


def blend(member_proba: Sequence[np.ndarray], weights: Sequence[float]) -> np.ndarray:
    """The weighted average of the members' probabilities (rows still sum to 1)."""
    if len(member_proba) != len(weights) or not member_proba:
        raise ValueError(f"got {len(member_proba)} probability arrays for {len(weights)} weights")
    shapes = {p.shape for p in member_proba}
    if len(shapes) != 1:
        raise ValueError(f"member probabilities differ in shape: {sorted(shapes)}")
    out = np.zeros(member_proba[0].shape, dtype=np.float64)
    for proba, weight in zip(member_proba, weights, strict=True):
        out += weight * np.asarray(proba, dtype=np.float64)
    return out / float(sum(weights))


class EnsembleSentinelModel(SentinelModel):
    """Loaded members and their weights; probabilities are the weighted average of the members'."""

    def __init__(
        self, path: Path, descriptor: ModelDescriptor, members: list[SentinelModel], weights: list[float]
    ) -> None:
        super().__init__(path, descriptor)
        self.members = members
        self.weights = weights

    def _predict_proba(self, texts: list[str], batch_size: int) -> np.ndarray:
        # texts are normalized already (SentinelModel.predict_proba); normalization is idempotent, but members'
        # private hook skips the second pass. Each member's own calibrator applies.
        return blend([m._calibrated_proba(texts, batch_size) for m in self.members], self.weights)

    def warmup(self) -> None:
        for member in self.members:
            member.warmup()


def _member_entries(descriptor: ModelDescriptor) -> list[dict[str, Any]]:
    entries = descriptor.params.get("members")
    if not isinstance(entries, list) or len(entries) < 2:
        raise ModelFormatError("ensemble descriptor: params.members must list at least 2 members")
    for i, entry in enumerate(entries):
        if not isinstance(entry, dict) or not isinstance(entry.get("path"), str):
            raise ModelFormatError(f"ensemble descriptor: params.members[{i}] needs a 'path' string")
        weight = entry.get("weight")
        if not isinstance(weight, int | float) or not weight > 0:
            raise ModelFormatError(f"ensemble descriptor: params.members[{i}].weight must be > 0, got {weight!r}")
        parts = Path(entry["path"]).parts
        if Path(entry["path"]).is_absolute() or ".." in parts or not parts or parts[0] != ENSEMBLE_MEMBERS_DIR:
            raise ModelFormatError(
                f"ensemble descriptor: params.members[{i}].path={entry['path']!r} "
                f"must lie under {ENSEMBLE_MEMBERS_DIR}/"
            )
    return entries


def load_ensemble_model(
    path: Path, descriptor: ModelDescriptor, load_member: Callable[[Path], SentinelModel]
) -> EnsembleSentinelModel:
    """Load the members of a verified ensemble directory (the caller verified the whole tree's checksums).

    ``load_member(member_dir)`` loads one member without re-verifying it.
    """
    members = []
    for entry in _member_entries(descriptor):
        member = load_member(path / entry["path"])
        if member.descriptor.labels != descriptor.labels:
            raise ModelFormatError(
                f"{path / entry['path']}: member labels {member.descriptor.labels.names} differ from the "
                f"ensemble's {descriptor.labels.names}"
            )
        members.append(member)
    return EnsembleSentinelModel(path, descriptor, members, [float(e["weight"]) for e in descriptor.params["members"]])
