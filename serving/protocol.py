"""Request parsing and response formatting for the V1 and V2 (Open Inference) protocols.

Pure functions with no KServe import, so the rules are testable on their own and shared by the predictor
and the client. Every rejection raises :class:`BadRequest` with a message naming the offending field, what
it held and what is allowed; the predictor turns it into KServe's ``InvalidInput`` (HTTP 400).

V1  ``{"instances": ["text", ...]}`` or ``{"instances": [{"text": "..."}, ...]}``
    → ``{"predictions": [{"label", "label_id", "scores": {name: p}, "decision"}, ...]}``
V2  input ``text`` (BYTES, shape ``[n]``) → outputs ``label`` (BYTES ``[n]``), ``label_id`` (INT64 ``[n]``),
    ``scores`` (FP32 ``[n, classes]``, label names in its ``labels`` parameter) and ``decision`` (BYTES ``[n]``).
"""

from __future__ import annotations

import json
import struct
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import orjson

from prompt_sentinel.config import ServingConfig
from prompt_sentinel.errors import SentinelError

Protocol = Literal["v1", "v2"]
V2_INPUT_NAME = "text"
V2_OUTPUTS = ("label", "label_id", "scores", "decision")
# JSON may escape one character as up to 6 bytes (\uXXXX); a little room for keys, quotes and commas.
_JSON_BYTES_PER_CHAR = 6
_PER_TEXT_OVERHEAD = 64
_ENVELOPE_BYTES = 16 * 1024
# The deepest valid request is a V2 [n, 1] tensor inside a structured CloudEvent (6 levels); anything much deeper
# is refused before a recursive consumer (the stdlib json module FastAPI uses, pydantic, logging) can overflow.
MAX_JSON_DEPTH = 32


class BadRequest(SentinelError, ValueError):
    """The request is malformed or over a limit; the message says what was wrong.

    ``status`` is the HTTP status to answer (400 unless the body is too large, 413, or of an unsupported content
    type, 415); ``reason`` is a short fixed code for the ``sentinel_rejected_requests_total`` counter.
    """

    def __init__(self, message: str, *, reason: str = "invalid_field", status: int = 400) -> None:
        super().__init__(message)
        self.reason = reason
        self.status = status


@dataclass(frozen=True)
class ServingLimits:
    """Per-request limits; a request over any of them is refused before the model runs."""

    max_instances: int = ServingConfig.model_fields["max_instances"].default
    max_chars: int = ServingConfig.model_fields["max_chars"].default

    def __post_init__(self) -> None:
        for name in ("max_instances", "max_chars"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"ServingLimits.{name} must be a positive integer, got {value!r}")

    @classmethod
    def from_config(cls, serving: ServingConfig) -> ServingLimits:
        return cls(max_instances=serving.max_instances, max_chars=serving.max_chars)

    @property
    def max_body_bytes(self) -> int:
        """Largest request body that can hold ``max_instances`` texts of ``max_chars`` characters."""
        return self.max_instances * (self.max_chars * _JSON_BYTES_PER_CHAR + _PER_TEXT_OVERHEAD) + _ENVELOPE_BYTES


@dataclass
class ParsedRequest:
    """What preprocessing hands to ``predict``: validated texts and how to answer."""

    texts: list[str]
    protocol: Protocol
    request_id: str | None = None
    requested_outputs: list[str] | None = None


@dataclass
class Predictions:
    """Model output for a batch: probabilities plus the derived label and decision per text."""

    proba: np.ndarray  # float32 [n, classes]
    label_ids: np.ndarray  # int64 [n]
    labels: list[str]
    decisions: list[str]


def _type_name(value: Any) -> str:
    return "null" if value is None else type(value).__name__


def check_text(value: Any, where: str, limits: ServingLimits) -> str:
    """Validate one text: a string, valid UTF-8 (no lone surrogates), at most ``max_chars`` characters."""
    if isinstance(value, bytes | bytearray):
        try:
            value = bytes(value).decode("utf-8")
        except UnicodeDecodeError as exc:
            raise BadRequest(
                f"{where} is not valid UTF-8 (invalid byte at position {exc.start})", reason="invalid_utf8"
            ) from None
    if not isinstance(value, str):
        raise BadRequest(f"{where} must be a string, got {_type_name(value)}")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as exc:
        # JSON can smuggle "\ud800"; it is not text any tokenizer can handle.
        raise BadRequest(
            f"{where} is not valid UTF-8 text (lone surrogate at character {exc.start})", reason="invalid_utf8"
        ) from None
    if len(value) > limits.max_chars:
        raise BadRequest(
            f"{where} has {len(value)} characters; at most {limits.max_chars} are allowed (serving.max_chars)",
            reason="text_too_long",
        )
    return value


def check_count(count: int, where: str, limits: ServingLimits) -> None:
    """Between 1 and ``max_instances`` texts per request."""
    if count == 0:
        raise BadRequest(f"{where} is empty; send between 1 and {limits.max_instances} texts", reason="empty_request")
    if count > limits.max_instances:
        raise BadRequest(
            f"{where} has {count} texts; at most {limits.max_instances} are allowed per request "
            "(serving.max_instances)",
            reason="too_many_texts",
        )


def json_depth(value: Any, limit: int) -> int:
    """Nesting depth of a parsed JSON value (a scalar is 0, ``[]`` is 1), counted without recursion.

    Stops as soon as the depth passes ``limit`` and returns ``limit + 1``, so a hostile body costs no more than
    walking its first too-deep branch.
    """
    deepest = 0
    stack: list[tuple[Any, int]] = [(value, 0)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict):
            children = item.values()
        elif isinstance(item, list):
            children = item
        else:
            continue
        depth += 1
        if depth > limit:
            return limit + 1
        deepest = max(deepest, depth)
        stack.extend((child, depth) for child in children if isinstance(child, dict | list))
    return deepest


def decode_json_body(body: bytes | bytearray | str, what: str = "request body", max_depth: int = MAX_JSON_DEPTH) -> Any:
    """Parse JSON strictly: UTF-8, no NaN, no lone surrogates, nested at most ``max_depth`` levels.

    orjson parses iteratively up to 1,024 levels and reports deeper input as an error, so no input can raise
    RecursionError here; the depth check then keeps deeply nested values away from recursive consumers.
    """
    if isinstance(body, bytes | bytearray):
        try:
            body = bytes(body).decode("utf-8")
        except UnicodeDecodeError as exc:
            raise BadRequest(
                f"{what} is not valid UTF-8 (invalid byte at position {exc.start})", reason="invalid_utf8"
            ) from None
    try:
        value = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        if "depth limit" in exc.msg or "recursion" in exc.msg:
            raise BadRequest(
                f"{what} is nested more than {max_depth} levels deep; a valid request needs fewer than 10",
                reason="json_too_deep",
            ) from None
        raise BadRequest(f"{what} is not valid JSON: {exc.msg} at position {exc.pos}", reason="invalid_json") from None
    if json_depth(value, max_depth) > max_depth:
        raise BadRequest(
            f"{what} is nested more than {max_depth} levels deep; a valid request needs fewer than 10",
            reason="json_too_deep",
        )
    return value


def parse_v1_body(body: Any, limits: ServingLimits) -> list[str]:
    """Texts from a V1 body ``{"instances": [...]}`` whose items are strings or ``{"text": ...}`` objects."""
    if isinstance(body, bytes | bytearray | str):
        body = decode_json_body(body)
    example = 'expected {"instances": ["text", ...]} or {"instances": [{"text": "..."}, ...]}'
    if not isinstance(body, dict):
        raise BadRequest(f"request body must be a JSON object; got {_json_kind(body)}; {example}")
    if "instances" not in body:
        keys = sorted(str(k) for k in body)[:10]
        raise BadRequest(f'request body has no "instances" field (fields: {keys}); {example}')
    instances = body["instances"]
    if not isinstance(instances, list):
        raise BadRequest(f'"instances" must be a list; got {_json_kind(instances)}; {example}')
    check_count(len(instances), '"instances"', limits)
    texts = []
    for i, item in enumerate(instances):
        where = f"instances[{i}]"
        if isinstance(item, dict):
            if "text" not in item:
                raise BadRequest(f'{where} is an object without a "text" field; {example}')
            texts.append(check_text(item["text"], f"{where}.text", limits))
        elif isinstance(item, str):
            texts.append(check_text(item, where, limits))
        else:
            raise BadRequest(f'{where} must be a string or an object {{"text": "..."}}, got {_json_kind(item)}')
    return texts


def _json_kind(value: Any) -> str:
    kinds = {dict: "an object", list: "an array", str: "a string", bool: "a boolean", type(None): "null"}
    for py_type, kind in kinds.items():
        if type(value) is py_type:
            return kind
    return "a number" if isinstance(value, int | float) else f"a {type(value).__name__}"


def _flatten(data: Any) -> list[Any]:
    if not isinstance(data, list | tuple):
        return [data]
    out: list[Any] = []
    for item in data:
        out.extend(_flatten(item) if isinstance(item, list | tuple) else [item])
    return out


def show(value: Any, limit: int = 80) -> str:
    """``repr`` of a client-supplied value, cut to ``limit`` characters for an error message."""
    text = repr(value)
    return text if len(text) <= limit else f"{text[: limit - 15]}... ({len(text)} chars)"


def check_v2_shape(shape: Any, where: str = f"input {V2_INPUT_NAME!r}") -> int:
    """The number of texts a V2 ``text`` tensor declares: its shape must be ``[n]`` or ``[n, 1]``, n ≥ 0.

    ``[]`` (a scalar), booleans (``[true]`` is not ``[1]``), negative or wildcard (``-1``) dimensions and
    anything that is not a list of integers are refused.
    """
    dims = list(shape) if isinstance(shape, list | tuple) else None
    if (
        dims is None
        or not 1 <= len(dims) <= 2
        or any(not isinstance(d, int) or isinstance(d, bool) or d < 0 for d in dims)
    ):
        raise BadRequest(
            f"{where} must have shape [n] or [n, 1] with n a non-negative integer, got {show(shape)}",
            reason="invalid_shape",
        )
    if len(dims) == 2 and dims[1] != 1:
        raise BadRequest(f"{where} must have shape [n] or [n, 1], got {dims}", reason="invalid_shape")
    return dims[0]


def parse_v2_inputs(inputs: Sequence[Any], limits: ServingLimits) -> list[str]:
    """Texts from V2 request inputs (objects with ``name``, ``datatype``, ``shape``, ``data``).

    Exactly one input named ``text`` of datatype ``BYTES`` is expected; its data may be flat or nested
    (row-major), and must hold as many strings as its shape says.
    """
    names = [getattr(inp, "name", None) for inp in inputs]
    matching = [inp for inp in inputs if getattr(inp, "name", None) == V2_INPUT_NAME]
    if len(matching) != 1 or len(inputs) != 1:
        raise BadRequest(
            f"expected exactly one input named {V2_INPUT_NAME!r} (datatype BYTES, shape [n]); got inputs {names}"
        )
    inp = matching[0]
    datatype = str(getattr(inp, "datatype", "")).upper()
    if datatype != "BYTES":
        raise BadRequest(f"input {V2_INPUT_NAME!r} must have datatype BYTES, got {datatype or 'none'}")
    data = getattr(inp, "data", None)
    if (data is None or (isinstance(data, list) and not data)) and hasattr(inp, "as_numpy"):
        # binary-encoded tensors (gRPC raw contents) carry no JSON data
        try:
            data = inp.as_numpy().tolist()
        except Exception:
            data = data or []
    if data is None:
        raise BadRequest(f"input {V2_INPUT_NAME!r} has no data")
    values = _flatten(data)
    shape = getattr(inp, "shape", None)
    expected = check_v2_shape(shape)
    if expected != len(values):
        raise BadRequest(
            f"input {V2_INPUT_NAME!r} has shape {list(shape)} ({expected} values) but its data holds {len(values)}",
            reason="invalid_shape",
        )
    check_count(len(values), f"input {V2_INPUT_NAME!r}", limits)
    return [check_text(v, f"{V2_INPUT_NAME}[{i}]", limits) for i, v in enumerate(values)]


V2_BINARY_HEADER = "inference-header-content-length"
_BYTES_LENGTH_PREFIX = struct.Struct("<I")


def encode_v2_binary_request(texts: Sequence[str | bytes], request_id: str | None = None) -> tuple[bytes, int]:
    """A V2 request for ``texts`` in the binary tensor extension: (body, JSON length for the header)."""
    raw = b"".join(
        _BYTES_LENGTH_PREFIX.pack(len(b)) + b for b in (t.encode("utf-8") if isinstance(t, str) else t for t in texts)
    )
    header: dict[str, Any] = {
        "inputs": [
            {
                "name": V2_INPUT_NAME,
                "datatype": "BYTES",
                "shape": [len(texts)],
                "parameters": {"binary_data_size": len(raw)},
            }
        ]
    }
    if request_id is not None:
        header["id"] = request_id
    json_part = json.dumps(header).encode("utf-8")
    return json_part + raw, len(json_part)


def parse_requested_outputs(requested: Sequence[Any] | None) -> list[str] | None:
    """Names of the V2 outputs a request asked for (``None``: all); unknown names are refused."""
    if not requested:
        return None
    names = [str(getattr(out, "name", out)) for out in requested]
    unknown = [n for n in names if n not in V2_OUTPUTS]
    if unknown:
        raise BadRequest(f"unknown requested output(s) {unknown}; this model produces {list(V2_OUTPUTS)}")
    return names


def build_predictions(
    proba: np.ndarray, label_names: Sequence[str], label_ids: Sequence[int] | np.ndarray, decisions: Sequence[str]
) -> Predictions:
    """Bundle a batch's answer; ``label_ids`` come from the model's decision rule, not from argmax here."""
    proba = np.asarray(proba, dtype=np.float32)
    if proba.ndim != 2 or proba.shape[1] != len(label_names):
        raise ValueError(f"expected probabilities of shape [n, {len(label_names)}], got {proba.shape}")
    label_ids = np.asarray(label_ids, dtype=np.int64)
    if label_ids.shape != (proba.shape[0],) or len(decisions) != proba.shape[0]:
        raise ValueError(
            f"expected {proba.shape[0]} label ids and decisions, got {label_ids.shape} and {len(decisions)}"
        )
    return Predictions(
        proba=proba,
        label_ids=label_ids,
        labels=[label_names[i] for i in label_ids],
        decisions=list(decisions),
    )


def format_v1(predictions: Predictions, label_names: Sequence[str]) -> dict[str, Any]:
    return {
        "predictions": [
            {
                "label": label,
                "label_id": int(label_id),
                "scores": {name: float(p) for name, p in zip(label_names, row, strict=True)},
                "decision": decision,
            }
            for label, label_id, row, decision in zip(
                predictions.labels, predictions.label_ids, predictions.proba, predictions.decisions, strict=True
            )
        ]
    }


def v2_output_specs(predictions: Predictions, label_names: Sequence[str]) -> list[dict[str, Any]]:
    """The V2 output tensors as plain dicts (name, datatype, shape, data, parameters)."""
    n = len(predictions.labels)
    return [
        {"name": "label", "datatype": "BYTES", "shape": [n], "data": list(predictions.labels)},
        {"name": "label_id", "datatype": "INT64", "shape": [n], "data": predictions.label_ids.tolist()},
        {
            "name": "scores",
            "datatype": "FP32",
            "shape": [n, len(label_names)],
            "data": predictions.proba.reshape(-1).tolist(),
            # V2 metadata has no place for class names; a client reads them here to name the columns.
            "parameters": {"labels": json.dumps(list(label_names))},
        },
        {"name": "decision", "datatype": "BYTES", "shape": [n], "data": list(predictions.decisions)},
    ]


def v2_metadata(num_classes: int) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Input and output tensor descriptions for the V2 model-metadata endpoint."""
    inputs = [{"name": V2_INPUT_NAME, "datatype": "BYTES", "shape": [-1]}]
    outputs = [
        {"name": "label", "datatype": "BYTES", "shape": [-1]},
        {"name": "label_id", "datatype": "INT64", "shape": [-1]},
        {"name": "scores", "datatype": "FP32", "shape": [-1, num_classes]},
        {"name": "decision", "datatype": "BYTES", "shape": [-1]},
    ]
    return inputs, outputs
