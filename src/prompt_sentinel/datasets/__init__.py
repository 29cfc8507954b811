"""Datasets written by the Prompt Sentinel team and shipped with the package (see ``synthetic/README.md``)."""
