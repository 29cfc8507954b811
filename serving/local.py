"""Run the real model server as a local subprocess (smoke tests, benchmarks, ``sentinel run --serve-smoke-test``).

KServe binds 0.0.0.0; every request from these helpers goes to 127.0.0.1 only.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import httpx

from prompt_sentinel.config import RegistryConfig
from prompt_sentinel.errors import SentinelError

DEFAULT_MODEL_NAME = RegistryConfig.model_fields["model_name"].default
LOOPBACK = "127.0.0.1"


class ServerStartError(SentinelError):
    """The local model server exited or did not become ready in time; the message holds its log tail."""


def free_port() -> int:
    """An unused TCP port on the loopback interface."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((LOOPBACK, 0))
        return int(sock.getsockname()[1])


class LocalServer:
    """A ``python -m serving`` subprocess: its base URL, process handle and combined log file."""

    def __init__(self, process: subprocess.Popen[bytes], url: str, model_name: str, log_path: Path) -> None:
        self.process = process
        self.url = url
        self.model_name = model_name
        self.log_path = log_path

    @property
    def pid(self) -> int:
        return self.process.pid

    def poll(self) -> int | None:
        return self.process.poll()

    def logs(self, tail_chars: int | None = None) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return ""
        return text[-tail_chars:] if tail_chars else text

    def stop(self, timeout: float = 15.0) -> int | None:
        """SIGTERM (KServe/uvicorn shut down gracefully), then SIGKILL after ``timeout`` seconds."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=timeout)
        return self.process.returncode

    def wait_ready(self, timeout: float = 120.0) -> None:
        wait_ready(self.url, timeout=timeout, model_name=self.model_name, server=self)


def server_command(
    model_ref: str, port: int, model_name: str = DEFAULT_MODEL_NAME, extra_args: Sequence[str] = ()
) -> list[str]:
    """The ``python -m serving`` command line for a local server (gRPC off: one port per server)."""
    return [
        sys.executable,
        "-m",
        "serving",
        "--model",
        str(model_ref),
        "--model_name",
        model_name,
        "--http_port",
        str(port),
        "--enable_grpc",
        "false",
        *extra_args,
    ]


def start_local_server(
    model_ref: str,
    port: int | None = None,
    model_name: str = DEFAULT_MODEL_NAME,
    *,
    extra_args: Sequence[str] = (),
    env: dict[str, str] | None = None,
    log_path: str | Path | None = None,
) -> LocalServer:
    """Start ``python -m serving`` for ``model_ref`` on ``port`` (a free one if None); does not wait."""
    port = port or free_port()
    if log_path is None:
        fd, name = tempfile.mkstemp(prefix="sentinel-serve-", suffix=".log")
        os.close(fd)
        log_path = name
    log_path = Path(log_path)
    run_env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", **(env or {})}
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            server_command(model_ref, port, model_name, extra_args),
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=run_env,
        )
    return LocalServer(process, f"http://{LOOPBACK}:{port}", model_name, log_path)


def wait_ready(
    url: str,
    timeout: float = 120.0,
    model_name: str | None = None,
    server: LocalServer | None = None,
    interval: float = 0.25,
) -> None:
    """Poll ``/v2/models/<name>/ready`` (or ``/v2/health/ready``) until 200; raise ServerStartError otherwise.

    With ``server`` given, a process that exits while we wait fails fast, with the tail of its log.
    """
    base = url.rstrip("/")
    probe = f"{base}/v2/models/{model_name}/ready" if model_name else f"{base}/v2/health/ready"
    deadline = time.monotonic() + timeout
    last_error = "no answer yet"
    with httpx.Client(timeout=2.0) as client:
        while True:
            if server is not None and server.poll() is not None:
                raise ServerStartError(
                    f"model server exited with status {server.poll()} before becoming ready; "
                    f"log tail:\n{server.logs(tail_chars=3000)}"
                )
            try:
                response = client.get(probe)
                if response.status_code == 200:
                    return
                last_error = f"HTTP {response.status_code}: {response.text[:200]}"
            except httpx.HTTPError as exc:
                last_error = f"{type(exc).__name__}: {exc}"
            if time.monotonic() >= deadline:
                tail = f"; log tail:\n{server.logs(tail_chars=3000)}" if server is not None else ""
                raise ServerStartError(f"{probe} not ready after {timeout:.0f}s ({last_error}){tail}")
            time.sleep(interval)


@contextmanager
def running_server(
    model_ref: str,
    model_name: str = DEFAULT_MODEL_NAME,
    port: int | None = None,
    *,
    timeout: float = 120.0,
    extra_args: Sequence[str] = (),
    env: dict[str, str] | None = None,
) -> Iterator[str]:
    """Start a local server for ``model_ref``, wait until its model is ready, yield its base URL, stop it."""
    server = start_local_server(model_ref, port, model_name, extra_args=extra_args, env=env)
    try:
        server.wait_ready(timeout=timeout)
        yield server.url
    finally:
        server.stop()
        server.log_path.unlink(missing_ok=True)
