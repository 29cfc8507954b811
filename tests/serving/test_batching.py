"""BatchRunner: bounded batches, filled fairly across requests, so a large request cannot hold up a small one."""

from __future__ import annotations

import asyncio
import threading
import time

import numpy as np
import pytest

from serving.batching import BatchRunner


class GatedModel:
    """Records each batch; the first batch waits for ``gate`` so later requests queue up behind it."""

    def __init__(self) -> None:
        self.calls: list[list[str]] = []
        self.gate = threading.Event()

    def __call__(self, texts: list[str]) -> np.ndarray:
        self.calls.append(list(texts))
        if len(self.calls) == 1:
            self.gate.wait(5)
        return np.array([[float(len(t)), 1.0] for t in texts])


def test_large_request_is_split_and_a_small_one_joins_the_next_batch() -> None:
    model = GatedModel()
    big = [f"big-{i}" for i in range(10)]

    async def scenario() -> tuple[np.ndarray, np.ndarray]:
        runner = BatchRunner(model, max_batch=3)
        large = asyncio.ensure_future(runner.submit(big))
        await asyncio.sleep(0.05)  # the first batch of the large request is running
        small = asyncio.ensure_future(runner.submit(["s"]))
        await asyncio.sleep(0.05)
        model.gate.set()
        results = await asyncio.gather(large, small)
        runner.close()
        return results

    large, small = asyncio.run(scenario())
    assert all(len(call) <= 3 for call in model.calls)  # never more than max_batch texts per model call
    assert model.calls[0] == big[:3]
    assert "s" in model.calls[1]  # the small request waited for one batch only
    assert large[:, 0].tolist() == [float(len(t)) for t in big] and small.tolist() == [[1.0, 1.0]]


def test_character_budget_bounds_a_batch_but_never_empties_it() -> None:
    calls: list[list[str]] = []

    def predict(texts: list[str]) -> np.ndarray:
        calls.append(texts)
        return np.zeros((len(texts), 2))

    async def scenario() -> np.ndarray:
        runner = BatchRunner(predict, max_batch=32, max_batch_chars=100)
        result = await runner.submit(["x" * 60, "x" * 60, "x" * 30, "x" * 250, "x"])
        runner.close()
        return result

    assert asyncio.run(scenario()).shape == (5, 2)
    assert [[len(t) for t in call] for call in calls] == [[60], [60, 30], [250], [1]]


def test_requests_are_served_round_robin() -> None:
    model = GatedModel()

    async def scenario() -> None:
        runner = BatchRunner(model, max_batch=4)
        first = asyncio.ensure_future(runner.submit(["0"]))
        await asyncio.sleep(0.05)
        rest = [asyncio.ensure_future(runner.submit([f"{r}{i}" for i in range(3)])) for r in "abc"]
        await asyncio.sleep(0.05)
        model.gate.set()
        results = await asyncio.gather(first, *rest)
        assert [r.shape[0] for r in results] == [1, 3, 3, 3]
        runner.close()

    asyncio.run(scenario())
    assert model.calls == [["0"], ["a0", "b0", "c0", "a1"], ["b1", "c1", "a2", "b2"], ["c2"]]


def test_worker_pool_runs_batches_concurrently() -> None:
    active, peak = 0, 0
    lock = threading.Lock()

    def predict(texts: list[str]) -> np.ndarray:
        nonlocal active, peak
        with lock:
            active += 1
            peak = max(peak, active)
        time.sleep(0.05)
        with lock:
            active -= 1
        return np.zeros((len(texts), 1))

    async def scenario(workers: int) -> None:
        runner = BatchRunner(predict, max_batch=1, workers=workers)
        await asyncio.gather(*(runner.submit([str(i)]) for i in range(6)))
        runner.close()

    asyncio.run(scenario(1))
    assert peak == 1
    asyncio.run(scenario(3))
    assert peak == 3


def test_a_cancelled_request_is_dropped_and_errors_reach_every_waiter() -> None:
    calls: list[list[str]] = []

    def predict(texts: list[str]) -> np.ndarray:
        calls.append(texts)
        if "boom" in texts:
            raise RuntimeError("model exploded")
        time.sleep(0.02)
        return np.zeros((len(texts), 1))

    async def scenario() -> list[object]:
        runner = BatchRunner(predict, max_batch=2)
        doomed = asyncio.ensure_future(runner.submit([f"d{i}" for i in range(20)]))
        await asyncio.sleep(0.01)
        doomed.cancel()
        results = await asyncio.gather(runner.submit(["boom"]), runner.submit(["x"]), return_exceptions=True)
        runner.close()
        return results

    boom, other = asyncio.run(scenario())
    assert sum(len(c) for c in calls) < 20 + 2  # the cancelled request's remaining texts were never run
    assert isinstance(boom, RuntimeError) and "model exploded" in str(boom)
    assert isinstance(other, RuntimeError | np.ndarray)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"max_batch": 0}, "max_batch must be at least 1, got 0"),
        ({"max_batch": 1, "workers": 0}, "workers must be at least 1, got 0"),
        ({"max_batch": 1, "max_batch_chars": 0}, "max_batch_chars must be at least 1, got 0"),
    ],
)
def test_limits_are_checked(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        BatchRunner(lambda texts: np.zeros((len(texts), 1)), **kwargs)
