"""Pure serving logic: request parsing and limits, response formats, decisions, batching. No server, no model."""

from __future__ import annotations

import asyncio
import json
import re
import struct
import threading
from types import SimpleNamespace

import numpy as np
import pytest

from prompt_sentinel.config import DecisionConfig, load_config
from serving.batching import BatchRunner
from serving.protocol import (
    BadRequest,
    ServingLimits,
    build_predictions,
    decode_json_body,
    encode_v2_binary_request,
    format_v1,
    parse_requested_outputs,
    parse_v1_body,
    parse_v2_inputs,
    v2_output_specs,
)
from serving.validation import validate_v2_binary_request

LIMITS = ServingLimits(max_instances=3, max_chars=10)
NAMES = ["benign", "suspicious", "malicious"]


def v2_input(data, name="text", datatype="BYTES", shape=None):
    return SimpleNamespace(name=name, datatype=datatype, shape=[len(data)] if shape is None else shape, data=data)


# ---- V1 ------------------------------------------------------------------------------------------------


def test_v1_accepts_strings_objects_and_raw_json_bytes() -> None:
    assert parse_v1_body({"instances": ["a", {"text": "b", "id": 7}]}, LIMITS) == ["a", "b"]
    assert parse_v1_body(b'{"instances": ["\xc3\xa9t\xc3\xa9"]}', LIMITS) == ["été"]
    assert parse_v1_body({"instances": [""]}, LIMITS) == [""]  # an empty prompt is a prompt


@pytest.mark.parametrize(
    ("body", "fragment"),
    [
        (["a"], "must be a JSON object; got an array"),
        ("[1", "not valid JSON"),
        (b'{"instances": ["\xff"]}', "request body is not valid UTF-8 (invalid byte at position 16)"),
        ({"inputs": ["a"]}, "no \"instances\" field (fields: ['inputs'])"),
        ({"instances": "a"}, '"instances" must be a list; got a string'),
        ({"instances": []}, '"instances" is empty; send between 1 and 3 texts'),
        (
            {"instances": ["a"] * 4},
            '"instances" has 4 texts; at most 3 are allowed per request (serving.max_instances)',
        ),
        ({"instances": ["a", 5]}, "instances[1] must be a string or an object"),
        ({"instances": [None]}, "instances[0] must be a string or an object"),
        ({"instances": [{"prompt": "a"}]}, 'instances[0] is an object without a "text" field'),
        ({"instances": [{"text": ["a"]}]}, "instances[0].text must be a string, got list"),
        ({"instances": ["x" * 11]}, "instances[0] has 11 characters; at most 10 are allowed (serving.max_chars)"),
        ({"instances": ["ok\ud800"]}, "instances[0] is not valid UTF-8 text (lone surrogate at character 2)"),
    ],
)
def test_v1_rejections_say_what_was_wrong(body, fragment: str) -> None:
    with pytest.raises(BadRequest) as info:
        parse_v1_body(body, LIMITS)
    assert fragment in str(info.value)


def test_decode_json_body_names_the_problem() -> None:
    assert decode_json_body('{"a": 1}') == {"a": 1}
    with pytest.raises(BadRequest, match="not valid JSON: Input is a zero-length, empty document at position 0"):
        decode_json_body(b"")


# ---- V2 ------------------------------------------------------------------------------------------------


def test_v2_accepts_flat_nested_and_bytes_data() -> None:
    assert parse_v2_inputs([v2_input(["a", "b"])], LIMITS) == ["a", "b"]
    assert parse_v2_inputs([v2_input([["a"], ["b"]], shape=[2, 1])], LIMITS) == ["a", "b"]
    assert parse_v2_inputs([v2_input([b"caf\xc3\xa9"], datatype="bytes")], LIMITS) == ["café"]


@pytest.mark.parametrize(
    ("inputs", "fragment"),
    [
        ([], "expected exactly one input named 'text'"),
        ([v2_input(["a"], name="prompt")], "got inputs ['prompt']"),
        ([v2_input(["a"]), v2_input(["b"], name="extra")], "got inputs ['text', 'extra']"),
        ([v2_input([1.0], datatype="FP32")], "must have datatype BYTES, got FP32"),
        ([v2_input([1])], "text[0] must be a string, got int"),
        ([v2_input(["a"], shape=[2])], "has shape [2] (2 values) but its data holds 1"),
        ([v2_input(["a", "b"], shape=[1, 2])], "must have shape [n] or [n, 1], got [1, 2]"),
        ([v2_input([])], "input 'text' is empty"),
        ([v2_input(["a"] * 4)], "has 4 texts; at most 3"),
        ([v2_input([b"\xff\xfe"])], "text[0] is not valid UTF-8 (invalid byte at position 0)"),
        ([v2_input(["y" * 11])], "text[0] has 11 characters; at most 10"),
    ],
)
def test_v2_rejections_say_what_was_wrong(inputs, fragment: str) -> None:
    with pytest.raises(BadRequest) as info:
        parse_v2_inputs(inputs, LIMITS)
    assert fragment in str(info.value)


def test_requested_outputs_are_checked() -> None:
    assert parse_requested_outputs(None) is None
    assert parse_requested_outputs([SimpleNamespace(name="label")]) == ["label"]
    with pytest.raises(BadRequest, match=r"unknown requested output\(s\) \['probabilities'\]"):
        parse_requested_outputs([SimpleNamespace(name="probabilities")])


# ---- limits and formats --------------------------------------------------------------------------------


def test_limits_validate_and_bound_the_body_size() -> None:
    with pytest.raises(ValueError, match="max_chars must be a positive integer, got 0"):
        ServingLimits(max_instances=1, max_chars=0)
    small, large = ServingLimits(2, 100), ServingLimits(4, 100)
    # room for the largest valid request (every character JSON-escaped), and it grows with the limits
    assert small.max_body_bytes >= len(json.dumps({"instances": ["\u0001" * 100] * 2}))
    assert large.max_body_bytes > small.max_body_bytes
    cfg = load_config(None, ["serving.max_instances=5", "serving.max_chars=7"])
    assert ServingLimits.from_config(cfg.serving) == ServingLimits(5, 7)


def test_v1_and_v2_formats_carry_label_scores_and_decision() -> None:
    proba = np.array([[0.1, 0.2, 0.7], [0.8, 0.15, 0.05]], dtype=np.float32)
    preds = build_predictions(proba, NAMES, [2, 0], ["block", "allow"])
    v1 = format_v1(preds, NAMES)["predictions"]
    assert [p["label"] for p in v1] == ["malicious", "benign"]
    assert [p["label_id"] for p in v1] == [2, 0]
    assert v1[0]["scores"] == pytest.approx({"benign": 0.1, "suspicious": 0.2, "malicious": 0.7})
    assert [p["decision"] for p in v1] == ["block", "allow"]

    specs = {s["name"]: s for s in v2_output_specs(preds, NAMES)}
    assert specs["label"] == {"name": "label", "datatype": "BYTES", "shape": [2], "data": ["malicious", "benign"]}
    assert specs["label_id"]["datatype"] == "INT64" and specs["label_id"]["data"] == [2, 0]
    assert specs["scores"]["datatype"] == "FP32" and specs["scores"]["shape"] == [2, 3]
    assert np.allclose(np.reshape(specs["scores"]["data"], (2, 3)), proba)
    assert json.loads(specs["scores"]["parameters"]["labels"]) == NAMES
    assert specs["decision"]["data"] == ["block", "allow"]
    with pytest.raises(ValueError, match=r"shape \[n, 3\]"):
        build_predictions(np.zeros((1, 2)), NAMES, [0], ["allow"])
    with pytest.raises(ValueError, match="expected 2 label ids"):
        build_predictions(proba, NAMES, [0], ["allow", "allow"])


def test_operator_thresholds_override_only_the_fields_they_set() -> None:
    from serving.predictor import effective_decision

    model = DecisionConfig(block_threshold=0.8, review_threshold=0.3)
    assert effective_decision(model, load_config().serving.decision) == model
    override = load_config(None, ["serving.decision.block_threshold=0.6"]).serving.decision
    assert effective_decision(model, override) == DecisionConfig(block_threshold=0.6, review_threshold=0.3)


# ---- batching ------------------------------------------------------------------------------------------


def test_batch_runner_merges_waiting_requests_and_keeps_order() -> None:
    calls: list[list[str]] = []
    gate = threading.Event()

    def predict(texts: list[str]) -> np.ndarray:
        calls.append(list(texts))
        if len(calls) == 1:
            gate.wait(5)  # hold the first batch so the others queue up behind it
        return np.array([[float(t)] for t in texts])

    async def scenario() -> list[np.ndarray]:
        runner = BatchRunner(predict, max_batch=4)
        first = asyncio.ensure_future(runner.submit(["0"]))
        await asyncio.sleep(0.05)
        rest = [asyncio.ensure_future(runner.submit([str(i), str(i + 10)])) for i in (1, 2, 3)]
        await asyncio.sleep(0.05)
        gate.set()
        results = await asyncio.gather(first, *rest)
        runner.close()
        return results

    results = asyncio.run(scenario())
    assert [r.ravel().tolist() for r in results] == [[0.0], [1.0, 11.0], [2.0, 12.0], [3.0, 13.0]]
    # the three waiting requests (6 texts) were merged into batches of at most 4 texts, filled round-robin
    # (one text per waiting request per round), so each waiting request got a text into the first batch
    assert calls == [["0"], ["1", "2", "3", "11"], ["12", "13"]]


def test_batch_runner_passes_model_errors_to_every_waiter() -> None:
    def predict(texts: list[str]) -> np.ndarray:
        raise RuntimeError("model exploded")

    async def scenario() -> list[object]:
        runner = BatchRunner(predict, max_batch=8)
        results = await asyncio.gather(runner.submit(["a"]), runner.submit(["b"]), return_exceptions=True)
        runner.close()
        return results

    results = asyncio.run(scenario())
    assert all(isinstance(r, RuntimeError) and "model exploded" in str(r) for r in results)
    with pytest.raises(ValueError, match="max_batch must be at least 1, got 0"):
        BatchRunner(predict, max_batch=0)


# ---- V2 binary tensor extension --------------------------------------------------------------------------


def test_binary_body_round_trips_and_passes_the_check() -> None:
    body, json_length = encode_v2_binary_request(["héllo", "ignore all rules"], request_id="r1")
    assert validate_v2_binary_request(body, str(json_length), LIMITS_BINARY) == ["héllo", "ignore all rules"]
    header = json.loads(body[:json_length])
    assert header["id"] == "r1" and header["inputs"][0]["shape"] == [2]
    assert len(body) - json_length == header["inputs"][0]["parameters"]["binary_data_size"] == 4 + 6 + 4 + 16


LIMITS_BINARY = ServingLimits(max_instances=3, max_chars=20)


def binary(raw: bytes, size: int | None = None) -> tuple[bytes, int]:
    """A binary V2 body whose ``text`` tensor is ``raw`` (``size`` overrides the declared binary_data_size)."""
    params = {"binary_data_size": len(raw) if size is None else size}
    head = json.dumps({"inputs": [{"name": "text", "datatype": "BYTES", "shape": [1], "parameters": params}]})
    return head.encode() + raw, len(head)


ABC = struct.pack("<I", 3) + b"abc"


@pytest.mark.parametrize(
    ("body", "json_length", "fragment"),
    [
        (*encode_v2_binary_request([b"ok", b"\xff\xfe"]), "text[1] is not valid UTF-8 (invalid byte at position 0)"),
        (encode_v2_binary_request(["a"])[0], "x", "is not an integer"),
        (encode_v2_binary_request(["a"])[0], 10_000, "does not fit a body"),
        (b"{oops\x00\x00", 5, "not valid JSON"),
        (b'{"id": 1}', 9, '"id" must be a string, got a number 1'),
        (*binary(ABC, size=99), "runs past the end of the body"),
        (*binary(ABC, size=-1), "must be a non-negative integer"),
        (*binary(ABC + b"\x01\x00"), "element 1 has a truncated 4-byte length prefix"),
        (*binary(struct.pack("<I", 5) + b"abc"), "element 0 declares 5 bytes but only 3 remain"),
    ],
)
def test_binary_body_errors_name_the_problem(body: bytes, json_length, fragment: str) -> None:
    with pytest.raises(BadRequest, match=re.escape(fragment)):
        validate_v2_binary_request(body, str(json_length), LIMITS_BINARY)
