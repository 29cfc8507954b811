"""The MLflow ``pyfunc`` face of a registry version: load through :func:`prompt_sentinel.models.loading.load_model`.

Logged as *models-from-code* (``pyfunc_entry.py``) so MLflow stores source code, never a pickled object.
``predict`` takes a DataFrame with a ``text`` column (or a list of strings, or ``{"text": [...]}``) and
returns one row per text: predicted ``label``, ``label_id``, ``decision`` and one ``p_<label>`` column per class.
"""

from __future__ import annotations

from typing import Any

import mlflow.pyfunc
import pandas as pd

MODEL_DIR_ARTIFACT = "model_dir"
TEXT_COLUMN = "text"


def _texts(model_input: Any) -> list[str]:
    if isinstance(model_input, pd.DataFrame):
        column = TEXT_COLUMN if TEXT_COLUMN in model_input.columns else model_input.columns[0]
        return [str(t) for t in model_input[column].tolist()]
    if isinstance(model_input, pd.Series):
        return [str(t) for t in model_input.tolist()]
    if isinstance(model_input, dict):
        value = model_input.get(TEXT_COLUMN, model_input.get("instances", []))
        return [value] if isinstance(value, str) else [str(t) for t in value]
    if isinstance(model_input, str):
        return [model_input]
    return [str(t) for t in model_input]


class SentinelPyfuncModel(mlflow.pyfunc.PythonModel):
    """Wraps a checksum-verified Prompt Sentinel artifact stored as the ``model_dir`` artifact."""

    def load_context(self, context: Any) -> None:
        from prompt_sentinel.models.loading import load_model

        self._model = load_model(context.artifacts[MODEL_DIR_ARTIFACT])

    # MLflow inspects this hint: pd.DataFrame is one it accepts without inferring a schema from it (the logged
    # signature describes the ``text`` column); lists, Series and dicts are accepted too when called directly.
    def predict(self, context: Any, model_input: pd.DataFrame, params: dict[str, Any] | None = None) -> pd.DataFrame:
        texts = _texts(model_input)
        proba = self._model.predict_proba(texts)
        labels = self._model.labels
        ids = self._model.labels_for(proba) if len(texts) else []
        frame = pd.DataFrame(
            {
                "label": [labels[int(i)] for i in ids],
                "label_id": [int(i) for i in ids],
                "decision": self._model.decide(proba) if len(texts) else [],
            }
        )
        for k, name in enumerate(labels):
            frame[f"p_{name}"] = proba[:, k] if len(texts) else []
        return frame
