"""What every model artifact is: its descriptor and the :class:`SentinelModel` interface all families implement.

An artifact is a directory holding:

* ``sentinel_model.json`` — the :class:`ModelDescriptor` (family, label names and roles, decision thresholds),
* ``checksums.json`` — sha256 of every file (verified before anything is deserialized),
* family files: ``model.skops`` for scikit-learn; ``config.json`` + ``model.safetensors`` + tokenizer files
  for transformers; ``members/<name>/`` (each a model directory) for soft-voting ensembles.

Text normalization happens here, in :meth:`SentinelModel.predict_proba`, so every caller — evaluation, the
KServe predictor, benchmarks — feeds models exactly what training fed them. Loading an artifact of any family
is :func:`prompt_sentinel.models.loading.load_model`.
"""

from __future__ import annotations

import json
from abc import ABC, abstractmethod
from collections.abc import Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from prompt_sentinel.config import DecisionConfig, LabelConfig, LabelRoles
from prompt_sentinel.decision import Decision, assign_labels, decide
from prompt_sentinel.errors import ModelFormatError
from prompt_sentinel.run_layout import MODEL_DESCRIPTOR
from prompt_sentinel.text import normalize_text

ModelFamily = Literal["sklearn", "transformer", "ensemble"]


class ModelDescriptor(BaseModel):
    """What a runtime needs to know about an artifact without deserializing it."""

    model_config = ConfigDict(extra="allow")

    format_version: int = 1
    family: ModelFamily
    model_type: str = Field(description="Trainer name, e.g. 'logreg' or 'transformer'.")
    labels: LabelConfig
    decision: DecisionConfig = Field(default_factory=DecisionConfig)
    featurizer: str | None = None
    max_length: int | None = None
    params: dict[str, Any] = Field(default_factory=dict)
    created_at: str = Field(default_factory=lambda: datetime.now(timezone.utc).isoformat())

    def write(self, directory: str | Path) -> Path:
        path = Path(directory) / MODEL_DESCRIPTOR
        path.write_text(self.model_dump_json(indent=2))
        return path


def read_descriptor(directory: str | Path) -> ModelDescriptor:
    path = Path(directory) / MODEL_DESCRIPTOR
    if not path.is_file():
        raise ModelFormatError(
            f"{directory}: no {MODEL_DESCRIPTOR}; not a Prompt Sentinel model directory "
            "(expected a skops pipeline or a transformers directory written by `sentinel train`)"
        )
    try:
        return ModelDescriptor.model_validate(json.loads(path.read_text()))
    except (json.JSONDecodeError, ValidationError) as exc:
        raise ModelFormatError(f"{path}: invalid model descriptor: {exc}") from exc


class SentinelModel(ABC):
    """A loaded, verified model. Subclasses implement :meth:`_predict_proba` on normalized texts."""

    # the backend the model runs on (prompt_sentinel.inference); None when nothing neural runs (TF-IDF models)
    inference_backend: str | None = None

    def __init__(self, path: Path, descriptor: ModelDescriptor) -> None:
        self.path = path
        self.descriptor = descriptor

    @property
    def labels(self) -> list[str]:
        return self.descriptor.labels.names

    @property
    def roles(self) -> LabelRoles:
        return self.descriptor.labels.roles

    @property
    def family(self) -> ModelFamily:
        return self.descriptor.family

    def predict_proba(self, texts: Sequence[str], batch_size: int = 64) -> np.ndarray:
        """Class probabilities, shape (len(texts), n_classes), rows summing to 1."""
        if len(texts) == 0:
            return np.zeros((0, len(self.labels)), dtype=np.float32)
        normalized = [normalize_text(t) for t in texts]
        return np.asarray(self._predict_proba(normalized, batch_size=batch_size), dtype=np.float32)

    def predict(self, texts: Sequence[str], batch_size: int = 64) -> np.ndarray:
        """Label ids under the artifact's decision rule (least expected cost, :mod:`prompt_sentinel.decision`)."""
        return self.labels_for(self.predict_proba(texts, batch_size=batch_size))

    def labels_for(self, proba: np.ndarray) -> np.ndarray:
        return assign_labels(proba, self.roles, self.descriptor.decision)

    def decide(self, proba: np.ndarray) -> list[Decision]:
        return decide(proba, self.roles, self.descriptor.decision)

    def warmup(self) -> None:
        """Run one tiny prediction so the first real request is not slow."""
        self.predict_proba(["warm-up prompt"])

    @abstractmethod
    def _predict_proba(self, texts: list[str], batch_size: int) -> np.ndarray: ...
