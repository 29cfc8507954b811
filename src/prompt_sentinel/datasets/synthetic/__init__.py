"""Team-written training data for the two gaps no public permissive source fills.

``defensive_coding.csv`` (benign defensive-security and ordinary coding requests that use attack vocabulary) and
``roleplay.csv`` (role-play / persuasion jailbreaks, their benign role-play counterparts and the bare harmful
goals), built deterministically by :mod:`prompt_sentinel.datasets.synthetic.build` from the YAML files next to
this module. ``README.md`` says how they were made and how to use them.
"""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path

__all__ = ["DATA_DIR", "DEFENSIVE_CSV", "ROLEPLAY_CSV"]

DATA_DIR = Path(str(files(__name__)))
DEFENSIVE_CSV = DATA_DIR / "defensive_coding.csv"
ROLEPLAY_CSV = DATA_DIR / "roleplay.csv"
