"""Label-level scores of an arm against the injected noise.

"Detected" = the arm changed the row's label away from the noisy one it was imported with
(or, for the remove variant, excluded the row from training); "error" = the injection flipped
it. Precision/recall/F1 of detected vs error, the share of clean labels wrongly changed, and
the accuracy of the final labels against the pre-noise truth.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from sentirefine.data.store import Store


def _ratio(a: int, b: int) -> float | None:
    return a / b if b else None


def label_scores(store: Store, *, removed_mode: bool = False) -> dict[str, Any]:
    """Scores of the train split as it stands; ``removed_mode``: frozen rows count as detected."""
    rows = np.array(store.conn.execute(
        "SELECT s.original_label, s.current_label, s.frozen, COALESCE(r.label, s.original_label) "
        "FROM sentences s LEFT JOIN reference_labels r ON r.sid = s.sid WHERE s.split='train' ORDER BY s.sid"
    ).fetchall(), dtype=np.int64).reshape(-1, 4)
    noisy, current, frozen, truth = rows.T
    error = noisy != truth
    detected = frozen.astype(bool) if removed_mode else current != noisy
    tp, fp = int(np.sum(detected & error)), int(np.sum(detected & ~error))
    n_err, n_clean = int(error.sum()), int((~error).sum())
    precision, recall = _ratio(tp, tp + fp), _ratio(tp, n_err)
    if recall == 0:  # nothing found (or only wrong rows): F1 is 0 by convention, not undefined
        f1: float | None = 0.0
    elif precision is not None and recall is not None:
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    else:
        f1 = None  # no injected errors (the clean arm): detection is not defined
    kept = ~frozen.astype(bool) if removed_mode else np.ones(len(rows), dtype=bool)
    return {
        "rows": len(rows),
        "injected_errors": n_err,
        "clean_rows": n_clean,
        "detected": int(detected.sum()),
        "true_positives": tp,
        "false_positives": fp,
        "false_negatives": n_err - tp,
        "precision": precision,
        "recall": recall,
        "f1": f1,
        "clean_wrongly_changed": fp,
        "clean_wrongly_changed_rate": _ratio(fp, n_clean),
        "noisy_label_accuracy": float(np.mean(noisy == truth)) if len(rows) else None,
        "final_label_accuracy": float(np.mean(current[kept] == truth[kept])) if kept.any() else None,
        "rows_trained_on": int(kept.sum() - (0 if removed_mode else frozen.sum())),
        "frozen": int(frozen.sum()),
        **_queue_scores(store, current != truth),
    }


def _queue_scores(store: Store, wrong_now: np.ndarray) -> dict[str, Any]:
    """How large the open review queue (LLM/human) is and how much of the remaining noise sits in it.

    ``wrong_now``: per train row in sid order, whether its current label is still wrong. Under
    noise on ambiguous reviews every confidence rule gets timid and the queue carries the rest.
    """
    queued = np.array([q for (q,) in store.conn.execute(
        "SELECT (q.sid IS NOT NULL AND q.status = 'open') FROM sentences s LEFT JOIN review_queue q ON q.sid = s.sid "
        "WHERE s.split='train' ORDER BY s.sid")], dtype=bool)
    remaining = int(wrong_now.sum())
    in_queue = int(np.sum(queued & wrong_now))
    return {"queue_open": int(queued.sum()), "remaining_errors": remaining, "remaining_errors_in_queue": in_queue,
            "remaining_errors_in_queue_share": _ratio(in_queue, remaining),
            "queue_precision": _ratio(in_queue, int(queued.sum()))}
