"""JSON the way every report, descriptor and step output of the project is written.

Two flavours share one converter for numpy scalars/arrays and paths:

* :func:`to_json` — strict: NaN and infinities are refused (metric code maps undefined values to null), and an
  object the converter does not know is an error, not a silently stringified value;
* :func:`to_json_lenient` — for free-form training reports, where an unknown object is written as its ``str``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np


def json_default(obj: Any) -> Any:
    """``json.dumps(default=...)`` for numpy scalars and arrays and paths; anything else is a ``TypeError``."""
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"not JSON serializable: {type(obj).__name__}")


def _lenient_default(obj: Any) -> Any:
    try:
        return json_default(obj)
    except TypeError:
        return str(obj)


def to_json(payload: Any, indent: int | None = 2) -> str:
    """Strict JSON (NaN/inf and unknown objects refused)."""
    return json.dumps(payload, indent=indent, allow_nan=False, default=json_default)


def to_json_lenient(payload: Any, indent: int | None = 2) -> str:
    """JSON for free-form reports: unknown objects are written as their ``str``."""
    return json.dumps(payload, indent=indent, default=_lenient_default)
