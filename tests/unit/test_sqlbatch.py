"""select_in: lookups beyond SQLite's bound-parameter limit, with leading parameters."""

from __future__ import annotations

import sqlite3

from sentirefine.data.sqlbatch import MAX_PARAMS, select_in


def _conn(n: int) -> sqlite3.Connection:
    conn = sqlite3.connect(":memory:")
    conn.execute("CREATE TABLE t (k INTEGER PRIMARY KEY, tag TEXT)")
    conn.executemany("INSERT INTO t VALUES (?, ?)", [(i, "even" if i % 2 == 0 else "odd") for i in range(n)])
    return conn


def test_more_keys_than_one_statement_takes_are_all_found_once() -> None:
    n = MAX_PARAMS * 3 + 7
    keys = [*range(n), 0, 1, n + 5]  # duplicates and a missing key
    rows = list(select_in(_conn(n), "SELECT k FROM t WHERE k IN ({marks})", keys))
    assert sorted(k for (k,) in rows) == list(range(n))


def test_leading_params_are_bound_before_the_keys_of_every_batch() -> None:
    n = MAX_PARAMS * 2 + 1
    rows = select_in(_conn(n), "SELECT k FROM t WHERE tag=? AND k IN ({marks})", range(n), params=("odd",))
    assert sorted(k for (k,) in rows) == list(range(1, n, 2))


def test_no_keys_runs_no_statement() -> None:
    assert list(select_in(_conn(1), "SELECT k FROM t WHERE k IN ({marks})", [])) == []


def test_keyset_chunks_visit_every_row_once_in_key_order():
    import sqlite3

    from sentirefine.data.sqlbatch import keyset_chunks

    conn = sqlite3.connect(":memory:")
    conn.execute("CREATE TABLE t (k INTEGER PRIMARY KEY, g TEXT)")
    conn.executemany("INSERT INTO t VALUES (?, ?)", [(k, "ab"[k % 2]) for k in range(1, 1001)])
    chunks = list(keyset_chunks(conn, "SELECT k FROM t WHERE g = ? AND k > ? ORDER BY k LIMIT ?", ("a",), 64))
    assert [len(c) for c in chunks] == [64] * 7 + [52]
    assert [k for c in chunks for (k,) in c] == list(range(2, 1001, 2))
    assert [k for c in keyset_chunks(conn, "SELECT k FROM t WHERE k > ? ORDER BY k LIMIT ?", (), 500, after=990)
            for (k,) in c] == list(range(991, 1001))
