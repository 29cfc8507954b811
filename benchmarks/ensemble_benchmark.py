"""Soft-voting ensemble of a classical model and the fine-tuned transformer, scored on the shared test set.

Uses the transformer benchmark's split of ``prompts_train.csv`` (85 % train / 15 % validation, near-duplicate
groups kept together): the classical candidates are trained on the same training part (or passed in with
``--classical``), the ensemble's members, weights and decision costs are tuned on the validation part, and
``prompts_test.csv`` is only used for the table. Every row applies the artifact's own stored decision rule; the
argmax score is shown beside it.

    python benchmarks/transformer_benchmark.py --epochs 3 --learning-rate 1e-4 --out /tmp/tr
    python benchmarks/ensemble_benchmark.py --transformer /tmp/tr/model --out /tmp/ens
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import tempfile
from pathlib import Path

import numpy as np
from transformer_benchmark import (
    DEFAULT_DATA,
    SCORE_COLUMNS,
    TARGETS,
    fmt,
    latency_ms,
    print_table,
    score_columns,
    stratified_head,
)

SPLIT = ["split.train=0.85", "split.validation=0.15", "split.test=0.0"]  # as in transformer_benchmark.py


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", type=Path, default=DEFAULT_DATA, help="holds prompts_train/test.csv")
    parser.add_argument("--transformer", type=Path, required=True, help="model dir from transformer_benchmark.py")
    parser.add_argument(
        "--classical", type=Path, action="append", default=[], help="a trained classical model dir (repeatable)"
    )
    parser.add_argument(
        "--classical-models", default="logreg", help="classical models to train when no --classical (comma-separated)"
    )
    parser.add_argument("--featurizer", default="combined", help="featurizer of the trained classical model")
    parser.add_argument("--limit", type=int, default=None, help="use only N training rows (smoke runs)")
    parser.add_argument("--test-limit", type=int, default=None, help="score only N test rows (smoke runs)")
    parser.add_argument("--out", type=Path, default=None, help="output dir (models + ensemble_benchmark.json)")
    parser.add_argument(
        "--set", dest="overrides", action="append", default=[], help="config override section.field=value"
    )
    return parser.parse_args(argv)


def _row(name: str, model, proba: np.ndarray, y_true: np.ndarray, texts: list[str], cfg) -> dict:
    from prompt_sentinel.metrics import security_score

    batched_ms, single_ms = latency_ms(model, texts)
    decision = model.descriptor.decision
    argmax = security_score(y_true, proba.argmax(axis=1), cfg.labels.roles, cfg.labels.num_classes)
    return {
        "model": name,
        **score_columns(y_true, model.labels_for(proba), cfg),
        "custom_score_argmax": argmax.custom_score,
        "costs": f"{decision.false_alarm_cost:g}/{decision.missed_threat_cost:g}",
        "predict_ms_per_prompt": batched_ms,
        "single_prompt_p50_ms": single_ms,
    }


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    from prompt_sentinel.config import load_config
    from prompt_sentinel.data.loading import load_dataset
    from prompt_sentinel.data.split import split_dataset
    from prompt_sentinel.models.loading import load_model
    from prompt_sentinel.training.classical.trainer import train_classical
    from prompt_sentinel.training.ensemble import build_ensemble

    train_csv, test_csv = args.data_dir / "prompts_train.csv", args.data_dir / "prompts_test.csv"
    for path in (train_csv, test_csv, args.transformer):
        if not path.exists():
            print(f"error: {path} not found", file=sys.stderr)
            return 1
    cfg = load_config(None, [*SPLIT, f"featurizer.kind={args.featurizer}", *args.overrides])
    out = args.out or Path(tempfile.mkdtemp(prefix="ensemble-benchmark-"))
    out.mkdir(parents=True, exist_ok=True)
    if not cfg.mlflow.tracking_uri:
        cfg.mlflow.tracking_uri = f"sqlite:///{(out / 'mlflow.db').resolve()}"

    parts = split_dataset(stratified_head(load_dataset(str(train_csv), cfg), args.limit, cfg.seed), cfg)
    train_df, val_df = parts["train"], parts["validation"]
    test_df = stratified_head(load_dataset(str(test_csv), cfg), args.test_limit, cfg.seed)
    print(f"train {len(train_df)} rows, validation {len(val_df)}, test {len(test_df)}; out {out}")

    classical_dirs = list(args.classical)
    if not classical_dirs:
        for name in [m.strip() for m in args.classical_models.split(",") if m.strip()]:
            classical_dirs.append(out / name)
            train_classical(name, train_df, val_df, cfg, classical_dirs[-1], progress=True)
    result = build_ensemble([*classical_dirs, args.transformer], val_df, cfg, out / "ensemble")

    texts, y_true = test_df["text"].tolist(), test_df["label"].to_numpy()
    rows = []
    shown = [(load_model(d).descriptor.model_type, d) for d in classical_dirs] + [("transformer", args.transformer)]
    weights = zip(result.details["members"], result.details["weights"], strict=True)
    members = " + ".join(f"{w:g}·{m}" for m, w in weights)
    for name, path in [*shown, (f"ensemble {members}", out / "ensemble")]:
        model = load_model(path)
        rows.append(_row(name, model, model.predict_proba(texts, batch_size=64), y_true, texts, cfg))
    report = {
        "rows": rows,
        "ensemble_validation_custom_score": result.selection_score,
        "member_validation_custom_score": result.details["member_scores"],
        "train_rows": len(train_df),
        "validation_rows": len(val_df),
        "test_rows": len(test_df),
    }
    (out / "ensemble_benchmark.json").write_text(json.dumps(report, indent=2))

    columns = ["model", "macro F1", "custom", "recall_c2", "precision_c1", "f1_c0", "P(0→2)", "P(2→0)"]
    columns += ["custom (argmax)", "costs 0→2/2→0", "predict ms/prompt", "single p50 ms"]
    metric_keys = [*SCORE_COLUMNS, "custom_score_argmax"]
    print_table(
        columns,
        [
            [
                row["model"],
                *(fmt(row[k]) for k in metric_keys),
                row["costs"],
                fmt(row["predict_ms_per_prompt"], 2),
                fmt(row["single_prompt_p50_ms"], 2),
            ]
            for row in rows
        ],
    )
    print(
        f"\nvalidation custom score: ensemble {result.selection_score:.4f}, candidates "
        + ", ".join(f"{k} {v:.4f}" for k, v in result.details["member_scores"].items())
    )
    for key, (op, target) in TARGETS.items():
        value = rows[-1][key]
        ok = value >= target if op == ">=" else value <= target
        print(f"target {key} {op} {target}: {fmt(value)} {'PASS' if ok else 'MISS'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
