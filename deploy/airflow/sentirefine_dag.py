"""Airflow DAG: sentirefine's loop as one task per step, one task per iteration, via the CLI.

Copy this file into the Airflow ``dags/`` folder of a machine where ``sentirefine`` is
installed. Settings come from the environment of the Airflow worker:

* ``SENTIREFINE_BIN`` — the executable (default: ``sentirefine`` on PATH);
* ``SENTIREFINE_WORKSPACE`` — the workspace directory (default ``/srv/sentirefine/ws``);
* ``SENTIREFINE_MAX_ITERATIONS`` — iterations to schedule (default 5);
* anything else sentirefine reads (``SENTIREFINE_CONFIG``, ``SENTIREFINE_TRACKING__URI``,
  ``GEMINI_API_KEY``, ...), passed through unchanged.

Why the CLI and not Python calls: every command takes the workspace lock, records its stages
and resumes after a crash, so a retried task simply continues; ``refine --max-iterations K
--until-converged`` is a no-op once the loop converged or reached K, so the per-iteration tasks
after convergence finish in a second. Exit code 7 (workspace busy) is retried.
"""

from __future__ import annotations

import os
from datetime import datetime, timedelta

try:  # Airflow 3
    from airflow.providers.standard.operators.bash import BashOperator
    from airflow.sdk import DAG
except ImportError:  # Airflow 2.x
    from airflow import DAG
    from airflow.operators.bash import BashOperator

SENTIREFINE = os.environ.get("SENTIREFINE_BIN", "sentirefine")
WORKSPACE = os.environ.get("SENTIREFINE_WORKSPACE", "/srv/sentirefine/ws")
MAX_ITERATIONS = int(os.environ.get("SENTIREFINE_MAX_ITERATIONS", "5"))
CLI = f"{SENTIREFINE} --quiet --workspace {WORKSPACE}"

with DAG(
    dag_id="sentirefine",
    description="Progressive label refinement: bootstrap, iterations until converged, report, review export",
    schedule="@daily",
    start_date=datetime(2026, 1, 1),
    catchup=False,
    max_active_runs=1,
    default_args={"retries": 2, "retry_delay": timedelta(minutes=5)},
    tags=["sentirefine"],
) as dag:
    bootstrap = BashOperator(task_id="bootstrap", bash_command=f"{CLI} bootstrap", append_env=True)
    previous = bootstrap
    for k in range(1, MAX_ITERATIONS + 1):
        iteration = BashOperator(task_id=f"iteration_{k}", append_env=True,
                                 bash_command=f"{CLI} refine --max-iterations {k} --until-converged")
        previous >> iteration
        previous = iteration
    report = BashOperator(task_id="report", bash_command=f"{CLI} report", append_env=True)
    review_export = BashOperator(task_id="review_export", append_env=True,
                                 bash_command=f"{CLI} review export -o {WORKSPACE}/reports/review-{{{{ ds }}}}.csv")
    previous >> report >> review_export
