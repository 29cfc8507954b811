"""Typed configuration: the one source of defaults for every stage.

A config is a YAML file (see ``configs/default.yaml``) validated into :class:`SentinelConfig`; any field can be
overridden with dotted ``key=value`` strings (``training.models=[logreg,linear_svm]``), which is what the CLI's
``--set`` option and the pipeline's ``config_overrides`` parameter pass in. Unknown fields are rejected, and every
error names the field, the value and what is allowed.
"""

from __future__ import annotations

import itertools
import json
from dataclasses import dataclass
from itertools import pairwise
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from prompt_sentinel import storage
from prompt_sentinel.errors import ConfigError
from prompt_sentinel.transforms import TRANSFORMS

Severity = Literal["error", "warning", "off"]
SECURITY_ROLES = ("benign", "suspicious", "malicious")


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


@dataclass(frozen=True)
class LabelRoles:
    """Class ids playing each security role; ``None`` where the label set has no such class."""

    benign: int | None
    suspicious: int | None
    malicious: int | None

    def as_dict(self) -> dict[str, int | None]:
        return {"benign": self.benign, "suspicious": self.suspicious, "malicious": self.malicious}


class LabelConfig(_Section):
    """Label names (index = class id) and which label plays each security role."""

    names: list[str] = Field(default_factory=lambda: ["benign", "suspicious", "malicious"])
    benign: str | None = "benign"
    suspicious: str | None = "suspicious"
    malicious: str | None = "malicious"

    @field_validator("names")
    @classmethod
    def _names_valid(cls, names: list[str]) -> list[str]:
        if len(names) < 2:
            raise ValueError(f"needs at least 2 labels, got {len(names)}: {names}")
        if len(set(names)) != len(names):
            raise ValueError(f"label names must be unique, got {names}")
        if any(not str(n).strip() for n in names):
            raise ValueError(f"label names must be non-empty strings, got {names}")
        return names

    @model_validator(mode="after")
    def _roles_known(self) -> LabelConfig:
        for role in SECURITY_ROLES:
            value = getattr(self, role)
            if value is not None and value not in self.names:
                raise ValueError(f"role {role!r} names label {value!r}, which is not one of {self.names}")
        assigned = [getattr(self, r) for r in SECURITY_ROLES if getattr(self, r) is not None]
        if len(set(assigned)) != len(assigned):
            raise ValueError(f"one label cannot play two security roles: {assigned}")
        return self

    @property
    def num_classes(self) -> int:
        return len(self.names)

    @property
    def roles(self) -> LabelRoles:
        def idx(name: str | None) -> int | None:
            return None if name is None else self.names.index(name)

        return LabelRoles(idx(self.benign), idx(self.suspicious), idx(self.malicious))

    @property
    def id2label(self) -> dict[int, str]:
        return dict(enumerate(self.names))

    @property
    def label2id(self) -> dict[str, int]:
        return {n: i for i, n in enumerate(self.names)}


class DataConfig(_Section):
    """Dataset schema and text limits."""

    text_column: str = "text"
    label_column: str = "label"
    id_column: str = "id"
    source_column: str = "source"
    group_column: str = Field(
        "group",
        description="Optional column naming each row's group (template, payload or scenario id of composed rows, as "
        "`sentinel data assemble` writes it): rows of one group never straddle a split, a cross-validation fold or "
        "an out-of-source fold. Unioned with the near-duplicate groups; rows without a value group by text only.",
    )
    max_chars: int = Field(20_000, gt=0, description="Texts longer than this are a validation finding.")
    min_rows_per_class: int = Field(5, ge=1)


class ValidationConfig(_Section):
    """Severity of each validation check: error (stop), warning (drop the row and report) or off."""

    null_text: Severity = "error"
    empty_text: Severity = "error"
    text_too_long: Severity = "error"
    invalid_utf8: Severity = "error"
    control_characters: Severity = "warning"
    unknown_label: Severity = "error"
    class_too_small: Severity = "error"
    single_class: Severity = "error"
    exact_duplicate: Severity = "warning"
    conflicting_labels: Severity = "error"
    cross_set_leak: Severity = "error"

    @field_validator("*", mode="before")
    @classmethod
    def _yaml_off(cls, value: Any) -> Any:
        # YAML 1.1 reads a bare `off` (in a config file or `--set validation.x=off`) as the boolean false.
        return "off" if value is False else value


class SplitConfig(_Section):
    train: float = Field(0.7, gt=0, lt=1)
    validation: float = Field(0.15, ge=0, lt=1)
    test: float = Field(0.15, ge=0, lt=1)
    # Variants of one prompt (a DAN template with another name, one injection behind another lead-in) go to one
    # split and one cross-validation fold; with exact grouping only, 68 of ~160 malicious validation rows of the
    # reference data were near-copies of training rows and validation scores were far too optimistic.
    near_duplicate_jaccard: float = Field(
        0.6,
        gt=0,
        le=1,
        description="Texts whose word-shingle Jaccard similarity reaches this are one group for splits and CV "
        "folds (1.0: only identical shingle sets).",
    )
    shingle_words: int = Field(5, ge=1, description="Words per shingle for near-duplicate grouping.")

    @model_validator(mode="after")
    def _sums_to_one(self) -> SplitConfig:
        total = self.train + self.validation + self.test
        if abs(total - 1.0) > 1e-6:
            raise ValueError(f"train + validation + test must be 1.0, got {total:.4f}")
        return self


# Multilingual sentence encoders that ship inside a Python package (see prompt_sentinel.encoders); any other
# `featurizer.embedding_model` value is a Hugging Face checkpoint reference.
NAMED_TEXT_ENCODERS = ("use-multilingual", "e5-small")


class FeaturizerConfig(_Section):
    # `combined` (MiniLM embeddings ⊕ SVD-reduced TF-IDF) generalizes far better than TF-IDF alone on small or
    # shifted data (demo test split: custom score 0.88 vs 0.28-0.41); `tfidf` is the fast choice for big corpora.
    kind: Literal["tfidf", "embeddings", "combined"] = "combined"
    word_ngram_range: tuple[int, int] = (1, 2)
    char_ngram_range: tuple[int, int] = (3, 5)
    max_word_features: int = Field(50_000, gt=0)
    max_char_features: int = Field(100_000, gt=0)
    svd_components: int = Field(200, gt=0, description="TF-IDF dimensions kept by TruncatedSVD in `combined`.")
    embedding_model: str = Field(
        "use-multilingual",
        description="Sentence encoder: a Hugging Face sentence-transformer directory (local path, gs:// URI, or "
        "'bundled:all-MiniLM-L6-v2', English only) or a built-in multilingual encoder shipped as a Python package: "
        "'use-multilingual' (Universal Sentence Encoder multilingual v3, 512-d) or 'e5-small' (multilingual-e5-small "
        "4-bit, 384-d, x86-64 Linux only). See prompt_sentinel.encoders. The default is the best of the three out "
        "of source (docs/generalization.md), reads 16 languages and is the fastest here.",
    )
    gibberish: bool = Field(
        False,
        description="Append a gibberish score block (windowed surprise under a character trigram model fitted on "
        "the benign training rows; prompt_sentinel.gibberish) to any featurizer kind: flags optimized adversarial "
        "suffixes and encoded payloads that embeddings and TF-IDF miss.",
    )
    gibberish_window: int = Field(32, ge=2, description="Characters per window of the gibberish score.")
    embedding_batch_size: int = Field(64, gt=0)
    embedding_max_length: int = Field(
        256,
        gt=0,
        description="Tokens per text fed to a transformer encoder (MiniLM, e5-small); longer texts are truncated. "
        "'use-multilingual' has no length limit and reads the whole text.",
    )

    @field_validator("embedding_model")
    @classmethod
    def _embedding_model_valid(cls, ref: str) -> str:
        ref = ref.strip()
        if not ref:
            raise ValueError(f"empty encoder reference; use a checkpoint directory or one of {NAMED_TEXT_ENCODERS}")
        folded = ref.casefold().replace("_", "-")
        near = [
            name for name in NAMED_TEXT_ENCODERS if folded == name or folded.replace("-", "") == name.replace("-", "")
        ]
        if near and ref not in NAMED_TEXT_ENCODERS:
            raise ValueError(f"unknown encoder {ref!r}; did you mean {near[0]!r}? (built-in: {NAMED_TEXT_ENCODERS})")
        return ref


class BalanceConfig(_Section):
    method: Literal["smote", "borderline_smote", "adasyn", "random_oversample", "none"] = "smote"
    sampling_strategy: str | float | dict[str, int] = "auto"
    k_neighbors: int = Field(5, ge=1)


class OptunaConfig(_Section):
    """The Optuna study of ``training.search.strategy: optuna`` (:mod:`prompt_sentinel.training.optuna_search`)."""

    n_trials: int = Field(
        20, ge=1, description="Trials in the whole study; a resumed study runs only those still missing."
    )
    timeout_s: float | None = Field(None, gt=0, description="Start no new trial after this many seconds (None: none).")
    sampler: Literal["tpe", "random"] = Field("tpe", description="tpe (seeded TPESampler) or random (RandomSampler).")
    n_startup_trials: int = Field(5, ge=0, description="Random trials before TPE starts modelling the space.")
    pruner: Literal["median", "hyperband", "none"] = Field(
        "median",
        description="Stops a trial whose intermediate scores (per CV fold, per transformer evaluation) trail the "
        "others': median (MedianPruner), hyperband (HyperbandPruner) or none.",
    )
    pruner_warmup_steps: int = Field(0, ge=0, description="Intermediate reports a trial makes before it may be pruned.")
    storage: str | None = Field(
        None,
        description="Study storage, an RDB URL (sqlite:///hpo.db, postgresql://...): an interrupted search resumes "
        "from it; None = in memory.",
    )
    study_name: str | None = Field(
        None,
        description="None = '<model>-<training data sha256[:12]>', so rerunning the same search resumes it.",
    )
    ranges: dict[str, dict[str, dict[str, Any]]] = Field(
        default_factory=dict,
        description="Per-model ranges replacing the built-in Optuna space: {param: {low, high, log}} or "
        "{param: {choices: [...]}}; every bound is checked against the parameter's declared constraints.",
    )


class SearchConfig(_Section):
    strategy: Literal["random", "grid", "optuna"] = Field(
        "random",
        description="random / grid over the candidate grid, or optuna (a seeded study; the transformer is searched "
        "only with optuna).",
    )
    n_iter: int = Field(6, ge=1, description="Candidates tried by random search.")
    cv_folds: int = Field(3, ge=2)
    group_by_source_family: bool = Field(
        False,
        description="Also keep each source family (the 'source' column up to its first '/') in one CV fold, so "
        "folds score on families the model did not train on.",
    )
    optuna: OptunaConfig = Field(default_factory=OptunaConfig)


CLASSICAL_MODELS = ("logreg", "linear_svm", "random_forest", "hist_gb", "complement_nb", "mlp")
ALL_MODELS = (*CLASSICAL_MODELS, "transformer")


def check_models(models: list[str] | tuple[str, ...] | str) -> list[str]:
    """Model names (comma-separated strings allowed), de-duplicated in order; unknown names raise
    :class:`ConfigError` naming the allowed ones."""
    if isinstance(models, str):
        models = [models]
    names: list[str] = []
    for item in models:
        for name in str(item).split(","):
            name = name.strip()
            if name and name not in names:
                names.append(name)
    if not names:
        raise ConfigError(f"models is empty; pass at least one of {list(ALL_MODELS)}")
    unknown = [m for m in names if m not in ALL_MODELS]
    if unknown:
        raise ConfigError(f"unknown model(s) {unknown} in models={names}; allowed: {list(ALL_MODELS)}")
    return names


class DecisionTuningConfig(_Section):
    """Tuning of the critical-error costs (``DecisionConfig``) on held-out predictions at training time."""

    enabled: bool = Field(True, description="Tune the costs at training time (False: argmax labels).")
    source: Literal["auto", "validation", "out_of_fold", "out_of_source"] = Field(
        "auto",
        description="Classical models: 'validation' tunes on the refit model's predictions of the validation split "
        "(the model that will be served), 'out_of_fold' on the CV fold models' predictions; 'out_of_source' on "
        "out-of-fold predictions of CV folds that hold out whole source families (the training data's `source` "
        "up to '/'), so the costs are tuned for prompts unlike the training set (the hyperparameter search then "
        "ranks candidates on those folds too); 'auto' = validation when a validation split is given. The "
        "transformer and the ensemble always use the validation split.",
    )
    cost_grid: list[float] = Field(
        default_factory=lambda: [1.0, 1.5, 2.0, 3.0, 4.0, 6.0, 8.0, 12.0, 20.0],
        description="Values tried for both false_alarm_cost and missed_threat_cost (each >= 1).",
    )

    @field_validator("cost_grid")
    @classmethod
    def _grid_valid(cls, grid: list[float]) -> list[float]:
        if not grid:
            raise ValueError("at least one cost is required")
        bad = [c for c in grid if not c >= 1]
        if bad:
            raise ValueError(f"costs must be >= 1 (1 = as costly as any other mistake); got {bad}")
        return sorted(set(grid))


OBFUSCATIONS = ("base64", "rot13", "leetspeak", "homoglyphs", "spaced_letters")


class AugmentationConfig(_Section):
    """Training-time augmentation: extra obfuscated, wrapped and suffixed copies of training rows.

    Applied to the rows a model is fitted on (each cross-validation fold's training part and the final refit;
    the transformer's training split), never to validation, test, blind or held-out rows. Which rows get a copy,
    and which transform, is a seeded function of the text, so a row gets the same copy in every fold. Label
    policy: an obfuscated harmful request is an obfuscated attack (malicious); a benign or malicious prompt keeps
    its label inside a document or a code comment (indirect injection stays malicious, a pasted benign request
    stays benign: both are taught, so "a document" is no shortcut); a random-token suffix turns a harmful
    request into an adversarial-suffix attack (malicious) and leaves a benign one benign.
    """

    enabled: bool = Field(False, description="Add the augmented copies below to every training part.")
    obfuscate_share: float = Field(
        0.25,
        ge=0,
        le=1,
        description="Share of suspicious and malicious rows that also appear obfuscated (one of `obfuscations`), "
        "labelled malicious.",
    )
    obfuscations: list[str] = Field(
        default_factory=lambda: list(OBFUSCATIONS),
        description="Transforms of prompt_sentinel.transforms used to obfuscate (one drawn per row).",
    )
    surface_share: float = Field(
        0.1,
        ge=0,
        le=1,
        description="Share of rows of every class that also appear with random casing or punctuation noise "
        "(label kept), so odd surface form alone is no attack signal.",
    )
    wrap_share: float = Field(
        0.2,
        ge=0,
        le=1,
        description="Share of benign and malicious rows that also appear inside a benign document (e-mail, notes, "
        "review, table) or a code comment, label kept; counters the 'long = malicious' shortcut too.",
    )
    suffix_share: float = Field(
        0.2,
        ge=0,
        le=1,
        description="Share of suspicious rows that also appear with a random-token adversarial suffix (labelled "
        "malicious), and of benign rows (label kept).",
    )
    crop_share: float = Field(
        0.0,
        ge=0,
        le=1,
        description="Share of rows longer than `crop_min_chars` that also appear cropped to an 80-400 character "
        "window (label kept), so short texts of every class are seen.",
    )
    crop_min_chars: int = Field(600, gt=0, description="Rows at least this long can be cropped.")

    @field_validator("obfuscations")
    @classmethod
    def _known_transforms(cls, names: list[str]) -> list[str]:
        unknown = [n for n in names if n not in TRANSFORMS]
        if unknown:
            raise ValueError(f"unknown transform(s) {unknown}; allowed: {sorted(TRANSFORMS)}")
        if not names:
            raise ValueError("at least one transform is required (set obfuscate_share to 0 to obfuscate nothing)")
        return names


class LengthBalanceConfig(_Section):
    """Length-stratified oversampling of the training rows, against the 'long = malicious' shortcut."""

    enabled: bool = Field(
        False,
        description="Within each length bucket, oversample (seeded duplicates) every class towards the bucket's "
        "largest class, so the class mix no longer depends on length; training parts only, like augmentation.",
    )
    bucket_edges: list[int] = Field(
        default_factory=lambda: [100, 300, 1000, 3000],
        description="Character-length bucket boundaries (ascending).",
    )
    max_factor: float = Field(3.0, ge=1, description="A class grows at most this many times within a bucket.")

    @field_validator("bucket_edges")
    @classmethod
    def _ascending(cls, edges: list[int]) -> list[int]:
        if not edges or edges[0] <= 0 or any(b <= a for a, b in itertools.pairwise(edges)):
            raise ValueError(f"bucket_edges must be positive and strictly ascending, got {edges}")
        return edges


class EnsembleConfig(_Section):
    """Soft-voting ensembles of trained candidates (``sentinel ensemble``, the pipeline's ensemble step)."""

    enabled: bool = Field(
        True,
        description="In the pipeline: when the transformer branch runs, also build an ensemble of it and the "
        "classical candidates, which then competes in selection like any candidate.",
    )
    weight_step: float = Field(
        0.125,
        gt=0,
        le=0.5,
        description="Grid step of the member weights searched on the validation split (each weight is a positive "
        "multiple of it; 1/step must be a whole number).",
    )

    @field_validator("weight_step")
    @classmethod
    def _divides_one(cls, step: float) -> float:
        if abs(round(1 / step) * step - 1) > 1e-9:
            raise ValueError(f"1/weight_step must be a whole number (e.g. 0.25, 0.125, 0.1), got {step}")
        return step


class CalibrationConfig(_Section):
    """Post-hoc probability calibration fitted on the validation split (:mod:`prompt_sentinel.training.calibration`)."""

    method: Literal["auto", "temperature", "isotonic", "sigmoid", "none"] = Field(
        "auto",
        description="auto: temperature scaling for transformers, `classical_method` for scikit-learn models, none "
        "for ensembles (their members are calibrated). Kept only when it lowers the cross-fitted NLL on validation.",
    )
    classical_method: Literal["isotonic", "sigmoid"] = Field(
        "sigmoid", description="What 'auto' fits for scikit-learn models (per-class one-vs-rest, renormalized)."
    )
    folds: int = Field(5, ge=2, description="Cross-fitting folds over the validation rows for the keep-or-drop NLL.")
    min_rows: int = Field(30, ge=2, description="Fewer validation rows than this: no calibration.")


class TrainingConfig(_Section):
    models: list[str] = Field(default_factory=lambda: ["logreg", "linear_svm", "complement_nb"])
    search: SearchConfig = Field(default_factory=SearchConfig)
    decision_tuning: DecisionTuningConfig = Field(default_factory=DecisionTuningConfig)
    ensemble: EnsembleConfig = Field(default_factory=EnsembleConfig)
    augmentation: AugmentationConfig = Field(default_factory=AugmentationConfig)
    length_balance: LengthBalanceConfig = Field(default_factory=LengthBalanceConfig)
    calibration: CalibrationConfig = Field(default_factory=CalibrationConfig)
    param_grids: dict[str, dict[str, list[Any]]] = Field(
        default_factory=dict, description="Per-model search space overriding the built-in one."
    )

    @field_validator("models")
    @classmethod
    def _models_known(cls, models: list[str]) -> list[str]:
        if not models:
            raise ValueError("at least one model is required")
        unknown = [m for m in models if m not in ALL_MODELS]
        if unknown:
            raise ValueError(f"unknown model(s) {unknown}; allowed: {list(ALL_MODELS)}")
        return models


class ControllerConfig(_Section):
    """Adaptive class-weight controller for the transformer loss."""

    enabled: bool = True
    patience: int = Field(2, ge=1)
    alpha_step: float = Field(0.25, gt=0)
    alpha_min: float = Field(0.5, gt=0)
    alpha_max: float = Field(4.0, gt=0)
    target_recall_c2: float = Field(0.95, ge=0, le=1)
    target_precision_c1: float = Field(0.85, ge=0, le=1)
    target_f1_c0: float = Field(0.90, ge=0, le=1)
    max_false_alarm_rate: float = Field(0.02, ge=0, le=1)
    max_missed_threat_rate: float = Field(0.05, ge=0, le=1)


class TransformerConfig(_Section):
    base_model: str = Field("bundled:all-MiniLM-L6-v2", description="HF checkpoint dir, gs:// URI or bundled:")
    max_length: int = Field(128, gt=0)
    epochs: float = Field(2.0, gt=0)
    max_steps: int | None = Field(None, gt=0, description="Stop after this many optimizer steps (smoke runs).")
    batch_size: int = Field(16, gt=0)
    eval_batch_size: int = Field(64, gt=0)
    gradient_accumulation_steps: int = Field(1, ge=1)
    learning_rate: float = Field(5e-5, gt=0)
    weight_decay: float = Field(0.01, ge=0)
    warmup_ratio: float = Field(0.1, ge=0, lt=1)
    scheduler: Literal["linear", "cosine"] = "linear"
    loss: Literal["focal", "weighted_ce"] = "focal"
    focal_gamma: float = Field(3.0, ge=0)
    focal_alpha: list[float] | None = Field(
        default_factory=lambda: [1.0, 1.0, 1.5], description="Per-class alpha; None = all ones."
    )
    eval_every_steps: int | None = Field(None, gt=0, description="Evaluate every N steps; None = each epoch.")
    early_stopping_patience: int = Field(3, ge=1)
    precision: Literal["auto", "bf16", "fp16", "fp32"] = "auto"
    checkpoint_uri: str | None = Field(None, description="gs:// prefix mirroring checkpoints for resume.")
    checkpoint_every_steps: int | None = Field(
        None, gt=0, description="Also checkpoint every N optimizer steps; None = only at each evaluation."
    )
    max_grad_norm: float | None = Field(1.0, gt=0, description="Gradient-norm clipping; None = no clipping.")
    pooling: Literal["cls", "mean"] = Field(
        "cls",
        description="cls: the architecture's own classification head (BERT: its [CLS] pooler); mean: a linear head "
        "on the attention-masked mean of the last hidden states.",
    )
    dropout: float | None = Field(
        None,
        ge=0,
        lt=1,
        description="Dropout of the encoder and the classification head (every *dropout* field the base model's "
        "config has); None = the base model's own.",
    )
    controller: ControllerConfig = Field(default_factory=ControllerConfig)


class GateConfig(_Section):
    min_custom_score: float = Field(0.6, ge=0, le=1)
    min_recall_c2: float = Field(0.85, ge=0, le=1)
    max_false_alarm_rate: float = Field(0.02, ge=0, le=1)
    max_missed_threat_rate: float = Field(0.10, ge=0, le=1)
    max_latency_p95_ms: float = Field(100.0, gt=0)
    significance: float = Field(0.05, gt=0, lt=1)
    champion_test: Literal["mcnemar", "bootstrap"] = "mcnemar"
    max_cv_std: float = Field(
        0.05,
        ge=0,
        description="Largest standard deviation of the custom score across cross-validation folds; applied when an "
        "evaluation carries one (classical search, `--cv K` transformer).",
    )


class EvaluationConfig(_Section):
    bootstrap_samples: int = Field(500, ge=10)
    false_alarm_budget: float = Field(0.01, ge=0, le=1)
    calibration_bins: int = Field(10, ge=2)
    robustness: bool = True
    efficiency: bool = True
    latency_repeats: int = Field(50, ge=5)
    # 500 made the 9 transformed copies 4.8x the shared test set's tokens (83 % of an evaluation's model time);
    # at 100 they are 0.9x, so the robustness suite no longer dominates evaluation (issue 17).
    robustness_max_samples: int = Field(
        100, ge=1, description="Attack prompts (seeded sample) each robustness transform is applied to."
    )
    mistakes_per_cell: int = Field(
        5, ge=0, description="Error analysis: most confident mistakes shown per (true, predicted) confusion cell."
    )
    low_confidence_correct: int = Field(10, ge=0, description="Error analysis: least confident correct predictions.")
    attributions: bool = Field(
        True, description="Token attributions (linear TF-IDF contributions, transformer integrated gradients)."
    )
    attribution_steps: int = Field(32, ge=2, description="Integrated-gradients interpolation steps (transformer).")
    length_buckets: list[int] = Field(
        default_factory=lambda: [100, 300, 1000, 3000],
        description="Error analysis: upper bounds (characters) of the input-length buckets; the last is open.",
    )

    @field_validator("length_buckets")
    @classmethod
    def _increasing(cls, bounds: list[int]) -> list[int]:
        if not bounds or any(b <= 0 for b in bounds) or any(b >= c for b, c in pairwise(bounds)):
            raise ValueError(f"length_buckets must be positive and strictly increasing, got {bounds}")
        return bounds


class RegistryConfig(_Section):
    root: str = Field("sentinel-output/registry", description="Local directory or gs://bucket/prefix.")
    model_name: str = Field("prompt-sentinel", pattern=r"^[a-z0-9][a-z0-9-]{0,62}$")
    cache_dir: str | None = Field(
        None,
        description="Verified local copies of registry versions; None = $PROMPT_SENTINEL_CACHE or "
        "~/.cache/prompt-sentinel.",
    )
    gc_grace_seconds: float = Field(
        3600.0, ge=0, description="`gc` removes unfinished versions only when older than this (in-flight pushes)."
    )
    headline_metrics: list[str] = Field(
        default_factory=lambda: [
            "custom_score",
            "f1_macro",
            "recall_c2",
            "false_alarm_rate",
            "custom_score_external",
            "latency_p95_ms",
        ],
        description="Metric names shown by `registry list` and tagged on MLflow model versions.",
    )


class MlflowConfig(_Section):
    tracking_uri: str | None = Field(None, description="None = sqlite:///<output>/mlflow.db")
    experiment: str = "prompt-sentinel"
    enabled: bool = True


class DecisionConfig(_Section):
    """How class probabilities become a label and an allow / review / block decision.

    The label is the class of least expected cost (:mod:`prompt_sentinel.decision`): every mistake costs 1
    except the two critical ones, so with both costs at 1 the label is the most probable class. Training
    tunes the costs on held-out predictions and stores them with the model; operators may override them.
    """

    block_threshold: float = Field(
        0.5, ge=0, le=1, description="P(malicious) at or above which to block (a malicious label always blocks)."
    )
    review_threshold: float = Field(
        0.5, ge=0, le=1, description="P(non-benign) at or above which to review (a non-benign label always reviews)."
    )
    false_alarm_cost: float = Field(
        1.0, ge=1, description="Cost of labelling a benign prompt malicious, relative to 1 for other mistakes."
    )
    missed_threat_cost: float = Field(
        1.0, ge=1, description="Cost of labelling a malicious prompt benign, relative to 1 for other mistakes."
    )


class ServingConfig(_Section):
    max_instances: int = Field(64, gt=0)
    max_chars: int = Field(20_000, gt=0)
    batch_size: int = Field(32, gt=0)
    batch_max_chars: int = Field(
        32_768,
        gt=0,
        description="Characters per model call: a batch holds at most batch_size texts and at most this many "
        "characters (its first text always goes). Bounds how long one batch runs, and so how long a small request "
        "can wait behind a large one.",
    )
    inference_threads: int = Field(
        1,
        ge=1,
        le=64,
        description="Model calls that may run at once. 1 suits CPU pods: torch already spreads one call over the "
        "pod's cores, and scikit-learn featurizers hold the GIL; measure before raising it.",
    )
    decision: DecisionConfig = Field(default_factory=DecisionConfig)


class InferenceConfig(_Section):
    """How models run at inference time: evaluation, the MLflow pyfunc, ensembles and serving alike.

    ``auto`` picks, per artifact, the fastest backend that passed the parity gate when the artifact was exported
    (recorded in its ``sentinel_model.json``), and torch when a GPU is present. ``SENTINEL_INFERENCE_BACKEND``
    overrides this setting for operators (with a log line).
    """

    backend: Literal["auto", "torch", "onnx", "onnx-int8"] = Field(
        "auto",
        description="auto = fastest backend that passed parity for the artifact (torch on GPU); torch = eager "
        "PyTorch; onnx = ONNX Runtime fp32; onnx-int8 = ONNX Runtime with dynamic int8 weights.",
    )
    threads: int | None = Field(
        None,
        gt=0,
        description="Intra-op threads of ONNX Runtime and torch; None = SENTINEL_TORCH_THREADS, OMP_NUM_THREADS or "
        "the container's CPU limit.",
    )
    export_onnx: bool = Field(
        True, description="At training time, export ONNX (fp32 and int8) and run the parity gate on validation data."
    )
    cache_dir: str | None = Field(
        None,
        description="ONNX exports of featurizer encoders and the on-disk embedding cache; None = "
        "$PROMPT_SENTINEL_CACHE or ~/.cache/prompt-sentinel.",
    )
    embedding_cache: bool = Field(
        True,
        description="Cache sentence embeddings on disk during training, search, benchmarks and evaluation "
        "(keyed by encoder checksum, backend, max_length and text); never used by serving.",
    )


class DeployConfig(_Section):
    mode: Literal["gitops", "apply"] = "gitops"
    namespace: str = "prompt-sentinel"
    environment: Literal["dev", "staging", "prod"] = "dev"
    manifests_dir: str = "manifests"
    ready_timeout_s: int = Field(600, gt=0)
    serving_image: str = "ghcr.io/prompt-sentinel/serving:0.1.0"
    poll_interval_s: float = Field(5.0, gt=0, description="Seconds between Ready checks in apply mode.")
    canary_percent: int = Field(
        10, ge=1, le=100, description="Traffic a new version starts with where the overlay declares a canary."
    )
    git_branch: str | None = Field(
        None,
        description="GitOps mode: also commit the overlay change to this new branch of the repository holding "
        "manifests_dir; '{env}', '{model}' and '{version}' are filled in.",
    )


class PipelineConfig(_Section):
    base_image: str = "python:3.11-slim"
    target_image: str = "ghcr.io/prompt-sentinel/pipeline:0.1.0"
    gpu_image: str = "ghcr.io/prompt-sentinel/trainer-gpu:0.1.0"
    gpu_accelerator: str = Field("nvidia-l4", description="Value of cloud.google.com/gke-accelerator.")
    training_retries: int = Field(2, ge=0)
    mlflow_secret: str | None = Field("mlflow-credentials", description="Secret holding MLFLOW_TRACKING_TOKEN.")


class DriftThresholds(_Section):
    """When one drift signal warns and when it asks for retraining (:mod:`prompt_sentinel.monitoring.drift`).

    A signal fires only when its test is significant (``p < p_value``) *and* its effect size reaches the level:
    with thousands of logged prompts a tiny, harmless shift is always significant.
    """

    p_value: float = Field(0.01, gt=0, lt=1, description="Significance a test must reach before a signal fires.")
    label_psi_warn: float = Field(0.1, gt=0, description="Predicted-label PSI that warns (0.1: a moderate shift).")
    label_psi_retrain: float = Field(0.25, gt=0, description="Predicted-label PSI that asks for retraining.")
    score_psi_warn: float = Field(0.1, gt=0, description="Per-class score PSI (10 reference-quantile bins) that warns.")
    score_psi_retrain: float = Field(0.25, gt=0, description="Per-class score PSI that asks for retraining.")
    length_ks_warn: float = Field(0.15, gt=0, le=1, description="KS statistic of log text length that warns.")
    length_ks_retrain: float = Field(0.3, gt=0, le=1, description="KS statistic of log text length that retrains.")
    oov_increase_warn: float = Field(
        0.1, gt=0, le=1, description="Rise of the mean out-of-vocabulary word rate over the reference's that warns."
    )
    oov_increase_retrain: float = Field(0.2, gt=0, le=1, description="Rise of the mean OOV rate that retrains.")
    unknown_script_warn: float = Field(
        0.05, gt=0, le=1, description="Share of texts written mainly in a script the reference rarely has: warn."
    )
    unknown_script_retrain: float = Field(0.15, gt=0, le=1, description="Unknown-script share that retrains.")
    embedding_mmd_warn: float = Field(
        0.02, gt=0, description="Sentence-embedding MMD² (RBF kernel, median bandwidth) that warns."
    )
    embedding_mmd_retrain: float = Field(0.05, gt=0, description="Embedding MMD² that asks for retraining.")
    feedback_min_labelled: int = Field(
        30, ge=1, description="Reviewer-labelled records needed before live precision/recall can fire a signal."
    )


class MonitoringConfig(_Section):
    """Prediction logging, the training reference, drift detection, feedback labels and the canary verdict."""

    store_text: bool = Field(
        False,
        description="Log the prompt text itself. False: only a salted sha256 and the length (prompts can hold "
        "personal data); the OOV and embedding drift signals and retraining on logged traffic then need text "
        "and are skipped.",
    )
    salt_env: str = Field(
        "SENTINEL_LOG_SALT",
        description="Environment variable holding the salt of logged text hashes (a Kubernetes secret); when unset, "
        "a random per-process salt is used and hashes cannot be joined across processes.",
    )
    log_dir: str | None = Field(
        None, description="Where the predictor appends its prediction log (local folder or gs:// prefix); None: off."
    )
    flush_interval_s: float = Field(2.0, gt=0, description="Seconds between buffered log writes.")
    max_buffered_records: int = Field(
        50_000,
        gt=0,
        description="Records held in memory waiting for a write; beyond it records are dropped and "
        "counted (logging never blocks serving).",
    )
    rotate_records: int = Field(
        20_000, gt=0, description="Records per log file before the writer starts a new, uniquely named file."
    )
    sink_pair_timeout_s: float = Field(
        60.0, gt=0, description="Logger sink: seconds a request event waits for its response event (or the reverse)."
    )
    sink_max_pending: int = Field(
        10_000, gt=0, description="Logger sink: unpaired events held at most; the oldest are dropped and counted."
    )
    reference_rows: int = Field(
        300,
        ge=10,
        description="Training texts sampled (seeded) into the reference's length, vocabulary and embedding summary.",
    )
    embedding_model: str = Field(
        "use-multilingual",
        description="Sentence encoder of the embedding drift signal ('use-multilingual', 'e5-small', a checkpoint "
        "reference) or 'none' to leave the embedding summary out of the reference.",
    )
    embedding_max_chars: int = Field(
        512, gt=0, description="Characters of each text embedded for drift (bounds the encoder's cost)."
    )
    window_records: int = Field(
        2000, gt=0, description="`sentinel monitor`: the most recent records compared with the reference."
    )
    min_window_records: int = Field(
        50, gt=0, description="Fewer records than this: no drift verdict is claimed (the verdict is 'warn')."
    )
    embedding_sample: int = Field(300, ge=10, description="Window records embedded for the embedding signal.")
    permutations: int = Field(200, ge=20, description="Permutations of the embedding MMD test.")
    thresholds: DriftThresholds = Field(default_factory=DriftThresholds)
    canary_min_records: int = Field(
        200, gt=0, description="`sentinel canary evaluate`: records each version needs before a verdict."
    )
    canary_max_decision_shift: float = Field(
        0.05, gt=0, le=1, description="Largest change of the block or review rate the canary may show (absolute)."
    )
    canary_max_latency_ratio: float = Field(1.5, gt=1, description="Largest canary/stable ratio of the p95 latency.")


class SentinelConfig(_Section):
    seed: int = 42
    labels: LabelConfig = Field(default_factory=LabelConfig)
    data: DataConfig = Field(default_factory=DataConfig)
    validation: ValidationConfig = Field(default_factory=ValidationConfig)
    split: SplitConfig = Field(default_factory=SplitConfig)
    featurizer: FeaturizerConfig = Field(default_factory=FeaturizerConfig)
    balance: BalanceConfig = Field(default_factory=BalanceConfig)
    training: TrainingConfig = Field(default_factory=TrainingConfig)
    transformer: TransformerConfig = Field(default_factory=TransformerConfig)
    gates: GateConfig = Field(default_factory=GateConfig)
    evaluation: EvaluationConfig = Field(default_factory=EvaluationConfig)
    registry: RegistryConfig = Field(default_factory=RegistryConfig)
    mlflow: MlflowConfig = Field(default_factory=MlflowConfig)
    serving: ServingConfig = Field(default_factory=ServingConfig)
    inference: InferenceConfig = Field(default_factory=InferenceConfig)
    deploy: DeployConfig = Field(default_factory=DeployConfig)
    pipeline: PipelineConfig = Field(default_factory=PipelineConfig)
    monitoring: MonitoringConfig = Field(default_factory=MonitoringConfig)

    @model_validator(mode="after")
    def _alpha_matches_labels(self) -> SentinelConfig:
        alpha = self.transformer.focal_alpha
        if alpha is not None and len(alpha) != self.labels.num_classes:
            # The default alpha is written for 3 classes; other label sets get uniform weights.
            if alpha == [1.0, 1.0, 1.5]:
                self.transformer.focal_alpha = None
            else:
                raise ValueError(
                    f"transformer.focal_alpha has {len(alpha)} values but labels.names has "
                    f"{self.labels.num_classes} classes"
                )
        return self

    def to_yaml(self) -> str:
        return yaml.safe_dump(json.loads(self.model_dump_json()), sort_keys=False)


DEFAULTS_HEADER = (
    "# Every configuration field with its default: prompt_sentinel.config.SentinelConfig as YAML.\n"
    "# Generated, not edited: `make default-config` rewrites it (a test fails when it drifts from the code).\n"
)


def defaults_yaml() -> str:
    """The text of ``configs/default.yaml``."""
    return DEFAULTS_HEADER + SentinelConfig().to_yaml()


def _format_validation_error(err: ValidationError, origin: str) -> str:
    lines = [f"invalid configuration ({origin}):"]
    for e in err.errors():
        field = ".".join(str(p) for p in e["loc"]) or "<root>"
        value = e.get("input")
        shown = json.dumps(value, default=str) if not isinstance(value, dict) else "{...}"
        if len(shown) > 120:
            shown = shown[:117] + "..."
        lines.append(f"  field '{field}': value {shown} — {e['msg']}")
    return "\n".join(lines)


def parse_override(override: str) -> tuple[list[str], Any]:
    """Parse ``a.b.c=value`` into a key path and a YAML-typed value."""
    if "=" not in override:
        raise ConfigError(f"override {override!r} must look like 'section.field=value'")
    key, raw = override.split("=", 1)
    path = [p for p in key.strip().split(".") if p]
    if not path:
        raise ConfigError(f"override {override!r} has an empty field name")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError as exc:
        raise ConfigError(f"override {override!r}: value is not valid YAML ({exc})") from exc
    return path, value


def apply_overrides(data: dict[str, Any], overrides: list[str] | dict[str, Any] | None) -> dict[str, Any]:
    items = (
        [(k.split("."), v) for k, v in overrides.items()]
        if isinstance(overrides, dict)
        else [parse_override(o) for o in (overrides or [])]
    )
    for path, value in items:
        node = data
        for part in path[:-1]:
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                raise ConfigError(f"override '{'.'.join(path)}': '{part}' is not a section")
            node = child
        node[path[-1]] = value
    return data


def load_config(path: str | Path | None = None, overrides: list[str] | dict[str, Any] | None = None) -> SentinelConfig:
    """Load a YAML config (or the defaults when ``path`` is None) and apply overrides."""
    data: dict[str, Any] = {}
    origin = "defaults"
    if path:
        origin = str(path)
        try:
            raw = storage.read_text(str(path))
        except Exception as exc:
            raise ConfigError(f"cannot read config file {path}: {exc}") from exc
        try:
            loaded = yaml.safe_load(raw) or {}
        except yaml.YAMLError as exc:
            raise ConfigError(f"config file {path} is not valid YAML: {exc}") from exc
        if not isinstance(loaded, dict):
            raise ConfigError(f"config file {path} must hold a mapping at the top level")
        data = loaded
    data = apply_overrides(data, overrides)
    try:
        return SentinelConfig.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(_format_validation_error(exc, origin)) from None


def config_from_json(text: str) -> SentinelConfig:
    """Rebuild a config passed between pipeline steps as JSON."""
    try:
        return SentinelConfig.model_validate_json(text or "{}")
    except ValidationError as exc:
        raise ConfigError(_format_validation_error(exc, "pipeline parameter")) from None
