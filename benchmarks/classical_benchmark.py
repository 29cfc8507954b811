"""Benchmark every classical model: train on prompts_train.csv, score on prompts_test.csv, print a table.

    python benchmarks/classical_benchmark.py [--featurizer tfidf] [--models logreg,linear_svm] [--out results.md]

Each model goes through the real stage (:func:`train_classical`: CV search scored by the custom score, balancing,
refit, skops artifact), is loaded back with :func:`load_model` (checksums verified) and scored on the test set.
Labels follow each artifact's decision rule (critical-error costs tuned on out-of-fold predictions at
training time, as serving applies them); the argmax custom score is shown next to it.
Latency is per prompt: single-prompt ``predict_proba`` calls, median and p95 over ``--latency-samples`` prompts.
Targets for the best model: custom score >= 0.80, recall_c2 >= 0.95, P(0→2) <= 0.01.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
DEFAULT_DATA = REPO.parent / "shared" / "data"
TARGETS = {"custom_score": 0.80, "recall_c2": 0.95, "false_alarm_rate": 0.01}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    from prompt_sentinel.config import CLASSICAL_MODELS

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--featurizer", default="tfidf", choices=["tfidf", "embeddings", "combined"])
    parser.add_argument("--models", default=",".join(CLASSICAL_MODELS), help="comma-separated model names")
    parser.add_argument("--train", default=str(DEFAULT_DATA / "prompts_train.csv"))
    parser.add_argument("--test", default=str(DEFAULT_DATA / "prompts_test.csv"))
    parser.add_argument("--out", default=None, help="also write the markdown table to this file")
    parser.add_argument("--models-dir", default=None, help="keep the trained models here (default: a temp dir)")
    parser.add_argument("--config", default=None, help="YAML config (defaults otherwise)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], help="config override, repeatable")
    parser.add_argument("--latency-samples", type=int, default=100)
    parser.add_argument("--threads", type=int, default=1, help="torch / BLAS threads (the machine is shared)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import torch

    torch.set_num_threads(args.threads)

    from prompt_sentinel.config import load_config
    from prompt_sentinel.data.loading import load_dataset
    from prompt_sentinel.errors import TrainingError
    from prompt_sentinel.metrics import macro_f1, security_score
    from prompt_sentinel.models.loading import load_model
    from prompt_sentinel.training.classical.trainer import train_classical

    cfg = load_config(args.config, [f"featurizer.kind={args.featurizer}", "mlflow.enabled=false", *args.overrides])
    train_df = load_dataset(args.train, cfg)
    test_df = load_dataset(args.test, cfg)
    y_test = test_df["label"].to_numpy()
    texts = test_df["text"].tolist()
    models = [m.strip() for m in args.models.split(",") if m.strip()]
    root = Path(args.models_dir) if args.models_dir else Path(tempfile.mkdtemp(prefix="classical-bench-"))
    rng = np.random.default_rng(cfg.seed)
    latency_texts = [texts[i] for i in rng.choice(len(texts), min(args.latency_samples, len(texts)), replace=False)]

    rows: list[dict] = []
    skipped: list[str] = []
    for name in models:
        print(f"== {name} ({args.featurizer}) on {len(train_df)} training rows", file=sys.stderr, flush=True)
        try:
            result = train_classical(name, train_df, None, cfg, root / f"{name}-{args.featurizer}", progress=True)
        except TrainingError as exc:  # e.g. complement_nb with signed embedding features
            print(f"   skipped: {exc}", file=sys.stderr, flush=True)
            skipped.append(f"{name}: {exc}")
            continue
        model = load_model(result.model_dir)
        started = time.perf_counter()
        proba = model.predict_proba(texts)
        batch_ms = (time.perf_counter() - started) * 1000 / len(texts)
        pred = model.labels_for(proba)  # the artifact's decision rule, as serving applies it
        decision = model.descriptor.decision
        argmax_score = security_score(y_test, proba.argmax(axis=1), cfg.labels.roles, cfg.labels.num_classes)
        model.warmup()
        single = []
        for text in latency_texts:
            t0 = time.perf_counter()
            model.predict_proba([text])
            single.append((time.perf_counter() - t0) * 1000)
        score = security_score(y_test, pred, cfg.labels.roles, cfg.labels.num_classes)
        rows.append(
            {
                "model": name,
                "macro_f1": macro_f1(y_test, pred, cfg.labels.num_classes),
                "custom": score.custom_score,
                "recall_c2": score.recall_c2,
                "precision_c1": score.precision_c1,
                "f1_c0": score.f1_c0,
                "p02": score.false_alarm_rate,
                "p20": score.missed_threat_rate,
                "cv": result.selection_score,
                "argmax_custom": argmax_score.custom_score,
                "costs": f"{decision.false_alarm_cost:g}/{decision.missed_threat_cost:g}",
                "train_s": result.train_seconds,
                "lat_p50": float(np.median(single)),
                "lat_p95": float(np.percentile(single, 95)),
                "batch_ms": batch_ms,
                "params": result.params,
                "balance": result.details["balance"].get("applied"),
                "by_source": by_source(test_df, pred, cfg.labels.names),
            }
        )
        print(f"   custom={score.custom_score:.4f} macro_f1={rows[-1]['macro_f1']:.4f}", file=sys.stderr, flush=True)
        if args.out:  # rewritten after every model, so a long run that is interrupted keeps what it finished
            Path(args.out).write_text(render(rows, args, len(train_df), len(test_df)))

    table = render(rows, args, len(train_df), len(test_df))
    if skipped:
        table += "\n" + "\n".join(f"Skipped {s}" for s in skipped) + "\n"
    print(table)
    if args.out:
        Path(args.out).write_text(table)
    return 0


def render(rows: list[dict], args: argparse.Namespace, n_train: int, n_test: int) -> str:
    lines = [
        f"### Classical models, featurizer `{args.featurizer}` (train {n_train} rows, test {n_test} rows)",
        "",
        "| model | macro F1 | custom | recall_c2 | precision_c1 | f1_c0 | P(0→2) | P(2→0) | custom (argmax) | "
        "costs 0→2/2→0 | CV custom | train s | latency p50 ms | latency p95 ms | batch ms/prompt | balance |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for r in sorted(rows, key=lambda r: -r["custom"]):
        lines.append(
            f"| {r['model']} | {r['macro_f1']:.4f} | {r['custom']:.4f} | {r['recall_c2']:.4f} | "
            f"{r['precision_c1']:.4f} | {r['f1_c0']:.4f} | {r['p02']:.4f} | {r['p20']:.4f} | "
            f"{r['argmax_custom']:.4f} | {r['costs']} | {r['cv']:.4f} | "
            f"{r['train_s']:.1f} | {r['lat_p50']:.2f} | {r['lat_p95']:.2f} | {r['batch_ms']:.2f} | {r['balance']} |"
        )
    if rows:
        best = max(rows, key=lambda r: r["custom"])
        met = {
            "custom_score": best["custom"] >= TARGETS["custom_score"],
            "recall_c2": best["recall_c2"] >= TARGETS["recall_c2"],
            "P(0→2)": best["p02"] <= TARGETS["false_alarm_rate"],
        }
        shown = ", ".join(f"{k} {'met' if ok else 'NOT met'}" for k, ok in met.items())
        lines += ["", f"Best: **{best['model']}** ({best['params']}). Targets: {shown}."]
        lines += ["", f"Where **{best['model']}**'s test predictions go, by source and true label:", ""]
        lines += best["by_source"]
    return "\n".join(lines) + "\n"


def by_source(test_df, pred: np.ndarray, names: list[str]) -> list[str]:
    """Markdown rows: for each (source, true label), how many test prompts were predicted as each label."""
    frame = test_df.assign(predicted=[names[int(p)] for p in pred], true=[names[int(y)] for y in test_df["label"]])
    if "source" not in frame or frame["source"].eq("").all():
        frame["source"] = "(no source column)"
    counts = frame.groupby(["source", "true"])["predicted"].value_counts().unstack(fill_value=0)
    counts = counts.reindex(columns=names, fill_value=0)
    lines = ["| source | true label | n | " + " | ".join(f"→ {n}" for n in names) + " |"]
    lines.append("|---|---|---:|" + "---:|" * len(names))
    for (source, true), row in counts.iterrows():
        lines.append(f"| {source} | {true} | {int(row.sum())} | " + " | ".join(str(int(v)) for v in row) + " |")
    return lines


if __name__ == "__main__":
    raise SystemExit(main())
