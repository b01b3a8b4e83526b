"""Injected noise at import: uniform and class-conditional flips, truth kept in reference_labels."""

from __future__ import annotations

from sentirefine import demo
from sentirefine.data.ingest import import_file
from sentirefine.data.store import Store


def _flips(tmp_path, rate) -> tuple[dict[int, int], dict[int, int]]:
    """(flipped rows per true label, rows per true label) after importing the demo train file."""
    with Store(tmp_path / "s.db", create=True) as store:
        import_file(store, demo.TRAIN, split="train", rejects_dir=tmp_path, noise_rate=rate, noise_seed=3)
        rows = store.conn.execute(
            "SELECT r.label, s.original_label != r.label FROM reference_labels r JOIN sentences s ON s.sid = r.sid"
        ).fetchall()
    flipped, total = {0: 0, 1: 0}, {0: 0, 1: 0}
    for truth, changed in rows:
        total[truth] += 1
        flipped[truth] += changed
    return flipped, total


def test_class_conditional_noise_flips_each_class_at_its_own_rate(tmp_path):
    flipped, total = _flips(tmp_path, {1: 0.3, 0: 0.0})
    assert flipped[0] == 0
    assert 0.25 < flipped[1] / total[1] < 0.35


def test_uniform_noise_is_reproducible_and_keeps_truth(tmp_path):
    a, total = _flips(tmp_path / "a", 0.2)
    b, _ = _flips(tmp_path / "b", 0.2)
    assert a == b and sum(total.values()) == 8000
    assert 0.17 < sum(a.values()) / 8000 < 0.23
