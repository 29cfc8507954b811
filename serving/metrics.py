"""Prometheus metrics of the predictor, in the default registry that KServe serves at ``/metrics``.

Label values are bounded: ``model`` is a served model's name or ``unknown`` (never a name taken from a request
path), ``protocol`` is ``v1``, ``v2`` or ``other``, ``status`` an HTTP status code and ``reason`` one of a fixed set
of codes (:data:`REASONS`, or ``http_<status>`` for a status none of them describes).
"""

from __future__ import annotations

from collections.abc import Sequence

from prometheus_client import Counter, Gauge, Histogram

UNKNOWN_VERSION = "unknown"
PREDICTIONS = Counter(
    "sentinel_predictions",
    "Texts classified, by served model, model version, predicted label and decision.",
    ["model", "model_version", "label", "decision"],
)
# Class probabilities of every classified text: the dashboard's score distributions (drift at a glance).
SCORES = Histogram(
    "sentinel_prediction_score",
    "Predicted probability of each class for every classified text, by served model, model version and class.",
    ["model", "model_version", "label"],
    buckets=(0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.99, 1.0),
)
LATENCY = Histogram(
    "sentinel_request_latency_seconds",
    "Seconds from a request reaching the model (batch queue included) to its answer, by served model, model "
    "version and protocol.",
    ["model", "model_version", "protocol"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
)
MODEL_INFO = Gauge(
    "sentinel_model_info",
    "1 for the model this server serves: its name, registry version, family, model type and inference backend "
    "(torch, onnx, onnx-int8; none when nothing neural runs).",
    ["model", "model_version", "family", "model_type", "inference_backend"],
)
LOG_RECORDS = Counter(
    "sentinel_prediction_log_records",
    "Prediction log records, by served model and outcome (written, or dropped when the log buffer was full or a "
    "write failed).",
    ["model", "outcome"],
)
REJECTED_REQUESTS = Counter(
    "sentinel_rejected_requests",
    "Requests answered with a 4xx status, by served model, protocol, status and reason.",
    ["model", "protocol", "status", "reason"],
)
SERVER_ERRORS = Counter(
    "sentinel_server_errors",
    "Requests answered with a 5xx status (unhandled exceptions included), by served model, protocol, status and "
    "reason.",
    ["model", "protocol", "status", "reason"],
)

REASONS = frozenset(
    {
        # refused by request validation (serving.validation / serving.protocol)
        "body_too_large",
        "unsupported_content_type",
        "invalid_content_length",
        "invalid_utf8",
        "invalid_json",
        "json_too_deep",
        "invalid_field",
        "invalid_shape",
        "invalid_binary_framing",
        "empty_request",
        "too_many_texts",
        "text_too_long",
        # refused by the HTTP layer or KServe
        "repository_api_disabled",
        "not_found",
        "method_not_allowed",
        # server side
        "unhandled_exception",
        "not_implemented",
        "unavailable",
    }
)
_DEFAULT_REASONS = {
    400: "invalid_field",
    404: "not_found",
    405: "method_not_allowed",
    413: "body_too_large",
    415: "unsupported_content_type",
    500: "unhandled_exception",
    501: "not_implemented",
    503: "unavailable",
}


def reason_for(status: int, reason: str | None) -> str:
    """``reason`` when it is a known code, else the usual reason for ``status`` (``http_<status>`` for others)."""
    if reason in REASONS:
        return reason
    return _DEFAULT_REASONS.get(status, f"http_{status}")


def count_response(model: str, protocol: str, status: int, reason: str | None) -> None:
    """Count one answered request in the rejected (4xx) or server-error (5xx) counter; 1xx-3xx are not counted."""
    if status < 400:
        return
    counter = REJECTED_REQUESTS if status < 500 else SERVER_ERRORS
    counter.labels(model=model, protocol=protocol, status=str(status), reason=reason_for(status, reason)).inc()


def count_predictions(model: str, labels: list[str], decisions: list[str], version: str = UNKNOWN_VERSION) -> None:
    """Increment the prediction counter once per (label, decision) pair seen in a batch."""
    counts: dict[tuple[str, str], int] = {}
    for pair in zip(labels, decisions, strict=True):
        counts[pair] = counts.get(pair, 0) + 1
    for (label, decision), n in counts.items():
        PREDICTIONS.labels(model=model, model_version=version, label=label, decision=decision).inc(n)


def observe_scores(model: str, version: str, label_names: Sequence[str], proba: Sequence[Sequence[float]]) -> None:
    """One score-histogram observation per text and class."""
    children = [SCORES.labels(model=model, model_version=version, label=name) for name in label_names]
    for row in proba:
        for child, p in zip(children, row, strict=True):
            child.observe(float(p))


def observe_latency(model: str, version: str, protocol: str, seconds: float) -> None:
    LATENCY.labels(model=model, model_version=version, protocol=protocol).observe(seconds)


def set_model_info(model: str, version: str, family: str, model_type: str, backend: str | None) -> None:
    MODEL_INFO.labels(
        model=model, model_version=version, family=family, model_type=model_type, inference_backend=backend or "none"
    ).set(1)


def count_log_records(model: str, outcome: str, n: int) -> None:
    LOG_RECORDS.labels(model=model, outcome=outcome).inc(n)
