"""Options shared by every command: ``--config FILE`` and repeatable ``--set section.field=value``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from prompt_sentinel.config import SentinelConfig, load_config

ConfigOption = Annotated[
    Path | None, typer.Option("--config", "-c", help="YAML config file (defaults apply to missing fields).")
]
SetOption = Annotated[
    list[str] | None,
    typer.Option("--set", "-s", help="Override a config field, e.g. --set training.models=\\[logreg]. Repeatable."),
]


def resolve_config(config: Path | None, overrides: list[str] | None) -> SentinelConfig:
    return load_config(config, overrides or [])
