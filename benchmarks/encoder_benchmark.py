"""Sentence encoders as featurizers, in and out of source: MiniLM (English) vs USE-multilingual vs e5-small.

    nice -n 10 python benchmarks/encoder_benchmark.py [--encoders REF,...] [--C 5] [--out results.md]

For each encoder, featurizer kinds ``embeddings`` and ``combined`` (plus ``tfidf`` as the reference row), each
followed by ``LogisticRegression(class_weight="balanced", C=--C)`` with argmax labels. Not the project's trainer:
``train_classical`` runs a CV search, SMOTE and cost tuning per fit, about a minute each on 2 shared cores, and
the sweep has ~100 fits; the features are the project's own (see "same features" below).

* **in source**: trained on ``prompts_train.csv``, scored on ``prompts_test.csv``, and on its non-English rows
  alone (a stopword / script heuristic, :func:`language`; macro F1 there is over the classes present);
* **out of source**: leave-one-source-family-out over train ∪ test (family = ``source`` before ``/``): each family
  held out in turn, trained on the others, the held-out predictions pooled; pooled scores and the per-family
  accuracy table, worst family first;
* **speed**: first-load time and RSS in a fresh process, ms per text at batch 64 and batch 1.

Each text is embedded once per encoder (the whole sweep reuses the matrix); TF-IDF + SVD is fitted once per fold
and shared by every encoder's ``combined`` features, which are ``[embedding | SVD(TF-IDF)]`` exactly as
:func:`prompt_sentinel.features.build_featurizer` builds them ("same features": checked once against the real
featurizer below, with an assertion).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import subprocess
import sys
import time
import unicodedata
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DEFAULT_DATA = REPO.parent / "shared" / "data"
ENCODERS = {"bundled:all-MiniLM-L6-v2": "MiniLM-L6", "use-multilingual": "USE-multilingual", "e5-small": "e5-small"}

# --- language heuristic -------------------------------------------------------------------------------------
# The shared data is English with German (deepset) and a handful of other languages; a dependency such as a
# language-id model would add weight for a benchmark column, so: stopword counts per language plus a script test.
_STOPWORDS = {
    "en": "the and is are to of in that it you for on with this be as at by from or an not what how me my your we "
    "can do please",
    "de": "der das und ist nicht ich du sie wir ein eine einen zu mit auf für von den dem des sich auch als wie was "
    "wer ihr bitte kannst mir mich dich oder aber wenn ob nach bei über sind bist habe hast hat werden wird im zum "
    "zur vergiss alle aus sieht viele welche kann können gibt noch nur schon sehr mehr jetzt alles vorherigen "
    "anweisungen ignoriere schreibe sage deutschland warum gut heute",
    "fr": "le la les et est des une un pas je tu vous nous que qui dans pour sur avec ce cette du au aux mais ou où "
    "sont",
    "es": "el la los las y es son una un yo tú usted que qué en para por del al pero cómo como este esta",
    "it": "il lo gli le è sono una un non io tu che in per del della ma come questo questa",
    "pt": "os as é são uma um não eu você que em para por do da mas como este esta",
    "nl": "het en zijn een niet ik jij je wij dat voor op met van maar hoe wat",
}
_EN = set(_STOPWORDS["en"].split())
# single letters and words shared with English ("die", "as", "am"...) are ambiguous
_OTHER = {
    lang: {w for w in words.split() if len(w) > 1 and w not in _EN and w not in {"die", "as", "am", "no", "do"}}
    for lang, words in _STOPWORDS.items()
    if lang != "en"
}
_WORD = re.compile(r"[^\W\d_]+")


def language(text: str) -> str:
    """'en', a language code, or 'non-latin' — cheap and rough (short German noun phrases count as English)."""
    letters = [c for c in text if c.isalpha()]
    if letters and sum(not unicodedata.name(c, "").startswith("LATIN") for c in letters) > 0.3 * len(letters):
        return "non-latin"
    words = [w.lower() for w in _WORD.findall(text)]
    english = sum(w in _EN for w in words)
    counts = {lang: sum(w in stop for w in words) for lang, stop in _OTHER.items()}
    best = max(counts, key=counts.__getitem__)
    if (counts[best] >= 2 and counts[best] > english) or (counts[best] >= 1 and english == 0):
        return best
    if english < 2 and any(c in text for c in "äöüßÄÖÜ"):
        return "de"
    return "en"


# --- speed, load time, memory (run in a fresh process per encoder) ------------------------------------------


def speed_probe(ref: str, texts: list[str], batch_size: int, max_length: int) -> dict:
    from prompt_sentinel.encoders import make_encoder

    def status_mb(field: str) -> float:
        # /proc/self/status, not getrusage: ru_maxrss survives exec, so a child would report its parent's peak
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
        return float("nan")

    def rss_mb() -> float:
        return status_mb("VmRSS")

    before = rss_mb()
    started = time.perf_counter()
    encoder = make_encoder(ref, batch_size, max_length)
    encoder.encode(["warm-up"])
    fingerprint = encoder.fingerprint  # part of the first load: EmbeddingTransformer checks it on every transform
    load_s = time.perf_counter() - started
    after_load = rss_mb()
    started = time.perf_counter()
    encoder.encode(texts, progress=False)
    batch_ms = (time.perf_counter() - started) * 1000 / len(texts)
    singles = texts[:64]
    started = time.perf_counter()
    for text in singles:
        encoder.encode([text], progress=False)
    single_ms = (time.perf_counter() - started) * 1000 / len(singles)
    return {
        "dim": encoder.dim,
        "fingerprint": fingerprint,
        "load_s": load_s,
        "rss_before_mb": before,
        "rss_loaded_mb": after_load,
        "rss_peak_mb": status_mb("VmHWM"),
        "batch_ms": batch_ms,
        "single_ms": single_ms,
    }


def run_speed_probe(ref: str, texts: list[str], args: argparse.Namespace) -> dict:
    payload = json.dumps({"ref": ref, "texts": texts, "batch_size": args.batch_size, "max_length": args.max_length})
    done = subprocess.run(
        [sys.executable, __file__, "--speed-probe"],
        input=payload,
        capture_output=True,
        text=True,
        check=False,
        env={**os.environ, "OMP_NUM_THREADS": str(args.threads), "MKL_NUM_THREADS": str(args.threads)},
    )
    if done.returncode != 0:
        raise RuntimeError(f"speed probe for {ref} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


# --- the sweep ----------------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--encoders", default=",".join(ENCODERS), help="comma-separated featurizer.embedding_model")
    parser.add_argument("--train", default=str(DEFAULT_DATA / "prompts_train.csv"))
    parser.add_argument("--test", default=str(DEFAULT_DATA / "prompts_test.csv"))
    parser.add_argument("--C", type=float, default=5.0, help="logistic regression C (project grid: 0.5..50)")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--max-length", type=int, default=256, help="featurizer.embedding_max_length")
    parser.add_argument("--threads", type=int, default=1, help="BLAS / OpenMP / torch threads (the machine is shared)")
    parser.add_argument("--speed-samples", type=int, default=256, help="test texts timed at batch 64 (64 at batch 1)")
    parser.add_argument("--cache-dir", default=None, help="keep embeddings here between runs (.npy per encoder)")
    parser.add_argument("--out", default=None, help="also write the markdown report to this file")
    parser.add_argument("--no-speed", action="store_true", help="skip the speed / memory probes (e.g. a rerun)")
    parser.add_argument("--speed-probe", action="store_true", help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        os.environ.setdefault(var, str(args.threads))
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    if args.speed_probe:
        job = json.loads(sys.stdin.read())
        print(json.dumps(speed_probe(job["ref"], job["texts"], job["batch_size"], job["max_length"])))
        return 0

    import numpy as np
    import pandas as pd

    from prompt_sentinel.config import FeaturizerConfig, load_config
    from prompt_sentinel.data.loading import load_dataset
    from prompt_sentinel.encoders import make_encoder
    from prompt_sentinel.features import build_featurizer, featurization_session
    from prompt_sentinel.text import normalize_text

    cfg = load_config(None, ["mlflow.enabled=false"])
    refs = [r.strip() for r in args.encoders.split(",") if r.strip()]
    frames = []
    for split, path in (("train", args.train), ("test", args.test)):
        df = load_dataset(path, cfg)
        frames.append(df[["text", "label", "source"]].assign(split=split))
    data = pd.concat(frames, ignore_index=True)
    data["family"] = data["source"].astype(str).str.split("/").str[0]
    data["lang"] = data["text"].map(language)
    data["norm"] = data["text"].map(normalize_text)  # what the trainer and the served model featurize
    y = data["label"].to_numpy()
    is_test = (data["split"] == "test").to_numpy()
    non_en = (data["lang"] != "en").to_numpy()
    log(
        f"{len(data)} rows ({(~is_test).sum()} train, {is_test.sum()} test); non-English: "
        f"{non_en[~is_test].sum()} train, {non_en[is_test].sum()} test "
        f"({data.loc[non_en, 'lang'].value_counts().to_dict()})"
    )

    # --- speed probes (fresh process each), then every text embedded once per encoder -----------------------
    rng = np.random.default_rng(cfg.seed)
    test_texts = data.loc[is_test, "norm"].tolist()
    speed_texts = [test_texts[i] for i in rng.choice(len(test_texts), min(args.speed_samples, len(test_texts)), False)]
    speed: dict[str, dict] = {}
    embeddings: dict[str, np.ndarray] = {}
    unique = sorted(set(data["norm"]))
    position = {text: i for i, text in enumerate(unique)}
    rows_to_unique = data["norm"].map(position).to_numpy()
    for ref in refs:
        if args.no_speed:
            speed[ref] = {"fingerprint": make_encoder(ref, args.batch_size, args.max_length).fingerprint}
        else:
            log(f"== {ref}: speed probe")
            speed[ref] = run_speed_probe(ref, speed_texts, args)
        cached = cache_path(args, ref, speed[ref]["fingerprint"], unique)
        started = time.perf_counter()
        if cached is not None and cached.is_file():
            matrix = np.load(cached)
            speed[ref]["corpus_s"] = None
        else:
            log(f"== {ref}: embedding {len(unique)} distinct texts")
            matrix = make_encoder(ref, args.batch_size, args.max_length).encode(unique, progress=True)
            speed[ref]["corpus_s"] = time.perf_counter() - started
            if cached is not None:
                cached.parent.mkdir(parents=True, exist_ok=True)
                np.save(cached, matrix)
        embeddings[ref] = matrix[rows_to_unique]

    configs = [("TF-IDF", None, "tfidf")] + [
        (ENCODERS.get(r, r), r, k) for r in refs for k in ("embeddings", "combined")
    ]
    fcfg = FeaturizerConfig(kind="combined", embedding_max_length=args.max_length)

    def fold_predictions(train_mask: np.ndarray, test_mask: np.ndarray) -> dict[str, np.ndarray]:
        texts = data["norm"].to_numpy()
        tfidf_svd = build_featurizer(fcfg, seed=cfg.seed).transformer_list[1][1]  # Pipeline(tfidf, svd)
        svd_train = tfidf_svd.fit_transform(list(texts[train_mask]))
        svd_test = tfidf_svd.transform(list(texts[test_mask]))
        tfidf = tfidf_svd.named_steps["tfidf"]
        sparse_train, sparse_test = tfidf.transform(list(texts[train_mask])), tfidf.transform(list(texts[test_mask]))
        out = {}
        for label, ref, kind in configs:
            if kind == "tfidf":
                X_train, X_test = sparse_train, sparse_test
            elif kind == "embeddings":
                X_train, X_test = embeddings[ref][train_mask], embeddings[ref][test_mask]
            else:
                X_train = np.hstack([embeddings[ref][train_mask], svd_train])
                X_test = np.hstack([embeddings[ref][test_mask], svd_test])
            out[label if kind == "tfidf" else f"{label} {kind}"] = (
                logreg(args.C, cfg.seed).fit(X_train, y[train_mask]).predict(X_test)
            )
        return out

    # --- in source -----------------------------------------------------------------------------------------
    log("== in source: train on prompts_train.csv, score prompts_test.csv")
    in_source = fold_predictions(~is_test, is_test)
    multilingual = [r for r in refs if r in ("use-multilingual", "e5-small")]
    if multilingual:
        same_features_check(multilingual[0], data, is_test, embeddings, fcfg, cfg.seed, featurization_session)

    # --- out of source -------------------------------------------------------------------------------------
    families = sorted(data["family"].unique())
    pooled = {name: np.full(len(data), -1) for name in in_source}
    for family in families:
        held = (data["family"] == family).to_numpy()
        log(f"== out of source: holding out {family} ({held.sum()} rows)")
        for name, pred in fold_predictions(~held, held).items():
            pooled[name][held] = pred

    report = render(data, y, is_test, non_en, in_source, pooled, families, speed, refs, args, cfg)
    print(report)
    if args.out:
        Path(args.out).write_text(report)
    return 0


def logreg(C: float, seed: int):
    from sklearn.linear_model import LogisticRegression

    return LogisticRegression(C=C, class_weight="balanced", max_iter=3000, random_state=seed)


def same_features_check(ref, data, is_test, embeddings, fcfg, seed, featurization_session) -> None:
    """The shortcut's ``combined`` features equal the real featurizer's (EmbeddingTransformer via make_encoder)."""
    import numpy as np

    from prompt_sentinel.features import build_featurizer

    texts = data["norm"].tolist()
    train = [t for t, test in zip(texts, is_test, strict=True) if not test]
    test_rows = np.flatnonzero(is_test)[:200]
    with featurization_session(cache=True):
        real = build_featurizer(fcfg.model_copy(update={"embedding_model": ref}), seed=seed).fit(train)
        X_real = real.transform([texts[i] for i in test_rows])
    shortcut = build_featurizer(fcfg, seed=seed).transformer_list[1][1].fit(train)
    X_short = np.hstack([embeddings[ref][test_rows], shortcut.transform([texts[i] for i in test_rows])])
    assert np.allclose(X_real, X_short, atol=1e-4), "benchmark features differ from the project's featurizer"
    log(f"   same features: the real combined featurizer with {ref} equals the shortcut on {len(test_rows)} rows")


def cache_path(args: argparse.Namespace, ref: str, fingerprint: str, texts: list[str]) -> Path | None:
    if not args.cache_dir:
        return None
    digest = hashlib.sha256()
    for part in (fingerprint, str(args.max_length), *texts):
        digest.update(part.encode("utf-8", "surrogatepass") + b"\0")
    name = re.sub(r"[^A-Za-z0-9]+", "-", ENCODERS.get(ref, ref))
    return Path(args.cache_dir) / f"{name}-{digest.hexdigest()[:16]}.npy"


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


# --- report -------------------------------------------------------------------------------------------------


def scores(y_true, y_pred, cfg) -> dict:
    import numpy as np
    from sklearn.metrics import f1_score

    from prompt_sentinel.metrics import security_score

    present = sorted(set(np.asarray(y_true).tolist()))
    s = security_score(y_true, y_pred, cfg.labels.roles, cfg.labels.num_classes)
    return {
        "macro_f1": float(
            f1_score(y_true, y_pred, labels=list(range(cfg.labels.num_classes)), average="macro", zero_division=0)
        ),
        "macro_f1_present": float(f1_score(y_true, y_pred, labels=present, average="macro", zero_division=0)),
        "accuracy": float((np.asarray(y_true) == np.asarray(y_pred)).mean()),
        "custom": s.custom_score,
        "recall_c2": s.recall_c2,
        "p02": s.false_alarm_rate,
        "p20": s.missed_threat_rate,
    }


def render(data, y, is_test, non_en, in_source, pooled, families, speed, refs, args, cfg) -> str:
    import numpy as np

    lines = [
        "### Sentence encoders as featurizers",
        "",
        f"LogisticRegression(C={args.C:g}, class_weight='balanced'), argmax labels; embedding_max_length "
        f"{args.max_length}; {args.threads} thread(s). Non-English rows by a stopword/script heuristic: "
        f"{int(non_en[~is_test].sum())} train, {int(non_en[is_test].sum())} test. Macro F1 on non-English rows is "
        "over the classes present there.",
        "",
        "#### Speed, load time, memory (fresh process per encoder)",
        "",
        "| encoder | dim | first load s | RSS before / after load / peak MB | ms/text batch 64 | ms/text batch 1 | "
        "corpus embed s |",
        "|---|---:|---:|---|---:|---:|---:|",
    ]
    for ref in refs if not args.no_speed else []:
        s = speed[ref]
        corpus = f"{s['corpus_s']:.0f}" if s.get("corpus_s") is not None else "cached"
        lines.append(
            f"| {ENCODERS.get(ref, ref)} | {s['dim']} | {s['load_s']:.2f} | {s['rss_before_mb']:.0f} / "
            f"{s['rss_loaded_mb']:.0f} / {s['rss_peak_mb']:.0f} | {s['batch_ms']:.1f} | {s['single_ms']:.1f} | "
            f"{corpus} |"
        )
    y_test = y[is_test]
    ne_test = non_en[is_test]
    lines += [
        "",
        f"#### In source: prompts_train.csv → prompts_test.csv ({int(is_test.sum())} rows, "
        f"{int(ne_test.sum())} non-English)",
        "",
        "| featurizer | macro F1 | custom | recall_c2 | P(0→2) | P(2→0) | non-EN macro F1 | non-EN acc | "
        "non-EN P(0→2) | non-EN P(2→0) |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name, pred in in_source.items():
        a, b = scores(y_test, pred, cfg), scores(y_test[ne_test], pred[ne_test], cfg)
        lines.append(
            f"| {name} | {a['macro_f1']:.4f} | {a['custom']:.4f} | {a['recall_c2']:.4f} | {a['p02']:.4f} | "
            f"{a['p20']:.4f} | {b['macro_f1_present']:.4f} | {b['accuracy']:.4f} | {b['p02']:.4f} | {b['p20']:.4f} |"
        )
    lines += [
        "",
        f"#### Out of source: leave one source family out over train ∪ test ({len(data)} rows, {len(families)} "
        "families), pooled",
        "",
        "| featurizer | macro F1 | custom | recall_c2 | P(0→2) | P(2→0) | non-EN macro F1 | non-EN acc |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    ranked = []
    for name, pred in pooled.items():
        a, b = scores(y, pred, cfg), scores(y[non_en], pred[non_en], cfg)
        ranked.append((a["custom"], a["macro_f1"], name))
        lines.append(
            f"| {name} | {a['macro_f1']:.4f} | {a['custom']:.4f} | {a['recall_c2']:.4f} | {a['p02']:.4f} | "
            f"{a['p20']:.4f} | {b['macro_f1_present']:.4f} | {b['accuracy']:.4f} |"
        )
    names = list(pooled)
    per_family = []
    for family in families:
        mask = (data["family"] == family).to_numpy()
        accs = [float((pooled[n][mask] == y[mask]).mean()) for n in names]
        labels = ",".join(str(v) for v in sorted(set(y[mask].tolist())))
        per_family.append((float(np.mean(accs)), family, int(mask.sum()), int((mask & non_en).sum()), labels, accs))
    lines += [
        "",
        "Per-family accuracy when the family is held out (worst first, by the mean over featurizers):",
        "",
        "| family | rows | non-EN | labels | " + " | ".join(names) + " |",
        "|---|---:|---:|---|" + "---:|" * len(names),
    ]
    for _, family, n, n_ne, labels, accs in sorted(per_family):
        lines.append(f"| {family} | {n} | {n_ne} | {labels} | " + " | ".join(f"{a:.3f}" for a in accs) + " |")
    best = max(ranked)
    lines += ["", f"Best out-of-source custom score: **{best[2]}** (custom {best[0]:.4f}, macro F1 {best[1]:.4f})."]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    raise SystemExit(main())
