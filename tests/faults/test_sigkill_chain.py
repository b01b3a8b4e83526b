"""SIGKILL the loop at 20+ distinct crash points, resume after each, and get the uninterrupted result.

How: one uninterrupted reference run records the exact order of crash points it passes
(``SENTIREFINE_FAULT_TRACE``). A seeded plan picks one occurrence of each of ``KILLS`` distinct
points and sorts them by position; the kills are dealt to two chains, and each chain's workspace
goes through its kills in order: run with ``SENTIREFINE_KILL_AT=<point>:<n>`` (must die by
SIGKILL), check the store, run with the next point, ... and finally run without a kill. A chain
pays the process start (~5 s: torch, MLflow, DVC) once per kill, not a whole run per kill, which
keeps 20+ kills in the CI budget.

A resumed attempt redoes its interrupted stage, so a kill can land on an earlier pass of the
same point than planned; it is still a kill at that point, and the plan stays in order.
"""

from __future__ import annotations

import os
import random
import shutil
import subprocess
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import yaml
from faults_setup import refine_args

from sentirefine.data.store import Store

pytestmark = [pytest.mark.faults, pytest.mark.integration]

KILLS = int(os.environ.get("SENTIREFINE_FAULT_KILLS", "22"))
CHAINS = 2  # CI has two cores: two workspaces go through their kills side by side
SEED = int(os.environ.get("SENTIREFINE_FAULT_SEED", "8"))
# Always in the plan: the points where a resume has the most to get right.
MUST = ("predict_chunk", "correct_chunk", "train:lstm_before_save", "train:lstm_after_save",
        "snapshot_after_dvc_add", "snapshot_after_tag", "track_before_register",
        "register:ensemble_after_production_alias", "before_finish_iteration")

def plan_kills(trace: list[str], kills: int, seed: int) -> list[int]:
    """Trace positions of ``kills`` distinct points (the MUST ones first), one seeded occurrence
    each, in run order."""
    rng = random.Random(seed)
    names = sorted(set(trace))
    optional = [n for n in names if n not in MUST]
    rng.shuffle(optional)
    chosen = [n for n in MUST if n in names] + optional[: max(0, kills - len(MUST))]
    return sorted(rng.choice([i for i, t in enumerate(trace) if t == name]) for name in chosen)


def chain_steps(trace: list[str], positions: list[int]) -> list[tuple[str, int]]:
    """``(point, n)`` per kill: the n-th pass of ``point`` counted from the previous kill."""
    steps, previous = [], -1
    for pos in positions:
        steps.append((trace[pos], trace[previous + 1 : pos + 1].count(trace[pos])))
        previous = pos
    return steps


def test_plan_covers_every_stage_kind(reference):
    names = [reference.trace[p] for p in plan_kills(reference.trace, KILLS, SEED)]
    assert len(set(names)) == len(names) >= min(KILLS, 20)
    for kind in ("predict", "correct", "train:", "snapshot", "track", "register:"):
        assert any(n.startswith(kind) for n in names), kind


def test_sigkill_chains_resume_to_the_uninterrupted_result(reference, cli, tmp_path):
    """The planned kills, dealt alternately to CHAINS workspaces run side by side (each chain
    stays in run order); every chain must end equal to the reference."""
    positions = plan_kills(reference.trace, KILLS, SEED)
    chains = [chain_steps(reference.trace, positions[i::CHAINS]) for i in range(CHAINS)]
    with ThreadPoolExecutor(CHAINS) as pool:
        for done in [pool.submit(_run_chain, reference, cli, tmp_path / f"ws{i}", steps)
                     for i, steps in enumerate(chains)]:
            done.result()


def _run_chain(reference, cli, workspace: Path, steps: list[tuple[str, int]]) -> None:
    shutil.copytree(reference.imported, workspace)
    args = refine_args(reference.config, workspace)
    for point, nth in steps:
        killed = cli(*args, env={"SENTIREFINE_KILL_AT": f"{point}:{nth}"}, check=False)
        assert killed.returncode == -9, f"{point}:{nth} did not die by SIGKILL:\n{killed.stderr[-3000:]}"
        _check_store(workspace)
        if point.startswith(("track", "register")):  # even mid-crash, nothing half-logged is aliased
            _check_aliases(workspace)
    cli(*args)
    assert _labels(workspace) == _labels(reference.workspace)
    _check_store(workspace)
    _check_registry(workspace, reference.workspace)
    _check_snapshots(workspace, reference.workspace)


# -- checks ------------------------------------------------------------------------------------


def _check_store(workspace: Path) -> None:
    """Whatever moment the process died at: an intact DB, replayable history, no duplicate rows."""
    with Store(workspace / "sentences.db") as store:
        assert store.conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        assert store.history_is_consistent()
        duplicates = store.conn.execute(
            "SELECT count(*) FROM (SELECT 1 FROM label_history GROUP BY sid, iteration, source, old_label, new_label "
            "HAVING count(*) > 1)").fetchone()[0]
        assert duplicates == 0


def _labels(workspace: Path) -> tuple[list, list, list]:
    with Store(workspace / "sentences.db") as store:
        labels = store.conn.execute("SELECT sid, current_label, frozen FROM sentences ORDER BY sid").fetchall()
        history = store.conn.execute("SELECT sid, iteration, old_label, new_label, source FROM label_history "
                                     "ORDER BY sid, iteration, hid").fetchall()
        finished = [it["iteration"] for it in store.iterations() if it["finished_at"]]
    return labels, history, finished


def _client(workspace: Path):
    import mlflow

    uri = f"sqlite:///{workspace / 'mlflow.db'}"
    return mlflow.MlflowClient(uri, registry_uri=uri)  # explicit: other tests set a global registry


def _check_aliases(workspace: Path) -> None:
    client = _client(workspace)
    for version in client.search_model_versions():
        if version.aliases:
            run = client.get_run(version.run_id)
            assert run.info.status == "FINISHED" and run.data.tags.get("sentirefine.complete") == "true", \
                f"{version.name} v{version.version} has {version.aliases} but its run is {run.info.status}"


def _registry(workspace: Path) -> dict[str, dict[str, str]]:
    """Per registered model: iteration of each version, and the iteration each alias points at."""
    client = _client(workspace)
    out: dict[str, dict[str, str]] = {}
    for model in client.search_registered_models():
        versions = client.search_model_versions(f"name='{model.name}'")
        iterations = [v.tags["iteration"] for v in versions]
        assert len(iterations) == len(set(iterations)), f"{model.name}: two versions for one iteration"
        summary = {"versions": ",".join(sorted(iterations))}
        for version in versions:
            run = client.get_run(version.run_id)
            for alias in version.aliases:  # nothing half-logged is ever staged or promoted
                assert run.info.status == "FINISHED" and run.data.tags.get("sentirefine.complete") == "true"
                summary[alias] = version.tags["iteration"]
        out[model.name] = summary
    experiment = client.get_experiment_by_name("sentirefine")
    runs = client.search_runs([experiment.experiment_id])
    # A killed command's run is closed (KILLED) by the next command, not left RUNNING forever.
    assert not [r.info.run_name for r in runs if r.info.status == "RUNNING"], "a run was left RUNNING"
    names = [r.info.run_name for r in runs]
    iteration_runs = sorted(n for n in names if n.startswith("iteration"))
    assert iteration_runs == sorted(set(iteration_runs)), "an iteration was logged twice"
    out["_runs"] = {"iterations": ",".join(iteration_runs)}
    return out


def _check_registry(workspace: Path, reference: Path) -> None:
    got = _registry(workspace)
    assert got == _registry(reference)
    assert got["sentirefine-ensemble"]["versions"] == "0,1"


def _snapshot_hashes(workspace: Path) -> dict[str, str]:
    """Tag → md5 of the Parquet snapshot its commit points at."""
    tags = subprocess.run(["git", "-C", str(workspace), "tag"], capture_output=True, text=True,
                          check=True).stdout.split()
    out = {}
    for tag in tags:
        meta = subprocess.run(["git", "-C", str(workspace), "show", f"{tag}:snapshots/sentences.parquet.dvc"],
                              capture_output=True, text=True, check=True).stdout
        out[tag] = yaml.safe_load(meta)["outs"][0]["md5"]
    return out


def _check_snapshots(workspace: Path, reference: Path) -> None:
    """One tag per finished iteration, each the same bytes as uninterrupted, cached and pushed."""
    hashes = _snapshot_hashes(workspace)
    finished = _labels(workspace)[2]
    assert sorted(hashes) == [f"data-iter-{i:03d}" for i in finished]
    assert hashes == _snapshot_hashes(reference)
    for md5 in hashes.values():
        assert (workspace / ".dvc" / "cache" / "files" / "md5" / md5[:2] / md5[2:]).is_file()
        assert (workspace / "dvc-remote" / "files" / "md5" / md5[:2] / md5[2:]).is_file(), "snapshot not pushed"
