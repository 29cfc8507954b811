"""What the logger sink does with KServe's payload-logger events, as plain functions (the ASGI shell is
:mod:`serving.logger_sink`).

KServe's logger (``spec.predictor.logger``, mode ``all``) POSTs every request and every response as a separate
CloudEvent (binary mode: ``ce-*`` headers, the payload as the body), type ``org.kubeflow.serving.inference.request``
or ``…response``, both with the same ``ce-id``. :class:`EventPairer` pairs them by id with bounded memory: an event
whose partner does not come within ``timeout_s`` is dropped and counted (``expired``), and beyond ``max_pending``
unpaired events the oldest is dropped (``evicted``). :func:`records_from_exchange` turns a pair into prediction
records (:mod:`prompt_sentinel.monitoring.records`), reading the V1 or V2 request texts and the predictor's answer.
"""

from __future__ import annotations

import base64
import time
from collections import Counter, OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import orjson

from prompt_sentinel.errors import DataError
from prompt_sentinel.monitoring.records import TextPolicy, build_records

REQUEST_TYPE = "org.kubeflow.serving.inference.request"
RESPONSE_TYPE = "org.kubeflow.serving.inference.response"
STRUCTURED_CONTENT_TYPE = "application/cloudevents+json"


@dataclass
class CloudEvent:
    id: str
    type: str
    data: bytes
    inference_service: str = ""
    namespace: str = ""
    endpoint: str = ""
    time: str = ""


def parse_cloudevent(headers: Mapping[str, str], body: bytes) -> CloudEvent:
    """A CloudEvent in binary mode (``ce-*`` headers) or structured mode (``application/cloudevents+json``).

    Raises :class:`DataError` naming what is missing or malformed.
    """
    lower = {k.lower(): v for k, v in headers.items()}
    if lower.get("content-type", "").split(";")[0].strip() == STRUCTURED_CONTENT_TYPE:
        try:
            event = orjson.loads(body)
        except orjson.JSONDecodeError as exc:
            raise DataError(f"structured CloudEvent is not valid JSON ({exc})") from None
        if not isinstance(event, dict):
            raise DataError("structured CloudEvent must be a JSON object")
        if "data_base64" in event:
            data = base64.b64decode(str(event["data_base64"]))
        else:
            payload = event.get("data")
            data = payload.encode() if isinstance(payload, str) else orjson.dumps(payload)
        attrs = {k: str(v) for k, v in event.items() if k not in ("data", "data_base64")}
    else:
        attrs = {k[3:]: v for k, v in lower.items() if k.startswith("ce-")}
        data = body
    missing = [name for name in ("id", "type") if not attrs.get(name)]
    if missing:
        raise DataError(f"not a CloudEvent: missing attribute(s) {missing} (binary mode needs ce-id and ce-type)")
    if attrs["type"] not in (REQUEST_TYPE, RESPONSE_TYPE):
        raise DataError(f"CloudEvent type {attrs['type']!r} is neither {REQUEST_TYPE!r} nor {RESPONSE_TYPE!r}")
    return CloudEvent(
        id=attrs["id"],
        type=attrs["type"],
        data=data,
        inference_service=attrs.get("inferenceservicename", ""),
        namespace=attrs.get("namespace", ""),
        endpoint=attrs.get("endpoint", ""),
        time=attrs.get("time", ""),
    )


@dataclass
class EventPairer:
    """Pairs request and response events by id; bounded in count and in time (see the module docstring)."""

    timeout_s: float = 60.0
    max_pending: int = 10_000
    counts: Counter[str] = field(default_factory=Counter)
    _pending: OrderedDict[tuple[str, str], tuple[float, CloudEvent]] = field(default_factory=OrderedDict)

    def add(self, event: CloudEvent, now: float | None = None) -> tuple[CloudEvent, CloudEvent] | None:
        """The (request, response) pair once both halves arrived, else None (the event waits)."""
        now = time.monotonic() if now is None else now
        self.expire(now)
        other = RESPONSE_TYPE if event.type == REQUEST_TYPE else REQUEST_TYPE
        partner = self._pending.pop((event.id, other), None)
        if partner is not None:
            self.counts["paired"] += 1
            pair = (event, partner[1]) if event.type == REQUEST_TYPE else (partner[1], event)
            return pair
        key = (event.id, event.type)
        if key in self._pending:
            self.counts["duplicate"] += 1  # a retried delivery: keep the first
            return None
        self._pending[key] = (now, event)
        while len(self._pending) > self.max_pending:
            self._pending.popitem(last=False)
            self.counts["evicted"] += 1
        return None

    def expire(self, now: float | None = None) -> int:
        """Drop events that waited longer than ``timeout_s``; returns how many."""
        now = time.monotonic() if now is None else now
        dropped = 0
        while self._pending:
            key, (arrived, _) = next(iter(self._pending.items()))
            if now - arrived <= self.timeout_s:
                break
            del self._pending[key]
            dropped += 1
        self.counts["expired"] += dropped
        return dropped

    @property
    def pending(self) -> int:
        return len(self._pending)


def _json(data: bytes, what: str) -> dict[str, Any]:
    try:
        value = orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        raise DataError(f"{what} is not JSON ({exc}); only JSON payloads are logged") from None
    if not isinstance(value, dict):
        raise DataError(f"{what} must be a JSON object")
    return value


def request_texts(body: dict[str, Any]) -> tuple[list[str], str, str | None]:
    """(texts, protocol, V2 request id) of a V1 ``instances`` or V2 ``inputs`` request."""
    if "instances" in body:
        texts = body["instances"]
        if not isinstance(texts, list) or not all(isinstance(t, str) for t in texts):
            raise DataError("V1 request: 'instances' must be a list of strings")
        return texts, "v1", None
    inputs = body.get("inputs")
    if isinstance(inputs, list) and inputs and isinstance(inputs[0], dict):
        data = inputs[0].get("data")
        if isinstance(data, list):
            flat = [x[0] if isinstance(x, list) and len(x) == 1 else x for x in data]
            if all(isinstance(t, str) for t in flat):
                rid = body.get("id")
                return flat, "v2", str(rid) if rid is not None else None
    raise DataError("request is neither V1 ('instances': [text, …]) nor V2 ('inputs': [{'data': [text, …]}]) JSON")


def response_predictions(body: dict[str, Any]) -> tuple[list[str], list[str], list[dict[str, float]], str | None]:
    """(labels, decisions, scores, model version) of a Prompt Sentinel V1 or V2 answer."""
    if "predictions" in body:
        preds = body["predictions"]
        try:
            labels = [str(p["label"]) for p in preds]
            decisions = [str(p.get("decision") or "") for p in preds]
            scores = [{str(k): float(v) for k, v in p["scores"].items()} for p in preds]
        except (TypeError, KeyError, AttributeError, ValueError) as exc:
            raise DataError(f"V1 answer is not a Prompt Sentinel answer ({exc!r})") from None
        return labels, decisions, scores, body.get("model_version")
    outputs = {o.get("name"): o for o in body.get("outputs") or [] if isinstance(o, dict)}
    if not {"label", "scores"} <= set(outputs):
        raise DataError("V2 answer lacks the 'label' and 'scores' outputs")
    labels = [str(x) for x in outputs["label"]["data"]]
    decisions = [str(x) for x in (outputs.get("decision") or {}).get("data") or [""] * len(labels)]
    names = orjson.loads(((outputs["scores"].get("parameters") or {}).get("labels")) or "[]")
    flat = outputs["scores"]["data"]
    width = len(names)
    if not width or len(flat) != width * len(labels):
        raise DataError("V2 answer: 'scores' does not hold one row per text with the class names in its parameters")
    scores = [{names[j]: float(flat[i * width + j]) for j in range(width)} for i in range(len(labels))]
    return labels, decisions, scores, body.get("model_version")


def records_from_exchange(
    request: CloudEvent, response: CloudEvent, policy: TextPolicy, *, default_model: str = ""
) -> list[dict[str, Any]]:
    """Prediction records for one logged request/response pair (:class:`DataError` when they do not fit)."""
    req = _json(request.data, "request payload")
    res = _json(response.data, "response payload")
    texts, protocol, v2_id = request_texts(req)
    labels, decisions, scores, version = response_predictions(res)
    if len(texts) != len(labels):
        raise DataError(f"request has {len(texts)} texts but the answer {len(labels)} predictions")
    model = str(res.get("model_name") or request.inference_service or default_model or "unknown")
    return build_records(
        texts,
        labels,
        decisions,
        scores,
        model=model,
        model_version=str(version) if version else None,
        protocol=protocol,
        request_id=v2_id or request.id,
        source="sink",
        policy=policy,
    )
