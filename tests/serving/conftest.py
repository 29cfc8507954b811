"""The real model server for a test module: ``served`` starts one ``python -m serving`` per module.

The model is ``tiny_model_dir`` (tests/conftest.py): TF-IDF + logistic regression fit on the bundled demo prompts
in about a second, so a server's answers are dominated by the HTTP path under test. A module sets its limits with
``SERVER_LIMITS = (max_instances, max_chars)`` (default: the config defaults, 64 × 20,000).

``tests/`` is a package, so this folder imports as ``tests.serving`` and never shadows the real ``serving``
package; helpers shared by the modules live in ``serving_helpers.py``.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from prompt_sentinel.config import ServingConfig
from serving.local import start_local_server

DEFAULT_LIMITS = (ServingConfig().max_instances, ServingConfig().max_chars)


@dataclass
class Served:
    """A running ``python -m serving`` subprocess and an HTTP client for it (127.0.0.1 only)."""

    url: str
    name: str
    pid: int
    max_instances: int
    max_chars: int
    client: httpx.Client

    @property
    def v1(self) -> str:
        return f"/v1/models/{self.name}:predict"

    @property
    def v2(self) -> str:
        return f"/v2/models/{self.name}/infer"

    def rss_bytes(self) -> int:
        """Resident set size of the server process (Linux /proc)."""
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
        raise RuntimeError(f"no VmRSS for pid {self.pid}")

    def assert_answers_a_good_request(self) -> None:
        answer = self.client.post(self.v1, json={"instances": ["hello, how are you?"]})
        assert answer.status_code == 200, answer.text
        assert len(answer.json()["predictions"]) == 1


@pytest.fixture(scope="module")
def served(request: pytest.FixtureRequest, tiny_model_dir: Path) -> Iterator[Served]:
    """The real server for ``tiny_model_dir``, with the module's ``SERVER_LIMITS``; one per module."""
    max_instances, max_chars = getattr(request.module, "SERVER_LIMITS", DEFAULT_LIMITS)
    name = "served"
    args = ["--max_instances", str(max_instances), "--max_chars", str(max_chars), "--enable_latency_logging", "false"]
    server = start_local_server(str(tiny_model_dir), model_name=name, extra_args=args)
    try:
        server.wait_ready(timeout=180)
        with httpx.Client(base_url=server.url, timeout=60) as client:
            yield Served(server.url, name, server.pid, max_instances, max_chars, client)
    finally:
        server.stop()
        server.log_path.unlink(missing_ok=True)
