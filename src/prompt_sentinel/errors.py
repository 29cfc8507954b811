"""Exception hierarchy.

Every error a user can cause derives from :class:`SentinelError`, so the CLI can print its message and
exit non-zero without a traceback, and servers can map it to a 4xx response.
"""

from __future__ import annotations


class SentinelError(Exception):
    """Base class for errors caused by input, configuration or stored artifacts."""


class ConfigError(SentinelError, ValueError):
    """The configuration is invalid: the message names the field, the value and what is allowed."""


class DataError(SentinelError, ValueError):
    """A dataset cannot be read or does not match the expected schema."""


class DataValidationError(DataError):
    """Validation found error-level findings; ``findings`` holds them all."""

    def __init__(self, message: str, findings: list | None = None) -> None:
        super().__init__(message)
        self.findings = findings or []


class StorageError(SentinelError):
    """A local or ``gs://`` location cannot be read or written."""


class ChecksumError(SentinelError):
    """A stored file does not match the sha256 recorded when it was written."""


class ModelFormatError(SentinelError):
    """A model directory is neither a scikit-learn (skops) nor a transformers artifact, or is incomplete."""


class RegistryError(SentinelError):
    """A registry reference, version or alias is unknown, or the registry cannot be changed."""


class TrainingError(SentinelError):
    """Training parameters or training data are unusable; raised before any artifact is written."""


class DeployError(SentinelError):
    """Manifests cannot be rendered or promoted, or a deployment was refused or did not become Ready."""


class PipelineError(SentinelError):
    """A pipeline cannot be compiled, run or submitted, or one of its stages failed (the message says which)."""
