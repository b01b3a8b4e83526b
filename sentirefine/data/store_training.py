"""The store's rows as the training and prediction stages read them.

Training reads the train split without frozen rows, cross-fitting reads it whole (a frozen
row is still predicted, only never trained on), evaluation reads the gold split. Keeping these
SELECTs here means the pipeline never learns the schema (see ``store_queries`` for the views
the report and the audit read).
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from sentirefine.data.store import Store


class TrainableSummary(NamedTuple):
    """What the train split offers a classifier: unfrozen rows, distinct labels, the smallest label."""

    rows: int
    classes: int
    label: int | None


class TrainRows(NamedTuple):
    """Every train row in sid order, with whether it may be trained on (frozen rows may not)."""

    sids: np.ndarray
    texts: list[str]
    labels: np.ndarray
    trainable: np.ndarray


def trainable_summary(store: Store) -> TrainableSummary:
    """Counts that decide whether the train split can train a classifier at all."""
    rows, classes, label = store.conn.execute(
        "SELECT count(*), count(DISTINCT current_label), min(current_label) FROM sentences "
        "WHERE split='train' AND frozen=0"
    ).fetchone()
    return TrainableSummary(int(rows), int(classes), label)


def unfrozen_train_set(store: Store) -> tuple[list[str], np.ndarray]:
    """Texts and current labels of the train split without frozen (oscillating) rows, in sid order."""
    rows = store.conn.execute(
        "SELECT text, current_label FROM sentences WHERE split='train' AND frozen=0 ORDER BY sid"
    ).fetchall()
    return [r[0] for r in rows], np.array([r[1] for r in rows], dtype=np.int64)


def all_train_rows(store: Store) -> TrainRows:
    """Every train row, frozen ones included, for out-of-fold prediction."""
    rows = store.conn.execute(
        "SELECT sid, text, current_label, frozen FROM sentences WHERE split='train' ORDER BY sid"
    ).fetchall()
    return TrainRows(
        sids=np.array([r[0] for r in rows], dtype=np.int64),
        texts=[r[1] for r in rows],
        labels=np.array([r[2] for r in rows], dtype=np.int64),
        trainable=np.array([not r[3] for r in rows], dtype=bool),
    )


def gold_set(store: Store) -> tuple[list[str], np.ndarray]:
    """Texts and labels of the gold split in sid order (never trained on)."""
    gold = store.conn.execute("SELECT text, current_label FROM sentences WHERE split='gold' ORDER BY sid").fetchall()
    return [g[0] for g in gold], np.array([g[1] for g in gold], dtype=np.int64)


def predictions_written(store: Store, iteration: int) -> int:
    """Rows already predicted in ``iteration`` (where a resumed predict stage's progress starts)."""
    return int(store.conn.execute("SELECT count(*) FROM predictions WHERE iteration=?", (iteration,)).fetchone()[0])


def live_ensemble_changes(store: Store, iteration: int) -> dict[int, int]:
    """Live ensemble changes of ``iteration`` by new label (changes a rollback undid do not count)."""
    return {int(k): int(v) for k, v in store.conn.execute(
        "SELECT new_label, count(*) FROM label_history WHERE iteration=? AND source='ensemble' "
        "AND undone_by IS NULL GROUP BY new_label", (iteration,)).fetchall()}


def frozen_count(store: Store) -> int:
    """Rows frozen for oscillating, in every split."""
    return int(store.conn.execute("SELECT count(*) FROM sentences WHERE frozen=1").fetchone()[0])


class Votes(NamedTuple):
    """One iteration's ensemble vote on the rows the policy may change (not human-labelled, not frozen)."""

    labels: np.ndarray
    p_positive: np.ndarray
    predicted: np.ndarray
    confidence: np.ndarray


def unlocked_votes(store: Store, iteration: int) -> Votes:
    """The predictions of ``iteration`` with each row's current label, for rows the policy may change."""
    rows = store.conn.execute(
        "SELECT s.current_label, p.p_positive, p.predicted, p.confidence FROM predictions p "
        "JOIN sentences s ON s.sid = p.sid WHERE p.iteration=? AND s.label_source != 'human' AND s.frozen=0 "
        "ORDER BY p.sid", (iteration,)).fetchall()
    table = np.array(rows, dtype=np.float64).reshape(-1, 4)
    return Votes(table[:, 0].astype(np.int64), table[:, 1], table[:, 2].astype(np.int64), table[:, 3])
