"""In-source and out-of-source scores of the classifier families, featurizers and training switches.

    nice -n 10 python benchmarks/generalization_benchmark.py --corpus CORPUS.csv --out /tmp/gen/bench [options]

For every run (training set × featurizer × model × variant):

* **in source**: trained on the whole training set (a group-aware 85/15 train/validation split for the decision
  costs, as the pipeline's split stage makes), scored on ``prompts_test.csv``;
* **out of source**: :func:`prompt_sentinel.stages.generalization.run` on the training set — one model per fold of
  source families, each trained through the trainer contract and scored on the families it never saw, pooled.

Training sets: (a) ``prompts_train.csv`` (``--train``), (b) the assembled corpus (``--corpus``), built with

    sentinel data assemble --recipe configs/corpus/shared_plus_synthetic.yaml --out CORPUS_DIR \\
        --exclude ../shared/data/prompts_test.csv

(decontaminated against ``prompts_test.csv``). Featurizers: ``tfidf``, and ``embeddings`` / ``combined`` of
MiniLM-L6, USE-multilingual and e5-small. Models: ``logreg``, ``linear_svm`` (one fixed hyperparameter each and
2-fold inner CV by default, ``--search``, so a sweep fits the machine; the decision costs are tuned as the trainer
always tunes them). Variants: named sets of config overrides (``--variants``), e.g. ``aug`` (training-time
augmentation), ``gib`` (the gibberish score block), ``oos`` (decision costs tuned out of source).

``--transformer``: the MiniLM fine-tune and its ensemble with a classical model, out of source in ``--transformer-
folds`` (≤ 4) folds of families: one fine-tune per fold serves the transformer alone, the classical member alone
and their ensemble (the ensemble artifact holds both members; each is scored with its own decision rule).

Each text is embedded once per encoder across the whole sweep (an on-disk cache under ``--cache-dir``, ``.npy``
per encoder keyed by sha256 of the text) and each run's result is a JSON file under ``--out``: a rerun skips
finished runs, and ``--report`` only prints the tables.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared" / "data"
ENCODERS = {"minilm": "bundled:all-MiniLM-L6-v2", "use": "use-multilingual", "e5": "e5-small"}
FEATURIZERS = ("tfidf", "embeddings:minilm", "combined:minilm", "embeddings:use", "combined:use", "combined:e5")
# One fixed candidate per model for sweeps (the project's search grids hold these values).
FIXED_SEARCH = {
    "logreg": ["training.param_grids.logreg.C=[5.0]"],
    "linear_svm": ["training.param_grids.linear_svm.C=[0.5]", "training.param_grids.linear_svm.calibration=[sigmoid]"],
}
VARIANTS: dict[str, list[str]] = {
    "base": [],
    "aug": ["training.augmentation.enabled=true"],
    "gib": ["featurizer.gibberish=true"],
    "len": ["training.length_balance.enabled=true"],
    "crop": ["training.augmentation.enabled=true", "training.augmentation.crop_share=0.3"],
    # costs tuned on out-of-fold predictions of 4 folds of whole source families
    "oos": ["training.decision_tuning.source=out_of_source", "training.search.cv_folds=4"],
    "C1": ["training.param_grids.logreg.C=[1.0]", "training.param_grids.linear_svm.C=[0.1]"],
    # the hyperparameter search itself ranks candidates on folds of whole families (and tunes the costs there)
    "oos+search": [
        "training.decision_tuning.source=out_of_source",
        "training.search.cv_folds=4",
        "training.search.strategy=grid",
        "training.param_grids.logreg.C=[0.25,1.0,5.0]",
        "training.param_grids.linear_svm.C=[0.05,0.2,1.0]",
    ],
    "aug+gib": ["training.augmentation.enabled=true", "featurizer.gibberish=true"],
    "aug+gib+oos": [
        "training.augmentation.enabled=true",
        "featurizer.gibberish=true",
        "training.decision_tuning.source=out_of_source",
        "training.search.cv_folds=4",
    ],
    "aug+gib+len": [
        "training.augmentation.enabled=true",
        "featurizer.gibberish=true",
        "training.length_balance.enabled=true",
    ],
}
SUFFIX_FAMILIES = ("garak-gcg", "smoothllm-gcg", "random-suffix")


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


# --- an on-disk embedding cache ------------------------------------------------------------------------------


class DiskEmbeddingCache(dict):
    """The featurization-session cache (``(*encoder parts, text) -> vector``; the parts are ``(fingerprint,
    max_length)`` for most encoders and ``(model dir, backend, max_length)`` for Hugging Face checkpoints) keyed
    by sha256 of the text, loaded from and saved to ``<dir>/emb-<hash of the parts>.npz`` (hashes + vectors)."""

    def __init__(self, directory: Path) -> None:
        super().__init__()
        self.directory = directory
        self.loaded: set[tuple[Any, ...]] = set()
        self.dirty: set[tuple[Any, ...]] = set()

    @staticmethod
    def _digest(text: str) -> bytes:
        return hashlib.sha256(text.encode("utf-8", "surrogatepass")).digest()

    def _file(self, parts: tuple[Any, ...]) -> Path:
        name = hashlib.sha256("\0".join(str(p) for p in parts).encode()).hexdigest()[:16]
        return self.directory / f"emb-{name}.npz"

    def _ensure(self, parts: tuple[Any, ...]) -> None:
        import numpy as np

        if parts in self.loaded:
            return
        self.loaded.add(parts)
        path = self._file(parts)
        if path.is_file():
            data = np.load(path)
            for digest, vector in zip(data["hashes"], data["vectors"], strict=True):
                super().__setitem__((*parts, bytes(digest)), vector)
            log(f"   embedding cache: {len(data['hashes'])} vectors of {str(parts[0])[:40]} loaded")

    def get(self, key: Any, default: Any = None) -> Any:
        *parts, text = key
        self._ensure(tuple(parts))
        return super().get((*parts, self._digest(text)), default)

    def __setitem__(self, key: Any, value: Any) -> None:
        *parts, text = key
        self._ensure(tuple(parts))
        self.dirty.add(tuple(parts))
        super().__setitem__((*parts, self._digest(text)), value)

    def save(self) -> None:
        import numpy as np

        self.directory.mkdir(parents=True, exist_ok=True)
        for parts in sorted(self.dirty, key=str):
            items = [(k[-1], v) for k, v in self.items() if k[:-1] == parts]
            path = self._file(parts)
            tmp = path.with_suffix(".tmp.npz")
            np.savez(
                tmp,
                hashes=np.array([h for h, _ in items], dtype="S32"),
                vectors=np.stack([v for _, v in items]).astype(np.float32),
            )
            tmp.replace(path)
        self.dirty.clear()


# --- one run -----------------------------------------------------------------------------------------------------


def featurizer_overrides(spec: str) -> list[str]:
    kind, _, encoder = spec.partition(":")
    sets = [f"featurizer.kind={kind}"]
    if encoder:
        sets.append(f"featurizer.embedding_model={ENCODERS[encoder]}")
    return sets


def run_name(train_set: str, featurizer: str, model: str, variant: str, folds: int | None) -> str:
    fold_tag = "lofo" if folds is None else f"k{folds}"
    return f"{train_set}__{featurizer.replace(':', '-')}__{model}__{variant}__{fold_tag}"


def in_source_split(frame, cfg):
    """A group-aware train/validation split of the whole training set (no test part: prompts_test.csv is it)."""
    from prompt_sentinel.data.split import split_dataset

    inner = cfg.model_copy(deep=True)
    share = cfg.split.validation / (cfg.split.train + cfg.split.validation)
    inner.split = inner.split.model_copy(update={"train": 1 - share, "validation": share, "test": 0.0})
    sets = split_dataset(frame, inner)
    return sets["train"], sets["validation"]


def score(y, pred, labels) -> dict[str, Any]:
    from prompt_sentinel.evaluation.generalization import score_predictions

    out = score_predictions(y, pred, labels)
    out.pop("confusion_matrix")
    return out


def in_source(fold_trainer, frame, test, cfg, work: Path) -> dict[str, Any]:
    from prompt_sentinel.models.loading import load_model

    started = time.perf_counter()
    train, validation = in_source_split(frame, cfg)
    model_dir = fold_trainer.fit(train, validation, work / "in-source")
    model = load_model(model_dir)
    proba = model.predict_proba(test["text"].tolist())
    pred = model.labels_for(proba)
    result = score(test["label"].to_numpy(), pred, cfg.labels)
    result["seconds"] = time.perf_counter() - started
    result["decision"] = {
        "false_alarm_cost": model.descriptor.decision.false_alarm_cost,
        "missed_threat_cost": model.descriptor.decision.missed_threat_cost,
    }
    return result


def classical_run(args, name, train_set, frame, test, featurizer, model, variant, folds) -> dict[str, Any]:
    import tempfile

    from prompt_sentinel.config import load_config
    from prompt_sentinel.stages import generalization

    sets = [
        "mlflow.enabled=false",
        *featurizer_overrides(featurizer),
        *(FIXED_SEARCH[model] + ["training.search.cv_folds=2"] if args.search == "fixed" else []),
        *VARIANTS[variant],  # last: a variant may set the CV folds too
    ]
    cfg = load_config(None, sets)
    trainer = generalization.fold_trainer(model, cfg)
    out: dict[str, Any] = {"name": name, "train_set": train_set, "featurizer": featurizer, "model": model}
    out.update({"variant": variant, "folds": folds, "overrides": sets, "rows": len(frame)})
    with tempfile.TemporaryDirectory(prefix="gen-bench-") as work:
        log(f"== {name}: in source")
        out["in_source"] = in_source(trainer, frame, test, cfg, Path(work))
        log(f"   in source custom {out['in_source']['custom_score']:.4f} f1 {out['in_source']['macro_f1']:.4f}")
        log(f"== {name}: out of source")
        started = time.perf_counter()
        outcome = generalization.run(
            frame,
            model,
            cfg,
            Path(args.out) / "reports" / name,
            folds=folds,
            together=[list(SUFFIX_FAMILIES)] if args.suffixes_together and train_set == "corpus" else None,
            progress=False,
        )
        out["out_of_source"] = outcome.report
        out["out_of_source_seconds"] = time.perf_counter() - started
    r = outcome.report
    log(f"   out of source custom {r['custom_score']:.4f} f1 {r['f1_macro']:.4f} recall_c2 {r['recall_c2']:.4f}")
    return out


def transformer_run(args, name, train_set, frame, test, member, featurizer) -> dict[str, Any]:
    """MiniLM fine-tune + ``member`` + their ensemble, out of source in ``--transformer-folds`` folds, from one
    fine-tune per fold; in source likewise from one training."""
    import tempfile

    import numpy as np

    from prompt_sentinel.config import load_config
    from prompt_sentinel.evaluation.generalization import pooled_report
    from prompt_sentinel.models.loading import load_model
    from prompt_sentinel.run_layout import ENSEMBLE_MEMBERS_DIR
    from prompt_sentinel.stages import generalization

    sets = [
        "mlflow.enabled=false",
        *featurizer_overrides(featurizer),
        *(FIXED_SEARCH[member] + ["training.search.cv_folds=2"] if args.search == "fixed" else []),
        f"training.models=[{member},transformer]",
        f"transformer.epochs={args.transformer_epochs}",
        f"transformer.max_length={args.transformer_max_length}",
        "transformer.eval_batch_size=128",
        *args.transformer_set,
    ]
    cfg = load_config(None, sets)
    trainer = generalization.fold_trainer("ensemble", cfg)
    out: dict[str, Any] = {"name": name, "train_set": train_set, "featurizer": featurizer, "model": "transformer"}
    out.update({"variant": "ensemble", "folds": args.transformer_folds, "overrides": sets, "rows": len(frame)})
    labels = cfg.labels
    with tempfile.TemporaryDirectory(prefix="gen-bench-tf-") as work:
        log(f"== {name}: in source (ensemble of {member} + transformer)")
        started = time.perf_counter()
        train, validation = in_source_split(frame, cfg)
        ens_dir = trainer.fit(train, validation, Path(work) / "in-source")
        seconds = time.perf_counter() - started
        texts, y = test["text"].tolist(), test["label"].to_numpy()
        out["in_source"] = {}
        for who, directory in (
            ("ensemble", ens_dir),
            ("transformer", ens_dir / ENSEMBLE_MEMBERS_DIR / "transformer"),
            (member, ens_dir / ENSEMBLE_MEMBERS_DIR / member),
        ):
            model = load_model(directory)
            pred = model.labels_for(model.predict_proba(texts))
            out["in_source"][who] = {**score(y, pred, labels), "seconds": seconds}
            log(f"   in source {who}: custom {out['in_source'][who]['custom_score']:.4f}")
        log(f"== {name}: out of source ({args.transformer_folds} folds)")
        started = time.perf_counter()
        outcome = generalization.run(
            frame,
            "ensemble",
            cfg,
            Path(work) / "oos",
            folds=args.transformer_folds,
            keep_models=True,
            progress=False,
        )
        out["out_of_source_seconds"] = time.perf_counter() - started
        predictions = outcome.result.predictions
        fold_root = Path(work) / "oos" / "fold_models"
        frame = frame.reset_index(drop=True)
        out["out_of_source"] = {"ensemble": outcome.report}
        for who in ("transformer", member):
            proba = np.zeros((len(frame), labels.num_classes))
            pred = np.zeros(len(frame), dtype=np.int64)
            for fold in sorted(set(predictions["fold"])):
                rows = np.flatnonzero(predictions["fold"].to_numpy() == fold)
                model = load_model(fold_root / f"fold-{fold}" / ENSEMBLE_MEMBERS_DIR / who)
                proba[rows] = model.predict_proba(frame["text"].iloc[rows].tolist())
                pred[rows] = model.labels_for(proba[rows])
            report = pooled_report(frame, proba, pred, predictions["fold"].to_numpy(), labels)
            report.update({"model": who, "folds": outcome.report["folds"], "fold_mode": outcome.report["fold_mode"]})
            out["out_of_source"][who] = report
    for who, report in out["out_of_source"].items():
        log(f"   out of source {who}: custom {report['custom_score']:.4f} f1 {report['f1_macro']:.4f}")
    return out


# --- tables ----------------------------------------------------------------------------------------------------


def _f(value: Any) -> str:
    return "n/a" if value is None else f"{value:.3f}" if isinstance(value, float) else str(value)


def rows_of(result: dict[str, Any]) -> list[dict[str, Any]]:
    """One table row per model of a result file (a transformer run holds three)."""
    if result["model"] != "transformer":
        return [
            {
                **{k: result[k] for k in ("train_set", "featurizer", "model", "variant", "folds")},
                "in": result["in_source"],
                "oos": result["out_of_source"],
            }
        ]
    return [
        {
            "train_set": result["train_set"],
            "featurizer": "MiniLM fine-tune" if who == "transformer" else result["featurizer"],
            "model": who,
            "variant": "(transformer run)",
            "folds": result["folds"],
            "in": result["in_source"][who],
            "oos": result["out_of_source"][who],
        }
        for who in result["in_source"]
    ]


def render(results: list[dict[str, Any]]) -> str:
    lines = [
        "| training set | featurizer | model | variant | folds | test custom | test macro F1 | OOS macro F1 | "
        "OOS custom | OOS recall_c2 | OOS P(0→2) | OOS P(2→0) |",
        "|---|---|---|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    rows = [row for result in results for row in rows_of(result)]
    rows.sort(key=lambda r: (r["train_set"], r["folds"] or 0, -(r["oos"]["f1_macro"] or 0)))
    for r in rows:
        oos = r["oos"]
        folds = "per family" if r["folds"] is None else str(r["folds"])
        lines.append(
            f"| {r['train_set']} | {r['featurizer']} | {r['model']} | {r['variant']} | {folds} | "
            f"{_f(r['in']['custom_score'])} | {_f(r['in']['macro_f1'])} | {_f(oos['f1_macro'])} | "
            f"{_f(oos['custom_score'])} | {_f(oos['recall_c2'])} | {_f(oos['false_alarm_rate'])} | "
            f"{_f(oos['missed_threat_rate'])} |"
        )
    return "\n".join(lines)


def render_families(report: dict[str, Any], title: str) -> str:
    lines = [
        f"### {title}",
        "",
        "| family | rows | labels | accuracy | false alarms | missed threats | true → predicted |",
        "|---|---:|---|---:|---:|---:|---|",
    ]
    for f in report["families"]:
        labels = ", ".join(f"{k} {v}" for k, v in f["labels"].items())
        went = "; ".join(f"{t}: " + ", ".join(f"{p} {n}" for p, n in to.items()) for t, to in f["predicted"].items())
        lines.append(
            f"| {f['family']} | {f['rows']} | {labels} | {f['accuracy']:.3f} | {f['false_alarms']} | "
            f"{f['missed_threats']} | {went} |"
        )
    lines += [
        "",
        "| length | rows | accuracy | macro F1 | custom | P(0→2) | P(2→0) |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for b in report["length_buckets"]:
        lines.append(
            f"| {b['bucket']} | {b['rows']} | {_f(b.get('accuracy'))} | {_f(b.get('macro_f1'))} | "
            f"{_f(b.get('custom_score'))} | {_f(b.get('false_alarm_rate'))} | {_f(b.get('missed_threat_rate'))} |"
        )
    return "\n".join(lines)


def report(out: Path) -> str:
    results = [json.loads(p.read_text()) for p in sorted(out.glob("runs/*.json"))]
    if not results:
        return "no results yet"
    text = ["## In source (prompts_test.csv) and out of source", "", render(results), ""]
    corpus_rows = [r for res in results for r in rows_of(res) if r["train_set"] == "corpus"]
    if corpus_rows:
        best = max(corpus_rows, key=lambda r: (r["folds"] is None, r["oos"]["f1_macro"] or 0))
        title = f"Best on the corpus: {best['featurizer']} {best['model']} {best['variant']} (folds {best['folds']})"
        text += [render_families(best["oos"], title), ""]
    return "\n".join(text)


# --- main ------------------------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--train", default=str(SHARED / "prompts_train.csv"), help="training set (a)")
    p.add_argument("--corpus", default=None, help="training set (b): the assembled corpus CSV")
    p.add_argument("--test", default=str(SHARED / "prompts_test.csv"), help="the in-source test set")
    p.add_argument("--sets", default="train,corpus", help="training sets to run: train, corpus")
    p.add_argument("--featurizers", default=",".join(FEATURIZERS))
    p.add_argument("--models", default="logreg,linear_svm")
    p.add_argument("--variants", default="base", help=f"comma-separated, of {list(VARIANTS)}")
    p.add_argument("--folds-train", type=int, default=0, help="folds for (a); 0 = one per family")
    p.add_argument("--folds-corpus", type=int, default=0, help="folds for (b); 0 = one per family")
    p.add_argument(
        "--suffixes-together",
        action="store_true",
        help=f"hold the adversarial-suffix families {SUFFIX_FAMILIES} out together (suffix families unseen)",
    )
    p.add_argument(
        "--search",
        choices=("fixed", "default"),
        default="fixed",
        help="one candidate + 2-fold CV, or the config's search",
    )
    p.add_argument("--transformer", action="store_true", help="also run the MiniLM fine-tune and ensemble")
    p.add_argument("--transformer-only", action="store_true", help="only the transformer runs")
    p.add_argument("--transformer-member", default="logreg:combined:use", help="classical member: model:featurizer")
    p.add_argument("--transformer-folds", type=int, default=4)
    p.add_argument("--transformer-epochs", type=float, default=1.0)
    p.add_argument("--transformer-max-length", type=int, default=128)
    p.add_argument("--transformer-set", action="append", default=[], help="extra config override for that run")
    p.add_argument("--cache-dir", default="/tmp/gen/embcache")
    p.add_argument("--out", required=True, help="results directory (runs/*.json, reports/<run>/)")
    p.add_argument("--report", action="store_true", help="only print the tables of finished runs")
    p.add_argument("--threads", type=int, default=1)
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    out = Path(args.out)
    if args.report:
        print(report(out))
        return 0
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        os.environ.setdefault(var, str(args.threads))
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    import logging

    import torch

    from prompt_sentinel import encoders
    from prompt_sentinel.config import load_config
    from prompt_sentinel.data.loading import load_dataset

    torch.set_num_threads(args.threads)
    logging.basicConfig(level=logging.WARNING)
    cfg = load_config()
    test = load_dataset(args.test, cfg)
    frames = {"train": load_dataset(args.train, cfg)}
    if args.corpus:
        frames["corpus"] = load_dataset(args.corpus, cfg)
    cache = DiskEmbeddingCache(Path(args.cache_dir))
    encoders._EMBED_CACHE = cache  # featurization sessions keep an existing cache (and restore it afterwards)
    (out / "runs").mkdir(parents=True, exist_ok=True)
    sets = [s for s in args.sets.split(",") if s in frames]
    jobs = []
    if not args.transformer_only:
        for train_set in sets:
            folds = (args.folds_train if train_set == "train" else args.folds_corpus) or None
            for variant in args.variants.split(","):
                for featurizer in args.featurizers.split(","):
                    for model in args.models.split(","):
                        jobs.append(("classical", train_set, featurizer, model, variant, folds))
    if args.transformer or args.transformer_only:
        for train_set in sets:
            jobs.append(("transformer", train_set, None, None, "ensemble", args.transformer_folds))
    for kind, train_set, featurizer, model, variant, folds in jobs:
        if kind == "classical":
            name = run_name(train_set, featurizer, model, variant, folds)
        else:
            member, _, member_featurizer = args.transformer_member.partition(":")
            name = run_name(train_set, member_featurizer, f"transformer+{member}", variant, folds)
        target = out / "runs" / f"{name}.json"
        if target.exists():
            log(f"== {name}: done before, skipped")
            continue
        started = time.perf_counter()
        if kind == "classical":
            result = classical_run(args, name, train_set, frames[train_set], test, featurizer, model, variant, folds)
        else:
            result = transformer_run(args, name, train_set, frames[train_set], test, member, member_featurizer)
        result["wall_seconds"] = time.perf_counter() - started
        target.write_text(json.dumps(result, indent=1, default=str))
        cache.save()
        log(f"== {name}: {result['wall_seconds']:.0f} s")
    print(report(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
