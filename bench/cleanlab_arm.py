"""The cleanlab baseline: confident learning on out-of-fold probabilities of our own ensemble.

Why this construction: cleanlab needs out-of-sample ``pred_probs``; the fairest comparison gives
it the same four members. Each member is cross-fitted with sentirefine's own ``out_of_fold``
(k fits, held-out fold predicted), the members are temperature-scaled and weighted exactly as the
loop does, from the gold evaluation of the same members trained on the same noisy labels (the
shared bootstrap), and the combined P(positive) goes to ``cleanlab.filter.find_label_issues``.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from sentirefine.config import Config
from sentirefine.data.sqlbatch import select_in
from sentirefine.data.store import LabelChange, Store
from sentirefine.ensemble.crossfit import out_of_fold
from sentirefine.ensemble.spec import EnsembleSpec


def find_issues(config: Config, store: Store, evaluation: dict[str, Any]) -> dict[str, Any]:
    """Flagged train rows (external ids) and how they were found."""
    from cleanlab.filter import find_label_issues

    spec = EnsembleSpec.from_stage_info(evaluation, config, 0)  # the bootstrap's weights, as the loop votes
    names = list(spec.members)
    rows = store.conn.execute(
        "SELECT sid, id, current_label FROM sentences WHERE split='train' ORDER BY sid").fetchall()
    seconds: dict[str, float] = {}
    probs = np.empty((len(rows), len(names)))
    for j, name in enumerate(names):
        t0 = time.perf_counter()
        oof = out_of_fold(config, store, name, iteration=0)
        probs[:, j] = [oof[r[0]] for r in rows]
        seconds[name] = round(time.perf_counter() - t0, 2)
    p = np.clip(spec.combine(probs).p_positive, 1e-6, 1 - 1e-6)
    labels = np.array([r[2] for r in rows], dtype=np.int64)
    t0 = time.perf_counter()
    flagged = find_label_issues(labels, np.column_stack([1 - p, p]), n_jobs=1)
    return {
        "flagged_ids": [rows[i][1] for i in np.flatnonzero(flagged)],
        "crossfit_seconds": seconds,
        "find_label_issues_seconds": round(time.perf_counter() - t0, 2),
        "folds": config.ensemble.cross_fit_folds,
        "weights": {n: round(w, 4) for n, w in zip(names, spec.weights, strict=True)},
    }


def apply(store: Store, flagged_ids: list[str], variant: str) -> int:
    """Flip the flagged labels (recorded in the history) or keep those rows out of training."""
    sids = _sids(store, flagged_ids)
    if variant == "flip":
        labels = dict(store.conn.execute("SELECT sid, current_label FROM sentences WHERE split='train'").fetchall())
        return store.apply_labels([LabelChange(s, labels[s], 1 - labels[s], None) for s in sids],
                                  iteration=0, source="ensemble")
    store.apply_decision([], sids, [], iteration=0, source="ensemble")  # frozen rows are not trained on
    return len(sids)


def _sids(store: Store, ids: list[str]) -> list[int]:
    return sorted(r[0] for r in select_in(store.conn, "SELECT sid FROM sentences WHERE id IN ({marks})", ids))
