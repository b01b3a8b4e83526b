"""Ensemble maths on arrays: temperature scaling, weights, the weighted soft vote, confidence.

The maths (documented in the README):

* member ``i`` gives ``p_i = P(positive)``, optionally temperature-scaled
  (``p_i = σ(logit(p_i) / T_i)``, ``T_i`` fitted on the gold split, see :func:`fit_temperature`);
  weights ``w_i`` sum to 1 and come from each
  member's gold-split performance: ``equal``: ``1/m``; ``accuracy``: ``∝ max(acc_i - 0.5, 0.01)``
  (the margin over chance, so a coin-flip member gets almost nothing); ``log_loss``:
  ``∝ max(ln 2 - loss_i, 0.01)`` (the gain over an uninformed 50/50 guess); ``stacked``: the
  weights on the simplex that minimise the gold log loss of the vote ``Σ w_i p_i`` itself
  (stacking, Wolpert 1992; non-negative as in Breiman 1996), so that two members that make
  the same mistakes share one weight instead of counting twice (see :func:`stacked_weights`).
* ensemble ``p = Σ w_i p_i``; predicted label ``ŷ = [p > 0.5]``;
* agreement ``a`` = share of members whose own prediction equals ``ŷ``;
* confidence ``c = max(p, 1 - p)`` (rule ``probability``) or ``c = max(p, 1-p) · a^γ``
  (rule ``agreement``: a confident average of disagreeing members counts for less).

Only the functions live here; :class:`sentirefine.ensemble.spec.EnsembleSpec` chains them
(temperature → weights → vote) for every caller, and :mod:`sentirefine.ensemble.pool` runs
the members.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from sentirefine.ensemble.metrics import classification_metrics


def _logit(p: np.ndarray) -> np.ndarray:
    p = np.clip(np.asarray(p, dtype=np.float64), 1e-6, 1 - 1e-6)
    return np.log(p / (1 - p))


def fit_temperature(p_positive: np.ndarray, labels: np.ndarray) -> float:
    """Temperature T minimising log loss of ``sigmoid(logit(p) / T)`` (grid over log T).

    Neural members trained on noisy labels are over-confident (a 0.77-accurate LSTM averages
    |p - 0.5| = 0.36 on the demo); scaling each member's logits makes "confidence 0.8" mean
    roughly "right 80% of the time" before the threshold is applied to it.
    """
    logits, y = _logit(p_positive), np.asarray(labels, dtype=np.float64)
    best_loss, best_t = np.inf, 1.0
    for t in np.exp(np.linspace(-3.0, 3.0, 121)):
        p = np.clip(1.0 / (1.0 + np.exp(-logits / t)), 1e-9, 1 - 1e-9)
        loss = -np.mean(y * np.log(p) + (1 - y) * np.log(1 - p))
        if loss < best_loss:
            best_loss, best_t = loss, float(t)
    return best_t


def apply_temperature(member_p: np.ndarray, temperatures: Sequence[float]) -> np.ndarray:
    """Member probabilities (n, m) rescaled by one temperature per member."""
    return 1.0 / (1.0 + np.exp(-_logit(member_p) / np.asarray(temperatures, dtype=np.float64)))


def member_weights(metrics: dict[str, dict[str, float]], names: Sequence[str], rule: str) -> np.ndarray:
    """Normalised weights per member from its gold metrics (see the module docstring)."""
    if rule == "equal" or not metrics:
        raw = np.ones(len(names))
    elif rule == "accuracy":
        raw = np.array([max(metrics[n]["accuracy"] - 0.5, 0.01) for n in names])
    elif rule == "log_loss":
        raw = np.array([max(math.log(2) - metrics[n]["log_loss"], 0.01) for n in names])
    else:
        raise ValueError(f"unknown weight rule {rule!r}")
    return raw / raw.sum()


def stacked_weights(probs: np.ndarray, labels: np.ndarray, *, steps: int = 2000, rate: float = 0.5) -> np.ndarray:
    """Simplex weights minimising the log loss of ``probs @ w`` on ``labels`` (exponentiated gradient).

    Why: the per-member rules weigh each member alone, so the LSTM and the BiLSTM, which learn
    alike, outvote a lexicon that is right where they are wrong (bench/NOTES.md: on fold models
    at 20k rows the accuracy rule gives 0.28 / 0.25 / 0.25 / 0.21, the stacked one 0.71 to the
    lexicon). The loss is convex in ``w``; the multiplicative update keeps ``w`` on the simplex
    and starts from equal weights, so a member no better than the others' mix fades gradually
    rather than by a hard cut. Deterministic: a fixed number of steps, no random start.
    """
    p = np.clip(np.asarray(probs, dtype=np.float64), 1e-6, 1 - 1e-6)
    y = np.asarray(labels, dtype=np.float64)
    w = np.full(p.shape[1], 1.0 / p.shape[1])
    for _ in range(steps):
        vote = np.clip(p @ w, 1e-6, 1 - 1e-6)
        gradient = -(((y / vote) - (1 - y) / (1 - vote))[:, None] * p).mean(axis=0)
        w = w * np.exp(-rate * (gradient - gradient.min()))  # shifted: the same step, no overflow
        w /= w.sum()
    return w


def fit_weights(probs: np.ndarray, labels: np.ndarray, names: Sequence[str], rule: str) -> np.ndarray:
    """The weights of ``rule`` from calibrated gold probabilities ``probs`` (n, m): every rule's one entry."""
    if rule == "stacked":
        return stacked_weights(probs, labels)
    return member_weights({n: classification_metrics(labels, probs[:, i]) for i, n in enumerate(names)}, names, rule)


@dataclass(frozen=True)
class EnsembleOutput:
    """The vote per row, and the member probabilities it was taken on (after any temperature:
    the predict stage stores them beside the vote, so a row's record shows what was combined)."""

    p_positive: np.ndarray
    predicted: np.ndarray
    confidence: np.ndarray
    agreement: np.ndarray
    member_p: np.ndarray


def combine(member_p: np.ndarray, weights: np.ndarray, *, rule: str = "probability",
            gamma: float = 1.0) -> EnsembleOutput:
    """Weighted soft vote and confidence of member probabilities ``member_p`` (n, m)."""
    p = np.clip(member_p @ weights, 0.0, 1.0)
    predicted = (p > 0.5).astype(np.int64)
    agreement = ((member_p > 0.5) == predicted[:, None]).mean(axis=1)
    confidence = np.maximum(p, 1.0 - p)
    if rule == "agreement":
        confidence = confidence * agreement**gamma
    elif rule != "probability":
        raise ValueError(f"unknown confidence rule {rule!r}")
    return EnsembleOutput(p, predicted, confidence, agreement, member_p)
