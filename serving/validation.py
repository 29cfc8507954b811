"""Validation of raw V1 and V2 request bodies, before KServe decodes them.

Pure functions: a body (bytes) and its headers in, the request's texts out, or :class:`BadRequest` whose message
names the field, what it held and what is allowed, and whose ``status``/``reason`` say how to answer and count it
(400 bad structure, type or shape; 413 body too large; 415 unsupported content type). The HTTP layer
(:mod:`serving.http`) runs these checks on every predict/infer request; only requests that pass reach KServe, so
KServe's own decoders (orjson, pydantic, numpy reshapes of the binary extension) never see input they would
answer with a 500.

JSON is parsed by :func:`serving.protocol.decode_json_body` (orjson: iterative, no Python recursion; plus a
nesting-depth limit of :data:`serving.protocol.MAX_JSON_DEPTH`).

V1  ``POST /v1/models/<name>:predict`` — ``application/json`` (or any ``application/*+json``, or no content type),
    UTF-8; a structured CloudEvent carries the V1 body in ``data``, a binary-mode CloudEvent (``ce-*`` headers)
    in the HTTP body.
V2  ``POST /v2/models/<name>/infer`` — ``application/json``; or the binary tensor extension
    (``inference-header-content-length`` header, ``application/octet-stream`` or no content type): that many bytes
    of JSON, then each input's raw tensor (``parameters.binary_data_size`` bytes; BYTES elements are a 4-byte
    little-endian length and that many UTF-8 bytes).
"""

from __future__ import annotations

import struct
from collections.abc import Mapping
from typing import Any

from serving.protocol import (
    V2_BINARY_HEADER,
    V2_INPUT_NAME,
    V2_OUTPUTS,
    BadRequest,
    ServingLimits,
    check_count,
    check_text,
    check_v2_shape,
    decode_json_body,
    parse_v1_body,
    show,
)

MAX_ID_CHARS = 256
CLOUDEVENT_BINARY_HEADERS = ("ce-specversion", "ce-source", "ce-type", "ce-id")
# Keys whose presence makes KServe treat a JSON body as a structured CloudEvent and serve its "data" ...
_STRUCTURED_CLOUDEVENT_KEYS = frozenset({"time", "type", "source", "id", "specversion", "data"})
# ... which it only does for these Content-Type values, compared verbatim (kserve.protocol.dataplane.JSON_HEADERS;
# octet-stream is refused for V1 here), or none; any other value reaches the predictor as raw bytes.
_KSERVE_DECODED_TYPES = frozenset({"application/json", "application/cloudevents+json", "application/ld+json"})
_LENGTH_PREFIX = struct.Struct("<I")
_V2_EXAMPLE = '{"inputs": [{"name": "text", "datatype": "BYTES", "shape": [n], "data": ["...", ...]}]}'
_JSON_TYPES_TEXT = "application/json (or another application/*+json type)"


def _kind(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    return {dict: "an object", list: "an array", str: "a string"}.get(type(value), type(value).__name__)


# ---- content types ------------------------------------------------------------------------------------------


def parse_content_type(value: str | None) -> tuple[str | None, dict[str, str]]:
    """``("application/json", {"charset": "utf-8"})`` from a Content-Type header; ``(None, {})`` when absent."""
    if value is None or not value.strip():
        return None, {}
    mime, *params = value.split(";")
    parsed = {}
    for param in params:
        key, _, val = param.partition("=")
        parsed[key.strip().lower()] = val.strip().strip('"').lower()
    return mime.strip().lower(), parsed


def is_json_type(mime: str | None) -> bool:
    return mime == "application/json" or (
        mime is not None and mime.startswith("application/") and mime.endswith("+json")
    )


def _unsupported(message: str) -> BadRequest:
    return BadRequest(message, reason="unsupported_content_type", status=415)


def check_json_content_type(content_type: str | None, what: str, allow_missing: bool) -> None:
    """A JSON content type (charset, if given, UTF-8); raises 415 naming what was sent and what is allowed."""
    mime, params = parse_content_type(content_type)
    if mime is None:
        if allow_missing:
            return
        raise _unsupported(f"{what} has no Content-Type; send {_JSON_TYPES_TEXT}")
    if not is_json_type(mime):
        raise _unsupported(f"{what} has Content-Type {show(content_type)}; send {_JSON_TYPES_TEXT}")
    charset = params.get("charset")
    if charset is not None and charset not in ("utf-8", "utf8"):
        raise _unsupported(f"{what} declares charset {show(charset)}; only UTF-8 encoded JSON is accepted")


# ---- V1 -------------------------------------------------------------------------------------------------------


def is_binary_cloudevent(headers: Mapping[str, str]) -> bool:
    """KServe's rule: all four required ``ce-*`` attributes as headers make the request a binary-mode CloudEvent."""
    return all(name in headers for name in CLOUDEVENT_BINARY_HEADERS)


def validate_v1_request(body: bytes, headers: Mapping[str, str], limits: ServingLimits) -> list[str]:
    """Texts of a V1 predict request (``headers`` with lower-case names), or BadRequest."""
    binary_event = is_binary_cloudevent(headers)
    what = "binary-mode CloudEvent data" if binary_event else "V1 request body"
    content_type = headers.get("content-type")
    check_json_content_type(content_type, what, allow_missing=True)
    if binary_event and "ce-contenttype" in headers:
        # KServe then unmarshals the data itself and fails on the result (AttributeError, a 500).
        raise BadRequest(
            "binary-mode CloudEvent with a ce-contenttype header is not supported; give the data's type in the "
            "Content-Type header (application/json)"
        )
    if not body:
        raise BadRequest(f'{what} is empty; expected {{"instances": ["text", ...]}}', reason="empty_request")
    parsed = decode_json_body(body, what)
    structured = isinstance(parsed, dict) and parsed.keys() >= _STRUCTURED_CLOUDEVENT_KEYS
    if structured and not binary_event and (content_type is None or content_type in _KSERVE_DECODED_TYPES):
        # KServe serves the "data" of a structured CloudEvent; it must hold the V1 body.
        parsed = parsed["data"]
    return parse_v1_body(parsed, limits)


# ---- V2 -------------------------------------------------------------------------------------------------------


def validate_v2_request(body: bytes, headers: Mapping[str, str], limits: ServingLimits) -> list[str]:
    """Texts of a V2 infer request, JSON or binary tensor extension (``headers`` with lower-case names)."""
    header_length = headers.get(V2_BINARY_HEADER)
    content_type = headers.get("content-type")
    if header_length is None:
        if parse_content_type(content_type)[0] is None:
            raise _unsupported(
                f"V2 request has no Content-Type; send {_JSON_TYPES_TEXT}, or application/octet-stream with the "
                f"{V2_BINARY_HEADER} header for the binary tensor extension"
            )
        check_json_content_type(content_type, "V2 request", allow_missing=False)
        request = decode_json_body(body, "V2 request body")
        return validate_v2_object(request, limits)
    mime, _ = parse_content_type(content_type)
    if mime not in (None, "application/octet-stream"):
        raise _unsupported(
            f"V2 request in the binary tensor extension ({V2_BINARY_HEADER} header) has Content-Type "
            f"{show(content_type)}; send application/octet-stream"
        )
    return validate_v2_binary_request(body, header_length, limits)


def validate_v2_binary_request(body: bytes, header_length: str, limits: ServingLimits) -> list[str]:
    """Texts of a V2 request in the binary tensor extension: the framing, the JSON part and every element."""
    try:
        json_length = int(header_length.strip())
    except ValueError:
        raise BadRequest(
            f"header {V2_BINARY_HEADER}={show(header_length)} is not an integer", reason="invalid_binary_framing"
        ) from None
    if not 0 < json_length <= len(body):
        raise BadRequest(
            f"header {V2_BINARY_HEADER}={json_length} does not fit a body of {len(body)} bytes; it must give the "
            "length of the JSON part",
            reason="invalid_binary_framing",
        )
    header = decode_json_body(body[:json_length], f"the JSON part of the binary request ({json_length} bytes)")
    return validate_v2_object(header, limits, binary=body[json_length:])


def validate_v2_object(request: Any, limits: ServingLimits, binary: bytes | None = None) -> list[str]:
    """Texts of a parsed V2 request; ``binary`` is the part after the JSON in the binary tensor extension."""
    if not isinstance(request, dict):
        raise BadRequest(f"V2 request body must be a JSON object, got {_kind(request)}; expected {_V2_EXAMPLE}")
    request_id = request.get("id")
    if request_id is not None:
        if not isinstance(request_id, str):
            raise BadRequest(f'"id" must be a string, got {_kind(request_id)} {show(request_id)}')
        if len(request_id) > MAX_ID_CHARS:
            raise BadRequest(f'"id" has {len(request_id)} characters; at most {MAX_ID_CHARS} are allowed')
    check_parameters(request.get("parameters"), '"parameters"')
    check_requested_outputs(request.get("outputs"))
    if "inputs" not in request:
        raise BadRequest(f'V2 request has no "inputs" field; expected {_V2_EXAMPLE}')
    inputs = request["inputs"]
    if not isinstance(inputs, list):
        raise BadRequest(f'"inputs" must be a list, got {_kind(inputs)}; expected {_V2_EXAMPLE}')
    names = [inp.get("name") if isinstance(inp, dict) else None for inp in inputs]
    if len(inputs) != 1 or names[0] != V2_INPUT_NAME:
        raise BadRequest(
            f"expected exactly one input named {V2_INPUT_NAME!r} (datatype BYTES, shape [n]); got inputs {show(names)}"
        )
    texts, used = _input_texts(inputs[0], limits, binary)
    if binary is not None and used != len(binary):
        raise BadRequest(
            f"the binary part has {len(binary)} bytes but the inputs' binary_data_size add up to {used}; every "
            "byte after the JSON part must belong to an input",
            reason="invalid_binary_framing",
        )
    return texts


def check_parameters(parameters: Any, where: str) -> None:
    """Open Inference Protocol parameters: an object whose values are strings, numbers or booleans."""
    if parameters is None:
        return
    if not isinstance(parameters, dict):
        raise BadRequest(f"{where} must be an object of string, number or boolean values, got {_kind(parameters)}")
    for key, value in parameters.items():
        if not isinstance(value, str | int | float):  # bool is an int
            raise BadRequest(f"{where}[{show(key)}] must be a string, number or boolean, got {_kind(value)}")


def check_requested_outputs(outputs: Any) -> list[str] | None:
    """Names of the requested outputs (``None`` or ``[]``: all of them); each an object with a known name."""
    if outputs is None:
        return None
    example = f'[{{"name": "{V2_OUTPUTS[0]}"}}, ...]'
    if not isinstance(outputs, list):
        raise BadRequest(f'"outputs" must be a list of objects like {example}, got {_kind(outputs)}')
    names: list[str] = []
    for i, output in enumerate(outputs):
        where = f"outputs[{i}]"
        if not isinstance(output, dict):
            raise BadRequest(f"{where} must be an object like {{'name': 'label'}}, got {_kind(output)}")
        name = output.get("name")
        if not isinstance(name, str):
            raise BadRequest(f'{where} needs a "name" string; this model produces {list(V2_OUTPUTS)}')
        if name not in V2_OUTPUTS:
            raise BadRequest(f"unknown requested output(s) [{show(name)}]; this model produces {list(V2_OUTPUTS)}")
        if name in names:
            raise BadRequest(f"{where}: output {name!r} is requested twice")
        check_parameters(output.get("parameters"), f"{where}.parameters")
        names.append(name)
    return names


def _input_texts(inp: Any, limits: ServingLimits, binary: bytes | None) -> tuple[list[str], int]:
    """The texts of the ``text`` input and how many bytes of the binary part they used."""
    where = f"input {V2_INPUT_NAME!r}"
    if not isinstance(inp, dict):
        raise BadRequest(f"{where} must be an object, got {_kind(inp)}")
    for field in ("datatype", "shape"):
        if field not in inp:
            raise BadRequest(f'{where} has no "{field}" field; expected {_V2_EXAMPLE}')
    datatype = inp["datatype"]
    if datatype != "BYTES":
        raise BadRequest(f"{where} must have datatype BYTES, got {show(datatype)}")
    count = check_v2_shape(inp["shape"], where)
    check_count(count, where, limits)
    check_parameters(inp.get("parameters"), f"{where} parameters")
    size = (inp.get("parameters") or {}).get("binary_data_size")
    data = inp.get("data")
    if size is not None:
        if binary is None:
            raise BadRequest(
                f"{where} has parameters.binary_data_size but the request is JSON; binary data needs the "
                f"{V2_BINARY_HEADER} header (the binary tensor extension)",
                reason="invalid_binary_framing",
            )
        if data is not None:
            raise BadRequest(f"{where} has both data and parameters.binary_data_size; send one of them")
        return _binary_texts(binary, size, count, inp["shape"], limits), size
    if data is None:
        raise BadRequest(f'{where} has no "data" (nor parameters.binary_data_size); expected {_V2_EXAMPLE}')
    return _json_texts(data, count, inp["shape"], limits), 0


def _json_texts(data: Any, count: int, shape: list[int], limits: ServingLimits) -> list[str]:
    """``data`` as ``count`` strings: a flat list, or for shape [n, 1] also n one-string rows."""
    where = f"input {V2_INPUT_NAME!r}"
    if not isinstance(data, list):
        raise BadRequest(f"{where} data must be a list of strings, got {_kind(data)}")
    if len(shape) == 2 and any(isinstance(row, list) for row in data):
        if len(data) != count:
            raise BadRequest(f"{where} has shape {shape} but its data has {len(data)} rows", reason="invalid_shape")
        values = []
        for i, row in enumerate(data):
            if not isinstance(row, list) or len(row) != 1:
                raise BadRequest(
                    f"{where} data[{i}] must be a row of exactly 1 string for shape {shape}, got {show(row)}",
                    reason="invalid_shape",
                )
            values.append(row[0])
    else:
        values = data
    if len(values) != count:
        raise BadRequest(
            f"{where} has shape {shape} ({count} values) but its data holds {len(values)}", reason="invalid_shape"
        )
    return [check_text(v, f"{V2_INPUT_NAME}[{i}]", limits) for i, v in enumerate(values)]


def _binary_texts(binary: bytes, size: Any, count: int, shape: list[int], limits: ServingLimits) -> list[str]:
    """``count`` UTF-8 strings from the first ``size`` bytes of the binary part (4-byte length, then bytes)."""
    where = f"input {V2_INPUT_NAME!r}"
    if not isinstance(size, int) or isinstance(size, bool) or size < 0:
        raise BadRequest(
            f"{where}: binary_data_size={show(size)} must be a non-negative integer", reason="invalid_binary_framing"
        )
    if size > len(binary):
        raise BadRequest(
            f"{where}: binary_data_size={size} runs past the end of the body ({len(binary)} bytes after the JSON part)",
            reason="invalid_binary_framing",
        )
    raw = binary[:size]
    texts: list[str] = []
    position = 0
    while position < len(raw):
        element = len(texts)
        if position + _LENGTH_PREFIX.size > len(raw):
            raise BadRequest(
                f"{where}: element {element} has a truncated 4-byte length prefix", reason="invalid_binary_framing"
            )
        (length,) = _LENGTH_PREFIX.unpack_from(raw, position)
        start = position + _LENGTH_PREFIX.size
        if start + length > len(raw):
            raise BadRequest(
                f"{where}: element {element} declares {length} bytes but only {len(raw) - start} remain",
                reason="invalid_binary_framing",
            )
        if element >= count:  # stop at the first surplus element: a body of empty elements costs no more
            raise BadRequest(
                f"{where} has shape {shape} ({count} values) but its binary data holds more elements",
                reason="invalid_shape",
            )
        texts.append(check_text(raw[start : start + length], f"{V2_INPUT_NAME}[{element}]", limits))
        position = start + length
    if len(texts) != count:
        raise BadRequest(
            f"{where} has shape {shape} ({count} values) but its binary data holds {len(texts)}",
            reason="invalid_shape",
        )
    return texts
