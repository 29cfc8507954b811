"""Second look at finished generalization-benchmark runs, without training anything (seconds of CPU).

    python benchmarks/generalization_analysis.py --out /tmp/gen/bench [--corpus-run combined-use__logreg__aug]

Reads ``<out>/runs/*.json`` and ``<out>/reports/<run>/generalization_predictions.csv`` written by
``benchmarks/generalization_benchmark.py`` and prints markdown tables:

* **decision rules**: every run's pooled out-of-source predictions re-scored under argmax (costs 1/1) and under
  the one cost pair tuned on those pooled rows themselves ("oracle": an upper bound, not a method), next to the
  fold models' own tuned rules (what the benchmark reports);
* **family bootstrap**: paired differences of pooled macro F1 / custom score between corpus runs, with 95%
  intervals from resampling whole source families (the unit that varies out of source);
* **variants by family**: accuracy (false alarms / missed threats) of each family under each corpus variant of
  one featurizer/model;
* **without the imitated families**: the same variants' pooled scores with and without the families whose
  generator training-time augmentation shares or imitates (``random-suffix``, ``derived-encoding``);
* **per family**: the worst-first family, length-bucket and fold tables of chosen runs.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
COST_GRID = (1.0, 1.5, 2.0, 3.0, 4.0, 6.0, 8.0, 12.0, 20.0)
IMITATED_FAMILIES = ("random-suffix", "derived-encoding")
VARIANTS = ("base", "aug", "gib", "aug+gib", "oos", "aug+gib+oos")
# (A, B) corpus run stems compared by the family bootstrap
PAIRS = (
    ("combined-use__logreg__aug", "combined-use__logreg__base"),
    ("combined-use__logreg__aug+gib", "combined-use__logreg__base"),
    ("combined-use__logreg__gib", "combined-use__logreg__base"),
    ("combined-use__logreg__oos", "combined-use__logreg__base"),
    ("combined-use__logreg__aug+gib+oos", "combined-use__logreg__aug+gib"),
    ("combined-use__logreg__aug", "combined-use__logreg__aug+gib"),
    ("combined-use__logreg__base", "tfidf__logreg__base"),
    ("combined-use__logreg__base", "combined-e5__logreg__base"),
    ("combined-use__logreg__base", "combined-minilm__logreg__base"),
    ("combined-use__logreg__base", "combined-use__linear_svm__base"),
    ("embeddings-use__linear_svm__base", "combined-use__logreg__base"),
    ("combined-use__logreg__aug", "combined-minilm__logreg__base"),  # the best corpus run vs the default featurizer
)


def _predictions(out: Path, run: str):
    import pandas as pd

    return pd.read_csv(out / "reports" / run / "generalization_predictions.csv")


def _proba(frame) -> Any:
    return frame[[c for c in frame.columns if c.startswith("proba_")]].to_numpy()


def decision_rules(out: Path) -> str:
    from prompt_sentinel.config import DecisionConfig, LabelConfig
    from prompt_sentinel.decision import assign_labels, tune_costs
    from prompt_sentinel.evaluation.generalization import score_predictions

    labels = LabelConfig()
    lines = [
        "| run | rule F1 | rule custom | argmax F1 | argmax custom | argmax recall_c2 | argmax P(0→2) | "
        "argmax P(2→0) | oracle costs | oracle F1 | oracle custom |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---|---:|---:|",
    ]
    rows = []
    for directory in sorted(p for p in (out / "reports").iterdir() if p.is_dir()):
        frame = _predictions(out, directory.name)
        y, proba = frame["label"].to_numpy(), _proba(frame)
        tuned = tune_costs(y, proba, labels.roles, COST_GRID)
        oracle = DecisionConfig(false_alarm_cost=tuned.false_alarm_cost, missed_threat_cost=tuned.missed_threat_cost)
        scores = {
            tag: score_predictions(y, pred, labels)
            for tag, pred in (
                ("rule", frame["pred"].to_numpy()),
                ("argmax", proba.argmax(axis=1)),
                ("oracle", assign_labels(proba, labels.roles, oracle)),
            )
        }
        rows.append((directory.name, scores, f"{tuned.false_alarm_cost:g}/{tuned.missed_threat_cost:g}"))
    for name, s, costs in sorted(rows, key=lambda r: -r[1]["argmax"]["macro_f1"]):
        r, a, o = s["rule"], s["argmax"], s["oracle"]
        lines.append(
            f"| {name} | {r['macro_f1']:.3f} | {r['custom_score']:.3f} | {a['macro_f1']:.3f} | "
            f"{a['custom_score']:.3f} | {a['recall_c2']:.3f} | {a['false_alarm_rate']:.3f} | "
            f"{a['missed_threat_rate']:.3f} | {costs} | {o['macro_f1']:.3f} | {o['custom_score']:.3f} |"
        )
    return "\n".join(lines)


def _family_confusions(out: Path, run: str) -> tuple[list[str], Any]:
    import numpy as np

    frame = _predictions(out, run)
    families = sorted(frame["family"].unique())
    cms = np.zeros((len(families), 3, 3))
    for i, family in enumerate(families):
        part = frame[frame["family"] == family]
        np.add.at(cms[i], (part["label"].to_numpy(), part["pred"].to_numpy()), 1)
    return families, cms


def _macro_f1(cm: Any) -> float:
    import numpy as np

    tp, predicted, true = np.diag(cm), cm.sum(axis=0), cm.sum(axis=1)
    precision = np.divide(tp, predicted, out=np.zeros(len(tp)), where=predicted > 0)
    recall = np.divide(tp, true, out=np.zeros(len(tp)), where=true > 0)
    both = precision + recall
    return float(np.mean(np.divide(2 * precision * recall, both, out=np.zeros(len(tp)), where=both > 0)))


def family_bootstrap(out: Path, fold_tag: str, draws: int, seed: int) -> str:
    import numpy as np

    from prompt_sentinel.config import LabelConfig
    from prompt_sentinel.metrics import score_from_confusion

    roles = LabelConfig().roles
    lines = [
        "| A | B | ΔF1 (A−B) | 95% CI | share of draws ΔF1>0 | Δcustom | 95% CI |",
        "|---|---|---:|---|---:|---:|---|",
    ]
    rng = np.random.default_rng(seed)
    for a, b in PAIRS:
        run_a, run_b = f"corpus__{a}__{fold_tag}", f"corpus__{b}__{fold_tag}"
        if not ((out / "reports" / run_a).is_dir() and (out / "reports" / run_b).is_dir()):
            continue
        fam_a, cms_a = _family_confusions(out, run_a)
        fam_b, cms_b = _family_confusions(out, run_b)
        if fam_a != fam_b:
            raise ValueError(f"{run_a} and {run_b} hold different families")
        picks = rng.integers(0, len(fam_a), size=(draws, len(fam_a)))

        def custom(cm: Any) -> float:
            return score_from_confusion(cm, roles).custom_score

        d_f1 = np.array([_macro_f1(cms_a[i].sum(0)) - _macro_f1(cms_b[i].sum(0)) for i in picks])
        d_custom = np.array([custom(cms_a[i].sum(0)) - custom(cms_b[i].sum(0)) for i in picks])
        f1 = _macro_f1(cms_a.sum(0)) - _macro_f1(cms_b.sum(0))
        cu = custom(cms_a.sum(0)) - custom(cms_b.sum(0))
        lines.append(
            f"| {a} | {b} | {f1:+.3f} | [{np.quantile(d_f1, 0.025):+.3f}, {np.quantile(d_f1, 0.975):+.3f}] | "
            f"{np.mean(d_f1 > 0):.2f} | {cu:+.3f} | "
            f"[{np.quantile(d_custom, 0.025):+.3f}, {np.quantile(d_custom, 0.975):+.3f}] |"
        )
    return "\n".join(lines)


def variants_by_family(out: Path, stem: str, fold_tag: str) -> str:
    reports = {}
    for variant in VARIANTS:
        path = out / "runs" / f"corpus__{stem}__{variant}__{fold_tag}.json"
        if path.is_file():
            reports[variant] = json.loads(path.read_text())["out_of_source"]
    if not reports:
        return f"no corpus runs of {stem}"
    order = [f["family"] for f in next(iter(reports.values()))["families"]]
    lines = ["| family | " + " | ".join(reports) + " |", "|---|" + "---:|" * len(reports)]
    for family in order:
        cells = []
        for report in reports.values():
            f = next(x for x in report["families"] if x["family"] == family)
            cells.append(f"{f['accuracy']:.2f} ({f['false_alarms']}/{f['missed_threats']})")
        lines.append(f"| {family} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def without_imitated(out: Path, stem: str, fold_tag: str) -> str:
    from prompt_sentinel.config import LabelConfig
    from prompt_sentinel.evaluation.generalization import score_predictions

    labels = LabelConfig()
    keys = ("macro_f1", "custom_score", "recall_c2", "false_alarm_rate", "missed_threat_rate")
    lines = [
        "| variant | macro F1 | custom | recall_c2 | P(0→2) | P(2→0) | macro F1 w/o | custom w/o | recall_c2 w/o | "
        "P(0→2) w/o | P(2→0) w/o |",
        "|---|" + "---:|" * 10,
    ]
    for variant in VARIANTS:
        run = f"corpus__{stem}__{variant}__{fold_tag}"
        if not (out / "reports" / run).is_dir():
            continue
        frame = _predictions(out, run)
        cells = []
        for part in (frame, frame[~frame["family"].isin(IMITATED_FAMILIES)]):
            s = score_predictions(part["label"].to_numpy(), part["pred"].to_numpy(), labels)
            cells += [f"{s[k]:.3f}" for k in keys]
        lines.append(f"| {variant} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def per_family(out: Path, run: str) -> str:
    sys.path.insert(0, str(REPO / "benchmarks"))
    from generalization_benchmark import render_families

    report = json.loads((out / "runs" / f"{run}.json").read_text())["out_of_source"]
    lines = [render_families(report, run), ""]
    lines += [
        "| fold | held-out families | held-out rows | training rows (dropped) | costs FA/MT | fold accuracy |",
        "|---:|---|---:|---:|---|---:|",
    ]
    for f in report["folds"]:
        lines.append(
            f"| {f['fold']} | {', '.join(f['families'])} | {f['held_out_rows']} | {f['training_rows']} "
            f"({f['dropped_rows']}) | {f['false_alarm_cost']:g}/{f['missed_threat_cost']:g} | {f['accuracy']:.3f} |"
        )
    return "\n".join(lines)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", required=True, help="the benchmark's results directory (runs/, reports/)")
    p.add_argument("--stem", default="combined-use__logreg", help="featurizer__model of the corpus variant tables")
    p.add_argument("--fold-tag", default="k8", help="the corpus runs' fold tag (k8, lofo)")
    p.add_argument("--family-runs", default="", help="comma-separated run names for the per-family tables")
    p.add_argument("--draws", type=int, default=2000, help="bootstrap draws")
    p.add_argument("--seed", type=int, default=0)
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    out = Path(args.out)
    sections = [
        ("Decision rules on the same out-of-source predictions", decision_rules(out)),
        ("Family bootstrap (corpus)", family_bootstrap(out, args.fold_tag, args.draws, args.seed)),
        (f"Variants by family ({args.stem}, corpus)", variants_by_family(out, args.stem, args.fold_tag)),
        (f"Without {', '.join(IMITATED_FAMILIES)}", without_imitated(out, args.stem, args.fold_tag)),
    ]
    sections += [(f"Per family: {run}", per_family(out, run)) for run in args.family_runs.split(",") if run]
    for title, table in sections:
        print(f"## {title}\n\n{table}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
