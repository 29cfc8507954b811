"""Random search vs Optuna at equal trial budgets: train on prompts_train.csv, score on prompts_test.csv.

    OMP_NUM_THREADS=1 nice -n 10 python benchmarks/hpo_benchmark.py [--trials 20] [--models logreg,linear_svm]

For every model, three searches through the real trainer (:func:`train_classical`, same grouped 3-fold CV,
same scoring: the custom score of out-of-fold probabilities under tuned decision costs):

* ``grid-random`` — the built-in ``strategy: random`` over the discrete default grid (``n_iter = --trials``;
  a grid smaller than that is searched whole, so its budget can be smaller);
* ``optuna-random`` — Optuna's ``RandomSampler`` over the continuous Optuna ranges, ``--trials`` trials;
* ``optuna-tpe`` — Optuna's seeded ``TPESampler`` + median pruner over the same ranges, ``--trials`` trials;
* ``optuna-tpe-families`` (``--family-folds``) — the same, with source families kept in one CV fold
  (``training.search.group_by_source_family``): the search is scored out of source.

``--searches`` picks a subset (comma-separated names).

Columns: best CV custom score (the search objective), trials run (pruned ones included), wall time of the
whole training (search + refit), and the refit model's custom score / macro F1 on the test set.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DEFAULT_DATA = REPO.parent / "shared" / "data"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", default="logreg,linear_svm")
    parser.add_argument("--trials", type=int, default=20)
    parser.add_argument("--featurizer", default="tfidf", choices=["tfidf", "embeddings", "combined"])
    parser.add_argument("--train", default=str(DEFAULT_DATA / "prompts_train.csv"))
    parser.add_argument("--test", default=str(DEFAULT_DATA / "prompts_test.csv"))
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--out", default=None, help="also write the markdown table to this file")
    parser.add_argument("--searches", default="grid-random,optuna-random,optuna-tpe")
    parser.add_argument("--family-folds", action="store_true", help="add optuna-tpe-families")
    return parser.parse_args(argv)


SEARCHES = {
    "grid-random": ["training.search.strategy=random"],
    "optuna-random": ["training.search.strategy=optuna", "training.search.optuna.sampler=random"],
    "optuna-tpe": ["training.search.strategy=optuna", "training.search.optuna.sampler=tpe"],
    "optuna-tpe-families": [
        "training.search.strategy=optuna",
        "training.search.optuna.sampler=tpe",
        "training.search.group_by_source_family=true",
    ],
}


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import json

    import pandas as pd

    from prompt_sentinel.config import load_config
    from prompt_sentinel.data.loading import load_dataset
    from prompt_sentinel.metrics import macro_f1, security_score
    from prompt_sentinel.models.loading import load_model
    from prompt_sentinel.run_layout import CV_RESULTS, TRAINING_REPORT
    from prompt_sentinel.training.classical.trainer import train_classical

    base = [
        f"featurizer.kind={args.featurizer}",
        "mlflow.enabled=false",
        f"seed={args.seed}",
        f"training.search.n_iter={args.trials}",
        f"training.search.optuna.n_trials={args.trials}",
    ]
    cfg0 = load_config(None, base)
    train = load_dataset(args.train, cfg0)
    test = load_dataset(args.test, cfg0)
    rows = []
    with tempfile.TemporaryDirectory(prefix="hpo-bench-") as tmp:
        for model in args.models.split(","):
            chosen = args.searches.split(",") + (["optuna-tpe-families"] if args.family_folds else [])
            for search, extra in ((name, SEARCHES[name]) for name in chosen):
                cfg = load_config(None, [*base, *extra])
                started = time.perf_counter()
                result = train_classical(model, train, None, cfg, Path(tmp) / f"{model}-{search}", progress=False)
                seconds = time.perf_counter() - started
                report = json.loads((Path(tmp) / f"{model}-{search}" / TRAINING_REPORT).read_text())["search"]
                loaded = load_model(result.model_dir)
                pred = loaded.predict(test["text"].tolist())
                y = test["label"].to_numpy()
                score = security_score(y, pred, cfg.labels.roles, cfg.labels.num_classes)
                study = report.get("optuna") or {}
                rows.append(
                    {
                        "model": model,
                        "search": search,
                        "trials": report["candidates"],
                        "pruned": study.get("pruned", 0),
                        "best_cv": float(
                            pd.read_csv(Path(tmp) / f"{model}-{search}" / CV_RESULTS)["decision_custom_score"].max()
                        ),
                        "wall_s": seconds,
                        "test_custom": score.custom_score,
                        "test_f1": macro_f1(y, pred, cfg.labels.num_classes),
                        "best_params": json.dumps(report["best_params"]),
                    }
                )
                print(rows[-1], flush=True)
    header = "| model | search | trials (pruned) | best CV custom score | wall s | test custom score | test macro F1 |"
    lines = [header, "|---|---|---:|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(
            f"| {r['model']} | {r['search']} | {r['trials']} ({r['pruned']}) | {r['best_cv']:.4f} | "
            f"{r['wall_s']:.1f} | {r['test_custom']:.4f} | {r['test_f1']:.4f} |"
        )
    table = "\n".join(lines)
    print(table)
    if args.out:
        Path(args.out).write_text(table + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
