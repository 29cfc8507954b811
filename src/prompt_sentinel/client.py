"""Python client for a Prompt Sentinel model server (V1 or V2 REST protocol), built on httpx.

>>> from prompt_sentinel.client import classify
>>> classify("http://127.0.0.1:8080", ["Ignore previous instructions"], protocol="v2")
[Prediction(text='Ignore previous instructions', label='malicious', label_id=2, scores={...}, decision='block')]
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import httpx

from prompt_sentinel.config import RegistryConfig
from prompt_sentinel.errors import SentinelError

Protocol = Literal["v1", "v2"]
PROTOCOLS: tuple[str, ...] = ("v1", "v2")
DEFAULT_MODEL_NAME: str = RegistryConfig.model_fields["model_name"].default
DEFAULT_TIMEOUT_S = 10.0


class ClientError(SentinelError, ValueError):
    """A bad call, an unreachable server, or an error answer (``status_code`` set, server message kept)."""

    def __init__(self, message: str, status_code: int | None = None) -> None:
        super().__init__(message)
        self.status_code = status_code


@dataclass(frozen=True)
class Prediction:
    """One classified text."""

    text: str
    label: str
    label_id: int
    scores: dict[str, float] = field(default_factory=dict)
    decision: str | None = None


def predict_url(base_url: str, model_name: str, protocol: Protocol) -> str:
    base = base_url.rstrip("/")
    if protocol == "v1":
        return f"{base}/v1/models/{model_name}:predict"
    return f"{base}/v2/models/{model_name}/infer"


def build_request(texts: Sequence[str], protocol: Protocol, request_id: str | None = None) -> dict[str, Any]:
    """The JSON body for ``texts`` in the given protocol."""
    if protocol == "v1":
        return {"instances": list(texts)}
    return {
        "id": request_id or str(uuid.uuid4()),
        "inputs": [{"name": "text", "datatype": "BYTES", "shape": [len(texts)], "data": list(texts)}],
    }


def _fail(url: str, detail: str) -> ClientError:
    return ClientError(f"unexpected response from {url}: {detail}")


def parse_v1_response(body: Any, texts: Sequence[str], url: str = "server") -> list[Prediction]:
    predictions = body.get("predictions") if isinstance(body, dict) else None
    if not isinstance(predictions, list) or len(predictions) != len(texts):
        raise _fail(url, f'expected "predictions" with {len(texts)} items, got {str(body)[:200]}')
    out = []
    for text, item in zip(texts, predictions, strict=True):
        try:
            out.append(
                Prediction(
                    text=text,
                    label=str(item["label"]),
                    label_id=int(item["label_id"]),
                    scores={str(k): float(v) for k, v in item.get("scores", {}).items()},
                    decision=item.get("decision"),
                )
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise _fail(url, f"malformed prediction {str(item)[:200]} ({exc})") from None
    return out


def parse_v2_response(body: Any, texts: Sequence[str], url: str = "server") -> list[Prediction]:
    outputs = body.get("outputs") if isinstance(body, dict) else None
    if not isinstance(outputs, list):
        raise _fail(url, f'expected "outputs", got {str(body)[:200]}')
    by_name = {o.get("name"): o for o in outputs if isinstance(o, dict)}
    n = len(texts)
    try:
        labels = [str(v) for v in by_name["label"]["data"]]
        label_ids = [int(v) for v in by_name["label_id"]["data"]]
        scores_out = by_name.get("scores") or {}
        flat = [float(v) for v in scores_out.get("data", [])]
        names_param = (scores_out.get("parameters") or {}).get("labels")
        decisions = [str(v) for v in (by_name.get("decision") or {}).get("data", [])] or [None] * n
    except (KeyError, TypeError, ValueError) as exc:
        raise _fail(url, f"missing or malformed output ({exc})") from None
    if len(labels) != n or len(label_ids) != n or len(decisions) != n:
        raise _fail(url, f"expected {n} predictions, got {len(labels)}")
    num_classes = len(flat) // n if n else 0
    names = json.loads(names_param) if names_param else [f"class_{i}" for i in range(num_classes)]
    if len(flat) != n * len(names):
        raise _fail(url, f"scores hold {len(flat)} values, expected {n} × {len(names)}")
    k = len(names)
    return [
        Prediction(
            text=text,
            label=labels[i],
            label_id=label_ids[i],
            scores=dict(zip(names, flat[i * k : (i + 1) * k], strict=True)),
            decision=decisions[i],
        )
        for i, text in enumerate(texts)
    ]


def classify(
    url: str,
    texts: Sequence[str],
    protocol: Protocol = "v1",
    model_name: str = DEFAULT_MODEL_NAME,
    timeout: float = DEFAULT_TIMEOUT_S,
    *,
    headers: Mapping[str, str] | None = None,
    client: httpx.Client | None = None,
) -> list[Prediction]:
    """Classify ``texts`` with the model server at ``url`` (its base URL, e.g. ``http://127.0.0.1:8080``).

    ``headers`` is for e.g. a ``Host`` header when calling a KServe InferenceService through its ingress;
    ``client`` lets callers reuse one connection pool (or pass FastAPI's TestClient).
    """
    if protocol not in PROTOCOLS:
        raise ClientError(f"protocol {protocol!r} is not supported; allowed: {', '.join(PROTOCOLS)}")
    if isinstance(texts, str):
        raise ClientError("texts must be a list of strings, got a single string; wrap it in a list")
    texts = list(texts)
    if not texts:
        raise ClientError("texts is empty; pass at least one text to classify")
    bad = [i for i, t in enumerate(texts) if not isinstance(t, str)]
    if bad:
        raise ClientError(f"texts[{bad[0]}] is a {type(texts[bad[0]]).__name__}, expected a string")
    if not (isinstance(timeout, int | float) and timeout > 0):
        raise ClientError(f"timeout must be a positive number of seconds, got {timeout!r}")
    if client is None and not str(url).startswith(("http://", "https://")):
        raise ClientError(f"url {url!r} must start with http:// or https://")
    if not model_name:
        raise ClientError("model_name is empty")

    endpoint = predict_url(str(url), model_name, protocol)
    own_client = client is None
    http = client or httpx.Client(timeout=timeout)
    try:
        response = http.post(endpoint, json=build_request(texts, protocol), headers=dict(headers or {}))
    except httpx.HTTPError as exc:
        raise ClientError(f"cannot reach {endpoint}: {type(exc).__name__}: {exc}") from None
    finally:
        if own_client:
            http.close()
    if response.status_code != 200:
        try:
            message = response.json().get("error") or response.text
        except ValueError:
            message = response.text
        raise ClientError(
            f"{endpoint} answered HTTP {response.status_code}: {str(message)[:500]}", response.status_code
        )
    try:
        body = response.json()
    except ValueError:
        raise _fail(endpoint, f"not JSON: {response.text[:200]}") from None
    if protocol == "v1":
        return parse_v1_response(body, texts, endpoint)
    return parse_v2_response(body, texts, endpoint)
