"""The parity gate: an exported backend is used only if it gives the reference's answers.

A *classifier* export (a fine-tuned transformer, or a scikit-learn pipeline whose featurizer runs an exported
encoder) passes when, on the parity set (the validation split, or a sample of training texts when there is none):

* labels under the artifact's decision rule agree with torch's on ≥ ``MIN_LABEL_AGREEMENT`` of the rows, and
* no class probability moves by more than ``MAX_PROBA_DELTA``.

An *encoder* export (the featurizer's sentence encoder, cached per machine) passes when every probe embedding
has cosine similarity ≥ ``MIN_ENCODER_COSINE`` with torch's. That bound is only a sanity check on the export
itself (it refuses per-tensor int8, whose worst probe cosine is ≈ 0.88, and accepts per-channel int8, ≈ 0.98);
what decides whether a model may use it is the classifier gate on that model's own validation split.

The outcome is stored in the model descriptor (``params.inference``) and shown in the model card.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from prompt_sentinel.inference.backends import SPEED_ORDER, Backend

MIN_LABEL_AGREEMENT = 0.995
MAX_PROBA_DELTA = 0.02
# fp32 ONNX reproduces torch to ~1e-7; per-channel int8 MiniLM scores a worst-case cosine of 0.983 on the
# shared test prompts and 0.98+ on the bundled probe set, per-tensor int8 0.877 (and flips labels).
MIN_ENCODER_COSINE = 0.97
RECORD_VERSION = 1
PARAMS_KEY = "inference"


class BackendParity(BaseModel):
    """How one backend compared with the torch reference on the parity set."""

    model_config = ConfigDict(extra="allow")

    passed: bool
    rows: int = 0
    label_agreement: float | None = None
    max_abs_proba_delta: float | None = None
    min_cosine: float | None = None
    mean_cosine: float | None = None
    file: str | None = Field(None, description="ONNX file, relative to the artifact directory (when shipped in it).")
    sha256: str | None = None
    reason: str | None = None


class InferenceRecord(BaseModel):
    """What an artifact (or an encoder cache entry) knows about its backends; ``auto`` = fastest that passed."""

    model_config = ConfigDict(extra="allow")

    format_version: int = RECORD_VERSION
    kind: str = Field(description="'classifier' (answers compared) or 'encoder' (embeddings compared).")
    parity_set: str = Field(description="What the backends were compared on, e.g. 'validation split (590 rows)'.")
    thresholds: dict[str, float] = Field(default_factory=dict)
    backends: dict[str, BackendParity] = Field(default_factory=dict)
    auto: Backend = "torch"
    versions: dict[str, str] = Field(default_factory=dict)

    def passed(self) -> list[Backend]:
        return [b for b in SPEED_ORDER if b == "torch" or (b in self.backends and self.backends[b].passed)]


def classifier_thresholds() -> dict[str, float]:
    return {"min_label_agreement": MIN_LABEL_AGREEMENT, "max_abs_proba_delta": MAX_PROBA_DELTA}


def classifier_parity(
    reference_proba: np.ndarray,
    candidate_proba: np.ndarray,
    reference_labels: np.ndarray,
    candidate_labels: np.ndarray,
) -> BackendParity:
    """Compare a candidate backend's probabilities and labels with the reference's on the same rows."""
    ref = np.asarray(reference_proba, dtype=np.float64)
    cand = np.asarray(candidate_proba, dtype=np.float64)
    if ref.shape != cand.shape:
        return BackendParity(passed=False, rows=len(ref), reason=f"output shape {cand.shape} != {ref.shape}")
    if len(ref) == 0:
        return BackendParity(passed=False, rows=0, reason="empty parity set")
    if not np.isfinite(cand).all():
        return BackendParity(passed=False, rows=len(ref), reason="non-finite probabilities")
    agreement = float(np.mean(np.asarray(reference_labels) == np.asarray(candidate_labels)))
    delta = float(np.abs(ref - cand).max())
    failures = []
    if agreement < MIN_LABEL_AGREEMENT:
        failures.append(f"label agreement {agreement:.4f} < {MIN_LABEL_AGREEMENT}")
    if delta > MAX_PROBA_DELTA:
        failures.append(f"max |Δprobability| {delta:.4f} > {MAX_PROBA_DELTA}")
    return BackendParity(
        passed=not failures,
        rows=len(ref),
        label_agreement=agreement,
        max_abs_proba_delta=delta,
        reason="; ".join(failures) or None,
    )


def encoder_parity(reference: np.ndarray, candidate: np.ndarray) -> BackendParity:
    """Cosine similarity of candidate embeddings with the reference's (rows are compared pairwise)."""
    ref = np.asarray(reference, dtype=np.float64)
    cand = np.asarray(candidate, dtype=np.float64)
    if ref.shape != cand.shape or len(ref) == 0:
        return BackendParity(passed=False, rows=len(ref), reason=f"embedding shape {cand.shape} != {ref.shape}")
    norms = np.linalg.norm(ref, axis=1) * np.linalg.norm(cand, axis=1)
    cosine = (ref * cand).sum(axis=1) / np.maximum(norms, 1e-12)
    low = float(cosine.min()) if np.isfinite(cosine).all() else float("nan")
    passed = bool(low >= MIN_ENCODER_COSINE)
    return BackendParity(
        passed=passed,
        rows=len(ref),
        min_cosine=low if np.isfinite(low) else None,
        mean_cosine=float(np.nanmean(cosine)),
        reason=None if passed else f"min cosine {low:.4f} < {MIN_ENCODER_COSINE}",
    )


def fastest_passed(backends: dict[str, BackendParity]) -> Backend:
    return next(b for b in SPEED_ORDER if b == "torch" or (b in backends and backends[b].passed))


def record_from_params(params: Any) -> InferenceRecord | None:
    """The :class:`InferenceRecord` stored in a descriptor's ``params`` (None for artifacts without one)."""
    raw = params.get(PARAMS_KEY) if isinstance(params, dict) else None
    if not isinstance(raw, dict):
        return None
    return InferenceRecord.model_validate(raw)


def describe(record: InferenceRecord) -> list[tuple[str, str]]:
    """(backend, one-line summary) rows for logs and model cards."""
    rows = []
    for name in SPEED_ORDER:
        entry = record.backends.get(name)
        if entry is None:
            continue
        parts = ["passed" if entry.passed else "refused"]
        if entry.label_agreement is not None:
            parts.append(f"label agreement {entry.label_agreement:.4f}")
        if entry.max_abs_proba_delta is not None:
            parts.append(f"max |Δp| {entry.max_abs_proba_delta:.4f}")
        if entry.min_cosine is not None:
            parts.append(f"min cosine {entry.min_cosine:.4f}")
        if entry.reason and not entry.passed:
            parts.append(entry.reason)
        rows.append((name, ", ".join(parts)))
    return rows


def versions() -> dict[str, str]:
    import importlib.metadata as md

    out = {}
    for package in ("torch", "onnx", "onnxruntime", "onnxscript", "transformers"):
        try:
            out[package] = md.version(package)
        except md.PackageNotFoundError:
            continue
    return out


def summary_line(where: str, results: dict[str, BackendParity], reference: str = "torch") -> str:
    """One log line: which exports were kept and which refused (with why)."""
    parts = [f"{b}: {'kept' if r.passed else 'REFUSED (' + (r.reason or '?') + ')'}" for b, r in results.items()]
    return f"{where}: parity vs {reference}: " + "; ".join(parts)


def sample_texts(texts: Sequence[str], limit: int, seed: int = 0) -> list[str]:
    """At most ``limit`` texts, a seeded sample (in the original order) when there are more."""
    if len(texts) <= limit:
        return list(texts)
    rng = np.random.default_rng(seed)
    keep = np.sort(rng.choice(len(texts), size=limit, replace=False))
    return [texts[i] for i in keep]
