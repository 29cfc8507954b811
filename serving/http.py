"""HTTP-level guards around KServe's FastAPI app, so every malformed request is a clear 400, never 422/500.

What KServe 0.21 does on its own, before the predictor runs (checked against its source):

* V1 ``:predict`` reads the raw body and parses it with orjson; invalid JSON or bad UTF-8 becomes
  ``InvalidInput`` → 400. A non-JSON content type passes the raw bytes through (the predictor parses them).
* V2 ``/infer`` declares its body as a pydantic ``InferenceRequest``, so FastAPI validates it first: invalid
  JSON, bad UTF-8 or a wrong shape (missing ``inputs``, ``data`` not a list…) answer **422** with FastAPI's
  ``{"detail": [...]}``. :func:`validation_error_handler` turns those into 400 with one readable message.
* A V2 body in the binary tensor extension (header ``inference-header-content-length``) is decoded by KServe
  with ``str(raw, "utf-8")`` and numpy: invalid UTF-8 or a bad ``binary_data_size`` would be a **500**.
  :class:`V2BinaryGuardMiddleware` checks the framing and the text first (:func:`check_v2_binary_body`).
* There is no body-size limit at all: :class:`BodySizeLimitMiddleware` refuses bodies larger than the
  largest valid request (``ServingLimits.max_body_bytes``) before they are read into memory.
"""

from __future__ import annotations

import json
import logging
from http import HTTPStatus
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from serving._kserve import kserve
from serving.protocol import V2_BINARY_HEADER, BadRequest, ServingLimits, check_v2_binary_body

logger = logging.getLogger("prompt_sentinel.serving")
_BODY_METHODS = frozenset({"POST", "PUT", "PATCH"})


def _error(status: int, message: str) -> JSONResponse:
    # KServe's own error bodies are {"error": "..."}; keep one shape for every error a client can see.
    return JSONResponse(status_code=status, content={"error": message})


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


async def request_rejected_handler(request: Request, exc: RequestRejected) -> JSONResponse:
    logger.warning("400 %s %s: %s", request.method, request.url.path, exc)
    return _error(HTTPStatus.BAD_REQUEST, str(exc))


async def validation_error_handler(_: Request, exc: RequestValidationError) -> JSONResponse:
    errors = list(exc.errors())
    if not errors:
        return _error(HTTPStatus.BAD_REQUEST, "invalid request")
    # pydantic reports a Union[InferenceRequest, bytes] body twice (once per member); the bytes branch
    # ("Input should be a valid bytes") only adds noise for a JSON body.
    relevant = [e for e in errors if "bytes" not in [str(p) for p in e.get("loc", ())]] or errors
    return _error(HTTPStatus.BAD_REQUEST, describe_validation_errors(relevant))


async def http_exception_handler(_: Request, exc: StarletteHTTPException) -> JSONResponse:
    detail = exc.detail if isinstance(exc.detail, str) else json.dumps(exc.detail)
    if exc.status_code == HTTPStatus.BAD_REQUEST and "parsing the body" in detail:
        # FastAPI's message when a body cannot be decoded at all (e.g. bytes that are not UTF-8 JSON).
        detail = "request body could not be decoded: it must be UTF-8 encoded JSON"
    return JSONResponse(status_code=exc.status_code, content={"error": detail}, headers=exc.headers)


class BodySizeLimitMiddleware:
    """Refuse request bodies over ``max_body_bytes`` with 400, by declared length or while streaming."""

    def __init__(self, app: ASGIApp, max_body_bytes: int) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes

    def _message(self, size: int | str) -> str:
        return (
            f"request body of {size} bytes is too large; at most {self.max_body_bytes} bytes are accepted "
            "(serving.max_instances × serving.max_chars)"
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope.get("method") not in _BODY_METHODS:
            await self.app(scope, receive, send)
            return
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None:
            try:
                size = int(declared)
            except ValueError:
                await _error(HTTPStatus.BAD_REQUEST, "invalid Content-Length header")(scope, receive, send)
                return
            if size > self.max_body_bytes:
                await _error(HTTPStatus.BAD_REQUEST, self._message(size))(scope, receive, send)
                return
            await self.app(scope, receive, send)
            return

        # No declared length (chunked upload): count while the app reads. Raising HTTPException from
        # receive() is the documented way out: FastAPI re-raises it from its body reader, and the
        # exception middleware answers it (400) through http_exception_handler.
        received = 0

        async def counting_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_body_bytes:
                    raise StarletteHTTPException(
                        HTTPStatus.BAD_REQUEST, self._message(f"more than {self.max_body_bytes}")
                    )
            return message

        await self.app(scope, counting_receive, send)


class V2BinaryGuardMiddleware:
    """Validate V2 binary-extension bodies before KServe decodes them; a bad one gets a 400 naming the input."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self._header = V2_BINARY_HEADER.encode("latin-1")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        header_length = dict(scope.get("headers") or []).get(self._header) if scope["type"] == "http" else None
        if header_length is None or scope.get("method") != "POST" or not scope.get("path", "").endswith("/infer"):
            await self.app(scope, receive, send)
            return
        chunks: list[bytes] = []
        while True:  # the body-size middleware outside this one bounds what can be read here
            try:
                message = await receive()
            except StarletteHTTPException as exc:  # over the size limit while streaming
                await _error(exc.status_code, str(exc.detail))(scope, receive, send)
                return
            if message["type"] != "http.request":
                return  # client went away
            chunks.append(message.get("body", b""))
            if not message.get("more_body", False):
                break
        body = b"".join(chunks)
        try:
            check_v2_binary_body(body, header_length.decode("latin-1"))
        except BadRequest as exc:
            logger.warning("400 %s %s: %s", scope.get("method"), scope.get("path"), exc)
            await _error(HTTPStatus.BAD_REQUEST, str(exc))(scope, receive, send)
            return
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)


def install_http_guards(app: FastAPI, limits: ServingLimits) -> None:
    """Add the body-size middleware and the 400 handlers; call before the app serves its first request."""
    # Starlette runs the last-added middleware first: the size limit applies before the binary guard buffers.
    app.add_middleware(V2BinaryGuardMiddleware)
    app.add_middleware(BodySizeLimitMiddleware, max_body_bytes=limits.max_body_bytes)
    app.add_exception_handler(RequestValidationError, validation_error_handler)
    app.add_exception_handler(RequestRejected, request_rejected_handler)
    app.add_exception_handler(StarletteHTTPException, http_exception_handler)
