"""Secrets never leave the environment; logs are one JSON object per line with the issue's fields.

The secrets test reads a run whose LLM stage sent requests, with a sentinel key in
GEMINI_API_KEY and GOOGLE_API_KEY, to the loopback Gemini stub; the log test reads the shared
reference run (tests/faults/faults_setup.py).
"""

from __future__ import annotations

import json
import subprocess

import pytest
from faults_setup import SENTINEL

pytestmark = [pytest.mark.faults, pytest.mark.integration]


def test_api_key_appears_in_no_output_of_a_run(secrets_run):
    reference, requests = secrets_run
    assert requests > 0  # the key was really used
    needle = SENTINEL.encode()
    assert needle not in (reference.stdout + reference.stderr).encode()
    files = [p for p in reference.workspace.rglob("*") if p.is_file()]
    assert any(p.name == "mlflow.db" for p in files) and any("mlartifacts" in p.parts for p in files)
    leaked = [str(p) for p in files if needle in p.read_bytes()]  # DB, MLflow store + artifacts, DVC cache
    assert not leaked
    # Compressed places a byte search cannot see: git history and the Parquet snapshots' columns.
    git = ["git", "-C", str(reference.workspace)]
    history = subprocess.run([*git, "log", "-p", "--all"], capture_output=True, text=True, check=True).stdout
    assert SENTINEL not in history
    revs = subprocess.run([*git, "rev-list", "--all"], capture_output=True, text=True, check=True).stdout.split()
    assert subprocess.run([*git, "grep", "-q", SENTINEL, *revs], capture_output=True).returncode == 1
    import pyarrow.parquet as pq

    snapshots = list((reference.workspace / ".dvc" / "cache").rglob("*"))
    assert snapshots
    for path in (p for p in snapshots if p.is_file()):
        table = pq.read_table(path)
        assert not any(SENTINEL in str(v) for column in table.columns for v in column.to_pylist())


def test_logs_are_json_lines_with_stage_fields(reference):
    lines = [line for line in reference.stderr.splitlines() if line.strip()]
    plain = [line for line in lines if not line.startswith("{")]
    assert not plain, "not JSON (MLflow, warnings and progress bars must go through the formatter):\n" + \
        "\n".join(plain[:20])
    records = [json.loads(line) for line in lines]
    for record in records:
        assert {"ts", "level", "event"} <= record.keys()
    ends = [r for r in records if r["event"].endswith("_end") and "stage" in r]
    assert {r["stage"] for r in ends} >= {"predict", "correct", "train:lstm", "evaluate", "snapshot", "track"}
    for record in ends:
        assert isinstance(record["duration_s"], float) and isinstance(record["iteration"], int)
    predict = next(r for r in ends if r["stage"] == "predict")
    assert predict["rows"] == 600  # counts travel with the stage events
    assert any(r["event"] == "iteration_done" and r["iteration"] == 1 for r in records)


def test_cli_errors_are_json_error_lines_in_json_mode_and_plain_in_text_mode(cli, tmp_path):
    missing = tmp_path / "nothing"
    json_run = cli("--log-format", "json", "--workspace", str(missing), "status", check=False)
    assert json_run.returncode == 4
    failure = [json.loads(line) for line in json_run.stderr.splitlines() if line.startswith("{")]
    assert failure and failure[-1]["event"] == "command_failed" and failure[-1]["level"] == "error"
    assert failure[-1]["error"]["type"] == "StoreError" and failure[-1]["exit_code"] == 4
    assert "database not found" in failure[-1]["error"]["message"] and failure[-1]["error"]["hint"]
    text_run = cli("--log-format", "text", "--workspace", str(missing), "status", check=False)
    assert text_run.returncode == 4 and "{" not in text_run.stderr
    assert "error: database not found" in text_run.stderr and "hint:" in text_run.stderr
    bad = cli("--log-format", "xml", "config", "show", check=False)
    assert bad.returncode == 2 and "logging.format" in bad.stderr
