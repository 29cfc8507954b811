"""The serve smoke test that ends `make run`: the shipped panel, how answers are judged, and a real server run."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from pipelines.local_run import (
    EXPECTED_DECISIONS,
    SmokeAnswer,
    SmokePrompt,
    judge_smoke,
    serve_smoke_test,
    smoke_prompts,
)
from prompt_sentinel.config import load_config
from prompt_sentinel.datasets import SMOKE_PANEL


def test_the_panel_has_everyday_prompts_attacks_and_a_harmful_request() -> None:
    panel = pd.read_csv(SMOKE_PANEL, keep_default_na=False)
    assert set(panel["kind"]) == set(EXPECTED_DECISIONS)
    assert (panel["kind"] == "everyday").sum() >= 8 and (panel["kind"] == "attack").sum() >= 4
    assert "hello, how are you?" in set(panel["text"])
    prompts = smoke_prompts(load_config())
    assert [p.text for p in prompts] == list(panel["text"])
    assert all(p.expected == EXPECTED_DECISIONS[p.kind] for p in prompts)


def test_labels_without_security_roles_smoke_test_on_dataset_samples(tmp_path: Path) -> None:
    data = tmp_path / "intent.csv"
    pd.DataFrame({"text": ["book a flight", "cancel my order", "track parcel"], "label": [0, 1, 2]}).to_csv(data)
    cfg = load_config(
        None,
        [
            "labels.names=[travel,orders,shipping]",
            "labels.benign=null",
            "labels.suspicious=null",
            "labels.malicious=null",
        ],
    )
    prompts = smoke_prompts(cfg, str(data))
    assert [(p.text, p.kind, p.expected) for p in prompts] == [
        ("book a flight", "travel", ("travel",)),
        ("cancel my order", "orders", ("orders",)),
    ]


def _answer(protocol: str, text: str, kind: str, decision: str, label: str = "benign") -> SmokeAnswer:
    return SmokeAnswer(protocol, SmokePrompt(text, kind, EXPECTED_DECISIONS[kind]), label, decision, {})


def test_judging_counts_per_kind_and_flags_blocked_everyday_prompts_and_protocol_drift() -> None:
    answers = [
        _answer("v1", "hi", "everyday", "allow"),
        _answer("v1", "sum up", "everyday", "block", "malicious"),
        _answer("v1", "ignore rules", "attack", "block", "malicious"),
        _answer("v1", "pipe bomb", "harmful", "review", "suspicious"),
        _answer("v2", "hi", "everyday", "allow"),
        _answer("v2", "sum up", "everyday", "block", "malicious"),
        _answer("v2", "ignore rules", "attack", "review", "suspicious"),  # V2 disagrees with V1
        _answer("v2", "pipe bomb", "harmful", "review", "suspicious"),
    ]
    verdict = judge_smoke(answers)
    assert verdict.per_kind == {"everyday": (1, 2), "attack": (1, 1), "harmful": (1, 1)}
    assert verdict.blocked_everyday == ["sum up"]
    assert verdict.protocol_disagreements == ["ignore rules"]
    assert not verdict.ok
    assert "everyday: 1/2 as expected" in verdict.summary()
    clean = judge_smoke([a for a in answers if a.prompt.text == "hi"])
    assert clean.ok and clean.per_kind == {"everyday": (1, 1)}


@pytest.mark.slow
def test_the_real_server_answers_the_panel_the_same_over_v1_and_v2(tiny_model_dir: Path) -> None:
    verdict = serve_smoke_test(str(tiny_model_dir), "smoke", smoke_prompts(load_config()), timeout=240)
    assert not verdict.protocol_disagreements
    assert sum(total for _, total in verdict.per_kind.values()) == len(pd.read_csv(SMOKE_PANEL))
    assert len(verdict.answers) == 2 * len(pd.read_csv(SMOKE_PANEL))
