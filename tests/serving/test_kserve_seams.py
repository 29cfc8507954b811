"""The KServe internals this package relies on, pinned: each test fails if KServe 0.21's behaviour changes.

* ``main`` adds the middleware to ``kserve.model_server.app``: that must be the app ``ModelServer`` serves.
* ``create_app`` (in-process tests) wires a fresh app with ``RESTServer``'s private ``_add_middlewares``,
  ``_register_endpoints`` and ``_add_exception_handlers``, the three steps of its public ``create_application``
  (which only works on the module-level app).
* KServe answers the cases the middleware exists for with a 500 (so it must run before KServe decodes).
"""

from __future__ import annotations

import inspect

import pytest
from fastapi import FastAPI

from serving._kserve import kserve


def test_model_server_serves_the_module_level_app() -> None:
    from kserve.constants.constants import FASTAPI_APP_IMPORT_STRING

    assert FASTAPI_APP_IMPORT_STRING == "kserve.model_server:app"
    assert isinstance(kserve.model_server.app, FastAPI)
    assert "FASTAPI_APP_IMPORT_STRING" in inspect.getsource(kserve.ModelServer.start)


def test_rest_server_builds_its_app_in_the_three_steps_create_app_copies() -> None:
    from kserve.protocol.rest.server import RESTServer

    source = inspect.getsource(RESTServer.create_application)
    steps = ["self._add_middlewares(app)", "self._register_endpoints(app)", "self._add_exception_handlers(app)"]
    positions = [source.find(step) for step in steps]
    assert all(p >= 0 for p in positions) and positions == sorted(positions), source


def test_kserve_binary_decoder_still_needs_our_guard() -> None:
    """KServe's own binary decoder raises on a shape mismatch (a 500 without serving.validation in front)."""
    from kserve.errors import InvalidInput

    body = b'{"inputs": [{"name": "text", "datatype": "BYTES", "shape": [5], "parameters": {"binary_data_size": 7}}]}'
    raw = b"\x03\x00\x00\x00abc"
    with pytest.raises(Exception) as info:
        kserve.InferRequest.from_bytes(body + raw, len(body), "m")
    assert not isinstance(info.value, InvalidInput)
