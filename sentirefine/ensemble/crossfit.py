"""Out-of-fold prediction by refitting: a member never judges a label it was trained on.

A model trained on a row's current label tends to repeat it (it memorised it), so in-sample
predictions under-detect label errors — the confirmation bias the spec warns about. As in
cleanlab, the train split is cut into ``k`` folds (by ``sid mod k``, so a row's fold never
changes); for each fold a fresh member is fitted on the other ``k-1`` folds and predicts the
held-out one. This costs ``k`` fits, so it is meant for the cheap members (the lexicon by
default); ``ensemble.cross_fit`` lists which.

:class:`CrossFit` is the predict stage's view of it: which members are cross-fitted, their
out-of-fold predictions, and the merge of those with the pooled (in-sample) members' into one
matrix in the ensemble's member order.

This is the ``ensemble.folds: 1`` way (``sr_v1``: the lexicon refitted five times per
iteration). Persistent fold models (:mod:`sentirefine.models.folds`, ``ensemble.folds`` > 1) keep
their ``k`` fits across iterations and update them instead, for every member.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from sentirefine.config import Config
from sentirefine.data.store import Store
from sentirefine.data.store_training import all_train_rows
from sentirefine.data.workspace import resolve_checkpoint
from sentirefine.ensemble.pool import EnsemblePool
from sentirefine.logs import stage_log
from sentirefine.models import build_model

log = logging.getLogger(__name__)


def out_of_fold(config: Config, store: Store, name: str, iteration: int) -> dict[int, float]:
    """P(positive) for every train row from a copy of ``name`` that never saw the row's label."""
    rows = all_train_rows(store)
    sids, texts, labels, trainable = rows.sids, rows.texts, rows.labels, rows.trainable  # frozen: not trained on
    folds = config.ensemble.cross_fit_folds
    fold = sids % folds
    out = np.empty(len(texts), dtype=np.float64)
    with stage_log(log, f"crossfit:{name}", iteration=iteration, folds=folds, rows=len(texts)):
        for k in range(folds):
            fit_idx = np.flatnonzero((fold != k) & trainable)
            held = np.flatnonzero(fold == k)
            if held.size == 0:
                continue
            model = build_model(name, resolve_checkpoint(config)).fit([texts[i] for i in fit_idx], labels[fit_idx])
            out[held] = model.predict_proba([texts[i] for i in held])[:, 1]
    return dict(zip(sids.tolist(), out.tolist(), strict=True))


@dataclass(frozen=True)
class CrossFit:
    """The ensemble's members split into cross-fitted ones (predictions by sid) and pooled ones.

    A value object so the predict stage computes the out-of-fold predictions once, before its
    chunk loop, and every chunk merges the same ones.
    """

    members: tuple[str, ...]
    oof: dict[str, dict[int, float]]
    folds: int = 1  # ensemble.folds: how many fold models split each batch of held-out rows

    @classmethod
    def prepare(cls, config: Config, store: Store, members: Sequence[str], iteration: int) -> CrossFit:
        """Out-of-fold predictions of the members listed in ``ensemble.cross_fit`` (k fits each).

        With ``ensemble.folds`` > 1 every member is a fold set that predicts its train rows
        out-of-fold itself, so nothing is refitted here.
        """
        listed = config.ensemble.cross_fit if config.ensemble.folds == 1 else []
        return cls(tuple(members), {n: out_of_fold(config, store, n, iteration) for n in members if n in listed},
                   config.ensemble.folds)

    @property
    def pooled(self) -> list[str]:
        """The members predicted in-sample, through the pool, in member order."""
        return [n for n in self.members if n not in self.oof]

    def merge(self, sids: Sequence[int], pooled: np.ndarray) -> np.ndarray:
        """(n, m) P(positive) in member order: cross-fitted columns by sid, the rest from ``pooled``."""
        in_sample = self.pooled
        probs = np.empty((len(sids), len(self.members)), dtype=np.float64)
        for j, name in enumerate(self.members):
            probs[:, j] = [self.oof[name][s] for s in sids] if name in self.oof else pooled[:, in_sample.index(name)]
        return probs

    def member_probs(self, pool: EnsemblePool, dirs: Sequence[Path], sids: Sequence[int], texts: Sequence[str],
                     progress: Callable[[int], object] | None = None) -> np.ndarray:
        """Every member's P(positive) for these rows; ``dirs`` are the members' checkpoints in member order.

        ``progress`` counts the rows once, whether or not any went through the pool.
        """
        pooled_dirs = [d for n, d in zip(self.members, dirs, strict=True) if n not in self.oof]
        pooled = pool.member_probs(pooled_dirs, texts, progress=progress, held_out=True, folds=self.folds)
        if not pooled_dirs and progress is not None:  # every member cross-fitted: nothing went through the pool
            progress(len(texts))
        return self.merge(sids, pooled)
