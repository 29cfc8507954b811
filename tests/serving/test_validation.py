"""Request validation without a server: raw bodies and headers in, texts or a BadRequest naming the problem out."""

from __future__ import annotations

import json
import re

import pytest

from serving.metrics import REASONS
from serving.protocol import MAX_JSON_DEPTH, BadRequest, ServingLimits, decode_json_body, json_depth
from serving.validation import (
    check_json_content_type,
    parse_content_type,
    validate_v1_request,
    validate_v2_request,
)

from .serving_helpers import binary_input, bytes_elements, v2_binary, v2_json

LIMITS = ServingLimits(max_instances=3, max_chars=10)
JSON = {"content-type": "application/json"}
CLOUDEVENT = {"ce-specversion": "1.0", "ce-source": "s", "ce-type": "t", "ce-id": "1"}


def rejected(call, *args) -> BadRequest:
    with pytest.raises(BadRequest) as info:
        call(*args)
    assert info.value.reason in REASONS  # every reason is a known, bounded metric label
    return info.value


# ---- content types and JSON ------------------------------------------------------------------------------------


def test_content_types_are_parsed_and_only_utf8_json_passes() -> None:
    assert parse_content_type('Application/JSON; Charset="UTF-8"') == ("application/json", {"charset": "utf-8"})
    assert parse_content_type(None) == (None, {})
    for ok in ("application/json", "application/json; charset=utf-8", "application/cloudevents+json", None):
        check_json_content_type(ok, "body", allow_missing=True)
    for bad, fragment in [
        ("text/plain", "Content-Type 'text/plain'"),
        ("application/x-www-form-urlencoded", "send application/json"),
        ("application/json; charset=latin-1", "charset 'latin-1'"),
        ("multipart/form-data; boundary=x", "multipart/form-data"),
    ]:
        error = rejected(check_json_content_type, bad, "body", True)
        assert (error.status, error.reason) == (415, "unsupported_content_type") and fragment in str(error)
    assert "has no Content-Type" in str(rejected(check_json_content_type, None, "V2 request", False))


def test_json_depth_is_counted_without_recursion() -> None:
    assert json_depth("a", 5) == 0 and json_depth([], 5) == 1 and json_depth({"a": [[1], {"b": []}]}, 5) == 4
    deep: list = []
    for _ in range(100_000):  # far deeper than Python's recursion limit
        deep = [deep]
    assert json_depth(deep, 10) == 11


@pytest.mark.parametrize("levels", [MAX_JSON_DEPTH + 1, 990, 1_000, 100_000])
def test_deep_json_is_refused_with_a_depth_message(levels: int) -> None:
    for body in (b"[" * levels + b"]" * levels, b'{"a":' * levels + b"1" + b"}" * levels):
        error = rejected(decode_json_body, body)
        assert error.reason == "json_too_deep" and f"nested more than {MAX_JSON_DEPTH} levels" in str(error)
    nested_ok = b"[" * MAX_JSON_DEPTH + b"]" * MAX_JSON_DEPTH
    assert json_depth(decode_json_body(nested_ok), MAX_JSON_DEPTH) == MAX_JSON_DEPTH


@pytest.mark.parametrize(
    ("body", "reason", "fragment"),
    [
        (b"", "invalid_json", "not valid JSON: Input is a zero-length, empty document"),
        (b'{"a": NaN}', "invalid_json", "not valid JSON"),
        (b'["\\ud800"]', "invalid_json", "no low surrogate"),
        (b'["ok" \xff]', "invalid_utf8", "not valid UTF-8 (invalid byte at position 6)"),
        (b"\xef\xbb\xbf[]", "invalid_json", "byte order mark"),
    ],
)
def test_json_errors_name_the_problem(body: bytes, reason: str, fragment: str) -> None:
    error = rejected(decode_json_body, body)
    assert error.reason == reason and fragment in str(error)


# ---- V1 --------------------------------------------------------------------------------------------------------


def test_v1_valid_requests_including_cloudevents() -> None:
    assert validate_v1_request(b'{"instances": ["a", {"text": "b"}]}', JSON, LIMITS) == ["a", "b"]
    assert validate_v1_request(b'{"instances": ["a"]}', {}, LIMITS) == ["a"]  # no content type: JSON
    structured = {"specversion": "1.0", "id": "1", "source": "s", "type": "t", "time": "now"}
    structured["data"] = {"instances": ["x"]}
    ce_json = {"content-type": "application/cloudevents+json"}
    assert validate_v1_request(json.dumps(structured).encode(), ce_json, LIMITS) == ["x"]
    assert validate_v1_request(b'{"instances": ["y"]}', {**CLOUDEVENT, **JSON}, LIMITS) == ["y"]
    # KServe unwraps a structured CloudEvent only for the content types it decodes itself (compared verbatim)
    charset = {"content-type": "application/json; charset=utf-8"}
    with pytest.raises(BadRequest, match='no "instances" field'):
        validate_v1_request(json.dumps(structured).encode(), charset, LIMITS)
    # unicode that is valid text passes untouched: NUL, right-to-left override, Cyrillic homoglyphs
    tricky = ["a\x00b", "\u202eevil", "\u0456gn\u043ere"]
    assert validate_v1_request(json.dumps({"instances": tricky}).encode(), JSON, LIMITS) == tricky


@pytest.mark.parametrize(
    ("body", "headers", "status", "reason", "fragment"),
    [
        (b'{"instances": ["a"]}', {"content-type": "text/html"}, 415, "unsupported_content_type", "text/html"),
        (b'{"instances": ["a"]}', {"content-type": "image/png"}, 415, "unsupported_content_type", "image/png"),
        (b"", {**CLOUDEVENT, **JSON}, 400, "empty_request", "binary-mode CloudEvent data is empty"),
        (b"", JSON, 400, "empty_request", "V1 request body is empty"),
        (b'{"instances":' + b"[" * 1000 + b"]" * 1000 + b"}", JSON, 400, "json_too_deep", "nested more than"),
        (
            json.dumps({"specversion": "1", "id": "1", "source": "s", "type": "t", "time": "t", "data": [1]}).encode(),
            JSON,
            400,
            "invalid_field",
            "must be a JSON object; got an array",
        ),
        (b'{"instances": ["a", "b", "c", "d"]}', JSON, 400, "too_many_texts", "has 4 texts; at most 3"),
        (b'{"instances": ["abcdefghijk"]}', JSON, 400, "text_too_long", "has 11 characters; at most 10"),
        (b'{"instances": ["a"]}', {**CLOUDEVENT, "ce-contenttype": "application/json"}, 400, "invalid_field", "ce-"),
        (b'{"instances": []}', JSON, 400, "empty_request", '"instances" is empty'),
    ],
)
def test_v1_rejections(body: bytes, headers: dict, status: int, reason: str, fragment: str) -> None:
    error = rejected(validate_v1_request, body, headers, LIMITS)
    assert (error.status, error.reason) == (status, reason) and fragment in str(error)


# ---- V2 JSON ---------------------------------------------------------------------------------------------------


def v2(**input_fields) -> bytes:
    inp = {"name": "text", "datatype": "BYTES", "shape": [1], "data": ["a"], **input_fields}
    return json.dumps({"inputs": [{k: v for k, v in inp.items() if v is not None}]}).encode()


def test_v2_valid_requests() -> None:
    assert validate_v2_request(v2_json(["a", "b"]), JSON, LIMITS) == ["a", "b"]
    assert validate_v2_request(v2(shape=[2, 1], data=[["a"], ["b"]]), JSON, LIMITS) == ["a", "b"]
    assert validate_v2_request(v2(shape=[2, 1], data=["a", "b"]), JSON, LIMITS) == ["a", "b"]
    full = json.loads(v2_json(["a"]))
    full |= {"id": "r-1", "parameters": {"x": 1, "y": True, "z": "s", "w": 0.5}, "outputs": [{"name": "label"}]}
    assert validate_v2_request(json.dumps(full).encode(), JSON, LIMITS) == ["a"]
    assert validate_v2_request(v2_json(["a"], outputs=[]), JSON, LIMITS) == ["a"]


@pytest.mark.parametrize(
    ("body", "fragment"),
    [
        (b"[1]", "V2 request body must be a JSON object, got an array"),
        (b'{"id": "1"}', 'V2 request has no "inputs" field'),
        (b'{"inputs": {}}', '"inputs" must be a list, got an object'),
        (b'{"inputs": []}', "expected exactly one input named 'text'"),
        (v2(name="prompt"), "got inputs ['prompt']"),
        (v2(datatype="FP32"), "must have datatype BYTES, got 'FP32'"),
        (v2(datatype="bytes"), "must have datatype BYTES, got 'bytes'"),
        (v2(shape=[]), "must have shape [n] or [n, 1] with n a non-negative integer, got []"),
        (v2(shape=[True]), "got [True]"),
        (v2(shape=[-1]), "got [-1]"),
        (v2(shape=["1"]), "got ['1']"),
        (v2(shape=[1, 2], data=["a", "b"]), "must have shape [n] or [n, 1], got [1, 2]"),
        (v2(shape=[3], data=[["a"], ["b", "c"]]), "has shape [3] (3 values) but its data holds 2"),
        (v2(shape=[2, 1], data=[["a"], ["b", "c"]]), "data[1] must be a row of exactly 1 string"),
        (v2(shape=[2], data=[["a"], ["b"]]), "text[0] must be a string, got list"),
        (v2(data="a"), "data must be a list of strings, got a string"),
        (v2(data=None), 'has no "data"'),
        (v2(data=[None]), "text[0] must be a string, got null"),
        (v2(parameters={"binary_data_size": 3}), "the request is JSON"),
        (v2(parameters={"a": [1]}), "parameters['a'] must be a string, number or boolean, got an array"),
        (v2_json(["a"], id=5), '"id" must be a string, got a number 5'),
        (v2_json(["a"], id="x" * 300), '"id" has 300 characters; at most 256'),
        (v2_json(["a"], parameters=[1]), '"parameters" must be an object'),
        (v2_json(["a"], parameters={"p": None}), "must be a string, number or boolean, got null"),
        (v2_json(["a"], outputs="label"), '"outputs" must be a list'),
        (v2_json(["a"], outputs=["label"]), "outputs[0] must be an object"),
        (v2_json(["a"], outputs=[{}]), 'outputs[0] needs a "name" string'),
        (v2_json(["a"], outputs=[{"name": "probabilities"}]), "unknown requested output(s) ['probabilities']"),
        (v2_json(["a"], outputs=[{"name": "label"}, {"name": "label"}]), "'label' is requested twice"),
        (v2_json(["a"], outputs=[{"name": "label", "parameters": "x"}]), "outputs[0].parameters must be an object"),
    ],
)
def test_v2_json_rejections_name_the_field(body: bytes, fragment: str) -> None:
    error = rejected(validate_v2_request, body, JSON, LIMITS)
    assert error.status == 400 and fragment in str(error), str(error)


def test_v2_content_types() -> None:
    assert "has no Content-Type" in str(rejected(validate_v2_request, v2_json(["a"]), {}, LIMITS))
    error = rejected(validate_v2_request, v2_json(["a"]), {"content-type": "text/plain"}, LIMITS)
    assert error.status == 415
    body, headers = v2_binary({"inputs": [binary_input()]}, bytes_elements(b"abc"))
    assert validate_v2_request(body, headers, LIMITS) == ["abc"]
    assert validate_v2_request(body, {k: v for k, v in headers.items() if k != "content-type"}, LIMITS) == ["abc"]
    error = rejected(validate_v2_request, body, {**headers, "content-type": "application/json"}, LIMITS)
    assert error.status == 415 and "send application/octet-stream" in str(error)


# ---- V2 binary tensor extension ----------------------------------------------------------------------------------

ONE = bytes_elements(b"abc")


@pytest.mark.parametrize(
    ("header", "raw", "reason", "fragment"),
    [
        (
            {"inputs": [binary_input(shape=[2])]},
            ONE,
            "invalid_shape",
            "shape [2] (2 values) but its binary data holds 1",
        ),
        (
            {"inputs": [binary_input(parameters={"binary_data_size": 14})]},
            bytes_elements(b"abc", b"def"),
            "invalid_shape",
            "holds more elements",
        ),
        ({"inputs": [binary_input(shape=[-1])]}, ONE, "invalid_shape", "got [-1]"),
        ({"inputs": [binary_input(parameters={"binary_data_size": 0})]}, b"", "invalid_shape", "binary data holds 0"),
        ({"inputs": [binary_input(shape="1")]}, ONE, "invalid_shape", "got '1'"),
        ({"inputs": [binary_input(shape=None)]}, ONE, "invalid_field", 'no "shape" field'),
        ({"inputs": [binary_input(name=None)]}, ONE, "invalid_field", "got inputs [None]"),
        ({"inputs": [binary_input(datatype=None)]}, ONE, "invalid_field", 'no "datatype" field'),
        (
            {"inputs": [binary_input(datatype="FP32", parameters={"binary_data_size": 3})]},
            b"abc",
            "invalid_field",
            "datatype BYTES",
        ),
        ({"inputs": [binary_input(parameters=[7])]}, ONE, "invalid_field", "parameters must be an object"),
        ({"inputs": [binary_input(parameters={"binary_data_size": True})]}, ONE, "invalid_binary_framing", "True"),
        ({"inputs": [binary_input(parameters={"binary_data_size": "7"})]}, ONE, "invalid_binary_framing", "'7'"),
        ({"inputs": [binary_input(data=["x"])]}, ONE, "invalid_field", "both data and parameters.binary_data_size"),
        ({"inputs": [binary_input()]}, ONE + b"zz", "invalid_binary_framing", "binary part has 9 bytes"),
        ({"inputs": [binary_input()], "parameters": "x"}, ONE, "invalid_field", '"parameters" must be an object'),
        ({"inputs": [binary_input()], "outputs": [{}]}, ONE, "invalid_field", 'outputs[0] needs a "name"'),
        ({"inputs": [binary_input()], "id": 5}, ONE, "invalid_field", '"id" must be a string'),
        (
            {"inputs": [binary_input(parameters={"binary_data_size": 5})]},
            bytes_elements(b"\xff"),
            "invalid_utf8",
            "text[0] is not valid UTF-8",
        ),
        (
            {"inputs": [binary_input(shape=[4], parameters={"binary_data_size": 16})]},
            bytes_elements(b"a", b"b", b"c", b"d"),
            "too_many_texts",
            "has 4 texts; at most 3",
        ),
    ],
)
def test_v2_binary_rejections(header: dict, raw: bytes, reason: str, fragment: str) -> None:
    body, headers = v2_binary(header, raw)
    error = rejected(validate_v2_request, body, headers, LIMITS)
    assert (error.status, error.reason) == (400, reason) and fragment in str(error), str(error)


def test_v2_binary_header_length_must_frame_the_json() -> None:
    body, headers = v2_binary({"inputs": [binary_input()]}, ONE)
    for value, fragment in [("x", "is not an integer"), ("0", "does not fit"), (str(len(body) + 1), "does not fit")]:
        error = rejected(validate_v2_request, body, {**headers, "inference-header-content-length": value}, LIMITS)
        assert error.reason == "invalid_binary_framing" and fragment in str(error)
    error = rejected(validate_v2_request, body, {**headers, "inference-header-content-length": "5"}, LIMITS)
    assert re.search(r"JSON part of the binary request \(5 bytes\) is not valid JSON", str(error))
