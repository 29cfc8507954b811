"""The logger sink: receives KServe's payload-logger CloudEvents and appends prediction records to a log root.

``python -m serving.logger_sink --log-dir gs://bucket/prediction-logs --port 8080`` (image
``images/logger-sink/Dockerfile``, Deployment + Service in ``manifests/base/logger-sink.yaml``). A small ASGI app on
uvicorn, without KServe or the model stack:

* ``POST /``: one CloudEvent (binary or structured mode). Requests and responses are paired by id
  (:class:`prompt_sentinel.monitoring.sink.EventPairer`: bounded memory, unpaired events expire), each pair becomes
  records (:func:`~prompt_sentinel.monitoring.sink.records_from_exchange`) written by the same buffered, append-only
  writer the predictor uses. Answers 202 once the event is accepted, 400 for something that is not a usable event
  (counted, never retried by KServe in a loop: its logger only logs the status);
* ``GET /healthz``: 200 while the writer runs; ``GET /metrics``: Prometheus counters of events, records, drops.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, generate_latest

from prompt_sentinel.config import MonitoringConfig, load_config
from prompt_sentinel.errors import SentinelError
from prompt_sentinel.monitoring.logstore import PredictionLogWriter
from prompt_sentinel.monitoring.records import TextPolicy
from prompt_sentinel.monitoring.sink import EventPairer, parse_cloudevent, records_from_exchange

logger = logging.getLogger("prompt_sentinel.logger_sink")
MAX_EVENT_BYTES = 4 * 1024 * 1024  # a maximal request (64 texts × 20,000 chars as JSON) fits with room to spare
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]


class LoggerSink:
    """The ASGI application (one per process)."""

    def __init__(self, writer: PredictionLogWriter, settings: MonitoringConfig, policy: TextPolicy) -> None:
        self.writer = writer
        self.policy = policy
        self.pairer = EventPairer(settings.sink_pair_timeout_s, settings.sink_max_pending)
        self.registry = CollectorRegistry()
        self.events = Counter("sentinel_sink_events", "CloudEvents received, by outcome.", ["outcome"],
                              registry=self.registry)  # fmt: skip
        self.records = Counter("sentinel_sink_records", "Prediction records, by outcome.", ["outcome"],
                               registry=self.registry)  # fmt: skip
        self.pending = Gauge("sentinel_sink_pending_events", "Events waiting for their partner.",
                             registry=self.registry)  # fmt: skip
        self._lock = asyncio.Lock()
        self._reported: dict[str, int] = {}

    async def __call__(self, scope: dict[str, Any], receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
            return
        if scope["type"] != "http":
            return
        method, path = scope["method"], scope["path"]
        if method == "GET" and path in ("/healthz", "/ready"):
            await _answer(send, 200, b'{"status":"ok"}')
        elif method == "GET" and path == "/metrics":
            self._sync_counts()
            await _answer(send, 200, generate_latest(self.registry), CONTENT_TYPE_LATEST)
        elif method == "POST" and path in ("/", ""):
            status, body = await self._event(scope, receive)
            await _answer(send, status, body)
        else:
            await _answer(send, 404, b'{"error":"not found"}')

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await asyncio.to_thread(self.writer.close)
                await send({"type": "lifespan.shutdown.complete"})
                return

    async def _event(self, scope: dict[str, Any], receive: Receive) -> tuple[int, bytes]:
        body = bytearray()
        while True:
            message = await receive()
            body += message.get("body", b"")
            if len(body) > MAX_EVENT_BYTES:
                self.events.labels("too_large").inc()
                return 413, b'{"error":"event larger than the sink accepts"}'
            if not message.get("more_body"):
                break
        headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope.get("headers", [])}
        try:
            event = parse_cloudevent(headers, bytes(body))
        except SentinelError as exc:
            self.events.labels("invalid").inc()
            return 400, _error(str(exc))
        async with self._lock:
            pair = self.pairer.add(event)
        if pair is None:
            self.events.labels("waiting").inc()
            return 202, b'{"status":"accepted"}'
        self.events.labels("paired").inc()
        try:
            records = records_from_exchange(*pair, self.policy)
        except SentinelError as exc:
            self.records.labels("unreadable_exchange").inc()
            logger.warning("event %s: %s", event.id, exc)
            return 202, _error(str(exc))
        accepted = self.writer.write(records)
        self.records.labels("queued").inc(accepted)
        return 202, b'{"status":"logged"}'

    def _sync_counts(self) -> None:
        """Carry the pairer's and the writer's own counts into the Prometheus counters."""
        current = {**{f"pair_{k}": v for k, v in self.pairer.counts.items()},
                   "written": self.writer.written, "dropped": self.writer.dropped}  # fmt: skip
        for key, value in current.items():
            delta = value - self._reported.get(key, 0)
            if delta > 0:
                (self.events if key.startswith("pair_") else self.records).labels(key).inc(delta)
            self._reported[key] = value
        self.pending.set(self.pairer.pending)


def _error(message: str) -> bytes:
    import orjson

    return orjson.dumps({"error": message})


async def _answer(send: Send, status: int, body: bytes, content_type: str = "application/json") -> None:
    headers = [(b"content-type", content_type.encode()), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m serving.logger_sink",
        description="Receive KServe payload-logger CloudEvents and append prediction records to a log root.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--log-dir", default=None, help="Folder or gs:// prefix to write to (monitoring.log_dir).")
    parser.add_argument("--host", default="0.0.0.0", help="Address to bind.")
    parser.add_argument("--port", type=int, default=8080, help="Port to listen on.")
    parser.add_argument("--config", default=None, help="Prompt Sentinel YAML config (local path or gs://).")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.FIELD=VALUE",
                        help="Override a config field, e.g. --set monitoring.store_text=true. Repeatable.")  # fmt: skip
    return parser


def create_sink(log_dir: str, settings: MonitoringConfig) -> LoggerSink:
    writer = PredictionLogWriter(
        log_dir,
        prefix="sink",
        flush_interval_s=settings.flush_interval_s,
        max_buffered=settings.max_buffered_records,
        rotate_records=settings.rotate_records,
    )
    return LoggerSink(writer, settings, TextPolicy.from_settings(settings.store_text, settings.salt_env))


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        cfg = load_config(
            args.config, [*args.overrides, *([f"monitoring.log_dir={args.log_dir}"] if args.log_dir else [])]
        )
        if not cfg.monitoring.log_dir:
            raise SentinelError("no log root: pass --log-dir DIR_OR_GS_PREFIX (or set monitoring.log_dir)")
        sink = create_sink(cfg.monitoring.log_dir, cfg.monitoring)
    except SentinelError as exc:
        logger.error("cannot start the logger sink: %s", exc)
        return 1
    import uvicorn

    logger.info("logger sink writing to %s (text stored: %s)", cfg.monitoring.log_dir, cfg.monitoring.store_text)
    uvicorn.run(sink, host=args.host, port=args.port, log_level="warning", lifespan="on")
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
