"""The budget rule's estimator: cleanlab's confident joint, and budgets that flip the most confident rows."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sentirefine.pipeline import noise_budget


def _noisy_predictions(n: int, noise: float, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Truth, noisy labels, and P(positive) of a model that knows the truth with some blur."""
    rng = np.random.default_rng(seed)
    truth = rng.integers(0, 2, n)
    labels = np.where(rng.random(n) < noise, 1 - truth, truth)
    p = np.clip(np.where(truth == 1, 0.75, 0.25) + rng.normal(0, 0.2, n), 0.001, 0.999)
    return truth, labels, p


@settings(max_examples=40, deadline=None)
@given(n=st.integers(5, 400), noise=st.floats(0.0, 0.45), seed=st.integers(0, 10_000))
def test_confident_joint_equals_cleanlab(n, noise, seed):
    count = pytest.importorskip("cleanlab.count")
    _, labels, p = _noisy_predictions(n, noise, seed)
    if len(set(labels.tolist())) < 2:
        return
    ours, thresholds = noise_budget.confident_joint(labels, p)
    theirs = count.compute_confident_joint(labels, np.column_stack([1 - p, p]), calibrate=True)
    assert ours.tolist() == np.asarray(theirs).tolist()
    assert thresholds.tolist() == pytest.approx([np.mean(1 - p[labels == 0]), np.mean(p[labels == 1])])


def test_joint_rows_sum_to_label_counts_and_estimate_the_noise():
    truth, labels, p = _noisy_predictions(20_000, 0.3, 1)
    joint, _ = noise_budget.confident_joint(labels, p)
    assert joint.sum(axis=1).tolist() == np.bincount(labels).tolist()
    wrong = {j: int(np.sum((labels != j) & (truth == j))) for j in (0, 1)}
    assert joint[1][0] == pytest.approx(wrong[0], rel=0.2) and joint[0][1] == pytest.approx(wrong[1], rel=0.2)


def test_budget_flips_the_most_confident_disagreements_up_to_its_share():
    _, labels, p = _noisy_predictions(5_000, 0.25, 2)
    predicted = (p > 0.5).astype(int)
    confidence = np.maximum(p, 1 - p)
    est = noise_budget.estimate(labels, p, predicted, confidence, share=0.5)
    for j in (0, 1):
        cands = (labels != j) & (predicted == j)
        assert est.budget[j] == math.floor(0.5 * est.joint[1 - j][j] + 1e-9)
        flipped = cands & (confidence >= est.cutoff[j])
        assert flipped.sum() == est.budget[j]  # continuous confidences: no ties at the cut-off
        assert confidence[flipped].min() >= confidence[cands & ~flipped].max()
    assert est.estimated_errors == {0: est.joint[1][0], 1: est.joint[0][1]}


def test_a_larger_share_flips_more_and_a_floor_caps_it():
    _, labels, p = _noisy_predictions(5_000, 0.25, 3)
    predicted, confidence = (p > 0.5).astype(int), np.maximum(p, 1 - p)
    small = noise_budget.estimate(labels, p, predicted, confidence, share=0.3)
    large = noise_budget.estimate(labels, p, predicted, confidence, share=0.9)
    assert all(large.budget[j] > small.budget[j] and large.cutoff[j] < small.cutoff[j] for j in (0, 1))
    floored = noise_budget.flip_thresholds(large, floor=0.99, offsets={})
    assert floored == {0: 0.99, 1: 0.99}
    assert noise_budget.flip_thresholds(large, floor=0.5, offsets={0: 0.2})[0] == max(large.cutoff[0], 0.7)


def test_no_candidates_means_no_budget_and_an_unreachable_cutoff():
    labels = np.array([0, 0, 1, 1])
    p = np.array([0.1, 0.2, 0.8, 0.9])
    est = noise_budget.estimate(labels, p, (p > 0.5).astype(int), np.maximum(p, 1 - p), share=1.0)
    assert est.budget == {0: 0, 1: 0} and all(math.isinf(c) for c in est.cutoff.values())
    assert est.to_json()["cutoff"] == {0: None, 1: None}
    empty = noise_budget.estimate(np.array([], int), np.array([]), np.array([], int), np.array([]), share=1.0)
    assert empty.budget == {0: 0, 1: 0}


def test_the_gold_estimate_recovers_the_wrong_labels_net_of_the_members_own_errors():
    """Members wrong on 25% / 15% of each class, independently of the 20% flipped labels: the gold
    confusion separates the two, so the estimate lands on the injected errors per class."""
    rng = np.random.default_rng(3)
    n = 40_000
    truth = rng.integers(0, 2, n)
    wrong = rng.random(n) < 0.2
    labels = np.where(wrong, 1 - truth, truth)
    miss = rng.random(n) < np.where(truth == 0, 0.25, 0.15)
    predicted = np.where(miss, 1 - truth, truth)
    confidence = rng.uniform(0.5, 1.0, n)
    gold_confusion = [[750, 250], [150, 850]]  # the same members on 2,000 gold rows
    est = noise_budget.estimate_with_gold(labels, predicted, confidence, gold_confusion, share=1.0)
    really = {0: int(((labels == 1) & (truth == 0)).sum()), 1: int(((labels == 0) & (truth == 1)).sum())}
    for j in (0, 1):
        assert abs(est.estimated_errors[j] - really[j]) < 0.05 * really[j], (est.estimated_errors, really)
    disagreements = {j: int(((labels != j) & (predicted == j)).sum()) for j in (0, 1)}
    assert all(disagreements[j] > 1.3 * really[j] for j in (0, 1))  # what counting disagreements would flip
    assert est.method == "gold" and est.to_json()["method"] == "gold"
    chance = noise_budget.estimate_with_gold(labels, predicted, confidence, [[500, 500], [500, 500]], share=1.0)
    assert chance.budget == {0: 0, 1: 0}  # members no better than chance on gold justify no flip
