"""The ``retrain`` data step of the monitoring pipeline: the base training dataset plus reviewer-labelled traffic.

Labelled traffic is every logged record with a reviewer label (:mod:`prompt_sentinel.monitoring.feedback`) and its
text (``monitoring.store_text``; records logged without text are counted and left out). It is decontaminated
against the evaluation sets (``excludes``: the blind set and any other held-out file; near-duplicates by the
split's word-shingle Jaccard rule) and against the base dataset itself (a text the base data already holds is
dropped, whatever its label, so validation never sees a conflict it did not cause). Writes
``retraining_data.csv`` (the training pipeline's ``data_uri``) and ``retraining.json`` (the counts) into ``out_dir``.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import pandas as pd

from prompt_sentinel import storage
from prompt_sentinel.config import SentinelConfig
from prompt_sentinel.data.corpus import Exclusion
from prompt_sentinel.data.loading import frame_to_csv_bytes, load_dataset, records_frame
from prompt_sentinel.monitoring.feedback import load_feedback
from prompt_sentinel.monitoring.logstore import read_logs
from prompt_sentinel.run_layout import RETRAINING_DATA, RETRAINING_REPORT
from prompt_sentinel.text import dedup_key

TRAFFIC_SOURCE = "traffic"


@dataclass
class RetrainingData:
    data_uri: str
    base_rows: int
    labelled_records: int
    added: int
    without_text: int
    contaminated: int
    already_in_base: int
    per_label: dict[str, int]

    def to_dict(self) -> dict[str, object]:
        return asdict(self)


def labelled_traffic(logs: str, cfg: SentinelConfig) -> tuple[pd.DataFrame, int, int]:
    """(rows, labelled records, labelled records without text) of the reviewer-labelled logged traffic."""
    labels, _ = load_feedback(logs, cfg.labels)
    records = [r for r in read_logs(logs).records if r["id"] in labels]
    latest = {r["id"]: r for r in records}  # one row per record id
    with_text = [r for r in latest.values() if isinstance(r.get("text"), str) and r["text"].strip()]
    rows = [
        {
            "text": r["text"],
            "label": cfg.labels.label2id[labels[r["id"]]],
            "id": f"{TRAFFIC_SOURCE}:{r['id']}",
            "source": f"{TRAFFIC_SOURCE}/{r.get('model_version') or 'unknown'}",
            "row": i,
        }
        for i, r in enumerate(with_text, start=1)
    ]
    return records_frame(rows), len(latest), len(latest) - len(with_text)


def run(
    base_data: str,
    logs: str,
    cfg: SentinelConfig,
    out_dir: str | Path,
    *,
    excludes: Sequence[str] = (),
) -> RetrainingData:
    base = load_dataset(base_data, cfg)
    traffic, labelled, without_text = labelled_traffic(logs, cfg)
    contaminated = already = 0
    if len(traffic) and excludes:
        exclusion, _ = Exclusion.from_files(list(excludes), cfg.split)
        mask = exclusion.contaminated(list(traffic["text"]))
        contaminated = int(sum(mask))
        traffic = traffic[[not m for m in mask]]
    if len(traffic):
        known = {dedup_key(t) for t in base["text"]}
        keys = [dedup_key(t) for t in traffic["text"]]
        duplicate = [k in known for k in keys]
        already = int(sum(duplicate))
        traffic = traffic[[not d for d in duplicate]]
        traffic = traffic[~pd.Series([dedup_key(t) for t in traffic["text"]], index=traffic.index).duplicated()]
    combined = pd.concat([base, traffic], ignore_index=True)
    out = str(out_dir)
    if not storage.is_gcs(out):
        Path(out).mkdir(parents=True, exist_ok=True)
    data_uri = storage.join(out, RETRAINING_DATA)
    storage.write_bytes(data_uri, frame_to_csv_bytes(combined))
    per_label = {cfg.labels.names[int(k)]: int(v) for k, v in traffic["label"].value_counts().sort_index().items()}
    result = RetrainingData(data_uri, len(base), labelled, len(traffic), without_text, contaminated, already, per_label)
    storage.write_text(storage.join(out, RETRAINING_REPORT), json.dumps(result.to_dict(), indent=2))
    return result
