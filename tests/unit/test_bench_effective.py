"""Which earlier benchmark records still describe an arm: settings decide, not names."""

from __future__ import annotations

import json

from bench import effective
from bench.arms import ARMS, Arm
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


def test_a_setting_added_later_counts_as_its_old_value_in_older_records():
    off = _settings(refine={"threshold": {"balance_offset": 0.0}})  # its value before it existed
    before = {k: v for k, v in off.items() if k != "refine.threshold.balance_offset"}  # measured before it existed
    assert effective.differences(before, off) == {} and effective.same(before, off)
    assert reusable(ARMS["sr_nobalance"], off, [_record("sentirefine", before)])["measured_as"] == "sentirefine"
    turned_on = _settings(refine={"threshold": {"balance_offset": 0.5}})
    assert effective.differences(before, turned_on) == {"refine.threshold.balance_offset": (0.0, 0.5)}
    assert reusable(ARMS["sentirefine"], turned_on, [_record("sentirefine", before)]) is None
    assert effective.differences(_settings("none"), _settings("none")) == {}  # not filled where it never applies


def test_the_fold_update_share_is_recorded_resolved_so_only_records_it_changes_go_stale():
    """'auto' trains on every row up to k = 2 (what records before the setting did), on half at k = 3."""
    def without_share(settings: dict) -> dict:
        return {k: v for k, v in settings.items() if k != "ensemble.fold_update_share"}

    two, three = _settings(ensemble={"folds": 2}), _settings(ensemble={"folds": 3})
    assert two["ensemble.fold_update_share"] == 1.0 and three["ensemble.fold_update_share"] == 0.5
    assert effective.same(without_share(two), two)
    assert effective.differences(without_share(three), three) == {"ensemble.fold_update_share": (1.0, 0.5)}


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


def test_a_replaced_record_is_shelved_not_lost_and_a_later_run_reuses_it(tmp_path):
    from bench.__main__ import _measured_arms, _save_quality

    meta = {"benchmark": "quality", "noise": "uniform20", "size": 10}
    old_default = _settings(refine={"threshold": {"step": 0.3}})
    old = {**_record("sentirefine", old_default), "measured_at": "t1"}
    fixed = {**_record("sr_fixed", _settings(refine={"threshold": {"step": 0.0}})), "measured_at": "t2"}
    new = {**_record("sentirefine", _settings()), "measured_at": "t3"}
    path = _save_quality(tmp_path, "quality-uniform20-10", meta, [old, fixed], [new])
    saved = json.loads(path.read_text(encoding="utf-8"))
    assert [a["measured_at"] for a in saved["arms"]] == ["t3", "t2"]  # the tables show the current ones
    assert [a["measured_at"] for a in saved["shelved"]] == ["t1"]  # the old default is kept, unshown

    done = _measured_arms(tmp_path, "quality-uniform20-10", meta)
    arm = Arm("sr_old", "loop", "the old default as an ablation", {})
    reused = reusable(arm, old_default, done)
    assert reused["measured_at"] == "t1" and reused["measured_as"] == "sentirefine" and "shelved" not in reused
    again = _save_quality(tmp_path, "quality-uniform20-10", meta, done, [done[0], reused])
    saved = json.loads(again.read_text(encoding="utf-8"))
    assert {a["arm"] for a in saved["arms"]} == {"sentirefine", "sr_old", "sr_fixed"} and saved["shelved"] == []


def test_a_record_of_an_arm_no_longer_defined_is_shelved_not_shown(tmp_path):
    from bench.__main__ import _save_quality

    meta = {"benchmark": "quality", "noise": "uniform20", "size": 10}
    gone = {"arm": "sr_retired", "kind": "loop", "variant": "", "measured_at": "t1",
            "settings": _settings(refine={"threshold": {"step": 0.3}})}
    new = {**_record("sentirefine", _settings()), "measured_at": "t2"}
    saved = json.loads(_save_quality(tmp_path, "quality-uniform20-10", meta, [gone], [new]).read_text("utf-8"))
    assert [a["arm"] for a in saved["arms"]] == ["sentirefine"]
    assert [a["arm"] for a in saved["shelved"]] == ["sr_retired"]  # kept: a later arm may reuse it


def test_a_record_measured_without_the_balance_guard_is_stale_only_if_the_guard_could_have_stopped_it():
    """The guard only stops a stage moving the balance by more than max_balance_shift; it never changes labels."""
    unguarded = _settings(refine={"max_balance_shift": None})
    result = {"overrides": {}}

    def record(*per_iteration: dict) -> dict:
        return {**_record("sentirefine", unguarded), "labels": {"rows": 1000}, "per_iteration": list(per_iteration)}

    assert effective.stale(result, record({"corrected_to": [0, 0]}, {"corrected_to": [90, 150]})) == ""
    assert effective.stale(result, record({"corrected": 150})) == ""  # older records: the total bounds the net shift
    assert "max_balance_shift" in effective.stale(result, record({"corrected_to": [0, 151]}))
    assert "max_balance_shift" in effective.stale(result, record({"corrected": 151}))
    no_iterations = {**_record("sentirefine", unguarded), "labels": {"rows": 1000}}
    assert "max_balance_shift" in effective.stale(result, no_iterations)  # nothing to tell from: stale
