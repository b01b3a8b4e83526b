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
