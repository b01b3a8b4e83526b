"""The Airflow DAG run by a real Airflow: `airflow dags test` on a standalone SQLite metadata DB.

Airflow lives in its own virtual environment (`make airflow-env`, `.venv-airflow/`; its ~130
packages clash with nothing here but have no place in the project's environment). The DAG file
is used as shipped; its tasks call this checkout's `sentirefine` on a tiny workspace, and the
test checks that every task ran and succeeded and that the workspace advanced one iteration.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from sentirefine.data.store import Store

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
AIRFLOW = ROOT / ".venv-airflow" / "bin" / "airflow"
TASKS = ["bootstrap", "iteration_1", "report", "review_export"]


def test_the_dag_runs_every_task_and_advances_the_workspace_one_iteration(tiny_corpus, tmp_path, cli):
    if not AIRFLOW.is_file():
        pytest.skip(f"Airflow is not installed at {AIRFLOW}: run `make airflow-env` (make test does)")
    from tiny_config import TINY_CONFIG

    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump({
        **TINY_CONFIG, "workspace": str(tmp_path / "ws"), "models": {**TINY_CONFIG["models"], "order": ["lexicon"]},
        "tracking": {"enabled": False}, "versioning": {"enabled": False}}))
    train, gold = tiny_corpus
    cli("-c", str(config), "import", str(train), "--gold", str(gold))
    env = {**os.environ, "AIRFLOW_HOME": str(tmp_path / "airflow"), "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
           "AIRFLOW__CORE__DAGS_FOLDER": str(ROOT / "deploy" / "airflow"),
           "SENTIREFINE_BIN": str(Path(sys.executable).with_name("sentirefine")),
           "SENTIREFINE_WORKSPACE": str(tmp_path / "ws"), "SENTIREFINE_CONFIG": str(config),
           "SENTIREFINE_MAX_ITERATIONS": "1"}
    env.pop("VIRTUAL_ENV", None)
    migrate = subprocess.run([str(AIRFLOW), "db", "migrate"], env=env, capture_output=True, text=True, timeout=300)
    assert migrate.returncode == 0, migrate.stdout[-3000:] + migrate.stderr[-3000:]
    run = subprocess.run([str(AIRFLOW), "dags", "test", "sentirefine", "2026-01-01"], env=env, capture_output=True,
                         text=True, timeout=900)
    out = run.stdout + run.stderr
    assert run.returncode == 0, out[-5000:]
    ended = re.findall(r"\[DAG TEST\] end task task_id=(\w+)", out)
    assert ended == TASKS, out[-5000:]
    assert "new_state=failed" not in out and re.search(r"DagRun Finished: dag_id=sentirefine.*state=success", out)
    with Store(tmp_path / "ws" / "sentences.db") as store:
        finished = [it["iteration"] for it in store.iterations() if it["finished_at"]]
    assert finished == [0, 1]
    assert (tmp_path / "ws" / "reports" / "report.html").is_file()
    assert (tmp_path / "ws" / "reports" / "review-2026-01-01.csv").is_file()
