"""Where log records go: the console a person reads, and the workspace's JSON log file."""

from __future__ import annotations

import json
import logging
import warnings

import pytest

from sentirefine.config import load_config
from sentirefine.logs import configure_logging, log_event, log_setup


@pytest.fixture(autouse=True)
def _restore_logging():
    root = logging.getLogger()
    saved = root.handlers[:], root.level
    yield
    for handler in root.handlers:
        handler.close()
    root.handlers[:], root.level = saved[0], saved[1]


def _records(path):
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def test_library_warnings_go_to_the_file_not_the_console(tmp_path, capsys):
    log_file = tmp_path / "logs" / "sentirefine.jsonl"
    # As MLflow does when it is imported first (a test, a notebook): its own stderr handler, not propagating.
    mlflow_log = logging.getLogger("mlflow")
    mlflow_log.addHandler(logging.StreamHandler())
    mlflow_log.propagate = False
    configure_logging("text", "INFO", log_file)
    log_event(logging.getLogger("sentirefine.test"), "our_event", rows=3)
    logging.getLogger("mlflow.models").warning("Failed to infer model signature")
    with warnings.catch_warnings():
        warnings.simplefilter("always")
        warnings.warn("a library's deprecation", DeprecationWarning, stacklevel=1)
    logging.getLogger("dvc").error("a library's error")
    console = capsys.readouterr().err
    assert "our_event rows=3" in console and "a library's error" in console
    assert "Failed to infer" not in console and "deprecation" not in console
    events = [r["event"] for r in _records(log_file)]
    assert events[0] == "our_event" and "Failed to infer model signature" in events
    assert any("a library's deprecation" in e for e in events) and "a library's error" in events


def test_console_level_quiets_the_console_only(tmp_path, capsys):
    log_file = tmp_path / "run.jsonl"
    configure_logging("json", "INFO", log_file, console_level="WARNING")
    log = logging.getLogger("sentirefine.test")
    log_event(log, "progress_note")
    log_event(log, "something_wrong", level=logging.WARNING)
    console = [json.loads(line)["event"] for line in capsys.readouterr().err.splitlines()]
    assert console == ["something_wrong"]
    assert [r["event"] for r in _records(log_file)] == ["progress_note", "something_wrong"]


def test_an_unwritable_log_file_does_not_fail_the_command(tmp_path, capsys):
    blocked = tmp_path / "file-not-dir"
    blocked.write_text("x")
    configure_logging("text", "INFO", blocked / "logs" / "sentirefine.jsonl")  # its directory cannot exist
    logging.getLogger("mlflow").warning("still shown")
    assert "still shown" in capsys.readouterr().err


def test_without_a_file_the_console_keeps_every_warning(capsys):
    configure_logging("text", "INFO", None)
    logging.getLogger("mlflow").warning("nowhere else to go")
    assert "nowhere else to go" in capsys.readouterr().err


def test_the_log_file_is_opened_only_once_the_workspace_exists(tmp_path):
    cfg = load_config(overrides={"workspace": str(tmp_path / "ws")})
    assert cfg.log_file is None and log_setup(cfg)[2] is None  # `config show` creates nothing
    (tmp_path / "ws").mkdir()
    assert cfg.log_file == tmp_path / "ws" / "logs" / "sentirefine.jsonl"
    assert load_config(overrides={"workspace": str(tmp_path / "ws"), "logging": {"file": None}}).log_file is None


def test_a_library_handler_left_on_a_closed_stream_is_replaced_by_ours(tmp_path, capsys):
    """DVC keeps the stream its handler found; a second command in one process (a test run, a
    notebook) must not die logging to the first one's closed stderr."""
    import io

    closed = io.StringIO()
    stale = logging.StreamHandler(closed)
    logging.getLogger("dvc").addHandler(stale)
    closed.close()
    configure_logging("text", "INFO", tmp_path / "run.jsonl")
    logging.getLogger("dvc").error("a library's error after the first command")
    assert "a library's error after the first command" in capsys.readouterr().err
    assert stale not in logging.getLogger("dvc").handlers
