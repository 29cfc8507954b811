"""``python -m serving --model REF --http_port 8080`` — see :mod:`serving.server`."""

from __future__ import annotations

import sys

from serving.server import main

if __name__ == "__main__":
    sys.exit(main())
