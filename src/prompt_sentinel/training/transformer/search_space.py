"""The transformer's Optuna search space, declared against the typed ``transformer`` config section.

Each searchable hyperparameter is a field of :class:`~prompt_sentinel.config.TransformerConfig` (the one place
its constraints are declared: ``learning_rate > 0``, ``0 <= warmup_ratio < 1``, ...), plus
``focal_alpha_malicious`` — the focal-loss weight of the malicious class, the others staying at 1. Every bound
and choice is validated by building the config section with it (pydantic, the same validator a config file
goes through), and a numeric range is drawn as an int exactly when the field is an ``int``. The ranges are
data (:data:`TRANSFORMER_SPACE`), overridden by ``training.search.optuna.ranges.transformer``.
"""

from __future__ import annotations

from typing import Any

from pydantic import ValidationError

from prompt_sentinel.config import LabelConfig, SearchConfig, TransformerConfig
from prompt_sentinel.errors import TrainingError
from prompt_sentinel.training.search_ranges import Range, choices, numeric, parse_range

FOCAL_ALPHA_MALICIOUS = "focal_alpha_malicious"
TRANSFORMER_SPACE: dict[str, Range] = {
    "learning_rate": numeric(1e-5, 2e-4, log=True),
    "warmup_ratio": numeric(0.0, 0.2),
    "batch_size": choices(8, 16, 32),
    "max_length": choices(64, 128, 256),
    "focal_gamma": numeric(0.0, 4.0),
    FOCAL_ALPHA_MALICIOUS: numeric(1.0, 3.0),
    "dropout": numeric(0.0, 0.3),
    "pooling": choices("cls", "mean"),
}
SEARCHABLE = (
    "learning_rate",
    "warmup_ratio",
    "batch_size",
    "max_length",
    "focal_gamma",
    FOCAL_ALPHA_MALICIOUS,
    "dropout",
    "pooling",
    "weight_decay",
    "scheduler",
    "loss",
    "epochs",
)


def is_integer(name: str) -> bool:
    if name == FOCAL_ALPHA_MALICIOUS:
        return False
    annotation = TransformerConfig.model_fields[name].annotation
    return annotation is int or annotation == int | None


def apply_params(base: TransformerConfig, labels: LabelConfig, params: dict[str, Any], where: str) -> TransformerConfig:
    """``base`` with ``params`` applied, validated as a config section (:class:`TrainingError` naming ``where``)."""
    update = {k: v for k, v in params.items() if k != FOCAL_ALPHA_MALICIOUS}
    if FOCAL_ALPHA_MALICIOUS in params:
        malicious = labels.roles.malicious
        if malicious is None:
            raise TrainingError(f"{where}.{FOCAL_ALPHA_MALICIOUS}: the label set has no malicious class")
        alpha = [1.0] * labels.num_classes
        alpha[malicious] = params[FOCAL_ALPHA_MALICIOUS]
        update["focal_alpha"] = alpha
    try:
        return TransformerConfig.model_validate({**base.model_dump(), **update})
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc'])}={e.get('input')!r}: {e['msg']}" for e in exc.errors()
        )
        raise TrainingError(f"{where}: {problems}") from None


def transformer_space(search: SearchConfig, base: TransformerConfig, labels: LabelConfig) -> dict[str, Range]:
    """The validated Optuna space of the transformer (configured ranges or :data:`TRANSFORMER_SPACE`)."""
    prefix = "training.search.optuna.ranges.transformer"
    configured = search.optuna.ranges.get("transformer")
    if configured is not None and not configured:
        raise TrainingError(f"{prefix} is empty; give at least one parameter")
    raw = (
        {name: parse_range(spec, f"{prefix}.{name}") for name, spec in configured.items()}
        if configured
        else TRANSFORMER_SPACE
    )
    for name, rng in raw.items():
        where = f"{prefix}.{name}"
        if name not in SEARCHABLE:
            raise TrainingError(f"{where}: unknown parameter {name!r}; allowed: {list(SEARCHABLE)}")
        values = list(rng.choices) if rng.choices is not None else [rng.low, rng.high]
        for value in values:
            if rng.choices is None and is_integer(name) and float(value) != int(value):
                raise TrainingError(f"{where}: {name} is an integer; got the bound {value!r}")
            apply_params(base, labels, {name: int(value) if is_integer(name) and rng.choices is None else value}, where)
    return dict(raw)


def largest_max_length(space: dict[str, Range], base: TransformerConfig) -> int:
    """The longest ``max_length`` a trial can ask for (checked against the base model before any trial)."""
    rng = space.get("max_length")
    if rng is None:
        return base.max_length
    return int(max(rng.choices)) if rng.choices is not None else int(rng.high)
