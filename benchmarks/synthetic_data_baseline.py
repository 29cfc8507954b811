"""How a frozen-embedding model does on the team-written synthetic data, before and after training on it.

    OMP_NUM_THREADS=1 nice -n 10 python benchmarks/synthetic_data_baseline.py [--splits 5] [--out results.md]

Featurizer: the bundled MiniLM sentence embeddings (``SentenceEmbedder``, the ``embeddings`` featurizer) on
normalized text; classifier: logistic regression. Three settings, each printed as accuracy per source:

* **before** - trained on ``prompts_train.csv`` only, scored on every synthetic row;
* **group split** - trained on ``prompts_train.csv`` + half of the synthetic groups (per source family, seeded),
  scored on the other half; mean ± std over ``--splits`` seeds. Goals and tasks recur across groups, so the
  held-out half contains goals the model saw in other framings;
* **group + item split** - as above, but the vocabulary items (harmful/benign goals, coding tasks, concepts) are
  split too: a held-out row has a held-out template *and* a held-out item, a training row neither; rows that mix
  are dropped. This is the stricter, more honest number.

Each setting also reports macro F1 on ``prompts_test.csv`` so that a gain on the synthetic data that costs the
in-source test set is visible. Nothing here is tuned: the classifier uses fixed default settings. The first
section checks that no synthetic row is an exact or near duplicate of a shared row (decontamination).
"""

from __future__ import annotations

import argparse
import os
import random
import sys
import time
from collections import Counter, defaultdict
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
DEFAULT_DATA = REPO.parent / "shared" / "data"
SOURCE_ORDER = (
    "sentinel-defensive/security",
    "sentinel-defensive/coding",
    "sentinel-roleplay/jailbreak",
    "sentinel-roleplay/benign",
    "sentinel-roleplay/goal",
)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--train", default=str(DEFAULT_DATA / "prompts_train.csv"))
    parser.add_argument("--test", default=str(DEFAULT_DATA / "prompts_test.csv"))
    parser.add_argument("--splits", type=int, default=5, help="seeds for the 50/50 group splits")
    parser.add_argument("--C", type=float, default=1.0, help="logistic-regression inverse regularization (fixed)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (the machine is shared)")
    parser.add_argument("--cache", default=None, help="an .npz file to keep the embeddings between runs")
    parser.add_argument("--out", default=None, help="also write the markdown tables to this file")
    return parser.parse_args(argv)


def contamination_report(synthetic_texts: list[str], shared_texts: list[str]) -> list[str]:
    """Exact (dedup_key) overlaps and the highest word 5-gram Jaccard of any synthetic row with any shared row."""
    from prompt_sentinel.data.near_duplicates import word_shingles
    from prompt_sentinel.text import dedup_key

    shared_keys = {dedup_key(t) for t in shared_texts}
    exact = sum(dedup_key(t) in shared_keys for t in synthetic_texts)
    shared_shingles = [word_shingles(t) for t in shared_texts]
    index: dict[int, list[int]] = defaultdict(list)
    for j, shingles in enumerate(shared_shingles):
        for s in shingles:
            index[s].append(j)
    best = 0.0
    for text in synthetic_texts:
        mine = word_shingles(text)
        counts = Counter(j for s in mine for j in index.get(s, ()))
        for j, shared in counts.most_common(3):
            best = max(best, shared / len(mine | shared_shingles[j]))
    return [
        "## Decontamination against the shared train + test sets",
        "",
        f"- synthetic rows with the same `dedup_key` as a shared row: {exact}",
        f"- highest word 5-gram Jaccard between a synthetic and a shared row: {best:.3f} "
        "(the split's near-duplicate threshold is 0.6)",
        "",
    ]


def embed(texts: list[str], cache: str | None) -> np.ndarray:
    """MiniLM embeddings of the normalized texts; ``cache`` (.npz) keeps them per text between runs."""
    from prompt_sentinel.features import SentenceEmbedder
    from prompt_sentinel.text import normalize_text

    normalized = [normalize_text(t) for t in texts]
    known: dict[str, np.ndarray] = {}
    if cache and Path(cache).is_file():
        stored = np.load(cache, allow_pickle=False)
        if "texts" in stored:
            known = dict(zip(stored["texts"].tolist(), stored["vectors"], strict=True))
    todo = sorted({t for t in normalized if t not in known})
    if todo:
        started = time.perf_counter()
        for text, vector in zip(todo, SentenceEmbedder().encode(todo, progress=True), strict=True):
            known[text] = vector
        print(f"embedded {len(todo)} texts in {time.perf_counter() - started:.0f} s", file=sys.stderr)
        if cache:
            names = sorted(known)
            np.savez(cache, texts=np.array(names), vectors=np.stack([known[t] for t in names]))
    return np.stack([known[t] for t in normalized])


def fit_predict(x_train: np.ndarray, y_train: np.ndarray, x_eval: np.ndarray, c: float) -> np.ndarray:
    from sklearn.linear_model import LogisticRegression

    model = LogisticRegression(C=c, max_iter=3000, class_weight="balanced")
    model.fit(x_train, y_train)
    return model.predict(x_eval)


def per_source_accuracy(sources: np.ndarray, labels: np.ndarray, predicted: np.ndarray) -> dict[str, float]:
    return {s: float((predicted[sources == s] == labels[sources == s]).mean()) for s in np.unique(sources)}


def prediction_mix(sources: np.ndarray, predicted: np.ndarray) -> dict[str, str]:
    mix = {}
    for s in np.unique(sources):
        counts = Counter(predicted[sources == s].tolist())
        total = sum(counts.values())
        mix[s] = " / ".join(f"{counts.get(k, 0) / total:.0%}" for k in (0, 1, 2))
    return mix


def split_groups(groups: np.ndarray, families: np.ndarray, seed: int) -> set[str]:
    """Half of the groups of each family (seeded): the held-out side."""
    held_out: set[str] = set()
    for family in sorted(set(families)):
        names = sorted(set(groups[families == family]))
        random.Random(f"{seed}:{family}").shuffle(names)
        held_out.update(names[: len(names) // 2])
    return held_out


def split_items(items: np.ndarray, seed: int) -> set[str]:
    names = sorted({i for i in items if i})
    random.Random(f"{seed}:items").shuffle(names)
    return set(names[: len(names) // 2])


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import torch

    torch.set_num_threads(args.threads)

    from prompt_sentinel.config import SentinelConfig
    from prompt_sentinel.data.loading import load_dataset
    from prompt_sentinel.datasets.synthetic.build import build_rows
    from prompt_sentinel.metrics import macro_f1

    cfg = SentinelConfig()
    train = load_dataset(args.train, cfg)
    test = load_dataset(args.test, cfg)
    rows, _ = build_rows()
    synth_text = [r.text for r in rows]
    synth_y = np.array([r.label for r in rows])
    synth_src = np.array([r.source for r in rows])
    synth_family = np.array([r.source.split("/")[0] for r in rows])
    synth_group = np.array([r.group for r in rows])
    # the vocabulary item a row was built around; bare goals share the goal id with their framed uses
    synth_item = np.array([r.item if not r.item.startswith("ask:") else "" for r in rows])

    lines = contamination_report(synth_text, train["text"].tolist() + test["text"].tolist())

    vectors = embed(train["text"].tolist() + test["text"].tolist() + synth_text, args.cache)
    n_train, n_test = len(train), len(test)
    x_train, x_test, x_synth = vectors[:n_train], vectors[n_train : n_train + n_test], vectors[n_train + n_test :]
    y_train, y_test = train["label"].to_numpy(), test["label"].to_numpy()

    # --- before: public data only --------------------------------------------------------------------------
    predicted = fit_predict(x_train, y_train, np.vstack([x_test, x_synth]), args.C)
    test_f1_before = macro_f1(y_test, predicted[:n_test], 3)
    before = per_source_accuracy(synth_src, synth_y, predicted[n_test:])
    mix = prediction_mix(synth_src, predicted[n_test:])

    # --- after: + half of the synthetic groups (and items) ------------------------------------------------
    results: dict[str, dict[str, list[float]]] = {"group": defaultdict(list), "strict": defaultdict(list)}
    test_f1: dict[str, list[float]] = {"group": [], "strict": []}
    held_sizes: dict[str, list[int]] = {"group": [], "strict": []}
    for seed in range(args.splits):
        held_groups = split_groups(synth_group, synth_family, seed)
        held_items = split_items(synth_item, seed)
        in_held_group = np.isin(synth_group, list(held_groups))
        item_held = np.array([(i in held_items) if i else True for i in synth_item])
        item_train = np.array([(i not in held_items) if i else True for i in synth_item])
        masks = {
            "group": (~in_held_group, in_held_group),
            "strict": (~in_held_group & item_train, in_held_group & item_held),
        }
        for name, (train_mask, eval_mask) in masks.items():
            x = np.vstack([x_train, x_synth[train_mask]])
            y = np.concatenate([y_train, synth_y[train_mask]])
            pred = fit_predict(x, y, np.vstack([x_test, x_synth[eval_mask]]), args.C)
            test_f1[name].append(macro_f1(y_test, pred[:n_test], 3))
            held_sizes[name].append(int(eval_mask.sum()))
            for source, acc in per_source_accuracy(synth_src[eval_mask], synth_y[eval_mask], pred[n_test:]).items():
                results[name][source].append(acc)

    def cell(values: list[float]) -> str:
        return f"{np.mean(values):.3f} ± {np.std(values):.3f}" if values else "-"

    counts = Counter(synth_src.tolist())
    lines += [
        "## Accuracy per synthetic source (MiniLM embeddings + logistic regression)",
        "",
        f"Splits: {args.splits} seeds, 50/50 by group within each family; held-out rows per split: "
        f"group {np.mean(held_sizes['group']):.0f}, group + item {np.mean(held_sizes['strict']):.0f}.",
        "",
        "| source | label | rows | before: trained on prompts_train | predicted 0 / 1 / 2 (before) "
        "| + synthetic, held-out groups | + synthetic, held-out groups and items |",
        "|---|---:|---:|---:|---|---:|---:|",
    ]
    for source in SOURCE_ORDER:
        label = int(synth_y[synth_src == source][0])
        lines.append(
            f"| `{source}` | {label} | {counts[source]} | {before[source]:.3f} | {mix[source]} "
            f"| {cell(results['group'][source])} | {cell(results['strict'][source])} |"
        )
    lines += [
        f"| `prompts_test.csv` macro F1 | | {n_test} | {test_f1_before:.3f} | "
        f"| {cell(test_f1['group'])} | {cell(test_f1['strict'])} |",
        "",
    ]
    report = "\n".join(lines)
    print(report)
    if args.out:
        Path(args.out).write_text(report + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
