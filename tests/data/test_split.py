"""The split stage: stratified, seeded, group-aware; blind sets stay whole and leak-free."""

from __future__ import annotations

import random
from pathlib import Path

import pandas as pd
import pytest

from prompt_sentinel.config import SentinelConfig, load_config
from prompt_sentinel.data.loading import records_frame
from prompt_sentinel.data.split import (
    SPLIT_NAMES,
    row_groups,
    split_dataset,
    split_report,
    union_labels,
)
from prompt_sentinel.errors import DataError
from prompt_sentinel.text import dedup_key

WORDS = [chr(ord("a") + i) * 3 for i in range(16)]  # "aaa", "bbb", ...


def _fullwidth(text: str) -> str:
    return "".join(chr(ord(c) + 0xFEE0) if "!" <= c <= "~" else c for c in text)


def variants(base: str, n: int) -> list[str]:
    """``n`` texts equal to ``base`` after normalization (case, spacing, punctuation, full-width letters)."""
    forms = [base, base.upper(), base + " !!", "  " + base.replace(" ", "   "), base.title() + "?", _fullwidth(base)]
    return forms[:n]


def make_frame(class_sizes: dict[int, int], seed: int = 0) -> pd.DataFrame:
    """Rows per class as asked; about a third of them in near-duplicate groups of 2-6 rows."""
    rng = random.Random(seed)
    rows = []
    for label, size in class_sizes.items():
        made = 0
        while made < size:
            base = f"class {label} prompt {made} " + " ".join(rng.sample(WORDS, 4))
            group = min(rng.choice([1, 1, 1, 1, 2, 3, 6]), size - made)
            for text in variants(base, group):
                rows.append({"text": text, "label": label, "id": f"c{label}-{len(rows)}", "source": "synthetic"})
            made += group
    rng.shuffle(rows)
    return records_frame([{**r, "row": i + 2} for i, r in enumerate(rows)])


@pytest.fixture
def cfg() -> SentinelConfig:
    return load_config()


def assert_groups_within_one_split(splits: dict[str, pd.DataFrame]) -> None:
    owner: dict[str, str] = {}
    for name, frame in splits.items():
        for text in frame["text"]:
            assert owner.setdefault(dedup_key(text), name) == name, (
                f"{text!r} is in {owner[dedup_key(text)]} and {name}"
            )


def test_stratified_group_aware_split(cfg: SentinelConfig) -> None:
    df = make_frame({0: 500, 1: 300, 2: 120})
    groups = df["text"].map(dedup_key)
    assert groups.nunique() < len(df) - 100  # the fixture really has many near-duplicate groups
    splits = split_dataset(df, cfg)
    assert sum(len(s) for s in splits.values()) == len(df)
    assert set().union(*(set(s["id"]) for s in splits.values())) == set(df["id"])
    assert_groups_within_one_split(splits)
    overall = df["label"].value_counts(normalize=True)
    for name in SPLIT_NAMES:
        part = splits[name]
        assert abs(len(part) / len(df) - getattr(cfg.split, name)) < 0.02, name
        share = part["label"].value_counts(normalize=True)
        for label in (0, 1, 2):
            assert abs(share[label] - overall[label]) < 0.03, (name, label)
        assert part["row"].is_monotonic_increasing  # original order kept


def test_same_seed_same_split_regardless_of_row_order(cfg: SentinelConfig) -> None:
    df = make_frame({0: 200, 1: 120, 2: 60})
    first = split_dataset(df, cfg)
    again = split_dataset(df, cfg)
    shuffled = split_dataset(df.sample(frac=1.0, random_state=7).reset_index(drop=True), cfg)
    other_seed = split_dataset(df, cfg.model_copy(update={"seed": cfg.seed + 1}))
    for name in SPLIT_NAMES:
        pd.testing.assert_frame_equal(first[name], again[name])
        assert set(first[name]["id"]) == set(shuffled[name]["id"])
    assert set(first["test"]["id"]) != set(other_seed["test"]["id"])


def test_small_classes_reach_every_split(cfg: SentinelConfig) -> None:
    df = make_frame({0: 40, 1: 5, 2: 5}, seed=3)
    df["text"] = [f"unique text {i}" for i in range(len(df))]  # no groups: every row can move
    splits = split_dataset(df, cfg)
    for name in SPLIT_NAMES:
        assert set(splits[name]["label"]) == {0, 1, 2}, name


def test_zero_validation_ratio_and_n_classes() -> None:
    names = ["safe", "spam", "jailbreak", "exfiltration"]
    cfg = load_config(
        overrides={
            "labels.names": names,
            "labels.benign": "safe",
            "labels.suspicious": "spam",
            "labels.malicious": "jailbreak",
            "split.train": 0.8,
            "split.validation": 0.0,
            "split.test": 0.2,
        }
    )
    df = make_frame({0: 120, 1: 60, 2: 60, 3: 40})
    splits = split_dataset(df, cfg)
    assert splits["validation"].empty and list(splits["validation"].columns) == list(df.columns)
    assert set(splits["train"]["label"]) == set(splits["test"]["label"]) == {0, 1, 2, 3}
    assert abs(len(splits["test"]) / len(df) - 0.2) < 0.03


def test_bad_input_is_refused(cfg: SentinelConfig) -> None:
    with pytest.raises(DataError, match=r"class ids 0\.\.2 \[.*\]; found 5 at index 1"):
        split_dataset(pd.DataFrame({"text": ["a", "b"], "label": [0, 5]}), cfg)
    with pytest.raises(DataError, match=r"lacks column\(s\) \['label'\]"):
        split_dataset(pd.DataFrame({"text": ["a"]}), cfg)


def write_csv(df: pd.DataFrame, path: Path) -> str:
    df.drop(columns=["row"]).to_csv(path, index=False)
    return str(path)


def test_near_duplicate_variants_never_straddle_splits(cfg: SentinelConfig) -> None:
    rng = random.Random(5)
    vocabulary = [f"word{i}" for i in range(200)]
    rows = []
    for family in range(60):
        label = family % 3
        base = rng.sample(vocabulary, 30)
        for variant in range(4):  # one template, one slot filled differently: not equal after normalization
            words = base[:]
            words[7] = f"name{family}x{variant}"  # a template slot filled differently
            rows.append({"text": " ".join(words), "label": label, "id": f"f{family}-{variant}", "source": "t"})
    for i in range(120):
        rows.append({"text": " ".join(rng.sample(vocabulary, 12)), "label": i % 3, "id": f"u{i}", "source": "t"})
    df = records_frame([{**r, "row": i + 2} for i, r in enumerate(rows)])
    assert df["text"].map(dedup_key).nunique() == len(df)  # exact grouping alone would see no groups at all
    splits = split_dataset(df, cfg)
    owner = {row_id: name for name, frame in splits.items() for row_id in frame["id"]}
    for family in range(60):
        assert len({owner[f"f{family}-{v}"] for v in range(4)}) == 1, family
    # groups computed once by the caller give the same split and the same report statistics
    keys = row_groups(df["text"].tolist(), cfg.split)
    given = split_dataset(df, cfg, keys)
    for name in SPLIT_NAMES:
        pd.testing.assert_frame_equal(given[name], splits[name])
    assert split_report(given, cfg, keys)["groups"] == split_report(splits, cfg)["groups"]
    assert split_report(splits, cfg)["groups"]["near_duplicate_groups"] == 60
    with pytest.raises(DataError, match="split_dataset: 3 group keys for 360 rows"):
        split_dataset(df, cfg, keys[:3])
    exact_only = split_dataset(df, load_config(None, ["split.near_duplicate_jaccard=1.0"]))
    owner = {row_id: name for name, frame in exact_only.items() for row_id in frame["id"]}
    assert any(len({owner[f"f{family}-{v}"] for v in range(4)}) > 1 for family in range(60))


# --- explicit groups (the `group` column) ------------------------------------------------------------------


def templated_frame(templates: int = 40, per_template: int = 5, seed: int = 3) -> pd.DataFrame:
    """Rows of one template share a `group` but no words beyond the template's two: no near-duplicates."""
    rng = random.Random(seed)
    vocabulary = [f"w{i}" for i in range(3000)]
    rows = []
    for t in range(templates):
        for v in range(per_template):
            text = f"template{t} " + " ".join(rng.sample(vocabulary, 15))
            rows.append({"text": text, "label": t % 3, "id": f"t{t}-{v}", "source": "s/x", "group": f"tpl-{t}"})
    for i in range(90):
        text = " ".join(rng.sample(vocabulary, 15))
        rows.append({"text": text, "label": i % 3, "id": f"u{i}", "source": "s/y", "group": ""})
    return records_frame([{**r, "row": i + 2} for i, r in enumerate(rows)])


def test_explicit_groups_keep_template_variants_in_one_split(cfg: SentinelConfig) -> None:
    df = templated_frame()
    assert len(set(row_groups(df["text"].tolist(), cfg.split))) == len(df)  # text alone groups nothing
    splits = split_dataset(df, cfg)
    owner = {row_id: name for name, frame in splits.items() for row_id in frame["id"]}
    for t in range(40):
        assert len({owner[f"t{t}-{v}"] for v in range(5)}) == 1, t
    assert all("group" in frame.columns for frame in splits.values())
    assert split_report(splits, cfg)["groups"]["explicit_groups"] == 40
    # the same frame without the column: template variants are scattered over the splits
    scattered = split_dataset(df.drop(columns=["group"]), cfg)
    owner = {row_id: name for name, frame in scattered.items() for row_id in frame["id"]}
    assert any(len({owner[f"t{t}-{v}"] for v in range(5)}) > 1 for t in range(40))


def test_explicit_and_near_duplicate_groups_are_joined(cfg: SentinelConfig) -> None:
    texts = [
        "alpha beta gamma delta epsilon zeta eta theta",  # 0: group g1
        "one two three four five six seven eight",  # 1: group g1
        "ALPHA beta gamma delta epsilon zeta eta theta!",  # 2: a near-copy of 0, no group
        "completely different words that share nothing else",  # 3: group g2
        "yet another unrelated prompt about the weather today",  # 4: no group
    ]
    keys = row_groups(texts, cfg.split, ["g1", "g1", "", "g2", ""])
    assert keys[0] == keys[1] == keys[2]  # the near-copy joins the explicit group transitively
    assert len({keys[0], keys[3], keys[4]}) == 3
    assert union_labels(4, ["a", "", "b", "a"], [None, "x", "x", ""]) == [0, 1, 1, 0]
    with pytest.raises(DataError, match="2 labels for 3 rows"):
        union_labels(3, ["a", "b"])


def test_group_column_survives_the_cleaned_and_split_files(tmp_path: Path, cfg: SentinelConfig) -> None:
    from prompt_sentinel.data.loading import frame_to_csv_bytes, load_dataset, read_data_csv

    source = tmp_path / "data.csv"
    pd.DataFrame({"text": ["=cmd|' /C calc'!A0", "hello there"], "label": [2, 0], "group": ["=tpl-1", ""]}).to_csv(
        source, index=False
    )
    loaded = load_dataset(str(source), cfg)
    assert loaded["group"].tolist() == ["=tpl-1", ""]
    written = tmp_path / "cleaned.csv"
    written.write_bytes(frame_to_csv_bytes(loaded))
    assert written.read_text().splitlines()[0] == '"id","text","label","source","group","row"'
    assert "'=tpl-1" in written.read_text()  # spreadsheet-escaped like every string column
    for back in (read_data_csv(str(written)), load_dataset(str(written), cfg)):
        assert back["group"].tolist() == ["=tpl-1", ""] and back["text"].tolist() == loaded["text"].tolist()
    # a file written before the group column existed is still read as this package's own (unescaped) file
    legacy = tmp_path / "legacy.csv"
    legacy.write_text('"id","text","label","source","row"\n"a","\'=1+1",2,"",2\n')
    assert load_dataset(str(legacy), cfg)["text"].tolist() == ["=1+1"]
    assert read_data_csv(str(legacy))["group"].tolist() == [""]
    # a configured column name
    renamed = tmp_path / "renamed.csv"
    pd.DataFrame({"text": ["x y z"], "label": [0], "template": ["t7"]}).to_csv(renamed, index=False)
    other = load_config(None, ["data.group_column=template"])
    assert load_dataset(str(renamed), other)["group"].tolist() == ["t7"]
