"""The command line: exit codes and messages a user (or a scheduler) can act on."""

from __future__ import annotations

import subprocess
import sys
import time

import pytest
from typer.testing import CliRunner

from sentirefine.cli import app

runner = CliRunner()


def invoke(*args: str):
    return runner.invoke(app, list(args))


def test_config_show_prints_effective_values(monkeypatch):
    monkeypatch.setenv("SENTIREFINE_REFINE__MAX_ITERATIONS", "4")
    result = invoke("config", "show")
    assert result.exit_code == 0
    assert "max_iterations: 4" in result.output


def test_bad_config_exits_2_and_names_the_key(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("store:\n  chunk_size: 0\n")
    result = invoke("-c", str(path), "config", "show")
    assert result.exit_code == 2
    assert "store.chunk_size" in result.output


def test_status_without_database_exits_4_with_hint(tmp_path):
    result = invoke("--workspace", str(tmp_path / "ws"), "status")
    assert result.exit_code == 4
    assert "database not found" in result.output and "sentirefine import" in result.output


def test_import_with_bad_rows_exits_3_but_keeps_good_rows(tmp_path):
    data = tmp_path / "d.tsv"
    data.write_text("id\tdocument\tlabel\n1\t좋아요\t1\n2\t\t0\n3\t싫어요\t5\n4\t별로\t0\n", encoding="utf-8")
    result = invoke("--workspace", str(tmp_path / "ws"), "import", str(data))
    assert result.exit_code == 3
    assert "inserted 2" in result.output and "rejected 2" in result.output and "d.tsv:3" in result.output
    status = invoke("--workspace", str(tmp_path / "ws"), "status", "--json")
    assert '"train": 2' in status.output


def test_single_class_train_split_is_a_clear_training_error(tmp_path):
    data = tmp_path / "d.tsv"
    data.write_text("id\tdocument\tlabel\n1\t좋아요\t1\n2\t최고\t1\n", encoding="utf-8")
    assert invoke("--workspace", str(tmp_path / "ws"), "import", str(data)).exit_code == 0
    result = invoke("--workspace", str(tmp_path / "ws"), "bootstrap")
    assert result.exit_code == 6
    assert "single class" in result.output


def test_second_writer_is_refused_with_owner_pid(tmp_path):
    workspace = tmp_path / "ws"
    holder = subprocess.Popen(
        [sys.executable, "-c",
         "import sys, time; from sentirefine.config import load_config; from sentirefine.data.workspace import locked\n"
         f"cfg = load_config(overrides={{'workspace': {str(workspace)!r}}})\n"
         "with locked(cfg):\n    print('held', flush=True); time.sleep(60)"],
        stdout=subprocess.PIPE, text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "held"
        data = tmp_path / "d.tsv"
        data.write_text("id\tdocument\tlabel\n1\tok\t1\n", encoding="utf-8")
        result = invoke("--workspace", str(workspace), "import", str(data))
        assert result.exit_code == 7
        assert f"pid {holder.pid}" in result.output
    finally:
        holder.kill()
        holder.wait()
    time.sleep(0.1)
    # the lock dies with its holder (even on SIGKILL): the next writer proceeds
    assert invoke("--workspace", str(workspace), "import", str(data)).exit_code == 0


@pytest.mark.parametrize("args", [["rollback", "--to-iteration", "0"], ["refine"], ["bootstrap"]])
def test_commands_on_missing_workspace_fail_cleanly(tmp_path, args):
    result = invoke("--workspace", str(tmp_path / "nothing"), *args)
    assert result.exit_code == 4 and "Traceback" not in result.output


def test_init_creates_store_git_and_dvc(tmp_path):
    workspace = tmp_path / "ws"
    result = invoke("--workspace", str(workspace), "init")
    assert result.exit_code == 0, result.output
    assert (workspace / "sentences.db").is_file() and (workspace / ".git").is_dir()
    dvc_config = (workspace / ".dvc" / "config").read_text()
    assert "analytics = False" in dvc_config and "site_cache_dir" in dvc_config and "dvc-remote" in dvc_config
    assert invoke("--workspace", str(workspace), "init").exit_code == 0  # idempotent
