"""Out-of-source evaluation: how a model does on prompts from sources it never saw.

In-source test scores reward memorizing a source's style (its templates, its length, its phrasing); users bring
prompts from elsewhere. So the number this module computes is the one the team tunes against:

1. **Folds by source family.** A row's family is its ``source`` up to the first ``/`` (one upstream dataset,
   e.g. ``bipia`` for ``bipia/email``). By default every family is its own fold (leave-one-family-out);
   ``folds=K`` groups the families into K folds of similar size for expensive models, and ``together`` names
   families that are only ever held out together (e.g. every adversarial-suffix family). A family is never on
   both sides of a fold.
2. **Groups respected inside.** Near-duplicate and explicit groups (:func:`prompt_sentinel.data.split.row_groups`)
   are computed over the whole corpus; a training row whose group reaches into the held-out families is dropped
   from that fold's training part (and counted), so no near-copy of a held-out prompt is trained on. The training
   part is split into train and validation like the pipeline's split stage (group-aware, ``split`` ratios).
3. **Trained through the trainer contract.** Each fold's model is trained by a :class:`FoldTrainer` — for one
   model family :class:`ContractFoldTrainer` over :func:`prompt_sentinel.training.base.train_model` — exactly as
   ``sentinel train`` would train it, decision costs included; nothing is re-implemented here.
4. **Pooled.** Every row is predicted once, by the model of the fold that held its family out, under that
   model's own decision rule; the pooled predictions give macro F1, the custom score, recall of the malicious
   class, P(benign → malicious), P(malicious → benign), a per-family table (worst first) and the scores by
   prompt-length bucket (the length shortcut: in the public data attacks are much longer than benign prompts).

Every check that can fail on the data (too few families for the fold count, a class that would vanish from a
fold's training part, too few rows or groups of a class, the trainer's own input checks) runs for every fold
before the first model is trained.
"""

from __future__ import annotations

import io
import itertools
import json
import logging
import re
import shutil
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import pandas as pd

from prompt_sentinel import storage
from prompt_sentinel.config import LabelConfig, MlflowConfig, SentinelConfig
from prompt_sentinel.data.loading import check_labelled_frame
from prompt_sentinel.data.split import frame_groups, split_dataset
from prompt_sentinel.errors import DataError
from prompt_sentinel.evaluation.charts import confusion_png, family_accuracy_png, length_bucket_png
from prompt_sentinel.jsonio import to_json
from prompt_sentinel.metrics import confusion_matrix, macro_f1, score_from_confusion
from prompt_sentinel.models.loading import load_model
from prompt_sentinel.run_layout import (
    GENERALIZATION,
    GENERALIZATION_FOLDS_DIR,
    GENERALIZATION_PREDICTIONS,
    GENERALIZATION_REPORT_HTML,
)
from prompt_sentinel.training import tracking
from prompt_sentinel.training.base import Trainer, TrainingContext, train_model

log = logging.getLogger(__name__)

SCHEMA_VERSION = 1
# Prompt-length buckets (characters) of the report; fixed so reports stay comparable across runs and corpora.
LENGTH_BUCKET_EDGES = (100, 300, 1000, 3000)
CHART_NAMES = ("generalization_families", "generalization_lengths", "generalization_confusion")
MIN_GROUPS_PER_CLASS = 2  # per fold's training part: one for training, one for validation at the least


class GeneralizationError(DataError):
    """The corpus cannot be evaluated out of source as asked (families, classes, groups, fold count)."""


# --- families and folds ---------------------------------------------------------------------------------------


def family_of(source: str) -> str:
    """The source family: ``source`` up to the first ``/`` (``bipia/email`` → ``bipia``)."""
    return str(source).split("/", 1)[0].strip()


def length_bucket_names(edges: Sequence[int] = LENGTH_BUCKET_EDGES) -> list[str]:
    """``['<100', '100-299', ..., '>=3000']`` for ``edges``."""
    names = [f"<{edges[0]}"]
    names += [f"{lo}-{hi - 1}" for lo, hi in itertools.pairwise(edges)]
    return [*names, f">={edges[-1]}"]


def length_buckets(lengths: Sequence[int] | np.ndarray, edges: Sequence[int] = LENGTH_BUCKET_EDGES) -> np.ndarray:
    """The bucket index of each length (0: shorter than ``edges[0]``; ``len(edges)``: at least the last edge)."""
    return np.searchsorted(np.asarray(edges), np.asarray(lengths), side="right")


@dataclass(frozen=True)
class FoldPlan:
    """One out-of-source fold: the families it holds out and the rows on each side."""

    index: int
    families: tuple[str, ...]
    held_out: np.ndarray  # row positions predicted by this fold's model
    training: np.ndarray  # row positions the fold's model is trained (and validated) on
    dropped: int  # rows of other families left out because their group reaches into a held-out family

    def describe(self) -> dict[str, Any]:
        return {
            "fold": self.index,
            "families": list(self.families),
            "held_out_rows": len(self.held_out),
            "training_rows": len(self.training),
            "dropped_rows": self.dropped,
        }


def family_units(families: Sequence[str], together: Sequence[Sequence[str]] = ()) -> dict[str, str]:
    """Map each family to the unit it is held out with: itself, or the first family of its ``together`` list."""
    present = set(families)
    unit = {f: f for f in present}
    for names in together:
        names = [n.strip() for n in names if n.strip()]
        unknown = [n for n in names if n not in present]
        if unknown:
            raise GeneralizationError(
                f"together={list(names)}: famil{'y' if len(unknown) == 1 else 'ies'} {unknown} not in the data; "
                f"families present: {sorted(present)}"
            )
        for name in names:
            unit[name] = unit[names[0]]
    # transitive: a family named in two lists joins both
    for _ in range(len(unit)):
        unit = {f: unit[u] for f, u in unit.items()}
    return unit


def assign_folds(units: dict[str, tuple[int, Counter[int]]], folds: int | None) -> list[list[str]]:
    """Units (name → (rows, rows per class)) into folds: one per unit when ``folds`` is None, else ``folds``
    folds of similar size, biggest unit first into the fold that holds the least of its classes so far (so a
    class is not held out whole by one fold), then the fewest rows; ties in name order. Deterministic."""
    names = sorted(units)
    if folds is None:
        return [[n] for n in names]
    assigned: list[list[str]] = [[] for _ in range(folds)]
    rows = [0] * folds
    per_class: list[Counter[int]] = [Counter() for _ in range(folds)]
    for name in sorted(names, key=lambda n: (-units[n][0], n)):
        size, classes = units[name]
        k = min(
            range(folds),
            key=lambda f: (max((per_class[f][c] / max(classes[c], 1)) for c in classes) if classes else 0, rows[f], f),
        )
        assigned[k].append(name)
        rows[k] += size
        per_class[k].update(classes)
    return [sorted(f) for f in assigned if f]


def plan_folds(
    frame: pd.DataFrame,
    group_keys: Sequence[str],
    folds: int | None = None,
    together: Sequence[Sequence[str]] = (),
) -> list[FoldPlan]:
    """The out-of-source folds of ``frame`` (needs ``source`` and ``label``); see the module docstring."""
    if "source" not in frame.columns:
        raise GeneralizationError("out-of-source evaluation needs a 'source' column naming each row's origin")
    families = [family_of(s) for s in frame["source"].fillna("")]
    if any(not f for f in families):
        blank = [i for i, f in enumerate(families) if not f][:5]
        raise GeneralizationError(
            f"{sum(not f for f in families)} row(s) have an empty source (first at row positions {blank}); every row "
            "needs a source family (e.g. 'bipia/email')"
        )
    unit_of = family_units(families, together)
    labels = frame["label"].to_numpy()
    units: dict[str, tuple[int, Counter[int]]] = {}
    for family, label in zip(families, labels, strict=True):
        rows, classes = units.get(unit_of[family], (0, Counter()))
        classes[int(label)] += 1
        units[unit_of[family]] = (rows + 1, classes)
    if len(units) < 2:
        raise GeneralizationError(
            f"out-of-source evaluation needs at least 2 source families; the data has {sorted(units)}"
        )
    if folds is not None and not 2 <= folds <= len(units):
        raise GeneralizationError(
            f"folds={folds}: the data has {len(units)} famil{'y' if len(units) == 1 else 'ies'} to hold out "
            f"({', '.join(sorted(units))}); use 2..{len(units)} folds, or none for one fold per family"
        )
    keys = np.asarray(list(group_keys), dtype=object)
    if len(keys) != len(frame):
        raise GeneralizationError(f"{len(keys)} group keys for {len(frame)} rows")
    unit_arr = np.asarray([unit_of[f] for f in families], dtype=object)
    plans = []
    for index, members in enumerate(assign_folds(units, folds)):
        held = np.isin(unit_arr, members)
        reaching = np.isin(keys, list(set(keys[held]))) & ~held
        held_families = tuple(sorted({f for f, h in zip(families, held, strict=True) if h}))
        plans.append(
            FoldPlan(index, held_families, np.flatnonzero(held), np.flatnonzero(~held & ~reaching), int(reaching.sum()))
        )
    return plans


def check_fold_classes(
    frame: pd.DataFrame, plans: Sequence[FoldPlan], group_keys: Sequence[str], labels: LabelConfig, min_rows: int
) -> None:
    """Raise :class:`GeneralizationError` naming every fold whose training part lacks a class or has too few rows
    or groups of one (so the failure comes before any training, not after hours of it)."""
    y = frame["label"].to_numpy()
    keys = np.asarray(list(group_keys), dtype=object)
    families = np.asarray([family_of(s) for s in frame["source"].fillna("")], dtype=object)
    problems = []
    for plan in plans:
        for cls, name in enumerate(labels.names):
            rows = plan.training[y[plan.training] == cls]
            n_groups = len(set(keys[rows]))
            if len(rows) < min_rows or n_groups < MIN_GROUPS_PER_CLASS:
                having = sorted(set(families[y == cls]))
                problems.append(
                    f"fold {plan.index} (holding out {', '.join(plan.families)}): {len(rows)} training row(s) in "
                    f"{n_groups} group(s) of class {name!r}; needs >= {min_rows} rows (data.min_rows_per_class) in "
                    f">= {MIN_GROUPS_PER_CLASS} groups. Class {name!r} is in famil"
                    f"{'y' if len(having) == 1 else 'ies'} {having}"
                )
    if problems:
        shown = "\n  ".join(problems[:10]) + (f"\n  ... and {len(problems) - 10} more" if len(problems) > 10 else "")
        raise GeneralizationError(
            f"the corpus cannot be evaluated out of source with {len(plans)} folds:\n  {shown}\n"
            "Add rows of that class from other families, hold such families out together with fewer folds "
            "(--folds), or merge families (--together)."
        )


# --- training the folds -------------------------------------------------------------------------------------


class FoldTrainer(Protocol):
    """Trains one fold's model: checked for every fold first, then fitted fold by fold."""

    name: str

    def check(self, train: pd.DataFrame, validation: pd.DataFrame | None) -> None:
        """Raise a :class:`~prompt_sentinel.errors.SentinelError` for input the trainer cannot use."""

    def fit(self, train: pd.DataFrame, validation: pd.DataFrame | None, out_dir: Path) -> Path:
        """Train on ``train`` (validated on ``validation``) into ``out_dir``; returns the model directory."""


@dataclass
class ContractFoldTrainer:
    """One model family through the trainer contract: a fresh trainer per fold (``make_trainer``), fitted by
    :func:`prompt_sentinel.training.base.train_model` with ``ctx`` (MLflow per fold off unless asked for)."""

    name: str
    make_trainer: Callable[[], Trainer]
    ctx: TrainingContext
    progress: bool = False

    def check(self, train: pd.DataFrame, validation: pd.DataFrame | None) -> None:
        self.make_trainer().check(train, validation)

    def fit(self, train: pd.DataFrame, validation: pd.DataFrame | None, out_dir: Path) -> Path:
        result = train_model(self.make_trainer(), train, validation, self.ctx, out_dir, progress=self.progress)
        return Path(result.model_dir)


def fold_frames(
    frame: pd.DataFrame, plan: FoldPlan, group_keys: Sequence[str], cfg: SentinelConfig
) -> tuple[pd.DataFrame, pd.DataFrame | None]:
    """The fold's train and validation frames: its training rows split group-aware at the ``split`` train :
    validation ratio (no test part: the held-out families are the test)."""
    part = frame.iloc[plan.training].reset_index(drop=True)
    keys = [group_keys[i] for i in plan.training]
    share = cfg.split.validation / (cfg.split.train + cfg.split.validation)
    if share <= 0:
        return part, None
    inner = cfg.model_copy(deep=True)
    inner.split = inner.split.model_copy(update={"train": 1 - share, "validation": share, "test": 0.0})
    sets = split_dataset(part, inner, keys)
    return sets["train"], sets["validation"]


@dataclass
class GeneralizationResult:
    """The pooled report (JSON-ready) and every row's out-of-source prediction."""

    report: dict[str, Any]
    predictions: pd.DataFrame
    fold_models: dict[int, Path] = field(default_factory=dict)  # fold index -> model directory, when kept


def evaluate_generalization(
    data: pd.DataFrame,
    trainer: FoldTrainer,
    cfg: SentinelConfig,
    *,
    folds: int | None = None,
    together: Sequence[Sequence[str]] = (),
    models_dir: str | Path | None = None,
    progress: bool = True,
    data_uri: str | None = None,
) -> GeneralizationResult:
    """Train ``trainer`` once per out-of-source fold of ``data`` and pool the held-out predictions.

    ``data``: a canonical frame (``text, label, source`` and optionally ``group``). ``folds``: None = one fold
    per family, else that many folds. ``models_dir``: write each fold's model to ``<models_dir>/fold-<k>`` and
    list them in the result's ``fold_models`` (:func:`write_generalization` copies them into its output);
    default: a temporary directory, removed afterwards.
    """
    check_labelled_frame(data, cfg.labels, "out-of-source evaluation", GeneralizationError)
    frame = data.reset_index(drop=True)
    started = time.perf_counter()
    group_keys = frame_groups(frame, cfg.split)
    plans = plan_folds(frame, group_keys, folds, together)
    check_fold_classes(frame, plans, group_keys, cfg.labels, cfg.data.min_rows_per_class)
    prepared = [fold_frames(frame, plan, group_keys, cfg) for plan in plans]
    for plan, (train, validation) in zip(plans, prepared, strict=True):
        try:
            trainer.check(train, validation)
        except Exception as exc:
            raise GeneralizationError(
                f"fold {plan.index} (holding out {', '.join(plan.families)}): {trainer.name} cannot train on the "
                f"other families: {exc}"
            ) from exc
    n_classes = cfg.labels.num_classes
    proba = np.zeros((len(frame), n_classes))
    pred = np.zeros(len(frame), dtype=np.int64)
    fold_of = np.full(len(frame), -1, dtype=np.int64)
    fold_records = []
    kept: dict[int, Path] = {}
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(plans), desc=f"out-of-source {trainer.name}", unit="fold")
    with tempfile.TemporaryDirectory(prefix="sentinel-generalization-") as scratch:
        root = Path(models_dir) if models_dir is not None else Path(scratch)
        try:
            for plan, (train, validation) in zip(plans, prepared, strict=True):
                fold_started = time.perf_counter()
                model_dir = trainer.fit(train, validation, root / f"fold-{plan.index}")
                model = load_model(model_dir)
                texts = frame["text"].iloc[plan.held_out].tolist()
                fold_proba = model.predict_proba(texts)
                proba[plan.held_out] = fold_proba
                pred[plan.held_out] = model.labels_for(fold_proba)
                fold_of[plan.held_out] = plan.index
                decision = model.descriptor.decision
                y_fold = frame["label"].to_numpy()[plan.held_out]
                fold_records.append(
                    {
                        **plan.describe(),
                        "train_rows": len(train),
                        "validation_rows": 0 if validation is None else len(validation),
                        "false_alarm_cost": decision.false_alarm_cost,
                        "missed_threat_cost": decision.missed_threat_cost,
                        "accuracy": float(np.mean(pred[plan.held_out] == y_fold)),
                        "seconds": time.perf_counter() - fold_started,
                    }
                )
                if models_dir is not None:
                    kept[plan.index] = Path(model_dir)
                if bar is not None:
                    bar.update(1)
                    bar.set_postfix(held_out="+".join(plan.families)[:30])
        finally:
            if bar is not None:
                bar.close()
    report = pooled_report(frame, proba, pred, fold_of, cfg.labels)
    report.update(
        {
            "schema_version": SCHEMA_VERSION,
            "model": trainer.name,
            "dataset": {"uri": data_uri, "rows": len(frame), "families": len({f for p in plans for f in p.families})},
            "folds": fold_records,
            "fold_mode": "one fold per family" if folds is None else f"{len(plans)} folds of families",
            "together": [list(t) for t in together],
            "grouping": {
                "near_duplicate_jaccard": cfg.split.near_duplicate_jaccard,
                "shingle_words": cfg.split.shingle_words,
                "explicit_groups": "group" in frame.columns,
                "dropped_training_rows": int(sum(p.dropped for p in plans)),
            },
            "seconds": time.perf_counter() - started,
        }
    )
    predictions = pd.DataFrame(
        {
            "id": frame["id"].astype(str) if "id" in frame.columns else [str(i) for i in range(len(frame))],
            "family": [family_of(s) for s in frame["source"]],
            "source": frame["source"].astype(str),
            "chars": frame["text"].str.len(),
            "label": frame["label"].to_numpy(),
            "pred": pred,
            "fold": fold_of,
            **{f"proba_{name}": proba[:, i] for i, name in enumerate(cfg.labels.names)},
        }
    )
    return GeneralizationResult(report, predictions, kept)


# --- the pooled report (pure) ---------------------------------------------------------------------------------


def score_predictions(y: np.ndarray, pred: np.ndarray, labels: LabelConfig) -> dict[str, Any]:
    """Accuracy, macro F1 (over the classes present), the custom score and its parts, the confusion matrix."""
    n = labels.num_classes
    cm = confusion_matrix(y, pred, n)
    score = score_from_confusion(cm, labels.roles)
    present = sorted(set(y.tolist()))
    return {
        "rows": len(y),
        "accuracy": float(np.mean(y == pred)) if len(y) else None,
        # macro F1 over the classes present in these rows (a family or bucket rarely holds all of them)
        "macro_f1": macro_f1(y, pred, n) if len(present) == n else _present_f1(y, pred, present, n),
        "custom_score": score.custom_score,
        "recall_c2": score.recall_c2,
        "precision_c1": score.precision_c1,
        "f1_c0": score.f1_c0,
        "false_alarm_rate": score.false_alarm_rate,
        "missed_threat_rate": score.missed_threat_rate,
        "confusion_matrix": cm.tolist(),
    }


def _present_f1(y: np.ndarray, pred: np.ndarray, present: list[int], n: int) -> float | None:
    if not present:
        return None
    from sklearn.metrics import f1_score

    return float(f1_score(y, pred, labels=present, average="macro", zero_division=0))


def _went(cm: np.ndarray, labels: LabelConfig) -> dict[str, dict[str, int]]:
    return {
        labels.names[t]: {labels.names[p]: int(c) for p, c in enumerate(cm[t]) if c}
        for t in range(labels.num_classes)
        if cm[t].any()
    }


def family_table(frame: pd.DataFrame, pred: np.ndarray, labels: LabelConfig) -> list[dict[str, Any]]:
    """Per source family: rows, labels present, accuracy, critical errors, where its prompts went; worst first."""
    families = np.asarray([family_of(s) for s in frame["source"].fillna("")], dtype=object)
    y = frame["label"].to_numpy()
    benign, malicious = labels.roles.benign, labels.roles.malicious
    critical = benign is not None and malicious is not None
    rows = []
    for family in sorted(set(families)):
        mask = families == family
        cm = confusion_matrix(y[mask], pred[mask], labels.num_classes)
        rows.append(
            {
                "family": family,
                "rows": int(mask.sum()),
                "labels": {labels.names[c]: int(n) for c, n in enumerate(cm.sum(axis=1)) if n},
                "accuracy": float(np.trace(cm) / mask.sum()),
                "false_alarms": int(cm[benign, malicious]) if critical else 0,
                "missed_threats": int(cm[malicious, benign]) if critical else 0,
                "recall": {
                    labels.names[c]: float(cm[c, c] / cm[c].sum()) for c in range(labels.num_classes) if cm[c].sum()
                },
                "predicted": _went(cm, labels),
            }
        )
    return sorted(rows, key=lambda r: (r["accuracy"], -(r["false_alarms"] + r["missed_threats"]), -r["rows"]))


def length_table(
    frame: pd.DataFrame, pred: np.ndarray, labels: LabelConfig, edges: Sequence[int] = LENGTH_BUCKET_EDGES
) -> list[dict[str, Any]]:
    """Scores by prompt length (characters of the text as given), shortest bucket first; empty buckets kept."""
    buckets = length_buckets(frame["text"].str.len().to_numpy(), edges)
    y = frame["label"].to_numpy()
    out = []
    for index, name in enumerate(length_bucket_names(edges)):
        mask = buckets == index
        counts = np.bincount(y[mask], minlength=labels.num_classes)
        entry: dict[str, Any] = {"bucket": name, "rows": int(mask.sum())}
        entry["labels"] = {labels.names[c]: int(n) for c, n in enumerate(counts) if n}
        if mask.any():
            rates = score_predictions(y[mask], pred[mask], labels)
            rates.pop("confusion_matrix")
            rates.pop("rows")
            entry.update(rates)
        out.append(entry)
    return out


def pooled_report(
    frame: pd.DataFrame, proba: np.ndarray, pred: np.ndarray, fold_of: np.ndarray, labels: LabelConfig
) -> dict[str, Any]:
    """Pooled scores, the per-family table and the length buckets of out-of-source predictions."""
    y = frame["label"].to_numpy()
    pooled = score_predictions(y, pred, labels)
    families = family_table(frame, pred, labels)
    return {
        "labels": labels.names,
        "roles": labels.roles.as_dict(),
        "pooled": pooled,
        # headline keys, flat (MLflow, benchmark tables)
        "f1_macro": pooled["macro_f1"],
        "custom_score": pooled["custom_score"],
        "recall_c2": pooled["recall_c2"],
        "false_alarm_rate": pooled["false_alarm_rate"],
        "missed_threat_rate": pooled["missed_threat_rate"],
        "accuracy": pooled["accuracy"],
        "mean_family_accuracy": float(np.mean([f["accuracy"] for f in families])) if families else None,
        "families": families,
        "length_buckets": length_table(frame, pred, labels),
        "unpredicted_rows": int((fold_of < 0).sum()),
        "mean_confidence": float(proba.max(axis=1).mean()) if len(proba) else None,
    }


HEADLINE = ("f1_macro", "custom_score", "recall_c2", "false_alarm_rate", "missed_threat_rate", "accuracy")


# --- outputs ---------------------------------------------------------------------------------------------------


def generalization_charts(report: dict[str, Any]) -> dict[str, bytes]:
    """The report's PNGs: accuracy per held-out family, scores by length bucket, the pooled confusion matrix."""
    name = report.get("model", "model")
    return {
        "generalization_families": family_accuracy_png(report["families"], f"{name}: out-of-source accuracy"),
        "generalization_lengths": length_bucket_png(report["length_buckets"], f"{name}: by prompt length"),
        "generalization_confusion": confusion_png(
            report["pooled"]["confusion_matrix"], report["labels"], f"{name}: out of source (pooled)"
        ),
    }


SECTION_TEMPLATE = """
<section class="generalization"><h2>Out of source: {{ r.model }}</h2>
<p>{{ r.dataset.rows }} prompts from {{ r.dataset.families }} source families; {{ r.fold_mode }}
({{ r.folds|length }} fold models, each scored on the families it never saw, under its own decision rule).
{{ r.grouping.dropped_training_rows }} training rows left out because their near-duplicate or template group reached
into a held-out family.</p>
<table><tr>{% for k in headline %}<th>{{ k }}</th>{% endfor %}</tr>
<tr>{% for k in headline %}<td>{{ fmt(r[k]) }}</td>{% endfor %}</tr></table>
{% for title, uri in charts %}<img alt="{{ title }}" src="{{ uri }}">{% endfor %}
<h3>By source family (worst first)</h3>
<table><tr><th>family</th><th>rows</th><th>labels</th><th>accuracy</th><th>false alarms</th>
<th>missed threats</th><th>true → predicted</th></tr>
{% for f in r.families %}<tr><td>{{ f.family }}</td><td>{{ f.rows }}</td>
<td>{{ f.labels.items()|map('join', ' ')|join(', ') }}</td><td>{{ fmt(f.accuracy) }}</td>
<td>{{ f.false_alarms }}</td><td>{{ f.missed_threats }}</td><td>{{ went(f) }}</td></tr>{% endfor %}</table>
<h3>By prompt length (characters)</h3>
<table><tr><th>length</th><th>rows</th><th>labels</th><th>accuracy</th><th>macro F1</th><th>custom score</th>
<th>P(benign → malicious)</th><th>P(malicious → benign)</th></tr>
{% for b in r.length_buckets %}<tr><td>{{ b.bucket }}</td><td>{{ b.rows }}</td>
<td>{{ b.labels.items()|map('join', ' ')|join(', ') }}</td><td>{{ fmt(b.accuracy) }}</td><td>{{ fmt(b.macro_f1) }}</td>
<td>{{ fmt(b.custom_score) }}</td><td>{{ fmt(b.false_alarm_rate) }}</td><td>{{ fmt(b.missed_threat_rate) }}</td></tr>
{% endfor %}</table>
<h3>Folds</h3>
<table><tr><th>fold</th><th>held out</th><th>held-out rows</th><th>train</th><th>validation</th><th>dropped</th>
<th>costs (false alarm / missed threat)</th><th>accuracy</th><th>seconds</th></tr>
{% for f in r.folds %}<tr><td>{{ f.fold }}</td><td>{{ f.families|join(', ') }}</td><td>{{ f.held_out_rows }}</td>
<td>{{ f.train_rows }}</td><td>{{ f.validation_rows }}</td><td>{{ f.dropped_rows }}</td>
<td>{{ f.false_alarm_cost }} / {{ f.missed_threat_cost }}</td><td>{{ fmt(f.accuracy) }}</td>
<td>{{ fmt(f.seconds) }}</td></tr>{% endfor %}</table>
</section>
"""

PAGE_TEMPLATE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Prompt Sentinel out-of-source evaluation</title>
<style>
body{font-family:system-ui,sans-serif;margin:2em;max-width:1200px;color:#222}
table{border-collapse:collapse;margin:0.5em 0 1.5em}td,th{border:1px solid #ccc;padding:3px 8px;font-size:13px}
th{background:#f3f3f3}img{max-width:100%;margin:0.3em}section{border-top:2px solid #ddd;margin-top:2em}
</style></head><body><h1>Prompt Sentinel out-of-source evaluation</h1>
{{ section }}
</body></html>
"""


def _fmt(value: Any) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, float):
        return f"{value:.4f}" if abs(value) < 1000 else f"{value:.1f}"
    return str(value)


def render_section(report: dict[str, Any], charts: dict[str, bytes] | None = None) -> str:
    """The report's HTML section (autoescaped: prompts and source names come from data)."""
    import jinja2

    from prompt_sentinel.evaluation.charts import data_uri

    env = jinja2.Environment(autoescape=True, undefined=jinja2.ChainableUndefined)
    shown = charts if charts is not None else generalization_charts(report)

    def went(row: dict[str, Any]) -> str:
        return "; ".join(
            f"{true}: " + ", ".join(f"{p} {n}" for p, n in to.items()) for true, to in row["predicted"].items()
        )

    return env.from_string(SECTION_TEMPLATE).render(
        r=report,
        headline=HEADLINE,
        charts=[(name, data_uri(png)) for name, png in shown.items()],
        fmt=_fmt,
        went=went,
    )


def render_page(report: dict[str, Any], charts: dict[str, bytes] | None = None) -> str:
    """A self-contained HTML page holding :func:`render_section`."""
    import jinja2
    from markupsafe import Markup

    env = jinja2.Environment(autoescape=True)
    return env.from_string(PAGE_TEMPLATE).render(section=Markup(render_section(report, charts)))


def write_generalization(result: GeneralizationResult, out_dir: str | Path) -> str:
    """Write the predictions, charts, HTML page and, last, ``generalization.json`` into ``out_dir`` (all or
    nothing locally; in order on gs://)."""
    charts = generalization_charts(result.report)
    buf = io.StringIO()
    result.predictions.to_csv(buf, index=False, lineterminator="\n")
    files: dict[str, bytes] = {
        GENERALIZATION_PREDICTIONS: buf.getvalue().encode("utf-8"),
        **{f"{name}.png": png for name, png in charts.items()},
        GENERALIZATION_REPORT_HTML: render_page(result.report, charts).encode("utf-8"),
        GENERALIZATION: to_json(result.report).encode("utf-8"),
    }
    out = str(out_dir)
    if storage.is_gcs(out):
        for name, payload in files.items():
            storage.write_bytes(storage.join(out, name), payload)
        return out
    _check_replaceable(Path(out), {*files, GENERALIZATION_FOLDS_DIR})
    with storage.atomic_output_dir(out) as tmp:
        for name, payload in files.items():
            (tmp / name).write_bytes(payload)
        for fold, model_dir in result.fold_models.items():  # kept fold models are copied in with the report
            shutil.copytree(model_dir, tmp / GENERALIZATION_FOLDS_DIR / f"fold-{fold}")
    return out


def _check_replaceable(out: Path, ours: set[str]) -> None:
    """The output directory is replaced as a whole: refuse a file, or a directory holding anything but an earlier
    report's files, so a mistaken ``--out`` never wipes unrelated data."""
    if not out.exists():
        return
    if not out.is_dir():
        raise GeneralizationError(f"output {out} exists and is not a directory")
    foreign = sorted(p.name for p in out.iterdir() if p.name not in ours)
    if foreign:
        shown = ", ".join(foreign[:5]) + (" ..." if len(foreign) > 5 else "")
        raise GeneralizationError(
            f"output directory {out} already holds other files ({shown}); it would be replaced as a whole, so "
            "choose a new or empty directory"
        )


def read_generalization(directory: str | Path) -> dict[str, Any]:
    """``generalization.json`` of an output directory (local or gs://)."""
    return json.loads(storage.read_text(storage.join(str(directory), GENERALIZATION)))


_MLFLOW_UNSAFE = re.compile(r"[^\w\-. /]")


def mlflow_metrics(report: dict[str, Any]) -> dict[str, float]:
    """Flat metrics for MLflow: the pooled headline, per-family accuracy and per-length-bucket scores (names
    reduced to the characters MLflow accepts: ``length.lt100.accuracy``, ``family.bipia.accuracy``)."""

    def safe(name: str) -> str:
        return _MLFLOW_UNSAFE.sub("_", name.replace(">=", "ge").replace("<", "lt"))

    metrics: dict[str, float] = {k: report[k] for k in HEADLINE if isinstance(report.get(k), int | float)}
    if isinstance(report.get("mean_family_accuracy"), float):
        metrics["mean_family_accuracy"] = report["mean_family_accuracy"]
    for family in report["families"]:
        metrics[safe(f"family.{family['family']}.accuracy")] = family["accuracy"]
    for bucket in report["length_buckets"]:
        for key in ("accuracy", "macro_f1"):
            if isinstance(bucket.get(key), float):
                metrics[safe(f"length.{bucket['bucket']}.{key}")] = bucket[key]
    return metrics


def log_to_mlflow(
    report: dict[str, Any], out_dir: str | Path | None, settings: MlflowConfig, tracking_dir: str | Path
) -> str | None:
    """One MLflow run ``generalization-<model>``: fold settings as params, :func:`mlflow_metrics` (prefixed
    ``oos_``), and the output directory's files as artifacts. Returns the run id (None when tracking is off)."""
    tags = {"kind": "generalization", "model_type": report.get("model"), "git_commit": tracking.git_commit()}
    with tracking.start_run(settings, f"generalization-{report.get('model')}", tracking_dir, tags) as run:
        if run is None:
            return None
        dataset = report.get("dataset") or {}
        tracking.log_params(
            {
                "model": report.get("model"),
                "fold_mode": report.get("fold_mode"),
                "folds": len(report.get("folds") or []),
                "rows": dataset.get("rows"),
                "families": dataset.get("families"),
                "dataset_uri": dataset.get("uri"),
            }
        )
        tracking.log_metrics(mlflow_metrics(report), prefix="oos_")
        if out_dir is not None and not storage.is_gcs(str(out_dir)):
            tracking.log_artifact_dir(out_dir, artifact_path="generalization")
        return str(run.info.run_id)
