"""Predict each distinct text once: evaluation's batched, length-sorted, memoized view of a model.

Evaluation asks a model about the test set, the blind set, the robustness baseline (a subset of the test set)
and nine transforms of it, and the false-alarm probe — many of them the same text after normalization (the
zero-width and full-width transforms are undone by it). :class:`PredictionMemo` collects every text up front
(:meth:`prefetch`), normalizes and de-duplicates them, sorts them by length so batches pad little, predicts them
in chunks under one progress bar, and answers every later ``predict_proba``/``predict`` from that table. It
behaves like the wrapped :class:`~prompt_sentinel.models.base.SentinelModel` otherwise (labels, decision rule).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from prompt_sentinel.models.base import SentinelModel
from prompt_sentinel.text import normalize_text

CHUNK = 512  # texts per model call: big enough for full batches, small enough for a lively progress bar


class PredictionMemo:
    """A read-through table of class probabilities per normalized text, in front of ``model``."""

    def __init__(self, model: SentinelModel, batch_size: int = 64) -> None:
        self.model = model
        self.batch_size = batch_size
        self._rows: dict[str, int] = {}
        self._chunks: list[np.ndarray] = []
        self._table: np.ndarray | None = None
        self.predicted = 0  # distinct texts sent to the model
        self.requested = 0  # texts asked for (prefetch + lookups)

    def __getattr__(self, name: str) -> Any:  # labels, roles, descriptor, path, family, labels_for, decide …
        return getattr(self.model, name)

    def prefetch(self, texts: Sequence[str], progress: bool = False, desc: str = "predicting") -> None:
        """Predict every not-yet-seen distinct text of ``texts`` (longest first, in chunks)."""
        todo = {normalize_text(t) for t in texts}
        todo.difference_update(self._rows)
        if not todo:
            return
        ordered = sorted(todo, key=len, reverse=True)
        bar = None
        if progress:
            from tqdm.auto import tqdm

            bar = tqdm(total=len(ordered), desc=desc, unit="text", leave=False)
        try:
            for start in range(0, len(ordered), CHUNK):
                chunk = ordered[start : start + CHUNK]
                proba = self.model.predict_proba(chunk, batch_size=self.batch_size)
                base = len(self._rows)
                self._rows.update({text: base + i for i, text in enumerate(chunk)})
                self._chunks.append(np.asarray(proba, dtype=np.float32))
                self._table = None
                self.predicted += len(chunk)
                if bar is not None:
                    bar.update(len(chunk))
        finally:
            if bar is not None:
                bar.close()

    def predict_proba(self, texts: Sequence[str], batch_size: int = 64) -> np.ndarray:
        if len(texts) == 0:
            return np.zeros((0, len(self.model.labels)), dtype=np.float32)
        normalized = [normalize_text(t) for t in texts]
        self.requested += len(normalized)
        self.prefetch(normalized)
        if self._table is None:
            self._table = np.concatenate(self._chunks) if len(self._chunks) > 1 else self._chunks[0]
            self._chunks = [self._table]
        return self._table[[self._rows[t] for t in normalized]]

    def predict(self, texts: Sequence[str], batch_size: int = 64) -> np.ndarray:
        return self.model.labels_for(self.predict_proba(texts, batch_size=batch_size))
