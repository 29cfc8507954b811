"""Mean pooling for transformer classifiers (``transformer.pooling: mean``).

``*ForSequenceClassification`` heads classify one position (BERT: a dense + tanh "pooler" over ``[CLS]``).
:class:`MeanPooledClassifier` instead feeds its linear head the attention-masked mean of the encoder's last hidden
states — how sentence encoders such as MiniLM were trained to summarize a text, and a search dimension of the
transformer's hyperparameter search. It behaves like a Hugging Face classifier where the trainer, the checkpoint
store and inference touch it (``.config``, ``.logits``, ``save_pretrained``, ``get_input_embeddings``).

Artifact: ``config.json`` is the encoder's config with ``num_labels`` / ``id2label`` and
``sentinel_pooling: mean``; ``model.safetensors`` holds the encoder (``encoder.*``) and head (``classifier.*``)
weights — safetensors only, like every transformer artifact. :func:`load_mean_pooled` rebuilds it from those.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

POOLING_KEY = "sentinel_pooling"
WEIGHTS = "model.safetensors"


class MeanPooledClassifier(torch.nn.Module):
    """An encoder, the masked mean of its last hidden states, dropout and a linear classification head."""

    def __init__(self, encoder: Any, num_labels: int, dropout: float) -> None:
        super().__init__()
        self.encoder = encoder
        self.dropout = torch.nn.Dropout(dropout)
        self.classifier = torch.nn.Linear(encoder.config.hidden_size, num_labels)

    @property
    def config(self) -> Any:
        return self.encoder.config

    def get_input_embeddings(self) -> torch.nn.Module:
        return self.encoder.get_input_embeddings()

    def forward(
        self,
        input_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
        inputs_embeds: torch.Tensor | None = None,
        **_: Any,
    ) -> Any:
        from transformers.modeling_outputs import SequenceClassifierOutput

        inputs = {"input_ids": input_ids, "inputs_embeds": inputs_embeds, "token_type_ids": token_type_ids}
        hidden = self.encoder(attention_mask=attention_mask, **{k: v for k, v in inputs.items() if v is not None})
        states = hidden.last_hidden_state
        if attention_mask is None:
            pooled = states.mean(dim=1)
        else:
            mask = attention_mask.unsqueeze(-1).to(states.dtype)
            pooled = (states * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1.0)
        return SequenceClassifierOutput(logits=self.classifier(self.dropout(pooled)))

    def save_pretrained(self, directory: str | Path) -> None:
        from safetensors.torch import save_model

        out = Path(directory)
        out.mkdir(parents=True, exist_ok=True)
        self.config.save_pretrained(out)
        save_model(self, str(out / WEIGHTS))


def build_mean_pooled(
    base_path: Path, num_labels: int, id2label: dict, label2id: dict, overrides: dict[str, Any]
) -> MeanPooledClassifier:
    """A fresh head on the base checkpoint's encoder (``overrides``: config fields such as dropout rates)."""
    from transformers import AutoModel

    try:  # BERT-like encoders carry an unused [CLS] pooler unless told not to
        encoder = AutoModel.from_pretrained(base_path, use_safetensors=True, add_pooling_layer=False, **overrides)
    except TypeError:
        encoder = AutoModel.from_pretrained(base_path, use_safetensors=True, **overrides)
    config = encoder.config
    config.num_labels = num_labels
    config.id2label, config.label2id = dict(id2label), dict(label2id)
    setattr(config, POOLING_KEY, "mean")
    rate = overrides.get("classifier_dropout") or getattr(config, "hidden_dropout_prob", None) or 0.1
    return MeanPooledClassifier(encoder, num_labels, float(rate))


def load_mean_pooled(path: Path, config: Any) -> MeanPooledClassifier:
    """The classifier of a verified artifact directory (weights from safetensors only)."""
    from safetensors.torch import load_model
    from transformers import AutoModel

    try:
        encoder = AutoModel.from_config(config, add_pooling_layer=False)
    except TypeError:
        encoder = AutoModel.from_config(config)
    model = MeanPooledClassifier(encoder, config.num_labels, 0.0)
    load_model(model, str(Path(path) / WEIGHTS))
    return model


def is_mean_pooled(config: Any) -> bool:
    return getattr(config, POOLING_KEY, None) == "mean"
