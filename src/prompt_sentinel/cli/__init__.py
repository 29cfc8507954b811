"""The ``sentinel`` command line: a thin Typer layer over the library.

Each area registers its commands from its own module (``register(app)``) so the library stays importable
without the CLI. Errors a user can cause (:class:`SentinelError`) print one clear message and exit 1.
"""

from __future__ import annotations

import importlib
import logging
import sys
from pathlib import Path

import typer

from prompt_sentinel.errors import SentinelError

app = typer.Typer(
    name="sentinel",
    help="Prompt Sentinel: train, evaluate and serve prompt-security classifiers.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)


@app.callback()
def _root() -> None:
    """Prompt Sentinel: train, evaluate and serve prompt-security classifiers."""


@app.command("config")
def show_config(
    defaults: bool = typer.Option(False, "--defaults", help="Print configs/default.yaml (every field, defaults)."),
    config: Path | None = typer.Option(None, "--config", "-c", help="YAML config file."),
    set_: list[str] | None = typer.Option(None, "--set", "-s", help="Override a field. Repeatable."),
) -> None:
    """Print the effective configuration (defaults + --config + --set) as YAML, after validation."""
    from prompt_sentinel.config import defaults_yaml, load_config

    typer.echo(defaults_yaml() if defaults else load_config(config, set_ or []).to_yaml(), nl=False)


@app.command()
def version() -> None:
    """Print the Prompt Sentinel version."""
    from prompt_sentinel import __version__

    typer.echo(__version__)


# Area modules, each exposing ``register(app: typer.Typer) -> None``.
_COMMAND_MODULES = (
    "data",
    "train",
    "hpo",
    "evaluate",
    "generalization",
    "registry",
    "serve",
    "pipeline",
    "deploy",
    "corpus",
    "monitor",
)
for _name in _COMMAND_MODULES:
    _module = importlib.import_module(f"prompt_sentinel.cli.{_name}")
    _module.register(app)


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        app()
    except SentinelError as exc:
        typer.secho(f"error: {exc}", fg=typer.colors.RED, err=True)
        sys.exit(1)


if __name__ == "__main__":
    main()
