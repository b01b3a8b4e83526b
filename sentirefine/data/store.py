"""The SQLite store: sentences, their label history, and the loop's bookkeeping.

Design decisions:

* ``sentences.sid`` is the internal rowid (fast keyset pagination); ``id`` is the user's
  external id, unique. ``original_label`` is immutable and gold rows can never be relabelled:
  both are enforced by triggers, so no code path (ours or a user's SQL) can break them.
* Every label change writes a ``label_history`` row in the same transaction as the update.
  History is append-only; the label of a row "after iteration K" is the ``new_label`` of its
  latest history row (by ``hid``) with ``iteration <= K``, else ``original_label``.
* Writes are bulk, one transaction per chunk: label changes go into a temp table with one
  ``executemany``, then history rows and the update are single set-based statements. An update
  carries the old label it expects, so replaying a half-finished stage is a no-op for the
  rows that already changed (this is what makes a crash resumable).
* WAL mode lets readers (``status``, the MLflow UI) run while the loop writes.
* A rollback or a restore is one transaction (labels, history and bookkeeping together): a kill
  at any point leaves the state before it, and the same command run again does all of it. It is
  recorded in ``operations``, and the history rows it undoes get ``undone_by`` = its id: they
  stay for audit, but the *live lineage* (``undone_by IS NULL``) alone feeds flip counts, change
  rates and freezes, so a re-run iteration is not charged for the changes it replaces.
"""

from __future__ import annotations

import json
import logging
import os
import sqlite3
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, NamedTuple

from sentirefine.data.sqlbatch import keyset_chunks, select_in
from sentirefine.errors import StoreError
from sentirefine.faults import crash_point

log = logging.getLogger(__name__)

# Waits between attempts to take the write lock: short first (a reader's checkpoint), then longer.
_BUSY_BACKOFF_S = (0.05, 0.1, 0.2, 0.5, 1.0, 2.0)

SCHEMA_VERSION = 2
LABELS = (0, 1)
SOURCES = ("original", "ensemble", "llm", "human", "restore", "rollback")
AUTOMATIC_SOURCES = ("ensemble", "llm")

_SCHEMA = f"""
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);

CREATE TABLE sentences (
    sid                INTEGER PRIMARY KEY,
    id                 TEXT NOT NULL UNIQUE,
    text               TEXT NOT NULL CHECK (length(text) > 0),
    original_label     INTEGER NOT NULL CHECK (original_label IN (0, 1)),
    current_label      INTEGER NOT NULL CHECK (current_label IN (0, 1)),
    label_last_updated TEXT,
    confidence         REAL,
    label_source       TEXT NOT NULL DEFAULT 'original' CHECK (label_source IN {SOURCES}),
    split              TEXT NOT NULL CHECK (split IN ('train', 'gold')),
    frozen             INTEGER NOT NULL DEFAULT 0,
    group_key          TEXT
);
CREATE INDEX sentences_split_sid ON sentences(split, sid);

CREATE TRIGGER original_label_immutable BEFORE UPDATE OF original_label ON sentences
WHEN NEW.original_label IS NOT OLD.original_label
BEGIN SELECT RAISE(ABORT, 'original_label is immutable'); END;

CREATE TRIGGER gold_never_relabelled BEFORE UPDATE OF current_label ON sentences
WHEN OLD.split = 'gold' AND NEW.current_label IS NOT OLD.current_label
BEGIN SELECT RAISE(ABORT, 'gold rows are never relabelled'); END;

CREATE TABLE label_history (
    hid         INTEGER PRIMARY KEY,
    sid         INTEGER NOT NULL REFERENCES sentences(sid),
    iteration   INTEGER NOT NULL,
    old_label   INTEGER NOT NULL,
    new_label   INTEGER NOT NULL,
    confidence  REAL,
    source      TEXT NOT NULL CHECK (source IN {SOURCES}),
    created_at  TEXT NOT NULL
);
CREATE INDEX label_history_sid ON label_history(sid, hid);
CREATE INDEX label_history_iteration ON label_history(iteration);

-- Known-true labels (e.g. before noise was injected): used only to *measure* label accuracy.
CREATE TABLE reference_labels (
    sid   INTEGER PRIMARY KEY REFERENCES sentences(sid),
    label INTEGER NOT NULL CHECK (label IN (0, 1))
);

CREATE TABLE iterations (
    iteration   INTEGER PRIMARY KEY,
    started_at  TEXT NOT NULL,
    finished_at TEXT,
    threshold   REAL,
    metrics     TEXT NOT NULL DEFAULT '{{}}'
);

CREATE TABLE stages (
    iteration   INTEGER NOT NULL,
    stage       TEXT NOT NULL,
    started_at  TEXT NOT NULL,
    finished_at TEXT,
    info        TEXT NOT NULL DEFAULT '{{}}',
    PRIMARY KEY (iteration, stage)
);

CREATE TABLE predictions (
    iteration   INTEGER NOT NULL,
    sid         INTEGER NOT NULL REFERENCES sentences(sid),
    p_positive  REAL NOT NULL,
    predicted   INTEGER NOT NULL,
    confidence  REAL NOT NULL,
    agreement   REAL NOT NULL,
    members     TEXT NOT NULL,
    PRIMARY KEY (iteration, sid)
) WITHOUT ROWID;

CREATE TABLE review_queue (
    sid        INTEGER PRIMARY KEY REFERENCES sentences(sid),
    iteration  INTEGER NOT NULL,
    reason     TEXT NOT NULL CHECK (reason IN ('low_confidence', 'oscillation')),
    confidence REAL,
    status     TEXT NOT NULL DEFAULT 'open' CHECK (status IN ('open', 'done'))
);
CREATE INDEX review_queue_status ON review_queue(status, sid);
"""

# Version 1 -> 2, applied to a new store too (so a migrated store and a new one are the same):
# the live lineage (``undone_by``), the operations log, and queue entries closed by a later
# confident prediction (recorded: status 'done', ``closed_reason`` 'confident', the iteration).
_MIGRATIONS: dict[int, tuple[str, ...]] = {
    1: (
        "CREATE TABLE operations (op_id INTEGER PRIMARY KEY, command TEXT NOT NULL, args TEXT NOT NULL, "
        "created_at TEXT NOT NULL, info TEXT NOT NULL DEFAULT '{}')",
        "ALTER TABLE label_history ADD COLUMN undone_by INTEGER",
        "ALTER TABLE review_queue ADD COLUMN closed_iteration INTEGER",
        "ALTER TABLE review_queue ADD COLUMN closed_reason TEXT",
    ),
}
# History rows tagged iteration K but written after iteration K finished (a person's review, a
# snapshot restore): not part of "the labels after iteration K" (= the data-iter-K snapshot).
_AFTER_FINISH_SOURCES = ("human", "restore")


# Applies the pending label changes in one set-based statement: no row crosses into Python and
# back (2-3x the rows/s of executemany's per-row UPDATEs). Driven by the IN list, it visits only
# the pending rows, by primary key; an ``UPDATE ... FROM _pending`` scans all of ``sentences`` for
# every chunk (SQLite 3.40 puts the target table outside the join): ~0.2 s a chunk at 500k rows.
UPDATE_PENDING = (
    "UPDATE sentences SET "
    "current_label = (SELECT p.new_label FROM _pending p WHERE p.sid = sentences.sid), "
    "confidence = (SELECT p.confidence FROM _pending p WHERE p.sid = sentences.sid), "
    "label_last_updated = ?, label_source = ? "
    "WHERE sid IN (SELECT sid FROM _pending) "
    "AND current_label = (SELECT p.old_label FROM _pending p WHERE p.sid = sentences.sid)"
)


def utcnow() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


class LabelChange(NamedTuple):
    """One label write: the row, the label it must currently hold, and the new one.

    A named tuple, not a dataclass: built by the ten thousand per chunk and handed to
    ``executemany`` as is (a frozen dataclass took 2.3x as long to build).
    """

    sid: int
    old_label: int
    new_label: int
    confidence: float | None


class RollbackResult(NamedTuple):
    """What a rollback did: labels it changed, human labels it kept, history rows it marked undone."""

    changed: int
    kept_human: int
    undone: int


@dataclass(frozen=True, slots=True)
class Row:
    sid: int
    id: str
    text: str
    current_label: int
    original_label: int
    frozen: int


class Store:
    """A connection to one sentirefine SQLite database."""

    def __init__(self, path: Path, *, busy_timeout_s: float = 30.0, create: bool = False) -> None:
        self.path = Path(path)
        if not create and not self.path.exists():
            raise StoreError(
                f"database not found: {self.path}",
                hint="import data first: `sentirefine import TRAIN.tsv --gold GOLD.tsv`",
            )
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.busy_timeout_s = busy_timeout_s
        try:
            self.conn = sqlite3.connect(self.path, timeout=busy_timeout_s, isolation_level=None)
            self.conn.execute("PRAGMA foreign_keys = ON")
            self.conn.execute("PRAGMA journal_mode = WAL")
            self.conn.execute("PRAGMA synchronous = NORMAL")
            self._ensure_schema(create)
        except sqlite3.DatabaseError as exc:
            raise self._translate(exc) from exc

    def _translate(self, exc: sqlite3.Error, attempts: int = 1) -> StoreError:
        text = str(exc)
        if "not a database" in text or "malformed" in text:
            return StoreError(f"{self.path} is not a sentirefine SQLite database ({text})",
                              hint="point store.db_path at the right file or move this one aside")
        if "locked" in text or "busy" in text:
            return StoreError(f"database {self.path} is locked by another process ({text}; "
                              f"{attempts} attempt(s) over store.busy_timeout_s={self.busy_timeout_s}s)",
                              hint="wait for the other sentirefine/sqlite process to finish, then retry, "
                                   "or raise store.busy_timeout_s")
        unwritable = "unable to open" in text and self.path.exists() and not os.access(self.path.parent, os.W_OK)
        if "readonly" in text or "read-only" in text or unwritable:
            return StoreError(f"database {self.path} is read-only ({text})",
                              hint="check the file and directory permissions")
        return StoreError(f"database error on {self.path}: {text}")

    def _ensure_schema(self, create: bool) -> None:
        tables = {r[0] for r in self.conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        if "meta" not in tables:
            if tables:
                raise StoreError(f"{self.path} is an SQLite database but not a sentirefine store "
                                 f"(tables: {', '.join(sorted(tables))})")
            if not create:
                raise StoreError(f"{self.path} is empty", hint="run `sentirefine import` first")
            with self.transaction():
                self._create_schema()
            return
        version = self._schema_version()
        if version is not None and version < SCHEMA_VERSION and version in _MIGRATIONS:
            self._migrate(version)
        elif version != SCHEMA_VERSION:
            raise StoreError(
                f"{self.path} has schema version {version}, this sentirefine expects {SCHEMA_VERSION}",
                hint="use the sentirefine release that created it, or re-import into a new workspace",
            )

    def _schema_version(self) -> int | None:
        row = self.conn.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()
        return int(row[0]) if row else None

    def _migrate(self, version: int) -> None:
        """Bring an older store up to :data:`SCHEMA_VERSION` in place, in one transaction.

        Why one transaction: SQLite DDL is transactional, so a kill mid-migration leaves the old
        version intact and the next open migrates again; a second process that migrated first is
        seen under the write lock (the version is read again) and nothing is done twice.
        """
        with self.transaction() as conn:
            found = self._schema_version()
            if found == SCHEMA_VERSION:
                return
            for step in range(found or version, SCHEMA_VERSION):
                for statement in _MIGRATIONS[step]:
                    conn.execute(statement)
            crash_point("migrate_before_commit")
            conn.execute("UPDATE meta SET value=? WHERE key='schema_version'", (str(SCHEMA_VERSION),))
        log.info("store migrated", extra={"event": "store_migrated", "path": str(self.path),
                                          "from_version": version, "to_version": SCHEMA_VERSION})

    def _create_schema(self) -> None:
        for statement in _split_sql(_SCHEMA):
            self.conn.execute(statement)
        for step in range(1, SCHEMA_VERSION):
            for statement in _MIGRATIONS[step]:
                self.conn.execute(statement)
        self.conn.execute("INSERT INTO meta VALUES ('schema_version', ?)", (str(SCHEMA_VERSION),))
        self.conn.execute("INSERT INTO meta VALUES ('created_at', ?)", (utcnow(),))

    def workspace_id(self) -> str:
        """A stable random id of this store (tags MLflow runs and registry versions)."""
        row = self.conn.execute("SELECT value FROM meta WHERE key='workspace_id'").fetchone()
        if row:
            return row[0]
        import uuid

        value = uuid.uuid4().hex[:12]
        with self.transaction() as conn:
            conn.execute("INSERT OR IGNORE INTO meta VALUES ('workspace_id', ?)", (value,))
        return self.conn.execute("SELECT value FROM meta WHERE key='workspace_id'").fetchone()[0]

    def close(self) -> None:
        self.conn.close()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _begin_immediate(self) -> None:
        """Take the write lock, retrying with back-off while another writer holds it.

        Each attempt lets SQLite's own busy handler wait a short slice; between attempts we log
        ``db_busy_retry`` so a user sees why the loop is waiting. After ``busy_timeout_s`` in
        all, a :class:`StoreError` (exit 4) says the database is locked.
        """
        deadline = time.monotonic() + self.busy_timeout_s
        attempt = 0
        while True:
            remaining = deadline - time.monotonic()
            self.conn.execute(f"PRAGMA busy_timeout = {int(1000 * max(0.0, min(remaining, 0.25)))}")
            try:
                self.conn.execute("BEGIN IMMEDIATE")
                self.conn.execute(f"PRAGMA busy_timeout = {int(1000 * self.busy_timeout_s)}")
                return
            except sqlite3.OperationalError as exc:
                busy = "locked" in str(exc) or "busy" in str(exc)
                if not busy or time.monotonic() >= deadline:
                    raise self._translate(exc, attempts=attempt + 1) from exc
            wait = min(_BUSY_BACKOFF_S[min(attempt, len(_BUSY_BACKOFF_S) - 1)], max(0.0, deadline - time.monotonic()))
            attempt += 1
            log.warning("database busy, retrying", extra={"event": "db_busy_retry", "path": str(self.path),
                                                         "attempt": attempt, "wait_s": wait})
            time.sleep(wait)

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """BEGIN IMMEDIATE ... COMMIT, rolled back on any exception (nothing half-written)."""
        self._begin_immediate()
        try:
            yield self.conn
        except BaseException:
            self.conn.execute("ROLLBACK")
            raise
        else:
            try:
                self.conn.execute("COMMIT")
            except sqlite3.Error as exc:
                self.conn.execute("ROLLBACK")
                raise self._translate(exc) from exc

    # -- reading ------------------------------------------------------------------------------
    def count(self, split: str | None = None) -> int:
        if split is None:
            return self.conn.execute("SELECT count(*) FROM sentences").fetchone()[0]
        return self.conn.execute("SELECT count(*) FROM sentences WHERE split=?", (split,)).fetchone()[0]

    def label_counts(self, split: str = "train", column: str = "current_label") -> dict[int, int]:
        if column not in ("current_label", "original_label"):
            raise ValueError(column)
        rows = self.conn.execute(
            f"SELECT {column}, count(*) FROM sentences WHERE split=? GROUP BY {column}", (split,)
        )
        return {int(label): n for label, n in rows}

    def iter_chunks(self, split: str, chunk_size: int, *, after_sid: int = 0) -> Iterator[list[Row]]:
        """Yield rows of ``split`` in sid order, ``chunk_size`` at a time.

        Keyset pagination (``sid > last``) rather than OFFSET: each query costs the same, and a
        chunk is materialised only while it is processed, so memory is bounded by the chunk.
        """
        sql = ("SELECT sid, id, text, current_label, original_label, frozen FROM sentences "
               "WHERE split=? AND sid>? ORDER BY sid LIMIT ?")
        for rows in keyset_chunks(self.conn, sql, (split,), chunk_size, after=after_sid):
            yield [Row(*r) for r in rows]

    # -- writing labels --------------------------------------------------------------------------
    def apply_labels(self, changes: Sequence[LabelChange], *, iteration: int, source: str) -> int:
        """Write label changes and their history rows in one transaction; returns rows changed.

        A change applies only if the row still holds ``old_label`` and is a train row; changes
        that no longer apply (already written by an interrupted earlier attempt) are skipped,
        and so are their history rows.
        """
        if not changes:
            return 0
        with self.transaction() as conn:
            return self._apply_labels(conn, changes, iteration=iteration, source=source)

    def apply_decision(self, changes: Sequence[LabelChange], freeze: Sequence[int] = (),
                       queue: Sequence[tuple[int, int, str, float | None]] = (), *, iteration: int, source: str,
                       resolved: Sequence[int] = (), confident: Sequence[int] = ()) -> int:
        """One decision in one transaction; returns rows changed. Idempotent like :meth:`apply_labels`.

        The ensemble's (label changes, freezes, new review-queue entries, and the rows it is now
        ``confident`` about) or a reviewer's (LLM's, human's: label changes and the queue entries
        they settle, ``resolved``): a crash leaves either all of it or none.
        """
        with self.transaction() as conn:
            changed = self._apply_labels(conn, changes, iteration=iteration, source=source) if changes else 0
            conn.executemany("UPDATE sentences SET frozen=1 WHERE sid=?", [(s,) for s in freeze])
            self._enqueue(conn, queue)
            conn.executemany("UPDATE review_queue SET status='done' WHERE sid=?", [(s,) for s in resolved])
            self._close_stale(conn, confident, iteration)
            return changed

    @staticmethod
    def _close_stale(conn: sqlite3.Connection, confident: Sequence[int], iteration: int) -> None:
        """Close the open low-confidence entries of older iterations whose row is now predicted confidently.

        Why: such an entry asked a person (or the LLM) about a doubt the models no longer have; left
        open it would be exported for review forever. Closed, not deleted: status 'done' with
        ``closed_reason='confident'`` and the iteration that closed it (a rollback past that
        iteration opens it again; a later low-confidence prediction re-raises it).
        """
        conn.executemany(
            "UPDATE review_queue SET status='done', closed_iteration=?, closed_reason='confident' "
            "WHERE sid=? AND status='open' AND reason='low_confidence' AND iteration < ?",
            [(iteration, sid, iteration) for sid in confident])

    @staticmethod
    def _apply_labels(conn: sqlite3.Connection, changes: Sequence[LabelChange], *, iteration: int,
                      source: str) -> int:
        if source not in SOURCES:
            raise ValueError(f"unknown label source {source!r}")
        now = utcnow()
        conn.execute("CREATE TEMP TABLE IF NOT EXISTS _pending (sid INTEGER PRIMARY KEY, "
                     "old_label INTEGER, new_label INTEGER, confidence REAL)")
        conn.execute("DELETE FROM _pending")
        conn.executemany("INSERT INTO _pending VALUES (?, ?, ?, ?)", changes)  # field order = columns
        gold = conn.execute("SELECT count(*) FROM _pending p JOIN sentences s ON s.sid = p.sid "
                            "WHERE s.split = 'gold'").fetchone()[0]
        if gold:
            raise StoreError(f"refusing to relabel {gold} gold row(s): the gold split is never relabelled")
        # Only rows still holding the expected old label take part (idempotent replays), and a
        # human's label is final: no model or LLM overrides it. One primary-key lookup per
        # pending row, never a scan of the table (a chunk's cost must not grow with the table).
        human_is_final = " AND s.label_source != 'human'" if source in AUTOMATIC_SOURCES else ""
        conn.execute(
            "DELETE FROM _pending WHERE old_label = new_label OR NOT EXISTS (SELECT 1 FROM sentences s "
            "WHERE s.sid = _pending.sid AND s.current_label = _pending.old_label AND s.split = 'train'"
            + human_is_final + ")"
        )
        conn.execute(
            "INSERT INTO label_history (sid, iteration, old_label, new_label, confidence, source, created_at) "
            "SELECT sid, ?, old_label, new_label, confidence, ?, ? FROM _pending ORDER BY sid",
            (iteration, source, now),
        )
        cur = conn.execute(UPDATE_PENDING, (now, source))
        return cur.rowcount

    def flip_counts(self, sids: Sequence[int], source: str = "ensemble") -> dict[int, int]:
        """How many times each row was changed by ``source`` in its live lineage (oscillation detection).

        Changes a rollback or restore undid do not count: the iteration that replaces them would
        otherwise see every row it corrects again as oscillating.
        """
        rows = select_in(self.conn, "SELECT sid, count(*) FROM label_history WHERE source=? AND undone_by IS NULL "
                                    "AND sid IN ({marks}) GROUP BY sid", sids, params=(source,))
        return {int(s): int(n) for s, n in rows}

    @staticmethod
    def _enqueue(conn: sqlite3.Connection, items: Sequence[tuple[int, int, str, float | None]]) -> None:
        if items:
            conn.executemany(
                "INSERT INTO review_queue (sid, iteration, reason, confidence) VALUES (?, ?, ?, ?) "
                "ON CONFLICT(sid) DO UPDATE SET iteration=excluded.iteration, reason=excluded.reason, "
                "confidence=excluded.confidence, status='open', closed_iteration=NULL, closed_reason=NULL "
                "WHERE review_queue.status='open' OR review_queue.closed_reason='confident'",
                items,
            )

    def apply_human_labels(self, labels: Sequence[tuple[int, int]], *, iteration: int) -> int:
        """Write reviewed labels ``(sid, label)`` in one transaction; returns rows whose label changed.

        Every reviewed row gets a history row (source ``human``, also when the reviewer confirmed
        the current label), ``label_source='human'`` (which later iterations never override), is
        unfrozen (a settled row is training data again) and its review-queue entry is resolved.
        """
        if not labels:
            return 0
        now = utcnow()
        with self.transaction() as conn:
            current = dict(select_in(conn, "SELECT sid, current_label FROM sentences WHERE split='train' "
                                           "AND sid IN ({marks})", [sid for sid, _ in labels]))
            missing = [sid for sid, _ in labels if sid not in current]
            if missing:
                raise StoreError(f"{len(missing)} reviewed row(s) are not train rows (sids {missing[:5]})")
            conn.executemany(
                "INSERT INTO label_history (sid, iteration, old_label, new_label, confidence, source, created_at) "
                "VALUES (?, ?, ?, ?, NULL, 'human', ?)",
                [(sid, iteration, current[sid], label, now) for sid, label in labels])
            conn.executemany(
                "UPDATE sentences SET current_label=?, label_last_updated=?, confidence=NULL, label_source='human', "
                "frozen=0 WHERE sid=?", [(label, now, sid) for sid, label in labels])
            conn.executemany("UPDATE review_queue SET status='done' WHERE sid=?", [(sid,) for sid, _ in labels])
        return sum(current[sid] != label for sid, label in labels)

    def open_review_count(self) -> dict[str, int]:
        rows = self.conn.execute("SELECT reason, count(*) FROM review_queue WHERE status='open' GROUP BY reason")
        return {r: n for r, n in rows}

    # -- predictions ------------------------------------------------------------------------------
    def save_predictions(self, iteration: int, rows: Sequence[tuple[int, float, int, float, float, str]]) -> None:
        """Store one chunk of ensemble predictions (sid, p_pos, predicted, confidence, agreement, members)."""
        with self.transaction() as conn:
            conn.executemany(
                "INSERT OR REPLACE INTO predictions VALUES (?, ?, ?, ?, ?, ?, ?)",
                [(iteration, *r) for r in rows],
            )

    def last_predicted_sid(self, iteration: int) -> int:
        row = self.conn.execute("SELECT max(sid) FROM predictions WHERE iteration=?", (iteration,)).fetchone()
        return row[0] or 0

    def iter_predictions(self, iteration: int, chunk_size: int) -> Iterator[list[tuple]]:
        """(sid, current_label, predicted, confidence, lock) in sid order, chunk by chunk.

        ``lock`` says why the policy must leave a row alone: ``'human'`` (a person's label is
        final), ``'frozen'`` (it oscillated), or None; the two are counted apart.
        """
        yield from keyset_chunks(
            self.conn, "SELECT p.sid, s.current_label, p.predicted, p.confidence, CASE WHEN s.label_source = "
                       "'human' THEN 'human' WHEN s.frozen THEN 'frozen' END FROM predictions p "
                       "JOIN sentences s ON s.sid = p.sid WHERE p.iteration=? AND p.sid>? ORDER BY p.sid LIMIT ?",
            (iteration,), chunk_size)

    # -- loop bookkeeping ------------------------------------------------------------------------
    def begin_iteration(self, iteration: int, threshold: float) -> None:
        with self.transaction() as conn:
            conn.execute(
                "INSERT OR IGNORE INTO iterations (iteration, started_at, threshold) VALUES (?, ?, ?)",
                (iteration, utcnow(), threshold),
            )

    def finish_iteration(self, iteration: int, metrics: dict[str, Any]) -> None:
        with self.transaction() as conn:
            conn.execute(
                "UPDATE iterations SET finished_at=?, metrics=? WHERE iteration=?",
                (utcnow(), json.dumps(metrics), iteration),
            )

    def iterations(self) -> list[dict[str, Any]]:
        rows = self.conn.execute(
            "SELECT iteration, started_at, finished_at, threshold, metrics FROM iterations ORDER BY iteration"
        ).fetchall()
        return [
            {"iteration": i, "started_at": s, "finished_at": f, "threshold": t, "metrics": json.loads(m)}
            for i, s, f, t, m in rows
        ]

    def stage_done(self, iteration: int, stage: str) -> bool:
        row = self.conn.execute(
            "SELECT finished_at FROM stages WHERE iteration=? AND stage=?", (iteration, stage)
        ).fetchone()
        return bool(row and row[0])

    def stage_info(self, iteration: int, stage: str) -> dict[str, Any] | None:
        row = self.conn.execute(
            "SELECT info FROM stages WHERE iteration=? AND stage=? AND finished_at IS NOT NULL", (iteration, stage)
        ).fetchone()
        return json.loads(row[0]) if row else None

    def start_stage(self, iteration: int, stage: str) -> None:
        with self.transaction() as conn:
            conn.execute(
                "INSERT OR IGNORE INTO stages (iteration, stage, started_at) VALUES (?, ?, ?)",
                (iteration, stage, utcnow()),
            )

    def finish_stage(self, iteration: int, stage: str, info: dict[str, Any]) -> None:
        with self.transaction() as conn:
            conn.execute(
                "UPDATE stages SET finished_at=?, info=? WHERE iteration=? AND stage=?",
                (utcnow(), json.dumps(info), iteration, stage),
            )

    def current_stage(self) -> tuple[int, str] | None:
        row = self.conn.execute(
            "SELECT iteration, stage FROM stages WHERE finished_at IS NULL ORDER BY iteration DESC LIMIT 1"
        ).fetchone()
        return (row[0], row[1]) if row else None

    # -- audit, measurement and rollback ----------------------------------------------------------
    def changes_in_iteration(self, iteration: int) -> int:
        """Rows whose label ``iteration`` changed, in the live lineage (undone changes do not count)."""
        return self.conn.execute(
            "SELECT count(DISTINCT sid) FROM label_history WHERE iteration=? AND source != 'rollback' "
            "AND undone_by IS NULL", (iteration,)
        ).fetchone()[0]

    def reference_accuracy(self) -> float | None:
        """Share of train rows whose current label equals the known-true label (None if unknown)."""
        row = self.conn.execute(
            "SELECT avg(s.current_label = r.label), count(*) FROM reference_labels r "
            "JOIN sentences s ON s.sid = r.sid WHERE s.split='train'"
        ).fetchone()
        return float(row[0]) if row[1] else None

    def labels_after(self, iteration: int, chunk_size: int = 50_000, *,
                     keep_human: bool = False) -> Iterator[list[tuple[int, int, int]]]:
        """(sid, current_label, label_after_iteration) for train rows, chunk by chunk.

        The label after K is the new label of the row's latest *live* history row of an earlier
        iteration, or of iteration K itself unless it was written after K finished (a person's
        review, a restore), else ``original_label``: the labels the data-iter-K snapshot holds.
        ``keep_human`` leaves out the rows whose label a person set.
        """
        human = " AND s.label_source != 'human'" if keep_human else ""
        sql = f"""
            SELECT s.sid, s.current_label, COALESCE(
                (SELECT h.new_label FROM label_history h WHERE h.sid = s.sid AND h.undone_by IS NULL
                 AND (h.iteration < ? OR (h.iteration = ? AND h.source NOT IN {_AFTER_FINISH_SOURCES}))
                 ORDER BY h.hid DESC LIMIT 1), s.original_label)
            FROM sentences s WHERE s.split='train'{human} AND s.sid > ? ORDER BY s.sid LIMIT ?
            """
        yield from keyset_chunks(self.conn, sql, (iteration, iteration), chunk_size)

    def rollback(self, to_iteration: int, chunk_size: int = 50_000, *, undo_human: bool = False) -> RollbackResult:
        """Restore every train label to its value after ``to_iteration`` (:meth:`labels_after`).

        One transaction for the label writes and the bookkeeping: a kill at any point (crash points
        ``rollback_chunk`` after each chunk, ``rollback_before_commit``) leaves the state before the
        rollback, and the same command run again does all of it; chunks only bound what Python
        holds. Recorded in history (source ``rollback``, iteration = target) and in ``operations``;
        the live history rows it replaces are marked undone. Rows a person labelled keep their label
        unless ``undo_human``: a person's label is final, and a rollback of the models' work must
        not silently discard it (the number kept is returned so that the CLI says so).
        """
        if to_iteration < 0:
            raise ValueError(f"to_iteration must be 0 or more, got {to_iteration}")
        with self.transaction() as conn:
            op = self._record_operation(conn, "rollback", {"to_iteration": to_iteration, "undo_human": undo_human})
            kept = 0 if undo_human else self._human_labels_since(conn, to_iteration)
            changed = 0
            for rows in self.labels_after(to_iteration, chunk_size, keep_human=not undo_human):
                changes = [LabelChange(sid, cur, target, None) for sid, cur, target in rows if cur != target]
                if changes:
                    changed += self._apply_labels(conn, changes, iteration=to_iteration, source="rollback")
                crash_point("rollback_chunk")
            human = "" if undo_human else " AND sid NOT IN (SELECT sid FROM sentences WHERE label_source = 'human')"
            undone = conn.execute(
                "UPDATE label_history SET undone_by = ? WHERE undone_by IS NULL AND (iteration > ? OR "
                f"(iteration = ? AND source IN {_AFTER_FINISH_SOURCES})){human}",
                (op, to_iteration, to_iteration)).rowcount
            self._drop_later(conn, to_iteration, op)
            result = RollbackResult(changed, kept, undone)
            conn.execute("UPDATE operations SET info=? WHERE op_id=?", (json.dumps(result._asdict()), op))
            crash_point("rollback_before_commit")
        return result

    @staticmethod
    def _human_labels_since(conn: sqlite3.Connection, iteration: int) -> int:
        """Train rows holding a person's label imported after ``iteration`` finished (a rollback keeps them)."""
        return conn.execute(
            "SELECT count(*) FROM sentences s WHERE s.split = 'train' AND s.label_source = 'human' AND EXISTS "
            "(SELECT 1 FROM label_history h WHERE h.sid = s.sid AND h.source = 'human' AND h.undone_by IS NULL "
            "AND h.iteration >= ?)", (iteration,)).fetchone()[0]

    @staticmethod
    def _drop_later(conn: sqlite3.Connection, to_iteration: int, op: int) -> None:
        """Remove later iterations' bookkeeping so the loop continues from ``to_iteration``.

        Rows frozen by a later iteration are unfrozen (a frozen row's oscillation entry carries the
        iteration that froze it: the policy never re-raises a frozen row); review entries of the
        target or earlier that a label this rollback undid had settled, or that a later confident
        prediction closed, are open again; entries raised later did not exist at the target (the
        re-run raises them again).
        """
        conn.execute("UPDATE sentences SET frozen=0 WHERE sid IN (SELECT sid FROM review_queue "
                     "WHERE iteration > ? AND reason='oscillation' AND status='open')", (to_iteration,))
        conn.execute("UPDATE review_queue SET status='open' WHERE iteration <= ? AND status='done' AND sid IN "
                     "(SELECT sid FROM label_history WHERE undone_by = ? AND source IN ('llm', 'human'))",
                     (to_iteration, op))
        conn.execute("UPDATE review_queue SET status='open', closed_iteration=NULL, closed_reason=NULL "
                     "WHERE closed_reason = 'confident' AND closed_iteration > ?", (to_iteration,))
        for table in ("stages", "predictions", "iterations", "review_queue"):
            conn.execute(f"DELETE FROM {table} WHERE iteration > ?", (to_iteration,))

    def restore_labels(self, wanted: Mapping[str, int], *, iteration: int, rev: str,
                       chunk_size: int = 50_000) -> int:
        """Set the train labels to ``wanted`` (external id -> label); returns rows changed.

        One transaction, like :meth:`rollback` (crash points ``restore_chunk`` after each chunk,
        ``restore_before_commit``). Recorded in history (source ``restore``, at ``iteration``) and in
        ``operations``. For each row it changes, the live history rows since the row last held the
        wanted label are marked undone: the restore reverses them, so they no longer count as flips.
        """
        with self.transaction() as conn:
            op = self._record_operation(conn, "restore", {"rev": rev, "iteration": iteration})
            changed = 0
            for rows in self.iter_chunks("train", chunk_size):
                changes = [LabelChange(r.sid, r.current_label, int(wanted[r.id]), None)
                           for r in rows if r.id in wanted and int(wanted[r.id]) != r.current_label]
                if changes:
                    self._undo_since_label(conn, op, changes)
                    changed += self._apply_labels(conn, changes, iteration=iteration, source="restore")
                crash_point("restore_chunk")
            conn.execute("UPDATE operations SET info=? WHERE op_id=?", (json.dumps({"changed": changed}), op))
            crash_point("restore_before_commit")
        return changed

    @staticmethod
    def _undo_since_label(conn: sqlite3.Connection, op: int, changes: Sequence[LabelChange]) -> None:
        """Mark undone, per changed row, its live history rows after it last held the new label."""
        conn.execute("CREATE TEMP TABLE IF NOT EXISTS _undo (sid INTEGER PRIMARY KEY, label INTEGER)")
        conn.execute("DELETE FROM _undo")
        conn.executemany("INSERT INTO _undo VALUES (?, ?)", [(c.sid, c.new_label) for c in changes])
        conn.execute(
            "UPDATE label_history SET undone_by = ? WHERE undone_by IS NULL AND sid IN (SELECT sid FROM _undo) "
            "AND hid > COALESCE((SELECT max(h.hid) FROM label_history h WHERE h.sid = label_history.sid "
            "AND h.undone_by IS NULL AND h.new_label = (SELECT u.label FROM _undo u WHERE u.sid = h.sid)), 0)",
            (op,))

    @staticmethod
    def _record_operation(conn: sqlite3.Connection, command: str, args: dict[str, Any]) -> int:
        """An ``operations`` row for a rollback/restore (in its transaction); its id marks what it undoes."""
        cur = conn.execute("INSERT INTO operations (command, args, created_at) VALUES (?, ?, ?)",
                           (command, json.dumps(args), utcnow()))
        return int(cur.lastrowid)

    def last_operation(self) -> dict[str, Any] | None:
        """The latest rollback/restore (committed ones only: each is a single transaction)."""
        row = self.conn.execute("SELECT op_id, command, args, created_at, info FROM operations "
                                "ORDER BY op_id DESC LIMIT 1").fetchone()
        if row is None:
            return None
        return {"op_id": row[0], "command": row[1], "args": json.loads(row[2]), "created_at": row[3],
                "info": json.loads(row[4])}

    def last_finished_iteration(self) -> int | None:
        row = self.conn.execute("SELECT max(iteration) FROM iterations WHERE finished_at IS NOT NULL").fetchone()
        return row[0]

    def history_is_consistent(self, *, live: bool = False) -> bool:
        """Replaying history (``live``: only its live lineage) from original_label reproduces every current_label."""
        only_live = " AND h.undone_by IS NULL" if live else ""
        bad = self.conn.execute(
            f"""
            SELECT count(*) FROM sentences s WHERE s.current_label != COALESCE(
              (SELECT h.new_label FROM label_history h WHERE h.sid = s.sid{only_live} ORDER BY h.hid DESC LIMIT 1),
              s.original_label)
            """
        ).fetchone()[0]
        return bad == 0


def _split_sql(script: str) -> list[str]:
    """Split the schema into statements, keeping trigger bodies (which contain ';') whole."""
    out, buf = [], []
    for line in script.strip().splitlines():
        if not line.strip() or line.strip().startswith("--"):
            continue
        buf.append(line)
        joined = "\n".join(buf)
        if line.rstrip().endswith(";") and (not joined.lstrip().upper().startswith("CREATE TRIGGER")
                                            or line.rstrip().upper().endswith("END;")):
            out.append(joined)
            buf = []
    return out

