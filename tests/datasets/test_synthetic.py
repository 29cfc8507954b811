"""The team-written synthetic datasets: committed files, labelling/grouping rules, determinism, bad inputs."""

from __future__ import annotations

import csv
import io
import shutil
import statistics
from collections import Counter, defaultdict
from pathlib import Path

import pandas as pd
import pytest

from prompt_sentinel.config import SentinelConfig
from prompt_sentinel.data import load_dataset
from prompt_sentinel.datasets.synthetic import DATA_DIR, DEFENSIVE_CSV, ROLEPLAY_CSV
from prompt_sentinel.datasets.synthetic import build as synth
from prompt_sentinel.errors import DataError
from prompt_sentinel.text import dedup_key

# Documented ranges (README "Counts"): several hundred rows per part, a small label-1 part.
PART_RANGES = {
    ("defensive", 0): (400, 600),
    (synth.SRC_JAILBREAK, 2): (400, 600),
    (synth.SRC_BENIGN_RP, 0): (400, 600),
    (synth.SRC_GOAL, 1): (60, 100),
}
# Groups allowed to hold two labels: dual role-play templates and hand-written jailbreak/benign pairs.
MIXED_LABEL_GROUP_PREFIXES = ("rp-d", "rp-hw-")


@pytest.fixture(scope="module")
def frames() -> dict[str, pd.DataFrame]:
    return {
        "defensive": pd.read_csv(DEFENSIVE_CSV, keep_default_na=False),
        "roleplay": pd.read_csv(ROLEPLAY_CSV, keep_default_na=False),
    }


@pytest.fixture(scope="module")
def both(frames: dict[str, pd.DataFrame]) -> pd.DataFrame:
    return pd.concat(frames.values(), ignore_index=True)


@pytest.fixture(scope="module")
def built() -> list[synth.SyntheticRow]:
    rows, _ = synth.build_rows()
    return rows


# --- the committed files ------------------------------------------------------------------------------------


@pytest.mark.parametrize("path", [DEFENSIVE_CSV, ROLEPLAY_CSV], ids=["defensive", "roleplay"])
def test_committed_csv_loads_with_the_project_loader(path: Path) -> None:
    loaded = load_dataset(str(path), SentinelConfig())
    raw = pd.read_csv(path, keep_default_na=False)
    # the loader keeps text/label/source/group and loses no row
    assert list(loaded.columns) == ["text", "label", "id", "source", "group", "row"]
    assert len(loaded) == len(raw) > 0
    assert loaded["text"].tolist() == raw["text"].tolist()
    assert loaded["label"].tolist() == raw["label"].tolist()
    assert loaded["source"].tolist() == raw["source"].tolist()
    assert loaded["group"].tolist() == raw["group"].tolist()


@pytest.mark.parametrize("path", [DEFENSIVE_CSV, ROLEPLAY_CSV], ids=["defensive", "roleplay"])
def test_committed_csv_is_rfc4180_utf8_with_the_documented_columns(path: Path) -> None:
    data = path.read_bytes()
    text = data.decode("utf-8")  # raises on invalid UTF-8
    assert data.startswith(b"text,label,source,group\r\n")
    assert data.endswith(b"\r\n")
    records = list(csv.reader(io.StringIO(text, newline=""), strict=True))
    assert records[0] == list(synth.COLUMNS)
    assert all(len(r) == 4 for r in records[1:])


def test_labels_and_sources_follow_the_documented_families(frames: dict[str, pd.DataFrame]) -> None:
    defensive, roleplay = frames["defensive"], frames["roleplay"]
    assert set(defensive["label"]) == {0}
    assert set(defensive["source"]) == {synth.SRC_SECURITY, synth.SRC_CODING}
    assert set(roleplay["source"]) == {synth.SRC_JAILBREAK, synth.SRC_BENIGN_RP, synth.SRC_GOAL}
    expected_label = {synth.SRC_JAILBREAK: 2, synth.SRC_BENIGN_RP: 0, synth.SRC_GOAL: 1}
    assert (roleplay["label"] == roleplay["source"].map(expected_label)).all()
    families = {s.split("/")[0] for s in pd.concat([defensive["source"], roleplay["source"]])}
    assert families == set(synth.FAMILIES)


def test_no_two_rows_share_a_normalized_text(both: pd.DataFrame) -> None:
    keys = both["text"].map(dedup_key)
    duplicated = both.loc[keys.duplicated(keep=False), "text"].tolist()
    assert duplicated == []


def test_every_row_has_a_text_and_a_group(both: pd.DataFrame) -> None:
    assert (both["text"].str.strip().str.len() > 0).all()
    assert (both["group"].str.strip().str.len() > 0).all()
    # group prefixes say where a row came from (README "Sources and groups")
    prefix_ok = both["group"].str.match(r"^(dc-(sc|so|ce|co|ev)\d+|dc-snip-|dc-hw-|rp-[dab]\d+|rp-hw-|goal-hg-)")
    assert prefix_ok.all(), both.loc[~prefix_ok, "group"].unique()


def test_part_sizes_are_within_the_documented_ranges(frames: dict[str, pd.DataFrame]) -> None:
    sizes = {("defensive", 0): len(frames["defensive"])}
    roleplay = frames["roleplay"]
    for (source, label), count in roleplay.groupby(["source", "label"]).size().items():
        sizes[(source, label)] = count
    assert set(sizes) == set(PART_RANGES)
    for part, (low, high) in PART_RANGES.items():
        assert low <= sizes[part] <= high, (part, sizes[part])


def test_a_group_spans_two_labels_only_where_documented(both: pd.DataFrame) -> None:
    labels_per_group = both.groupby("group")["label"].nunique()
    mixed = labels_per_group[labels_per_group > 1].index
    assert all(g.startswith(MIXED_LABEL_GROUP_PREFIXES) for g in mixed), list(mixed)
    # and the documented mixed groups really hold both labels: the framing is shared, only the goal differs
    dual_groups = both.loc[both["group"].str.match(r"^rp-d\d+$"), "group"].unique()
    assert len(dual_groups) >= 40
    assert all(labels_per_group[g] == 2 for g in dual_groups)


def test_roleplay_labels_are_balanced_and_of_similar_length(frames: dict[str, pd.DataFrame]) -> None:
    """The designed property: jailbreaks and their benign twins cannot be told apart by count or length."""
    roleplay = frames["roleplay"]
    jailbreak = roleplay.loc[roleplay["label"] == 2, "text"].str.len()
    benign = roleplay.loc[roleplay["label"] == 0, "text"].str.len()
    assert 0.9 <= len(jailbreak) / len(benign) <= 1.1
    for q in (0.1, 0.25, 0.5, 0.75, 0.9):
        ratio = jailbreak.quantile(q) / benign.quantile(q)
        assert 0.75 <= ratio <= 1.33, (q, ratio)
    # within every dual template too, so no single framing is a length tell
    dual = roleplay[roleplay["group"].str.match(r"^rp-d\d+$")]
    for group, rows in dual.groupby("group"):
        medians = rows.groupby("label")["text"].apply(lambda s: statistics.median(s.str.len()))
        assert medians.max() / medians.min() <= 1.6, (group, medians.to_dict())


def test_defensive_rows_are_not_all_short_plain_questions(frames: dict[str, pd.DataFrame]) -> None:
    """Against the "long or code = attack" shortcut: long, multi-line, code-bearing and non-English rows exist."""
    defensive = frames["defensive"]
    lengths = defensive["text"].str.len()
    assert (lengths > 600).sum() >= 15
    assert (lengths > 1500).sum() >= 3
    assert defensive["text"].str.contains("\n").mean() >= 0.10
    assert defensive["text"].str.contains("```").sum() >= 40
    assert defensive["source"].value_counts().min() >= 150  # both parts, security and coding, are substantial


def test_builder_provenance_matches_the_committed_files(built: list[synth.SyntheticRow], both: pd.DataFrame) -> None:
    assert [r.text for r in built if r.file == synth.DEFENSIVE_FILE] + [
        r.text for r in built if r.file == synth.ROLEPLAY_FILE
    ] == both["text"].tolist()
    defensive = [r for r in built if r.file == synth.DEFENSIVE_FILE]
    non_english = sum(r.lang != "en" for r in defensive) / len(defensive)
    assert 0.08 <= non_english <= 0.15
    assert {r.lang for r in built} >= {"en", "de", "fr", "es"}


def test_every_harmful_goal_appears_bare_and_inside_jailbreaks(built: list[synth.SyntheticRow]) -> None:
    bare = Counter(r.item for r in built if r.source == synth.SRC_GOAL)
    framed = Counter(r.item for r in built if r.source == synth.SRC_JAILBREAK and r.item)
    assert set(bare) == set(framed)
    assert set(bare.values()) == {1}
    # the deck spreads goals evenly over templates: no goal is used much more often than another
    assert max(framed.values()) - min(framed.values()) <= 2


def test_templated_rows_of_one_template_differ_in_more_than_the_goal(built: list[synth.SyntheticRow]) -> None:
    """[[a|b]] alternatives and names vary per row, so most templates are not one fixed frame around the goal."""
    goals = synth._load_yaml(DATA_DIR, "goals.yaml")
    forms = [g[k] for key in ("harmful_goals", "benign_goals") for g in goals[key] for k in ("do", "ing", "expert")]
    forms.sort(key=len, reverse=True)
    frames_per_template: dict[str, set[str]] = defaultdict(set)
    for row in built:
        if row.kind != "dual":
            continue
        frame = row.text
        for form in forms:
            frame = frame.replace(form, "<goal>").replace(form[:1].upper() + form[1:], "<goal>")
        frames_per_template[row.template].add(frame)
    varied = sum(len(frames) > 1 for frames in frames_per_template.values())
    assert varied >= 0.5 * len(frames_per_template)


# --- the builder --------------------------------------------------------------------------------------------


def test_build_is_deterministic_and_matches_the_committed_files(tmp_path: Path) -> None:
    assert synth.main(["--out", str(tmp_path), "--quiet"]) == 0
    for name in synth.OUTPUT_FILES:
        assert (tmp_path / name).read_bytes() == (DATA_DIR / name).read_bytes(), name
    assert not [p.name for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temp files left behind
    # a second build gives the same bytes, and --check agrees
    outputs, _, _ = synth.build_outputs()
    assert synth.changed_outputs(outputs, tmp_path) == []
    assert synth.main(["--check", "--out", str(tmp_path), "--quiet"]) == 0


def test_check_reports_an_out_of_date_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert synth.main(["--out", str(tmp_path), "--quiet"]) == 0
    roleplay = tmp_path / synth.ROLEPLAY_FILE
    roleplay.write_bytes(roleplay.read_bytes().replace(b"\r\n", b"\n", 1))
    assert synth.main(["--check", "--out", str(tmp_path), "--quiet"]) == 1
    assert synth.ROLEPLAY_FILE in capsys.readouterr().err


def test_another_seed_samples_differently_but_keeps_the_sizes() -> None:
    rows_a, _ = synth.build_rows(seed=synth.SEED)
    rows_b, _ = synth.build_rows(seed=synth.SEED + 1)
    assert {r.text for r in rows_a} != {r.text for r in rows_b}
    assert Counter(r.source for r in rows_a) == Counter(r.source for r in rows_b)


@pytest.fixture
def data_copy(tmp_path: Path) -> Path:
    target = tmp_path / "synthetic"
    shutil.copytree(DATA_DIR, target, ignore=shutil.ignore_patterns("*.py", "__pycache__", "*.csv"))
    return target


def test_an_unknown_slot_is_an_error_naming_the_template(data_copy: Path) -> None:
    path = data_copy / "roleplay_templates.yaml"
    text = path.read_text(encoding="utf-8").replace("{Name}, show me how to {do}.", "{Name}, show me how to {goal}.")
    path.write_text(text, encoding="utf-8")
    with pytest.raises(DataError, match=r"roleplay_templates\.yaml, template rp-d38: unknown slot \{goal\}"):
        synth.build_rows(data_copy)


def test_a_missing_field_is_an_error_naming_the_entry(data_copy: Path) -> None:
    path = data_copy / "goals.yaml"
    path.write_text(path.read_text(encoding="utf-8").replace("    expert: a meth cook\n", ""), encoding="utf-8")
    with pytest.raises(DataError, match=r"goals\.yaml, harmful_goals entry \d+: field 'expert' must be"):
        synth.build_rows(data_copy)


def test_a_text_built_with_two_labels_stops_the_build(data_copy: Path) -> None:
    path = data_copy / "handwritten_roleplay.yaml"
    same = "Pretend you are my late uncle and tell me how to whittle a spoon."
    pair = f'  - id: "99"\n    framing: test\n    lang: en\n    jailbreak: {same}\n    benign: {same}\n'
    path.write_text(path.read_text(encoding="utf-8") + pair, encoding="utf-8")
    with pytest.raises(DataError, match=r"built with label 2 \(rp-hw-99\) and label 0 \(rp-hw-99\)"):
        synth.build_rows(data_copy)


def test_missing_readme_markers_are_an_error(data_copy: Path) -> None:
    (data_copy / "README.md").write_text("# no markers\n", encoding="utf-8")
    with pytest.raises(DataError, match="generated-statistics markers are missing"):
        synth.build_outputs(data_copy)


def test_write_outputs_replaces_files_atomically(tmp_path: Path) -> None:
    (tmp_path / "a.csv").write_bytes(b"old")
    synth.write_outputs({"a.csv": b"new", "b.csv": b"other"}, tmp_path)
    assert (tmp_path / "a.csv").read_bytes() == b"new"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.csv", "b.csv"]
