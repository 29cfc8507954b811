"""Efficiency: in-process CPU latency and throughput, size on disk, peak memory.

Latency is measured around ``model.predict_proba`` (normalization included, no HTTP), after a warm-up, so it
is the model's own cost — what a KServe predictor adds on top is measured by the serving benchmark.

Peak memory is reported two ways, because neither alone is the whole truth:

* ``peak_memory_mb`` — ``tracemalloc`` peak above the starting point during one batch prediction: Python and
  NumPy allocations (NumPy reports to tracemalloc), but not native libraries such as torch's tensor allocator.
* ``rss_peak_delta_mb`` — growth of the process's maximum resident set size (``resource.getrusage``
  ``ru_maxrss``) over the whole measurement: includes native memory, but is 0 when the process had already
  peaked higher earlier (e.g. during training in the same process).
"""

from __future__ import annotations

import sys
import time
import tracemalloc
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from prompt_sentinel.errors import DataError
from prompt_sentinel.models.base import SentinelModel

THROUGHPUT_BATCH_SIZE = 32
THROUGHPUT_BATCHES = 4
PEAK_MEMORY_METHOD = (
    "peak_memory_mb: tracemalloc peak during one batch-32 prediction (Python + NumPy allocations, "
    "not torch-native); rss_peak_delta_mb: resource.getrusage ru_maxrss growth (0 if the process peaked earlier)"
)


def directory_size_bytes(path: str | Path) -> int:
    root = Path(path)
    if root.is_file():
        return root.stat().st_size
    return sum(p.stat().st_size for p in root.rglob("*") if p.is_file())


def _max_rss_bytes() -> int | None:
    try:
        import resource
    except ImportError:  # not on POSIX
        return None
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss if sys.platform == "darwin" else rss * 1024  # Linux reports KiB, macOS bytes


def _cycle(texts: Sequence[str], n: int) -> list[str]:
    return [texts[i % len(texts)] for i in range(n)]


def measure_efficiency(
    model: SentinelModel,
    texts: Sequence[str],
    repeats: int,
    batch_size: int = THROUGHPUT_BATCH_SIZE,
) -> dict[str, Any]:
    """Latency p50/p95 at batch 1 over ``repeats`` calls, throughput at ``batch_size``, size, peak memory."""
    if not texts:
        raise DataError("efficiency needs at least one text to time")
    if repeats < 1:
        raise ValueError(f"repeats must be >= 1, got {repeats}")
    rss_before = _max_rss_bytes()
    model.warmup()

    singles = _cycle(texts, repeats)
    latencies = np.empty(repeats)
    for i, text in enumerate(singles):
        started = time.perf_counter()
        model.predict_proba([text], batch_size=1)
        latencies[i] = (time.perf_counter() - started) * 1000.0

    batch = _cycle(texts, batch_size)
    started = time.perf_counter()
    for _ in range(THROUGHPUT_BATCHES):
        model.predict_proba(batch, batch_size=batch_size)
    elapsed = time.perf_counter() - started

    tracemalloc.start()
    try:
        base, _ = tracemalloc.get_traced_memory()
        model.predict_proba(batch, batch_size=batch_size)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    rss_after = _max_rss_bytes()

    threads: int | None = None
    if "torch" in sys.modules:
        threads = int(sys.modules["torch"].get_num_threads())
    size = directory_size_bytes(model.path)
    return {
        "latency_p50_ms": float(np.percentile(latencies, 50)),
        "latency_p95_ms": float(np.percentile(latencies, 95)),
        "latency_mean_ms": float(latencies.mean()),
        "latency_repeats": repeats,
        "throughput_per_s": float(THROUGHPUT_BATCHES * batch_size / elapsed) if elapsed > 0 else None,
        "throughput_batch_size": batch_size,
        "size_bytes": size,
        "size_mb": size / 1e6,
        "peak_memory_mb": max(peak - base, 0) / 1e6,
        "rss_peak_delta_mb": (rss_after - rss_before) / 1e6 if rss_before is not None and rss_after else None,
        "peak_memory_method": PEAK_MEMORY_METHOD,
        "device": str(getattr(model, "device", "cpu")),
        "torch_threads": threads,
        "inference_backend": model.inference_backend,
    }
