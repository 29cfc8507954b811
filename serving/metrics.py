"""Prometheus metrics of the predictor, in the default registry that KServe serves at ``/metrics``.

Label values are bounded: ``model`` is a served model's name or ``unknown`` (never a name taken from a request
path), ``protocol`` is ``v1``, ``v2`` or ``other``, ``status`` an HTTP status code and ``reason`` one of a fixed set
of codes (:data:`REASONS`, or ``http_<status>`` for a status none of them describes).
"""

from __future__ import annotations

from prometheus_client import Counter

PREDICTIONS = Counter(
    "sentinel_predictions",
    "Texts classified, by served model, predicted label and decision.",
    ["model", "label", "decision"],
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


def count_predictions(model: str, labels: list[str], decisions: list[str]) -> None:
    """Increment the prediction counter once per (label, decision) pair seen in a batch."""
    counts: dict[tuple[str, str], int] = {}
    for pair in zip(labels, decisions, strict=True):
        counts[pair] = counts.get(pair, 0) + 1
    for (label, decision), n in counts.items():
        PREDICTIONS.labels(model=model, label=label, decision=decision).inc(n)
