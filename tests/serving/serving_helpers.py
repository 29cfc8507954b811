"""Request builders and a /metrics reader shared by the serving tests (imported by module name)."""

from __future__ import annotations

import json
import struct

V2_BINARY_HEADER = "inference-header-content-length"
JSON_CT = {"content-type": "application/json"}
OCTET_CT = {"content-type": "application/octet-stream"}


def v2_json(texts: list[str], **extra) -> bytes:
    body = {"inputs": [{"name": "text", "datatype": "BYTES", "shape": [len(texts)], "data": texts}], **extra}
    return json.dumps(body).encode()


def bytes_elements(*elements: bytes) -> bytes:
    """BYTES tensor contents: each element as a 4-byte little-endian length and its bytes."""
    return b"".join(struct.pack("<I", len(e)) + e for e in elements)


def v2_binary(header: dict, raw: bytes) -> tuple[bytes, dict[str, str]]:
    """Body and headers of a V2 request in the binary tensor extension: ``header`` as JSON, then ``raw``."""
    head = json.dumps(header).encode()
    return head + raw, {**OCTET_CT, V2_BINARY_HEADER: str(len(head))}


def binary_input(**fields) -> dict:
    """A binary-extension input for one 3-byte element; ``fields`` override (None removes a field)."""
    base = {"name": "text", "datatype": "BYTES", "shape": [1], "parameters": {"binary_data_size": 7}}
    base.update(fields)
    return {k: v for k, v in base.items() if v is not None}


def counter_total(metrics_text: str, name: str, **labels: str) -> float:
    """Sum of counter ``name`` (without ``_total``) over the label sets matching ``labels``."""
    from prometheus_client.parser import text_string_to_metric_families

    total = 0.0
    for family in text_string_to_metric_families(metrics_text):
        for sample in family.samples:
            if sample.name == f"{name}_total" and all(sample.labels.get(k) == v for k, v in labels.items()):
                total += sample.value
    return total
