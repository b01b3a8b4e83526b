"""The store's side of an import: the SQL that ``data/ingest.py`` runs inside its transaction.

Ingest validates rows; this module is all it knows of the schema, so the SQL on the store stays
in the store's modules. Every function takes the import's open connection (one transaction per
file, or per import with ``--strict``) and commits nothing itself.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from typing import Protocol, TypeVar

from sentirefine.data.sqlbatch import select_in


class _Lined(Protocol):
    id: str
    line: int


R = TypeVar("R", bound=_Lined)


class SeenIds:
    """The ids this import has taken so far, with their line numbers, in a SQLite temp table.

    A dict of them would grow with the file (≈130 B an id: +36 MB from 200k to 480k rows,
    ``bench memory``); SQLite pages the temp table, so import memory stays flat.
    """

    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn
        conn.execute("CREATE TEMP TABLE IF NOT EXISTS import_seen (id TEXT PRIMARY KEY, line INTEGER NOT NULL)")
        conn.execute("DELETE FROM temp.import_seen")

    def claim(self, rows: list[R]) -> tuple[list[R], list[tuple[R, int]]]:
        """Split ``rows`` (in line order) into first occurrences and duplicates (with the first line)."""
        first = dict(select_in(self.conn, "SELECT id, line FROM temp.import_seen WHERE id IN ({marks})",
                               [r.id for r in rows]))
        fresh, duplicates = [], []
        for r in rows:
            if r.id in first:
                duplicates.append((r, first[r.id]))
            else:
                first[r.id] = r.line
                fresh.append(r)
        self.conn.executemany("INSERT INTO temp.import_seen (id, line) VALUES (?, ?)", [(r.id, r.line) for r in fresh])
        return fresh, duplicates


def stored_content(conn: sqlite3.Connection, ids: Sequence[str]) -> dict[str, tuple[str, int, str]]:
    """{id: (text, original_label, split)} of the ids already in the store."""
    return {r[0]: r[1:] for r in select_in(
        conn, "SELECT id, text, original_label, split FROM sentences WHERE id IN ({marks})", ids)}


def insert_sentences(conn: sqlite3.Connection, rows: Sequence[tuple]) -> None:
    """Rows of (id, text, original_label, current_label, label_last_updated, split, group_key)."""
    conn.executemany(
        "INSERT INTO sentences (id, text, original_label, current_label, label_last_updated, split, group_key) "
        "VALUES (?, ?, ?, ?, ?, ?, ?)", rows)


def insert_reference_labels(conn: sqlite3.Connection, truth: Sequence[tuple[str, int]]) -> None:
    """Known-true labels ``(id, label)`` of rows just inserted (benchmarks measure label accuracy with them)."""
    conn.executemany("INSERT OR REPLACE INTO reference_labels (sid, label) SELECT sid, ? FROM sentences WHERE id = ?",
                     [(label, rid) for rid, label in truth])


def has_id_matching(conn: sqlite3.Connection, glob: str) -> bool:
    """Whether any stored id matches the SQLite GLOB pattern ``glob``."""
    return conn.execute("SELECT 1 FROM sentences WHERE id GLOB ? LIMIT 1", (glob,)).fetchone() is not None
