"""The HTTP layer around KServe's FastAPI app: every malformed request a clear 4xx, every answer counted.

:class:`SentinelHTTPMiddleware` is a plain ASGI middleware, added with FastAPI's public ``app.add_middleware`` to
the app KServe's ``ModelServer`` serves (``kserve.model_server.app``). For each request it

* bounds the body: a larger declared or streamed body is answered **413** before it is read into memory;
* validates V1 ``:predict`` and V2 ``/infer`` requests to a served model completely (content type → **415**;
  UTF-8, JSON depth, structure, shapes, the binary tensor extension's framing, ``outputs``, ``parameters``,
  ``id`` → **400**) with :mod:`serving.validation`, and replays the body to KServe only when it passed — so
  KServe's decoders, which answer several malformed inputs with a 500, only ever see valid requests;
* refuses the model repository API (``/v2/repository/models/<name>/load|unload``, **403**): one unauthenticated
  POST would unload the only model this server exists to serve;
* counts every 4xx and 5xx answer by model, protocol, status and reason (:mod:`serving.metrics`), and answers an
  unhandled exception with a 500 that is logged with its traceback and counted.

The exception handlers registered by :func:`install_http_guards` give the same ``{"error": "..."}`` body to the
few rejections that can still come from deeper layers (FastAPI's body validation, the predictor's own checks).
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from http import HTTPStatus
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from serving._kserve import kserve
from serving.metrics import count_response
from serving.protocol import BadRequest, ServingLimits
from serving.validation import validate_v1_request, validate_v2_request

logger = logging.getLogger("prompt_sentinel.serving")
_BODY_METHODS = frozenset({"POST", "PUT", "PATCH"})
# Where handlers deeper in the app leave the reason of a rejection for the counting middleware (request.state).
REASON_STATE_KEY = "sentinel_reason"
UNKNOWN_MODEL = "unknown"

_V1_ROUTE = re.compile(r"^/v1/models/(?P<name>[^/]+):(?:predict|explain)$")
_V2_ROUTE = re.compile(r"^/v2/models/(?P<name>[^/]+)(?:/versions/[^/]+)?/infer$")
_V1_PREFIX, _V2_PREFIX = re.compile(r"^/v1/models/(?P<name>[^/:]+)"), re.compile(r"^/v2/models/(?P<name>[^/]+)")
_REPOSITORY_ROUTE = re.compile(r"^/v2/repository/models/[^/]+/(?:load|unload)$")


def _error(status: int, message: str) -> JSONResponse:
    # KServe's own error bodies are {"error": "..."}; keep one shape for every error a client can see.
    return JSONResponse(status_code=status, content={"error": message})


def _set_reason(request: Request, reason: str) -> None:
    setattr(request.state, REASON_STATE_KEY, reason)


# ---- exception handlers (for rejections raised below the middleware) -----------------------------------------


def describe_validation_errors(errors: list[dict[str, Any]]) -> str:
    """One line per FastAPI/pydantic error: where (``inputs[0].data``), what was wrong."""
    parts = []
    for err in errors[:5]:
        loc = [str(p) for p in err.get("loc", ()) if p != "body"]
        where = ""
        for p in loc:
            where += f"[{p}]" if p.isdigit() else (f".{p}" if where else p)
        if err.get("type") == "json_invalid":
            ctx = err.get("ctx") or {}
            return f"request body is not valid JSON: {ctx.get('error', err.get('msg', 'parse error'))}"
        msg = str(err.get("msg", "invalid"))
        parts.append(f"{where or 'body'}: {msg}")
    more = f" (and {len(errors) - 5} more)" if len(errors) > 5 else ""
    return "invalid inference request: " + "; ".join(parts) + more


class RequestRejected(kserve.errors.InvalidInput):
    """A request the predictor refused (bad shape, over a limit): HTTP 400, logged as one line.

    A subclass of KServe's ``InvalidInput`` so KServe's own handling still applies anywhere ours is not
    installed; ours only avoids KServe's full traceback at ERROR level for every client mistake.
    """

    def __init__(self, reason_text: str, code: str = "invalid_field") -> None:
        super().__init__(reason_text)
        self.code = code


async def request_rejected_handler(request: Request, exc: RequestRejected) -> JSONResponse:
    logger.warning("400 %s %s: %s", request.method, request.url.path, exc)
    _set_reason(request, exc.code)
    return _error(HTTPStatus.BAD_REQUEST, str(exc))


async def validation_error_handler(request: Request, exc: RequestValidationError) -> JSONResponse:
    _set_reason(request, "invalid_field")
    errors = list(exc.errors())
    if not errors:
        return _error(HTTPStatus.BAD_REQUEST, "invalid request")
    # pydantic reports a Union[InferenceRequest, bytes] body twice (once per member); the bytes branch
    # ("Input should be a valid bytes") only adds noise for a JSON body.
    relevant = [e for e in errors if "bytes" not in [str(p) for p in e.get("loc", ())]] or errors
    return _error(HTTPStatus.BAD_REQUEST, describe_validation_errors(relevant))


async def http_exception_handler(request: Request, exc: StarletteHTTPException) -> JSONResponse:
    detail = exc.detail if isinstance(exc.detail, str) else json.dumps(exc.detail)
    if exc.status_code == HTTPStatus.BAD_REQUEST and "parsing the body" in detail:
        # FastAPI's message when its own body parser failed for a reason other than invalid JSON.
        _set_reason(request, "invalid_json")
        detail = "request body could not be parsed as a JSON inference request"
    return JSONResponse(status_code=exc.status_code, content={"error": detail}, headers=exc.headers)


# ---- the middleware -------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Route:
    """What a request addresses, as far as validation and the counters are concerned."""

    protocol: str  # "v1", "v2" or "other"
    model: str  # a served model's name, UNKNOWN_MODEL, or "" for paths that name no model
    validate: Callable[..., list[str]] | None = None  # the validator when it is a predict/infer request
    repository: bool = False


def classify(method: str, path: str, model_names: frozenset[str]) -> Route:
    """The route of a request; only predict/infer requests to a served model are validated."""
    for protocol, route, prefix, validator in (
        ("v1", _V1_ROUTE, _V1_PREFIX, validate_v1_request),
        ("v2", _V2_ROUTE, _V2_PREFIX, validate_v2_request),
    ):
        match = route.match(path) or prefix.match(path)
        if match:
            name = match.group("name")
            served = name in model_names
            is_inference = route.match(path) is not None and method == "POST"
            return Route(protocol, name if served else UNKNOWN_MODEL, validator if served and is_inference else None)
    if _REPOSITORY_ROUTE.match(path):
        return Route("v2", "", repository=True)
    return Route("other", "")


class _ClientGone(Exception):
    """The client disconnected before sending its whole body."""


class SentinelHTTPMiddleware:
    """Bound, validate and count every HTTP request before KServe handles it (see the module docstring)."""

    def __init__(self, app: ASGIApp, limits: ServingLimits, model_names: Iterable[str]) -> None:
        self.app = app
        self.limits = limits
        self.max_body_bytes = limits.max_body_bytes
        self.model_names = frozenset(model_names)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        method, path = scope.get("method", ""), scope.get("path", "")
        route = classify(method, path, self.model_names)
        state = scope.setdefault("state", {})
        answered: dict[str, Any] = {}

        async def observed_send(message: Message) -> None:
            if message["type"] == "http.response.start":
                answered["status"] = message["status"]
            await send(message)

        try:
            refusal, receive = await self._guard(scope, receive, method, route)
            if refusal is not None:
                answered["reason"] = refusal.reason
                logger.warning("%d %s %s: %s", refusal.status, method, path, refusal)
                await _error(refusal.status, str(refusal))(scope, receive, observed_send)
            else:
                await self.app(scope, receive, observed_send)
        except _ClientGone:
            return
        except Exception as exc:
            answered["reason"] = "unhandled_exception"
            if "status" in answered:  # the response has started: nothing else can be sent
                answered["status"] = HTTPStatus.INTERNAL_SERVER_ERROR
                raise
            logger.error("500 %s %s: unhandled %s", method, path, type(exc).__name__, exc_info=exc)
            message = f"internal server error ({type(exc).__name__}); the server log has the details"
            await _error(HTTPStatus.INTERNAL_SERVER_ERROR, message)(scope, receive, observed_send)
        finally:
            if "status" in answered:
                reason = answered.get("reason") or state.get(REASON_STATE_KEY)
                count_response(route.model or "-", route.protocol, int(answered["status"]), reason)

    async def _guard(
        self, scope: Scope, receive: Receive, method: str, route: Route
    ) -> tuple[BadRequest | None, Receive]:
        """A refusal, or None and the ``receive`` the app should read the (already checked) body from."""
        if route.repository:
            return BadRequest(
                "the model repository API (load/unload) is disabled: this server serves the one verified model it "
                "loaded at start-up",
                reason="repository_api_disabled",
                status=HTTPStatus.FORBIDDEN,
            ), receive
        if method not in _BODY_METHODS:
            return None, receive
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers") or []}
        declared = headers.get("content-length")
        if declared is not None:
            if not declared.strip().isdigit():
                return BadRequest(
                    f"invalid Content-Length header {declared[:40]!r}", reason="invalid_content_length"
                ), receive
            if int(declared) > self.max_body_bytes:
                return self._too_large(int(declared)), receive
        try:
            body = await self._read_body(receive)
        except BadRequest as exc:
            return exc, receive
        if route.validate is not None:
            try:
                route.validate(body, headers, self.limits)
            except BadRequest as exc:
                return exc, receive
        return None, _replay(body, receive)

    def _too_large(self, size: int | str) -> BadRequest:
        return BadRequest(
            f"request body of {size} bytes is too large; at most {self.max_body_bytes} bytes are accepted "
            "(serving.max_instances × serving.max_chars)",
            reason="body_too_large",
            status=HTTPStatus.REQUEST_ENTITY_TOO_LARGE,
        )

    async def _read_body(self, receive: Receive) -> bytes:
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                raise _ClientGone
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_body_bytes:
                raise self._too_large(f"more than {self.max_body_bytes}")
            chunks.append(chunk)
            if not message.get("more_body", False):
                return b"".join(chunks)


def _replay(body: bytes, receive: Receive) -> Callable[[], Awaitable[Message]]:
    """A ``receive`` that hands the app the body already read, then waits for the client as usual."""
    replayed = False

    async def replay() -> Message:
        nonlocal replayed
        if not replayed:
            replayed = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replay


def install_http_guards(app: FastAPI, limits: ServingLimits, model_names: Iterable[str]) -> None:
    """Add the middleware and the error handlers to ``app``; call before the app serves its first request."""
    app.add_middleware(SentinelHTTPMiddleware, limits=limits, model_names=list(model_names))
    app.add_exception_handler(RequestValidationError, validation_error_handler)
    app.add_exception_handler(RequestRejected, request_rejected_handler)
    app.add_exception_handler(StarletteHTTPException, http_exception_handler)
