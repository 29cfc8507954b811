"""Drift detection quality on shifts built from the shared data: how large a window each detector needs to fire, and
how often it fires on unshifted windows.

Two reference models are trained through the shared training sequence (TF-IDF logistic regression, so each carries
its monitoring reference, with the multilingual USE embedding summary):

* **family**: trained on ``prompts_train.csv`` without the ``derived-encoding/*`` family (rot13 / hex / base64 /
  reversed attacks); shifted windows mix that unseen family (every one of its rows) into normal traffic;
* **language**: trained without the ``deepset/*`` sources; shifted windows mix in German ``deepset`` prompts;
* **label-mix**: the family model; windows of normal traffic resampled to 60 % malicious (test set: 28 %).

Normal traffic is ``prompts_test.csv`` without the held-out sources (never seen in training). For each shift and
window size, ``--trials`` windows are drawn; a detector *fires* when its status is warn or retrain. Reported: the
smallest window where it fires in at least 80 % of trials, and the false-positive rate over ``--null-windows``
unshifted windows (at ``--null-size`` records). Model predictions and sentence embeddings of every text are
computed once; each window then runs the same detectors as ``sentinel monitor``.

    OMP_NUM_THREADS=1 nice -n 10 python benchmarks/drift_benchmark.py --data ../shared/data
"""

from __future__ import annotations

import argparse
import re
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import numpy as np
import pandas as pd

DETECTORS = ("label", "score", "length", "oov", "script", "embedding", "verdict")
GERMAN = re.compile(r"\b(und|der|die|das|nicht|ist|ich|sie|mit|für|auf|eine|einen|wie|bitte)\b", re.IGNORECASE)


def fired(report, detector: str) -> bool:
    if detector == "verdict":
        return report.verdict in ("warn", "retrain")
    return any(s.status in ("warn", "retrain") for s in report.signals if s.name.split(":")[0] == detector)


class Scenario:
    """A reference model and the texts, records and embeddings windows are drawn from."""

    def __init__(self, name: str, train: pd.DataFrame, normal: pd.DataFrame, shifted: pd.DataFrame, cfg, out: Path):
        from prompt_sentinel.decision import decide
        from prompt_sentinel.models.loading import load_model
        from prompt_sentinel.monitoring.records import TextPolicy, build_records
        from prompt_sentinel.monitoring.reference import embed_texts, read_reference
        from prompt_sentinel.stages import train as train_stage

        self.name, self.cfg = name, cfg
        rng = np.random.default_rng(cfg.seed)
        order = rng.permutation(len(train))
        cut = int(len(train) * 0.85)
        fit, val = train.iloc[order[:cut]], train.iloc[order[cut:]]
        started = time.perf_counter()
        train_stage.run("logreg", fit.reset_index(drop=True), val.reset_index(drop=True), cfg, out, progress=False)
        self.train_seconds = time.perf_counter() - started
        self.reference = read_reference(out)
        model = load_model(out)
        pool = pd.concat([normal.assign(kind="normal"), shifted.assign(kind="shifted")], ignore_index=True)
        texts = list(pool["text"])
        proba = model.predict_proba(texts)
        label_ids = model.labels_for(proba)
        decisions = decide(proba, model.roles, model.descriptor.decision, label_ids)
        policy = TextPolicy(True, b"benchmark")
        self.records = [
            build_records([t], [model.labels[label_ids[i]]], [decisions[i]],
                          [dict(zip(model.labels, proba[i].tolist(), strict=True))], model="bench", model_version="v1",
                          protocol="v1", request_id=f"r{i}", source="sink", policy=policy)[0]
            for i, t in enumerate(texts)
        ]  # fmt: skip
        self.embeddings, _, _ = embed_texts(texts, cfg.monitoring)
        self.normal = np.flatnonzero(pool["kind"].to_numpy() == "normal")
        self.shifted = np.flatnonzero(pool["kind"].to_numpy() == "shifted")
        self.labels = pool["label"].to_numpy()

    def report(self, idx: np.ndarray, seed: int):
        from prompt_sentinel.monitoring.drift import detect_drift

        cfg = self.cfg
        records = [self.records[i] for i in idx]
        emb_idx = idx[: cfg.monitoring.embedding_sample]
        return detect_drift(self.reference, records, cfg.labels, cfg.monitoring, cfg.gates,
                            current_embeddings=self.embeddings[emb_idx], seed=seed)  # fmt: skip

    def normal_window(self, size: int, rng: np.random.Generator) -> np.ndarray:
        return rng.choice(self.normal, size=size, replace=size > len(self.normal))

    def mixed_window(self, size: int, rng: np.random.Generator, share: float) -> np.ndarray:
        k = round(size * share)
        new = rng.choice(self.shifted, size=k, replace=k > len(self.shifted))
        return rng.permutation(np.concatenate([new, self.normal_window(size - k, rng)]))

    def label_mix_window(self, size: int, rng: np.random.Generator, malicious: int, share: float) -> np.ndarray:
        pool = self.normal
        is_mal = self.labels[pool] == malicious
        k = round(size * share)
        mal = rng.choice(pool[is_mal], size=k, replace=True)
        rest = rng.choice(pool[~is_mal], size=size - k, replace=True)
        return rng.permutation(np.concatenate([mal, rest]))


def power_table(
    scenario: Scenario, make_window, sizes: list[int], trials: int, seed: int
) -> dict[str, dict[int, float]]:
    rates: dict[str, dict[int, float]] = defaultdict(dict)
    rng = np.random.default_rng(seed)
    for size in sizes:
        hits: dict[str, int] = defaultdict(int)
        for t in range(trials):
            report = scenario.report(make_window(size, rng), seed + t)
            for d in DETECTORS:
                hits[d] += fired(report, d)
        for d in DETECTORS:
            rates[d][size] = hits[d] / trials
        print(f"  {scenario.name} window {size}: " + ", ".join(f"{d} {rates[d][size]:.0%}" for d in DETECTORS),
              flush=True)  # fmt: skip
    return rates


def false_positive_rates(scenario: Scenario, size: int, windows: int, seed: int) -> dict[str, float]:
    rng = np.random.default_rng(seed + 1000)
    hits: dict[str, int] = defaultdict(int)
    for w in range(windows):
        report = scenario.report(scenario.normal_window(size, rng), seed + 1000 + w)
        for d in DETECTORS:
            hits[d] += fired(report, d)
    return {d: hits[d] / windows for d in DETECTORS}


def smallest_firing(rates: dict[int, float], level: float = 0.8) -> str:
    for size in sorted(rates):
        if rates[size] >= level:
            return str(size)
    return f"> {max(rates)}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=Path(__file__).resolve().parents[1].parent / "shared" / "data")
    parser.add_argument("--sizes", default="25,50,100,200,400")
    parser.add_argument("--trials", type=int, default=10)
    parser.add_argument("--share", type=float, default=0.5, help="Share of shifted texts in a shifted window.")
    parser.add_argument("--null-windows", type=int, default=50)
    parser.add_argument("--null-size", type=int, default=200)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.FIELD=VALUE",
                        help="Config override, e.g. --set monitoring.thresholds.oov_increase_warn=0.03")  # fmt: skip
    args = parser.parse_args(argv)
    from prompt_sentinel.config import load_config
    from prompt_sentinel.data.loading import load_dataset

    if not (args.data / "prompts_train.csv").is_file():
        print(f"shared data not found under {args.data}", file=sys.stderr)
        return 2
    cfg = load_config(None, ["featurizer.kind=tfidf", "training.search.n_iter=2", "training.search.cv_folds=2",
                             "mlflow.enabled=false", *args.overrides])  # fmt: skip
    train = load_dataset(str(args.data / "prompts_train.csv"), cfg)
    test = load_dataset(str(args.data / "prompts_test.csv"), cfg)
    both = pd.concat([train, test], ignore_index=True)
    sizes = [int(s) for s in args.sizes.split(",")]
    tables: dict[str, dict[str, dict[int, float]]] = {}
    fprs: dict[str, dict[str, float]] = {}
    with tempfile.TemporaryDirectory(prefix="drift-bench-") as tmp:
        family = both["source"].str.startswith("derived-encoding")
        fam = Scenario("family", train[~family[: len(train)].to_numpy()], test[~family[len(train) :].to_numpy()],
                       both[family], cfg, Path(tmp, "family"))  # fmt: skip
        deepset = both["source"].str.startswith("deepset")
        german = both[deepset & both["text"].map(lambda t: len(GERMAN.findall(t)) >= 2)]
        lang = Scenario("language", train[~deepset[: len(train)].to_numpy()], test[~deepset[len(train) :].to_numpy()],
                        german, cfg, Path(tmp, "language"))  # fmt: skip
        print(f"pools: family {len(fam.shifted)} encoded rows; language {len(lang.shifted)} German rows; "
              f"normal {len(fam.normal)} / {len(lang.normal)} test rows", flush=True)  # fmt: skip
        malicious = cfg.labels.roles.malicious
        base_share = float(np.mean(fam.labels[fam.normal] == malicious))
        tables["held-out family (encoded attacks)"] = power_table(
            fam, lambda n, r: fam.mixed_window(n, r, args.share), sizes, args.trials, args.seed
        )
        tables["language (German deepset)"] = power_table(
            lang, lambda n, r: lang.mixed_window(n, r, args.share), sizes, args.trials, args.seed
        )
        tables[f"label mix (malicious {base_share:.0%} → 60%)"] = power_table(
            fam, lambda n, r: fam.label_mix_window(n, r, malicious, 0.6), sizes, args.trials, args.seed
        )
        fprs["family model"] = false_positive_rates(fam, args.null_size, args.null_windows, args.seed)
        fprs["language model"] = false_positive_rates(lang, args.null_size, args.null_windows, args.seed)

    print(f"\n## Window size at which each detector fires in >= 80% of {args.trials} trials "
          f"(shifted share {args.share:.0%}; sizes {sizes})\n")  # fmt: skip
    print("| shift | " + " | ".join(DETECTORS) + " |")
    print("|---|" + "---:|" * len(DETECTORS))
    for shift, rates in tables.items():
        print(f"| {shift} | " + " | ".join(smallest_firing(rates[d]) for d in DETECTORS) + " |")
    print(f"\n## False-positive rate on {args.null_windows} unshifted windows of {args.null_size} records\n")
    print("| reference | " + " | ".join(DETECTORS) + " |")
    print("|---|" + "---:|" * len(DETECTORS))
    for name, rates in fprs.items():
        print(f"| {name} | " + " | ".join(f"{rates[d]:.0%}" for d in DETECTORS) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
