"""A real SIGKILL anywhere in `import` leaves the old state, or one that the same command completes.

Each file is one transaction (``--strict``: all files one), so a kill inside a file commits
nothing of it; a kill after a file's commit leaves that file imported and the rerun finds its
rows already present. Checked against an uninterrupted import of the same files.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

pytestmark = [pytest.mark.faults, pytest.mark.integration]

ROWS = 5000  # > 2 batches of 2,000 per file


def _corpus(root: Path) -> tuple[Path, Path]:
    train, gold = root / "train.tsv", root / "gold.tsv"
    header = "id\tdocument\tlabel\n"
    train.write_text(header + "".join(f"t{i}\t리뷰 {i}\t{i % 2}\n" for i in range(ROWS)) + "bad\t\t1\n",
                     encoding="utf-8")
    gold.write_text(header + "".join(f"g{i}\t평가 {i}\t{i % 2}\n" for i in range(ROWS)), encoding="utf-8")
    return train, gold


def _state(ws: Path) -> dict[str, list[tuple]]:
    conn = sqlite3.connect(ws / "sentences.db")
    try:
        assert conn.execute("PRAGMA integrity_check").fetchone() == ("ok",)
        return {split: conn.execute("SELECT id, text, original_label, current_label FROM sentences WHERE split=? "
                                    "ORDER BY id", (split,)).fetchall() for split in ("train", "gold")}
    finally:
        conn.close()


@pytest.mark.parametrize(("point", "strict", "committed"), [
    ("import_batch:2", False, set()),           # inside train's transaction
    ("import_after_commit:1", False, {"train"}),  # train committed, gold not started
    ("import_batch:5", False, {"train"}),        # inside gold's transaction
    ("import_strict_file_done:1", True, set()),  # strict: train parsed, one transaction for both
])
def test_kill_during_import_then_rerun_completes(tmp_path, cli, point, strict, committed):
    train, gold = _corpus(tmp_path)
    flags = ("--strict",) if strict else ()
    if strict:  # a strict import of a file with a bad row would fail: drop it
        train.write_text(train.read_text(encoding="utf-8").replace("bad\t\t1\n", ""), encoding="utf-8")
    args = ("--workspace", str(tmp_path / "ref"), "import", *flags, str(train), "--gold", str(gold))
    reference = cli(*args, check=False)
    assert reference.returncode in (0, 3), reference.stderr
    expected = _state(tmp_path / "ref")
    ws_args = ("--workspace", str(tmp_path / "ws"), *args[2:])
    killed = cli(*ws_args, check=False, env={"SENTIREFINE_KILL_AT": point})
    assert killed.returncode == -9, (killed.stdout, killed.stderr)
    after_kill = _state(tmp_path / "ws")
    for split in ("train", "gold"):
        assert after_kill[split] == (expected[split] if split in committed else []), split
    rerun = cli(*ws_args, check=False)
    assert rerun.returncode == reference.returncode, rerun.stderr
    assert _state(tmp_path / "ws") == expected
