"""Every bad input the reliability issue lists: a clear message, a non-zero exit, the data untouched.

Each case runs the real command line (in-process) against a copy of one small bootstrapped
workspace and asserts three things: the exit code of the error's class, a message naming the
file / line / field at fault, and a digest of the store's data (sentences, history,
predictions, review queue) equal to before. Related unit tests (test_ingest, test_store,
test_config, test_models) check the parsers themselves; this file checks what a user sees.
Disk full during a snapshot is in tests/faults/test_disk_full.py (it needs DVC).
"""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import subprocess
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
import yaml
from store_checks import store_digest
from typer.testing import CliRunner

from sentirefine.cli import app

runner = CliRunner()
HEADER = "id\tdocument\tlabel\n"
BASE_CONFIG = {
    "store": {"chunk_size": 50},
    "models": {"order": ["lexicon", "lstm"], "lexicon": {"min_count": 1, "tokenizer": "regex"},
               "lstm": {"embedding_dim": 8, "hidden_dim": 8, "epochs": 1, "max_len": 16, "vocab_size": 500}},
    "ensemble": {"workers": 0},
    "tracking": {"enabled": False},
    "versioning": {"enabled": False},
    "logging": {"format": "json"},
}
DATA_TABLES = ("sentences", "label_history", "predictions", "review_queue", "reference_labels")
BOOKKEEPING = ("iterations", "stages")  # the loop's own records: no bad input may start an iteration


def invoke(config: Path, workspace: Path, *args: str):
    return runner.invoke(app, ["-c", str(config), "--workspace", str(workspace), *args])


def digest(workspace: Path, tables: tuple[str, ...] = DATA_TABLES + BOOKKEEPING) -> str:
    """The store's content, independent of WAL/checkpoint state of the file."""
    return store_digest(workspace, tables)


@pytest.fixture(scope="module")
def base(tmp_path_factory, tiny_corpus) -> tuple[Path, Path]:
    """A config and a bootstrapped workspace: 60 train + 20 gold real reviews, two tiny members."""
    root = tmp_path_factory.mktemp("bad-inputs")
    train, gold = tiny_corpus
    small_train, small_gold = root / "train.tsv", root / "gold.tsv"
    small_train.write_text("".join(train.read_text(encoding="utf-8").splitlines(True)[:61]), encoding="utf-8")
    small_gold.write_text("".join(gold.read_text(encoding="utf-8").splitlines(True)[:21]), encoding="utf-8")
    config = root / "config.yaml"
    config.write_text(yaml.safe_dump(BASE_CONFIG))
    workspace = root / "ws"
    for args in (("import", str(small_train), "--gold", str(small_gold)), ("bootstrap",)):
        result = invoke(config, workspace, *args)
        assert result.exit_code == 0, result.output
    return config, workspace


@pytest.fixture
def ws(base, tmp_path) -> tuple[Path, Path]:
    config, workspace = base
    shutil.copytree(workspace, tmp_path / "ws")
    return config, tmp_path / "ws"


def _write(path: Path, content: str | bytes) -> Path:
    path.write_bytes(content if isinstance(content, bytes) else content.encode("utf-8"))
    return path


# -- cases: (setup(config, workspace, tmp) -> (args, expected substrings), exit code) ------------


def bad_config(section: str, values: dict, field: str) -> Callable:
    def setup(config, workspace, tmp):
        settings = {**BASE_CONFIG, section: {**BASE_CONFIG.get(section, {}), **values}}
        bad = _write(tmp / "bad.yaml", yaml.safe_dump(settings))
        return ["-c", str(bad), "refine"], [str(bad), field]
    return setup


def bad_rows(row: bytes, reason: str) -> Callable:
    def setup(config, workspace, tmp):
        path = _write(tmp / "new.tsv", HEADER.encode() + b"n1\tfine\t1\n" + row)
        return ["import", "--strict", str(path)], [f"{path}:3", reason]
    return setup


def damage_checkpoint(member: str, file: str, content: bytes | None) -> Callable:
    def setup(config, workspace, tmp):
        path = workspace / "models" / "iter-000" / member / file
        if content is None:
            path.unlink()
        elif file == "vocab.json":
            vocab = json.loads(path.read_text(encoding="utf-8"))
            path.write_text(json.dumps([*vocab, "extra-token"]), encoding="utf-8")
        else:
            path.write_bytes(content)
        return ["refine", "--max-iterations", "1"], [str(path.parent)]
    return setup


def not_a_database(config, workspace, tmp):
    _write(workspace / "sentences.db", b"this is a text file, not SQLite" * 100)
    for extra in ("sentences.db-wal", "sentences.db-shm"):
        (workspace / extra).unlink(missing_ok=True)
    return ["status"], [str(workspace / "sentences.db"), "not a sentirefine SQLite database"]


def other_schema(config, workspace, tmp):
    with sqlite3.connect(workspace / "sentences.db") as conn:
        conn.execute("UPDATE meta SET value='99' WHERE key='schema_version'")
    return ["refine"], [str(workspace / "sentences.db"), "schema version 99"]


def empty_table(config, workspace, tmp):
    empty = tmp / "empty-ws"
    assert invoke(config, empty, "init").exit_code == 0
    return ["--workspace", str(empty), "bootstrap"], ["train split is empty"]


def single_class(config, workspace, tmp):
    path = _write(tmp / "one.tsv", HEADER + "".join(f"s{i}\tgood {i}\t1\n" for i in range(20)))
    other = tmp / "single-ws"
    assert invoke(config, other, "import", str(path)).exit_code == 0
    return ["--workspace", str(other), "bootstrap"], ["single class (1)"]


def all_gold(config, workspace, tmp):
    path = _write(tmp / "gold.tsv", HEADER + "".join(f"g{i}\ttext {i}\t{i % 2}\n" for i in range(20)))
    other = tmp / "gold-ws"
    assert invoke(config, other, "import", str(path)).exit_code == 0
    with sqlite3.connect(other / "sentences.db") as conn:  # as if imported with --gold only
        conn.execute("UPDATE sentences SET split='gold'")
    return ["--workspace", str(other), "bootstrap"], ["train split is empty", "20 gold rows"]


def missing_input(config, workspace, tmp):
    return ["import", str(tmp / "nope.tsv")], [str(tmp / "nope.tsv"), "not found"]


CASES = {
    "config-negative-chunk-size": (bad_config("store", {"chunk_size": -5}, "store.chunk_size"), 2),
    "config-threshold-above-1": (bad_config("refine", {"threshold": {"start": 1.5}}, "refine.threshold.start"), 2),
    "config-schedule-not-monotonic": (
        bad_config("refine", {"threshold": {"start": 0.9, "step": 0.1, "max": 0.8}}, "not monotonic"), 2),
    "config-unknown-key": (bad_config("refine", {"max_iteratons": 3}, "max_iteratons"), 2),
    "not-a-database": (not_a_database, 4),
    "other-schema-version": (other_schema, 4),
    "input-file-missing": (missing_input, 3),
    "input-invalid-utf8": (bad_rows(b"n2\tbad \xff\xfe utf8\t1\n", "invalid UTF-8"), 3),
    "input-nul-byte": (bad_rows(b"n2\tnul\x00byte\t1\n", "NUL byte"), 3),
    "input-text-too-long": (bad_rows(b"n2\t" + b"x" * 6000 + b"\t1\n", "store.max_text_chars"), 3),
    "input-bad-label": (bad_rows(b"n2\ttext\t7\n", "label"), 3),
    "empty-train-table": (empty_table, 6),
    "single-class": (single_class, 6),
    "all-rows-gold": (all_gold, 6),
    "checkpoint-missing-weights": (damage_checkpoint("lstm", "weights.pt", None), 5),
    "checkpoint-corrupt-weights": (damage_checkpoint("lstm", "weights.pt", b"not a torch file"), 5),
    "checkpoint-corrupt-lexicon": (damage_checkpoint("lexicon", "lexicon.json", b"{truncated"), 5),
    "checkpoint-vocabulary-mismatch": (damage_checkpoint("lstm", "vocab.json", b""), 5),
}


@pytest.mark.parametrize("case", list(CASES))
def test_bad_input_is_a_clear_error_and_leaves_the_data_alone(ws, tmp_path, case):
    config, workspace = ws
    setup, exit_code = CASES[case]
    args, expected = setup(config, workspace, tmp_path)
    before = digest(workspace) if case != "not-a-database" else None
    raw = (workspace / "sentences.db").read_bytes() if case == "not-a-database" else None
    result = invoke(config, workspace, *args)
    assert result.exit_code == exit_code, result.output
    assert "Traceback" not in result.output
    for text in expected:
        assert text in result.output, f"{text!r} not in:\n{result.output}"
    assert "hint:" in result.output or exit_code == 3
    if raw is not None:
        assert (workspace / "sentences.db").read_bytes() == raw
    else:
        assert digest(workspace) == before


def test_long_texts_are_truncated_consistently(ws):
    """A text far longer than the models' max_len (but under store.max_text_chars) imports and
    predicts; every member sees only its first max_len tokens, so what follows cannot matter."""
    from sentirefine.config import load_config
    from sentirefine.models import load_model

    config, workspace = ws
    members = workspace / "models" / "iter-000"
    head = " ".join(["정말", "재미있는", "영화", "최고"] * 10)
    for name in ("lexicon", "lstm"):
        model = load_model(members / name)
        long_a, long_b = head + " 최악 " * 900, head + " 지루한 " * 900
        probs = np.asarray(model.predict_proba([long_a, long_b, head]))
        assert probs.shape[0] == 3 and ((probs >= 0) & (probs <= 1)).all()
        if name == "lstm":  # truncation is a property of the sequence models (max_len tokens)
            assert np.allclose(probs[0], probs[1]) and np.allclose(probs[0], probs[2])
    cfg = load_config(config, {"workspace": str(workspace)})
    assert len(long_a) < cfg.store.max_text_chars


@contextmanager
def read_only(directory: Path) -> Iterator[None]:
    """Make ``directory`` read-only: chmod for a normal user; a read-only tmpfs for root (which
    ignores permission bits); skip where neither is possible."""
    if os.geteuid() != 0:
        modes = {p: p.stat().st_mode for p in [directory, *directory.iterdir()]}
        for p in modes:
            p.chmod(0o555 if p.is_dir() else 0o444)
        try:
            yield
        finally:
            for p, mode in modes.items():
                p.chmod(mode)
        return
    copy = directory.with_name(directory.name + ".orig")
    shutil.copytree(directory, copy)
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=16m", "tmpfs", str(directory)],
                      capture_output=True).returncode != 0:
        pytest.skip("running as root without permission to mount a read-only tmpfs")
    try:
        shutil.copytree(copy, directory, dirs_exist_ok=True)
        subprocess.run(["mount", "-o", "remount,ro", str(directory)], check=True)
        yield
    finally:
        subprocess.run(["umount", str(directory)], check=True)


def test_read_only_workspace_is_a_clear_error(ws, tmp_path):
    config, workspace = ws
    before = digest(workspace)
    data = _write(tmp_path / "one.tsv", HEADER + "ro1\tgood\t1\n")
    with read_only(workspace):
        for args in (("import", str(data)), ("refine",), ("rollback", "--to-iteration", "0")):
            result = invoke(config, workspace, *args)
            assert result.exit_code == 4, result.output
            assert "read-only" in result.output.lower(), result.output
            assert str(workspace) in result.output and "Traceback" not in result.output
        assert invoke(config, workspace, "status").exit_code == 0  # reading still works
    assert digest(workspace) == before


def test_locked_database_is_retried_with_backoff_then_a_clear_error(ws, tmp_path):
    config, workspace = ws
    before = digest(workspace)
    holder = subprocess.Popen(
        [sys.executable, "-c",
         "import sqlite3, sys, time\n"
         f"c = sqlite3.connect({str(workspace / 'sentences.db')!r}, isolation_level=None)\n"
         "c.execute('BEGIN IMMEDIATE'); c.execute('UPDATE sentences SET confidence=0.5')\n"
         "print('held', flush=True); time.sleep(60)"],
        stdout=subprocess.PIPE, text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "held"
        quick = _write(tmp_path / "quick.yaml", yaml.safe_dump({**BASE_CONFIG, "store": {"busy_timeout_s": 1.5}}))
        data = _write(tmp_path / "one.tsv", HEADER + "lk1\tgood\t1\n")
        result = runner.invoke(app, ["-c", str(quick), "--workspace", str(workspace), "import", str(data)])
        assert result.exit_code == 4, result.output
        assert f"database {workspace / 'sentences.db'} is locked" in result.output
        assert "store.busy_timeout_s" in result.output
        assert result.output.count('"event": "db_busy_retry"') >= 2, result.output
    finally:
        holder.kill()
        holder.wait()
    assert digest(workspace) == before  # the holder's uncommitted write died with it
    assert runner.invoke(app, ["--workspace", str(workspace), "-c", str(config), "import",
                               str(data)]).exit_code == 0  # and the next writer proceeds
