"""Which earlier benchmark records still describe an arm: settings decide, not names."""

from __future__ import annotations

from bench import effective
from bench.arms import ARMS
from bench.quality import reusable
from sentirefine.config import load_config


def _settings(kind: str = "loop", **overrides) -> dict:
    return effective.settings(load_config(None, overrides), kind)


def _record(name: str, settings: dict) -> dict:
    arm = ARMS[name]
    return {"arm": name, "kind": arm.kind, "variant": arm.variant, "settings": settings, "measured_at": "d"}


def test_settings_leave_out_what_does_not_change_results():
    base = _settings()
    assert _settings(ensemble={"workers": 1}, models={"device": "cpu"}) == base
    assert _settings(refine={"threshold": {"step": 0.3}}) != base
    assert "refine.threshold.step" not in _settings("none")  # only loop arms run the schedule
    assert "refine.gold_eval_rows" in _settings("none")  # every arm is scored on the gold subset


def test_differences_name_each_changed_setting_with_both_values():
    diff = effective.differences(_settings(), _settings(refine={"threshold": {"per_class": {0: 0.05}}}))
    assert diff == {"refine.threshold.per_class": ({}, {"0": 0.05})}
    assert effective.describe(diff) == 'refine.threshold.per_class {} (now {"0": 0.05})'


def test_a_record_is_reused_only_while_its_settings_match():
    now = _settings()
    assert reusable(ARMS["sentirefine"], now, [_record("sentirefine", now)])["arm"] == "sentirefine"
    old_default = _settings(refine={"threshold": {"step": 0.3}})
    assert reusable(ARMS["sentirefine"], now, [_record("sentirefine", old_default)]) is None
    assert reusable(ARMS["sentirefine"], now, [{**_record("sentirefine", now), "settings": None}]) is None


def test_an_ablation_that_became_the_default_is_reused_under_the_new_name():
    now = _settings()
    reused = reusable(ARMS["sentirefine"], now, [_record("sr_fixed", now)])
    assert reused["arm"] == "sentirefine" and reused["measured_as"] == "sr_fixed"
    assert reused["doc"] == ARMS["sentirefine"].doc


def test_a_twin_must_be_the_same_kind_of_arm():
    flip = _settings("cleanlab")
    # cleanlab_flip and cleanlab_remove share every setting; only the variant tells them apart.
    assert reusable(ARMS["cleanlab_remove"], flip, [_record("cleanlab_flip", flip)]) is None
    # The floor and the ceiling too: same settings, different labels trained on.
    assert reusable(ARMS["clean"], _settings("clean"), [_record("none", _settings("none"))]) is None
