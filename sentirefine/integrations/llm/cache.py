"""Persistent answer cache and daily request log (one SQLite file in the workspace).

Why: a sentence relabelled once must never be paid for again — not after a crash, not in the
next iteration, not in the next run. The key is a hash of (prompt version, model, text), so a
new prompt wording or model asks again. The daily log makes ``rpd`` hold across processes.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from sentirefine.data.sqlbatch import select_in

_DAY_S = 86_400.0


def cache_key(prompt_version: str, model: str, text: str) -> str:
    return hashlib.sha256("\x00".join((prompt_version, model, text)).encode("utf-8")).hexdigest()


class AnswerCache:
    def __init__(self, path: Path) -> None:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        self.conn = sqlite3.connect(path, timeout=30, isolation_level=None, check_same_thread=False)
        self.conn.execute("PRAGMA journal_mode = WAL")
        self.conn.execute("CREATE TABLE IF NOT EXISTS answers (key TEXT PRIMARY KEY, value TEXT NOT NULL, "
                          "created_at REAL NOT NULL)")
        self.conn.execute("CREATE TABLE IF NOT EXISTS requests (at REAL NOT NULL)")

    def get_many(self, keys: Iterable[str]) -> dict[str, Any]:
        rows = select_in(self.conn, "SELECT key, value FROM answers WHERE key IN ({marks})", keys)
        return {k: json.loads(v) for k, v in rows}

    def put_many(self, items: dict[str, Any]) -> None:
        now = time.time()
        self.conn.execute("BEGIN IMMEDIATE")
        self.conn.executemany("INSERT OR REPLACE INTO answers VALUES (?, ?, ?)",
                              [(k, json.dumps(v, ensure_ascii=False), now) for k, v in items.items()])
        self.conn.execute("COMMIT")

    def requests_today(self) -> int:
        """Requests sent in the last 24 h (by any process using this cache)."""
        return self.conn.execute("SELECT count(*) FROM requests WHERE at > ?", (time.time() - _DAY_S,)).fetchone()[0]

    def record_request(self) -> None:
        self.conn.execute("INSERT INTO requests VALUES (?)", (time.time(),))
        self.conn.execute("DELETE FROM requests WHERE at <= ?", (time.time() - _DAY_S,))

    def close(self) -> None:
        self.conn.close()
