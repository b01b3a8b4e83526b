"""The bench's label-write measurement (speed and memory benchmarks) writes what it claims, chunk by chunk."""

from __future__ import annotations

from bench.speed import label_writes
from sentirefine.data.store import Store


def test_label_writes_flip_every_measured_row_once_with_history(tmp_path):
    with Store(tmp_path / "s.db", create=True) as store:
        with store.transaction() as conn:
            conn.executemany(
                "INSERT INTO sentences (id, text, original_label, current_label, split) VALUES (?,?,?,?,?)",
                [(f"t{i}", f"text {i}", i % 2, i % 2, "train") for i in range(10)] + [("g0", "gold", 0, 0, "gold")])
        out = label_writes(store, 50, chunk=3)
        assert out["rows"] == 10 and out["chunk_size"] == 3 and out["rows_per_s"] > 0
        changed = "SELECT count(*) FROM sentences WHERE current_label != original_label"
        assert store.conn.execute(changed).fetchone()[0] == 10  # the gold row is not among them
        assert store.conn.execute("SELECT count(*) FROM label_history").fetchone()[0] == 10
        assert store.history_is_consistent()
