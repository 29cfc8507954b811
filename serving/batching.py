"""Run the model off the event loop in bounded batches, shared fairly between concurrent requests.

Inference runs on a small worker pool (``serving.inference_threads``, default 1), so the event loop keeps answering
health probes and parsing requests while the model works. Every request is split into its texts, and batches are
filled **round-robin across the waiting requests**, one text per request per round, up to ``max_batch`` texts
and ``max_batch_chars`` characters. So a request that arrives while a maximum-size request is being served waits
for at most the batch in flight: the next batch already holds its first text. At concurrency 1 a request's texts
go out in as few batches as the limits allow, with no added wait; under load, a transformer still gets full
batches.
"""

from __future__ import annotations

import asyncio
import collections
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np

PredictFn = Callable[[list[str]], np.ndarray]


@dataclass
class _Job:
    """One request: its texts, how many have been handed out, and the result rows received so far."""

    texts: list[str]
    future: asyncio.Future[np.ndarray]
    next_text: int = 0
    rows: list[np.ndarray | None] = field(default_factory=list)
    pending: int = 0  # texts handed to batches whose result has not come back yet

    def __post_init__(self) -> None:
        self.rows = [None] * len(self.texts)


class BatchRunner:
    """Run ``predict(texts) -> proba`` for many callers in bounded batches on a bounded worker pool."""

    def __init__(
        self, predict: PredictFn, max_batch: int, max_batch_chars: int | None = None, workers: int = 1
    ) -> None:
        for name, value in (("max_batch", max_batch), ("workers", workers)):
            if value < 1:
                raise ValueError(f"{name} must be at least 1, got {value}")
        if max_batch_chars is not None and max_batch_chars < 1:
            raise ValueError(f"max_batch_chars must be at least 1, got {max_batch_chars}")
        self._predict = predict
        self.max_batch = max_batch
        self.max_batch_chars = max_batch_chars
        self.workers = workers
        self._executor = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="sentinel-infer")
        self._queue: collections.deque[_Job] = collections.deque()
        self._running = 0
        self._tasks: set[asyncio.Task[None]] = set()  # held so running batches are not garbage-collected
        self.batches_run = 0

    async def submit(self, texts: list[str]) -> np.ndarray:
        """Probabilities for ``texts`` (one row each), computed in one or more shared batches."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[np.ndarray] = loop.create_future()
        if not texts:
            raise ValueError("submit needs at least one text")
        self._queue.append(_Job(list(texts), future))
        self._dispatch()
        return await future

    def next_batch(self) -> list[tuple[_Job, int]]:
        """(job, text index) pairs of the next batch: round-robin over the waiting jobs, within both limits."""
        batch: list[tuple[_Job, int]] = []
        chars = 0
        while self._queue and len(batch) < self.max_batch:
            job = self._queue[0]
            if job.future.done():  # cancelled (client gone) or failed: drop its remaining texts
                self._queue.popleft()
                continue
            size = len(job.texts[job.next_text])
            if batch and self.max_batch_chars is not None and chars + size > self.max_batch_chars:
                break  # the first text always goes, however long: a batch is never empty
            self._queue.popleft()
            batch.append((job, job.next_text))
            chars += size
            job.next_text += 1
            job.pending += 1
            if job.next_text < len(job.texts):
                self._queue.append(job)  # back of the line: the others get their turn first
        return batch

    def _dispatch(self) -> None:
        loop = asyncio.get_running_loop()
        while self._running < self.workers:
            batch = self.next_batch()
            if not batch:
                return
            self._running += 1
            task = loop.create_task(self._run(batch))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _run(self, batch: list[tuple[_Job, int]]) -> None:
        loop = asyncio.get_running_loop()
        texts = [job.texts[i] for job, i in batch]
        try:
            proba = await loop.run_in_executor(self._executor, self._predict, texts)
            self.batches_run += 1
            for row, (job, i) in zip(np.asarray(proba), batch, strict=True):
                job.rows[i] = row
                job.pending -= 1
                if job.pending == 0 and job.next_text == len(job.texts) and not job.future.done():
                    job.future.set_result(np.stack(job.rows))
        except Exception as exc:
            for job, _ in batch:
                if not job.future.done():
                    job.future.set_exception(exc)
        finally:
            self._running -= 1
            self._dispatch()

    def run_sync(self, texts: list[str]) -> np.ndarray:
        """Predict outside the event loop (load-time warm-up), on the same worker pool."""
        return self._executor.submit(self._predict, texts).result()

    def close(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)
