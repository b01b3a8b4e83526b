"""Ensemble maths and the relabelling policy, on arrays (no models needed)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from sentirefine.config import RefineConfig, ThresholdSchedule
from sentirefine.ensemble.combine import apply_temperature, combine, fit_temperature, member_weights
from sentirefine.ensemble.metrics import classification_metrics, confusion
from sentirefine.pipeline.policy import candidates, class_offsets, convergence, decide, flip_thresholds


def test_weights_follow_margin_over_chance():
    metrics = {"a": {"accuracy": 0.9, "log_loss": 0.3}, "b": {"accuracy": 0.7, "log_loss": 0.6},
               "c": {"accuracy": 0.5, "log_loss": 0.8}}
    w = member_weights(metrics, ["a", "b", "c"], "accuracy")
    assert w.sum() == pytest.approx(1) and w[0] == pytest.approx(2 * w[1]) and w[2] < 0.03
    lw = member_weights(metrics, ["a", "b", "c"], "log_loss")
    assert lw[0] == pytest.approx((math.log(2) - 0.3) / ((math.log(2) - 0.3) + (math.log(2) - 0.6) + 0.01))
    assert np.allclose(member_weights(metrics, ["a", "b", "c"], "equal"), 1 / 3)


def test_combine_soft_vote_and_confidence_rules():
    member_p = np.array([[0.9, 0.8, 0.2], [0.4, 0.45, 0.1]])
    w = np.array([0.5, 0.3, 0.2])
    out = combine(member_p, w)
    assert out.p_positive == pytest.approx([0.73, 0.355])
    assert out.predicted.tolist() == [1, 0]
    assert out.confidence == pytest.approx([0.73, 0.645])
    assert out.agreement == pytest.approx([2 / 3, 1.0])
    scaled = combine(member_p, w, rule="agreement", gamma=1.0)
    assert scaled.confidence == pytest.approx([0.73 * 2 / 3, 0.645])


def test_decide_threshold_oscillation_and_queue():
    refine = RefineConfig(threshold=ThresholdSchedule(start=0.8, step=0.05, max=0.95), llm_queue_below=0.6,
                          max_flips=1)
    rows = [
        (1, 0, 1, 0.90, 0),  # confident disagreement -> corrected
        (2, 0, 1, 0.79, 0),  # below threshold -> untouched
        (3, 1, 1, 0.55, 0),  # low confidence -> queued
        (4, 0, 1, 0.99, 0),  # already flipped once -> oscillation, frozen
        (5, 0, 1, 0.99, "frozen"),  # frozen rows are never touched
        (6, 0, 1, 0.99, "human"),  # nor are a person's labels, counted apart
    ]
    d = decide(rows, iteration=1, refine=refine, flip_counts={4: 1}, thresholds=flip_thresholds(refine, 1))
    assert [(c.sid, c.old_label, c.new_label) for c in d.changes] == [(1, 0, 1)]
    assert (d.stats["skipped_frozen"], d.stats["skipped_human"]) == (1, 1)
    assert d.freeze == [4]
    assert sorted((q[0], q[2]) for q in d.queue) == [(3, "low_confidence"), (4, "oscillation")]
    # In iteration 3 the threshold is 0.9: row 1 still qualifies, at 0.95 (iteration 4) it does not.
    late = decide(rows, iteration=4, refine=refine, flip_counts={4: 1}, thresholds=flip_thresholds(refine, 4))
    assert [c.sid for c in late.changes] == []


def test_class_offsets_follow_the_label_excess_over_gold():
    # Class-conditional noise as in the bench: train labels 60% negative, gold 50%.
    train, gold = {0: 12_000, 1: 8_000}, {0: 2_500, 1: 2_500}
    assert class_offsets(ThresholdSchedule(balance_offset=0.0), train, gold) == {}  # 0 turns it off
    assert class_offsets(ThresholdSchedule(), train, gold) == pytest.approx({0: 0.05})  # default 0.5
    sched = ThresholdSchedule(balance_offset=0.5, per_class={1: 0.01})
    assert class_offsets(sched, train, gold) == pytest.approx({0: 0.05, 1: 0.01})  # on top of per_class
    # Uniform noise keeps the balance: an excess inside the gold share's sampling error adds nothing.
    assert class_offsets(sched, {0: 10_150, 1: 9_850}, gold) == {1: 0.01}
    # The same 10-point excess is noise for 40 gold rows (2 standard errors = 0.16): no offset.
    assert class_offsets(ThresholdSchedule(balance_offset=0.5), train, {0: 20, 1: 20}) == {}
    assert class_offsets(sched, train, {}) == {1: 0.01}  # no gold rows: nothing to compare with


def test_decide_applies_the_offset_of_the_predicted_class():
    refine = RefineConfig(threshold=ThresholdSchedule(start=0.7, step=0.0, max=0.95))
    rows = [(1, 1, 0, 0.72, 0), (2, 0, 1, 0.72, 0)]
    plain = decide(rows, iteration=1, refine=refine, flip_counts={}, thresholds=flip_thresholds(refine, 1))
    assert [c.sid for c in plain.changes] == [1, 2]
    offsets = flip_thresholds(refine, 1, {0: 0.05})
    assert offsets == pytest.approx({0: 0.75, 1: 0.70})  # a flip to 0 now needs 0.75
    shifted = decide(rows, iteration=1, refine=refine, flip_counts={}, thresholds=offsets)
    assert [c.sid for c in shifted.changes] == [2]
    assert candidates(rows, offsets) == [2]


def test_metrics():
    m = classification_metrics(np.array([1, 0, 1, 0]), np.array([0.9, 0.2, 0.4, 0.6]))
    assert m["accuracy"] == 0.5 and m["f1"] == pytest.approx(0.5)
    assert confusion(np.array([1, 0, 1]), np.array([1, 1, 0])) == [[0, 1], [1, 1]]


def test_temperature_tames_an_overconfident_member():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 2, 4000)
    # a 75%-accurate member that always claims 99% confidence
    right = rng.random(4000) < 0.75
    p = np.where(right == (labels == 1), 0.99, 0.01)
    t = fit_temperature(p, labels)
    assert t > 2
    calibrated = apply_temperature(p[:, None], [t])[:, 0]
    assert np.abs(np.maximum(calibrated, 1 - calibrated).mean() - 0.75) < 0.03
    # a calibrated member keeps T near 1
    q = np.clip(rng.random(4000), 0.01, 0.99)
    assert 0.8 < fit_temperature(q, (rng.random(4000) < q).astype(int)) < 1.25


def test_convergence_needs_both_rates_low_for_patience_iterations():
    refine = RefineConfig(label_change_bound=0.01, lexicon_change_bound=0.05, patience=2)
    assert convergence(0.005, {"lexicon": 0.01}, refine, previous_streak=0) == (1, False)
    assert convergence(0.005, {"lexicon": 0.01}, refine, previous_streak=1) == (2, True)
    assert convergence(0.005, {"lexicon": 0.2}, refine, previous_streak=1) == (0, False)  # lexicon still moving
    assert convergence(0.02, {}, refine, previous_streak=5) == (0, False)
