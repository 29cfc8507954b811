"""The ``kserve`` package, imported without letting it parse our command line
(:mod:`prompt_sentinel.kserve_import`); every module of this package imports KServe through here, and the server
entry point then passes its own parsed arguments explicitly."""

from __future__ import annotations

from prompt_sentinel.kserve_import import import_kserve

kserve = import_kserve()
