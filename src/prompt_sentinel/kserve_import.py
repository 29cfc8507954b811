"""Import KServe without letting it parse *our* command line.

``kserve.model_server`` calls ``parser.parse_known_args()`` on ``sys.argv`` at import time, and argparse accepts
unambiguous prefixes: in a process started as ``sentinel serve --config my.yaml`` KServe reads ``--config`` as
``--configure_logging my.yaml`` and exits with a usage error before our code runs. Everything that needs KServe —
the serving package, and deploy's validation of InferenceService objects against KServe's own models — imports
it through here, with ``sys.argv`` reduced to the program name for the duration of the import.
"""

from __future__ import annotations

import sys
from types import ModuleType


def import_kserve() -> ModuleType:
    """Return the ``kserve`` package, importing it with an argument-free ``sys.argv`` the first time."""
    if "kserve.model_server" in sys.modules:
        return sys.modules["kserve"]
    saved = sys.argv
    sys.argv = saved[:1]
    try:
        import kserve
    finally:
        sys.argv = saved
    return kserve
