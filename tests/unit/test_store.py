"""The SQLite store: schema guards, chunking, bulk label writes with history, rollback."""

from __future__ import annotations

import sqlite3

import pytest

from sentirefine.data.store import SCHEMA_VERSION, UPDATE_PENDING, LabelChange, Store
from sentirefine.errors import StoreError


def _fill(store: Store, n_train: int = 10, n_gold: int = 3) -> None:
    with store.transaction() as conn:
        conn.executemany(
            "INSERT INTO sentences (id, text, original_label, current_label, split) VALUES (?, ?, ?, ?, ?)",
            [(f"t{i}", f"text {i}", i % 2, i % 2, "train") for i in range(n_train)]
            + [(f"g{i}", f"gold {i}", i % 2, i % 2, "gold") for i in range(n_gold)],
        )


@pytest.fixture
def store(tmp_path):
    s = Store(tmp_path / "s.db", create=True)
    _fill(s)
    yield s
    s.close()


def test_missing_database_is_a_clear_error(tmp_path):
    with pytest.raises(StoreError, match="database not found"):
        Store(tmp_path / "nope.db")


def test_not_a_database_file(tmp_path):
    bad = tmp_path / "bad.db"
    bad.write_bytes(b"this is not sqlite at all" * 100)
    with pytest.raises(StoreError, match="not a sentirefine SQLite database"):
        Store(bad)


def test_foreign_sqlite_database_refused(tmp_path):
    path = tmp_path / "other.db"
    sqlite3.connect(path).execute("CREATE TABLE x (a)").connection.commit()
    with pytest.raises(StoreError, match="not a sentirefine store"):
        Store(path)


def test_other_schema_version_refused(tmp_path, store):
    store.conn.execute("UPDATE meta SET value='999' WHERE key='schema_version'")
    store.close()
    with pytest.raises(StoreError, match=f"schema version 999.*expects {SCHEMA_VERSION}"):
        Store(tmp_path / "s.db")


def test_chunks_cover_every_row_exactly_once(tmp_path):
    s = Store(tmp_path / "c.db", create=True)
    _fill(s, n_train=1003, n_gold=7)
    seen = [r.sid for chunk in s.iter_chunks("train", 100) for r in chunk]
    assert len(seen) == 1003 == len(set(seen))
    sizes = [len(c) for c in s.iter_chunks("train", 100)]
    assert max(sizes) == 100 and sizes[-1] == 3
    assert all(r.id.startswith("t") for c in s.iter_chunks("train", 100) for r in c)


def test_bulk_update_writes_history_and_is_idempotent(store):
    sids = [r.sid for r in next(store.iter_chunks("train", 4))]
    # the rows hold label (i % 2) where sid = i + 1, so old label = (sid - 1) % 2
    changes = [LabelChange(sid, (sid - 1) % 2, 1 - (sid - 1) % 2, 0.9) for sid in sids]
    assert store.apply_labels(changes, iteration=1, source="ensemble") == 4
    # A replay (e.g. after a crash) changes nothing and writes no duplicate history.
    assert store.apply_labels(changes, iteration=1, source="ensemble") == 0
    assert store.conn.execute("SELECT count(*) FROM label_history").fetchone()[0] == 4
    row = store.conn.execute(
        "SELECT current_label, original_label, label_source, confidence FROM sentences WHERE sid=?", (sids[0],)
    ).fetchone()
    assert row == (1 - (sids[0] - 1) % 2, (sids[0] - 1) % 2, "ensemble", 0.9)
    assert store.history_is_consistent()


def test_bulk_update_visits_only_the_pending_rows(store):
    # A chunk's label write must cost the same at 20k rows and at 500k: no scan of sentences.
    store.apply_labels([LabelChange(1, 0, 1, 0.9)], iteration=1, source="ensemble")  # creates _pending
    plan = " | ".join(r[3] for r in store.conn.execute("EXPLAIN QUERY PLAN " + UPDATE_PENDING, ("now", "ensemble")))
    assert "SEARCH sentences USING INTEGER PRIMARY KEY" in plan and "SCAN sentences" not in plan


def test_bulk_update_is_atomic(store, monkeypatch):
    sids = [r.sid for r in next(store.iter_chunks("train", 3))]
    good = [LabelChange(s, (s - 1) % 2, 1 - (s - 1) % 2, 0.8) for s in sids]
    # The last change violates the label CHECK constraint mid-statement.
    bad = [*good[:-1], LabelChange(sids[-1], (sids[-1] - 1) % 2, 7, 0.8)]
    with pytest.raises(sqlite3.IntegrityError):
        store.apply_labels(bad, iteration=1, source="ensemble")
    assert store.conn.execute("SELECT count(*) FROM label_history").fetchone()[0] == 0
    assert store.conn.execute("SELECT count(*) FROM sentences WHERE label_source != 'original'").fetchone()[0] == 0


def test_gold_rows_cannot_be_relabelled(store):
    gold_sid = store.conn.execute("SELECT sid, current_label FROM sentences WHERE split='gold'").fetchone()
    with pytest.raises(StoreError, match="gold"):
        store.apply_labels([LabelChange(gold_sid[0], gold_sid[1], 1 - gold_sid[1], 0.99)],
                           iteration=1, source="ensemble")
    # Even raw SQL cannot do it: a trigger guards the table.
    with pytest.raises(sqlite3.IntegrityError, match="gold rows are never relabelled"):
        store.conn.execute("UPDATE sentences SET current_label = 1 - current_label WHERE sid=?", (gold_sid[0],))


def test_original_label_is_immutable(store):
    with pytest.raises(sqlite3.IntegrityError, match="immutable"):
        store.conn.execute("UPDATE sentences SET original_label = 1 - original_label WHERE sid=1")


def test_rollback_restores_labels_after_iteration(store):
    sids = [r.sid for r in next(store.iter_chunks("train", 6))]
    flip = lambda ss, it: store.apply_labels(  # noqa: E731
        [LabelChange(s, lab, 1 - lab, 0.9) for s in ss
         for lab in [store.conn.execute("SELECT current_label FROM sentences WHERE sid=?", (s,)).fetchone()[0]]],
        iteration=it, source="ensemble")
    before = dict(store.conn.execute("SELECT sid, current_label FROM sentences"))
    flip(sids[:3], 1)
    after_1 = dict(store.conn.execute("SELECT sid, current_label FROM sentences"))
    flip(sids[2:], 2)
    store.apply_decision([], [], [(sids[0], 1, "low_confidence", 0.5), (sids[1], 2, "low_confidence", 0.5)],
                         iteration=2, source="ensemble")
    assert store.rollback(1).changed == 4  # sids[2:] changed in iteration 2
    assert store.open_review_count() == {"low_confidence": 1}  # the entry raised in iteration 2 is gone
    assert dict(store.conn.execute("SELECT sid, current_label FROM sentences")) == after_1
    store.rollback(0)
    assert dict(store.conn.execute("SELECT sid, current_label FROM sentences")) == before
    assert store.history_is_consistent()
    assert {s for (s,) in store.conn.execute("SELECT DISTINCT source FROM label_history")} == {"ensemble", "rollback"}


def test_rollback_undoes_later_freezes_and_reopens_reviews_settled_later(store):
    a, b, c = [r.sid for r in next(store.iter_chunks("train", 3))]
    store.apply_decision([], [], [(a, 1, "low_confidence", 0.5), (b, 1, "low_confidence", 0.55)],
                         iteration=1, source="ensemble")
    label_a = store.conn.execute("SELECT current_label FROM sentences WHERE sid=?", (a,)).fetchone()[0]
    store.apply_decision([LabelChange(a, label_a, 1 - label_a, 0.95)], resolved=[a], iteration=2,
                         source="llm")
    store.apply_decision([], [c], [(c, 2, "oscillation", None)], iteration=2, source="ensemble")
    assert store.open_review_count() == {"low_confidence": 1, "oscillation": 1}
    store.rollback(1)
    frozen = dict(store.conn.execute("SELECT sid, frozen FROM sentences WHERE sid IN (?, ?, ?)", (a, b, c)))
    assert frozen == {a: 0, b: 0, c: 0}  # c was frozen in iteration 2: training data again
    assert store.open_review_count() == {"low_confidence": 2}  # a's entry reopened with its label undone
    assert store.conn.execute("SELECT current_label FROM sentences WHERE sid=?", (a,)).fetchone()[0] == label_a
    assert store.history_is_consistent()


def test_stage_bookkeeping(store):
    assert not store.stage_done(1, "predict")
    store.start_stage(1, "predict")
    assert store.current_stage() == (1, "predict")
    store.finish_stage(1, "predict", {"rows": 10})
    assert store.stage_done(1, "predict") and store.stage_info(1, "predict") == {"rows": 10}
    assert store.current_stage() is None


def test_a_human_label_is_final_for_models_and_the_llm_but_not_for_a_human(store):
    sid = store.conn.execute("SELECT sid FROM sentences WHERE id='t1'").fetchone()[0]  # label 1
    assert store.apply_human_labels([(sid, 0)], iteration=1) == 1
    for source in ("ensemble", "llm"):
        assert store.apply_labels([LabelChange(sid, 0, 1, 0.99)], iteration=2, source=source) == 0
    other = store.conn.execute("SELECT sid FROM sentences WHERE id='t3'").fetchone()[0]
    both = [LabelChange(sid, 0, 1, 0.99), LabelChange(other, 1, 0, 0.99)]
    assert store.apply_labels(both, iteration=2, source="ensemble") == 1  # the other row still changes
    history = store.conn.execute("SELECT sid, source FROM label_history WHERE iteration=2").fetchall()
    assert history == [(other, "ensemble")]  # no history row for a skipped change
    assert store.apply_human_labels([(sid, 1)], iteration=3) == 1
    assert store.conn.execute("SELECT current_label FROM sentences WHERE sid=?", (sid,)).fetchone()[0] == 1
