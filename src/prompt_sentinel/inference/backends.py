"""Inference backends: which one runs a model, with how many threads, and the checks that pick it.

Backends, from the reference to the fastest on CPU:

* ``torch`` — eager PyTorch (the reference every export is compared against; the only one used on GPU);
* ``onnx`` — ONNX Runtime, fp32, graph optimizations on;
* ``onnx-int8`` — ONNX Runtime with dynamically quantized (int8, per-channel) weights.

``auto`` means the fastest backend that passed the parity gate for that artifact, as recorded in its
descriptor (torch when a GPU is present, when the artifact has no record, or when onnxruntime is missing,
each with a log line). An operator can override the configured setting with ``SENTINEL_INFERENCE_BACKEND``.
"""

from __future__ import annotations

import logging
import math
import os
from pathlib import Path
from typing import Literal, cast, get_args

from prompt_sentinel.config import InferenceConfig
from prompt_sentinel.errors import ConfigError, ModelFormatError

log = logging.getLogger(__name__)

Backend = Literal["torch", "onnx", "onnx-int8"]
BackendSetting = Literal["auto", "torch", "onnx", "onnx-int8"]
BACKENDS: tuple[Backend, ...] = get_args(Backend)
ONNX_BACKENDS: tuple[Backend, ...] = ("onnx", "onnx-int8")
# Fastest first: int8 matmuls beat fp32 ones on every CPU we measured (benchmarks/inference_benchmark.py), and a
# fixed order keeps "auto" reproducible — a timing taken on the training node says little about the serving node.
SPEED_ORDER: tuple[Backend, ...] = ("onnx-int8", "onnx", "torch")
BACKEND_ENV = "SENTINEL_INFERENCE_BACKEND"
THREADS_ENV = "SENTINEL_INFERENCE_THREADS"
TORCH_THREADS_ENV = "SENTINEL_TORCH_THREADS"
CGROUP_CPU_MAX = Path("/sys/fs/cgroup/cpu.max")


def requested_backend(cfg: InferenceConfig | None) -> BackendSetting:
    """The backend asked for: ``SENTINEL_INFERENCE_BACKEND`` when set (logged), else ``inference.backend``."""
    setting = (cfg or InferenceConfig()).backend
    raw = os.environ.get(BACKEND_ENV, "").strip()
    if not raw:
        return setting
    allowed = get_args(BackendSetting)
    if raw not in allowed:
        raise ConfigError(f"{BACKEND_ENV}={raw!r} is not a backend; allowed: {list(allowed)}")
    if raw != setting:
        log.info("%s=%s overrides inference.backend=%s", BACKEND_ENV, raw, setting)
    return cast(BackendSetting, raw)


def _positive_int(raw: str, name: str) -> int:
    try:
        value = int(raw)
    except ValueError:
        raise ConfigError(f"{name}={raw!r}: must be a positive integer (threads)") from None
    if value < 1:
        raise ConfigError(f"{name}={raw!r}: must be a positive integer (threads); got {value}")
    return value


def cpu_limit(cgroup_file: Path = CGROUP_CPU_MAX) -> int:
    """CPUs this process may use: the cgroup v2 quota when set, else the affinity mask / ``os.cpu_count()``."""
    try:
        available = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        available = os.cpu_count() or 1
    try:
        quota, period = cgroup_file.read_text().split()[:2]
        if quota != "max":
            return max(1, min(available, math.ceil(int(quota) / int(period))))
    except (OSError, ValueError):
        pass
    return max(1, available)


def torch_threads(cgroup_file: Path = CGROUP_CPU_MAX) -> int:
    """Intra-op threads for inference: ``SENTINEL_TORCH_THREADS``, else ``OMP_NUM_THREADS``, else the CPU limit."""
    raw = os.environ.get(TORCH_THREADS_ENV, "").strip()
    omp = os.environ.get("OMP_NUM_THREADS", "").strip()
    if not raw and omp.isdigit() and int(omp) > 0:
        # an operator who pinned OpenMP threads (e.g. to the pod's CPU limit) wants torch to follow it
        return int(omp)
    if raw:
        try:
            value = int(raw)
        except ValueError:
            raise ModelFormatError(f"{TORCH_THREADS_ENV} must be a positive integer, got {raw!r}") from None
        if value < 1:
            raise ModelFormatError(f"{TORCH_THREADS_ENV} must be a positive integer, got {raw!r}")
        return value
    return cpu_limit(cgroup_file)


def inference_threads(threads: int | None = None) -> int:
    """Intra-op threads: ``threads`` (``inference.threads``), else ``SENTINEL_INFERENCE_THREADS``, else the torch
    rule (``SENTINEL_TORCH_THREADS``, ``OMP_NUM_THREADS``, the container's CPU limit).

    A value ≤ 0 anywhere is an error naming the setting, never silently replaced.
    """
    if threads is not None:
        if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
            raise ConfigError(f"inference.threads={threads!r}: must be a positive integer (or null for the CPU limit)")
        return threads
    raw = os.environ.get(THREADS_ENV, "").strip()
    if raw:
        return _positive_int(raw, THREADS_ENV)
    omp = os.environ.get("OMP_NUM_THREADS", "").strip()
    if omp.lstrip("-").isdigit() and int(omp) < 1:
        raise ConfigError(f"OMP_NUM_THREADS={omp!r}: must be a positive integer (threads)")
    return torch_threads()


def onnxruntime_available() -> bool:
    try:
        import onnxruntime  # noqa: F401
    except ImportError:
        return False
    return True


def require_onnxruntime(backend: str, setting: str = "inference.backend") -> None:
    """Raise :class:`ConfigError` naming the setting when ``backend`` needs onnxruntime and it is not installed."""
    if backend in ONNX_BACKENDS and not onnxruntime_available():
        raise ConfigError(
            f"{setting}={backend}: the onnxruntime package is not installed (pip install onnxruntime, or use "
            f"{setting}=torch)"
        )


def gpu_available() -> bool:
    try:
        import torch
    except ImportError:
        return False
    return bool(torch.cuda.is_available())


def choose_backend(requested: BackendSetting, passed: list[Backend] | None, where: str) -> Backend:
    """The backend to run ``where`` (a model directory or encoder) with.

    ``passed`` lists the backends that passed parity for it (None: no parity record, only torch is known-good).
    An explicit request for a backend that did not pass falls back to the next more exact one that did, with a
    warning naming both; an explicit ONNX request without onnxruntime is an error.
    """
    known = [b for b in SPEED_ORDER if b in (passed or []) or b == "torch"]
    if requested == "auto":
        if gpu_available():
            return "torch"
        for backend in known:
            if backend == "torch" or onnxruntime_available():
                if backend != "torch":
                    log.debug("%s: auto backend %s (passed parity)", where, backend)
                return backend
            log.warning("%s: %s passed parity but onnxruntime is not installed; running on torch", where, backend)
            return "torch"
        return "torch"
    require_onnxruntime(requested)
    if requested in known:
        return requested
    order = SPEED_ORDER[SPEED_ORDER.index(requested) :]
    fallback = next(b for b in order if b in known)
    reason = "it has no parity record (exported before ONNX support)" if passed is None else "it failed parity"
    log.warning(
        "%s: inference.backend=%s requested but %s for this model; using %s instead", where, requested, reason, fallback
    )
    return fallback
