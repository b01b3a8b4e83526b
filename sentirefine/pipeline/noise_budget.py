"""How many labels look wrong, per class, and the confidence a flip needs to stay within that count.

The threshold rule (``refine.rule: threshold``) flips a row when the ensemble predicts the other
class with confidence at or above one absolute threshold. That cannot adapt to how much noise
there is: members trained on 40% wrong labels rarely reach 0.70, so it flips a sixth of the
errors (bench: precision 0.90, recall 0.17). The budget rule (``refine.rule: budget``) asks the
data instead, as confident learning does (Northcutt et al., cleanlab's ``count`` module):

1. per class ``j`` a self-confidence threshold ``t_j`` = mean P(j) over the rows labelled ``j``;
2. the *confident joint* ``C[i][j]`` counts rows labelled ``i`` whose P(j) ≥ ``t_j`` (the larger
   P if both are), calibrated so that each row sums to the count of label ``i``: ``C[i][j]``,
   i ≠ j, estimates how many rows labelled ``i`` are really ``j``;
3. this iteration may flip ``budget[i→j] = floor(share × C[i][j])`` rows labelled ``i``, those
   the ensemble predicts as ``j`` with the highest confidence (for two classes the margin
   P(j) − P(i) = 2·P(j) − 1 ranks as the confidence does): the flip threshold of class ``j`` is
   the confidence of the last row inside the budget (ties at it pass too).

The confident joint counts every confident disagreement as a wrong label, so members that are
often wrong themselves (fold models trained on part of the rows) make it over-count.
:func:`estimate_with_gold` (``refine.budget.estimator: gold``) separates the two error sources
with the gold split instead, as trusted-data loss correction does (Hendrycks et al. 2018): on
gold the ensemble's confusion ``M[t][a]`` = P(predicted a | true t) is measured, and if the
members' mistakes do not depend on whether a row's label is wrong, the train joint
``J[a][b]`` = #(predicted a, labelled b) is ``Σ_t M[t][a] · Q[t][b]`` with ``Q[t][b]`` = #(true t,
labelled b), so ``Q = (Mᵀ)⁻¹ J``: the wrong labels per class, net of the members' own errors.

``share`` and a confidence ``floor`` are the rising threshold's schedule (``budget_share``):
each iteration re-estimates the errors that remain and may flip a share of them, and a flip
never needs less confidence than the floor. Locked rows (human labels, frozen rows) take no part:
they cannot be flipped, and a human label is not evidence about the crowd's error rate.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

CLASSES = (0, 1)


@dataclass(frozen=True)
class NoiseEstimate:
    """The confident joint of one iteration's predictions, and what a budget made of it allows.

    ``joint[i][j]``: calibrated count of rows labelled ``i`` whose true class is estimated as ``j``
    (rows sum to the label counts). ``budget[j]``: flips *to* class ``j`` this iteration may make;
    ``cutoff[j]``: the confidence the last of them has (``inf`` when the budget is 0).
    """

    self_confidence: tuple[float, float]
    joint: tuple[tuple[int, int], tuple[int, int]]
    budget: dict[int, int]
    cutoff: dict[int, float]
    method: str = "confident_joint"  # or "gold": ``self_confidence`` then holds the per-class gold recall

    @property
    def estimated_errors(self) -> dict[int, int]:
        """Estimated wrong labels by the class they should be (to 0: labelled 1, really 0)."""
        return {0: self.joint[1][0], 1: self.joint[0][1]}

    def to_json(self) -> dict:
        """As the predict stage records it (JSON: class keys become strings, inf becomes null)."""
        return {"method": self.method, "self_confidence": list(self.self_confidence),
                "joint": [list(r) for r in self.joint],
                "budget": self.budget, "cutoff": {k: (None if math.isinf(v) else v) for k, v in self.cutoff.items()}}


def confident_joint(labels: np.ndarray, p_positive: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(calibrated confident joint, per-class self-confidence thresholds), as ``cleanlab.count`` computes them.

    Same as ``cleanlab.count.compute_confident_joint(labels, pred_probs, calibrate=True)`` for two
    classes (a unit test checks it against cleanlab): a row none of whose probabilities reaches
    its class threshold is not counted; the diagonal is at least 1 so that every class keeps a
    correct example; rows are scaled to the label counts and rounded preserving their totals.
    """
    probs = np.column_stack([1.0 - p_positive, p_positive])
    counts = np.bincount(labels, minlength=2).astype(float)
    thresholds = np.array([probs[labels == c, c].mean() if counts[c] else 1.0 for c in CLASSES])
    confident = probs >= thresholds - 1e-6
    n_confident = confident.sum(axis=1)
    guess = np.where(n_confident > 1, probs.argmax(axis=1), confident.argmax(axis=1))
    joint = np.zeros((2, 2))
    np.add.at(joint, (labels[n_confident > 0], guess[n_confident > 0]), 1)
    np.fill_diagonal(joint, np.maximum(joint.diagonal(), 1))
    joint = joint / joint.sum(axis=1, keepdims=True) * counts[:, None]
    joint = joint / max(joint.sum(), 1e-12) * counts.sum()
    return _round_rows(joint), thresholds


def _round_rows(joint: np.ndarray) -> np.ndarray:
    """Round each row to integers keeping its (rounded) total, as cleanlab's ``round_preserving_sum``.

    Round half to even first; if the row's total moved, the entries rounded furthest the wrong
    way move back by one.
    """
    out = np.empty(joint.shape, dtype=np.int64)
    for i, row in enumerate(joint):
        ints = row.round()
        diff = round(float(row.sum())) - int(ints.sum())
        if diff:
            step = 1 if diff > 0 else -1
            ints[np.argsort(row - ints)[::-step][:abs(diff)]] += step
        out[i] = ints
    return out


def estimate(labels: np.ndarray, p_positive: np.ndarray, predicted: np.ndarray, confidence: np.ndarray,
             *, share: float) -> NoiseEstimate:
    """The confident joint of the unlocked rows, and per target class the budget and its cut-off.

    ``labels`` are the rows' current labels; ``predicted`` and ``confidence`` the ensemble's vote
    (the confidence is what the correct stage compares with the cut-off, so ranking by it keeps
    the two consistent whatever ``ensemble.confidence`` rule makes it).
    """
    if labels.size == 0:
        return _empty()
    joint, thresholds = confident_joint(labels, p_positive)
    return _with_budget(joint, (float(thresholds[0]), float(thresholds[1])), labels, predicted, confidence, share)


def estimate_with_gold(labels: np.ndarray, predicted: np.ndarray, confidence: np.ndarray,
                       gold_confusion: list[list[int]], *, share: float) -> NoiseEstimate:
    """Wrong labels per class from the train joint net of the ensemble's gold confusion, and the budget.

    ``gold_confusion[t][a]``: gold rows of true class ``t`` the ensemble predicted as ``a``, with
    the same kind of models that predicted the train rows (fold models for held-out rows). An
    ensemble no better than chance on gold (non-positive determinant) justifies no flip.
    """
    if labels.size == 0:
        return _empty()
    m = np.asarray(gold_confusion, dtype=float)
    m = m / np.maximum(m.sum(axis=1, keepdims=True), 1.0)
    recall = (float(m[0, 0]), float(m[1, 1]))
    counts = np.bincount(labels, minlength=2).astype(float)
    if np.linalg.det(m) <= 1e-6:
        joint = np.diag(counts)
    else:
        j = np.zeros((2, 2))
        np.add.at(j, (predicted, labels), 1)  # j[a][b]: predicted a, labelled b
        q = np.clip(np.linalg.solve(m.T, j), 0.0, None)  # q[t][b]: true t, labelled b
        q = q / np.maximum(q.sum(axis=0, keepdims=True), 1e-12) * counts[None, :]
        joint = q.T  # joint[i][j]: labelled i, truly j, as the confident joint
    return _with_budget(_round_rows(joint), recall, labels, predicted, confidence, share, method="gold")


def _empty() -> NoiseEstimate:
    return NoiseEstimate((1.0, 1.0), ((0, 0), (0, 0)), {0: 0, 1: 0}, {0: math.inf, 1: math.inf})


def _with_budget(joint: np.ndarray, evidence: tuple[float, float], labels: np.ndarray, predicted: np.ndarray,
                 confidence: np.ndarray, share: float, method: str = "confident_joint") -> NoiseEstimate:
    """Per target class ``j``: ``share`` of the estimated rows labelled ``1-j`` that are really ``j``,
    the most confident of the rows predicted ``j`` first, and the confidence of the last of them."""
    budget, cutoff = {}, {}
    for j in CLASSES:
        candidates = np.sort(confidence[(labels != j) & (predicted == j)])[::-1]
        budget[j] = min(math.floor(share * joint[1 - j][j] + 1e-9), candidates.size)
        cutoff[j] = float(candidates[budget[j] - 1]) if budget[j] else math.inf
    return NoiseEstimate(evidence, ((int(joint[0, 0]), int(joint[0, 1])), (int(joint[1, 0]), int(joint[1, 1]))),
                         budget, cutoff, method)


def flip_thresholds(estimate: NoiseEstimate, floor: float, offsets: dict[int, float]) -> dict[int, float]:
    """Per target class, the confidence a flip needs: the budget's cut-off, never under the floor (+ offset)."""
    return {j: max(estimate.cutoff[j], min(1.0, floor + offsets.get(j, 0.0))) for j in CLASSES}
