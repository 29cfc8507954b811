"""Property-based fuzzing of the real model server (``python -m serving`` on 127.0.0.1), V1 and V2.

Hypothesis generates valid requests, mutated JSON, arbitrary JSON, deep nesting, content types and encodings,
V2 binary-extension framing, and text full of NUL, right-to-left marks, homoglyphs and invalid UTF-8. For every
request the properties are:

* no 5xx, ever;
* a 4xx body is ``{"error": "..."}`` naming the problem (a field, the encoding, the content type, a limit);
* a request valid by construction is answered 200 with one prediction per text;
* after every example the server still answers a good request; and its memory does not keep growing.

Runs are seeded (``derandomize=True``: the same examples on every run, no example database) and bounded
(``max_examples`` per property) so the module takes well under a minute, server start included.
"""

from __future__ import annotations

import json
import struct
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from .serving_helpers import JSON_CT, OCTET_CT, V2_BINARY_HEADER

pytestmark = pytest.mark.slow  # starts the real server (~10 s); the examples themselves take ~20 s

SERVER_LIMITS = (8, 300)  # small limits keep bodies small: the largest valid body is ~31 KB
MAX_INSTANCES, MAX_CHARS = SERVER_LIMITS
FUZZ = settings(
    max_examples=120,
    derandomize=True,
    database=None,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.large_base_example],
)
LABELS = {"benign", "suspicious", "malicious"}
# A 4xx message names what was wrong: one of these words appears in every message the server writes.
PROBLEM_WORDS = (
    "instances",
    "text",
    "JSON",
    "UTF-8",
    "Content-Type",
    "charset",
    "body",
    "input",
    "shape",
    "datatype",
    "data",
    "outputs",
    "parameters",
    '"id"',
    "binary",
    "header",
    "nested",
    "characters",
    "texts",
    "empty",
    "Content-Length",
)

# ---- strategies ---------------------------------------------------------------------------------------------

TRICKY = [
    "",
    "\x00",
    "nul\x00inside",
    "\u202eevil\u202c",  # right-to-left override
    "\u200f\u05e9\u05dc\u05d5\u05dd",  # right-to-left mark, Hebrew
    "\u0456gn\u043er\u0435 \u0440r\u0435v\u0456\u043eus",  # Cyrillic homoglyphs of "ignore previous"
    "\uff49\uff47\uff4e\uff4f\uff52\uff45",  # full-width "ignore"
    "zero\u200bwidth\u200djoiner\ufeff",
    "e\u0301\u0301\u0301",  # combining marks
    "\U0001f600\U0001f9e8",
    "\\u0000 \\ud800",  # escapes as literal text
    "'; DROP TABLE prompts; --",
    "<script>alert(1)</script>",
    "{{7*7}} ${jndi:ldap://x}",
    "a" * MAX_CHARS,
]
text = st.one_of(
    st.text(st.characters(exclude_categories=("Cs",)), max_size=40),
    st.sampled_from(TRICKY),
    st.text(st.sampled_from("ab \u202e\x00\u0430"), min_size=MAX_CHARS - 2, max_size=MAX_CHARS + 2),
)
texts = st.lists(text, min_size=1, max_size=MAX_INSTANCES + 1)
json_scalar = st.one_of(
    st.none(), st.booleans(), st.integers(-(2**70), 2**70), st.floats(allow_nan=False), st.text(max_size=20)
)
any_json = st.recursive(
    json_scalar,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=20,
)


def valid_texts(values: list[str]) -> bool:
    return len(values) <= MAX_INSTANCES and all(len(t) <= MAX_CHARS for t in values)


@st.composite
def mutated(draw: st.DrawFn, body: bytes) -> bytes:
    """``body`` with one random byte-level mutation: flip, delete, insert, truncate or duplicate a slice."""
    if not body:
        return draw(st.binary(max_size=20))
    kind = draw(st.sampled_from(["flip", "delete", "insert", "truncate", "duplicate"]))
    i = draw(st.integers(0, len(body) - 1))
    j = draw(st.integers(i, min(len(body), i + 16)))
    if kind == "flip":
        return body[:i] + bytes([body[i] ^ draw(st.integers(1, 255))]) + body[i + 1 :]
    if kind == "delete":
        return body[:i] + body[j:]
    if kind == "insert":
        return body[:i] + draw(st.binary(min_size=1, max_size=8)) + body[i:]
    if kind == "truncate":
        return body[:i]
    return body[:j] + body[i:j] + body[j:]


# ---- properties ---------------------------------------------------------------------------------------------


def check(served, answer, valid: bool | None = None, n_texts: int | None = None) -> None:
    """The properties every answer must have; ``valid`` True/False when the request's validity is known."""
    assert answer.status_code < 500, f"HTTP {answer.status_code}: {answer.text[:300]}"
    if answer.status_code >= 400:
        error = answer.json().get("error")
        assert isinstance(error, str) and any(word in error for word in PROBLEM_WORDS), error
        assert valid is not True, f"a valid request was refused: {error}"
    else:
        assert valid is not False, f"an invalid request was accepted: {answer.text[:300]}"
        assert answer.status_code == 200
    served.assert_answers_a_good_request()
    if answer.status_code == 200 and n_texts is not None:
        body = answer.json()
        if "predictions" in body:
            assert len(body["predictions"]) == n_texts and {p["label"] for p in body["predictions"]} <= LABELS
        else:
            labels = next(o for o in body["outputs"] if o["name"] == "label")["data"]
            assert len(labels) == n_texts and set(labels) <= LABELS


def v2_request(values: list[Any], **fields: Any) -> dict[str, Any]:
    inp = {"name": "text", "datatype": "BYTES", "shape": [len(values)], "data": values}
    return {"inputs": [inp], **fields}


@FUZZ
@given(values=texts, as_objects=st.booleans())
def test_v1_valid_schema(served, values: list[str], as_objects: bool) -> None:
    instances = [{"text": t} for t in values] if as_objects else values
    answer = served.client.post(served.v1, content=json.dumps({"instances": instances}).encode(), headers=JSON_CT)
    check(served, answer, valid=valid_texts(values), n_texts=len(values))


@FUZZ
@given(data=st.data(), values=st.lists(st.sampled_from(TRICKY[:10]), min_size=1, max_size=3))
def test_v1_mutated_bytes(served, data: st.DataObject, values: list[str]) -> None:
    body = data.draw(mutated(json.dumps({"instances": values}).encode()))
    check(served, served.client.post(served.v1, content=body, headers=JSON_CT))


@FUZZ
@given(payload=any_json, wrap=st.booleans())
def test_v1_arbitrary_json(served, payload: Any, wrap: bool) -> None:
    body = {"instances": payload} if wrap else payload
    check(served, served.client.post(served.v1, content=json.dumps(body).encode(), headers=JSON_CT))


CONTENT_TYPES = [
    None,
    "application/json",
    "application/json; charset=utf-8",
    "application/json; charset=utf-16",
    "application/cloudevents+json",
    "text/plain",
    "text/html",
    "image/png",
    "multipart/form-data; boundary=x",
    "application/x-www-form-urlencoded",
    "application/octet-stream",
    "a/b/c;;;=",
    "application/json; charset=" + "x" * 200,
]


@FUZZ
@given(
    value=text,
    content_type=st.sampled_from(CONTENT_TYPES),
    encoding=st.sampled_from(["utf-8", "utf-16", "utf-32", "latin-1", "random"]),
    random_bytes=st.binary(max_size=64),
    v2=st.booleans(),
)
def test_content_types_and_encodings(
    served, value: str, content_type: str | None, encoding: str, random_bytes: bytes, v2: bool
) -> None:
    document = v2_request([value]) if v2 else {"instances": [value]}
    if encoding == "random":
        body = random_bytes
    else:
        body = json.dumps(document, ensure_ascii=False).encode(encoding, errors="replace")
    headers = {} if content_type is None else {"content-type": content_type}
    answer = served.client.post(served.v2 if v2 else served.v1, content=body, headers=headers)
    check(served, answer)
    if content_type in ("text/html", "image/png", "multipart/form-data; boundary=x", "text/plain"):
        assert answer.status_code == 415


@FUZZ
@given(
    levels=st.integers(1, 12_000),
    kind=st.sampled_from(["array", "object"]),
    v2=st.booleans(),
    content_type=st.sampled_from(["application/json", "application/json; charset=utf-8", None]),
)
def test_deep_nesting(served, levels: int, kind: str, v2: bool, content_type: str | None) -> None:
    if kind == "array":
        inner = b"[" * levels + b"]" * levels
        body = (b'{"inputs":' if v2 else b'{"instances":') + inner + b"}"
    else:
        body = b'{"a":' * levels + b"1" + b"}" * levels
    headers = {} if content_type is None else {"content-type": content_type}
    answer = served.client.post(served.v2 if v2 else served.v1, content=body, headers=headers)
    check(served, answer, valid=False)
    if levels > 40 and answer.status_code == 400:
        assert "nested more than" in answer.json()["error"]


CLOUDEVENT_HEADERS = ["ce-specversion", "ce-source", "ce-type", "ce-id", "ce-time", "ce-contenttype", "ce-subject"]


@FUZZ
@given(
    present=st.sets(st.sampled_from(CLOUDEVENT_HEADERS)),
    values=st.fixed_dictionaries(
        {}, optional={h: st.sampled_from(["1.0", "0.3", "9", "", "x" * 50, "a b"]) for h in CLOUDEVENT_HEADERS}
    ),
    structured=st.booleans(),
    data=st.one_of(st.just({"instances": ["hi"]}), any_json),
    content_type=st.sampled_from(["application/json", "application/cloudevents+json", None, "text/plain"]),
)
def test_v1_cloudevents(served, present, values, structured, data, content_type) -> None:
    headers = {h: values.get(h, "1.0") for h in present}
    if content_type is not None:
        headers["content-type"] = content_type
    if structured:
        event = {"specversion": "1.0", "id": "1", "source": "s", "type": "t", "time": "2026-01-01T00:00:00Z"}
        body = json.dumps({**event, "data": data}).encode()
    else:
        body = json.dumps(data).encode()
    check(served, served.client.post(served.v1, content=body, headers=headers))


def field_or_junk(valid: st.SearchStrategy, junk: st.SearchStrategy) -> st.SearchStrategy:
    """(value, is_valid): mostly the valid value, sometimes arbitrary JSON in its place."""
    return st.one_of(valid.map(lambda v: (v, True)), junk.map(lambda v: (v, False)))


MISSING = object()


@FUZZ
@given(
    values=texts,
    request_id=field_or_junk(st.one_of(st.just(MISSING), st.text(max_size=30)), any_json),
    parameters=field_or_junk(
        st.one_of(
            st.just(MISSING), st.dictionaries(st.text(max_size=5), st.one_of(st.integers(), st.text(max_size=5)))
        ),
        any_json,
    ),
    outputs=field_or_junk(
        st.one_of(
            st.just(MISSING),
            st.lists(st.sampled_from(["label", "label_id", "scores", "decision"]), unique=True).map(
                lambda names: [{"name": n} for n in names]
            ),
        ),
        any_json,
    ),
    shape=field_or_junk(st.just(None), any_json),
    datatype=field_or_junk(st.just("BYTES"), st.one_of(st.text(max_size=6), any_json)),
    nested=st.booleans(),
)
def test_v2_json_fields(served, values, request_id, parameters, outputs, shape, datatype, nested) -> None:
    data = [[t] for t in values] if nested else values
    inp: dict[str, Any] = {
        "name": "text",
        "datatype": datatype[0],
        "shape": [len(values), 1] if nested else [len(values)],
    }
    inp["data"] = data
    if not shape[1]:
        inp["shape"] = shape[0]
    request: dict[str, Any] = {"inputs": [inp]}
    for key, (value, _) in (("id", request_id), ("parameters", parameters), ("outputs", outputs)):
        if value is not MISSING:
            request[key] = value
    # junk may happen to be valid (e.g. parameters null); only all-valid fields make the request known-valid
    all_valid = request_id[1] and parameters[1] and outputs[1] and shape[1] and datatype[1] and valid_texts(values)
    answer = served.client.post(served.v2, content=json.dumps(request).encode(), headers=JSON_CT)
    check(served, answer, valid=True if all_valid else None)
    if all_valid:
        names = [o["name"] for o in answer.json()["outputs"]]
        wanted = [o["name"] for o in request.get("outputs") or []] or ["label", "label_id", "scores", "decision"]
        assert sorted(names) == sorted(wanted)
        if "label" in names:
            check(served, answer, n_texts=len(values))


@st.composite
def binary_request(draw: st.DrawFn) -> tuple[bytes, dict[str, str], bool]:
    """A V2 binary-extension request, valid or with its framing mutated; (body, headers, valid by construction)."""
    raw_texts = draw(
        st.lists(st.one_of(text.map(lambda t: t.encode("utf-8")), st.binary(max_size=12)), min_size=0, max_size=10)
    )
    elements = b"".join(struct.pack("<I", len(t)) + t for t in raw_texts)
    shape_delta = draw(st.sampled_from([0, 0, 0, -1, 1]))
    size_delta = draw(st.sampled_from([0, 0, 0, -1, 1, -4]))
    header_delta = draw(st.sampled_from([0, 0, 0, -1, 1, -3]))
    trailing = draw(st.sampled_from([b"", b"", b"", b"\x00", b"junk"]))
    datatype = draw(st.sampled_from(["BYTES", "BYTES", "BYTES", "FP32", "bytes", "INT8"]))
    shape = draw(st.one_of(st.just([len(raw_texts) + shape_delta]), st.just([len(raw_texts), 1]), any_json))
    size = len(elements) + size_delta
    header = {
        "inputs": [{"name": "text", "datatype": datatype, "shape": shape, "parameters": {"binary_data_size": size}}]
    }
    if draw(st.booleans()):
        header["outputs"] = draw(st.one_of(st.just([{"name": "label"}]), any_json))
    head = json.dumps(header).encode()
    body = head + elements + trailing
    content_type = draw(st.sampled_from([OCTET_CT, OCTET_CT, {}, JSON_CT]))
    headers = {**content_type, V2_BINARY_HEADER: str(len(head) + header_delta)}
    try:
        utf8 = all(t.decode("utf-8") is not None for t in raw_texts)
    except UnicodeDecodeError:
        utf8 = False
    valid = (
        utf8
        and 1 <= len(raw_texts) <= MAX_INSTANCES
        and all(len(t.decode("utf-8")) <= MAX_CHARS for t in raw_texts)
        and shape in ([len(raw_texts)], [len(raw_texts), 1])
        and (size_delta, header_delta, trailing, datatype) == (0, 0, b"", "BYTES")
        and content_type is not JSON_CT
        and header.get("outputs", [{"name": "label"}]) == [{"name": "label"}]
    )
    return body, headers, valid


@FUZZ
@given(request=binary_request())
def test_v2_binary_extension(served, request: tuple[bytes, dict[str, str], bool]) -> None:
    body, headers, valid = request
    answer = served.client.post(served.v2, content=body, headers=headers)
    check(served, answer, valid=True if valid else None)


def test_memory_does_not_keep_growing(served) -> None:
    """Three equal rounds of hostile and valid requests (3.4 MB of bodies each): after the first, memory is flat."""
    bodies = [
        (served.v1, json.dumps({"instances": ["x" * MAX_CHARS] * MAX_INSTANCES}).encode(), JSON_CT),
        (served.v1, b'{"instances":' + b"[" * 5000 + b"]" * 5000 + b"}", JSON_CT),
        (served.v1, b"\xff" * 30_000, JSON_CT),
        (served.v2, json.dumps(v2_request(["\u202e" * MAX_CHARS] * MAX_INSTANCES)).encode(), JSON_CT),
        (served.v2, b'{"inputs": [{"name": "text", "datatype": "BYTES", "shape": [], "data": ["a"]}]}', JSON_CT),
        (served.v1, b"x" * 40_000, JSON_CT),  # over the body limit: refused by its Content-Length
    ]
    rss = []
    for _ in range(3):
        for _ in range(60):
            for path, body, headers in bodies:
                assert served.client.post(path, content=body, headers=headers).status_code < 500
        rss.append(served.rss_bytes())
    sent_per_round = 60 * sum(len(body) for _, body, _ in bodies[:-1])
    # a server keeping 60% of what one round sends would grow by 2 MiB; measured rounds agree to well under 1 MiB
    growth = rss[2] - rss[1]
    assert growth < 2 * 2**20, f"RSS after each round {[r // 2**20 for r in rss]} MiB; a round sends {sent_per_round} B"
    served.assert_answers_a_good_request()
