"""The adaptive class-weight controller on scripted confusion-matrix sequences (no torch, no training)."""

from __future__ import annotations

import json

import pytest

from prompt_sentinel.config import ControllerConfig, LabelConfig
from prompt_sentinel.errors import TrainingError
from prompt_sentinel.training.transformer.controller import AlphaController, build_targets

LABELS = LabelConfig()  # 0 benign, 1 suspicious, 2 malicious

# rows = true class, columns = predicted class (100 rows per class)
ALL_GOOD = [[100, 0, 0], [0, 100, 0], [0, 0, 100]]
# recall(malicious) = 0.80 and P(pred benign | malicious) = 0.10: both malicious targets off
MISSES_THREATS = [[100, 0, 0], [0, 100, 0], [10, 10, 80]]
# precision(suspicious) = 100/130: 25 benign and 5 malicious rows leak into "suspicious"
SUSPICIOUS_LEAKS = [[75, 25, 0], [0, 100, 0], [0, 5, 95]]


def controller(**overrides: float | int | bool) -> AlphaController:
    cfg = ControllerConfig(**{"patience": 2, "alpha_step": 0.5, "alpha_min": 0.5, "alpha_max": 2.5, **overrides})
    return AlphaController([1.0, 1.0, 1.5], LABELS, cfg)


def test_weights_change_only_after_patience_evaluations_off_target() -> None:
    ctl = controller()
    assert ctl.observe(MISSES_THREATS, step=10) == []  # 1st miss: patience not reached
    assert ctl.alpha == [1.0, 1.0, 1.5]
    actions = ctl.observe(MISSES_THREATS, step=20)  # 2nd consecutive miss: act
    assert [(a["class_id"], a["from"], a["to"]) for a in actions] == [(2, 1.5, 2.0)]
    # both malicious targets point at class 2: it is raised once, with both reasons
    assert sorted(actions[0]["targets"]) == ["missed_threat_rate", "recall_c2"]
    assert ctl.alpha == [1.0, 1.0, 2.0]
    # the counter restarted: the next miss alone does not act, the one after does
    assert ctl.observe(MISSES_THREATS, step=30) == []
    assert ctl.observe(MISSES_THREATS, step=40)[0]["to"] == 2.5
    # clipped at alpha_max
    ctl.observe(MISSES_THREATS, step=50)
    last = ctl.observe(MISSES_THREATS, step=60)
    assert last[0]["to"] == 2.5 and last[0]["clipped"] is True
    assert ctl.alpha == [1.0, 1.0, 2.5]


def test_a_good_evaluation_resets_the_patience_counter() -> None:
    ctl = controller()
    ctl.observe(MISSES_THREATS, step=1)
    ctl.observe(ALL_GOOD, step=2)  # back on target
    assert ctl.observe(MISSES_THREATS, step=3) == []  # only one consecutive miss again
    assert ctl.alpha == [1.0, 1.0, 1.5]


def test_low_suspicious_precision_raises_the_class_that_leaks_into_it() -> None:
    ctl = controller(patience=1)
    actions = ctl.observe(SUSPICIOUS_LEAKS, step=5)
    # f1_c0 = 2·1·.75/1.75 = .857 < .90 also points at benign: one raise of class 0 with both reasons
    assert [(a["class_id"], sorted(a["targets"])) for a in actions] == [(0, ["f1_c0", "precision_c1"])]
    assert ctl.alpha == [1.5, 1.0, 1.5]


def test_never_predicted_suspicious_raises_suspicious_itself() -> None:
    ctl = controller(patience=1, target_f1_c0=0.0)
    actions = ctl.observe([[100, 0, 0], [50, 0, 50], [0, 0, 100]], step=1)
    assert [a["class_id"] for a in actions] == [1]


def test_false_alarms_raise_benign_and_lower_bound_is_respected() -> None:
    ctl = AlphaController(
        [0.25, 1.0, 1.0], LABELS, ControllerConfig(patience=1, alpha_step=0.1, alpha_min=0.5, alpha_max=4.0)
    )
    # 5% of benign prompts blocked as malicious > max_false_alarm_rate 0.02
    actions = ctl.observe([[95, 0, 5], [0, 100, 0], [0, 0, 100]], step=1)
    assert [(a["class_id"], a["targets"]) for a in actions] == [(0, ["false_alarm_rate"])]
    assert ctl.alpha[0] == 0.5  # 0.25 + 0.1 is below alpha_min: clipped up into range


def test_trajectory_is_recorded_and_json_round_trips() -> None:
    ctl = controller()
    for step, cm in ((10, MISSES_THREATS), (20, MISSES_THREATS), (30, ALL_GOOD)):
        ctl.observe(cm, step=step, epoch=step / 10)
    traj = ctl.trajectory
    assert [t["evaluation"] for t in traj] == [0, 1, 2, 3]
    assert [t["alpha"] for t in traj] == [[1.0, 1.0, 1.5], [1.0, 1.0, 1.5], [1.0, 1.0, 2.0], [1.0, 1.0, 2.0]]
    assert traj[1]["off_target"] == ["recall_c2", "missed_threat_rate"]
    assert traj[3]["off_target"] == [] and traj[3]["metrics"]["recall_c2"] == 1.0

    restored = controller()
    restored.load_state_dict(json.loads(json.dumps(ctl.state_dict())))
    assert restored.alpha == ctl.alpha and restored.trajectory == ctl.trajectory
    # counters survive a resume: one more miss after restoring continues the streak from state
    ctl.observe(MISSES_THREATS, step=40)
    restored.observe(MISSES_THREATS, step=40)
    assert restored.state_dict() == ctl.state_dict()


def test_disabled_controller_records_but_never_changes_weights() -> None:
    ctl = controller(enabled=False, patience=1)
    for step in range(1, 5):
        assert ctl.observe(MISSES_THREATS, step=step) == []
    assert ctl.alpha == [1.0, 1.0, 1.5]
    assert len(ctl.trajectory) == 5 and ctl.trajectory[-1]["off_target"]


def test_roles_come_from_the_label_config() -> None:
    # a 2-class label set without a suspicious role: no precision_c1 target; roles map to other ids
    labels = LabelConfig(names=["attack", "safe"], benign="safe", suspicious=None, malicious="attack")
    cfg = ControllerConfig(patience=1, alpha_step=1.0, target_f1_c0=0.8)
    assert [t.name for t in build_targets(cfg, labels)] == [
        "recall_c2",
        "f1_c0",
        "false_alarm_rate",
        "missed_threat_rate",
    ]
    ctl = AlphaController([1.0, 1.0], labels, cfg)
    # 30% of attacks (class 0) pass as safe (f1 of "safe" .87 is on target): raise "attack" (id 0), not id 2
    actions = ctl.observe([[70, 30], [0, 100]], step=1)
    assert [a["label"] for a in actions] == ["attack"]
    assert ctl.alpha == [2.0, 1.0]
    # with no security roles at all there is nothing to control
    plain = LabelConfig(names=["a", "b", "c"], benign=None, suspicious=None, malicious=None)
    assert build_targets(cfg, plain) == []


def test_bad_inputs_are_rejected() -> None:
    with pytest.raises(TrainingError, match="3"):
        AlphaController([1.0, 1.0], LABELS, ControllerConfig())
    with pytest.raises(TrainingError, match="alpha_min"):
        AlphaController([1.0, 1.0, 1.0], LABELS, ControllerConfig(alpha_min=3.0, alpha_max=2.0))
    with pytest.raises(TrainingError, match="3x3"):
        controller().observe([[1, 0], [0, 1]], step=1)
