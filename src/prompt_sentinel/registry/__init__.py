"""Model registry: numbered immutable versions and movable aliases on a local directory or GCS,
mirrored into the MLflow Model Registry.

Other areas call :func:`resolve_model_ref` (serving, evaluation, deployment) and :func:`push_model`
(the pipeline's push stage); the ``sentinel registry`` CLI wraps :class:`ModelRegistry`. The module layout is
described in :mod:`prompt_sentinel.registry.registry`.
"""

from prompt_sentinel.registry.mirror import MIRROR_EXIT_CODE, MirrorReport
from prompt_sentinel.registry.registry import (
    CANDIDATE,
    CHAMPION,
    PREVIOUS,
    GcReport,
    ModelRef,
    ModelRegistry,
    PushResult,
    VersionInfo,
    parse_ref,
    push_model,
    resolve_model_ref,
)

__all__ = [
    "CANDIDATE",
    "CHAMPION",
    "MIRROR_EXIT_CODE",
    "PREVIOUS",
    "GcReport",
    "MirrorReport",
    "ModelRef",
    "ModelRegistry",
    "PushResult",
    "VersionInfo",
    "parse_ref",
    "push_model",
    "resolve_model_ref",
]
