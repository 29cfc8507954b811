"""KServe serving for Prompt Sentinel models.

Importing this package is cheap and does not import KServe (which parses ``sys.argv`` at import time; see
:mod:`serving._kserve`). The local-server helpers are importable directly::

    from serving import running_server
    with running_server("sentinel-output/registry/prompt-sentinel/v3", "prompt-sentinel") as url:
        ...

``SentinelPredictor`` (the ``kserve.Model``), ``create_app`` and ``main`` load KServe on first access.
"""

from __future__ import annotations

from typing import Any

from serving.local import (
    DEFAULT_MODEL_NAME,
    LocalServer,
    ServerStartError,
    free_port,
    running_server,
    start_local_server,
    wait_ready,
)

__all__ = [
    "DEFAULT_MODEL_NAME",
    "LocalServer",
    "SentinelPredictor",
    "ServerStartError",
    "create_app",
    "free_port",
    "main",
    "running_server",
    "start_local_server",
    "wait_ready",
]

_LAZY = {
    "SentinelPredictor": ("serving.predictor", "SentinelPredictor"),
    "create_app": ("serving.server", "create_app"),
    "main": ("serving.server", "main"),
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        module, attr = _LAZY[name]
        return getattr(importlib.import_module(module), attr)
    raise AttributeError(f"module 'serving' has no attribute {name!r}")
