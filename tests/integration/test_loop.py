"""The whole loop on a real SQLite file with real (tiny) models and a real multiprocessing Pool."""

from __future__ import annotations

import pytest

from sentirefine.store import Store

pytestmark = pytest.mark.integration


def test_whole_loop(tiny_corpus, tiny_config_file, cli, tmp_path):
    train, gold = tiny_corpus
    cli("-c", str(tiny_config_file), "import", str(train), "--gold", str(gold),
        "--inject-noise", "0.2", "--noise-seed", "1")
    out = cli("-c", str(tiny_config_file), "refine")
    assert "stopped: max_iterations=2 reached" in out.stdout
    with Store(tmp_path / "ws" / "sentences.db") as store:
        assert store.history_is_consistent()
        its = store.iterations()
        assert [it["iteration"] for it in its] == [0, 1, 2] and all(it["finished_at"] for it in its)
        thresholds = [it["threshold"] for it in its[1:]]
        assert thresholds == sorted(thresholds) and thresholds[0] < thresholds[1]
        # gold rows: never relabelled, never touched
        assert store.conn.execute(
            "SELECT count(*) FROM sentences WHERE split='gold' AND (current_label != original_label "
            "OR label_source != 'original')").fetchone()[0] == 0
        assert store.conn.execute("SELECT count(*) FROM label_history h JOIN sentences s USING (sid) "
                                  "WHERE s.split='gold'").fetchone()[0] == 0
        # every train row predicted in every iteration, by every member
        for it in (1, 2):
            assert store.conn.execute("SELECT count(*) FROM predictions WHERE iteration=?",
                                      (it,)).fetchone()[0] == 600
        # each change in history matches a prediction above that iteration's threshold
        bad = store.conn.execute(
            "SELECT count(*) FROM label_history h JOIN predictions p ON p.sid=h.sid AND p.iteration=h.iteration "
            "JOIN iterations i ON i.iteration=h.iteration "
            "WHERE p.confidence < i.threshold OR p.predicted != h.new_label"
        ).fetchone()[0]
        assert bad == 0
        metrics = its[-1]["metrics"]
        assert set(metrics["members"]) == {"lexicon", "lstm", "bilstm", "bert"}
        assert metrics["lexicon_change_rate"] is not None
        assert 0 <= metrics["label_change_rate"] <= 1
    for it in (0, 1, 2):
        for name in ("lexicon", "lstm", "bilstm", "bert"):
            assert (tmp_path / "ws" / "models" / f"iter-{it:03d}" / name / "model.json").is_file()
    status = cli("-c", str(tiny_config_file), "status")
    assert "600 train rows, 200 gold rows" in status.stdout
