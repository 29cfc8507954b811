"""Fine-tune a transformer (``AutoModelForSequenceClassification``) into a Prompt Sentinel artifact.

A compact torch training loop rather than HF ``Trainer``, so focal loss, the adaptive class-weight controller
and exact resume stay visible in one place:

* dynamic padding (each batch padded to its longest row), ``max_length`` truncation, gradient accumulation,
  AdamW (no decay on biases / LayerNorm) with warmup + linear or cosine decay, seeded init and data order;
* focal loss or class-weighted cross-entropy whose class weights the :class:`AlphaController` adjusts after
  each evaluation;
* evaluation on the validation set every epoch (or ``eval_every_steps``) with the shared security custom
  score; the best-scoring weights are kept, and training stops after ``early_stopping_patience`` evaluations
  without improvement;
* CUDA with bf16 (or fp16 + loss scaling) autocast when available, CPU fp32 otherwise;
* a checkpoint after each evaluation (and every ``checkpoint_every_steps``) in a working dir beside the output,
  optionally mirrored to ``checkpoint_uri``: a restarted (preempted) step resumes from it. Data order comes
  from a generator seeded per epoch and RNG states are restored, so a resumed run replays the same batches.

Every bad input (unusable base model, label-count mismatch, ``max_length`` beyond the model's limit, empty
data) raises :class:`TrainingError` before any training starts (``TransformerTrainer.check``). The artifact —
weights as safetensors, tokenizer, JSON reports, descriptor, checksums last — is written by the trainer contract's
shared sequence (:func:`prompt_sentinel.training.base.train_model`).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import math
import os
import random
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from sklearn.metrics import confusion_matrix

from prompt_sentinel.config import (
    DecisionTuningConfig,
    InferenceConfig,
    LabelConfig,
    SentinelConfig,
    TransformerConfig,
)
from prompt_sentinel.decision import CostTuning, tune_costs
from prompt_sentinel.errors import TrainingError
from prompt_sentinel.inference.backends import cpu_limit
from prompt_sentinel.inference.parity import PARAMS_KEY
from prompt_sentinel.metrics import macro_f1, score_from_confusion
from prompt_sentinel.models.base import ModelDescriptor
from prompt_sentinel.models.transformer import effective_max_length, length_buckets, quiet_transformers
from prompt_sentinel.run_layout import ALPHA_TRAJECTORY, METRICS_HISTORY, ONNX_DIR, SAFETENSORS_WEIGHTS, TRAINING_ARGS
from prompt_sentinel.training import tracking
from prompt_sentinel.training.base import Fitted, TrainingContext, TrainResult, labelled_texts, train_model
from prompt_sentinel.training.transformer.checkpoints import CheckpointStore, resolve_checkpoint
from prompt_sentinel.training.transformer.controller import AlphaController
from prompt_sentinel.training.transformer.losses import build_loss, initial_alpha
from prompt_sentinel.training.transformer.onnx_export import export_classifier

log = logging.getLogger(__name__)

TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "vocab.txt",
    "vocab.json",
    "spiece.model",
    "sentencepiece.bpe.model",
    "tokenizer.model",
)
# Written into MLflow next to the model: what a runtime needs to load this artifact.
PIP_REQUIREMENTS = ("prompt-sentinel", "torch", "transformers", "safetensors", "tokenizers", "numpy", "onnxruntime")
STATE_VERSION = 1


# ---------------------------------------------------------------------------------------------------------
# input checks (all before any training)


def _prepare_frame(df: pd.DataFrame | None, name: str, labels: LabelConfig) -> tuple[list[str], np.ndarray]:
    if df is None or len(df) == 0:
        raise TrainingError(
            f"the {name} set is {'missing' if df is None else 'empty'}; transformer training needs labelled "
            f"{name} rows (the validation set drives early stopping and the class-weight controller)"
        )
    return labelled_texts(df, f"the {name} set", labels)


def inspect_base_model(path: Path, ref: str, settings: TransformerSettings) -> tuple[Any, Any, int]:
    """Check a base checkpoint is usable; returns (config, tokenizer, max_length) or raises TrainingError."""
    from transformers import AutoConfig, AutoTokenizer

    n = settings.labels.num_classes
    if not (path / "config.json").is_file():
        raise TrainingError(
            f"base model {ref} ({path}) has no config.json; expected a Hugging Face checkpoint directory "
            "(config.json, tokenizer files, model.safetensors)"
        )
    if not any((path / f).is_file() for f in TOKENIZER_FILES):
        raise TrainingError(f"base model {ref} ({path}) has no tokenizer files (looked for {list(TOKENIZER_FILES)})")
    if not (path / "model.safetensors").is_file() and not (path / "model.safetensors.index.json").is_file():
        pickled = [p.name for p in path.glob("*.bin")]
        hint = f" (found pickled {pickled}; convert them to safetensors)" if pickled else ""
        raise TrainingError(f"base model {ref} ({path}) has no model.safetensors weights{hint}")
    try:
        config = AutoConfig.from_pretrained(path)
    except Exception as exc:
        raise TrainingError(f"base model {ref}: config.json cannot be read by transformers ({exc})") from exc
    architectures = list(getattr(config, "architectures", None) or [])
    if any(a.endswith("ForSequenceClassification") for a in architectures) and config.num_labels != n:
        raise TrainingError(
            f"base model {ref} is a {architectures[0]} fine-tuned for {config.num_labels} labels, but the config "
            f"has {n} labels {settings.labels.names}; use a checkpoint with {n} labels or a base (encoder) model"
        )
    try:
        tokenizer = AutoTokenizer.from_pretrained(path)
    except Exception as exc:
        raise TrainingError(f"base model {ref}: the tokenizer cannot be loaded ({exc})") from exc
    limit = effective_max_length(tokenizer, config, None)
    if settings.transformer.max_length > limit:
        raise TrainingError(
            f"transformer.max_length={settings.transformer.max_length} exceeds the limit of base model {ref}: "
            f"{limit} tokens (tokenizer.model_max_length / config.max_position_embeddings)"
        )
    return config, tokenizer, settings.transformer.max_length


# ---------------------------------------------------------------------------------------------------------
# data


class _Encoded(torch.utils.data.Dataset):
    def __init__(self, encoded: dict[str, list[list[int]]], labels: np.ndarray) -> None:
        self.encoded = encoded
        self.labels = labels

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> dict[str, Any]:
        return {**{k: v[i] for k, v in self.encoded.items()}, "labels": int(self.labels[i])}


class _Collator:
    """Dynamic padding: each batch is padded to its own longest row."""

    def __init__(self, tokenizer) -> None:
        self.tokenizer = tokenizer

    def __call__(self, rows: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        labels = torch.tensor([r["labels"] for r in rows], dtype=torch.long)
        features = [{k: v for k, v in r.items() if k != "labels"} for r in rows]
        batch = dict(self.tokenizer.pad(features, padding=True, return_tensors="pt"))
        batch["labels"] = labels
        return batch


def epoch_batches(n: int, batch_size: int, seed: int, epoch: int) -> list[list[int]]:
    """The shuffled batches of one epoch: a pure function of (seed, epoch), so a resumed run replays them."""
    generator = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
    order = torch.randperm(n, generator=generator).tolist()
    return [order[i : i + batch_size] for i in range(0, n, batch_size)]


def _loader(dataset, batches: list[list[int]], collate: _Collator, pin: bool) -> torch.utils.data.DataLoader:
    # a private generator: a DataLoader draws its base seed when iterated, and drawing it from the global RNG
    # would shift the dropout masks of a resumed run away from those of an uninterrupted one
    return torch.utils.data.DataLoader(
        dataset, batch_sampler=batches, collate_fn=collate, pin_memory=pin, generator=torch.Generator()
    )


# ---------------------------------------------------------------------------------------------------------
# device, precision, optimizer


def _select_device() -> torch.device:
    if torch.cuda.is_available():
        device = torch.device("cuda")
        log.info("training on CUDA: %s", torch.cuda.get_device_name(device))
        return device
    log.info("CUDA is not available: training on CPU (%d torch threads); expect it to be slow", torch.get_num_threads())
    return torch.device("cpu")


def _resolve_precision(requested: str, device: torch.device) -> tuple[str, torch.dtype | None]:
    if device.type != "cuda":
        if requested in ("bf16", "fp16"):
            log.warning("transformer.precision=%s needs CUDA; training in fp32 on CPU", requested)
        return "fp32", None
    bf16_ok = torch.cuda.is_bf16_supported()
    if requested == "auto":
        requested = "bf16" if bf16_ok else "fp16"
    if requested == "bf16" and not bf16_ok:
        log.warning("this GPU does not support bf16; using fp16 autocast with loss scaling")
        requested = "fp16"
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(requested)
    log.info("mixed precision: %s", requested)
    return requested, dtype


def _autocast(device: torch.device, dtype: torch.dtype | None):
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


def _optimizer(model: torch.nn.Module, lr: float, weight_decay: float) -> torch.optim.Optimizer:
    decay, no_decay = [], []
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        # biases and normalization weights are not regularized (standard BERT fine-tuning practice)
        (no_decay if param.ndim < 2 or "LayerNorm" in name or "norm" in name.lower() else decay).append(param)
    groups = [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=lr)


def _scheduler(optimizer: torch.optim.Optimizer, kind: str, warmup: int, total: int):
    from transformers import get_cosine_schedule_with_warmup, get_linear_schedule_with_warmup

    build = get_cosine_schedule_with_warmup if kind == "cosine" else get_linear_schedule_with_warmup
    return build(optimizer, num_warmup_steps=warmup, num_training_steps=total)


def _seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)  # also seeds every CUDA device


def _frame_sha256(texts: list[str], labels: np.ndarray) -> str:
    digest = hashlib.sha256()
    for text, label in zip(texts, labels.tolist(), strict=True):
        digest.update(f"{label}\t{text}\n".encode())
    return digest.hexdigest()


# ---------------------------------------------------------------------------------------------------------
# evaluation


def _evaluate(
    model, dataset: _Encoded, collate: _Collator, settings: TransformerSettings, device: torch.device, dtype
) -> tuple[dict[str, Any], np.ndarray]:
    """Validation metrics (custom score first) and the argmax confusion matrix (what the controller watches).

    With ``training.decision_tuning.enabled`` the critical-error costs are tuned on these validation
    probabilities (:func:`prompt_sentinel.decision.tune_costs`): ``decision_custom_score`` is the score under
    the tuned rule, and the costs are what the artifact stores if this evaluation is the best one.
    """
    n = settings.labels.num_classes
    lengths = [len(ids) for ids in dataset.encoded["input_ids"]]
    proba = np.zeros((len(dataset), n), dtype=np.float64)
    loss_sum = 0.0
    model.eval()
    with torch.inference_mode():
        for idx in length_buckets(lengths, settings.transformer.eval_batch_size):
            batch = collate([dataset[i] for i in idx])
            batch = {k: v.to(device) for k, v in batch.items()}
            labels = batch.pop("labels")
            with _autocast(device, dtype):
                logits = model(**batch).logits.float()
            loss_sum += float(torch.nn.functional.cross_entropy(logits, labels, reduction="sum"))
            proba[idx] = torch.softmax(logits, dim=-1).cpu().numpy()
    model.train()
    preds = proba.argmax(axis=1)
    cm = confusion_matrix(dataset.labels, preds, labels=list(range(n)))
    score = score_from_confusion(cm, settings.labels.roles)
    metrics = {
        "custom_score": score.custom_score,
        "macro_f1": macro_f1(dataset.labels, preds, n),
        **{k: v for k, v in score.as_dict().items() if k != "custom_score"},
        "val_loss": loss_sum / len(dataset),
        "accuracy": float((preds == dataset.labels).mean()),
    }
    tuning_cfg = settings.decision_tuning
    if tuning_cfg.enabled:
        tuned = tune_costs(dataset.labels, proba, settings.labels.roles, tuning_cfg.cost_grid, source="validation")
        metrics.update(
            decision_custom_score=tuned.custom_score,
            false_alarm_cost=tuned.false_alarm_cost,
            missed_threat_cost=tuned.missed_threat_cost,
        )
    else:
        metrics.update(decision_custom_score=score.custom_score, false_alarm_cost=1.0, missed_threat_cost=1.0)
    return metrics, cm


# ---------------------------------------------------------------------------------------------------------
# MLflow


def _log_eval_metrics(run: Any, entry: dict[str, Any]) -> None:
    if run is None:
        return
    tracking.log_metrics({k: v for k, v in entry.items() if k not in ("alpha", "confusion_matrix")}, step=entry["step"])
    # per-class weights as separate series, so the controller's trajectory is visible in the MLflow UI
    tracking.log_metrics({f"alpha_{i}": a for i, a in enumerate(entry["alpha"])}, step=entry["step"])


# ---------------------------------------------------------------------------------------------------------
# planning: every check and decision before any training


@dataclass
class _Plan:
    """Inputs, checked and tokenized, and the step budget derived from them."""

    ref: str
    base_path: Path
    tokenizer: Any
    max_length: int
    train_set: _Encoded
    val_set: _Encoded
    alpha0: list[float]
    device: torch.device
    precision: str
    amp_dtype: torch.dtype | None
    steps_per_epoch: int
    total_steps: int
    n_epochs: int
    warmup_steps: int
    fingerprint: str
    val_texts: list[str] = field(default_factory=list)  # normalized; the ONNX parity gate runs on them


def _plan(
    train_df: pd.DataFrame, val_df: pd.DataFrame | None, settings: TransformerSettings, base_model: str | None
) -> _Plan:
    tcfg, n_classes = settings.transformer, settings.labels.num_classes
    train_texts, train_labels = _prepare_frame(train_df, "training", settings.labels)
    val_texts, val_labels = _prepare_frame(val_df, "validation", settings.labels)
    absent = sorted(set(range(n_classes)) - set(train_labels.tolist()))
    if absent:
        log.warning("classes %s have no training rows", [settings.labels.names[i] for i in absent])
    ref = base_model or tcfg.base_model
    base_path = resolve_checkpoint(ref)
    _, tokenizer, max_length = inspect_base_model(base_path, ref, settings)
    alpha0 = initial_alpha(tcfg.focal_alpha, n_classes)
    # built here only to validate their settings now, not after the model has loaded
    build_loss(tcfg.loss, tcfg.focal_gamma)
    AlphaController(alpha0, settings.labels, tcfg.controller)

    limit = cpu_limit()
    if torch.get_num_threads() > limit:  # torch counts the node's cores, not the pod's CPU limit
        torch.set_num_threads(limit)
    device = _select_device()
    precision, amp_dtype = _resolve_precision(tcfg.precision, device)

    train_set = _Encoded(dict(tokenizer(train_texts, truncation=True, max_length=max_length)), train_labels)
    val_set = _Encoded(dict(tokenizer(val_texts, truncation=True, max_length=max_length)), val_labels)
    micro_per_epoch = math.ceil(len(train_set) / tcfg.batch_size)
    steps_per_epoch = math.ceil(micro_per_epoch / tcfg.gradient_accumulation_steps)
    total_steps = tcfg.max_steps or max(1, math.ceil(tcfg.epochs * steps_per_epoch))
    # a checkpoint resumes only the run it came from: same settings, base model and data
    fingerprint = hashlib.sha256(
        json.dumps(
            {
                "transformer": tcfg.model_dump(exclude={"checkpoint_uri"}),
                "labels": settings.labels.model_dump(),
                "seed": settings.seed,
                "base_model": ref,
                "train": _frame_sha256(train_texts, train_labels),
                "val": _frame_sha256(val_texts, val_labels),
                "version": STATE_VERSION,
            },
            sort_keys=True,
        ).encode()
    ).hexdigest()
    return _Plan(
        ref=ref,
        base_path=base_path,
        tokenizer=tokenizer,
        max_length=max_length,
        train_set=train_set,
        val_set=val_set,
        alpha0=alpha0,
        device=device,
        precision=precision,
        amp_dtype=amp_dtype,
        steps_per_epoch=steps_per_epoch,
        total_steps=total_steps,
        n_epochs=math.ceil(total_steps / steps_per_epoch),
        warmup_steps=round(tcfg.warmup_ratio * total_steps),
        fingerprint=fingerprint,
        val_texts=val_texts,
    )


def _load_model(plan: _Plan, settings: TransformerSettings):
    from transformers import AutoModelForSequenceClassification

    _seed_everything(settings.seed)  # before loading: a fresh classification head is randomly initialized
    try:
        with quiet_transformers():  # the "classifier.* newly initialized" report is expected here
            model = AutoModelForSequenceClassification.from_pretrained(
                plan.base_path,
                num_labels=settings.labels.num_classes,
                id2label=settings.labels.id2label,
                label2id=settings.labels.label2id,
                use_safetensors=True,
            )
    except Exception as exc:
        raise TrainingError(f"base model {plan.ref}: cannot be loaded for sequence classification ({exc})") from exc
    model.config.problem_type = "single_label_classification"
    return model.to(plan.device)


def _initial_state(fingerprint: str) -> dict[str, Any]:
    """The JSON-able counters of a run; saved in every checkpoint and restored on resume."""
    return {
        "version": STATE_VERSION,
        "fingerprint": fingerprint,
        "global_step": 0,
        "next_epoch": 0,  # where the next optimizer step's batches come from
        "next_window": 0,
        "best_score": -math.inf,
        "best_step": 0,
        "best_epoch": 0.0,
        "best_metrics": {},
        "evals_without_improvement": 0,
        "stopped_early": False,
        "samples_seen": 0,
        "running_loss": 0.0,  # train loss summed since the last evaluation
        "running_count": 0,
        "step_seconds": 0.0,
        "train_seconds": 0.0,
        "metrics_history": [],
        "resumed_from": [],
    }


# ---------------------------------------------------------------------------------------------------------
# one training attempt


class _Session:
    """Model, optimizer, schedule, controller and counters of one (possibly resumed) training attempt."""

    def __init__(self, plan: _Plan, settings: TransformerSettings, store: CheckpointStore) -> None:
        self.plan, self.settings, self.tcfg, self.store = plan, settings, settings.transformer, store
        self.model = _load_model(plan, settings)
        self.optimizer = _optimizer(self.model, self.tcfg.learning_rate, self.tcfg.weight_decay)
        self.scheduler = _scheduler(self.optimizer, self.tcfg.scheduler, plan.warmup_steps, plan.total_steps)
        self.scaler = torch.amp.GradScaler("cuda") if plan.precision == "fp16" else None
        self.controller = AlphaController(plan.alpha0, settings.labels, self.tcfg.controller)
        self.loss_fn = build_loss(self.tcfg.loss, self.tcfg.focal_gamma)
        self.collate = _Collator(plan.tokenizer)
        self.state = _initial_state(plan.fingerprint)
        self.best_state: dict[str, torch.Tensor] | None = None
        self.resumed_from_step = 0
        self._alpha_tensor = self._alpha()
        self._run: Any = None
        self._bar: Any = None
        self._postfix: dict[str, str] = {}
        self._started = time.perf_counter()
        self._seconds_before = 0.0

    def _alpha(self) -> torch.Tensor:
        return torch.tensor(self.controller.alpha, dtype=torch.float32, device=self.plan.device)

    # -- resume ---------------------------------------------------------------------------------------------
    def resume(self) -> None:
        """Continue from the newest checkpoint of this same run, if there is one."""
        ckpt = self.store.find()
        if ckpt is None:
            return
        saved = self.store.read_state(ckpt)
        if saved.get("fingerprint") != self.plan.fingerprint:
            log.warning("ignoring checkpoint %s: it belongs to a different config, base model or dataset", ckpt)
            self.store.discard()
            return
        self.best_state = self.store.load_into(ckpt, self.model, self.optimizer, self.plan.device)
        self.scheduler.load_state_dict(saved["scheduler"])
        if self.scaler is not None and saved.get("scaler"):
            self.scaler.load_state_dict(saved["scaler"])
        self.controller.load_state_dict(saved["controller"])
        self._alpha_tensor = self._alpha()
        self.state.update({k: v for k, v in saved.items() if k in self.state})
        self.state["resumed_from"].append(self.state["global_step"])
        self.resumed_from_step = self.state["global_step"]
        log.info("resuming from checkpoint %s at step %d/%d", ckpt, self.state["global_step"], self.plan.total_steps)

    # -- evaluation and checkpoints -------------------------------------------------------------------------
    def evaluate(self, epoch_progress: float) -> None:
        state = self.state
        metrics, cm = _evaluate(
            self.model, self.plan.val_set, self.collate, self.settings, self.plan.device, self.plan.amp_dtype
        )
        alpha_used = list(self.controller.alpha)
        actions = self.controller.observe(cm.tolist(), step=state["global_step"], epoch=epoch_progress)
        entry = {
            "step": state["global_step"],
            "epoch": round(epoch_progress, 4),
            "train_loss": state["running_loss"] / max(state["running_count"], 1),
            "learning_rate": float(self.scheduler.get_last_lr()[0]),
            **metrics,
            "alpha": alpha_used,  # the weights the loss used since the previous evaluation
            "confusion_matrix": cm.tolist(),
        }
        state["metrics_history"].append(entry)
        state["running_loss"], state["running_count"] = 0.0, 0
        if actions:
            self._alpha_tensor = self._alpha()
            log.info("controller raised class weights: %s -> alpha %s", actions, self.controller.alpha)
        # The score the artifact will have in use: under its tuned decision rule (argmax when tuning is off).
        if metrics["decision_custom_score"] > state["best_score"]:
            state.update(
                best_score=metrics["decision_custom_score"],
                best_step=state["global_step"],
                best_epoch=entry["epoch"],
                best_metrics={k: v for k, v in entry.items() if k != "alpha"},
                evals_without_improvement=0,
            )
            # separate CPU copies (no shared storage) so they can be saved as safetensors as-is
            self.best_state = {k: v.detach().to("cpu", copy=True) for k, v in self.model.state_dict().items()}
        else:
            state["evals_without_improvement"] += 1
            if state["evals_without_improvement"] >= self.tcfg.early_stopping_patience:
                state["stopped_early"] = True
                log.info(
                    "early stopping at step %d: no custom-score improvement in %d evaluations",
                    state["global_step"],
                    self.tcfg.early_stopping_patience,
                )
        _log_eval_metrics(self._run, entry)
        log.info(
            "eval at step %d (epoch %.2f): custom score %.4f (tuned rule %.4f), macro F1 %.4f, val loss %.4f, alpha %s",
            entry["step"],
            entry["epoch"],
            metrics["custom_score"],
            metrics["decision_custom_score"],
            metrics["macro_f1"],
            metrics["val_loss"],
            self.controller.alpha,
        )
        self._postfix["score"] = f"{metrics['decision_custom_score']:.4f}"
        if self._bar is not None:
            self._bar.set_postfix(self._postfix)

    def checkpoint(self) -> None:
        self.state["train_seconds"] = self._seconds_before + (time.perf_counter() - self._started)
        payload = {
            **self.state,
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict() if self.scaler is not None else None,
            "controller": self.controller.state_dict(),
        }
        self.store.save(self.model, self.optimizer, payload, self.best_state)

    # -- training -------------------------------------------------------------------------------------------
    def _optimizer_step(self, window: list[list[int]], micro_batches: Iterator[dict[str, torch.Tensor]]) -> float:
        """One optimizer step over an accumulation window of micro-batches; returns the window's loss."""
        device, scaler = self.plan.device, self.scaler
        self.optimizer.zero_grad(set_to_none=True)
        window_rows = sum(len(b) for b in window)
        window_loss = 0.0
        for _ in window:
            batch = {k: v.to(device, non_blocking=True) for k, v in next(micro_batches).items()}
            labels = batch.pop("labels")
            with _autocast(device, self.plan.amp_dtype):
                logits = self.model(**batch).logits
            # weight each micro-batch by its rows so the window's loss is the mean over all its rows
            loss = self.loss_fn(logits, labels, self._alpha_tensor) * (len(labels) / window_rows)
            (scaler.scale(loss) if scaler is not None else loss).backward()
            window_loss += float(loss.detach())
        if scaler is not None:
            scaler.unscale_(self.optimizer)
        if self.tcfg.max_grad_norm is not None:
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.tcfg.max_grad_norm)
        if scaler is not None:
            scaler.step(self.optimizer)
            scaler.update()
        else:
            self.optimizer.step()
        self.scheduler.step()
        return window_loss

    def run(self, progress: bool, step_callback: Callable[[int], None] | None, mlflow_run: Any) -> None:
        """Train until ``total_steps`` or early stopping, evaluating and checkpointing on schedule."""
        plan, state = self.plan, self.state
        self._run = mlflow_run
        self._started, self._seconds_before = time.perf_counter(), state["train_seconds"]
        if progress:
            from tqdm.auto import tqdm

            self._bar = tqdm(total=plan.total_steps, initial=state["global_step"], desc="fine-tuning", unit="step")
        self.model.train()
        try:
            self._loop(step_callback)
        finally:
            if self._bar is not None:
                self._bar.close()
        state["train_seconds"] = self._seconds_before + (time.perf_counter() - self._started)

    def _loop(self, step_callback: Callable[[int], None] | None) -> None:
        plan, tcfg, state = self.plan, self.tcfg, self.state
        if state["global_step"] >= plan.total_steps or state["stopped_early"]:
            return  # resumed from the final checkpoint: only the artifact is left to write
        accum = tcfg.gradient_accumulation_steps
        for epoch in range(state["next_epoch"], plan.n_epochs):
            batches = epoch_batches(len(plan.train_set), tcfg.batch_size, self.settings.seed, epoch)
            windows = [batches[i : i + accum] for i in range(0, len(batches), accum)]
            first = state["next_window"] if epoch == state["next_epoch"] else 0
            remaining = windows[first:]
            pin = plan.device.type == "cuda"
            micro_batches = iter(_loader(plan.train_set, [b for w in remaining for b in w], self.collate, pin))
            for position, window in enumerate(remaining, start=first + 1):
                started = time.perf_counter()
                window_loss = self._optimizer_step(window, micro_batches)
                epoch_end = position == len(windows)
                state["global_step"] += 1
                state["samples_seen"] += sum(len(b) for b in window)
                state["step_seconds"] += time.perf_counter() - started
                state["running_loss"] += window_loss
                state["running_count"] += 1
                state["next_epoch"], state["next_window"] = (epoch + 1, 0) if epoch_end else (epoch, position)
                if self._bar is not None:
                    self._bar.update(1)
                    self._postfix["loss"] = f"{window_loss:.4f}"
                    self._bar.set_postfix(self._postfix, refresh=False)

                step = state["global_step"]
                last = step >= plan.total_steps
                scheduled = (step % tcfg.eval_every_steps == 0) if tcfg.eval_every_steps else epoch_end
                if scheduled or last:
                    self.evaluate(epoch + position / len(windows))
                every = tcfg.checkpoint_every_steps
                # the final step is checkpointed too: a crash while writing the artifact skips retraining
                if scheduled or last or (every is not None and step % every == 0):
                    self.checkpoint()
                if step_callback is not None:
                    step_callback(step)
                if last or state["stopped_early"]:
                    return


# ---------------------------------------------------------------------------------------------------------
# the trainer


@dataclass(frozen=True)
class TransformerSettings:
    """The config sections the transformer trainer needs."""

    labels: LabelConfig
    transformer: TransformerConfig
    decision_tuning: DecisionTuningConfig
    seed: int
    inference: InferenceConfig = field(default_factory=InferenceConfig)  # ONNX export + parity at training time

    @classmethod
    def from_config(cls, cfg: SentinelConfig) -> TransformerSettings:
        return cls(cfg.labels, cfg.transformer, cfg.training.decision_tuning, cfg.seed, cfg.inference)


class TransformerTrainer:
    """Fine-tunes a transformer checkpoint behind the trainer contract (resumable; see the module docstring).

    The validation split is required: it drives early stopping, the class-weight controller and the decision
    costs, which are tuned at every evaluation so the best checkpoint is chosen by the score it will serve with.
    """

    family = "transformer"
    model_type = "transformer"

    def __init__(
        self,
        settings: TransformerSettings,
        base_model: str | None = None,
        step_callback: Callable[[int], None] | None = None,
    ) -> None:
        self.settings = settings
        self.base_model = base_model
        self.step_callback = step_callback
        self._plan: _Plan | None = None

    def run_name(self, out_dir: str) -> str:
        return f"transformer-{out_dir.rsplit('/', 1)[-1]}"

    def tags(self) -> dict[str, Any]:
        return {"base_model": self.base_model or self.settings.transformer.base_model}

    def check(self, train: pd.DataFrame | None, validation: pd.DataFrame | None) -> None:
        self._plan = _plan(train, validation, self.settings, self.base_model)

    def fit(
        self, train: pd.DataFrame | None, validation: pd.DataFrame | None, *, out_dir: str, run: Any, progress: bool
    ) -> Fitted:
        if self._plan is None:
            self.check(train, validation)
        plan, settings = self._plan, self.settings
        assert plan is not None
        store = CheckpointStore(out_dir, settings.transformer.checkpoint_uri)
        session = _Session(plan, settings, store)
        session.resume()
        if run is not None:
            tracking.set_tags({"resumed_from_step": session.resumed_from_step})
            tracking.log_params(settings.transformer.model_dump(mode="json"), prefix="transformer.")
            for entry in session.state["metrics_history"]:  # a resumed run re-logs what came before
                _log_eval_metrics(run, entry)
        session.run(progress, self.step_callback, run)
        if session.best_state is not None:
            session.model.load_state_dict(session.best_state)
        state = session.state
        best = state.get("best_metrics") or {}
        tuning = None
        if settings.decision_tuning.enabled and best:
            tuning = CostTuning(
                false_alarm_cost=float(best.get("false_alarm_cost", 1.0)),
                missed_threat_cost=float(best.get("missed_threat_cost", 1.0)),
                custom_score=float(best.get("decision_custom_score", best.get("custom_score", 0.0))),
                argmax_custom_score=float(best.get("custom_score", 0.0)),
                rows=len(plan.val_set),
                source=f"validation (best checkpoint, step {state['best_step']})",
            )
        training = _training_report(session, settings)

        def write_files(directory: Path, descriptor: ModelDescriptor) -> None:
            with quiet_transformers():
                session.model.save_pretrained(directory)  # writes model.safetensors (the default format)
                plan.tokenizer.save_pretrained(directory)
            if any(directory.glob("*.bin")) or not (directory / SAFETENSORS_WEIGHTS).is_file():
                raise TrainingError(
                    f"{out_dir}: save_pretrained did not write {SAFETENSORS_WEIGHTS}; refusing the artifact"
                )
            if settings.inference.export_onnx:
                _export_onnx(directory, session, descriptor, settings.inference)
            _readable_by_all(directory)

        details = {
            "best_score": float(state["best_score"]),
            "best_metrics": best,
            "best_step": int(state["best_step"]),
            "best_epoch": float(state["best_epoch"]),
            "global_step": int(state["global_step"]),
            "total_steps": plan.total_steps,
            "final_alpha": list(session.controller.alpha),
            "samples_per_second": float(training["samples_per_second"]),
            "device": training["device"],
            "precision": plan.precision,
            "resumed_from_step": session.resumed_from_step,
            "stopped_early": bool(state["stopped_early"]),
            "metrics_history": state["metrics_history"],
            "alpha_trajectory": session.controller.trajectory,
        }
        return Fitted(
            params={"base_model": plan.ref, "loss": settings.transformer.loss, "final_alpha": details["final_alpha"]},
            selection_score=float(state["best_score"]),
            write_files=write_files,
            tuning=tuning,
            validation_metrics=best,
            max_length=plan.max_length,
            training_report=training,
            reports={
                TRAINING_ARGS: _training_args(plan, settings),
                METRICS_HISTORY: state["metrics_history"],
                ALPHA_TRAJECTORY: session.controller.trajectory,
            },
            mlflow_params={
                "base_model": plan.ref,
                "max_length": plan.max_length,
                "train_rows": len(plan.train_set),
                "validation_rows": len(plan.val_set),
                "total_steps": plan.total_steps,
                "device": plan.device.type,
                "precision": plan.precision,
                "seed": settings.seed,
            },
            mlflow_metrics={
                "best_custom_score": state["best_score"],
                "best_step": state["best_step"],
                "samples_per_second": training["samples_per_second"],
                **{f"final_alpha_{i}": a for i, a in enumerate(session.controller.alpha)},
            },
            # The directory is logged as-is instead of through the mlflow.transformers flavor: the flavor
            # re-serializes the model in its own layout, while the registry and serving load exactly this verified
            # directory (descriptor + checksums). Its pip requirements are logged beside it.
            pip_requirements=PIP_REQUIREMENTS,
            details=details,
            after_publish=store.discard,  # the artifact is in place: the checkpoints are no longer needed
        )


def train_transformer(
    train_df: pd.DataFrame,
    val_df: pd.DataFrame | None,
    cfg: SentinelConfig,
    out_dir: str | Path,
    base_model: str | None = None,
    progress: bool = True,
    *,
    step_callback: Callable[[int], None] | None = None,
    tracking_dir: str | Path | None = None,
) -> TrainResult:
    """Fine-tune ``base_model`` (default ``cfg.transformer.base_model``) and write the artifact to ``out_dir``.

    ``train_df`` / ``val_df`` have columns ``text`` and ``label`` (class id). If ``out_dir``'s working directory
    (or ``cfg.transformer.checkpoint_uri``) holds a checkpoint of the same run, training resumes from it.
    ``out_dir`` may be local (written atomically) or gs:// (staged locally, ``checksums.json`` uploaded last).
    ``step_callback(global_step)`` runs after every optimizer step (after that step's checkpoint, if any).
    """
    out = str(out_dir).rstrip("/")
    if not out:
        raise TrainingError("out_dir is empty; pass the directory (or gs:// prefix) to write the model to")
    trainer = TransformerTrainer(TransformerSettings.from_config(cfg), base_model, step_callback)
    return train_model(
        trainer,
        train_df,
        val_df,
        TrainingContext.from_config(cfg),
        out,
        progress=progress,
        tracking_dir=tracking_dir,
    )


# ---------------------------------------------------------------------------------------------------------
# the artifact's reports


def _training_report(session: _Session, settings: TransformerSettings) -> dict[str, Any]:
    plan, state = session.plan, session.state
    device = plan.device
    labels = plan.train_set.labels
    return {
        "model_type": "transformer",
        "base_model": plan.ref,
        "device": str(device) if device.type != "cuda" else torch.cuda.get_device_name(device),
        "precision": plan.precision,
        "step_seconds": state["step_seconds"],
        "fit_seconds": state["train_seconds"],
        "samples_per_second": state["samples_seen"] / state["step_seconds"] if state["step_seconds"] else 0.0,
        "samples_seen": state["samples_seen"],
        "global_step": state["global_step"],
        "total_steps": plan.total_steps,
        "stopped_early": state["stopped_early"],
        "resumed_from_steps": state["resumed_from"],
        "best_step": state["best_step"],
        "best_epoch": state["best_epoch"],
        "best_validation": state["best_metrics"],
        "initial_alpha": plan.alpha0,
        "final_alpha": list(session.controller.alpha),
        "loss": settings.transformer.loss,
        "dataset": {"train_rows": len(plan.train_set), "validation_rows": len(plan.val_set)},
        "class_counts": {name: int((labels == i).sum()) for i, name in enumerate(settings.labels.names)},
        "peak_gpu_memory_mb": torch.cuda.max_memory_allocated() / 2**20 if device.type == "cuda" else None,
        "versions": {"torch": torch.__version__, "transformers": _transformers_version()},
    }


def _training_args(plan: _Plan, settings: TransformerSettings) -> dict[str, Any]:
    return {
        **settings.transformer.model_dump(mode="json"),
        "base_model": plan.ref,
        "resolved_base_model": str(plan.base_path),
        "max_length": plan.max_length,
        "seed": settings.seed,
        "total_steps": plan.total_steps,
        "steps_per_epoch": plan.steps_per_epoch,
        "warmup_steps": plan.warmup_steps,
        "train_rows": len(plan.train_set),
        "validation_rows": len(plan.val_set),
    }


def _transformers_version() -> str:
    import transformers

    return transformers.__version__


def _export_onnx(directory: Path, session: _Session, descriptor: ModelDescriptor, inference: InferenceConfig) -> None:
    """ONNX exports + parity gate on the validation split into ``directory``; a failure only costs the exports."""
    import shutil

    texts = session.plan.val_texts
    try:
        record = export_classifier(
            directory,
            session.model,
            session.plan.tokenizer,
            descriptor,
            texts,
            f"validation split ({len(texts)} rows)",
            inference,
        )
    except Exception as exc:  # the trained model matters more than its export: keep it, say so, serve on torch
        shutil.rmtree(directory / ONNX_DIR, ignore_errors=True)
        log.warning("ONNX export failed (%s: %s); the model will run on torch only", type(exc).__name__, exc)
        return
    descriptor.params[PARAMS_KEY] = record.model_dump(mode="json", exclude_none=True)


def _readable_by_all(directory: Path) -> None:
    """Temp dirs are created 0700 and some writers use 0600; the serving image runs as another user."""
    umask = os.umask(0)
    os.umask(umask)
    directory.chmod(0o755 & ~umask)
    for path in directory.rglob("*"):
        path.chmod((0o755 if path.is_dir() else 0o644) & ~umask)
