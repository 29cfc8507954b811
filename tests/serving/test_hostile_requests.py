"""The hostile requests of issue #16: each is answered 4xx with a message naming the problem, and counted.

Every case runs against KServe's app in process (fast) and against the real ``python -m serving`` process on
127.0.0.1 (slow; one server for the module). Before the hardening each case was answered 500 (deep JSON, the
binary-extension cases, the empty binary-mode CloudEvent), accepted with 200 (any content type, ``shape: []``,
``[true]``, ragged data, ``parameters`` of the wrong type) or misdescribed (a 990-deep V2 body "must be UTF-8
encoded JSON"); rejections were undercounted and 500s not counted at all.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import NamedTuple

import httpx
import pytest
from fastapi.exceptions import FastAPIDeprecationWarning
from fastapi.testclient import TestClient

from prompt_sentinel.config import load_config
from serving.protocol import ServingLimits

from .serving_helpers import JSON_CT, binary_input, bytes_elements, counter_total, v2_binary

# KServe 0.21 answers with ORJSONResponse, which FastAPI 0.165 deprecates; not ours to change.
pytestmark = pytest.mark.filterwarnings(f"ignore::{FastAPIDeprecationWarning.__module__}.FastAPIDeprecationWarning")

SERVER_LIMITS = (64, 20_000)  # the config defaults: the maximum-size request of the issue
NAME = "served"
V1, V2 = f"/v1/models/{NAME}:predict", f"/v2/models/{NAME}/infer"
ONE = bytes_elements(b"abc")  # one 3-byte BYTES element: 7 bytes
CLOUDEVENT = {"ce-specversion": "1.0", "ce-source": "test", "ce-type": "test", "ce-id": "1"}


class Case(NamedTuple):
    path: str
    body: bytes
    headers: dict[str, str]
    status: int
    fragment: str


def deep_array(levels: int, key: bytes = b"instances") -> bytes:
    return b'{"' + key + b'":' + b"[" * levels + b"]" * levels + b"}"


def deep_object(levels: int) -> bytes:
    return b'{"a":' * levels + b"1" + b"}" * levels


def binary_case(header: dict, raw: bytes, status: int, fragment: str) -> Case:
    body, headers = v2_binary(header, raw)
    return Case(V2, body, headers, status, fragment)


CHARSET_JSON = {"content-type": "application/json; charset=utf-8"}
SHAPE_RULE = "must have shape [n] or [n, 1]"
HOSTILE: dict[str, Case] = {
    # deeply nested JSON: RecursionError (500) with a charset or non-JSON content type
    "v1-deep-array-text-plain": Case(V1, deep_array(1000), {"content-type": "text/plain"}, 415, "Content-Type"),
    "v1-deep-array-charset": Case(V1, deep_array(1000), CHARSET_JSON, 400, "nested more than"),
    "v1-deep-object-charset": Case(V1, deep_object(1000), CHARSET_JSON, 400, "nested more than"),
    "v1-deep-array-json": Case(V1, deep_array(1000), JSON_CT, 400, "nested more than"),
    "v2-deep-990": Case(V2, deep_array(990, b"inputs"), JSON_CT, 400, "nested more than"),
    # V2 binary tensor extension: KServe's decoder raised ValueError/KeyError/TypeError/ValidationError (500)
    "bin-shape-5-for-1": binary_case({"inputs": [binary_input(shape=[5])]}, ONE, 400, "shape [5] (5 values)"),
    "bin-shape-1-for-2": binary_case(
        {"inputs": [binary_input(parameters={"binary_data_size": 14})]},
        bytes_elements(b"abc", b"def"),
        400,
        "shape [1] (1 values)",
    ),
    "bin-shape-minus-1": binary_case({"inputs": [binary_input(shape=[-1])]}, ONE, 400, SHAPE_RULE),
    "bin-size-0": binary_case(
        {"inputs": [binary_input(parameters={"binary_data_size": 0})]}, b"", 400, "binary data holds 0"
    ),
    "bin-shape-string": binary_case({"inputs": [binary_input(shape="1")]}, ONE, 400, SHAPE_RULE),
    "bin-no-shape": binary_case({"inputs": [binary_input(shape=None)]}, ONE, 400, 'no "shape" field'),
    "bin-no-name": binary_case({"inputs": [binary_input(name=None)]}, ONE, 400, "named 'text'"),
    "bin-no-datatype": binary_case({"inputs": [binary_input(datatype=None)]}, ONE, 400, 'no "datatype" field'),
    "bin-fp32-3-bytes": binary_case(
        {"inputs": [binary_input(datatype="FP32", parameters={"binary_data_size": 3})]},
        b"abc",
        400,
        "datatype BYTES",
    ),
    "bin-input-parameters-list": binary_case(
        {"inputs": [binary_input(parameters=[7])]}, ONE, 400, "parameters must be an object"
    ),
    "bin-parameters-list": binary_case(
        {"inputs": [binary_input()], "parameters": [1]}, ONE, 400, '"parameters" must be an object'
    ),
    "bin-parameters-string": binary_case(
        {"inputs": [binary_input()], "parameters": "x"}, ONE, 400, '"parameters" must be an object'
    ),
    "bin-outputs-empty-object": binary_case(
        {"inputs": [binary_input()], "outputs": [{}]}, ONE, 400, 'outputs[0] needs a "name"'
    ),
    "bin-outputs-strings": binary_case(
        {"inputs": [binary_input()], "outputs": ["label"]}, ONE, 400, "outputs[0] must be an object"
    ),
    "bin-outputs-string": binary_case(
        {"inputs": [binary_input()], "outputs": "label"}, ONE, 400, '"outputs" must be a list'
    ),
    "bin-id-integer": binary_case({"inputs": [binary_input()], "id": 5}, ONE, 400, '"id" must be a string'),
    # a binary-mode CloudEvent with an empty body: AttributeError (500)
    "cloudevent-empty-body": Case(V1, b"", {**CLOUDEVENT, **JSON_CT}, 400, "CloudEvent data is empty"),
    # found while hardening: with ce-contenttype, KServe unmarshals the data itself, then fails (AttributeError)
    "cloudevent-ce-contenttype": Case(
        V1, b'{"instances": ["hi"]}', {**CLOUDEVENT, **JSON_CT, "ce-contenttype": "application/json"}, 400, "ce-"
    ),
    # V1 accepted any content type as JSON
    "v1-text-html": Case(V1, b'{"instances": ["hi"]}', {"content-type": "text/html"}, 415, "Content-Type"),
    "v1-image-png": Case(V1, b'{"instances": ["hi"]}', {"content-type": "image/png"}, 415, "Content-Type"),
    "v1-multipart": Case(
        V1, b'{"instances": ["hi"]}', {"content-type": "multipart/form-data; boundary=x"}, 415, "Content-Type"
    ),
    # V2 accepted shape [], [true] and ragged data
    "v2-shape-empty": Case(
        V2,
        b'{"inputs": [{"name": "text", "datatype": "BYTES", "shape": [], "data": ["a"]}]}',
        JSON_CT,
        400,
        SHAPE_RULE,
    ),
    "v2-shape-true": Case(
        V2,
        b'{"inputs": [{"name": "text", "datatype": "BYTES", "shape": [true], "data": ["a"]}]}',
        JSON_CT,
        400,
        SHAPE_RULE,
    ),
    "v2-ragged": Case(
        V2,
        b'{"inputs": [{"name": "text", "datatype": "BYTES", "shape": [3], "data": [["a"], ["b", "c"]]}]}',
        JSON_CT,
        400,
        "shape [3] (3 values) but its data holds 2",
    ),
    # a body larger than the largest valid request: 413, not 400
    "body-too-large": Case(V1, b" " * (ServingLimits(*SERVER_LIMITS).max_body_bytes + 1), JSON_CT, 413, "too large"),
}


@pytest.fixture(scope="module")
def in_process(tiny_model_dir: Path) -> Iterator[TestClient]:
    from serving.predictor import SentinelPredictor
    from serving.server import create_app

    limits = [f"serving.max_instances={SERVER_LIMITS[0]}", f"serving.max_chars={SERVER_LIMITS[1]}"]
    predictor = SentinelPredictor(NAME, str(tiny_model_dir), load_config(None, limits))
    predictor.load()
    with TestClient(create_app(predictor), raise_server_exceptions=False) as client:
        client.predictor = predictor  # type: ignore[attr-defined]
        yield client
    predictor.stop()


@pytest.fixture(params=["in_process", pytest.param("real_server", marks=pytest.mark.slow)])
def client(request: pytest.FixtureRequest) -> httpx.Client:
    """KServe's app in process, or an HTTP client of the real server (both speak httpx)."""
    if request.param == "in_process":
        return request.getfixturevalue("in_process")
    return request.getfixturevalue("served").client


@pytest.mark.parametrize("case", list(HOSTILE.values()), ids=list(HOSTILE))
def test_hostile_request_gets_a_4xx_naming_the_problem(client: httpx.Client, case: Case) -> None:
    answer = client.post(case.path, content=case.body, headers=case.headers)
    assert answer.status_code == case.status, answer.text
    assert case.fragment in answer.json()["error"]


def test_every_rejection_is_counted_by_status_and_reason(client: httpx.Client) -> None:
    before = client.get("/metrics").text
    statuses = Counter()
    for case in HOSTILE.values():
        statuses[client.post(case.path, content=case.body, headers=case.headers).status_code] += 1
    after = client.get("/metrics").text
    for status, sent in statuses.items():
        counted = counter_total(after, "sentinel_rejected_requests", model=NAME, status=str(status))
        counted -= counter_total(before, "sentinel_rejected_requests", model=NAME, status=str(status))
        assert counted == sent, f"HTTP {status}: {sent} sent, {counted} counted"
    reasons = {"json_too_deep", "unsupported_content_type", "invalid_shape", "body_too_large", "invalid_field"}
    for reason in reasons:
        assert counter_total(after, "sentinel_rejected_requests", model=NAME, reason=reason) > counter_total(
            before, "sentinel_rejected_requests", model=NAME, reason=reason
        ), reason
    assert counter_total(after, "sentinel_server_errors") == counter_total(before, "sentinel_server_errors")
    good = client.post(V1, json={"instances": ["hello, how are you?"]})  # the server still answers
    assert good.status_code == 200 and len(good.json()["predictions"]) == 1


def test_model_repository_api_cannot_unload_the_model(client: httpx.Client) -> None:
    for verb in ("unload", "load"):
        refused = client.post(f"/v2/repository/models/{NAME}/{verb}")
        assert refused.status_code == 403 and "repository API" in refused.json()["error"]
    assert client.post(V1, json={"instances": ["still here?"]}).status_code == 200


def test_an_unhandled_exception_is_a_counted_500(in_process: TestClient, monkeypatch: pytest.MonkeyPatch) -> None:
    """A real bug still answers 500 (with no internals in the body), and is logged and counted."""

    async def broken(*args, **kwargs):
        raise RuntimeError("bug in the model wrapper")

    before = in_process.get("/metrics").text
    monkeypatch.setattr(in_process.predictor, "predict", broken)  # type: ignore[attr-defined]
    answer = in_process.post(V1, json={"instances": ["hi"]})
    assert answer.status_code == 500
    assert answer.json()["error"].startswith("internal server error (RuntimeError)")
    after = in_process.get("/metrics").text
    labels = {"model": NAME, "protocol": "v1", "status": "500", "reason": "unhandled_exception"}
    assert (
        counter_total(after, "sentinel_server_errors", **labels)
        == counter_total(before, "sentinel_server_errors", **labels) + 1
    )


@pytest.mark.slow  # the real server
def test_small_request_is_not_stuck_behind_a_maximum_size_one(served) -> None:
    """A small request sent while a maximum-size request is being classified is answered first.

    The maximum-size request is split into bounded batches and the small request's text joins the next batch,
    so it waits for one batch, not for the whole large request (which takes many batches).
    """
    max_instances, max_chars = SERVER_LIMITS
    big = [(f"{i} " + "please summarize the quarterly report " * max_chars)[:max_chars] for i in range(max_instances)]

    async def scenario() -> list[str]:
        finished: list[str] = []
        async with httpx.AsyncClient(base_url=served.url, timeout=120) as client:

            async def send(label: str, texts: list[str]) -> None:
                answer = await client.post(served.v1, json={"instances": texts})
                assert answer.status_code == 200 and len(answer.json()["predictions"]) == len(texts)
                finished.append(label)

            large = asyncio.create_task(send("large", big))
            await asyncio.sleep(0.1)  # the large request is received, validated and being classified
            await send("small", ["hello, how are you?"])
            await large
        return finished

    assert asyncio.run(scenario()) == ["small", "large"]
