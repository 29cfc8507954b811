"""Datasets shipped with the package: ``starter/`` (the embedded default training corpus, built from permissively
licensed public sources; see its SOURCES.md), ``everyday/`` (hand-written everyday benign prompts) and
``synthetic/`` (team-written defensive-security and role-play families; see its README)."""
