"""Datasets shipped with the package (``starter/``: the embedded default training corpus; see its SOURCES.md)."""
