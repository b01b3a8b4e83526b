"""Classification metrics on the gold split, from probabilities (numpy only, no sklearn import cost)."""

from __future__ import annotations

import numpy as np


def classification_metrics(labels: np.ndarray, p_positive: np.ndarray) -> dict[str, float]:
    """Accuracy, macro F1 and log loss of binary predictions ``p_positive > 0.5``.

    Macro F1 rather than positive-class F1: both classes matter equally for relabelling.
    """
    labels = np.asarray(labels, dtype=np.int64)
    p = np.clip(np.asarray(p_positive, dtype=np.float64), 1e-7, 1 - 1e-7)
    if labels.size == 0:
        return {"accuracy": float("nan"), "f1": float("nan"), "log_loss": float("nan"), "n": 0}
    pred = (p > 0.5).astype(np.int64)
    f1s = []
    for cls in (0, 1):
        tp = np.sum((pred == cls) & (labels == cls))
        fp = np.sum((pred == cls) & (labels != cls))
        fn = np.sum((pred != cls) & (labels == cls))
        f1s.append(2 * tp / (2 * tp + fp + fn) if tp + fp + fn else 0.0)
    loss = -np.mean(labels * np.log(p) + (1 - labels) * np.log(1 - p))
    return {
        "accuracy": float(np.mean(pred == labels)),
        "f1": float(np.mean(f1s)),
        "log_loss": float(loss),
        "n": int(labels.size),
    }


def confusion(labels: np.ndarray, predicted: np.ndarray) -> list[list[int]]:
    """2x2 confusion matrix, rows = true label, columns = predicted label."""
    out = np.zeros((2, 2), dtype=np.int64)
    np.add.at(out, (np.asarray(labels, dtype=np.int64), np.asarray(predicted, dtype=np.int64)), 1)
    return out.tolist()
