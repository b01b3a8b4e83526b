"""Checks shared by the fault and hostile-input tests: a store's content digest, a clear CLI error.

A module of its own (not conftest), like ``tiny_config``: tests/faults has a conftest too.
"""

from __future__ import annotations

import hashlib
import sqlite3
from pathlib import Path

# One cheap member, in-process, nothing tracked or versioned: the loop's bookkeeping at its fastest.
LEXICON_ONLY_CONFIG = {
    "store": {"chunk_size": 100},
    "models": {"order": ["lexicon"], "lexicon": {"min_count": 1, "tokenizer": "regex"}},
    "ensemble": {"workers": 0},
    "refine": {"max_iterations": 2, "threshold": {"start": 0.6, "step": 0.05, "max": 0.9}},
    "tracking": {"enabled": False},
    "versioning": {"enabled": False},
    "llm": {"enabled": False},
    "logging": {"format": "json"},
}


def store_digest(workspace: Path, tables: tuple[str, ...]) -> str:
    """The content of ``tables`` in the workspace's store, independent of its WAL/checkpoint state."""
    conn = sqlite3.connect(f"file:{workspace / 'sentences.db'}?mode=ro", uri=True)
    try:
        h = hashlib.sha256()
        for table in tables:
            for row in conn.execute(f"SELECT * FROM {table} ORDER BY 1, 2"):
                h.update(repr(row).encode())
        return h.hexdigest()
    finally:
        conn.close()


def assert_clear_error(result, exit_code: int, *expected: str) -> None:
    """A CliRunner result that is a user-facing error: the exit code, a hint, no traceback, the texts."""
    assert result.exit_code == exit_code, result.output
    assert "Traceback" not in result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    assert "hint:" in result.output, result.output
    for text in expected:
        assert text in result.output, f"{text!r} not in:\n{result.output}"
