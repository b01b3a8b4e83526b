"""Read-only views of the store that the report, the audit, review and the LLM stage need.

SQL on the store lives in ``data/``: callers get typed rows and never learn the schema, so a
schema change (e.g. ``label_history.undone_by``, which every view of live history must honour)
is made in one place. Every view of label history here counts live changes only: those a
rollback or restore undid stay in the table for audit but are not corrections any more.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from typing import TYPE_CHECKING, NamedTuple

from sentirefine.data.sqlbatch import keyset_chunks, select_in
from sentirefine.data.store import Store

if TYPE_CHECKING:
    import pandas as pd


class Correction(NamedTuple):
    """One live label change, with the text it was made on."""

    iteration: int
    id: str
    text: str
    old_label: int
    new_label: int
    confidence: float | None
    source: str


class FrozenRow(NamedTuple):
    """A row frozen for oscillating, with its live ensemble flips and its review-queue entry."""

    id: str
    text: str
    original_label: int
    current_label: int
    label_source: str
    ensemble_flips: int
    queue_reason: str | None
    queue_status: str | None


class Judged(NamedTuple):
    """A row with the label it held before, the one it holds, and the ensemble's prediction of it."""

    sid: int
    text: str
    given_label: int
    current_label: int
    predicted: int | None
    confidence: float | None


class ReviewRow(NamedTuple):
    """A train row needing a human, with the ensemble's latest opinion of it."""

    id: str
    text: str
    current_label: int
    original_label: int
    frozen: int
    reason: str | None
    p_positive: float | None
    confidence: float | None
    iteration: int | None


class Queued(NamedTuple):
    """An open review-queue entry the LLM may settle."""

    sid: int
    text: str
    current_label: int


_CORRECTION = ("SELECT h.iteration, s.id, s.text, h.old_label, h.new_label, h.confidence, h.source "
               "FROM label_history h JOIN sentences s ON s.sid = h.sid WHERE h.undone_by IS NULL ")


def human_label_count(store: Store) -> int:
    return store.conn.execute("SELECT count(*) FROM sentences WHERE label_source='human'").fetchone()[0]


def most_confident_corrections(store: Store, sources: Sequence[str], limit: int) -> list[Correction]:
    """Live changes made by ``sources``, most confident first (the report's table)."""
    marks = ",".join("?" * len(sources))
    rows = store.conn.execute(_CORRECTION + f"AND h.source IN ({marks}) ORDER BY h.confidence DESC, h.hid LIMIT ?",
                              (*sources, limit)).fetchall()
    return [Correction(*r) for r in rows]


def corrections_in(store: Store, iteration: int, limit: int) -> list[Correction]:
    """Live changes of ``iteration`` other than rollbacks, most confident first (the MLflow sample)."""
    rows = store.conn.execute(_CORRECTION + "AND h.iteration = ? AND h.source != 'rollback' "
                              "ORDER BY h.confidence DESC LIMIT ?", (iteration, limit)).fetchall()
    return [Correction(*r) for r in rows]


def frozen_rows(store: Store, limit: int) -> tuple[int, list[FrozenRow]]:
    """(how many rows are frozen or queued as oscillating, the first ``limit`` of them)."""
    where = "FROM sentences s LEFT JOIN review_queue q ON q.sid = s.sid WHERE s.frozen = 1 OR q.reason = 'oscillation'"
    total = store.conn.execute(f"SELECT count(*) {where}").fetchone()[0]
    rows = store.conn.execute(
        "SELECT s.id, s.text, s.original_label, s.current_label, s.label_source, "
        "(SELECT count(*) FROM label_history h WHERE h.sid = s.sid AND h.source = 'ensemble' AND h.undone_by IS NULL), "
        f"q.reason, q.status {where} ORDER BY s.sid LIMIT ?", (limit,)).fetchall()
    return total, [FrozenRow(*r) for r in rows]


def live_changes_by_source(store: Store, sources: Sequence[str]) -> dict[str, dict[int, int]]:
    """{source: {iteration: live changes}} for ``sources`` (the report's stacked bars)."""
    marks = ",".join("?" * len(sources))
    counts: dict[str, dict[int, int]] = {}
    for it, src, n in store.conn.execute("SELECT iteration, source, count(*) FROM label_history WHERE source IN "
                                         f"({marks}) AND undone_by IS NULL GROUP BY 1, 2", tuple(sources)):
        counts.setdefault(src, {})[it] = n
    return counts


def corrections_judged(store: Store, iteration: int, limit: int) -> list[Judged]:
    """Live ensemble/LLM corrections of ``iteration`` in write order, with that iteration's prediction."""
    rows = store.conn.execute(
        "SELECT s.sid, s.text, h.old_label, s.current_label, p.predicted, p.confidence FROM label_history h "
        "JOIN sentences s ON s.sid = h.sid LEFT JOIN predictions p ON p.sid = h.sid AND p.iteration = h.iteration "
        "WHERE h.iteration = ? AND h.source IN ('ensemble', 'llm') AND h.undone_by IS NULL ORDER BY h.hid LIMIT ?",
        (iteration, limit)).fetchall()
    return [Judged(*r) for r in rows]


def confident_disagreements(store: Store, iteration: int, limit: int) -> list[Judged]:
    """Rows whose ``iteration`` prediction disagrees with their label, most confident first (left unchanged)."""
    rows = store.conn.execute(
        "SELECT s.sid, s.text, s.current_label, s.current_label, p.predicted, p.confidence FROM predictions p "
        "JOIN sentences s ON s.sid = p.sid WHERE p.iteration = ? AND p.predicted != s.current_label "
        "ORDER BY p.confidence DESC LIMIT ?", (iteration, limit)).fetchall()
    return [Judged(*r) for r in rows]


def rows_needing_review(store: Store) -> Iterator[ReviewRow]:
    """Train rows needing a human (frozen, or an open queue entry; never human-labelled), in sid order."""
    cursor = store.conn.execute(
        """
        SELECT s.id, s.text, s.current_label, s.original_label, s.frozen, q.reason, p.p_positive, p.confidence,
               p.iteration
        FROM sentences s
        LEFT JOIN review_queue q ON q.sid = s.sid AND q.status = 'open'
        LEFT JOIN predictions p ON p.sid = s.sid AND p.iteration = (SELECT max(iteration) FROM predictions)
        WHERE s.split = 'train' AND s.label_source != 'human' AND (s.frozen = 1 OR q.sid IS NOT NULL)
        ORDER BY s.sid
        """
    )
    yield from (ReviewRow(*r) for r in cursor)


def last_finished_iteration(store: Store) -> int:
    """The latest finished iteration (0 before any: the bootstrap is iteration 0)."""
    return store.conn.execute("SELECT coalesce(max(iteration), 0) FROM iterations "
                              "WHERE finished_at IS NOT NULL").fetchone()[0]


def human_labels_among(store: Store, sids: Iterable[int]) -> set[tuple[int, int]]:
    """(sid, label) of the rows among ``sids`` that already hold a human label."""
    return set(select_in(store.conn, "SELECT sid, current_label FROM sentences WHERE label_source = 'human' "
                                     "AND sid IN ({marks})", sids))


def rows_by_id(store: Store, ids: Iterable[str]) -> dict[str, tuple[int, str]]:
    """{external id: (sid, split)} of the ids that exist."""
    rows = select_in(store.conn, "SELECT sid, id, split FROM sentences WHERE id IN ({marks})", (i for i in ids if i))
    return {i: (sid, split) for sid, i, split in rows}


def open_queue(store: Store, reasons: Sequence[str], limit: int) -> list[Queued]:
    """Open train-row queue entries of ``reasons``, least confident first."""
    found = store.conn.execute(
        "SELECT s.sid, s.text, s.current_label FROM review_queue q JOIN sentences s ON s.sid = q.sid "
        f"WHERE q.status = 'open' AND s.split = 'train' AND q.reason IN ({','.join('?' * len(reasons))}) "
        "ORDER BY q.confidence, q.sid LIMIT ?", (*reasons, limit)).fetchall()
    return [Queued(*r) for r in found]


def sentence_columns(store: Store, columns: Sequence[str], chunk_size: int) -> Iterator[list[tuple]]:
    """``columns`` of every sentence in sid order, ``chunk_size`` rows at a time (keyset pagination)."""
    sql = f"SELECT sid, {', '.join(columns)} FROM sentences WHERE sid > ? ORDER BY sid LIMIT ?"
    for batch in keyset_chunks(store.conn, sql, (), chunk_size):
        yield [r[1:] for r in batch]


def train_rows_frame(store: Store, iteration: int) -> pd.DataFrame:
    """Every train row with its ``iteration`` prediction and known-true label, as a DataFrame (the audit)."""
    import pandas as pd

    return pd.read_sql_query(
        "SELECT s.sid, s.text, s.original_label, s.current_label, s.label_source, s.group_key, "
        "p.predicted, p.confidence, r.label AS reference FROM sentences s "
        "LEFT JOIN predictions p ON p.sid = s.sid AND p.iteration = ? "
        "LEFT JOIN reference_labels r ON r.sid = s.sid WHERE s.split = 'train'",
        store.conn, params=(iteration,))
