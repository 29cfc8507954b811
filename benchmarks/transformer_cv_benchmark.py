"""The transformer's K-fold cross-validation on the shared data: mean ± std of every headline metric.

    OMP_NUM_THREADS=1 nice -n 10 python benchmarks/transformer_cv_benchmark.py --folds 3 --steps 40

``prompts_train.csv`` is split 85/15 (stratified, seeded) into train / validation; ``sentinel train --cv K`` runs
(:func:`prompt_sentinel.stages.train.run` with ``cv=K``): K grouped folds of the training part, each fine-tuned for
``--steps`` optimizer steps (early stopping and cost tuning on the validation part) and scored on its held-out
fold, then the final model on all of it, scored on ``prompts_test.csv``. On CPU keep K and the steps small.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DATA = REPO.parent / "shared" / "data"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--folds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--max-length", type=int, default=128)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--base-model", default="bundled:all-MiniLM-L6-v2")
    args = parser.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import torch
    from sklearn.model_selection import train_test_split

    from prompt_sentinel.config import load_config
    from prompt_sentinel.data.loading import load_dataset
    from prompt_sentinel.metrics import macro_f1, security_score
    from prompt_sentinel.models.loading import load_model
    from prompt_sentinel.stages import train as train_stage

    torch.set_num_threads(args.threads)
    cfg = load_config(
        None,
        [
            "mlflow.enabled=false",
            f"transformer.max_steps={args.steps}",
            f"transformer.batch_size={args.batch_size}",
            f"transformer.max_length={args.max_length}",
            f"transformer.eval_every_steps={max(args.steps // 2, 1)}",
            f"transformer.base_model={args.base_model}",
        ],
    )
    df = load_dataset(str(DATA / "prompts_train.csv"), cfg)
    test = load_dataset(str(DATA / "prompts_test.csv"), cfg)
    train, val = train_test_split(df, test_size=0.15, stratify=df["label"], random_state=cfg.seed)
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="cv-bench-") as tmp:
        result = train_stage.run(
            "transformer", train.reset_index(drop=True), val.reset_index(drop=True), cfg, Path(tmp) / "m", cv=args.folds
        )
        model = load_model(result.model_dir)
        pred = model.predict(test["text"].tolist())
    wall = time.perf_counter() - started
    y = test["label"].to_numpy()
    score = security_score(y, pred, cfg.labels.roles, cfg.labels.num_classes)
    summary = result.details["cross_validation"]
    print(json.dumps(summary["per_fold"], indent=1))
    print(f"| metric | {args.folds}-fold mean ± std (held-out folds) |")
    print("|---|---:|")
    for metric, stats in summary["metrics"].items():
        print(f"| {metric} | {stats['mean']:.4f} ± {stats['std']:.4f} |")
    print(
        f"\nfinal model on prompts_test.csv: custom score {score.custom_score:.4f}, macro F1 "
        f"{macro_f1(y, pred, cfg.labels.num_classes):.4f}; wall {wall:.0f} s "
        f"({args.folds} folds + final, {args.steps} steps each, batch {args.batch_size}, max_length {args.max_length})"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
