"""Datasets shipped with the package: ``starter/`` (the embedded default training corpus, built from permissively
licensed public sources; see its SOURCES.md), ``everyday/`` (hand-written everyday benign prompts),
``synthetic/`` (team-written defensive-security and role-play families; see its README) and ``smoke/`` (the panel
``sentinel run --serve-smoke-test`` asks the served model)."""

from __future__ import annotations

from pathlib import Path

DATASETS_DIR = Path(__file__).resolve().parent
STARTER_CORPUS = DATASETS_DIR / "starter" / "starter.csv"
SMOKE_PANEL = DATASETS_DIR / "smoke" / "panel.csv"
DEMO_PROMPTS = DATASETS_DIR.parent / "demo_data" / "demo_prompts.csv"
DEMO_BLIND = DATASETS_DIR.parent / "demo_data" / "demo_blind.csv"
