"""Coalesce concurrent requests into one model call, run off the event loop.

Inference runs on a single worker thread, so the event loop keeps answering health probes and parsing
requests while the model works, and the model is never run twice at once (which on a CPU-limited pod would
only make both calls slower). Requests that arrive while a batch runs are merged into the next one, up to
``max_batch`` texts: at concurrency 1 this adds no wait at all; under load, a transformer gets full batches.
"""

from __future__ import annotations

import asyncio
import collections
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import numpy as np

PredictFn = Callable[[list[str]], np.ndarray]


class BatchRunner:
    """Run ``predict(texts) -> proba`` for many callers, merging those that wait into shared batches."""

    def __init__(self, predict: PredictFn, max_batch: int) -> None:
        if max_batch < 1:
            raise ValueError(f"max_batch must be at least 1, got {max_batch}")
        self._predict = predict
        self.max_batch = max_batch
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sentinel-infer")
        self._pending: collections.deque[tuple[list[str], asyncio.Future[np.ndarray]]] = collections.deque()
        self._draining = False
        self._drain_task: asyncio.Task[None] | None = None  # held so the running task is not collected
        self.batches_run = 0

    async def submit(self, texts: list[str]) -> np.ndarray:
        """Probabilities for ``texts`` (one row each), computed in some batch."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[np.ndarray] = loop.create_future()
        self._pending.append((texts, future))
        if not self._draining:
            self._draining = True
            self._drain_task = loop.create_task(self._drain())
        return await future

    def _next_batch(self) -> list[tuple[list[str], asyncio.Future[np.ndarray]]]:
        batch = [self._pending.popleft()]  # the first request always goes, even if over max_batch
        size = len(batch[0][0])
        while self._pending and size + len(self._pending[0][0]) <= self.max_batch:
            item = self._pending.popleft()
            batch.append(item)
            size += len(item[0])
        return [(texts, fut) for texts, fut in batch if not fut.cancelled()]

    async def _drain(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            while self._pending:
                batch = self._next_batch()
                if not batch:
                    continue
                texts = [t for part, _ in batch for t in part]
                try:
                    proba = await loop.run_in_executor(self._executor, self._predict, texts)
                except Exception as exc:
                    for _, fut in batch:
                        if not fut.done():
                            fut.set_exception(exc)
                    continue
                self.batches_run += 1
                start = 0
                for part, fut in batch:
                    if not fut.done():
                        fut.set_result(proba[start : start + len(part)])
                    start += len(part)
        finally:
            self._draining = False

    def run_sync(self, texts: list[str]) -> np.ndarray:
        """Predict outside the event loop (load-time warm-up), on the same inference thread."""
        return self._executor.submit(self._predict, texts).result()

    def close(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)
