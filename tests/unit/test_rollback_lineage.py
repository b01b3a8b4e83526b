"""Rollback, live lineage, iteration limits, the balance guard and stale review entries, through the real CLI.

Every case runs the command line (in-process) on a copy of one tiny workspace: 600 train rows with
20% injected noise + 200 gold rows, the lexicon alone (regex tokens), no MLflow/DVC/LLM, so a
refinement iteration takes a few seconds. What a user sees (exit code, message) and what the
store holds afterwards are both checked.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from store_checks import LEXICON_ONLY_CONFIG, store_digest
from typer.testing import CliRunner

from sentirefine.cli import app
from sentirefine.config import load_config
from sentirefine.data.store import _SCHEMA, SCHEMA_VERSION, LabelChange, Store, _split_sql
from sentirefine.pipeline.policy import balance_shift

runner = CliRunner()
CONFIG = LEXICON_ONLY_CONFIG
DATA_TABLES = ("sentences", "label_history", "review_queue", "iterations", "stages", "predictions")


def invoke(config: Path, workspace: Path, *args: str):
    return runner.invoke(app, ["-c", str(config), "--workspace", str(workspace), *args])


def _config(tmp: Path, name: str = "config.yaml", **refine) -> Path:
    path = tmp / name
    path.write_text(yaml.safe_dump({**CONFIG, "refine": {**CONFIG["refine"], **refine}}))
    return path


def digest(workspace: Path, tables: tuple[str, ...] = DATA_TABLES) -> str:
    return store_digest(workspace, tables)


def labels(workspace: Path, column: str = "current_label") -> dict[str, int]:
    with Store(workspace / "sentences.db") as store:
        return dict(store.conn.execute(f"SELECT id, {column} FROM sentences WHERE split='train'"))


def metrics(workspace: Path, iteration: int) -> dict:
    with Store(workspace / "sentences.db") as store:
        return next(it["metrics"] for it in store.iterations() if it["iteration"] == iteration)


@pytest.fixture(scope="module")
def base(tmp_path_factory, tiny_corpus) -> dict[str, Path]:
    """Workspaces at three points: imported, bootstrapped, after iteration 1 (copied per test)."""
    root = tmp_path_factory.mktemp("lineage")
    config = _config(root)
    train, gold = tiny_corpus
    steps = {"imported": ("import", str(train), "--gold", str(gold), "--inject-noise", "0.2", "--noise-seed", "1"),
             "bootstrapped": ("bootstrap",), "refined": ("refine", "--max-iterations", "1")}
    workspace, out = root / "ws", {"config": config}
    for name, args in steps.items():
        result = invoke(config, workspace, *args)
        assert result.exit_code == 0, result.output
        shutil.copytree(workspace, root / name)
        out[name] = root / name
    return out


@pytest.fixture
def ws(base, tmp_path):
    """``ws("refined")``: a private copy of one of the base workspaces."""
    def copy(name: str) -> Path:
        shutil.copytree(base[name], tmp_path / name)
        return tmp_path / name
    return copy


# -- item 6: refine after rollback counts the live lineage only -----------------------------------------------


def test_rerun_after_rollback_repeats_the_iteration_instead_of_freezing_its_rows(base, ws):
    config, workspace = base["config"], ws("refined")
    first, after_first = metrics(workspace, 1), labels(workspace)
    assert first["corrected_to_0"] + first["corrected_to_1"] > 20 and first["frozen"] == 0
    result = invoke(config, workspace, "rollback", "--to-iteration", "0")
    assert result.exit_code == 0, result.output
    assert labels(workspace) == labels(workspace, "original_label")
    result = invoke(config, workspace, "refine", "--max-iterations", "1")
    assert result.exit_code == 0, result.output
    again = metrics(workspace, 1)
    for key in ("corrected_to_0", "corrected_to_1", "label_change_rate", "frozen", "label_accuracy"):
        assert again[key] == first[key], key  # before: corrected counted the undone rows, and all were frozen
    assert labels(workspace) == after_first
    with Store(workspace / "sentences.db") as store:
        assert store.history_is_consistent() and store.history_is_consistent(live=True)
        undone = store.conn.execute("SELECT count(*) FROM label_history WHERE undone_by IS NOT NULL").fetchone()[0]
        assert undone == first["corrected_to_0"] + first["corrected_to_1"]  # kept for audit, not counted
        sids = [s for (s,) in store.conn.execute("SELECT sid FROM label_history WHERE source='ensemble'")]
        assert set(store.flip_counts(sids).values()) == {1}


def test_restore_marks_what_it_reverses_undone(tmp_path):
    """Store level: a restore undoes, per row, the live changes since the row last held the restored label."""
    store = Store(tmp_path / "restore.db", create=True)
    try:
        with store.transaction() as conn:
            conn.executemany("INSERT INTO sentences (id, text, original_label, current_label, split) "
                             "VALUES (?, ?, 0, 0, 'train')", [(f"r{i}", f"t{i}") for i in range(3)])
        store.apply_labels([LabelChange(1, 0, 1, 0.9), LabelChange(2, 0, 1, 0.9)], iteration=1, source="ensemble")
        store.apply_labels([LabelChange(1, 1, 0, 0.9)], iteration=2, source="ensemble")
        store.apply_labels([LabelChange(1, 0, 1, 0.9)], iteration=3, source="ensemble")
        # snapshot of iteration 2: r0 0, r1 1; r2 untouched
        assert store.restore_labels({"r0": 0, "r1": 1, "r2": 0}, iteration=3, rev="data-iter-002", chunk_size=2) == 1
        live = store.conn.execute("SELECT sid, iteration, source FROM label_history WHERE undone_by IS NULL "
                                  "ORDER BY hid").fetchall()
        assert live == [(1, 1, "ensemble"), (2, 1, "ensemble"), (1, 2, "ensemble"), (1, 3, "restore")]
        assert store.flip_counts([1, 2]) == {1: 2, 2: 1}  # iteration 3's change to r0 no longer counts
        assert store.history_is_consistent() and store.history_is_consistent(live=True)
        assert store.last_operation()["command"] == "restore"
    finally:
        store.close()


# -- item 7: --max-iterations 0 / negative ---------------------------------------------------------------------


def test_max_iterations_zero_bootstraps_only(base, ws):
    workspace = ws("imported")
    result = invoke(base["config"], workspace, "refine", "--max-iterations", "0")
    assert result.exit_code == 0, result.output
    assert "max_iterations=0 reached" in result.output
    with Store(workspace / "sentences.db") as store:
        assert [(it["iteration"], bool(it["finished_at"])) for it in store.iterations()] == [(0, True)]


def test_negative_max_iterations_is_exit_2_and_writes_nothing(base, ws):
    workspace = ws("imported")
    before = digest(workspace)
    result = invoke(base["config"], workspace, "refine", "--max-iterations", "-1")
    assert result.exit_code == 2, result.output
    assert "--max-iterations -1 is out of range" in result.output and "Traceback" not in result.output
    assert digest(workspace) == before


# -- item 8: rollback arguments and human labels ---------------------------------------------------------------


@pytest.mark.parametrize("target", ["99", "-1", "2"])
def test_rollback_out_of_range_is_exit_2_naming_the_range(base, ws, target):
    workspace = ws("refined")
    before = digest(workspace)
    result = invoke(base["config"], workspace, "rollback", "--to-iteration", target)
    assert result.exit_code == 2, result.output
    assert f"--to-iteration {target} is out of range" in result.output and "0 to 1" in result.output
    assert "Traceback" not in result.output
    assert digest(workspace) == before


def test_rollback_to_0_keeps_human_labels_by_default_and_says_how_to_undo_them(base, ws, tmp_path):
    config, workspace = base["config"], ws("refined")
    original = labels(workspace, "original_label")
    reviewed = sorted(original)[:3]
    review = tmp_path / "review.csv"
    review.write_text("id,human_label\n" + "".join(f"{i},{1 - original[i]}\n" for i in reviewed), encoding="utf-8")
    assert invoke(config, workspace, "review", "import", str(review)).exit_code == 0
    result = invoke(config, workspace, "rollback", "--to-iteration", "0")
    assert result.exit_code == 0, result.output
    assert "kept 3 human label(s)" in result.output and "--undo-human-labels" in result.output
    now = labels(workspace)
    assert {i: now[i] for i in reviewed} == {i: 1 - original[i] for i in reviewed}
    assert {i: v for i, v in now.items() if i not in reviewed} == {i: v for i, v in original.items()
                                                                   if i not in reviewed}
    result = invoke(config, workspace, "rollback", "--to-iteration", "0", "--undo-human-labels")
    assert result.exit_code == 0, result.output
    assert "3 labels restored" in result.output and "kept" not in result.output
    assert labels(workspace) == original  # labels as imported, as the help says
    with Store(workspace / "sentences.db") as store:
        assert store.history_is_consistent() and store.history_is_consistent(live=True)


# -- item 11: the balance guard ---------------------------------------------------------------------------------


def test_balance_guard_stops_a_stage_that_collapses_onto_one_class(base, ws, tmp_path):
    workspace = ws("bootstrapped")
    low = _config(tmp_path, "low.yaml", threshold={"start": 0.51, "step": 0.05, "max": 0.9})
    before = digest(workspace, ("sentences", "label_history", "review_queue"))
    result = invoke(low, workspace, "refine", "--max-iterations", "1")
    assert result.exit_code == 2, result.output
    for part in ("refine.max_balance_shift=0.15", "further from gold", "nothing was written",
                 "refine.threshold.start", "set it to null"):
        assert part in result.output, part
    assert digest(workspace, ("sentences", "label_history", "review_queue")) == before
    with Store(workspace / "sentences.db") as store:
        assert not store.conn.execute("SELECT count(*) FROM stages WHERE stage='correct'").fetchone()[0]
    # the hint's way out: the guard disabled, the same stage resumes and writes
    off = _config(tmp_path, "off.yaml", threshold={"start": 0.51, "step": 0.05, "max": 0.9}, max_balance_shift=None)
    result = invoke(off, workspace, "refine", "--max-iterations", "1")
    assert result.exit_code == 0, result.output


def _fake_predictions(workspace: Path, flip: dict[int, int]) -> None:
    """Iteration 1's predict stage, recorded as done: every train row confidently predicted as its label,
    except ``flip`` rows of the given current label, predicted as the other class (correct resumes from here)."""
    with Store(workspace / "sentences.db") as store:
        rows = store.conn.execute("SELECT sid, current_label FROM sentences WHERE split='train' "
                                  "ORDER BY sid").fetchall()
        left, out = dict(flip), []
        for sid, label in rows:
            predicted = label
            if left.get(label, 0) > 0:
                left[label] -= 1
                predicted = 1 - label
            out.append((sid, float(predicted), predicted, 0.99, 1.0, json.dumps({"lexicon": float(predicted)})))
        store.begin_iteration(1, 0.6)
        store.start_stage(1, "predict")
        store.save_predictions(1, out)
        store.finish_stage(1, "predict", {"weights": {"lexicon": 1.0}, "chunk_size": 100, "class_offsets": {}})


@pytest.mark.parametrize(("flip", "trips"), [({0: 60}, False), ({1: 60}, True)])
def test_balance_guard_lets_corrections_towards_gold_through(base, ws, tmp_path, flip, trips):
    """Train 47.7% positive, gold 56%: 60 flips to 1 move towards gold (class-conditional noise being corrected)
    and pass a guard of 0.05; 60 flips to 0 move 10 points away and stop it."""
    workspace = ws("bootstrapped")
    _fake_predictions(workspace, flip)
    strict = _config(tmp_path, "strict.yaml", max_balance_shift=0.05)
    result = invoke(strict, workspace, "refine", "--max-iterations", "1")
    assert result.exit_code == (2 if trips else 0), result.output
    assert ("refine.max_balance_shift=0.05" in result.output) == trips


def test_balance_shift_is_signed_distance_change():
    moved_towards = balance_shift({0: 70, 1: 30}, {1: 20}, {0: 50, 1: 50})
    assert moved_towards.before == 0.3 and moved_towards.after == 0.5 and moved_towards.away == pytest.approx(-0.2)
    overshoot = balance_shift({0: 50, 1: 50}, {0: 45}, {0: 50, 1: 50})
    assert overshoot.after == pytest.approx(0.05) and overshoot.away == pytest.approx(0.45)


def test_config_warns_about_a_first_threshold_near_chance(tmp_path, caplog):
    with caplog.at_level(logging.WARNING, logger="sentirefine.config"):
        load_config(_config(tmp_path, "ok.yaml"))
        assert not [r for r in caplog.records if getattr(r, "event", "") == "config_warning"]
        cfg = load_config(_config(tmp_path, "low.yaml", threshold={"start": 0.55}))
    assert cfg.refine.threshold.start == 0.55  # valid: a warning, not an error
    warned = [r for r in caplog.records if getattr(r, "event", "") == "config_warning"]
    assert len(warned) == 1 and warned[0].key == "refine.threshold.start" and "max_balance_shift" in warned[0].detail


# -- item 18 (second half): stale low-confidence entries ---------------------------------------------------------


def test_confident_later_prediction_closes_stale_low_confidence_entries(base, ws, tmp_path):
    workspace = ws("refined")
    with Store(workspace / "sentences.db") as store:
        stale = store.open_review_count().get("low_confidence", 0)
    assert stale > 20
    # every row is confident at iteration 2 when nothing counts as low confidence under 0.5
    sure = _config(tmp_path, "sure.yaml", llm_queue_below=0.5)
    result = invoke(sure, workspace, "refine", "--max-iterations", "2", "--ignore-convergence")
    assert result.exit_code == 0, result.output
    with Store(workspace / "sentences.db") as store:
        assert store.open_review_count().get("low_confidence", 0) == 0
        closed = store.conn.execute("SELECT count(*) FROM review_queue WHERE status='done' AND "
                                    "closed_reason='confident' AND closed_iteration=2 AND iteration=1").fetchone()[0]
        assert closed == stale  # recorded, not deleted
    assert "0 row(s) to review" in invoke(sure, workspace, "review", "export", "-o", str(tmp_path / "r.csv")).output
    assert invoke(sure, workspace, "rollback", "--to-iteration", "1").exit_code == 0
    with Store(workspace / "sentences.db") as store:
        assert store.open_review_count().get("low_confidence", 0) == stale  # iteration 2 undone: open again


# -- schema migration (version 1 -> 2) ----------------------------------------------------------------------------


def _v1_store(path: Path) -> None:
    """A schema-version-1 store as the previous release wrote it, with history and a queue entry."""
    conn = sqlite3.connect(path, isolation_level=None)
    for statement in _split_sql(_SCHEMA):
        conn.execute(statement)
    conn.execute("INSERT INTO meta VALUES ('schema_version', '1')")
    conn.executemany("INSERT INTO sentences (id, text, original_label, current_label, split) VALUES (?, ?, ?, ?, ?)",
                     [("a", "좋다", 0, 1, "train"), ("b", "별로", 1, 1, "train"), ("g", "최고", 1, 1, "gold")])
    conn.execute("INSERT INTO label_history (sid, iteration, old_label, new_label, source, created_at) "
                 "VALUES (1, 1, 0, 1, 'ensemble', 'then')")
    conn.execute("INSERT INTO review_queue (sid, iteration, reason, confidence) VALUES (2, 1, 'low_confidence', 0.5)")
    conn.close()


def test_schema_1_workspace_is_migrated_in_place_and_atomically(tmp_path):
    workspace = tmp_path / "ws"
    workspace.mkdir()
    db = workspace / "sentences.db"
    _v1_store(db)
    killed = subprocess.run([sys.executable, "-m", "sentirefine", "--workspace", str(workspace), "status"],
                            env={**os.environ, "SENTIREFINE_KILL_AT": "migrate_before_commit"}, capture_output=True)
    assert killed.returncode == -9
    conn = sqlite3.connect(db)
    assert conn.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone() == ("1",)
    assert "undone_by" not in [c[1] for c in conn.execute("PRAGMA table_info(label_history)")]
    conn.close()
    result = runner.invoke(app, ["--workspace", str(workspace), "status"])
    assert result.exit_code == 0, result.output
    with Store(db) as store:
        assert store.conn.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()[0] == \
            str(SCHEMA_VERSION)
        assert store.flip_counts([1]) == {1: 1} and store.history_is_consistent(live=True)  # old history is live
        assert store.open_review_count() == {"low_confidence": 1}
        store.apply_decision([], iteration=2, source="ensemble", confident=[2])
        assert store.open_review_count() == {}
        assert store.rollback(0).changed == 1
        assert store.flip_counts([1]) == {} and store.history_is_consistent(live=True)
