"""`sentinel serve` (run the KServe model server) and `sentinel classify` (call one)."""

from __future__ import annotations

import json
import logging
import sys
from dataclasses import asdict
from pathlib import Path
from typing import Annotated

import typer

from prompt_sentinel.cli.common import ConfigOption, SetOption
from prompt_sentinel.client import DEFAULT_MODEL_NAME, DEFAULT_TIMEOUT_S, PROTOCOLS, ClientError, classify
from prompt_sentinel.errors import ConfigError

DEFAULT_URL = "http://127.0.0.1:8080"


def serve_argv(
    model: str,
    model_name: str | None,
    http_port: int,
    grpc: bool,
    grpc_port: int,
    max_instances: int | None,
    max_chars: int | None,
    batch_size: int | None,
    registry_root: str | None,
    config: Path | None,
    overrides: list[str] | None,
    log_dir: str | None = None,
) -> list[str]:
    """The ``python -m serving`` arguments for these CLI options."""
    argv = ["--model", model, "--http_port", str(http_port), "--enable_grpc", str(grpc).lower()]
    argv += ["--grpc_port", str(grpc_port)]
    optional = {
        "--model_name": model_name,
        "--max_instances": max_instances,
        "--max_chars": max_chars,
        "--batch_size": batch_size,
        "--registry_root": registry_root,
        "--config": str(config) if config else None,
        "--log_dir": log_dir,
    }
    for flag, value in optional.items():
        if value is not None:
            argv += [flag, str(value)]
    for override in overrides or []:
        argv += ["--set", override]
    return argv


def _read_texts(texts: list[str] | None, file: Path | None) -> list[str]:
    collected = list(texts or [])
    if file is not None:
        if str(file) == "-":
            lines = sys.stdin.read().splitlines()
        else:
            try:
                lines = file.read_text(encoding="utf-8").splitlines()
            except (OSError, UnicodeDecodeError) as exc:
                raise ConfigError(f"--file {file}: cannot read it as UTF-8 text ({exc})") from None
        collected += [line for line in lines if line.strip()]
    if not collected:
        raise ConfigError("nothing to classify: pass texts as arguments or --file PATH (one text per line)")
    return collected


def register(app: typer.Typer) -> None:
    """Add `serve` and `classify` to the top-level app."""

    @app.command("serve")
    def serve(
        model: Annotated[
            str,
            typer.Option(
                "--model",
                "-m",
                help="NAME@ALIAS or NAME/vK from the registry, a model directory, a gs:// prefix, or /mnt/models.",
            ),
        ] = "/mnt/models",
        model_name: Annotated[
            str | None,
            typer.Option("--model-name", help="Name in the endpoint paths (default: registry.model_name)."),
        ] = None,
        http_port: Annotated[int, typer.Option("--http-port", help="HTTP port (KServe binds 0.0.0.0).")] = 8080,
        grpc: Annotated[bool, typer.Option("--grpc/--no-grpc", help="Also serve the V2 gRPC protocol.")] = False,
        grpc_port: Annotated[int, typer.Option("--grpc-port", help="gRPC port, with --grpc.")] = 8081,
        max_instances: Annotated[
            int | None, typer.Option("--max-instances", help="Texts per request (serving.max_instances).")
        ] = None,
        max_chars: Annotated[
            int | None, typer.Option("--max-chars", help="Characters per text (serving.max_chars).")
        ] = None,
        batch_size: Annotated[
            int | None, typer.Option("--batch-size", help="Texts per model call (serving.batch_size).")
        ] = None,
        registry_root: Annotated[
            str | None, typer.Option("--registry-root", help="Registry for NAME@ALIAS refs (registry.root).")
        ] = None,
        log_dir: Annotated[
            str | None,
            typer.Option(
                "--log-dir",
                help="Append every prediction to this folder or gs:// prefix (monitoring.log_dir); the text itself "
                "only with --set monitoring.store_text=true.",
            ),
        ] = None,
        config: ConfigOption = None,
        overrides: SetOption = None,
    ) -> None:
        """Serve a model with KServe: V1 /v1/models/NAME:predict, V2 /v2/models/NAME/infer, /metrics.

        The model's checksums are verified before the server starts; a tampered artifact exits with status 1.
        """
        from serving.server import main as serve_main  # imports KServe only for this command

        code = serve_main(
            serve_argv(
                model,
                model_name,
                http_port,
                grpc,
                grpc_port,
                max_instances,
                max_chars,
                batch_size,
                registry_root,
                config,
                overrides,
                log_dir,
            )
        )
        if code:
            raise typer.Exit(code)

    @app.command("classify")
    def classify_command(
        texts: Annotated[list[str] | None, typer.Argument(help="Texts to classify.")] = None,
        url: Annotated[str, typer.Option("--url", help="Base URL of the model server.")] = DEFAULT_URL,
        protocol: Annotated[str, typer.Option("--protocol", help="v1 or v2 (Open Inference Protocol).")] = "v1",
        model_name: Annotated[str, typer.Option("--model-name", help="Served model name.")] = DEFAULT_MODEL_NAME,
        file: Annotated[
            Path | None,
            typer.Option("--file", "-f", help="Also classify each non-empty line of FILE (- = stdin)."),
        ] = None,
        timeout: Annotated[float, typer.Option("--timeout", help="Request timeout in seconds.")] = DEFAULT_TIMEOUT_S,
        as_json: Annotated[bool, typer.Option("--json", help="Print JSON lines instead of a table.")] = False,
    ) -> None:
        """Send texts to a running model server and print label, decision and scores for each."""
        logging.getLogger("httpx").setLevel(logging.WARNING)  # one INFO line per request is noise here
        if protocol not in PROTOCOLS:
            raise ConfigError(f"--protocol {protocol!r} is not supported; allowed: {', '.join(PROTOCOLS)}")
        predictions = classify(url, _read_texts(texts, file), protocol, model_name, timeout)  # type: ignore[arg-type]
        if as_json:
            for p in predictions:
                typer.echo(json.dumps(asdict(p), ensure_ascii=False))
            return
        from rich.console import Console
        from rich.table import Table
        from rich.text import Text  # Text, not markup strings: a prompt may contain "[red]…"

        table = Table(title=f"{model_name} @ {url} ({protocol})")
        for column in ("decision", "label", "scores", "text"):
            table.add_column(column, overflow="fold")
        colors = {"block": "red", "review": "yellow", "allow": "green"}
        for p in predictions:
            scores = "  ".join(f"{k}={v:.3f}" for k, v in p.scores.items())
            shown = p.text if len(p.text) <= 80 else p.text[:77] + "..."
            decision = p.decision or "-"
            table.add_row(Text(decision, style=colors.get(decision, "")), Text(p.label), Text(scores), Text(shown))
        Console().print(table)


__all__ = ["ClientError", "register", "serve_argv"]
