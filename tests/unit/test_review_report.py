"""Human review import/export validation, the human-label guard, and the report's sections."""

from __future__ import annotations

import csv
import json

import pytest

from sentirefine.config import Config
from sentirefine.data.store import LabelChange, Store
from sentirefine.errors import InputDataError
from sentirefine.integrations.review import export_csv, export_label_studio, import_labels
from sentirefine.reporting.report import render_report


@pytest.fixture
def store(tmp_path):
    s = Store(tmp_path / "s.db", create=True)
    with s.transaction() as conn:
        conn.executemany(
            "INSERT INTO sentences (id, text, original_label, current_label, split) VALUES (?, ?, ?, ?, ?)",
            [(f"t{i}", f"text {i}", i % 2, i % 2, "train") for i in range(6)] + [("g0", "gold 0", 1, 1, "gold")],
        )
        conn.execute("UPDATE sentences SET frozen=1 WHERE id='t0'")
        conn.executemany("INSERT INTO review_queue (sid, iteration, reason, confidence) VALUES (?, 1, ?, ?)",
                         [(1, "oscillation", 0.9), (2, "low_confidence", 0.55)])
        conn.executemany("INSERT INTO predictions VALUES (1, ?, ?, ?, ?, 1.0, '{}')",
                         [(sid, 0.2, 0, 0.8) for sid in range(1, 7)])
    yield s
    s.close()


def _write_csv(path, rows):
    with open(path, "w", encoding="utf-8", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=["id", "human_label"])
        writer.writeheader()
        writer.writerows({"id": i, "human_label": label} for i, label in rows)
    return path


def test_export_lists_frozen_and_queued_rows_with_predictions(store, tmp_path):
    assert export_csv(store, tmp_path / "r.csv") == 2
    rows = list(csv.DictReader((tmp_path / "r.csv").read_text(encoding="utf-8").splitlines()))
    assert [(r["id"], r["reason"], r["p_positive"]) for r in rows] == [("t0", "frozen", "0.2"),
                                                                      ("t1", "low_confidence", "0.2")]
    assert export_label_studio(store, tmp_path / "r.json") == 2
    task = json.loads((tmp_path / "r.json").read_text(encoding="utf-8"))[0]
    assert task["data"]["sentirefine_id"] == "t0"
    assert task["predictions"][0]["result"][0]["value"]["choices"] == ["negative"]


def test_strict_import_names_every_bad_row_and_writes_nothing(store, tmp_path):
    path = _write_csv(tmp_path / "f.csv", [("t0", "1"), ("g0", "0"), ("nope", "1"), ("t2", "7"), ("t3", "1"),
                                           ("t3", "0"), ("t4", "")])
    with pytest.raises(InputDataError) as err:
        import_labels(store, path, strict=True)
    for expected in ("f.csv:3: id 'g0' is a gold row", "f.csv:4: unknown id 'nope'", "f.csv:5: label '7'",
                     "f.csv:7: id 't3' labelled 0 here but 1 at f.csv:6"):
        assert expected in err.value.message
    assert store.conn.execute("SELECT count(*) FROM sentences WHERE label_source='human'").fetchone()[0] == 0
    report = import_labels(store, path)  # lenient: the valid row is written, the conflicting pair is not
    assert (report.written, report.unlabelled, len(report.errors)) == (1, 1, 4)
    row = store.conn.execute("SELECT current_label, label_source, frozen FROM sentences WHERE id='t0'").fetchone()
    assert row == (1, "human", 0)  # relabelled, marked human, unfrozen
    assert store.conn.execute("SELECT status FROM review_queue WHERE sid=1").fetchone()[0] == "done"
    assert store.history_is_consistent()


def test_label_studio_export_json_is_imported(store, tmp_path):
    tasks = [
        {"id": 1, "data": {"text": "text 1", "sentirefine_id": "t1"},
         "annotations": [{"was_cancelled": False, "result": [{"value": {"choices": ["negative"]}}]}]},
        {"id": 2, "data": {"sentirefine_id": "t2"},
         "annotations": [{"was_cancelled": True, "result": [{"value": {"choices": ["positive"]}}]}]},
        {"id": 3, "sentirefine_id": "t3", "sentiment": "negative"},  # JSON-MIN export
    ]
    path = tmp_path / "ls.json"
    path.write_text(json.dumps(tasks), encoding="utf-8")
    report = import_labels(store, path)
    assert (report.read, report.written, report.unlabelled, report.changed) == (3, 2, 1, 2)
    labels = dict(store.conn.execute("SELECT id, current_label FROM sentences WHERE label_source='human'"))
    assert labels == {"t1": 0, "t3": 0}


def test_automatic_sources_never_override_a_human_label(store):
    store.apply_human_labels([(2, 0)], iteration=1)  # t1: 1 -> 0 by a person
    assert store.apply_labels([LabelChange(2, 0, 1, 0.99)], iteration=2, source="ensemble") == 0
    assert store.apply_labels([LabelChange(2, 0, 1, 0.99)], iteration=2, source="llm") == 0
    locks = {sid: lock for sid, *_, lock in next(store.iter_predictions(1, 100))}
    assert locks[2] == "human" and locks[3] is None  # the policy sees the human row as locked, and why
    assert store.conn.execute("SELECT current_label FROM sentences WHERE sid=2").fetchone()[0] == 0


def _finish(store, iteration, metrics):
    store.begin_iteration(iteration, metrics.get("threshold", 0.7))
    store.finish_iteration(iteration, {"iteration": iteration, **metrics})


def test_report_sections_escape_text_and_say_what_is_missing(store, tmp_path):
    cfg = Config(workspace=tmp_path, models={"order": ["lexicon"]})
    with store.transaction() as conn:
        conn.execute("UPDATE sentences SET text='<script>alert(1)</script>' WHERE sid=3")
    store.apply_labels([LabelChange(3, 0, 1, 0.97)], iteration=1, source="ensemble")
    gold = {"members": {"lexicon": {"accuracy": 0.8, "confusion": [[3, 1], [1, 3]]}},
            "ensemble": {"accuracy": 0.8, "confusion": [[3, 1], [1, 3]]}}
    _finish(store, 0, gold)
    _finish(store, 1, {**gold, "label_change_rate": 0.1, "lexicon_change_rate": 0.2, "corrected_to_1": 1})
    page = render_report(cfg, store)
    assert "<script>" not in page and "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert page.count("data:image/png;base64,") == 6  # 4 plots + 2 confusion matrices
    assert "no LLM usage recorded" in page and "no bias audit" in page
    _finish(store, 2, {**gold, "llm": {"requests": 3, "tokens_in": 900, "accepted": 2},
                       "audit": {"flags": [{"group": "movie 7", "rows": 40, "correction_rate": 0.5,
                                            "overall_rate": 0.1, "ratio": 5.0}], "path": "audit.md"}})
    page = render_report(cfg, store)
    assert '<table id="llm">' in page and "<td>900</td>" in page
    assert "1 group(s) flagged in iteration 2" in page and "movie 7" in page
