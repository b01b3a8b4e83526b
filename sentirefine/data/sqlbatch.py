"""``SELECT … WHERE key IN (…)`` over any number of keys, in batches SQLite accepts.

Older SQLite builds cap bound parameters at 999 per statement, so a lookup of thousands of ids
is split into statements of at most :data:`MAX_PARAMS` keys. Every bulk lookup in the package
goes through :func:`select_in`, so the limit is handled (and tested) in one place.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

# Below SQLite's historical limit of 999, leaving room for a few fixed parameters per statement.
MAX_PARAMS = 900


def select_in(conn: sqlite3.Connection, sql: str, keys: Iterable[Any], params: Sequence[Any] = ()) -> Iterator[tuple]:
    """Rows of ``sql`` for every key; ``sql`` holds one ``{marks}`` placeholder for the IN list.

    ``params`` are bound before the keys (for ``?`` placeholders that precede ``{marks}``).
    Duplicate keys are looked up once.
    """
    unique = list(dict.fromkeys(keys))
    for start in range(0, len(unique), MAX_PARAMS):
        part = unique[start : start + MAX_PARAMS]
        yield from conn.execute(sql.format(marks=",".join("?" * len(part))), (*params, *part))


def keyset_chunks(conn: sqlite3.Connection, sql: str, params: Sequence[Any], chunk_size: int, *,
                  after: int = 0) -> Iterator[list[tuple]]:
    """Rows of ``sql`` ``chunk_size`` at a time by keyset pagination on the first column.

    ``sql`` ends with ``... AND key > ? ORDER BY key LIMIT ?``: those two placeholders are bound
    after ``params``. Unlike OFFSET, each query costs the same however far the scan has got, and
    only one chunk is in memory at a time: memory is bounded by the chunk, not by the table.
    """
    last = after
    while rows := conn.execute(sql, (*params, last, chunk_size)).fetchall():
        yield rows
        last = rows[-1][0]
