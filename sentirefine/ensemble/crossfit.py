"""Out-of-fold prediction: a member never judges a label it was trained on.

A model trained on a row's current label tends to repeat it (it memorised it), so in-sample
predictions under-detect label errors — the confirmation bias the spec warns about. As in
cleanlab, the train split is cut into ``k`` folds (by ``sid mod k``, so a row's fold never
changes); for each fold a fresh member is fitted on the other ``k-1`` folds and predicts the
held-out one. This costs ``k`` fits, so it is meant for the cheap members (the lexicon by
default); ``ensemble.cross_fit`` lists which.
"""

from __future__ import annotations

import logging

import numpy as np

from sentirefine.config import Config
from sentirefine.data.store import Store
from sentirefine.logs import stage_log
from sentirefine.models import build_model

log = logging.getLogger(__name__)


def out_of_fold(config: Config, store: Store, name: str, iteration: int) -> dict[int, float]:
    """P(positive) for every train row from a copy of ``name`` that never saw the row's label."""
    rows = store.conn.execute(
        "SELECT sid, text, current_label, frozen FROM sentences WHERE split='train' ORDER BY sid"
    ).fetchall()
    sids = np.array([r[0] for r in rows])
    texts = [r[1] for r in rows]
    labels = np.array([r[2] for r in rows], dtype=np.int64)
    trainable = np.array([not r[3] for r in rows])  # frozen rows are not trained on
    folds = config.ensemble.cross_fit_folds
    fold = sids % folds
    out = np.empty(len(rows), dtype=np.float64)
    with stage_log(log, f"crossfit:{name}", iteration=iteration, folds=folds, rows=len(rows)):
        for k in range(folds):
            fit_idx = np.flatnonzero((fold != k) & trainable)
            held = np.flatnonzero(fold == k)
            if held.size == 0:
                continue
            model = build_model(name, config).fit([texts[i] for i in fit_idx], labels[fit_idx])
            out[held] = model.predict_proba([texts[i] for i in held])[:, 1]
    return dict(zip(sids.tolist(), out.tolist(), strict=True))
