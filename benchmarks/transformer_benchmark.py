"""Fine-tune the bundled MiniLM on the shared training set and score it on the shared test set.

The validation set for early stopping and the adaptive class-weight controller is carved out of
``prompts_train.csv`` with the project's group-aware stratified split (near-duplicates never straddle it);
``prompts_test.csv`` is only used for the final table. Columns match the classical benchmark (macro F1, custom
score, recall_c2, precision_c1, f1_c0, P(0→2), P(2→0), train time, predict latency per prompt) plus training
samples/s, and, on CUDA, the precision used and peak GPU memory.

Targets (printed as PASS/MISS, never asserted): custom score ≥ 0.85, recall_c2 ≥ 0.97, P(0→2) ≤ 0.01.

    python benchmarks/transformer_benchmark.py                         # 2 epochs, max_length 128 (CPU: slow)
    python benchmarks/transformer_benchmark.py --limit 200 --test-limit 200 --epochs 1   # quick check
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DATA = REPO_ROOT.parent / "shared" / "data"
TARGETS = {"custom_score": (">=", 0.85), "recall_c2": (">=", 0.97), "false_alarm_rate": ("<=", 0.01)}
SINGLE_LATENCY_PROMPTS = 100


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", type=Path, default=DEFAULT_DATA, help="holds prompts_train/test.csv")
    parser.add_argument("--epochs", type=float, default=2.0, help="training epochs (fractions allowed)")
    parser.add_argument("--max-length", type=int, default=128, help="tokens per prompt (truncation)")
    parser.add_argument("--batch-size", type=int, default=16, help="training batch size")
    parser.add_argument("--learning-rate", type=float, default=None, help="default: the config's")
    parser.add_argument("--limit", type=int, default=None, help="use only N training rows (stratified)")
    parser.add_argument("--test-limit", type=int, default=None, help="score only N test rows (stratified)")
    parser.add_argument("--base-model", default="bundled:all-MiniLM-L6-v2", help="checkpoint to fine-tune")
    parser.add_argument("--out", type=Path, default=None, help="output dir (model + benchmark.json)")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: CPU limit)")
    parser.add_argument(
        "--set", dest="overrides", action="append", default=[], help="config override section.field=value"
    )
    parser.add_argument("--no-progress", action="store_true", help="hide the training progress bar")
    return parser.parse_args(argv)


def stratified_head(df: pd.DataFrame, n: int | None, seed: int) -> pd.DataFrame:
    """``n`` rows keeping the class proportions (all rows when n is None or larger than the frame)."""
    if n is None or n >= len(df):
        return df
    shuffled = df.sample(frac=1.0, random_state=seed)
    quota = (shuffled["label"].value_counts(normalize=True) * n).round().clip(lower=1).astype(int)
    keep = shuffled.groupby("label").cumcount() < shuffled["label"].map(quota)
    return shuffled[keep].reset_index(drop=True)


def latency_ms(model, texts: list[str]) -> tuple[float, float]:
    """(batched ms per prompt, single-prompt p50 ms)."""
    model.warmup()
    started = time.perf_counter()
    model.predict_proba(texts, batch_size=64)
    batched = (time.perf_counter() - started) * 1000 / max(len(texts), 1)
    singles = []
    for text in texts[:SINGLE_LATENCY_PROMPTS]:
        t0 = time.perf_counter()
        model.predict_proba([text])
        singles.append((time.perf_counter() - t0) * 1000)
    return batched, statistics.median(singles) if singles else float("nan")


SCORE_COLUMNS = (
    "macro_f1",
    "custom_score",
    "recall_c2",
    "precision_c1",
    "f1_c0",
    "false_alarm_rate",
    "missed_threat_rate",
)


def score_columns(y_true: np.ndarray, y_pred: np.ndarray, cfg) -> dict:
    """The benchmark tables' metric columns (shared by the transformer and ensemble benchmarks)."""
    from prompt_sentinel.metrics import macro_f1, security_score

    n = cfg.labels.num_classes
    score = security_score(y_true, y_pred, cfg.labels.roles, n)
    return {
        "macro_f1": macro_f1(y_true, y_pred, n),
        "custom_score": score.custom_score,
        "recall_c2": score.recall_c2,
        "precision_c1": score.precision_c1,
        "f1_c0": score.f1_c0,
        "false_alarm_rate": score.false_alarm_rate,
        "missed_threat_rate": score.missed_threat_rate,
    }


def _row(rule: str, y_true: np.ndarray, y_pred: np.ndarray, cfg) -> dict:
    return {"model": "transformer (MiniLM-L6)", "rule": rule, **score_columns(y_true, y_pred, cfg)}


def fmt(value: float | None, digits: int = 4) -> str:
    return "n/a" if value is None or (isinstance(value, float) and np.isnan(value)) else f"{value:.{digits}f}"


def print_table(columns: list[str], rows: list[list[str]]) -> None:
    """A Markdown table (what the closing notes and the README quote)."""
    print()
    print("| " + " | ".join(columns) + " |")
    print("|" + "---|" * len(columns))
    for row in rows:
        print("| " + " | ".join(row) + " |")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    import torch

    from prompt_sentinel.config import load_config
    from prompt_sentinel.data.loading import load_dataset
    from prompt_sentinel.data.split import split_dataset
    from prompt_sentinel.models.loading import load_model
    from prompt_sentinel.training.transformer.trainer import train_transformer

    train_csv, test_csv = args.data_dir / "prompts_train.csv", args.data_dir / "prompts_test.csv"
    for path in (train_csv, test_csv):
        if not path.is_file():
            print(f"error: {path} not found (use --data-dir)", file=sys.stderr)
            return 1
    if args.threads:
        torch.set_num_threads(args.threads)

    overrides = [
        f"transformer.epochs={args.epochs}",
        f"transformer.max_length={args.max_length}",
        f"transformer.batch_size={args.batch_size}",
        "split.train=0.85",
        "split.validation=0.15",
        "split.test=0.0",
        *([f"transformer.learning_rate={args.learning_rate}"] if args.learning_rate else []),
        *args.overrides,
    ]
    cfg = load_config(None, overrides)
    out = args.out or Path(tempfile.mkdtemp(prefix="transformer-benchmark-"))
    out.mkdir(parents=True, exist_ok=True)
    if not cfg.mlflow.tracking_uri:
        cfg.mlflow.tracking_uri = f"sqlite:///{(out / 'mlflow.db').resolve()}"

    full = stratified_head(load_dataset(str(train_csv), cfg), args.limit, cfg.seed)
    parts = split_dataset(full, cfg)
    train_df, val_df = parts["train"], parts["validation"]
    test_df = stratified_head(load_dataset(str(test_csv), cfg), args.test_limit, cfg.seed)
    print(f"train {len(train_df)} rows, validation {len(val_df)}, test {len(test_df)}; out {out}")

    result = train_transformer(
        train_df, val_df, cfg, out / "model", base_model=args.base_model, progress=not args.no_progress
    )
    model = load_model(out / "model")
    texts, y_true = test_df["text"].tolist(), test_df["label"].to_numpy()
    proba = model.predict_proba(texts, batch_size=64)
    np.save(out / "test_proba.npy", proba)
    decision = model.descriptor.decision
    rules = {  # the artifact's tuned rule is what serving uses; argmax shows what tuning changed
        f"tuned costs {decision.false_alarm_cost:g}/{decision.missed_threat_cost:g}": model.labels_for(proba),
        "argmax": proba.argmax(axis=1),
    }
    rows = [_row(name, y_true, y_pred, cfg) for name, y_pred in rules.items()]
    batched_ms, single_ms = latency_ms(model, texts)
    training = json.loads((out / "model" / "training.json").read_text())

    row = {
        **rows[0],
        "argmax": rows[1],
        "decision": decision.model_dump(),
        "train_seconds": result.train_seconds,
        "predict_ms_per_prompt": batched_ms,
        "single_prompt_p50_ms": single_ms,
        "samples_per_second": result.details["samples_per_second"],
        "device": result.details["device"],
        "precision": result.details["precision"],
        "peak_gpu_memory_mb": training.get("peak_gpu_memory_mb"),
        "best_step": result.details["best_step"],
        "global_step": result.details["global_step"],
        "stopped_early": result.details["stopped_early"],
        "final_alpha": result.details["final_alpha"],
        "best_validation_custom_score": result.selection_score,
        "epochs": args.epochs,
        "max_length": args.max_length,
        "batch_size": args.batch_size,
        "train_rows": len(train_df),
        "test_rows": len(test_df),
        "torch_threads": torch.get_num_threads(),
    }
    (out / "benchmark.json").write_text(json.dumps(row, indent=2))

    columns = ["model", "label rule", "macro F1", "custom", "recall_c2", "precision_c1", "f1_c0", "P(0→2)", "P(2→0)"]
    columns += ["train s", "predict ms/prompt", "single p50 ms", "samples/s"]
    print_table(
        columns,
        [
            [
                "transformer (MiniLM-L6)",
                shown["rule"],
                *(fmt(shown[k]) for k in SCORE_COLUMNS),
                fmt(row["train_seconds"], 1),
                fmt(batched_ms, 2),
                fmt(single_ms, 2),
                fmt(row["samples_per_second"], 1),
            ]
            for shown in rows
        ],
    )
    print(
        f"\ndevice {row['device']}, precision {row['precision']}, torch threads {row['torch_threads']}, "
        f"peak GPU memory {fmt(row['peak_gpu_memory_mb'], 0)} MB, best step {row['best_step']}/"
        f"{row['global_step']}, final alpha {row['final_alpha']}"
    )
    for key, (op, target) in TARGETS.items():
        value = row[key]
        ok = value is not None and (value >= target if op == ">=" else value <= target)
        print(f"target {key} {op} {target}: {fmt(value)} {'PASS' if ok else 'MISS'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
