"""Two `refine` processes on one workspace: the second refuses at once, naming the first's pid,
and writes nothing; `status` still reads meanwhile."""

from __future__ import annotations

import hashlib
import os
import shutil
import signal
import subprocess
import sys
import time

import pytest
from faults_setup import refine_args

pytestmark = [pytest.mark.faults, pytest.mark.integration]


def _files_digest(workspace) -> str:
    """Every file of the workspace but two: the -shm index changes on any read, and the JSON log
    (logs/) records every command, a refused one too; neither is the workspace's state."""
    h = hashlib.sha256()
    for path in sorted(p for p in workspace.rglob("*") if p.is_file() and not p.name.endswith("-shm")
                       and "logs" not in p.relative_to(workspace).parts[:1]):
        h.update(str(path).encode() + path.read_bytes())
    return h.hexdigest()


def test_second_refine_is_refused_with_owner_pid(reference, cli, tmp_path):
    workspace = tmp_path / "ws"
    shutil.copytree(reference.imported, workspace)
    pause = tmp_path / "paused"
    args = refine_args(reference.config, workspace)
    env = {**os.environ, "SENTIREFINE_PAUSE_AT": "refine_start", "SENTIREFINE_PAUSE_FILE": str(pause)}
    first = subprocess.Popen([sys.executable, "-m", "sentirefine", *args], stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL, env=env)
    try:
        deadline = time.monotonic() + 120
        while not (pause.exists() and pause.read_text()) and first.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert pause.exists(), "the first refine never reached refine_start"
        assert int(pause.read_text()) == first.pid
        before = _files_digest(workspace)
        second = cli(*args, check=False)
        assert second.returncode == 7
        assert f"pid {first.pid}" in second.stderr and "in use by another sentirefine process" in second.stderr
        assert cli("-c", str(reference.config), "--workspace", str(workspace), "status").returncode == 0
        assert _files_digest(workspace) == before  # the refused process wrote nothing at all
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait()
