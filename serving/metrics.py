"""Prometheus metrics of the predictor, in the default registry that KServe serves at ``/metrics``."""

from __future__ import annotations

from prometheus_client import Counter

PREDICTIONS = Counter(
    "sentinel_predictions",
    "Texts classified, by served model, predicted label and decision.",
    ["model", "label", "decision"],
)
REJECTED_REQUESTS = Counter(
    "sentinel_rejected_requests",
    "Requests refused with HTTP 400 before inference, by served model and protocol.",
    ["model", "protocol"],
)


def count_predictions(model: str, labels: list[str], decisions: list[str]) -> None:
    """Increment the prediction counter once per (label, decision) pair seen in a batch."""
    counts: dict[tuple[str, str], int] = {}
    for pair in zip(labels, decisions, strict=True):
        counts[pair] = counts.get(pair, 0) + 1
    for (label, decision), n in counts.items():
        PREDICTIONS.labels(model=model, label=label, decision=decision).inc(n)
